//! The config of the Pub/Sub source and sink, as a job's config file spells it
//! (`type = "pubsub"` in `[source]`, `[sink]` or `[dead_letter]`).
//!
//! Sizes and durations read as in [`crate::io::units`]: a bare number is bytes or seconds.

use crate::config_doc::{ty, Documented, Key};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{
    Connection, PubsubCredentials, PubsubSink, PubsubSource, MAX_ATTRIBUTES,
    MAX_ATTRIBUTE_VALUE_BYTES, MAX_REQUEST_BYTES,
};
use crate::io::object::{Compression, PathTemplate};
use crate::io::units;

/// A subscription read by streaming pull: `[source] type = "pubsub"`.
///
/// ```
/// use sluice_transforms::io::pubsub::PubsubSourceConfig;
/// let c: PubsubSourceConfig = toml::from_str(r#"
///     subscription = "projects/p/subscriptions/raw"
///     endpoint = "http://127.0.0.1:8085"
///     credentials = "anonymous"
///     max_lease = "20m"
/// "#).unwrap();
/// assert_eq!(c.max_lease.as_secs(), 1200);
/// assert!(c.max_outstanding_messages.is_none()); // tied to the in-flight bound
/// assert!(toml::from_str::<PubsubSourceConfig>("subscription = \"raw\"").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSourceConfig {
    /// The full subscription name, `projects/<project>/subscriptions/<name>`.
    #[serde(deserialize_with = "subscription_name")]
    pub subscription: String,
    /// A gRPC endpoint instead of Google's (an emulator: `http://127.0.0.1:8085`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `default` (application default credentials) or `anonymous` (emulators).
    #[serde(default)]
    pub credentials: PubsubCredentials,
    /// The admin API's REST endpoint, where the start-up check looks the subscription up (Google's
    /// by default). With `endpoint` set and no `admin_endpoint` the check only loads the
    /// credentials: cloudbox serves REST on its own port (`http://127.0.0.1:8086`), Google's
    /// emulator on its gRPC port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_endpoint: Option<String>,
    /// Messages delivered and not yet acknowledged, per worker, before the service stops
    /// sending. By default the pipeline's in-flight bound (`pipeline.in_flight.max_epochs` ×
    /// `pipeline.epoch.max_records`), so flow control never holds more than the pipeline may.
    #[serde(
        default,
        with = "units::option_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_outstanding_messages: Option<usize>,
    /// Bytes of those messages, per worker: by default `pipeline.in_flight.max_bytes`.
    #[serde(
        default,
        with = "units::option_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_outstanding_bytes: Option<usize>,
    /// How long a message's lease is extended while its epoch is in flight (60 min by
    /// default); an epoch not durable by then is redelivered (a duplicate, never a loss).
    #[serde(default = "default_max_lease", with = "units::duration")]
    pub max_lease: Duration,
    /// Each lease extension, 10 s to 10 min (60 s by default): how soon the service
    /// redelivers what a crashed process held.
    #[serde(
        default = "default_max_lease_extension",
        serialize_with = "units::duration::serialize",
        deserialize_with = "lease_extension"
    )]
    pub max_lease_extension: Duration,
    /// End the input once no message arrived for this long (draining a subscription, tests);
    /// by default the source never ends.
    #[serde(
        default,
        with = "units::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub exit_when_idle: Option<Duration>,
}

/// Messages published to a topic: `[sink] type = "pubsub"` (or `[dead_letter]`).
///
/// ```
/// use sluice_transforms::io::pubsub::PubsubSinkConfig;
/// let c: PubsubSinkConfig = toml::from_str(r#"
///     topic = "projects/p/topics/decoded-${document_namespace:-unknown}"
///     compression = "gzip"
/// "#).unwrap();
/// assert_eq!(c.max_message_bytes, 7_000_000);
/// // every placeholder needs a default, as in object paths
/// assert!(toml::from_str::<PubsubSinkConfig>("topic = \"projects/p/topics/${x}\"").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSinkConfig {
    /// The topic, `projects/<project>/topics/<name>`, a template (`${attr:-default}`
    /// placeholders, every one with a default). A record whose rendered topic is not a valid
    /// topic name, or (from a template with placeholders) a topic that does not exist, is
    /// refused (a dead letter); a fixed topic that does not exist fails the start-up check.
    #[serde(deserialize_with = "topic_template")]
    pub topic: PathTemplate,
    /// A gRPC endpoint instead of Google's (an emulator: `http://127.0.0.1:8085`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `default` (application default credentials) or `anonymous` (emulators).
    #[serde(default)]
    pub credentials: PubsubCredentials,
    /// The admin API's REST endpoint, where the start-up check looks a fixed topic up (Google's
    /// by default). With `endpoint` set and no `admin_endpoint` the check only loads the
    /// credentials: cloudbox serves REST on its own port (`http://127.0.0.1:8086`), Google's
    /// emulator on its gRPC port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_endpoint: Option<String>,
    /// `gzip` the payloads (the attribute map is unchanged) or `none` (the default).
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Larger messages (payload after compression, plus attributes) are refused as dead
    /// letters, never truncated: 7 MB by default, what survives Pub/Sub's JSON/base64 paths
    /// (the request limit is 10 MB).
    #[serde(
        default = "default_max_message_bytes",
        serialize_with = "units::size::serialize",
        deserialize_with = "message_bytes"
    )]
    pub max_message_bytes: usize,
    /// How long transient publish errors are retried (with exponential backoff) before the
    /// job stops without acknowledging its input.
    #[serde(default = "default_retry_timeout", with = "units::duration")]
    pub retry_timeout: Duration,
}

impl PubsubSourceConfig {
    /// The source this section describes (flow control from the config, or tied to the
    /// pipeline by the caller with [`PubsubSource::flow_control`]).
    pub fn source(&self) -> PubsubSource {
        let mut s = PubsubSource::new(&self.subscription, self.connection())
            .max_lease(self.max_lease)
            .max_lease_extension(self.max_lease_extension);
        if let Some(d) = self.exit_when_idle {
            s = s.exit_when_idle(d);
        }
        if self.max_outstanding_messages.is_some() || self.max_outstanding_bytes.is_some() {
            s = s.flow_control(
                self.max_outstanding_messages.unwrap_or(usize::MAX),
                self.max_outstanding_bytes.unwrap_or(usize::MAX),
            );
        }
        s
    }

    fn connection(&self) -> Connection {
        Connection {
            endpoint: self.endpoint.clone(),
            credentials: self.credentials,
            admin_endpoint: self.admin_endpoint.clone(),
        }
    }
}

impl PubsubSinkConfig {
    /// The sink this section describes.
    pub fn sink(&self) -> PubsubSink {
        PubsubSink::new(
            self.topic.clone(),
            Connection {
                endpoint: self.endpoint.clone(),
                credentials: self.credentials,
                admin_endpoint: self.admin_endpoint.clone(),
            },
        )
        .compression(self.compression)
        .max_message_bytes(self.max_message_bytes)
        .retry_timeout(self.retry_timeout)
    }
}

const ENDPOINT: Key = Key::optional(
    "endpoint",
    ty::STRING,
    "a gRPC endpoint instead of Google's (an emulator: `http://127.0.0.1:8085`)",
);
const CREDENTIALS: Key = Key::default(
    "credentials",
    "\"default\" | \"anonymous\"",
    "\"default\"",
    "application default credentials, or none (emulators)",
);
const ADMIN_ENDPOINT: Key = Key::optional(
    "admin_endpoint",
    ty::STRING,
    "the admin REST endpoint the start-up check uses (Google's; with `endpoint` and without it the check only loads credentials)",
);

impl Documented for PubsubSourceConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "subscription",
            ty::STRING,
            "\"projects/my-project/subscriptions/raw\"",
            "the full subscription name, `projects/<project>/subscriptions/<name>`",
        ),
        ENDPOINT,
        CREDENTIALS,
        ADMIN_ENDPOINT,
        Key::optional(
            "max_outstanding_messages",
            ty::COUNT,
            "messages delivered and not acknowledged per worker (the pipeline's in-flight bound when absent)",
        ),
        Key::optional(
            "max_outstanding_bytes",
            ty::SIZE,
            "bytes of those messages per worker (`pipeline.in_flight.max_bytes` when absent)",
        ),
        Key::default(
            "max_lease",
            ty::DURATION,
            "\"1h\"",
            "how long a lease is extended while its epoch is in flight; later it is redelivered",
        ),
        Key::default(
            "max_lease_extension",
            ty::DURATION,
            "\"60s\"",
            "each lease extension, 10s to 10m: how soon a crashed process's messages come back",
        ),
        Key::optional(
            "exit_when_idle",
            ty::DURATION,
            "end the input once no message arrived for this long; by default it never ends",
        ),
    ];
}

impl Documented for PubsubSinkConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "topic",
            ty::TEMPLATE,
            "\"projects/my-project/topics/decoded\"",
            "`projects/<project>/topics/<name>`, placeholders with defaults; a fixed topic must exist",
        ),
        ENDPOINT,
        CREDENTIALS,
        ADMIN_ENDPOINT,
        Key::default(
            "compression",
            "\"gzip\" | \"none\"",
            "\"none\"",
            "gzip the payloads (attributes unchanged)",
        ),
        Key::default(
            "max_message_bytes",
            ty::SIZE,
            "\"7MB\"",
            "larger messages are dead letters, never truncated",
        ),
        Key::default(
            "retry_timeout",
            ty::DURATION,
            "\"60s\"",
            "how long transient publish errors are retried before the job stops",
        ),
    ];
}

/// 60 minutes, the client's default.
pub fn default_max_lease() -> Duration {
    Duration::from_secs(3600)
}

/// 60 seconds, the client's default.
pub fn default_max_lease_extension() -> Duration {
    Duration::from_secs(60)
}

/// Payloads are published as they are.
pub fn default_compression() -> Compression {
    Compression::None
}

/// 7 MB (see [`PubsubSinkConfig::max_message_bytes`]).
pub fn default_max_message_bytes() -> usize {
    7_000_000
}

/// 60 seconds.
pub fn default_retry_timeout() -> Duration {
    Duration::from_secs(60)
}

fn subscription_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    super::check_resource_name(&name, "subscriptions").map_err(serde::de::Error::custom)?;
    Ok(name)
}

fn topic_template<'de, D: Deserializer<'de>>(d: D) -> Result<PathTemplate, D::Error> {
    let template = PathTemplate::deserialize(d)?;
    let text = template.as_str();
    let fixed: Vec<&str> = text.splitn(4, '/').collect();
    if fixed.len() < 4 || fixed[0] != "projects" || fixed[2] != "topics" || fixed[1].is_empty() {
        return Err(serde::de::Error::custom(format!(
            "expected a topic name `projects/<project>/topics/<name>` (the name may hold `${{attr:-default}}` placeholders), found `{text}`"
        )));
    }
    Ok(template)
}

fn lease_extension<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = units::duration::deserialize(d)?;
    if !(10..=600).contains(&v.as_secs()) {
        return Err(serde::de::Error::custom(format!(
            "expected a lease extension from 10s to 10m, found {}",
            units::format_duration(v)
        )));
    }
    Ok(v)
}

fn message_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = units::size::deserialize(d)?;
    if v > MAX_REQUEST_BYTES {
        return Err(serde::de::Error::custom(format!(
            "expected at most {MAX_REQUEST_BYTES} bytes (Pub/Sub's request limit), found {v}"
        )));
    }
    Ok(v)
}

// The limits are documented on the sink; keep them visible to config readers too.
const _: () = assert!(MAX_ATTRIBUTES == 100 && MAX_ATTRIBUTE_VALUE_BYTES == 1024);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_bounds() {
        // each bad text below differs from a good one by one key
        toml::from_str::<PubsubSourceConfig>("subscription = \"projects/p/subscriptions/raw\"")
            .unwrap();
        toml::from_str::<PubsubSinkConfig>("topic = \"projects/p/topics/out\"").unwrap();
        let bad = [
            "subscription = \"projects/p/topics/out\"",
            "subscription = \"projects//subscriptions/s\"",
            "subscription = \"projects/p/subscriptions/raw\"\nmax_lease_extension = 5",
            "subscription = \"projects/p/subscriptions/raw\"\nmax_outstanding_messages = 0",
            "subscription = \"projects/p/subscriptions/raw\"\ncredentials = \"magic\"",
            "subscription = \"projects/p/subscriptions/raw\"\nbrokers = \"x\"",
        ];
        for text in bad {
            assert!(
                toml::from_str::<PubsubSourceConfig>(text).is_err(),
                "accepted: {text}"
            );
        }
        let bad = [
            "topic = \"decoded\"",
            "topic = \"projects/p/topics/out\"\nmax_message_bytes = \"11MB\"",
            "topic = \"projects/p/topics/out\"\ncompression = \"zstd\"",
        ];
        for text in bad {
            assert!(
                toml::from_str::<PubsubSinkConfig>(text).is_err(),
                "accepted: {text}"
            );
        }
    }

    #[test]
    fn defaults_round_trip() {
        let c: PubsubSinkConfig = toml::from_str("topic = \"projects/p/topics/out\"").unwrap();
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.credentials, PubsubCredentials::Default);
        let back: PubsubSinkConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let s: PubsubSourceConfig = toml::from_str(
            "subscription = \"projects/p/subscriptions/raw\"\nexit_when_idle = \"2s\"",
        )
        .unwrap();
        let back: PubsubSourceConfig = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
