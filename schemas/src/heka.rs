//! The Heka protobuf message, its stream framing, and the conversion to and from
//! [`sluice::Message`] in the form Mozilla's nginx edge (moz_ingest) wrote to Kafka.
//!
//! The types follow Heka's `message.proto` (proto2), declared by hand with prost's derive:
//! optional fields are `Option`s, required ones plain values.
//!
//! # Framing
//!
//! A Heka stream is a sequence of frames: the record separator `0x1E`, one byte giving the
//! header length, a [`Header`] protobuf (whose `message_length` is the message size), the unit
//! separator `0x1F`, then the encoded [`HekaMessage`]. [`encode_frame`] writes one;
//! [`FrameDecoder`] reads a stream, yielding an error for each broken stretch, with the raw
//! bytes it skipped, and resynchronising at the next `0x1E`.
//!
//! # Conversion
//!
//! [`heka_to_message`] maps the message to a [`Message`]:
//! - the field `content` (one bytes or string value) becomes the payload; without it the
//!   conversion fails with [`ConversionError::MissingContent`];
//! - every other field becomes an attribute named by [`attribute_name`] (lowercase, `-` -> `_`:
//!   `User-Agent` -> `user_agent`, `X-Forwarded-For` -> `x_forwarded_for`; `uri`, `args`,
//!   `protocol`, `remote_addr` stay), with its values as text, several joined by `", "`;
//! - `Hostname` becomes `host`, `Timestamp` (nanoseconds since the epoch) becomes
//!   `submission_timestamp` in RFC 3339 with microseconds (`2018-03-12T21:02:18.123456Z`) and
//!   `Uuid` becomes [`UUID_ATTRIBUTE`] (`heka_uuid`, a hyphenated lowercase UUID) — unless a
//!   field of the same name is present, which wins. A zero timestamp and a nil or empty uuid
//!   mean "unset" and add nothing. `Type`, `Logger`, `Severity`, `Payload`, `EnvVersion` and
//!   `Pid` are not carried (the edge did not use them).
//!
//! [`message_to_heka`] is the reverse, for tests and test data; attributes whose names are
//! already in [`attribute_name`] form survive `Message -> Heka -> Message` unchanged.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat};
use prost::Message as _;
use sluice::Message;

/// The byte that starts every frame.
pub const RECORD_SEPARATOR: u8 = 0x1E;
/// The byte between a frame's header and its message.
pub const UNIT_SEPARATOR: u8 = 0x1F;
/// The default largest message a frame may announce: 8 MiB of payload plus 1 KiB of headers.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 8 * 1024 * 1024 + 1024;
/// The attribute the Heka `Uuid` is kept in.
pub const UUID_ATTRIBUTE: &str = "heka_uuid";
/// The attribute the Heka `Timestamp` is kept in.
pub const TIMESTAMP_ATTRIBUTE: &str = "submission_timestamp";
/// The attribute the Heka `Hostname` is kept in.
pub const HOST_ATTRIBUTE: &str = "host";
/// The Heka field that holds the payload.
pub const CONTENT_FIELD: &str = "content";

/// A Heka message (Heka's `message.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HekaMessage {
    /// 16 bytes identifying the message.
    #[prost(bytes = "vec", required, tag = "1")]
    pub uuid: Vec<u8>,
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, required, tag = "2")]
    pub timestamp: i64,
    /// The message type.
    #[prost(string, optional, tag = "3")]
    pub r#type: Option<String>,
    /// The logger that produced the message.
    #[prost(string, optional, tag = "4")]
    pub logger: Option<String>,
    /// Syslog severity (default 7, debug).
    #[prost(int32, optional, tag = "5", default = "7")]
    pub severity: Option<i32>,
    /// A free-form payload (the edge put the body in the `content` field instead).
    #[prost(string, optional, tag = "6")]
    pub payload: Option<String>,
    /// Version of the environment that produced the message.
    #[prost(string, optional, tag = "7")]
    pub env_version: Option<String>,
    /// Process id of the producer.
    #[prost(int32, optional, tag = "8")]
    pub pid: Option<i32>,
    /// Host name of the producer.
    #[prost(string, optional, tag = "9")]
    pub hostname: Option<String>,
    /// Named, typed fields.
    #[prost(message, repeated, tag = "10")]
    pub fields: Vec<Field>,
}

/// A named field of a [`HekaMessage`]; its values live in the list matching `value_type`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Field {
    /// The field name.
    #[prost(string, required, tag = "1")]
    pub name: String,
    /// A [`ValueType`] (default `String`); see [`Field::value_type()`].
    #[prost(enumeration = "ValueType", optional, tag = "2", default = "String")]
    pub value_type: Option<i32>,
    /// A hint on how to read the value (a unit, say).
    #[prost(string, optional, tag = "3")]
    pub representation: Option<String>,
    /// String values.
    #[prost(string, repeated, tag = "4")]
    pub value_string: Vec<String>,
    /// Bytes values.
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub value_bytes: Vec<Vec<u8>>,
    /// Integer values.
    #[prost(int64, repeated, packed = "true", tag = "6")]
    pub value_integer: Vec<i64>,
    /// Double values.
    #[prost(double, repeated, packed = "true", tag = "7")]
    pub value_double: Vec<f64>,
    /// Boolean values.
    #[prost(bool, repeated, packed = "true", tag = "8")]
    pub value_bool: Vec<bool>,
}

/// The type of a [`Field`]'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    /// `value_string`.
    String = 0,
    /// `value_bytes`.
    Bytes = 1,
    /// `value_integer`.
    Integer = 2,
    /// `value_double`.
    Double = 3,
    /// `value_bool`.
    Bool = 4,
}

/// The header of a frame (the HMAC fields 3 to 6 are skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// Length of the encoded message that follows the header.
    #[prost(uint32, required, tag = "1")]
    pub message_length: u32,
}

impl Field {
    /// A field with one string value.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Field {
            name: name.into(),
            value_type: Some(ValueType::String as i32),
            value_string: vec![value.into()],
            ..Field::default()
        }
    }

    /// A field with one bytes value.
    pub fn bytes(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Field {
            name: name.into(),
            value_type: Some(ValueType::Bytes as i32),
            value_bytes: vec![value.into()],
            ..Field::default()
        }
    }
}

impl HekaMessage {
    /// The first field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Encodes `message` as one frame.
///
/// ```
/// use sluice_schemas::heka::{decode_frames, encode_frame, Field, HekaMessage};
///
/// let message = HekaMessage {
///     uuid: vec![7; 16],
///     timestamp: 1_520_888_538_123_456_789,
///     fields: vec![Field::bytes("content", b"{}".to_vec())],
///     ..HekaMessage::default()
/// };
/// let mut stream = encode_frame(&message);
/// stream.extend_from_slice(b"garbage");
/// stream.extend(encode_frame(&message));
///
/// let decoded: Vec<_> = decode_frames(&stream).collect();
/// assert_eq!(decoded.len(), 3);
/// assert_eq!(decoded[0].as_ref().unwrap(), &message);
/// assert_eq!(decoded[1].as_ref().unwrap_err().raw(), b"garbage");
/// assert_eq!(decoded[2].as_ref().unwrap(), &message);
/// ```
pub fn encode_frame(message: &HekaMessage) -> Vec<u8> {
    let message_length = message.encoded_len();
    let header = Header {
        message_length: u32::try_from(message_length).unwrap_or(u32::MAX),
    };
    let header_length = header.encoded_len(); // at most 6 bytes: fits the length byte
    let mut out = Vec::with_capacity(3 + header_length + message_length);
    out.push(RECORD_SEPARATOR);
    out.push(header_length as u8);
    header.encode_raw(&mut out);
    out.push(UNIT_SEPARATOR);
    message.encode_raw(&mut out);
    out
}

/// Why a stretch of a Heka stream is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameErrorKind {
    /// Bytes where a frame should start (not `0x1E`).
    #[error("expected a record separator (0x1e)")]
    MissingRecordSeparator,
    /// The input ends inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// The header is not a valid `Header` protobuf.
    #[error("invalid frame header")]
    BadHeader(#[source] prost::DecodeError),
    /// The header is not followed by the unit separator `0x1F`.
    #[error("expected a unit separator (0x1f) after the header")]
    MissingUnitSeparator,
    /// The header announces a message larger than allowed.
    #[error("message length {length} exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        length: u32,
        /// The limit.
        max: usize,
    },
    /// The message is not a valid `HekaMessage` protobuf.
    #[error("invalid heka message")]
    BadMessage(#[source] prost::DecodeError),
    /// The message decodes but its uuid is not 16 bytes.
    #[error("heka uuid is {0} bytes, expected 16")]
    BadUuid(usize),
    /// A single frame was expected but more bytes follow it.
    #[error("trailing bytes after the frame")]
    TrailingBytes,
}

/// A stretch of a Heka stream that is not a frame: why, where, and the bytes skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broken heka frame at byte {offset}: {kind} ({} bytes skipped)", raw.len())]
pub struct FrameError {
    kind: FrameErrorKind,
    offset: usize,
    raw: Vec<u8>,
}

impl FrameError {
    /// Why the frame is broken.
    pub fn kind(&self) -> &FrameErrorKind {
        &self.kind
    }

    /// Offset of the skipped bytes in the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes skipped (the payload of the dead letter).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The bytes skipped, by value.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }
}

/// Reads the frames of a Heka stream held in memory.
///
/// Each item is a message, or a [`FrameError`] carrying the bytes skipped up to the next
/// record separator, where decoding resumes: a broken frame never hides the frames after it,
/// every input byte belongs to exactly one item, and no input makes it panic.
/// [`FrameDecoder::position`] tells how far it has read.
///
/// ```
/// use sluice_schemas::heka::{encode_frame, FrameDecoder, FrameErrorKind, HekaMessage};
///
/// let good = encode_frame(&HekaMessage { uuid: vec![1; 16], ..HekaMessage::default() });
/// let mut stream = good.clone();
/// stream.truncate(good.len() - 3); // a frame cut short...
/// stream.extend_from_slice(&good); // ...followed by a good one
///
/// let mut frames = FrameDecoder::new(&stream);
/// let broken = frames.next().unwrap().unwrap_err();
/// assert_eq!(broken.raw(), &good[..good.len() - 3]);
/// // the cut frame's message runs into the next frame, so it does not decode
/// assert!(matches!(broken.kind(), FrameErrorKind::BadMessage(_) | FrameErrorKind::BadUuid(_)));
/// assert!(frames.next().unwrap().is_ok());
/// assert!(frames.next().is_none());
/// assert_eq!(frames.position(), stream.len());
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder<'a> {
    input: &'a [u8],
    position: usize,
    max_message_len: usize,
}

impl<'a> FrameDecoder<'a> {
    /// A decoder over `input` that accepts messages up to [`DEFAULT_MAX_MESSAGE_LEN`].
    pub fn new(input: &'a [u8]) -> Self {
        FrameDecoder {
            input,
            position: 0,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
        }
    }

    /// Sets the largest message length a header may announce.
    pub fn with_max_message_len(mut self, max_message_len: usize) -> Self {
        self.max_message_len = max_message_len;
        self
    }

    /// How many bytes of the input have been consumed.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Decodes the frame at `start`: the message and the end of the frame.
    fn frame_at(&self, start: usize) -> Result<(HekaMessage, usize), FrameErrorKind> {
        let input = self.input;
        if input[start] != RECORD_SEPARATOR {
            return Err(FrameErrorKind::MissingRecordSeparator);
        }
        let header_length = *input.get(start + 1).ok_or(FrameErrorKind::Truncated)? as usize;
        let header_start = start + 2;
        let header_end = header_start + header_length;
        let header_bytes = input
            .get(header_start..header_end)
            .ok_or(FrameErrorKind::Truncated)?;
        let header = Header::decode(header_bytes).map_err(FrameErrorKind::BadHeader)?;
        if header.message_length as usize > self.max_message_len {
            return Err(FrameErrorKind::TooLarge {
                length: header.message_length,
                max: self.max_message_len,
            });
        }
        match input.get(header_end) {
            None => return Err(FrameErrorKind::Truncated),
            Some(&UNIT_SEPARATOR) => {}
            Some(_) => return Err(FrameErrorKind::MissingUnitSeparator),
        }
        let message_start = header_end + 1;
        let message_end = message_start + header.message_length as usize;
        let message_bytes = input
            .get(message_start..message_end)
            .ok_or(FrameErrorKind::Truncated)?;
        let message = HekaMessage::decode(message_bytes).map_err(FrameErrorKind::BadMessage)?;
        if message.uuid.len() != 16 {
            return Err(FrameErrorKind::BadUuid(message.uuid.len()));
        }
        Ok((message, message_end))
    }
}

impl Iterator for FrameDecoder<'_> {
    type Item = Result<HekaMessage, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.position;
        if start >= self.input.len() {
            return None;
        }
        match self.frame_at(start) {
            Ok((message, end)) => {
                self.position = end;
                Some(Ok(message))
            }
            Err(kind) => {
                let end = self.input[start + 1..]
                    .iter()
                    .position(|&b| b == RECORD_SEPARATOR)
                    .map_or(self.input.len(), |i| start + 1 + i);
                self.position = end;
                Some(Err(FrameError {
                    kind,
                    offset: start,
                    raw: self.input[start..end].to_vec(),
                }))
            }
        }
    }
}

impl std::iter::FusedIterator for FrameDecoder<'_> {}

/// Decodes the frames of a stream; see [`FrameDecoder`].
pub fn decode_frames(input: &[u8]) -> FrameDecoder<'_> {
    FrameDecoder::new(input)
}

/// Decodes input that must be exactly one frame (a Kafka record, say).
pub fn decode_frame(input: &[u8]) -> Result<HekaMessage, FrameError> {
    let mut frames = FrameDecoder::new(input);
    match frames.next() {
        None => Err(FrameError {
            kind: FrameErrorKind::Truncated,
            offset: 0,
            raw: Vec::new(),
        }),
        Some(Err(e)) => Err(e),
        Some(Ok(_)) if frames.position() < input.len() => Err(FrameError {
            kind: FrameErrorKind::TrailingBytes,
            offset: frames.position(),
            raw: input[frames.position()..].to_vec(),
        }),
        Some(Ok(message)) => Ok(message),
    }
}

/// Why a Heka message does not convert to a [`Message`] (or back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// There is no `content` field to take the payload from.
    #[error("heka message has no `content` field")]
    MissingContent,
    /// A field's values cannot be read as the declared type or as text.
    #[error("heka field `{name}`: {reason}")]
    InvalidField {
        /// The field name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Two fields map to the same attribute.
    #[error("heka fields `{first}` and `{second}` both map to attribute `{attribute}`")]
    DuplicateField {
        /// The attribute.
        attribute: String,
        /// The first field name.
        first: String,
        /// The second field name.
        second: String,
    },
    /// An attribute that cannot be represented as a Heka field (`content` holds the payload).
    #[error("attribute `{0}` is reserved for the payload")]
    ReservedAttribute(String),
}

/// The attribute a Heka field (an HTTP header, mostly) is stored under: ASCII lowercase with
/// `-` replaced by `_`, gcp-ingestion's spelling.
///
/// ```
/// use sluice_schemas::heka::attribute_name;
/// assert_eq!(attribute_name("X-PingSender-Version"), "x_pingsender_version");
/// assert_eq!(attribute_name("DNT"), "dnt");
/// assert_eq!(attribute_name("remote_addr"), "remote_addr");
/// ```
pub fn attribute_name(field: &str) -> String {
    field
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn invalid(field: &Field, reason: impl Into<String>) -> ConversionError {
    ConversionError::InvalidField {
        name: field.name.clone(),
        reason: reason.into(),
    }
}

fn value_type(field: &Field) -> Result<ValueType, ConversionError> {
    let raw = field.value_type.unwrap_or(ValueType::String as i32);
    ValueType::try_from(raw).map_err(|_| invalid(field, format!("unknown value type {raw}")))
}

fn content_bytes(field: &Field) -> Result<Vec<u8>, ConversionError> {
    match (
        value_type(field)?,
        &field.value_bytes[..],
        &field.value_string[..],
    ) {
        (ValueType::Bytes, [bytes], _) => Ok(bytes.clone()),
        (ValueType::String, _, [string]) => Ok(string.as_bytes().to_vec()),
        _ => Err(invalid(field, "expected exactly one bytes or string value")),
    }
}

fn field_text(field: &Field) -> Result<String, ConversionError> {
    let texts: Vec<String> = match value_type(field)? {
        ValueType::String => field.value_string.clone(),
        ValueType::Bytes => field
            .value_bytes
            .iter()
            .map(|b| String::from_utf8(b.clone()).map_err(|_| invalid(field, "not utf-8")))
            .collect::<Result<_, _>>()?,
        ValueType::Integer => field.value_integer.iter().map(i64::to_string).collect(),
        ValueType::Double => field.value_double.iter().map(f64::to_string).collect(),
        ValueType::Bool => field.value_bool.iter().map(bool::to_string).collect(),
    };
    if texts.is_empty() {
        return Err(invalid(
            field,
            format!("no value of its type {:?}", value_type(field)?),
        ));
    }
    Ok(texts.join(", "))
}

/// Formats nanoseconds since the epoch as RFC 3339 with microseconds and `Z`.
///
/// ```
/// use sluice_schemas::heka::format_timestamp;
/// assert_eq!(format_timestamp(1_520_888_538_123_456_789), "2018-03-12T21:02:18.123456Z");
/// ```
pub fn format_timestamp(nanos: i64) -> String {
    DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses what [`format_timestamp`] writes, only if formatting the result gives `text` back.
fn parse_canonical_timestamp(text: &str) -> Option<i64> {
    let nanos = DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()?;
    (nanos != 0 && format_timestamp(nanos) == text).then_some(nanos)
}

struct Uuid<'a>(&'a [u8]);

impl fmt::Display for Uuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Parses a lowercase hyphenated UUID, only if it is canonical and not nil.
fn parse_canonical_uuid(text: &str) -> Option<Vec<u8>> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    (bytes.iter().any(|&b| b != 0) && Uuid(&bytes).to_string() == text).then_some(bytes)
}

/// Converts a Heka message from the edge into a [`Message`] (see the [module docs](self)).
///
/// ```
/// use sluice_schemas::heka::{heka_to_message, Field, HekaMessage};
///
/// let heka = HekaMessage {
///     uuid: vec![0xab; 16],
///     timestamp: 1_520_888_538_123_456_789,
///     hostname: Some("edge-1".into()),
///     fields: vec![
///         Field::bytes("content", b"{\"a\":1}".to_vec()),
///         Field::string("uri", "/submit/test/test/1/8e2b6b5c-4a6a-4d8e-9a4b-6f3d2c1b0a99"),
///         Field::string("User-Agent", "curl/8.0"),
///     ],
///     ..HekaMessage::default()
/// };
/// let message = heka_to_message(&heka)?;
/// assert_eq!(&message.payload[..], b"{\"a\":1}");
/// assert_eq!(message.attribute("user_agent"), Some("curl/8.0"));
/// assert_eq!(message.attribute("host"), Some("edge-1"));
/// assert_eq!(message.attribute("submission_timestamp"), Some("2018-03-12T21:02:18.123456Z"));
/// assert_eq!(message.attribute("heka_uuid"), Some("abababab-abab-abab-abab-abababababab"));
/// # Ok::<(), sluice_schemas::heka::ConversionError>(())
/// ```
pub fn heka_to_message(heka: &HekaMessage) -> Result<Message, ConversionError> {
    let mut payload: Option<Vec<u8>> = None;
    let mut attributes = BTreeMap::new();
    let mut origins: BTreeMap<String, &str> = BTreeMap::new();
    for field in &heka.fields {
        let attribute = attribute_name(&field.name);
        if let Some(first) = origins.insert(attribute.clone(), &field.name) {
            return Err(ConversionError::DuplicateField {
                attribute,
                first: first.to_owned(),
                second: field.name.clone(),
            });
        }
        if attribute == CONTENT_FIELD {
            payload = Some(content_bytes(field)?);
        } else {
            attributes.insert(attribute, field_text(field)?);
        }
    }
    let payload = payload.ok_or(ConversionError::MissingContent)?;
    if let Some(host) = &heka.hostname {
        attributes
            .entry(HOST_ATTRIBUTE.to_owned())
            .or_insert_with(|| host.clone());
    }
    if heka.timestamp != 0 {
        attributes
            .entry(TIMESTAMP_ATTRIBUTE.to_owned())
            .or_insert_with(|| format_timestamp(heka.timestamp));
    }
    match heka.uuid.len() {
        0 => {}
        16 if heka.uuid.iter().all(|&b| b == 0) => {}
        16 => {
            attributes
                .entry(UUID_ATTRIBUTE.to_owned())
                .or_insert_with(|| Uuid(&heka.uuid).to_string());
        }
        n => {
            return Err(ConversionError::InvalidField {
                name: "uuid".to_owned(),
                reason: format!("{n} bytes, expected 16"),
            })
        }
    }
    Ok(Message::new(payload).with_attributes(attributes))
}

/// Converts a [`Message`] into a Heka message as the edge would have written it: the payload
/// in a bytes field `content`, `submission_timestamp`, `heka_uuid` and `host` in the header
/// (when they are in the canonical form [`heka_to_message`] writes; otherwise as fields), and
/// every other attribute as a string field of the same name. The uuid is nil when there is
/// none. Fails only on an attribute named `content`.
pub fn message_to_heka(message: &Message) -> Result<HekaMessage, ConversionError> {
    let mut heka = HekaMessage {
        uuid: vec![0; 16],
        fields: vec![Field::bytes(CONTENT_FIELD, message.payload.to_vec())],
        ..HekaMessage::default()
    };
    for (key, value) in &message.attributes {
        match key.as_str() {
            CONTENT_FIELD => return Err(ConversionError::ReservedAttribute(key.clone())),
            TIMESTAMP_ATTRIBUTE => {
                if let Some(nanos) = parse_canonical_timestamp(value) {
                    heka.timestamp = nanos;
                    continue;
                }
            }
            UUID_ATTRIBUTE => {
                if let Some(uuid) = parse_canonical_uuid(value) {
                    heka.uuid = uuid;
                    continue;
                }
            }
            HOST_ATTRIBUTE => {
                heka.hostname = Some(value.clone());
                continue;
            }
            _ => {}
        }
        heka.fields.push(Field::string(key.clone(), value.clone()));
    }
    Ok(heka)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HekaMessage {
        HekaMessage {
            uuid: (0..16).collect(),
            timestamp: 1_520_888_538_123_456_789,
            r#type: Some("t".into()),
            hostname: Some("edge".into()),
            fields: vec![
                Field::bytes("content", b"hello".to_vec()),
                Field::string("X-Forwarded-For", "1.2.3.4"),
                Field {
                    name: "Content-Length".into(),
                    value_type: Some(ValueType::Integer as i32),
                    value_integer: vec![5],
                    ..Field::default()
                },
            ],
            ..HekaMessage::default()
        }
    }

    #[test]
    fn defaults_follow_the_proto() {
        let m = HekaMessage::default();
        assert_eq!(m.severity(), 7);
        assert_eq!(Field::default().value_type(), ValueType::String);
    }

    #[test]
    fn frame_layout() {
        let frame = encode_frame(&sample());
        assert_eq!(frame[0], RECORD_SEPARATOR);
        let header_len = frame[1] as usize;
        assert_eq!(frame[2 + header_len], UNIT_SEPARATOR);
        let header = Header::decode(&frame[2..2 + header_len]).unwrap();
        assert_eq!(header.message_length as usize, frame.len() - 3 - header_len);
        assert_eq!(decode_frame(&frame).unwrap(), sample());
    }

    #[test]
    fn each_kind_of_broken_frame() {
        let good = encode_frame(&sample());
        let header_len = good[1] as usize;
        let kind = |bytes: &[u8]| decode_frame(bytes).unwrap_err().kind().clone();

        assert_eq!(kind(b"x"), FrameErrorKind::MissingRecordSeparator);
        assert_eq!(kind(&[RECORD_SEPARATOR]), FrameErrorKind::Truncated);
        assert_eq!(kind(&good[..good.len() - 1]), FrameErrorKind::Truncated);
        assert!(matches!(
            kind(&[0x1e, 1, 0xff, 0x1f]),
            FrameErrorKind::BadHeader(_)
        ));

        let mut no_unit = good.clone();
        no_unit[2 + header_len] = b'x';
        assert_eq!(kind(&no_unit), FrameErrorKind::MissingUnitSeparator);

        let err = FrameDecoder::new(&good)
            .with_max_message_len(3)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            FrameErrorKind::TooLarge { max: 3, .. }
        ));

        let mut bad_message = good.clone();
        let last = bad_message.len() - 1;
        bad_message[last] = 0xff; // a varint that never ends
        assert!(matches!(kind(&bad_message), FrameErrorKind::BadMessage(_)));

        let short_uuid = HekaMessage {
            uuid: vec![1, 2],
            ..HekaMessage::default()
        };
        assert_eq!(kind(&encode_frame(&short_uuid)), FrameErrorKind::BadUuid(2));

        let mut trailing = good.clone();
        trailing.push(b'!');
        let err = decode_frame(&trailing).unwrap_err();
        assert_eq!(err.kind(), &FrameErrorKind::TrailingBytes);
        assert_eq!(err.raw(), b"!");
        assert_eq!(err.offset(), good.len());
        assert!(err.to_string().starts_with("broken heka frame at byte"));
    }

    #[test]
    fn resyncs_after_garbage_and_broken_frames() {
        let good = encode_frame(&sample());
        let mut stream = b"junk".to_vec();
        stream.extend_from_slice(&good[..10]);
        stream.extend_from_slice(&good);
        stream.extend_from_slice(&[RECORD_SEPARATOR]);
        let items: Vec<_> = decode_frames(&stream).collect();
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[0].as_ref().unwrap_err().raw(), b"junk");
        assert_eq!(items[1].as_ref().unwrap_err().raw(), &good[..10]);
        assert_eq!(items[2].as_ref().unwrap(), &sample());
        assert_eq!(
            items[3].as_ref().unwrap_err().kind(),
            &FrameErrorKind::Truncated
        );
    }

    #[test]
    fn converts_edge_messages() {
        let m = heka_to_message(&sample()).unwrap();
        assert_eq!(&m.payload[..], b"hello");
        let attrs: Vec<(&str, &str)> = m
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            [
                ("content_length", "5"),
                ("heka_uuid", "00010203-0405-0607-0809-0a0b0c0d0e0f"),
                ("host", "edge"),
                ("submission_timestamp", "2018-03-12T21:02:18.123456Z"),
                ("x_forwarded_for", "1.2.3.4"),
            ]
        );
    }

    #[test]
    fn conversion_errors() {
        let mut no_content = sample();
        no_content.fields.remove(0);
        assert_eq!(
            heka_to_message(&no_content),
            Err(ConversionError::MissingContent)
        );

        let mut bad_content = sample();
        bad_content.fields[0].value_type = Some(ValueType::Integer as i32);
        assert!(matches!(
            heka_to_message(&bad_content),
            Err(ConversionError::InvalidField { ref name, .. }) if name == "content"
        ));

        let mut unknown_type = sample();
        unknown_type.fields[1].value_type = Some(42);
        assert!(matches!(
            heka_to_message(&unknown_type),
            Err(ConversionError::InvalidField { .. })
        ));

        let mut not_utf8 = sample();
        not_utf8.fields.push(Field::bytes("x", vec![0xff]));
        assert!(heka_to_message(&not_utf8).is_err());

        let mut duplicate = sample();
        duplicate
            .fields
            .push(Field::string("x-forwarded-for", "5.6.7.8"));
        assert!(matches!(
            heka_to_message(&duplicate),
            Err(ConversionError::DuplicateField { .. })
        ));

        let reserved = Message::new("x").with_attribute("content", "y");
        assert_eq!(
            message_to_heka(&reserved),
            Err(ConversionError::ReservedAttribute("content".into()))
        );
    }

    #[test]
    fn non_canonical_header_attributes_survive_as_fields() {
        let m = Message::new("p")
            .with_attribute("submission_timestamp", "yesterday")
            .with_attribute("heka_uuid", "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB");
        let heka = message_to_heka(&m).unwrap();
        assert_eq!(heka.timestamp, 0);
        assert_eq!(heka.uuid, vec![0; 16]);
        assert_eq!(heka_to_message(&heka).unwrap(), m);
    }
}
