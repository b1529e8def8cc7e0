//! The configs of the Kafka source and sink, as a job's config file spells them:
//! `[source] type = "kafka"` ([`KafkaSourceConfig`]) and `[sink] type = "kafka"`
//! ([`KafkaSinkConfig`], also usable as `[dead_letter]`).
//!
//! Any librdkafka setting a deployment needs (TLS, SASL, fetch sizes, `linger.ms`, ...) goes in
//! the `options` table as strings and is handed to librdkafka as is; the settings Sluice owns
//! for its delivery guarantee (offset commits, the group id, the brokers) are refused there.

use crate::config_doc::{ty, Documented, Key};
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::io::object::PathTemplate;
use crate::io::units;

use super::{KafkaSink, KafkaSource};

/// How a Kafka record's value (and headers) become a message, and back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    /// value = payload, headers = attributes (UTF-8 header values).
    #[default]
    Raw,
    /// value = one gcp-ingestion envelope `{"attributeMap":...,"payload":"<base64>"}`.
    Json,
    /// value = one Heka protobuf message, as Mozilla's nginx edge wrote it (a Heka stream
    /// frame is accepted too).
    Heka,
}

impl KafkaFormat {
    /// The lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            KafkaFormat::Raw => "raw",
            KafkaFormat::Json => "json",
            KafkaFormat::Heka => "heka",
        }
    }
}

/// librdkafka settings Sluice sets itself: the source commits only durable offsets, so
/// neither auto-commit nor the offset store may be turned on behind its back.
pub const RESERVED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "session.timeout.ms",
    "auto.offset.reset",
    "message.max.bytes",
    "message.timeout.ms",
];

fn options<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    if let Some(k) = map.keys().find(|k| RESERVED_OPTIONS.contains(&k.as_str())) {
        return Err(serde::de::Error::custom(format!(
            "option `{k}` is set by sluice, from the section's own keys (brokers, group_id, ...) or for its delivery guarantee"
        )));
    }
    Ok(map)
}

fn non_empty_topics<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let topics = Vec::<String>::deserialize(d)?;
    if topics.is_empty() {
        return Err(serde::de::Error::custom("expected at least one topic"));
    }
    if let Some(t) = topics.iter().find(|t| super::topic_name_error(t).is_some()) {
        let why = super::topic_name_error(t).unwrap_or_default();
        return Err(serde::de::Error::custom(format!(
            "`{t}` is not a topic name: {why}"
        )));
    }
    Ok(topics)
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(serde::de::Error::custom("expected a non-empty string"));
    }
    Ok(s)
}

fn option_non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_empty(d).map(Some)
}

/// Where a consumer group without a committed offset starts reading a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest record kept (nothing is skipped: the default).
    #[default]
    Earliest,
    /// Only records produced after the group joined.
    Latest,
}

impl OffsetReset {
    fn name(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Kafka topics read by a consumer group: `[source] type = "kafka"`.
///
/// Every worker of every process is one member of the group `group_id`, so the brokers spread
/// the partitions over all of them, and several deployments of a job share a topic. Offsets
/// are committed only for records every sink made durable.
///
/// ```
/// use sluice_transforms::io::kafka::{KafkaFormat, KafkaSourceConfig};
/// let c: KafkaSourceConfig = toml::from_str(r#"
///     brokers = "127.0.0.1:9092"
///     topics = ["telemetry-raw"]
///     group_id = "sluice-decoder"
///     format = "heka"
///     session_timeout = "6s"
///     options = { "security.protocol" = "plaintext" }
/// "#).unwrap();
/// assert_eq!(c.format, KafkaFormat::Heka);
/// assert_eq!(c.session_timeout.unwrap().as_secs(), 6);
/// // the source owns offset commits
/// assert!(toml::from_str::<KafkaSourceConfig>(r#"
///     brokers = "b:9092"
///     topics = ["t"]
///     group_id = "g"
///     options = { "enable.auto.commit" = "true" }
/// "#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[serde(deserialize_with = "non_empty")]
    pub brokers: String,
    /// The topics to read (at least one; names of `[a-zA-Z0-9._-]`, up to 249 characters).
    #[serde(deserialize_with = "non_empty_topics")]
    pub topics: Vec<String>,
    /// The consumer group: its committed offsets are where a restart resumes.
    #[serde(deserialize_with = "non_empty")]
    pub group_id: String,
    /// How a record becomes a message: `raw` (value + headers), `json` (envelope) or `heka`.
    #[serde(default)]
    pub format: KafkaFormat,
    /// Static group membership: each worker joins as `<group_instance_id>-<worker>`, so a
    /// restarted process takes its partitions back at once instead of after a rebalance.
    #[serde(
        default,
        deserialize_with = "option_non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_instance_id: Option<String>,
    /// How long the group waits for a silent member before giving its partitions to the
    /// others (librdkafka's `session.timeout.ms`, 45 s by default): a few seconds make a
    /// crashed process's partitions move quickly.
    #[serde(
        default,
        with = "units::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_timeout: Option<Duration>,
    /// Where a partition without a committed offset starts: `earliest` or `latest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Read up to the end offsets the partitions had when the job started, then end (a
    /// bounded input: backfills, replays, tests); by default the source never ends. A bounded
    /// read does not join the group: it shares the partitions out to the workers itself
    /// (partition i to worker i % workers), resumes at the group's committed offsets and
    /// commits there, so run one at a time per group.
    #[serde(default)]
    pub stop_at_end: bool,
    /// Records a worker buffers ahead of the pipeline; above this its partitions are paused
    /// (the consumer keeps polling, so it stays in the group).
    #[serde(default = "default_max_buffered_records", with = "units::count")]
    pub max_buffered_records: usize,
    /// Bytes a worker buffers ahead of the pipeline (bytes or `"16MB"`), as above; librdkafka's
    /// own prefetch queue (`queued.max.messages.kbytes`) gets the same bound unless `options`
    /// sets it. The decoder and sink jobs use at most half the in-flight byte bound
    /// (`[pipeline] in_flight.max_bytes`).
    #[serde(default = "default_max_buffered_bytes", with = "units::size")]
    pub max_buffered_bytes: usize,
    /// Offsets a worker may have made durable in every sink without the broker having
    /// confirmed their commit yet; above this it hands the pipeline no more records until
    /// commits catch up. With the in-flight bound this bounds what a crash re-reads: after a
    /// SIGKILL each worker's partitions are read again from at most
    /// `in_flight.max_unacknowledged_epochs x epoch.max_records + max_uncommitted_records` records before
    /// where it got (see the [module docs](super)).
    #[serde(default = "default_max_uncommitted_records", with = "units::count")]
    pub max_uncommitted_records: usize,
    /// More librdkafka consumer settings, as strings (TLS, SASL, fetch sizes).
    #[serde(
        default,
        deserialize_with = "options",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

const BROKERS: Key = Key::required(
    "brokers",
    ty::STRING,
    "\"127.0.0.1:9092\"",
    "bootstrap brokers, `host:port[,host:port...]`",
);
const KAFKA_OPTIONS: Key = Key::optional(
    "options",
    ty::STRING_TABLE,
    "more librdkafka settings as strings (TLS, SASL, ...); the ones Sluice owns are refused",
);

impl Documented for KafkaSourceConfig {
    const KEYS: &'static [Key] = &[
        BROKERS,
        Key::required(
            "topics",
            ty::STRINGS,
            "[\"telemetry-raw\"]",
            "the topics to read (at least one)",
        ),
        Key::required(
            "group_id",
            ty::STRING,
            "\"sluice-decoder\"",
            "the consumer group: its committed offsets are where a restart resumes",
        ),
        Key::default(
            "format",
            "\"raw\" | \"json\" | \"heka\"",
            "\"raw\"",
            "a record is value + headers, one envelope, or one Heka message",
        ),
        Key::optional(
            "group_instance_id",
            ty::STRING,
            "static membership: each worker joins as `<id>-<worker>`, so a restart takes its partitions back at once",
        ),
        Key::optional(
            "session_timeout",
            ty::DURATION,
            "how long the group waits for a silent member (librdkafka's 45 s when absent)",
        ),
        Key::default(
            "auto_offset_reset",
            "\"earliest\" | \"latest\"",
            "\"earliest\"",
            "where a partition without a committed offset starts",
        ),
        Key::default(
            "stop_at_end",
            ty::BOOL,
            "false",
            "read up to the end offsets at start, then end (a bounded input; shares partitions out itself)",
        ),
        Key::default(
            "max_buffered_records",
            ty::COUNT,
            "10000",
            "records a worker buffers ahead of the pipeline before pausing its partitions",
        ),
        Key::default(
            "max_buffered_bytes",
            ty::SIZE,
            "\"16MiB\"",
            "bytes a worker buffers ahead of the pipeline (at most half `pipeline.in_flight.max_bytes`)",
        ),
        Key::default(
            "max_uncommitted_records",
            ty::COUNT,
            "1000",
            "durable offsets a worker may hold whose commit the broker has not confirmed",
        ),
        KAFKA_OPTIONS,
    ];
}

impl Documented for KafkaSinkConfig {
    const KEYS: &'static [Key] = &[
        BROKERS,
        Key::required(
            "topic",
            ty::TEMPLATE,
            "\"decoded-${document_namespace:-unknown}\"",
            "the topic of each record (placeholders need defaults); an invalid rendered name is a dead letter",
        ),
        Key::default(
            "format",
            "\"raw\" | \"json\" | \"heka\"",
            "\"raw\"",
            "a message becomes value + headers, one envelope, or one Heka message",
        ),
        Key::default(
            "max_message_bytes",
            ty::SIZE,
            "1000000",
            "larger records are dead letters (`message.max.bytes`; keep it at most the broker's)",
        ),
        Key::default(
            "message_timeout",
            ty::DURATION,
            "\"60s\"",
            "how long librdkafka retries a record before reporting it failed",
        ),
        Key::default(
            "delivery_retries",
            ty::COUNT,
            "3",
            "rounds of re-sending failed records before the pipeline stops without acknowledging",
        ),
        Key::default(
            "retry_backoff",
            ty::DURATION,
            "\"1s\"",
            "the pause before the first re-send round (doubling)",
        ),
        KAFKA_OPTIONS,
    ];
}

/// 10,000 records per worker.
pub fn default_max_buffered_records() -> usize {
    10_000
}

/// 16 MiB per worker.
pub fn default_max_buffered_bytes() -> usize {
    16 * 1024 * 1024
}

/// 1,000 offsets per worker: commits are sent every 100 ms, so this holds a worker back only
/// above ~10,000 records/s or when the broker is slow to confirm.
pub fn default_max_uncommitted_records() -> usize {
    1_000
}

impl KafkaSourceConfig {
    /// A config reading `topics` as `group_id` from `brokers`, with the defaults.
    pub fn new(brokers: impl Into<String>, topics: &[&str], group_id: impl Into<String>) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group_id: group_id.into(),
            format: KafkaFormat::Raw,
            group_instance_id: None,
            session_timeout: None,
            auto_offset_reset: OffsetReset::Earliest,
            stop_at_end: false,
            max_buffered_records: default_max_buffered_records(),
            max_buffered_bytes: default_max_buffered_bytes(),
            max_uncommitted_records: default_max_uncommitted_records(),
            options: BTreeMap::new(),
        }
    }

    /// The source (nothing connects before a worker opens it).
    pub fn source(&self) -> KafkaSource {
        KafkaSource::new(self.clone())
    }

    /// The librdkafka consumer settings of worker `worker` (job name for the client id).
    pub(crate) fn client_config(&self, job: &str, worker: usize) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", self.auto_offset_reset.name());
        if !self.options.contains_key("client.id") {
            c.set("client.id", format!("sluice-{job}-{worker}"));
        }
        if let Some(id) = &self.group_instance_id {
            c.set("group.instance.id", format!("{id}-{worker}"));
        }
        if let Some(t) = self.session_timeout {
            c.set("session.timeout.ms", t.as_millis().max(1).to_string());
        }
        if !self.options.contains_key("queued.max.messages.kbytes") {
            // librdkafka prefetches up to 64 MiB per consumer by default, beyond the reader's
            // own buffer: its queue gets the same bound as that buffer.
            c.set(
                "queued.max.messages.kbytes",
                (self.max_buffered_bytes / 1024).max(1).to_string(),
            );
        }
        c
    }
}

/// Records written to Kafka: `[sink] type = "kafka"` (or `[dead_letter]`).
///
/// ```
/// use sluice_transforms::io::kafka::KafkaSinkConfig;
/// let c: KafkaSinkConfig = toml::from_str(r#"
///     brokers = "127.0.0.1:9092"
///     topic = "raw-${document_namespace:-unknown}"
/// "#).unwrap();
/// assert_eq!(c.topic.as_str(), "raw-${document_namespace:-unknown}");
/// assert_eq!(c.max_message_bytes, 1_000_000);
/// // a placeholder without a default could name a topic nobody chose
/// assert!(toml::from_str::<KafkaSinkConfig>("brokers = \"b\"\ntopic = \"raw-${x}\"").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[serde(deserialize_with = "non_empty")]
    pub brokers: String,
    /// The topic, a template filled from each record's attributes
    /// (`raw-${document_namespace:-unknown}`); every placeholder needs a default. A record
    /// whose rendered topic is not a valid name is refused (a dead letter).
    pub topic: PathTemplate,
    /// How a message becomes a record: `raw` (value = payload, headers = attributes),
    /// `json` (envelope, no headers) or `heka` (one Heka protobuf message).
    #[serde(default)]
    pub format: KafkaFormat,
    /// Larger records (value and headers) are refused, as dead letters (librdkafka's
    /// `message.max.bytes`; keep it at or below the broker's limit): bytes or `"1MB"`.
    #[serde(default = "default_max_message_bytes", with = "units::size")]
    pub max_message_bytes: usize,
    /// How long librdkafka keeps retrying a record before reporting it failed
    /// (`message.timeout.ms`).
    #[serde(default = "default_message_timeout", with = "units::duration")]
    pub message_timeout: Duration,
    /// Whole rounds of re-sending the records whose delivery failed (after librdkafka's own
    /// retries), with a doubling pause from `retry_backoff`; then the pipeline stops without
    /// acknowledging its input.
    #[serde(default = "default_delivery_retries")]
    pub delivery_retries: u32,
    /// The pause before the first re-send round.
    #[serde(default = "default_retry_backoff", with = "units::duration")]
    pub retry_backoff: Duration,
    /// More librdkafka producer settings, as strings (TLS, SASL, `linger.ms`, compression).
    #[serde(
        default,
        deserialize_with = "options",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

/// 1,000,000 bytes, librdkafka's and Kafka's default.
pub fn default_max_message_bytes() -> usize {
    1_000_000
}

/// 60 s.
pub fn default_message_timeout() -> Duration {
    Duration::from_secs(60)
}

/// 3 rounds.
pub fn default_delivery_retries() -> u32 {
    3
}

/// 1 s.
pub fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}

impl KafkaSinkConfig {
    /// A config writing to `topic` (a template) on `brokers`, with the defaults.
    pub fn new(brokers: impl Into<String>, topic: PathTemplate) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic,
            format: KafkaFormat::Raw,
            max_message_bytes: default_max_message_bytes(),
            message_timeout: default_message_timeout(),
            delivery_retries: default_delivery_retries(),
            retry_backoff: default_retry_backoff(),
            options: BTreeMap::new(),
        }
    }

    /// The sink (the producer is created when a worker opens it).
    pub fn sink(&self) -> KafkaSink {
        KafkaSink::new(self.clone())
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        for (k, v) in &self.options {
            c.set(k, v);
        }
        // librdkafka counts protocol overhead in message.max.bytes: leave room above the
        // record limit this sink checks itself.
        let max = self
            .max_message_bytes
            .saturating_add(64 * 1024)
            .min(1_000_000_000);
        c.set("bootstrap.servers", &self.brokers)
            .set("message.max.bytes", max.to_string())
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().max(1).to_string(),
            );
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Result<KafkaSourceConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn sink(text: &str) -> Result<KafkaSinkConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    const SOURCE: &str = "brokers = \"b:9092\"\ntopics = [\"raw\"]\ngroup_id = \"g\"\n";

    #[test]
    fn source_defaults_and_round_trip() {
        let c = source(SOURCE).unwrap();
        assert_eq!(c.format, KafkaFormat::Raw);
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        assert!(!c.stop_at_end);
        assert_eq!(source(&toml::to_string(&c).unwrap()).unwrap(), c);
        let full = source(&format!(
            "{SOURCE}format = \"json\"\ngroup_instance_id = \"a\"\nsession_timeout = \"6s\"\nauto_offset_reset = \"latest\"\nstop_at_end = true\nmax_buffered_bytes = \"1MB\"\n[options]\n\"fetch.max.bytes\" = \"1000\"\n"
        ))
        .unwrap();
        assert_eq!(source(&toml::to_string(&full).unwrap()).unwrap(), full);
        let rd = full.client_config("decoder", 3);
        assert_eq!(rd.get("group.instance.id"), Some("a-3"));
        assert_eq!(rd.get("session.timeout.ms"), Some("6000"));
        assert_eq!(rd.get("enable.auto.commit"), Some("false"));
        assert_eq!(rd.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(rd.get("auto.offset.reset"), Some("latest"));
        assert_eq!(rd.get("fetch.max.bytes"), Some("1000"));
        assert_eq!(rd.get("client.id"), Some("sluice-decoder-3"));
        // librdkafka's prefetch queue follows the reader's buffer ("1MB" = 1,000,000 bytes),
        // unless the options set it
        assert_eq!(rd.get("queued.max.messages.kbytes"), Some("976"));
        let mut own = full.clone();
        own.options
            .insert("queued.max.messages.kbytes".into(), "2048".into());
        assert_eq!(
            own.client_config("decoder", 0)
                .get("queued.max.messages.kbytes"),
            Some("2048")
        );
    }

    #[test]
    fn source_errors_name_what_is_wrong() {
        assert!(source("brokers = \"b\"\ngroup_id = \"g\"")
            .unwrap_err()
            .contains("missing field `topics`"));
        assert!(source("brokers = \"b\"\ntopics = []\ngroup_id = \"g\"")
            .unwrap_err()
            .contains("at least one topic"));
        assert!(
            source("brokers = \"b\"\ntopics = [\"a b\"]\ngroup_id = \"g\"")
                .unwrap_err()
                .contains("not a topic name")
        );
        assert!(source("brokers = \"\"\ntopics = [\"a\"]\ngroup_id = \"g\"")
            .unwrap_err()
            .contains("non-empty"));
        assert!(source(&format!("{SOURCE}topic = \"x\""))
            .unwrap_err()
            .contains("unknown field `topic`"));
        assert!(source(&format!("{SOURCE}format = \"avro\""))
            .unwrap_err()
            .contains("unknown variant `avro`"));
        let e = source(&format!(
            "{SOURCE}[options]\n\"enable.auto.commit\" = \"true\""
        ))
        .unwrap_err();
        assert!(
            e.contains("option `enable.auto.commit` is set by sluice"),
            "{e}"
        );
        assert!(source(&format!("{SOURCE}session_timeout = 0"))
            .unwrap_err()
            .contains("above zero"));
    }

    #[test]
    fn sink_defaults_round_trip_and_errors() {
        let c = sink("brokers = \"b\"\ntopic = \"raw-${document_namespace:-unknown}\"").unwrap();
        assert_eq!(c.format, KafkaFormat::Raw);
        assert_eq!(c.delivery_retries, 3);
        assert_eq!(sink(&toml::to_string(&c).unwrap()).unwrap(), c);
        let rd = c.client_config();
        assert_eq!(rd.get("message.timeout.ms"), Some("60000"));
        assert!(sink("brokers = \"b\"")
            .unwrap_err()
            .contains("missing field `topic`"));
        assert!(
            sink("brokers = \"b\"\ntopic = \"t\"\n[options]\n\"message.max.bytes\" = \"5\"")
                .unwrap_err()
                .contains("option `message.max.bytes` is set by sluice")
        );
        assert!(sink("brokers = \"b\"\ntopic = \"t\"\nformat = \"xml\"")
            .unwrap_err()
            .contains("unknown variant"));
    }
}
