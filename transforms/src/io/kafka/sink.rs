//! The Kafka sink: records produced with delivery reports, refusals as rejections.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use sluice::{
    BoxError, CheckContext, Epoch, Failure, Message, Rejection, Sink, SinkContext, SinkWriter,
    WriteFuture,
};

use super::{
    encode_record, topic_name_error, KafkaError, KafkaRecordError, KafkaSinkConfig,
    METADATA_TIMEOUT,
};

/// The longest pause between two re-send rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The pause before enqueueing again when librdkafka's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);

/// Writes messages to Kafka; see the [module docs](super). One producer per process, shared
/// by the workers' writers (clones share it).
///
/// ```no_run
/// use sluice_transforms::io::kafka::KafkaSinkConfig;
/// use sluice_transforms::io::object::PathTemplate;
/// let sink = KafkaSinkConfig::new(
///     "127.0.0.1:9092",
///     PathTemplate::parse("raw-${document_namespace:-unknown}").unwrap(),
/// )
/// .sink();
/// # let _ = sink;
/// ```
#[derive(Clone)]
pub struct KafkaSink {
    config: Arc<KafkaSinkConfig>,
    producer: Arc<Mutex<Option<FutureProducer>>>,
}

impl KafkaSink {
    /// A sink writing as `config` says (the producer is created when a worker opens it).
    pub fn new(config: KafkaSinkConfig) -> Self {
        KafkaSink {
            config: Arc::new(config),
            producer: Arc::default(),
        }
    }

    /// The config.
    pub fn config(&self) -> &KafkaSinkConfig {
        &self.config
    }

    fn producer(&self) -> Result<FutureProducer, KafkaError> {
        let mut slot = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p: FutureProducer = self
            .config
            .client_config()
            .create()
            .map_err(|e| KafkaError::Client(e.to_string()))?;
        *slot = Some(p.clone());
        Ok(p)
    }
}

impl Sink for KafkaSink {
    type Input = Message;

    fn kind(&self) -> &str {
        "kafka"
    }

    /// Records over the size limit, with a topic name that cannot exist, or that the broker
    /// refuses for themselves are refused.
    fn can_reject(&self) -> bool {
        true
    }

    /// Asks the brokers for metadata: of the topic when the template has no placeholder (it
    /// must exist), of the cluster otherwise.
    fn check(&self, _ctx: &CheckContext) -> Result<(), BoxError> {
        let producer = self.producer()?;
        let fixed = self.config.topic.attributes().next().is_none();
        let topic = fixed.then(|| self.config.topic.as_str());
        let metadata = producer
            .client()
            .fetch_metadata(topic, METADATA_TIMEOUT)
            .map_err(|e| KafkaError::Unreachable {
                brokers: self.config.brokers.clone(),
                reason: e.to_string(),
            })?;
        if let Some(topic) = topic {
            let exists = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if !exists {
                return Err(Box::new(KafkaError::NoTopic(topic.to_string())));
            }
        }
        Ok(())
    }

    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(KafkaWriter {
            producer: self.producer()?,
            config: self.config.clone(),
        }))
    }
}

/// One worker's writer of a [`KafkaSink`]: every record is sent at once (librdkafka batches
/// them), and a write resolves when each has its delivery report.
pub struct KafkaWriter {
    producer: FutureProducer,
    config: Arc<KafkaSinkConfig>,
}

impl SinkWriter<Message> for KafkaWriter {
    fn write(&mut self, _epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let producer = self.producer.clone();
        let config = self.config.clone();
        Box::pin(async move { deliver(&producer, &config, records).await })
    }
}

/// A record ready to send.
struct Pending {
    message: Message,
    topic: String,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

/// Errors that are about the record or its topic, not about the brokers' health: sending
/// again cannot help.
fn is_refusal(e: &RdError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

fn refusal(p: Pending, e: &RdError) -> Rejection<Message> {
    let failure = Failure::from_error(&KafkaRecordError::Refused {
        topic: p.topic,
        reason: e.to_string(),
    });
    Rejection::new(p.message, failure)
}

async fn enqueue(producer: &FutureProducer, p: &Pending) -> Result<DeliveryFuture, RdError> {
    loop {
        let mut headers = OwnedHeaders::new_with_capacity(p.headers.len());
        for (key, value) in &p.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let record = FutureRecord::<(), [u8]>::to(&p.topic)
            .payload(&p.value[..])
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {}
            Err((e, _)) => return Err(e),
        }
        tokio::time::sleep(QUEUE_FULL_WAIT).await;
    }
}

async fn deliver(
    producer: &FutureProducer,
    config: &KafkaSinkConfig,
    records: Vec<Message>,
) -> Result<Vec<Rejection<Message>>, BoxError> {
    let mut rejections = Vec::new();
    let mut pending = Vec::with_capacity(records.len());
    for message in records {
        let topic = config.topic.render(&message);
        if let Some(reason) = topic_name_error(&topic) {
            let e = KafkaRecordError::InvalidTopic { topic, reason };
            rejections.push(Rejection::new(message, Failure::from_error(&e)));
            continue;
        }
        let (value, headers) = match encode_record(config.format, &message) {
            Ok(encoded) => encoded,
            Err(e) => {
                rejections.push(Rejection::new(message, Failure::from_error(&e)));
                continue;
            }
        };
        let bytes = value.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if bytes > config.max_message_bytes {
            let e = KafkaRecordError::TooLarge {
                bytes,
                max: config.max_message_bytes,
            };
            rejections.push(Rejection::new(message, Failure::from_error(&e)));
            continue;
        }
        pending.push(Pending {
            message,
            topic,
            value,
            headers,
        });
    }
    let mut attempt: u32 = 0;
    let mut backoff = config.retry_backoff;
    loop {
        attempt += 1;
        let mut in_flight = Vec::with_capacity(pending.len());
        let mut failed: Vec<(Pending, String)> = Vec::new();
        for p in pending {
            match enqueue(producer, &p).await {
                Ok(delivery) => in_flight.push((p, delivery)),
                Err(e) if is_refusal(&e) => rejections.push(refusal(p, &e)),
                Err(e) => failed.push((p, e.to_string())),
            }
        }
        for (p, delivery) in in_flight {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) if is_refusal(&e) => rejections.push(refusal(p, &e)),
                Ok(Err((e, _))) => failed.push((p, e.to_string())),
                Err(_) => failed.push((p, "the producer closed before reporting".to_string())),
            }
        }
        let Some((_, reason)) = failed.first() else {
            return Ok(rejections);
        };
        if attempt > config.delivery_retries {
            return Err(Box::new(KafkaError::Delivery {
                records: failed.len(),
                attempts: attempt,
                reason: reason.clone(),
            }));
        }
        tracing::warn!(
            records = failed.len(),
            attempt,
            error = %reason,
            "kafka delivery failed, sending again in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        pending = failed.into_iter().map(|(p, _)| p).collect();
    }
}
