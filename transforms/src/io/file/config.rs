//! The config of the file source, as a job's config file spells it: `[source] type = "file"`.

use crate::config_doc::{ty, Documented, Key};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

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
    /// A directory (created if missing) where the source persists, per input file, what
    /// every sink made durable, so that a restart resumes there instead of reading the input
    /// again. Without it a restart reads every file from the start.
    #[serde(
        default,
        deserialize_with = "non_empty_dir",
        skip_serializing_if = "Option::is_none"
    )]
    pub state_dir: Option<PathBuf>,
}

impl Documented for FileSourceConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "path",
            ty::GLOB,
            "\"examples/data/*.ndjson\"",
            "the input files: a path or a glob pattern (`data/*.ndjson.gz`), which must match at least one file",
        ),
        Key::default(
            "format",
            "\"json\" | \"text\" | \"heka\"",
            "\"json\"",
            "how bytes become messages: gcp-ingestion envelopes, lines or Heka frames; `.gz` files are read transparently",
        ),
        Key::optional(
            "state_dir",
            ty::PATH,
            "a directory (created when the job runs) where acknowledged file positions are kept, so a restart resumes; instead of the job's `data_dir`",
        ),
    ];
}

fn non_empty_dir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected the path of a directory (created if missing)")
    })?;
    if s.is_empty() {
        return Err(serde::de::Error::custom(
            "expected the path of a directory (created if missing), found an empty string",
        ));
    }
    Ok(Some(PathBuf::from(s)))
}

/// The gcp-ingestion ndjson envelope, `json`.
pub fn default_format() -> InputFormat {
    InputFormat::Json
}

impl FileSourceConfig {
    /// The source (files are listed when it is resolved or opened).
    pub fn source(&self) -> FileSource {
        let source = FileSource::glob(self.path.clone(), self.format);
        match &self.state_dir {
            Some(dir) => source.with_state_dir(dir),
            None => source,
        }
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
