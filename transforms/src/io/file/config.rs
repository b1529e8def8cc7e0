//! The config of the file source, as a job's config file spells it: `[source] type = "file"`.

use serde::{Deserialize, Serialize};

use super::FileSource;
use crate::io::format::InputFormat;

/// Files matching a glob pattern, read once (a bounded input).
///
/// ```
/// use sluice_transforms::io::file::FileSourceConfig;
/// use sluice_transforms::io::format::InputFormat;
/// let c: FileSourceConfig = toml::from_str("path = \"data/*.ndjson.gz\"").unwrap();
/// assert_eq!(c.format, InputFormat::Json);
/// assert!(toml::from_str::<FileSourceConfig>("path = \"x\"\npaht = \"y\"").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// A path or a glob pattern (`data/*.ndjson`); a pattern must match at least one file.
    pub path: String,
    /// How the bytes are framed into messages: `json` (gcp-ingestion envelopes), `text`
    /// (lines) or `heka` (Heka stream frames); gzipped files are read transparently.
    #[serde(default = "default_format")]
    pub format: InputFormat,
}

/// The gcp-ingestion ndjson envelope, `json`.
pub fn default_format() -> InputFormat {
    InputFormat::Json
}

impl FileSourceConfig {
    /// The source (files are listed when it is resolved or opened).
    pub fn source(&self) -> FileSource {
        FileSource::glob(self.path.clone(), self.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileSourceConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_defaults_and_round_trips() {
        let c = parse("path = \"a/*.gz\"\nformat = \"heka\"").unwrap();
        assert_eq!(c.format, InputFormat::Heka);
        assert_eq!(c.source().format(), InputFormat::Heka);
        assert_eq!(parse(&toml::to_string(&c).unwrap()).unwrap(), c);
        assert_eq!(parse("path = \"x\"").unwrap().format, InputFormat::Json);
    }

    #[test]
    fn unknown_keys_missing_path_and_bad_format_are_errors() {
        assert!(parse("path = \"x\"\npaht = \"y\"")
            .unwrap_err()
            .contains("unknown field `paht`"));
        assert!(parse("format = \"json\"")
            .unwrap_err()
            .contains("missing field `path`"));
        assert!(parse("path = \"x\"\nformat = \"xml\"")
            .unwrap_err()
            .contains("unknown variant `xml`"));
    }
}
