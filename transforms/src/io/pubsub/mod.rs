//! Google Cloud Pub/Sub: a subscription as a source, topics as a sink, on the official
//! `google-cloud-pubsub` crate (gRPC, streaming pull) or on [`MemoryPubsub`], a double of the
//! service's delivery semantics for tests.
//!
//! ## The source: acknowledged only when durable
//!
//! [`PubsubSource`] streams messages from one subscription, one stream per worker: a message's
//! data is the payload, its attributes the attributes, and its position
//! ([`sluice::SourcePosition::PubSub`]) the subscription and message id, with the publish time
//! and delivery attempt (dead letters carry them as `pubsub_*` attributes). Each delivered
//! message is its own partition of the reader's [`sluice::EpochLedger`]: it is acked when
//! its epoch is durable in every sink (written or dead-lettered), whatever the order in which
//! epochs finish. Until then the client extends its lease. When the job stops (a signal, a
//! failed sink) every delivered message that is not durable is nacked, so the service
//! redelivers it at once instead of after its ack deadline.
//!
//! **Bounds that apply to long epochs.** A lease is extended every few seconds by at most
//! `max_lease_extension` (60 s), for at most `max_lease` (60 min) in total: an epoch that is
//! not durable within `max_lease` is redelivered, possibly to another worker (a duplicate,
//! never a loss). A process that dies leaves its messages to be redelivered within
//! `max_lease_extension`. So keep the time an epoch takes to become durable (the sinks'
//! batch ages, `pipeline.epoch.max_age`, retries) well below `max_lease`; a redelivery storm
//! (RisingWave #16736) needs epochs longer than that, not just longer than the
//! subscription's ack deadline, which the lease extensions replace.
//!
//! **Streams that end.** The service may end a streaming pull at any time, cleanly or with a
//! status. The client reopens it itself after a transient status mid-stream; a stream that
//! ends cleanly, or that the client gives up on, is reopened here after a backoff (100 ms,
//! doubling up to 10 s, back to 100 ms once a stream delivered something or lived 10 s). The
//! ended stream is kept until every message it delivered is acked or nacked, so its leases
//! are still extended and its acks still sent: nothing is redelivered because a stream
//! ended. Only a permanent status (a missing subscription, no permission, a bad request)
//! stops the job, with the status in its error. (A stream the client itself closed after an
//! error can no longer ack: what it delivered is redelivered, a duplicate, never a loss.)
//!
//! **Flow control** is the client's, per stream: at most `max_outstanding_messages` and
//! `max_outstanding_bytes` delivered and not acked. The jobs tie it to the pipeline's
//! in-flight bound, so the service never sends more than the pipeline would hold.
//!
//! ## The sink: refuses what Pub/Sub cannot take
//!
//! [`PubsubSink`] publishes each record with its attributes to the topic its template
//! renders, optionally gzipping the payload. A record Pub/Sub would refuse is refused here,
//! before publishing, as a [`sluice::Rejection`] (a dead letter with the reason), never
//! truncated: more than [`MAX_ATTRIBUTES`] attributes, a key over
//! [`MAX_ATTRIBUTE_KEY_BYTES`] or a value over [`MAX_ATTRIBUTE_VALUE_BYTES`] bytes, a message
//! over `max_message_bytes`, a message with neither data nor attributes, a rendered topic
//! that is not a topic name. An epoch is durable when the service acknowledged every publish
//! of it. Transient errors are retried with exponential backoff for `retry_timeout`; then the
//! write fails and the job stops without acknowledging its input. The sink takes
//! `Message`s, so it is usable as the dead-letter sink (dead letters in message form).
//!
//! ## Auth and endpoints
//!
//! Application default credentials by default; `endpoint` and `credentials = "anonymous"`
//! for emulators (the crate ignores `PUBSUB_EMULATOR_HOST`).
//!
//! **Start-up checks** look the source's subscription and a sink's fixed topic up with the
//! admin API (REST, [`Connection::admin_endpoint`]): a missing one is one error naming the
//! section before any record is read. A templated topic is known only per record: a record
//! whose topic does not exist is refused (a dead letter naming the topic). A caller without
//! the `get` permission (Pub/Sub's subscriber and publisher roles lack it) is warned and the
//! job goes on.
//!
//! ```
//! use sluice::{DeadLetter, MemorySink, Message, Pipeline};
//! use sluice_transforms::io::pubsub::{MemoryPubsub, PubsubSink, PubsubSource};
//! use sluice_transforms::io::object::PathTemplate;
//!
//! let pubsub = MemoryPubsub::new();
//! pubsub.create_topic("projects/p/topics/raw");
//! pubsub.create_subscription("projects/p/subscriptions/raw", "projects/p/topics/raw");
//! pubsub.create_topic("projects/p/topics/out");
//! for i in 0..10 {
//!     pubsub.publish("projects/p/topics/raw", Message::new(format!("m{i}"))).unwrap();
//! }
//! let source = PubsubSource::memory(&pubsub, "projects/p/subscriptions/raw")
//!     .exit_when_idle(std::time::Duration::from_millis(300));
//! let topic = PathTemplate::parse("projects/p/topics/out").unwrap();
//! let sink = PubsubSink::memory(&pubsub, topic);
//! Pipeline::new("copy")
//!     .run(move |p| {
//!         let mut dead_letters = p.dead_letters();
//!         p.read("read", source.clone())
//!             .write("write", sink.clone())
//!             .failures_to(&mut dead_letters);
//!         dead_letters.write("dead_letters", MemorySink::<DeadLetter>::new());
//!         Ok(())
//!     })
//!     .unwrap();
//! assert_eq!(pubsub.published("projects/p/topics/out").len(), 10);
//! assert_eq!(pubsub.unacked("projects/p/subscriptions/raw"), 0);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

mod config;
mod memory;
mod sink;
mod source;
#[cfg(test)]
mod tests;

pub use config::{
    default_compression, default_max_lease, default_max_lease_extension, default_max_message_bytes,
    default_retry_timeout, PubsubSinkConfig, PubsubSourceConfig,
};
pub use memory::{MemoryPubsub, Published};
pub use sink::PubsubSink;
pub use source::PubsubSource;

/// Pub/Sub's limit on one publish request.
pub const MAX_REQUEST_BYTES: usize = 10_000_000;
/// Pub/Sub's limit on the attributes of one message.
pub const MAX_ATTRIBUTES: usize = 100;
/// Pub/Sub's limit on an attribute key.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
/// Pub/Sub's limit on an attribute value.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;

/// Where clients get their credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PubsubCredentials {
    /// Application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's, the
    /// metadata server).
    #[default]
    Default,
    /// No credentials: emulators.
    Anonymous,
}

/// How clients reach the service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// A gRPC endpoint instead of Google's.
    pub endpoint: Option<String>,
    /// Where credentials come from.
    pub credentials: PubsubCredentials,
    /// The admin API's REST endpoint, where start-up checks look topics and subscriptions
    /// up. Google's by default; with an `endpoint` override and no admin endpoint nothing is
    /// looked up (emulators serve REST elsewhere: cloudbox on its own port, Google's
    /// emulator on its gRPC port).
    pub admin_endpoint: Option<String>,
}

impl Connection {
    /// An emulator at `endpoint` (`http://127.0.0.1:8085`), without credentials.
    pub fn emulator(endpoint: impl Into<String>) -> Self {
        Connection {
            endpoint: Some(endpoint.into()),
            credentials: PubsubCredentials::Anonymous,
            admin_endpoint: None,
        }
    }

    /// Start-up checks look topics and subscriptions up at `endpoint` (REST).
    pub fn admin_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.admin_endpoint = Some(endpoint.into());
        self
    }

    fn anonymous(&self) -> Option<google_cloud_auth::credentials::Credentials> {
        match self.credentials {
            PubsubCredentials::Default => None,
            PubsubCredentials::Anonymous => {
                Some(google_cloud_auth::credentials::anonymous::Builder::new().build())
            }
        }
    }
}

/// How long a check waits for the service.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// What a start-up check looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A topic (a sink's fixed topic).
    Topic,
    /// A subscription (the source's).
    Subscription,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Topic => "topic",
            Resource::Subscription => "subscription",
        })
    }
}

/// Why a lookup failed before its answer was read.
enum Lookup {
    Build(String),
    Call(google_cloud_pubsub::Error),
}

impl Connection {
    /// Looks `name` up with the admin API: a missing topic or subscription, credentials that
    /// cannot be loaded or a service that does not answer fail here, before any record is
    /// read. A caller allowed to pull or publish but not to get the resource (Pub/Sub's
    /// subscriber and publisher roles lack `pubsub.subscriptions.get` and
    /// `pubsub.topics.get`) is warned and passes: the first pull or publish says then.
    fn check_exists(
        &self,
        ctx: &sluice::CheckContext,
        resource: Resource,
        name: &str,
    ) -> Result<(), sluice::BoxError> {
        let admin = match (&self.endpoint, &self.admin_endpoint) {
            (_, Some(admin)) => Some(admin.clone()),
            (None, None) => None,
            (Some(_), None) => {
                tracing::info!(
                    "the pub/sub {resource} `{name}` is not looked up: an endpoint is set but no admin_endpoint"
                );
                return self.check_credentials(ctx);
            }
        };
        let lookup = async {
            match resource {
                Resource::Subscription => {
                    let mut b = google_cloud_pubsub::client::SubscriptionAdmin::builder();
                    if let Some(e) = &admin {
                        b = b.with_endpoint(e.clone());
                    }
                    if let Some(c) = self.anonymous() {
                        b = b.with_credentials(c);
                    }
                    let client = b.build().await.map_err(|e| Lookup::Build(e.to_string()))?;
                    client
                        .get_subscription()
                        .set_subscription(name)
                        .send()
                        .await
                        .map(drop)
                        .map_err(Lookup::Call)
                }
                Resource::Topic => {
                    let mut b = google_cloud_pubsub::client::TopicAdmin::builder();
                    if let Some(e) = &admin {
                        b = b.with_endpoint(e.clone());
                    }
                    if let Some(c) = self.anonymous() {
                        b = b.with_credentials(c);
                    }
                    let client = b.build().await.map_err(|e| Lookup::Build(e.to_string()))?;
                    client
                        .get_topic()
                        .set_topic(name)
                        .send()
                        .await
                        .map(drop)
                        .map_err(Lookup::Call)
                }
            }
        };
        let answer = ctx
            .runtime()
            .block_on(async { tokio::time::timeout(CHECK_TIMEOUT, lookup).await });
        use google_cloud_gax::error::rpc::Code;
        let error = match answer {
            Ok(Ok(())) => return Ok(()),
            Err(_) => PubsubError::Connect {
                endpoint: admin.unwrap_or_else(|| self.to_string()),
                message: format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
            },
            Ok(Err(Lookup::Build(message))) => PubsubError::Connect {
                endpoint: admin.unwrap_or_else(|| self.to_string()),
                message,
            },
            Ok(Err(Lookup::Call(e))) => {
                let code = e.status().map(|s| s.code);
                let http = e.http_status_code();
                let why = match e.status() {
                    Some(s) => format!("{}: {}", s.code.name(), s.message),
                    None => e.to_string(),
                };
                if code == Some(Code::NotFound) || (code.is_none() && http == Some(404)) {
                    PubsubError::Missing {
                        resource,
                        name: name.to_string(),
                    }
                } else if code == Some(Code::PermissionDenied)
                    || (code.is_none() && http == Some(403))
                {
                    tracing::warn!(
                        "cannot check that the pub/sub {resource} `{name}` exists (no permission to get it: {why}); going on"
                    );
                    return Ok(());
                } else {
                    PubsubError::Check {
                        resource,
                        name: name.to_string(),
                        message: why,
                    }
                }
            }
        };
        Err(Box::new(error))
    }
}

impl Connection {
    /// Builds a publisher client once: credentials that cannot be found or loaded fail here
    /// (what a sink with a templated topic can check before its records name the topics).
    fn check_credentials(&self, ctx: &sluice::CheckContext) -> Result<(), sluice::BoxError> {
        let mut builder = google_cloud_pubsub::client::BasePublisher::builder();
        if let Some(e) = &self.endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        if let Some(c) = self.anonymous() {
            builder = builder.with_credentials(c);
        }
        let built = ctx
            .runtime()
            .block_on(async { tokio::time::timeout(CHECK_TIMEOUT, builder.build()).await });
        match built {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Box::new(PubsubError::Connect {
                endpoint: self.to_string(),
                message: e.to_string(),
            })),
            Err(_) => Err(Box::new(PubsubError::Connect {
                endpoint: self.to_string(),
                message: format!("no client within {}s", CHECK_TIMEOUT.as_secs()),
            })),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("pubsub.googleapis.com"),
        }
    }
}

/// Why Pub/Sub IO failed as a whole (single records are refused as dead letters instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubsubError {
    /// A client could not be built (credentials, endpoint).
    #[error("cannot connect to pub/sub at {endpoint}: {message}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The streaming pull failed with a permanent error (a missing subscription, no
    /// permission), after the client's own retries of transient ones.
    #[error("cannot pull from `{subscription}`: {message}")]
    Pull {
        /// The subscription.
        subscription: String,
        /// Why.
        message: String,
    },
    /// The stream ended although nothing asked it to.
    #[error("the streaming pull from `{0}` ended unexpectedly")]
    StreamEnded(String),
    /// A publish failed after the retries of transient errors (or at once, for permanent
    /// errors such as a missing topic).
    #[error("cannot publish to `{topic}`: {message}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// A start-up check found no such topic or subscription.
    #[error("the {resource} `{name}` does not exist")]
    Missing {
        /// A topic or a subscription.
        resource: Resource,
        /// Its name.
        name: String,
    },
    /// A start-up check could not look a topic or subscription up.
    #[error("cannot look up the {resource} `{name}`: {message}")]
    Check {
        /// A topic or a subscription.
        resource: Resource,
        /// Its name.
        name: String,
        /// Why.
        message: String,
    },
    /// The memory double has no such topic or subscription.
    #[error("no {kind} `{name}`")]
    NotFound {
        /// `topic` or `subscription`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

/// Why the sink refused one record (the dead letter's message and exception class).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubsubRefusal {
    /// More attributes than Pub/Sub takes.
    #[error("the message has {count} attributes; pub/sub takes at most {MAX_ATTRIBUTES}")]
    TooManyAttributes {
        /// How many.
        count: usize,
    },
    /// An attribute key over the limit.
    #[error("attribute key `{key}...` is {bytes} bytes; pub/sub takes at most {MAX_ATTRIBUTE_KEY_BYTES}")]
    AttributeKeyTooLong {
        /// The key's first characters.
        key: String,
        /// Its length.
        bytes: usize,
    },
    /// An attribute value over the limit.
    #[error(
        "attribute `{key}` is {bytes} bytes; pub/sub takes at most {MAX_ATTRIBUTE_VALUE_BYTES}"
    )]
    AttributeValueTooLong {
        /// The attribute.
        key: String,
        /// The value's length.
        bytes: usize,
    },
    /// The message (payload as published plus attributes) is over the configured size.
    #[error("the message is {bytes} bytes as published; the sink takes at most {max}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Pub/Sub refuses a message with neither data nor attributes.
    #[error("the message has neither a payload nor attributes")]
    Empty,
    /// The rendered topic (from a template) does not exist.
    #[error("the topic `{topic}` does not exist")]
    NoSuchTopic {
        /// The rendered topic.
        topic: String,
    },
    /// The rendered topic is not a topic name.
    #[error("`{topic}` is not a valid topic name: {why}")]
    BadTopic {
        /// The rendered topic.
        topic: String,
        /// Why.
        why: String,
    },
}

/// Checks `projects/<project>/<collection>/<name>`: a project, and a name of 3 to 255
/// characters starting with a letter, of letters, digits and `-_.~+%`, not starting with
/// `goog` (Pub/Sub's rules for topic and subscription names).
pub fn check_resource_name(name: &str, collection: &str) -> Result<(), String> {
    let expected = || format!("expected `projects/<project>/{collection}/<name>`, found `{name}`");
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != 4 || parts[0] != "projects" || parts[2] != collection || parts[1].is_empty() {
        return Err(expected());
    }
    let id = parts[3];
    if !(3..=255).contains(&id.len()) {
        return Err(format!("the name `{id}` must be 3 to 255 characters long"));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("the name `{id}` must start with a letter"));
    }
    if id.starts_with("goog") {
        return Err(format!("the name `{id}` must not start with `goog`"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.~+%".contains(*c)))
    {
        return Err(format!("the name `{id}` holds `{c}`"));
    }
    Ok(())
}
