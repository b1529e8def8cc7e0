//! The typed config of one job. Sources and sinks are the connectors' own config structs
//! (`sluice_transforms::io::<name>::*Config`): this crate keeps no copy of their keys.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_transforms::config_doc::{ty, Documented, Key};

pub use sluice_transforms::decode::ScrubPayloadConfig;
pub use sluice_transforms::io::bigquery::BigQuerySinkConfig;
pub use sluice_transforms::io::file::FileSourceConfig;
pub use sluice_transforms::io::format::{InputFormat, OutputFormat};
pub use sluice_transforms::io::kafka::{KafkaFormat, KafkaSinkConfig, KafkaSourceConfig};
pub use sluice_transforms::io::object::{
    BatchConfig, Compression, Credentials, LocalSinkConfig, S3SinkConfig,
};
pub use sluice_transforms::io::pubsub::{PubsubSinkConfig, PubsubSourceConfig};
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
    /// Which named job runs: `decoder`, `sink` or `republisher`.
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
    /// Where records go (the republisher: records that match no route).
    pub sink: Snk,
    /// The republisher's routes (required by it, refused by the other jobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Where every dead letter goes, in dead-letter message form.
    pub dead_letter: Dl,
    /// Engine tuning: epochs and backpressure.
    #[serde(default)]
    pub pipeline: PipelineTuning,
    /// Decoder only: drop duplicate documents (`[dedup]`; off unless the section is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupConfig>,
    /// Decoder only: count outcomes per namespace/doctype/version (`[counts]`; off unless
    /// the section is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<CountsConfig>,
    /// Where the job keeps its state between runs (the file source's checkpoints, unless
    /// `source.state_dir` says otherwise); a relative path is relative to the config file's
    /// folder. Default: `.sluice-state/<config file name without .toml>` beside the config
    /// file (`crate::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// The `[dedup]` section: keep the first document per key within a window; later copies are
/// `Duplicate` dead letters (or only counted). Runs after decoding, so only documents that
/// decode are remembered.
///
/// ```toml
/// [dedup]
/// key = "uri"                  # or "document_id", any attribute
/// window = "24h"
/// time = "submission_timestamp" # or "processing"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Whether the step runs (the section's presence turns it on; `false` keeps the
    /// settings but runs without it).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The attribute that identifies copies: the whole `uri` by default (dedup on
    /// `document_id` alone merged distinct pings that reused an id, gcp-ingestion #455).
    #[serde(default = "default_dedup_key")]
    pub key: String,
    /// A JSON pointer into the payload (`"/client_id"`) to use instead of `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_field: Option<String>,
    /// How far apart two copies may be for the later one to be a duplicate: `"24h"`.
    #[serde(default = "default_dedup_window", with = "units::duration")]
    pub window: Duration,
    /// How late (behind the newest time seen) a copy may arrive and still be found; the
    /// state holds `window + lateness` of keys: `"1h"`.
    #[serde(default = "default_dedup_lateness", with = "units::duration")]
    pub lateness: Duration,
    /// Which clock the window runs on.
    #[serde(default)]
    pub time: DedupTimeConfig,
    /// What happens to a duplicate.
    #[serde(default)]
    pub on_duplicate: OnDuplicateConfig,
    /// Where duplicates are written instead of the dead-letter sink (`[dedup.sink]`, any sink
    /// type), in the dead-letter message form (`error_type` `Duplicate`); none: with the other
    /// dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkConfig>,
}

/// The clock of `[dedup]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupTimeConfig {
    /// The edge's `submission_timestamp` (a replay deduplicates as the live run did).
    #[default]
    SubmissionTimestamp,
    /// The wall clock when the document reaches the step.
    Processing,
}

/// What `[dedup]` does with a duplicate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicateConfig {
    /// A dead letter with `error_type` `Duplicate`.
    #[default]
    DeadLetter,
    /// Dropped, counted under `sluice_duplicates_total`.
    Drop,
}

/// The `[counts]` section: counts per namespace, doctype, version and outcome (`decoded` or
/// the dead letter's `error_type`), per minute and in total, on the metrics endpoint and the
/// status page.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CountsConfig {
    /// Whether outcomes are counted (the section's presence turns it on).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Where the counts are written as periodic snapshot rows (`[counts.sink]`, any sink
    /// type): one row per namespace, doctype, version, outcome and minute whose count changed,
    /// a JSON payload (`format = "decoded"` writes it as is); none: only the metrics endpoint
    /// and the status page show them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkConfig>,
    /// How often rows are written: `"60s"` (a last set is written when the input ends).
    #[serde(default = "default_counts_every", with = "units::duration")]
    pub every: Duration,
}

/// Counts rows once a minute.
pub fn default_counts_every() -> Duration {
    Duration::from_secs(60)
}

/// A section that is given is on unless it says otherwise.
pub fn default_enabled() -> bool {
    true
}

/// Deduplicate by the whole `uri`.
pub fn default_dedup_key() -> String {
    "uri".to_string()
}

/// 24 hours, gcp-ingestion's retention of seen document ids.
pub fn default_dedup_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// One hour of lateness.
pub fn default_dedup_lateness() -> Duration {
    Duration::from_secs(3600)
}

/// The named jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// source -> decode (parse uri, decompress, parse and validate payload) -> sink.
    Decoder,
    /// source -> optional decompression -> sink (the Hindsight loader).
    Sink,
    /// decoded messages -> every route whose filter they match (a copy each); `[sink]` takes
    /// those that match none.
    Republisher,
}

impl JobKind {
    /// The job's name, reported in dead letters.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Decoder => "decoder",
            JobKind::Sink => "sink",
            JobKind::Republisher => "republisher",
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
            $( $(#[doc = $doc:literal])* $kind:literal => $arm:ident($config:ty), )+
        }
        planned = [$($planned:literal),* $(,)?];
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(tag = "type")]
        pub enum $name {
            $( $(#[doc = $doc])* #[serde(rename = $kind)] $arm($config), )+
        }

        impl $name {
            /// Every `type` this build supports.
            pub fn kinds() -> &'static [&'static str] {
                &[$($kind),+]
            }

            /// The keys of the section of `kind` (its connector's config struct), for the
            /// reference.
            pub fn keys_of(kind: &str) -> Option<&'static [Key]> {
                match kind {
                    $( $kind => Some(<$config as Documented>::KEYS), )+
                    _ => None,
                }
            }

            /// What `kind` is: its arm's doc comment.
            pub fn describe(kind: &str) -> &'static str {
                match kind {
                    $( $kind => concat!($($doc),*).trim_start(), )+
                    _ => "",
                }
            }

            /// The problems of every kind's key list, checked against its struct (see
            /// `check_documented`).
            pub fn check_documented() -> Vec<String> {
                [$( sluice_transforms::config_doc::check_documented::<$config>(), )+]
                    .into_iter()
                    .filter_map(Result::err)
                    .collect()
            }
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
    /// every field, named `default_*` functions, and a `Documented` impl listing its keys for
    /// the reference: the arm does not compile without it, and `reference`'s tests fail when
    /// a field is missing from it; then regenerate `docs/config.md` with `sluice config
    /// reference`), one arm here or in [`SinkConfig`] (`validate`
    /// checks through it, and the compiler then points at the one match in `jobs` that builds
    /// the runtime from it), and tests: the config's negative tests in its folder, an example
    /// under `examples/configs/` (which `pipelines/tests/config.rs` parses, validates and
    /// round-trips).
    pub enum SourceConfig {
        /// Files matching a glob pattern, read once (a bounded input).
        "file" => File(FileSourceConfig),
        /// Standard input, read until it closes.
        "stdin" => Stdin(StdinSourceConfig),
        /// Kafka topics read by a consumer group (unbounded unless `stop_at_end`).
        "kafka" => Kafka(KafkaSourceConfig),
        /// A Pub/Sub subscription, read by streaming pull until the job is stopped.
        "pubsub" => Pubsub(PubsubSourceConfig),
    }
    planned = ["memory"];
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
        /// Rows of BigQuery tables (`tabledata.insertAll` or the Storage Write API), refused rows
        /// as dead letters.
        "bigquery" => BigQuery(BigQuerySinkConfig),
        /// Records produced to a Kafka topic (a template), one message per record.
        "kafka" => Kafka(KafkaSinkConfig),
        /// Messages published to a Pub/Sub topic (a template).
        "pubsub" => Pubsub(PubsubSinkConfig),
    }
    planned = ["memory"];
}

/// One `[[routes]]` entry of the republisher: a filter on attributes (every condition set
/// must hold) and a sink. A message may match several routes.
///
/// ```toml
/// [[routes]]
/// name = "sampled"
/// sample_below = 10           # sample_id < 10: a 10% sample
/// sink = { type = "pubsub", topic = "projects/p/topics/sampled" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name: its write step is `route/<name>` (the `error_type` of its refusals).
    pub name: String,
    /// `document_namespace` is one of these (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `document_type` is one of these; `namespace/doctype` also names the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doctypes: Vec<String>,
    /// `normalized_channel` (else `app_update_channel`) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// `sample_id` is below this (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_below: Option<u32>,
    /// Only messages with a non-empty `x_debug_id`.
    #[serde(default)]
    pub debug: bool,
    /// Where the route's messages go (any sink; topic templates on Pub/Sub).
    pub sink: SinkConfig,
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
    /// Larger decompressed payloads are dead letters (`LimitPayloadSize`): bytes or `"8 MiB"`.
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
    /// A GeoIP2/GeoLite2 City database (`.mmdb`): fills `geo_country`, `geo_subdivision1/2`,
    /// `geo_city`, `geo_db_version` (and so `normalized_country_code`) from the client IP.
    /// Optional: without it the job says at start which fields it cannot fill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_city_database: Option<PathBuf>,
    /// Keeps `geo_city` only for the cities listed (one per line, starting with the GeoNames
    /// id, as GeoNames' `cities15000.txt`): gcp-ingestion's population threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_city_filter: Option<PathBuf>,
    /// A GeoIP2 ISP database (`.mmdb`): fills `isp_name`, `isp_organization`,
    /// `isp_db_version`. Optional, as `geo_city_database`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_isp_database: Option<PathBuf>,
    /// Payload rules (`[decoder.scrub_payload]`), applied right after the payload is parsed,
    /// before validation (gcp-ingestion's MessageScrubber): fields removed (`drop_fields`) and
    /// documents dropped (`drop_documents`, each as a `ScrubPayload` dead letter or counted
    /// under `records_dropped` in the summary).
    #[serde(default, skip_serializing_if = "ScrubPayloadConfig::is_empty")]
    pub scrub_payload: ScrubPayloadConfig,
}

/// 8 MiB, the edge's limit (gcp-ingestion's `LimitPayloadSize`).
pub fn default_max_payload_bytes() -> usize {
    sluice_transforms::decode::DEFAULT_MAX_PAYLOAD_BYTES
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
    /// Epochs read and not yet durable in every sink (not yet acknowledged), per worker: what
    /// a crash may re-read. When reached, sources wait and every sink closes its open objects
    /// early (default 4096; see `sluice::InFlightBounds`).
    #[serde(
        default,
        with = "units::option_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_unacknowledged_epochs: Option<usize>,
}

// The config reference (`sluice config reference`): each section's keys, beside its struct.

impl<Src, Snk, Dl> Documented for JobConfig<Src, Snk, Dl> {
    const KEYS: &'static [Key] = &[
        Key::required(
            "job",
            "\"decoder\" | \"sink\" | \"republisher\"",
            "\"sink\"",
            "which named job runs",
        ),
        Key::default("workers", ty::COUNT, "1", "worker threads in this process"),
        Key::default(
            "decompress",
            ty::BOOL,
            "false",
            "sink job only: gunzip gzipped payloads before writing them",
        ),
        Key::optional(
            "data_dir",
            ty::PATH,
            "where a file job keeps its acknowledged positions between runs (default `.sluice-state/<config name>` beside the config file; `SLUICE_DATA_DIR` too); a source's own `state_dir` wins",
        ),
        Key::required(
            "source",
            ty::TABLE,
            "{ type = \"stdin\" }",
            "where records come from (see `[source]`)",
        ),
        Key::optional(
            "decoder",
            ty::TABLE,
            "the decoder's settings (required by the decoder job, refused by the others)",
        )
        .with_table(<DecoderConfig as Documented>::keys),
        Key::required(
            "sink",
            ty::TABLE,
            "{ type = \"stdout\" }",
            "where records go (see `[sink]`); the republisher's records that match no route",
        ),
        Key::optional(
            "routes",
            ty::TABLES,
            "the republisher's routes (required by it, refused by the other jobs)",
        )
        .with_table(<RouteConfig as Documented>::keys),
        Key::required(
            "dead_letter",
            ty::TABLE,
            "{ type = \"stderr\" }",
            "where every dead letter goes, in the replayable `json` envelope (see `[dead_letter]`)",
        ),
        Key::default(
            "pipeline",
            ty::TABLE,
            "{}",
            "engine tuning: epochs and backpressure",
        )
        .with_table(<PipelineTuning as Documented>::keys),
        Key::optional(
            "dedup",
            ty::TABLE,
            "decoder only: drop duplicate documents (off unless the section is given)",
        )
        .with_table(<DedupConfig as Documented>::keys),
        Key::optional(
            "counts",
            ty::TABLE,
            "decoder only: count outcomes per namespace/doctype/version (off unless given)",
        )
        .with_table(<CountsConfig as Documented>::keys),
    ];
}

impl Documented for DecoderConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "schemas",
            ty::PATH,
            "\"schemas/json\"",
            "the schema registry: a directory or a `.tar.gz` (it must exist)",
        ),
        Key::default(
            "strict_schemas",
            ty::BOOL,
            "false",
            "schema files the registry cannot index are one error listing them all (else skipped with a warning)",
        ),
        Key::default(
            "max_payload_bytes",
            ty::SIZE,
            "\"8MiB\"",
            "larger decompressed payloads are `LimitPayloadSize` dead letters",
        ),
        Key::default(
            "keep_client_ip",
            ty::BOOL,
            "false",
            "keep `remote_addr` and `x_forwarded_for` in decoded outputs",
        ),
        Key::default(
            "scrub_attributes",
            ty::STRINGS,
            "[]",
            "more attributes removed from decoded outputs and dead letters",
        ),
        Key::optional(
            "geo_city_database",
            ty::PATH,
            "a GeoIP2/GeoLite2 City `.mmdb`: fills `geo_*` from the client IP (without it the job says which fields it cannot fill)",
        ),
        Key::optional(
            "geo_city_filter",
            ty::PATH,
            "keeps `geo_city` only for the cities listed (GeoNames `cities15000.txt` form)",
        ),
        Key::optional(
            "geo_isp_database",
            ty::PATH,
            "a GeoIP2 ISP `.mmdb`: fills `isp_*`",
        ),
        Key::default(
            "scrub_payload",
            ty::TABLE,
            "{}",
            "payload rules applied right after parsing, before validation (gcp-ingestion's MessageScrubber)",
        )
        .with_table(<ScrubPayloadConfig as Documented>::keys),
    ];
}

impl Documented for PipelineTuning {
    const KEYS: &'static [Key] = &[
        Key::default("epoch", ty::TABLE, "{}", "how sources cut epochs")
            .with_table(<EpochTuning as Documented>::keys),
        Key::default(
            "in_flight",
            ty::TABLE,
            "{}",
            "how far sources read ahead of durable writes",
        )
        .with_table(<InFlightTuning as Documented>::keys),
        Key::default(
            "stack_traces",
            ty::BOOL,
            "true",
            "dead letters carry the error's source chain",
        ),
    ];
}

impl Documented for EpochTuning {
    const KEYS: &'static [Key] = &[
        Key::optional(
            "max_records",
            ty::COUNT,
            "records per epoch, per worker (engine default 10000)",
        ),
        Key::optional(
            "max_bytes",
            ty::SIZE,
            "bytes per epoch, per worker (engine default 16 MiB)",
        ),
        Key::optional(
            "max_age",
            ty::DURATION,
            "age of an epoch (engine default 200ms)",
        ),
    ];
}

impl Documented for InFlightTuning {
    const KEYS: &'static [Key] = &[
        Key::optional(
            "max_epochs",
            ty::COUNT,
            "epochs read and not yet taken by every sink, per worker (engine default 16)",
        ),
        Key::optional(
            "max_bytes",
            ty::SIZE,
            "bytes read and not yet taken by every sink, and bytes sinks hold, per worker (engine default 32 MiB)",
        ),
        Key::optional(
            "max_unacknowledged_epochs",
            ty::COUNT,
            "epochs not yet durable, per worker: what a crash may re-read; when reached sinks close open objects early (engine default 4096)",
        ),
    ];
}

impl Documented for DedupConfig {
    const KEYS: &'static [Key] = &[
        Key::default(
            "enabled",
            ty::BOOL,
            "true",
            "whether the step runs (the section's presence turns it on)",
        ),
        Key::default(
            "key",
            ty::STRING,
            "\"uri\"",
            "the attribute that identifies copies (e.g. `document_id`)",
        ),
        Key::optional(
            "payload_field",
            ty::STRING,
            "a JSON pointer into the decoded payload to use instead of `key`",
        ),
        Key::default(
            "window",
            ty::DURATION,
            "\"24h\"",
            "how far apart two copies may be for the later one to be a duplicate",
        ),
        Key::default(
            "lateness",
            ty::DURATION,
            "\"1h\"",
            "how late a copy may arrive and still be found (state holds `window + lateness`)",
        ),
        Key::default(
            "time",
            "\"submission_timestamp\" | \"processing\"",
            "\"submission_timestamp\"",
            "which clock the window runs on",
        ),
        Key::default(
            "on_duplicate",
            "\"dead_letter\" | \"drop\"",
            "\"dead_letter\"",
            "a `Duplicate` dead letter, or dropped and counted (`sluice_duplicates_total`)",
        ),
        Key::optional(
            "sink",
            ty::TABLE,
            "a sink of any type (see `[sink]`) that takes the duplicates instead of the dead-letter sink, in the dead-letter envelope",
        ),
    ];
}

impl Documented for CountsConfig {
    const KEYS: &'static [Key] = &[
        Key::default(
            "enabled",
            ty::BOOL,
            "true",
            "whether outcomes are counted (the section's presence turns it on)",
        ),
        Key::optional(
            "sink",
            ty::TABLE,
            "a sink of any type (see `[sink]`) that receives periodic snapshot rows: namespace, doctype, version, outcome, minute, count, process",
        ),
        Key::default(
            "every",
            ty::DURATION,
            "\"60s\"",
            "how often snapshot rows are written (a last set when the input ends)",
        ),
    ];
}

impl Documented for RouteConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "name",
            ty::STRING,
            "\"sampled\"",
            "the route's name: its write step is `route/<name>`",
        ),
        Key::default(
            "namespaces",
            ty::STRINGS,
            "[]",
            "`document_namespace` is one of these (empty: any)",
        ),
        Key::default(
            "doctypes",
            ty::STRINGS,
            "[]",
            "`document_type` is one of these; `namespace/doctype` names the namespace too",
        ),
        Key::default(
            "channels",
            ty::STRINGS,
            "[]",
            "`normalized_channel` (else `app_update_channel`) is one of these",
        ),
        Key::optional(
            "sample_below",
            ty::COUNT,
            "`sample_id` is below this (1 to 100)",
        ),
        Key::default(
            "debug",
            ty::BOOL,
            "false",
            "only messages with a non-empty `x_debug_id`",
        ),
        Key::required(
            "sink",
            ty::TABLE,
            "{ type = \"stdout\" }",
            "where the route's messages go: any sink (see `[sink]`)",
        ),
    ];
}

impl DeadLetterConfig {
    /// The reference of [`DeadLetterConfig::OWN_KEYS`] (a test keeps the two equal).
    pub const OWN_KEY_DOCS: &'static [Key] = &[Key::default(
        "keep_client_ip",
        ty::BOOL,
        "false",
        "keep `remote_addr` and `x_forwarded_for` in dead letters (they replay without them)",
    )];
}
