//! Brokers for the Kafka tests: librdkafka's mock cluster (in process) and the real broker
//! the test command starts (`SLUICE_TEST_KAFKA_BROKERS`, see `scripts/services/kafka.sh`).
//! Every test makes its own topics and groups, with unique names.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::Message;
pub use sluice_transforms::io::kafka::KafkaHeaders;

/// The environment variable naming the real broker.
pub const BROKERS_ENV: &str = "SLUICE_TEST_KAFKA_BROKERS";

const TIMEOUT: Duration = Duration::from_secs(30);

/// `batch.num.messages` for producers whose topics are read up to their end offsets: tansu
/// 0.6 reports a partition's end offset as the last batch's first offset + 1 (after one batch
/// of 10 records it says 1, not 10), so a reader trusting it stops early. With one record per
/// batch the end offsets are right.
pub const ONE_RECORD_PER_BATCH: &str = "1";

impl Broker {
    /// Producer settings this broker needs for its end offsets to be right (see
    /// [`ONE_RECORD_PER_BATCH`]).
    pub fn producer_options(&self) -> Vec<(String, String)> {
        match self {
            Broker::Mock(_) => Vec::new(),
            Broker::Real(_) => vec![(
                "batch.num.messages".to_string(),
                ONE_RECORD_PER_BATCH.to_string(),
            )],
        }
    }
}

/// A broker to test against.
pub enum Broker {
    /// librdkafka's mock cluster, one broker.
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A real broker at this address.
    Real(String),
}

impl Broker {
    /// A fresh mock cluster.
    pub fn mock() -> Self {
        Broker::Mock(MockCluster::new(1).expect("a mock cluster"))
    }

    /// The real broker, or `None` (with a notice) when the variable is not set.
    pub fn real(test: &str) -> Option<Self> {
        match std::env::var(BROKERS_ENV) {
            Ok(b) if !b.is_empty() => Some(Broker::Real(b)),
            _ => {
                eprintln!(
                    "SKIPPED {test}: {BROKERS_ENV} is not set (scripts/services/kafka.sh start, then export it)"
                );
                None
            }
        }
    }

    /// The bootstrap list.
    pub fn brokers(&self) -> String {
        match self {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Real(b) => b.clone(),
        }
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Broker::Mock(m) => m.create_topic(topic, partitions, 1).expect("a mock topic"),
            Broker::Real(b) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", b)
                    .create()
                    .expect("an admin client");
                let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
                let results = futures::executor::block_on(
                    admin
                        .create_topics([&new], &AdminOptions::new().request_timeout(Some(TIMEOUT))),
                )
                .expect("create topics");
                for r in results {
                    r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
                }
                // wait until the topic's metadata shows every partition
                let consumer = plain_consumer(b, "metadata");
                for _ in 0..100 {
                    if let Ok(md) = consumer.fetch_metadata(Some(topic), TIMEOUT) {
                        if md.topics().iter().any(|t| {
                            t.name() == topic
                                && t.error().is_none()
                                && t.partitions().len() == partitions as usize
                        }) {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                panic!("topic {topic} does not show up in the metadata");
            }
        }
    }
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn plain_consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer")
}

/// Produces `messages` to `topic` (value = payload, headers = attributes), record `i` to
/// partition `i % partitions` (so on a fresh topic its offset is `i / partitions`), and waits
/// until every one is acknowledged.
pub fn produce(brokers: &str, topic: &str, messages: &[Message]) {
    produce_values(
        brokers,
        topic,
        messages.iter().map(|m| {
            (
                m.payload.to_vec(),
                m.attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .collect(),
            )
        }),
    )
}

/// Produces raw values with headers to `topic`, record `i` to partition `i % partitions`.
pub fn produce_values(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (Vec<u8>, KafkaHeaders)>,
) {
    let partitions = plain_consumer(brokers, "metadata")
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata")
        .topics()[0]
        .partitions()
        .len()
        .max(1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "20000000")
        .set("batch.num.messages", ONE_RECORD_PER_BATCH)
        .create()
        .expect("a producer");
    for (i, (value, headers)) in records.into_iter().enumerate() {
        let mut h = OwnedHeaders::new();
        for (k, v) in &headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let key = i.to_string();
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .partition((i % partitions) as i32)
            .payload(&value)
            .headers(h);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert_eq!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "{e}"
                    );
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(TIMEOUT).expect("every record acknowledged");
}

/// Every record of `topic`, read from the start with an independent consumer: payload =
/// value, attributes = headers.
pub fn read_back(brokers: &str, topic: &str) -> Vec<Message> {
    read_values(brokers, topic)
        .into_iter()
        .map(|(value, headers)| {
            Message::new(value).with_attributes(
                headers
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8(v).expect("UTF-8 header")))
                    .collect(),
            )
        })
        .collect()
}

/// Every record of `topic` as value and headers.
pub fn read_values(brokers: &str, topic: &str) -> Vec<(Vec<u8>, KafkaHeaders)> {
    let consumer = plain_consumer(brokers, "read-back");
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .expect("watermarks");
        remaining += high - low;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("a partition");
    }
    if remaining == 0 {
        return Vec::new();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    while remaining > 0 {
        let m = consumer
            .poll(TIMEOUT)
            .expect("a record before the timeout")
            .expect("a record");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), headers));
        remaining -= 1;
    }
    out
}

/// The offsets `group` committed on `topic`, by partition.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    Offsets::new(brokers, group).committed(topic, partitions)
}

/// Looks up a group's committed offsets again and again with one client.
pub struct Offsets(BaseConsumer);

impl Offsets {
    /// A client for `group`'s offsets (it does not join the group).
    pub fn new(brokers: &str, group: &str) -> Self {
        Offsets(plain_consumer(brokers, group))
    }

    /// The committed offsets on `topic`, by partition.
    pub fn committed(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        committed_with(&self.0, topic, partitions)
    }
}

fn committed_with(consumer: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, TIMEOUT)
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The end offsets of `topic`, by partition.
pub fn end_offsets(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer = plain_consumer(brokers, "watermarks");
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .expect("watermarks");
            (p, high)
        })
        .collect()
}
