//! The typed config of one job, deserialised after [`super::validate`] has checked the tree.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use sluice_transforms::io::format::{InputFormat, OutputFormat};
pub use sluice_transforms::io::object::Compression;

use super::units::{ByteSize, HumanDuration};

/// One job, as described by one TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Which named job runs: `decoder` or `sink`.
    pub job: JobKind,
    /// Worker threads in this process.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Where records come from.
    pub source: SourceConfig,
    /// The decoder's settings (required by the `decoder` job, refused by the `sink` job).
    #[serde(default)]
    pub decoder: Option<DecoderConfig>,
    /// Where records go.
    pub sink: SinkConfig,
    /// Where every dead letter goes, in dead-letter message form.
    pub dead_letter: SinkConfig,
    /// Sink job only: gunzip gzipped payloads before writing them (`DecompressPayload`).
    #[serde(default)]
    pub decompress: bool,
    /// Engine tuning: epochs and backpressure.
    #[serde(default)]
    pub pipeline: PipelineTuning,
}

/// The named jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// source -> decode (parse uri, decompress, parse and validate payload) -> sink.
    Decoder,
    /// source -> optional decompression -> sink (the Hindsight loader).
    Sink,
}

impl JobKind {
    /// The job's name, reported in dead letters.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Decoder => "decoder",
            JobKind::Sink => "sink",
        }
    }
}

/// The workers of a process when the config does not say.
pub fn default_workers() -> usize {
    1
}

/// A source, chosen by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// Files matching a glob pattern, read once (a bounded input).
    File {
        /// A path or a glob pattern (`data/*.ndjson`).
        path: String,
        /// How the bytes are framed into messages.
        #[serde(default = "default_input_format")]
        format: InputFormat,
        /// A directory (created if missing) where the source persists what every sink made
        /// durable, per input file, so that a restart resumes there instead of reading the
        /// input again. Without it a restart reads every file from the start.
        #[serde(default)]
        state_dir: Option<PathBuf>,
    },
    /// Standard input, read until it closes.
    Stdin {
        /// How the bytes are framed into messages.
        #[serde(default = "default_input_format")]
        format: InputFormat,
    },
}

/// Sources read the gcp-ingestion ndjson envelope unless told otherwise.
pub fn default_input_format() -> InputFormat {
    InputFormat::Json
}

/// The decoder's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// The schema registry: a directory or a `.tar.gz`.
    pub schemas: PathBuf,
    /// Larger decompressed payloads are dead letters (`LimitPayloadSize`).
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: ByteSize,
}

/// 8 MB, the edge's limit.
pub fn default_max_payload_bytes() -> ByteSize {
    ByteSize(8_000_000)
}

/// A sink, chosen by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// Whole objects (batches) written under a local directory.
    File {
        /// The directory objects are written under.
        dir: PathBuf,
        /// The object key prefix inside `dir`, a template of `${attr}` / `${attr:-default}`.
        #[serde(default)]
        path: String,
        /// How each record is written.
        #[serde(default = "default_output_format")]
        format: OutputFormat,
        /// Object compression.
        #[serde(default = "default_compression")]
        compression: Compression,
        /// When a batch becomes an object.
        #[serde(default)]
        batch: BatchConfig,
    },
    /// Whole objects (batches) written to an S3 (or S3-compatible) bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key prefix, a template of `${attr}` / `${attr:-default}`.
        #[serde(default)]
        path: String,
        /// A custom endpoint (MinIO, localstack); AWS when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// The region; from `AWS_REGION` / `AWS_DEFAULT_REGION` when absent.
        #[serde(default)]
        region: Option<String>,
        /// Where credentials come from: `env` (`AWS_ACCESS_KEY_ID`, ...), the default.
        #[serde(default = "default_credentials")]
        credentials: Credentials,
        /// Allow a plain-http endpoint (tests against a local server).
        #[serde(default)]
        allow_http: bool,
        /// How each record is written.
        #[serde(default = "default_output_format")]
        format: OutputFormat,
        /// Object compression.
        #[serde(default = "default_compression")]
        compression: Compression,
        /// When a batch becomes an object.
        #[serde(default)]
        batch: BatchConfig,
    },
    /// One record per line on standard output.
    Stdout {
        /// How each record is written.
        #[serde(default = "default_output_format")]
        format: OutputFormat,
    },
    /// One record per line on standard error.
    Stderr {
        /// How each record is written.
        #[serde(default = "default_output_format")]
        format: OutputFormat,
    },
}

impl SinkConfig {
    /// The kind's name (`file`, `s3`, `stdout`, `stderr`).
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File { .. } => "file",
            SinkConfig::S3 { .. } => "s3",
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::Stderr { .. } => "stderr",
        }
    }
}

/// Records are written in the replayable envelope unless told otherwise.
pub fn default_output_format() -> OutputFormat {
    OutputFormat::Json
}

/// Objects are gzipped unless told otherwise.
pub fn default_compression() -> Compression {
    Compression::Gzip
}

/// Where S3 credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and the usual chain.
    Env,
}

/// Credentials come from the environment unless told otherwise.
pub fn default_credentials() -> Credentials {
    Credentials::Env
}

/// When a batch of records becomes an object: the first bound reached closes it.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Uncompressed bytes of a batch.
    #[serde(default = "default_batch_max_bytes")]
    pub max_bytes: ByteSize,
    /// Records of a batch.
    #[serde(default = "default_batch_max_records")]
    pub max_records: u64,
    /// Age of a batch.
    #[serde(default = "default_batch_max_age")]
    pub max_age: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_bytes: default_batch_max_bytes(),
            max_records: default_batch_max_records(),
            max_age: default_batch_max_age(),
        }
    }
}

/// 100 MB of records, as the Hindsight loader wrote.
pub fn default_batch_max_bytes() -> ByteSize {
    ByteSize(100_000_000)
}

/// A million records.
pub fn default_batch_max_records() -> u64 {
    1_000_000
}

/// One minute.
pub fn default_batch_max_age() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

/// Engine tuning (see `sluice::EpochBounds`, `sluice::InFlightBounds`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTuning {
    /// How sources cut epochs.
    #[serde(default)]
    pub epoch: EpochTuning,
    /// How far sources read ahead of durable writes.
    #[serde(default)]
    pub in_flight: InFlightTuning,
    /// Whether dead letters carry the error's source chain.
    #[serde(default = "default_stack_traces")]
    pub stack_traces: bool,
}

impl Default for PipelineTuning {
    fn default() -> Self {
        PipelineTuning {
            epoch: EpochTuning::default(),
            in_flight: InFlightTuning::default(),
            stack_traces: default_stack_traces(),
        }
    }
}

/// Dead letters carry stack traces unless told otherwise.
pub fn default_stack_traces() -> bool {
    true
}

/// Epoch bounds; absent keys keep the engine's defaults.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochTuning {
    /// Records per epoch, per worker.
    #[serde(default)]
    pub max_records: Option<u64>,
    /// Bytes per epoch, per worker.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// Age of an epoch.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
}

/// Backpressure bounds; absent keys keep the engine's defaults.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlightTuning {
    /// Epochs read but not yet durably written, per worker.
    #[serde(default)]
    pub max_epochs: Option<u64>,
    /// Bytes read but not yet durably written, per worker.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
}
