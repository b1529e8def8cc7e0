//! The config of the standard-IO connectors, as a job's config file spells it:
//! `[source] type = "stdin"` and `[sink] type = "stdout"` or `"stderr"`.

use crate::config_doc::{Documented, Key};
use serde::{Deserialize, Serialize};

use super::{StderrSink, StdinSource, StdoutSink};
use crate::io::format::{InputFormat, OutputFormat};

/// Standard input, read until it closes.
///
/// ```
/// use sluice_transforms::io::format::InputFormat;
/// use sluice_transforms::io::stdio::StdinSourceConfig;
/// let c: StdinSourceConfig = toml::from_str("format = \"text\"").unwrap();
/// assert_eq!(c.format, InputFormat::Text);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// How the bytes are framed into messages: `json` (gcp-ingestion envelopes), `text`
    /// (lines) or `heka`; gzipped input is read transparently.
    #[serde(default = "default_input_format")]
    pub format: InputFormat,
}

/// Standard output or standard error, one record per line.
///
/// ```
/// use sluice_transforms::io::format::OutputFormat;
/// use sluice_transforms::io::stdio::StdioSinkConfig;
/// let c: StdioSinkConfig = toml::from_str("").unwrap();
/// assert_eq!(c.format, OutputFormat::Json);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StdioSinkConfig {
    /// How each record is written: `json` (the replayable envelope), `decoded` (the payload
    /// document) or `text` (the raw payload).
    #[serde(default = "default_output_format")]
    pub format: OutputFormat,
}

impl Documented for StdinSourceConfig {
    const KEYS: &'static [Key] = &[Key::default(
        "format",
        "\"json\" | \"text\" | \"heka\"",
        "\"json\"",
        "how bytes become messages: gcp-ingestion envelopes, lines or Heka frames; gzipped input is read transparently",
    )];
}

impl Documented for StdioSinkConfig {
    const KEYS: &'static [Key] = &[Key::default(
        "format",
        "\"json\" | \"decoded\" | \"text\"",
        "\"json\"",
        "how each record is written: the replayable envelope, the payload document or the raw payload",
    )];
}

/// The gcp-ingestion ndjson envelope, `json`.
pub fn default_input_format() -> InputFormat {
    InputFormat::Json
}

/// The replayable envelope, `json`.
pub fn default_output_format() -> OutputFormat {
    OutputFormat::Json
}

impl Default for StdinSourceConfig {
    fn default() -> Self {
        StdinSourceConfig {
            format: default_input_format(),
        }
    }
}

impl Default for StdioSinkConfig {
    fn default() -> Self {
        StdioSinkConfig {
            format: default_output_format(),
        }
    }
}

impl StdinSourceConfig {
    /// The source on the process's standard input.
    pub fn source(&self) -> StdinSource {
        StdinSource::new(self.format)
    }
}

impl StdioSinkConfig {
    /// A sink on standard output.
    pub fn stdout(&self) -> StdoutSink {
        StdoutSink::new(self.format)
    }

    /// A sink on standard error.
    pub fn stderr(&self) -> StderrSink {
        StderrSink::new(self.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let c: StdinSourceConfig = toml::from_str("").unwrap();
        assert_eq!(c, StdinSourceConfig::default());
        let s: StdioSinkConfig = toml::from_str("format = \"decoded\"").unwrap();
        assert_eq!(s.format, OutputFormat::Decoded);
        let back: StdioSinkConfig = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unknown_keys_and_bad_formats_are_errors() {
        let e = toml::from_str::<StdinSourceConfig>("path = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `path`"), "{e}");
        let e = toml::from_str::<StdioSinkConfig>("dir = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `dir`"), "{e}");
        let e = toml::from_str::<StdioSinkConfig>("format = \"heka\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `heka`"), "{e}");
    }
}
