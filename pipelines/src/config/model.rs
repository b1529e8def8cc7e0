//! The typed config of one job. Sources and sinks are the connectors' own config structs
//! (`sluice_transforms::io::<name>::*Config`): this crate keeps no copy of their keys.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use sluice_transforms::io::file::FileSourceConfig;
pub use sluice_transforms::io::format::{InputFormat, OutputFormat};
pub use sluice_transforms::io::object::{
    BatchConfig, Compression, Credentials, LocalSinkConfig, S3SinkConfig,
};
pub use sluice_transforms::io::stdio::{StdinSourceConfig, StdioSinkConfig};
use sluice_transforms::io::units;

use super::validate::{check_connector, Connector};
use super::ConfigError;

/// One job, as described by one TOML file.
///
/// `Src` and `Snk` are only ever changed by validation, which reads the top level with
/// `serde::de::IgnoredAny` sections so that it can check each section on its own.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig<Src = SourceConfig, Snk = SinkConfig, Dl = DeadLetterConfig> {
    /// Which named job runs: `decoder` or `sink`.
    pub job: JobKind,
    /// Worker threads in this process (at least 1).
    #[serde(default = "default_workers", with = "units::count")]
    pub workers: usize,
    /// Sink job only: gunzip gzipped payloads before writing them (`DecompressPayload`).
    #[serde(default)]
    pub decompress: bool,
    /// Where records come from.
    pub source: Src,
    /// The decoder's settings (required by the `decoder` job, refused by the `sink` job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderConfig>,
    /// Where records go.
    pub sink: Snk,
    /// Where every dead letter goes, in dead-letter message form.
    pub dead_letter: Dl,
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

/// Declares a tagged connector enum (`type = "<kind>"` picks the arm) and its [`Connector`]
/// impl, from one line per arm, so that the arm is the only thing to add.
macro_rules! connectors {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$arm_meta:meta])* $kind:literal => $arm:ident($config:ty), )+
        }
        planned = [$($planned:literal),* $(,)?];
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(tag = "type")]
        pub enum $name {
            $( $(#[$arm_meta])* #[serde(rename = $kind)] $arm($config), )+
        }

        impl $name {
            /// The kind's name, as `type` spells it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $name::$arm(_) => $kind, )+
                }
            }
        }

        impl Connector for $name {
            const KINDS: &'static [&'static str] = &[$($kind),+];
            const PLANNED: &'static [&'static str] = &[$($planned),*];

            fn check(
                kind: &str,
                table: toml::Table,
                key: &str,
                errors: &mut Vec<ConfigError>,
            ) -> Option<Option<Self>> {
                match kind {
                    $( $kind => Some(check_connector::<$config>(table, key, errors).map($name::$arm)), )+
                    _ => None,
                }
            }
        }
    };
}

connectors! {
    /// A source, chosen by `type`; each arm holds its connector's own config struct.
    ///
    /// **Adding a connector** (source or sink) is: a folder `transforms/src/io/<name>/` with
    /// the runtime and a `config.rs` struct (`#[serde(deny_unknown_fields)]`, a doc comment on
    /// every field, named `default_*` functions), one arm here or in [`SinkConfig`] (`validate`
    /// checks through it, and the compiler then points at the one match in `jobs` that builds
    /// the runtime from it), and tests: the config's negative tests in its folder, an example
    /// under `examples/configs/` (which `pipelines/tests/config.rs` parses, validates and
    /// round-trips).
    pub enum SourceConfig {
        /// Files matching a glob pattern, read once (a bounded input).
        "file" => File(FileSourceConfig),
        /// Standard input, read until it closes.
        "stdin" => Stdin(StdinSourceConfig),
    }
    planned = ["kafka", "pubsub", "memory"];
}

connectors! {
    /// A sink, chosen by `type`; each arm holds its connector's own config struct. Adding
    /// one: see [`SourceConfig`].
    pub enum SinkConfig {
        /// Whole objects (batches) written under a local directory.
        "file" => File(LocalSinkConfig),
        /// Whole objects (batches) written to an S3 (or S3-compatible) bucket.
        "s3" => S3(S3SinkConfig),
        /// One record per line on standard output.
        "stdout" => Stdout(StdioSinkConfig),
        /// One record per line on standard error.
        "stderr" => Stderr(StdioSinkConfig),
    }
    planned = ["kafka", "pubsub", "bigquery", "memory"];
}

/// The `[dead_letter]` section: a sink (its `type` and that sink's keys) and what dead
/// letters keep.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeadLetterConfig {
    /// Keep the client IP attributes (`remote_addr`, `x_forwarded_for`) in dead letters;
    /// by default they are removed, so a dead letter is replayable but holds no client IP.
    #[serde(default)]
    pub keep_client_ip: bool,
    /// Where dead letters are written. Serde's `deny_unknown_fields` cannot be combined with
    /// `flatten`: the sink's own struct refuses unknown keys, and validation checks the
    /// section's keys (see `validate`).
    #[serde(flatten)]
    pub sink: SinkConfig,
}

impl DeadLetterConfig {
    /// The keys of the section besides the sink's (checked on their own by validation).
    pub const OWN_KEYS: &'static [&'static str] = &["keep_client_ip"];

    /// Dead letters written to `sink`, without client IPs.
    pub fn new(sink: SinkConfig) -> Self {
        DeadLetterConfig {
            keep_client_ip: false,
            sink,
        }
    }
}

/// The decoder's settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// The schema registry: a directory or a `.tar.gz` (it must exist).
    pub schemas: PathBuf,
    /// Make schema files the registry cannot index (misplaced or misnamed, templates, not
    /// JSON, of an unknown draft) an error listing them all; by default they are skipped with
    /// one warning listing them all.
    #[serde(default)]
    pub strict_schemas: bool,
    /// Larger decompressed payloads are dead letters (`LimitPayloadSize`): bytes or `"8MB"`.
    #[serde(default = "default_max_payload_bytes", with = "units::size")]
    pub max_payload_bytes: usize,
    /// Keep the client IP attributes (`remote_addr`, `x_forwarded_for`) in decoded outputs;
    /// by default they are removed before anything is written.
    #[serde(default)]
    pub keep_client_ip: bool,
    /// More attributes removed from decoded outputs and from dead letters (say
    /// `["x_debug_id"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrub_attributes: Vec<String>,
}

/// 8 MB, the edge's limit.
pub fn default_max_payload_bytes() -> usize {
    8_000_000
}

/// Engine tuning (see `sluice::EpochBounds`, `sluice::InFlightBounds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
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

/// Epoch bounds; absent keys keep the engine's defaults, set ones are above zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EpochTuning {
    /// Records per epoch, per worker.
    #[serde(
        default,
        with = "units::option_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_records: Option<usize>,
    /// Bytes per epoch, per worker: bytes or `"1MB"`.
    #[serde(
        default,
        with = "units::option_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bytes: Option<usize>,
    /// Age of an epoch: seconds or `"250ms"`.
    #[serde(
        default,
        with = "units::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
}

/// Backpressure bounds; absent keys keep the engine's defaults, set ones are above zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InFlightTuning {
    /// Epochs read and not yet taken by every sink, per worker (see `sluice::InFlightBounds`:
    /// records waiting in a streamed object are not counted).
    #[serde(
        default,
        with = "units::option_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_epochs: Option<usize>,
    /// Bytes read and not yet taken by every sink, and bytes sinks hold, per worker: bytes or
    /// `"32MB"` (default 32 MiB).
    #[serde(
        default,
        with = "units::option_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bytes: Option<usize>,
}
