//! Unit tests: record formats, topic names, and the source and sink on librdkafka's mock
//! cluster (the conformance suites and the real broker are in `transforms/tests/kafka.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::{DeadLetter, MemorySink, Message, Pipeline, SourcePosition};
use sluice_schemas::heka::{encode_frame, message_to_heka, Field, HekaMessage};

use super::*;
use crate::io::object::PathTemplate;

fn position() -> SourcePosition {
    SourcePosition::Kafka {
        topic: Arc::from("raw"),
        partition: 1,
        offset: 7,
    }
}

fn sample() -> Message {
    Message::new("{\"a\":1}")
        .with_attribute("document_namespace", "telemetry")
        .with_attribute("uri", "/submit/telemetry/x")
}

fn headers(h: &KafkaHeaders) -> Vec<(Option<&str>, Option<&[u8]>)> {
    h.iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_slice())))
        .collect()
}

#[test]
fn every_format_round_trips_a_message() {
    for format in [KafkaFormat::Raw, KafkaFormat::Json, KafkaFormat::Heka] {
        let (value, h) = encode_record(format, &sample()).unwrap();
        let m = decode_record(format, Some(&value), headers(&h), position())
            .unwrap_or_else(|d| panic!("{format:?}: {}", d.error_message));
        assert_eq!(m, sample(), "{format:?}");
        assert_eq!(m.position, Some(position()));
    }
}

#[test]
fn a_heka_stream_frame_is_read_too() {
    let heka = message_to_heka(&sample()).unwrap();
    let m = decode_record(
        KafkaFormat::Heka,
        Some(&encode_frame(&heka)),
        [],
        position(),
    )
    .unwrap();
    assert_eq!(m, sample());
}

#[test]
fn values_that_are_not_messages_are_dead_letters_with_their_position() {
    let not_heka = HekaMessage {
        uuid: vec![1; 16],
        fields: vec![Field::string("uri", "/x")], // no content
        ..HekaMessage::default()
    };
    let cases: Vec<(KafkaFormat, Vec<u8>, KafkaHeaders)> = vec![
        (KafkaFormat::Json, b"not json".to_vec(), vec![]),
        (KafkaFormat::Heka, b"\x0a\xff\xff".to_vec(), vec![]),
        (
            KafkaFormat::Heka,
            prost::Message::encode_to_vec(&not_heka),
            vec![],
        ),
        (
            KafkaFormat::Raw,
            b"payload".to_vec(),
            vec![
                ("ok".to_string(), b"v".to_vec()),
                ("bad".to_string(), vec![0xff, 0xfe]),
            ],
        ),
    ];
    for (format, value, h) in cases {
        let d: DeadLetter = decode_record(format, Some(&value), headers(&h), position())
            .expect_err("a dead letter");
        assert_eq!(d.error_type, "ReadInput", "{format:?}");
        assert_eq!(
            &d.original.payload[..],
            &value[..],
            "{format:?}: raw value kept"
        );
        assert_eq!(d.source_position["kafka_topic"], "raw");
        assert_eq!(d.source_position["kafka_partition"], "1");
        assert_eq!(d.source_position["kafka_offset"], "7");
        assert!(!d.error_message.is_empty());
    }
    let d = decode_record(
        KafkaFormat::Raw,
        Some(b"p"),
        [(Some("bad"), Some(&[0xffu8][..]))],
        position(),
    )
    .unwrap_err();
    assert_eq!(d.error_message, "header `bad` is not UTF-8");
    // a tombstone (no value) is an empty payload
    let m = decode_record(KafkaFormat::Raw, None, [], position()).unwrap();
    assert!(m.payload.is_empty());
}

#[test]
fn topic_names_follow_kafka_rules() {
    assert_eq!(topic_name_error("raw-telemetry_1.x"), None);
    for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
        assert!(topic_name_error(bad).is_some(), "{bad:?}");
    }
}

/// A mock cluster with one broker and a topic of `partitions` partitions.
fn cluster(topic: &str, partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(1).unwrap();
    c.create_topic(topic, partitions, 1).unwrap();
    c
}

fn produce(brokers: &str, topic: &str, messages: &[Message]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (i, m) in messages.iter().enumerate() {
        let (value, h) = encode_record(KafkaFormat::Raw, m).unwrap();
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &h {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        let key = i.to_string();
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Every record of `topic`, read from the start with an independent consumer.
fn read_back(brokers: &str, topic: &str) -> Vec<(Message, i32)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "read-back")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while remaining > 0 {
        let m = consumer
            .poll(Duration::from_secs(10))
            .expect("a record before the timeout")
            .unwrap();
        let h = m
            .headers()
            .map(|h| h.iter().map(|h| (Some(h.key), h.value)).collect::<Vec<_>>())
            .unwrap_or_default();
        let msg = decode_record(KafkaFormat::Raw, m.payload(), h, position()).unwrap();
        out.push((
            Message::new(msg.payload).with_attributes(msg.attributes),
            m.partition(),
        ));
        remaining -= 1;
    }
    out
}

fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    c.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_sink_writes_values_and_headers_and_refuses_what_kafka_cannot_take() {
    let c = cluster("raw-telemetry", 2);
    c.create_topic("raw-glean", 1, 1).unwrap();
    let brokers = c.bootstrap_servers();
    let mut config = KafkaSinkConfig::new(
        &brokers,
        PathTemplate::parse("raw-${document_namespace:-unknown}").unwrap(),
    );
    config.max_message_bytes = 1000;
    let sink = config.sink();
    let good: Vec<Message> = (0..30)
        .map(|i| {
            Message::new(format!("{{\"n\":{i}}}"))
                .with_attribute("document_namespace", ["telemetry", "glean"][i % 2])
                .with_attribute("n", i.to_string())
        })
        .collect();
    let too_large = Message::new(vec![b'x'; 2000]).with_attribute("document_namespace", "glean");
    let bad_topic = Message::new("{}").with_attribute("document_namespace", "no such!");
    let mut input = good.clone();
    input.insert(3, too_large.clone());
    input.insert(9, bad_topic.clone());
    let (out_dead, s) = (MemorySink::<DeadLetter>::new(), sink.clone());
    let d = out_dead.clone();
    Pipeline::new("sink")
        .workers(2)
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", sluice::MemorySource::from(input.clone()))
                .write("write", s.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    let mut refused: Vec<Message> = out_dead.records().into_iter().map(|d| d.original).collect();
    refused.sort();
    let mut expected = vec![too_large, bad_topic];
    expected.sort();
    assert_eq!(refused, expected);
    let reasons: Vec<String> = out_dead
        .records()
        .into_iter()
        .map(|d| d.error_message)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("exceeds the limit of 1000 bytes")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not a kafka topic name")),
        "{reasons:?}"
    );

    let mut written: Vec<Message> = read_back(&brokers, "raw-telemetry")
        .into_iter()
        .chain(read_back(&brokers, "raw-glean"))
        .map(|(m, _)| m)
        .collect();
    written.sort();
    let mut good = good;
    good.sort();
    assert_eq!(written, good);
}

#[test]
fn a_bounded_source_reads_everything_once_and_commits_where_it_stopped() {
    let c = cluster("in", 3);
    let brokers = c.bootstrap_servers();
    let input: Vec<Message> = (0..50)
        .map(|i| Message::new(format!("{i}")).with_attribute("n", i.to_string()))
        .collect();
    produce(&brokers, "in", &input);
    let run = |workers: usize| {
        let mut config = KafkaSourceConfig::new(&brokers, &["in"], "g");
        config.stop_at_end = true;
        let source = config.source();
        let (out, dead) = (
            MemorySink::<Message>::new(),
            MemorySink::<DeadLetter>::new(),
        );
        let (o, d) = (out.clone(), dead.clone());
        Pipeline::new("read")
            .workers(workers)
            .run(move |p| {
                let mut dl = p.dead_letters();
                p.read_with_failures("read", source.clone())
                    .failures_to(&mut dl)
                    .write("write", o.clone());
                dl.write("dead_letters", d.clone());
                Ok(())
            })
            .unwrap();
        assert!(dead.is_empty());
        out.records()
    };
    let mut first = run(2);
    for m in &first {
        assert!(
            matches!(m.position, Some(SourcePosition::Kafka { ref topic, .. }) if &**topic == "in")
        );
    }
    first.sort();
    let mut expected = input.clone();
    expected.sort();
    assert_eq!(first, expected);
    let offsets = committed(&brokers, "g", "in", 3);
    assert_eq!(offsets.values().sum::<i64>(), 50, "{offsets:?}");
    // everything was committed: a second run reads nothing
    assert!(run(1).is_empty());
}

#[test]
fn checks_find_a_missing_topic_and_unreachable_brokers_before_reading() {
    let c = cluster("there", 1);
    let brokers = c.bootstrap_servers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ctx = sluice::CheckContext::new(runtime.handle().clone());
    use sluice::{Sink as _, Source as _};
    KafkaSourceConfig::new(&brokers, &["there"], "g")
        .source()
        .check(&ctx)
        .unwrap();
    let e = KafkaSourceConfig::new(&brokers, &["there", "missing"], "g")
        .source()
        .check(&ctx)
        .unwrap_err();
    assert_eq!(e.to_string(), "kafka topic `missing` does not exist");
    KafkaSinkConfig::new(&brokers, PathTemplate::parse("there").unwrap())
        .sink()
        .check(&ctx)
        .unwrap();
    // a templated topic: only the brokers are checked
    KafkaSinkConfig::new(&brokers, PathTemplate::parse("raw-${x:-y}").unwrap())
        .sink()
        .check(&ctx)
        .unwrap();
    // nothing listens on port 1
    let e = KafkaSourceConfig::new("127.0.0.1:1", &["there"], "g")
        .source()
        .check(&ctx)
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot reach kafka brokers `127.0.0.1:1`"),
        "{e}"
    );
}
