//! The Pub/Sub sink: see the module docs of [`super`] for limits, refusals and retries.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use google_cloud_pubsub::client::{BasePublisher, Publisher};
use google_cloud_pubsub::model::Message as PubsubMessage;
use sluice::{
    BoxError, Epoch, Failure, Message, Rejection, Sink, SinkContext, SinkWriter, WriteFuture,
};
use tokio::sync::OnceCell;

use super::{
    check_resource_name, Connection, MemoryPubsub, PubsubError, PubsubRefusal, Resource,
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES,
};
use crate::io::object::{Compression, PathTemplate};

/// Publishes messages with their attributes to the topic a template renders. See the
/// [module docs](super) for what is refused and when an epoch is durable.
#[derive(Clone)]
pub struct PubsubSink {
    topic: PathTemplate,
    backend: Backend,
    compression: Compression,
    max_message_bytes: usize,
    retry_timeout: Duration,
}

#[derive(Clone)]
enum Backend {
    Service(Connection),
    Memory(MemoryPubsub),
}

impl PubsubSink {
    /// Publishes to the service.
    pub fn new(topic: PathTemplate, connection: Connection) -> Self {
        Self::with_backend(topic, Backend::Service(connection))
    }

    /// Publishes to the memory double (tests).
    pub fn memory(pubsub: &MemoryPubsub, topic: PathTemplate) -> Self {
        Self::with_backend(topic, Backend::Memory(pubsub.clone()))
    }

    fn with_backend(topic: PathTemplate, backend: Backend) -> Self {
        PubsubSink {
            topic,
            backend,
            compression: Compression::None,
            max_message_bytes: super::default_max_message_bytes(),
            retry_timeout: super::default_retry_timeout(),
        }
    }

    /// Gzips payloads (`Compression::Gzip`) or not (the default).
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    /// Larger messages (payload as published plus attributes) are refused: 7 MB by default.
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// How long transient publish errors are retried before the write fails (60 s).
    pub fn retry_timeout(mut self, d: Duration) -> Self {
        self.retry_timeout = d;
        self
    }

    /// The topic when the template has no placeholder.
    fn fixed_topic(&self) -> Option<&str> {
        self.topic
            .attributes()
            .next()
            .is_none()
            .then(|| self.topic.as_str())
    }

    /// The topic a record goes to and its payload as published, or why it cannot be.
    pub(super) fn prepare(&self, m: &Message, topic: &mut String) -> Result<Bytes, PubsubRefusal> {
        self.topic.render_into(m, topic);
        check_resource_name(topic, "topics").map_err(|why| PubsubRefusal::BadTopic {
            topic: topic.clone(),
            why,
        })?;
        if m.attributes.len() > MAX_ATTRIBUTES {
            return Err(PubsubRefusal::TooManyAttributes {
                count: m.attributes.len(),
            });
        }
        let mut attribute_bytes = 0;
        for (k, v) in &m.attributes {
            if k.len() > MAX_ATTRIBUTE_KEY_BYTES {
                return Err(PubsubRefusal::AttributeKeyTooLong {
                    key: sluice::truncate_utf8(k, 64).to_string(),
                    bytes: k.len(),
                });
            }
            if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
                return Err(PubsubRefusal::AttributeValueTooLong {
                    key: k.clone(),
                    bytes: v.len(),
                });
            }
            attribute_bytes += k.len() + v.len();
        }
        if m.payload.is_empty() && m.attributes.is_empty() {
            return Err(PubsubRefusal::Empty);
        }
        // A payload alone over the limit is refused before it is compressed (no work wasted
        // on a message that compression could only rescue by chance of its content).
        let data = match self.compression {
            Compression::None => m.payload.clone(),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(m.payload.len() / 3 + 64),
                    flate2::Compression::default(),
                );
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(&m.payload);
                Bytes::from(gz.finish().unwrap_or_default())
            }
        };
        let bytes = data.len() + attribute_bytes;
        if bytes > self.max_message_bytes {
            return Err(PubsubRefusal::TooLarge {
                bytes,
                max: self.max_message_bytes,
            });
        }
        Ok(data)
    }
}

impl Sink for PubsubSink {
    type Input = Message;

    fn kind(&self) -> &str {
        "pubsub"
    }

    /// Records Pub/Sub cannot take (limits, an invalid rendered topic) are refused.
    fn can_reject(&self) -> bool {
        true
    }

    /// A fixed topic is looked up: a missing one, missing or broken credentials or an
    /// unreachable service fail here, before any record is read. A templated topic is known
    /// only per record: the credentials are checked, and a record whose topic does not exist
    /// is refused (a dead letter naming the topic).
    fn check(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        let fixed = self.fixed_topic();
        match (&self.backend, fixed) {
            (Backend::Service(c), Some(topic)) => c.check_exists(ctx, Resource::Topic, topic),
            (Backend::Service(c), None) => c.check_credentials(ctx),
            (Backend::Memory(m), Some(topic)) => m.check_exists(Resource::Topic, topic),
            (Backend::Memory(_), None) => Ok(()),
        }
    }

    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(PubsubWriter {
            sink: self.clone(),
            client: Arc::default(),
            publishers: Arc::default(),
        }))
    }
}

/// One worker's writer. Its client (built by its first write) and its publishers (one per
/// topic) live as long as the writer: their background tasks run on this run's runtime.
struct PubsubWriter {
    sink: PubsubSink,
    client: Arc<OnceCell<BasePublisher>>,
    publishers: Arc<Mutex<HashMap<String, Publisher>>>,
}

impl SinkWriter<Message> for PubsubWriter {
    fn write(&mut self, _epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let mut refused = Vec::new();
        let mut ready: Vec<(String, Bytes, Message)> = Vec::with_capacity(records.len());
        let mut topic = String::new();
        for m in records {
            match self.sink.prepare(&m, &mut topic) {
                Ok(data) => ready.push((std::mem::take(&mut topic), data, m)),
                Err(why) => refused.push(Rejection::new(m, Failure::from_error(&why))),
            }
        }
        let sink = self.sink.clone();
        // A record is kept for its dead letter only where its topic may not exist.
        let templated = sink.fixed_topic().is_none();
        let (client, publishers) = (self.client.clone(), self.publishers.clone());
        Box::pin(async move {
            match &sink.backend {
                Backend::Memory(pubsub) => {
                    for (topic, data, m) in ready {
                        let message = Message::new(data).with_attributes(m.attributes.clone());
                        match pubsub.publish(&topic, message) {
                            Ok(_) => {}
                            Err(PubsubError::NotFound { .. }) if templated => {
                                refused.push(no_such_topic(m, topic));
                            }
                            Err(e) => return Err(Box::new(e) as BoxError),
                        }
                    }
                }
                Backend::Service(connection) => {
                    let client = client
                        .get_or_try_init(|| build_client(connection, sink.retry_timeout))
                        .await?;
                    let mut sent = Vec::with_capacity(ready.len());
                    let mut futures = Vec::with_capacity(ready.len());
                    for (topic, data, m) in ready {
                        let publisher = {
                            let mut p = publishers.lock().unwrap_or_else(PoisonError::into_inner);
                            p.entry(topic.clone())
                                .or_insert_with(|| client.publisher(topic.clone()).build())
                                .clone()
                        };
                        let (attributes, kept) = if templated {
                            (m.attributes.clone(), Some(m))
                        } else {
                            (m.attributes, None)
                        };
                        let message = PubsubMessage::new()
                            .set_data(data)
                            .set_attributes(attributes);
                        futures.push(publisher.publish(message));
                        sent.push((topic, kept));
                    }
                    // Every publish must be acknowledged for the epoch to be durable; the
                    // client retried transient errors for `retry_timeout` already.
                    let results = futures::future::join_all(futures).await;
                    for ((topic, kept), result) in sent.into_iter().zip(results) {
                        let Err(e) = result else { continue };
                        match kept {
                            Some(m) if is_not_found(&e) => refused.push(no_such_topic(m, topic)),
                            _ => {
                                return Err(Box::new(PubsubError::Publish {
                                    topic,
                                    message: error_chain(&e),
                                }) as BoxError)
                            }
                        }
                    }
                }
            }
            Ok(refused)
        })
    }
}

/// The dead letter of a record whose rendered topic does not exist.
fn no_such_topic(m: Message, topic: String) -> Rejection<Message> {
    Rejection::new(
        m,
        Failure::from_error(&PubsubRefusal::NoSuchTopic { topic }),
    )
}

/// Whether the service answered that the topic does not exist.
fn is_not_found(e: &google_cloud_pubsub::error::PublishError) -> bool {
    use google_cloud_gax::error::rpc::Code;
    use google_cloud_pubsub::error::PublishError;
    matches!(e, PublishError::Rpc(rpc) if rpc.status().is_some_and(|s| s.code == Code::NotFound))
}

async fn build_client(
    connection: &Connection,
    retry_timeout: Duration,
) -> Result<BasePublisher, PubsubError> {
    use google_cloud_gax::retry_policy::RetryPolicyExt;
    let mut builder = BasePublisher::builder().with_retry_policy(
        google_cloud_pubsub::retry_policy::RetryableErrors.with_time_limit(retry_timeout),
    );
    if let Some(e) = &connection.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    if let Some(c) = connection.anonymous() {
        builder = builder.with_credentials(c);
    }
    builder.build().await.map_err(|e| PubsubError::Connect {
        endpoint: connection.to_string(),
        message: e.to_string(),
    })
}

/// An error and its causes on one line (the client's errors keep the status in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}
