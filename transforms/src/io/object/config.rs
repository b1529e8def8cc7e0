//! The config of the object sink, as a job's config file spells it: `type = "file"` (a local
//! directory, [`LocalSinkConfig`]) and `type = "s3"` ([`S3SinkConfig`]); both share the object
//! settings of [`ObjectSinkConfig`].
//!
//! Sizes and durations read as in [`crate::io::units`]: a bare number is bytes or seconds.

use crate::config_doc::{ty, Documented, Key};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    BatchBounds, Compression, MemoryBudget, ObjectSink, ObjectSinkError, OutputFormat,
    PathTemplate, DEFAULT_PART_SIZE, LOCAL_PART_SIZE, S3_MIN_PART_SIZE,
};
use crate::io::units;

/// The settings of an object sink whatever the store (the store's own keys, directory or
/// bucket, are in [`LocalSinkConfig`] and [`S3SinkConfig`]).
///
/// ```
/// use sluice_transforms::io::object::ObjectSinkConfig;
/// let c: ObjectSinkConfig = serde_json::from_str(
///     r#"{"path": "${document_type:-unknown}/", "compression": "none",
///         "batch": {"max_bytes": "1MB", "max_age": 5}}"#,
/// ).unwrap();
/// assert_eq!(c.batch.max_bytes, 1_000_000);
/// assert_eq!(c.batch.max_age.as_secs(), 5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSinkConfig {
    /// Path template of object prefixes, e.g.
    /// `${document_namespace}/${document_type}/v${document_version}/${submission_date:-unknown}/`;
    /// every placeholder needs a default (`${attr:-default}`).
    #[serde(default = "default_path")]
    pub path: PathTemplate,
    /// How records become lines: `decoded` (payload JSON), `json` (gcp-ingestion envelope,
    /// replayable) or `text` (raw payload).
    #[serde(default = "default_format")]
    pub format: OutputFormat,
    /// `gzip` or `none`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// When a batch becomes an object.
    #[serde(default)]
    pub batch: BatchConfig,
}

/// Objects of a local directory: `[sink] type = "file"`.
///
/// ```
/// use sluice_transforms::io::object::LocalSinkConfig;
/// let c: LocalSinkConfig = toml::from_str(r#"
///     dir = "out"
///     path = "${document_type:-unknown}/"
///     batch = { max_records = 10, max_age = "250ms" }
/// "#).unwrap();
/// assert_eq!(c.dir.to_str(), Some("out"));
/// assert_eq!(c.batch.max_age.as_millis(), 250);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSinkConfig {
    /// The directory objects are written under; created when the sink runs (never by
    /// `validate`).
    pub dir: PathBuf,
    /// The object key prefix inside `dir`: see [`ObjectSinkConfig::path`].
    #[serde(default = "default_path")]
    pub path: PathTemplate,
    /// How records become lines: see [`ObjectSinkConfig::format`].
    #[serde(default = "default_format")]
    pub format: OutputFormat,
    /// Object compression: see [`ObjectSinkConfig::compression`].
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// When a batch becomes an object.
    #[serde(default)]
    pub batch: BatchConfig,
}

/// Objects of an S3 (or S3-compatible) bucket: `[sink] type = "s3"`. Credentials are never in
/// the config file: they come from the environment.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// The bucket.
    pub bucket: String,
    /// The object key prefix: see [`ObjectSinkConfig::path`].
    #[serde(default = "default_path")]
    pub path: PathTemplate,
    /// A custom endpoint (MinIO, localstack, moto); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region; from `AWS_REGION` / `AWS_DEFAULT_REGION` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Where credentials come from: `env` (`AWS_ACCESS_KEY_ID`, ..., then instance
    /// credentials), the only choice today.
    #[serde(default = "default_credentials")]
    pub credentials: Credentials,
    /// Allow a plain-http endpoint (tests against a local server).
    #[serde(default)]
    pub allow_http: bool,
    /// How records become lines: see [`ObjectSinkConfig::format`].
    #[serde(default = "default_format")]
    pub format: OutputFormat,
    /// Object compression: see [`ObjectSinkConfig::compression`].
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// When a batch becomes an object.
    #[serde(default)]
    pub batch: BatchConfig,
}

const SINK_PATH: Key = Key::default(
    "path",
    ty::TEMPLATE,
    "\"\"",
    "object key prefix, `${attr:-default}` placeholders (each needs a default), e.g. `${document_type:-unknown}/`",
);
const SINK_FORMAT: Key = Key::default(
    "format",
    "\"json\" | \"decoded\" | \"text\"",
    "\"json\"",
    "how records become lines: the replayable envelope, the payload document or the raw payload",
);
const SINK_COMPRESSION: Key = Key::default(
    "compression",
    "\"gzip\" | \"none\"",
    "\"gzip\"",
    "object compression",
);
const SINK_BATCH: Key = Key::default(
    "batch",
    ty::TABLE,
    "{}",
    "when a batch becomes an object, how it streams, how much memory open batches hold",
)
.with_table(<BatchConfig as Documented>::keys);

impl Documented for LocalSinkConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "dir",
            ty::PATH,
            "\"out\"",
            "the directory objects are written under (created when the job runs, never by `validate`)",
        ),
        SINK_PATH,
        SINK_FORMAT,
        SINK_COMPRESSION,
        SINK_BATCH,
    ];
}

impl Documented for S3SinkConfig {
    const KEYS: &'static [Key] = &[
        Key::required("bucket", ty::STRING, "\"my-bucket\"", "the bucket"),
        SINK_PATH,
        Key::optional(
            "endpoint",
            ty::STRING,
            "a custom endpoint (MinIO, moto, localstack); AWS when absent",
        ),
        Key::optional(
            "region",
            ty::STRING,
            "the region; from `AWS_REGION` / `AWS_DEFAULT_REGION` when absent",
        ),
        Key::default(
            "credentials",
            "\"env\"",
            "\"env\"",
            "where credentials come from: `AWS_ACCESS_KEY_ID`, ... then instance credentials (never the config file)",
        ),
        Key::default(
            "allow_http",
            ty::BOOL,
            "false",
            "allow a plain-http `endpoint` (a local test server)",
        ),
        SINK_FORMAT,
        SINK_COMPRESSION,
        SINK_BATCH,
    ];
}

impl Documented for BatchConfig {
    const KEYS: &'static [Key] = &[
        Key::default(
            "max_bytes",
            ty::SIZE,
            "\"100MB\"",
            "uncompressed bytes of a batch",
        ),
        Key::default("max_records", ty::COUNT, "1000000", "records of a batch"),
        Key::default("max_age", ty::DURATION, "\"60s\"", "age of an open batch"),
        Key::optional(
            "part_size",
            ty::SIZE,
            "compressed bytes sent as one part of a multipart upload: 64 KiB on a local directory, 8 MiB on S3 (at least 5 MiB there)",
        ),
        Key::default(
            "max_open_bytes",
            ty::SIZE,
            "\"64MiB\"",
            "bytes a worker's open batches may hold; past it the least recently written closes early",
        ),
        Key::default(
            "max_open_batches",
            ty::COUNT,
            "256",
            "open batches per worker (one per rendered path); past it the least recently written closes early",
        ),
    ];
}

/// Where S3 credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and the usual chain.
    Env,
}

/// When a batch of records becomes an object (the first bound reached closes it), how it is
/// streamed to the store, and how much memory a worker's open batches may hold. Every bound
/// is above zero.
///
/// An open batch holds its compressor state (about 400 KB for gzip) and at most about one
/// part; when a worker's open batches would hold more than `max_open_bytes`, or it would have
/// more than `max_open_batches` of them, the least recently written are closed early.
///
/// ```
/// use sluice_transforms::io::object::BatchConfig;
/// let c: BatchConfig = toml::from_str(
///     "max_bytes = \"100MB\"\npart_size = \"16MiB\"\nmax_open_bytes = \"32MiB\"\nmax_open_batches = 64",
/// ).unwrap();
/// assert_eq!(c.part_size, Some(16 << 20));
/// assert_eq!(c.budget().max_open_bytes, 32 << 20);
/// assert_eq!(c.budget().max_open_batches, 64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Uncompressed bytes of a batch: bytes or `"100MB"`, `"64 MiB"`, ...
    #[serde(default = "default_max_bytes", with = "units::size")]
    pub max_bytes: usize,
    /// Records of a batch.
    #[serde(default = "default_max_records", with = "units::count")]
    pub max_records: usize,
    /// Age of an open batch: seconds or `"60s"`, `"500ms"`, `"5m"`, ...
    #[serde(default = "default_max_age", with = "units::duration")]
    pub max_age: Duration,
    /// Compressed bytes an open batch buffers before they go to the store as one part of a
    /// multipart upload (an object smaller than a part is one put). When absent: on a
    /// local directory ([`LOCAL_PART_SIZE`](crate::io::object::LOCAL_PART_SIZE), 64 KiB), 8 MiB on S3
    /// ([`DEFAULT_PART_SIZE`](crate::io::object::DEFAULT_PART_SIZE)), where it must be at least 5 MiB.
    #[serde(
        default,
        with = "units::option_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub part_size: Option<usize>,
    /// Bytes a worker's open batches may hold (compressor state, part buffers): `"64MiB"`.
    #[serde(default = "default_max_open_bytes", with = "units::size")]
    pub max_open_bytes: usize,
    /// Open batches per worker (one per rendered path): `256`.
    #[serde(default = "default_max_open_batches", with = "units::count")]
    pub max_open_batches: usize,
}

/// An empty prefix: objects at the top of the directory or bucket.
pub fn default_path() -> PathTemplate {
    PathTemplate::parse("").expect("the empty template parses")
}

/// The replayable envelope, `json`.
pub fn default_format() -> OutputFormat {
    OutputFormat::Json
}

/// `gzip`.
pub fn default_compression() -> Compression {
    Compression::Gzip
}

/// `env`.
pub fn default_credentials() -> Credentials {
    Credentials::Env
}

/// 100 MB, as the Hindsight loader wrote.
pub fn default_max_bytes() -> usize {
    BatchBounds::default().max_bytes
}

/// 1 000 000 records.
pub fn default_max_records() -> usize {
    BatchBounds::default().max_records
}

/// 60 s.
pub fn default_max_age() -> Duration {
    BatchBounds::default().max_age
}

/// 64 KiB on a local directory: see [`LOCAL_PART_SIZE`].
pub fn default_local_part_size() -> usize {
    LOCAL_PART_SIZE
}

/// 8 MiB on S3 (whose smallest part is 5 MiB).
pub fn default_s3_part_size() -> usize {
    DEFAULT_PART_SIZE
}

/// 64 MiB per worker.
pub fn default_max_open_bytes() -> usize {
    MemoryBudget::default().max_open_bytes
}

/// 256 open batches per worker.
pub fn default_max_open_batches() -> usize {
    MemoryBudget::default().max_open_batches
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_bytes: default_max_bytes(),
            max_records: default_max_records(),
            max_age: default_max_age(),
            part_size: None,
            max_open_bytes: default_max_open_bytes(),
            max_open_batches: default_max_open_batches(),
        }
    }
}

impl BatchConfig {
    /// The bounds, or an error naming the key that is zero (a config read by serde has none).
    pub fn bounds(&self) -> Result<BatchBounds, ObjectSinkError> {
        for (key, zero) in [
            ("batch.max_bytes", self.max_bytes == 0),
            ("batch.max_records", self.max_records == 0),
            ("batch.max_age", self.max_age.is_zero()),
            ("batch.part_size", self.part_size == Some(0)),
            ("batch.max_open_bytes", self.max_open_bytes == 0),
            ("batch.max_open_batches", self.max_open_batches == 0),
        ] {
            if zero {
                return Err(ObjectSinkError::Config(format!(
                    "`{key}` must be above zero"
                )));
            }
        }
        Ok(BatchBounds {
            max_bytes: self.max_bytes,
            max_records: self.max_records,
            max_age: self.max_age,
        })
    }

    /// The memory budget of each worker's open batches.
    pub fn budget(&self) -> MemoryBudget {
        MemoryBudget {
            max_open_bytes: self.max_open_bytes,
            max_open_batches: self.max_open_batches,
        }
    }

    /// The part size on S3, or an error when it is below what S3 takes.
    pub fn s3_part_size(&self) -> Result<usize, ObjectSinkError> {
        let size = self.part_size.unwrap_or_else(default_s3_part_size);
        if size < S3_MIN_PART_SIZE {
            return Err(ObjectSinkError::Config(format!(
                "`batch.part_size` is {size} bytes: S3 takes parts of at least 5 MiB ({S3_MIN_PART_SIZE} bytes)"
            )));
        }
        Ok(size)
    }
}

impl LocalSinkConfig {
    /// The store-independent settings.
    pub fn object(&self) -> ObjectSinkConfig {
        ObjectSinkConfig {
            path: self.path.clone(),
            format: self.format,
            compression: self.compression,
            batch: self.batch,
        }
    }

    /// Checks, without creating or writing anything, that the sink can be built: `dir` is a
    /// directory or does not exist yet.
    pub fn check(&self) -> Result<(), ObjectSinkError> {
        self.batch.bounds()?;
        match std::fs::metadata(&self.dir) {
            Ok(m) if !m.is_dir() => Err(ObjectSinkError::Directory {
                path: self.dir.display().to_string(),
                source: std::sync::Arc::new(std::io::Error::other("not a directory")),
            }),
            _ => Ok(()),
        }
    }

    /// The sink; creates `dir` when missing.
    pub fn sink(&self) -> Result<ObjectSink, ObjectSinkError> {
        let sink = ObjectSink::local(&self.dir, self.path.clone())?;
        let part_size = self.batch.part_size.unwrap_or_else(default_local_part_size);
        Ok(configured(sink, &self.object())?.with_part_size(part_size))
    }
}

impl S3SinkConfig {
    /// The store-independent settings.
    pub fn object(&self) -> ObjectSinkConfig {
        ObjectSinkConfig {
            path: self.path.clone(),
            format: self.format,
            compression: self.compression,
            batch: self.batch,
        }
    }

    /// The sink (no request is made until it writes).
    #[cfg(feature = "s3")]
    pub fn sink(&self) -> Result<ObjectSink, ObjectSinkError> {
        let mut options = super::S3Options::new(self.bucket.clone());
        options.endpoint = self.endpoint.clone();
        options.region = self.region.clone();
        options.allow_http = self.allow_http;
        let part_size = self.batch.s3_part_size()?;
        let sink = ObjectSink::s3(&options, self.path.clone())?;
        Ok(configured(sink, &self.object())?.with_part_size(part_size))
    }
}

fn configured(sink: ObjectSink, c: &ObjectSinkConfig) -> Result<ObjectSink, ObjectSinkError> {
    Ok(sink
        .with_format(c.format)
        .with_compression(c.compression)
        .with_batch(c.batch.bounds()?)
        .with_budget(c.batch.budget()))
}

// A template is written and read as its text; a placeholder without a default is refused
// where it is read, with the key's path.
impl Serialize for PathTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PathTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PathTemplate::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> Result<LocalSinkConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_with_defaults() {
        let c: ObjectSinkConfig = serde_json::from_str(r#"{"path": "x/"}"#).unwrap();
        assert_eq!(c.format, OutputFormat::Json);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.batch.bounds().unwrap(), BatchBounds::default());
        let c = local("dir = \"d\"").unwrap();
        assert_eq!(c.path.as_str(), "");
        assert_eq!(c.object().batch, BatchConfig::default());
    }

    #[test]
    fn bare_numbers_are_bytes_and_seconds() {
        let c: ObjectSinkConfig = serde_json::from_str(
            r#"{"path": "x/", "format": "decoded", "batch": {"max_bytes": 1024, "max_records": 5, "max_age": 15}}"#,
        )
        .unwrap();
        assert_eq!(c.format, OutputFormat::Decoded);
        assert_eq!(c.batch.max_bytes, 1024);
        assert_eq!(c.batch.max_age, Duration::from_secs(15));
        let c = local("dir = \"d\"\nbatch = { max_age = \"15\", max_bytes = \"64MiB\" }").unwrap();
        assert_eq!(c.batch.max_age, Duration::from_secs(15));
        assert_eq!(c.batch.max_bytes, 64 << 20);
    }

    #[test]
    fn streaming_and_budget_keys_read_and_apply() {
        let c = local(
            "dir = \"d\"\nbatch = { part_size = \"2MiB\", max_open_bytes = \"32MiB\", max_open_batches = 16 }",
        )
        .unwrap();
        assert_eq!(c.batch.part_size, Some(2 << 20));
        assert_eq!(
            c.batch.budget(),
            MemoryBudget {
                max_open_bytes: 32 << 20,
                max_open_batches: 16
            }
        );
        let tmp = tempfile::tempdir().unwrap();
        let c = local(&format!(
            "dir = {:?}\nbatch = {{ max_open_batches = 16 }}",
            tmp.path().display().to_string()
        ))
        .unwrap();
        let sink = c.sink().unwrap();
        assert_eq!(sink.part_size(), default_local_part_size());
        assert_eq!(sink.budget().max_open_batches, 16);
        assert_eq!(sink.budget().max_open_bytes, default_max_open_bytes());
        let text = toml::to_string(&c).unwrap();
        assert!(!text.contains("part_size"), "{text}");
        assert_eq!(local(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn s3_parts_below_5_mib_are_refused() {
        let s: S3SinkConfig =
            toml::from_str("bucket = \"b12\"\nbatch = { part_size = \"1MiB\" }").unwrap();
        let e = s.batch.s3_part_size().unwrap_err().to_string();
        assert!(
            e.contains("`batch.part_size`") && e.contains("at least 5 MiB"),
            "{e}"
        );
        assert_eq!(
            BatchConfig::default().s3_part_size().unwrap(),
            default_s3_part_size()
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let c = local(
            "dir = \"d\"\npath = \"${a:-x}/\"\nformat = \"text\"\ncompression = \"none\"\nbatch = { max_bytes = \"1KB\", max_records = 3, max_age = \"250ms\" }",
        )
        .unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(local(&text).unwrap(), c, "{text}");
        let s: S3SinkConfig =
            toml::from_str("bucket = \"b\"\nendpoint = \"http://127.0.0.1:1\"\nallow_http = true")
                .unwrap();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<S3SinkConfig>(&text).unwrap(), s, "{text}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = serde_json::from_str::<ObjectSinkConfig>(r#"{"path": "x/", "bucket": "b"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `bucket`"), "{e}");
        let e = local("dir = \"d\"\nbukket = \"x\"").unwrap_err();
        assert!(e.contains("unknown field `bukket`"), "{e}");
        let e = toml::from_str::<S3SinkConfig>("bucket = \"b\"\ndir = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `dir`"), "{e}");
        let e = local("dir = \"d\"\nbatch = { max_size = 1 }").unwrap_err();
        assert!(e.contains("unknown field `max_size`"), "{e}");
        let e = local("dir = \"d\"\nbatch = { max_open = 1 }").unwrap_err();
        assert!(e.contains("unknown field `max_open`"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        let e = serde_json::from_str::<ObjectSinkConfig>(r#"{"path": "x/", "format": "csv"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown variant `csv`"), "{e}");
        let e = local("dir = \"d\"\npath = \"${a}/\"").unwrap_err();
        assert!(e.contains("`${a}` without a default"), "{e}");
        for (batch, needle) in [
            ("max_records = 0", "expected an integer >= 1"),
            ("max_bytes = 0", "above zero"),
            ("max_age = \"0s\"", "above zero"),
            ("part_size = 0", "above zero"),
            ("max_open_bytes = \"0MiB\"", "above zero"),
            ("max_open_batches = 0", "expected an integer >= 1"),
        ] {
            let e = local(&format!("dir = \"d\"\nbatch = {{ {batch} }}")).unwrap_err();
            assert!(e.contains(needle), "{batch}: {e}");
        }
        let e =
            toml::from_str::<S3SinkConfig>("bucket = \"b\"\ncredentials = \"file\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `file`"), "{e}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_options_refuse_unknown_keys() {
        let e = toml::from_str::<super::super::S3Options>("bucket = \"b\"\nbukket = \"c\"")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `bukket`"), "{e}");
    }

    #[test]
    fn check_creates_nothing_and_refuses_a_file_as_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        let c = local(&format!("dir = {:?}", dir.display().to_string())).unwrap();
        c.check().unwrap();
        assert!(!dir.exists());
        std::fs::write(&dir, "x").unwrap();
        assert!(sluice::chain(&c.check().unwrap_err()).contains("not a directory"));
    }
}
