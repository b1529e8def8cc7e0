//! Record formats shared by the file, stdio and object connectors.
//!
//! - [`InputFormat`]: how a byte stream is framed into messages (`json`, `text`, `heka`).
//! - [`OutputFormat`]: how a message is written as one line (`decoded`, `json`, `text`).
//!
//! Both parse from their lowercase names (`FromStr`, serde), so ops name them in config files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sluice::Message;

/// How a message is written to a line-oriented output (stdout, files, objects).
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::io::format::OutputFormat;
/// let m = Message::new("{\"a\":1}").with_attribute("k", "v");
/// let mut out = Vec::new();
/// OutputFormat::Json.write_record(&m, &mut out);
/// OutputFormat::Decoded.write_record(&m, &mut out);
/// assert_eq!(
///     out,
///     b"{\"attributeMap\":{\"k\":\"v\"},\"payload\":\"eyJhIjoxfQ==\"}\n{\"a\":1}\n"
/// );
/// assert_eq!("json".parse::<OutputFormat>().unwrap(), OutputFormat::Json);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The payload, a JSON document, one per line: what a decoder produced. Raw `\r`/`\n`
    /// bytes are dropped: in JSON they can only be whitespace, so the document is unchanged and
    /// stays on one line.
    Decoded,
    /// The gcp-ingestion envelope `{"attributeMap":...,"payload":"<base64>"}`, one per line:
    /// keeps the attributes, and is a valid input of a `json` source (replay).
    #[default]
    Json,
    /// The payload as is, one per line, for text payloads; attributes are dropped.
    Text,
}

impl OutputFormat {
    /// Appends `message` in this format to `out`, followed by a newline.
    ///
    /// `Text` writes the payload bytes unchanged: a payload that itself holds a newline spans
    /// lines. Use `Json` when payloads are arbitrary bytes.
    pub fn write_record(&self, message: &Message, out: &mut Vec<u8>) {
        self.write_record_with(message, &mut String::new(), out)
    }

    /// Like [`OutputFormat::write_record`], reusing `scratch` between calls so that writing many
    /// records allocates nothing per record.
    pub fn write_record_with(&self, message: &Message, scratch: &mut String, out: &mut Vec<u8>) {
        match self {
            OutputFormat::Json => {
                scratch.clear();
                message.write_json_line(scratch);
                out.extend_from_slice(scratch.as_bytes());
            }
            OutputFormat::Decoded => out.extend(
                message
                    .payload
                    .iter()
                    .copied()
                    .filter(|b| *b != b'\n' && *b != b'\r'),
            ),
            OutputFormat::Text => out.extend_from_slice(&message.payload),
        }
        out.push(b'\n');
    }

    /// The file extension of objects in this format, without compression.
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Decoded | OutputFormat::Json => "ndjson",
            OutputFormat::Text => "txt",
        }
    }

    /// The lowercase name (`decoded`, `json`, `text`).
    pub fn name(&self) -> &'static str {
        match self {
            OutputFormat::Decoded => "decoded",
            OutputFormat::Json => "json",
            OutputFormat::Text => "text",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputFormat {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        match s {
            "decoded" => Ok(OutputFormat::Decoded),
            "json" => Ok(OutputFormat::Json),
            "text" => Ok(OutputFormat::Text),
            other => Err(FormatError::UnknownOutput(other.to_string())),
        }
    }
}

/// How an input byte stream is framed into messages.
///
/// ```
/// use sluice_transforms::io::format::InputFormat;
/// assert_eq!("heka".parse::<InputFormat>().unwrap(), InputFormat::Heka);
/// assert!("xml".parse::<InputFormat>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// One gcp-ingestion envelope per line (`Message::from_json_line`); blank lines are skipped.
    Json,
    /// Each line is a payload, without attributes; blank lines are skipped.
    Text,
    /// Heka stream framing, one Heka protobuf message per frame.
    Heka,
}

impl InputFormat {
    /// The lowercase name (`json`, `text`, `heka`).
    pub fn name(&self) -> &'static str {
        match self {
            InputFormat::Json => "json",
            InputFormat::Text => "text",
            InputFormat::Heka => "heka",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InputFormat {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        match s {
            "json" => Ok(InputFormat::Json),
            "text" => Ok(InputFormat::Text),
            "heka" => Ok(InputFormat::Heka),
            other => Err(FormatError::UnknownInput(other.to_string())),
        }
    }
}

/// The `error_type` of the dead letter made for input that cannot be framed or decoded into a
/// message (a non-envelope line, a line over the length limit, a broken or unconvertible Heka
/// frame). The dead letter's payload is the raw bytes of the line or frame, and its source
/// position names the input (`input_file`, `input_line` or `input_offset`).
pub const READ_INPUT_ERROR_TYPE: &str = "ReadInput";

/// A format name that is not known, or a record of the input that its format cannot decode.
///
/// The record variants become dead letters ([`READ_INPUT_ERROR_TYPE`]); their
/// `exception_class` is this type's path and variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not one of `decoded`, `json`, `text`.
    #[error("unknown output format {0:?}, expected one of decoded, json, text")]
    UnknownOutput(String),
    /// Not one of `json`, `text`, `heka`.
    #[error("unknown input format {0:?}, expected one of json, text, heka")]
    UnknownInput(String),
    /// A `json` line that is not a gcp-ingestion envelope.
    #[error("line is not a message envelope")]
    InvalidEnvelope(#[source] sluice::EnvelopeError),
    /// A line longer than the reader's limit (the dead letter keeps its first 64 KiB,
    /// [`LONG_LINE_HEAD_BYTES`](crate::io::file::LONG_LINE_HEAD_BYTES)).
    #[error("line of {length} bytes exceeds the limit of {max} bytes")]
    LineTooLong {
        /// The line's length without its newline.
        length: u64,
        /// The limit.
        max: usize,
    },
    /// A stretch of a Heka stream that is not a frame (the dead letter holds the bytes skipped).
    #[error(transparent)]
    BrokenFrame(sluice_schemas::heka::FrameError),
    /// Consecutive broken Heka frames, kept as one dead letter holding the bytes (a stretch is
    /// cut at the longest span a frame can have, so one dead letter stays bounded).
    #[error("broken heka stream: {length} bytes in {frames} broken frames, the first: {first}")]
    BrokenStretch {
        /// Bytes in the stretch (the dead letter's payload).
        length: usize,
        /// Broken frames the decoder found in it.
        frames: usize,
        /// Why the first one is broken.
        first: String,
    },
    /// A file or stream that breaks before its end (a truncated or corrupt gzip): its records
    /// before the break were read, and the break itself is this one dead letter, with the
    /// position where reading stopped and an empty payload.
    #[error("input cannot be read past this point: {0}")]
    Unreadable(String),
    /// A Heka frame whose message does not convert to a message (the dead letter holds the
    /// frame).
    #[error("heka message does not convert")]
    InvalidHeka(#[source] sluice_schemas::heka::ConversionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for f in [
            OutputFormat::Decoded,
            OutputFormat::Json,
            OutputFormat::Text,
        ] {
            assert_eq!(f.name().parse::<OutputFormat>().unwrap(), f);
            let de: OutputFormat = serde_json::from_str(&format!("\"{f}\"")).unwrap();
            assert_eq!(de, f);
        }
        for f in [InputFormat::Json, InputFormat::Text, InputFormat::Heka] {
            assert_eq!(f.name().parse::<InputFormat>().unwrap(), f);
            let de: InputFormat = serde_json::from_str(&format!("\"{f}\"")).unwrap();
            assert_eq!(de, f);
        }
        assert_eq!(
            "Json".parse::<OutputFormat>().unwrap_err().to_string(),
            "unknown output format \"Json\", expected one of decoded, json, text"
        );
    }

    #[test]
    fn json_output_is_a_valid_json_input() {
        let m = Message::new(vec![0u8, 255, b'\n']).with_attribute("a", "b\nc");
        let mut out = Vec::new();
        OutputFormat::Json.write_record(&m, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(Message::from_json_line(&out[..out.len() - 1]).unwrap(), m);
    }

    #[test]
    fn text_writes_payload_and_newline() {
        let mut out = Vec::new();
        OutputFormat::Text.write_record(&Message::new("hi").with_attribute("x", "y"), &mut out);
        assert_eq!(out, b"hi\n");
    }
}
