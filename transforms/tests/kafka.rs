//! The Kafka source and sink against the shared conformance suites, on librdkafka's mock
//! cluster (always) and on the real broker (when `SLUICE_TEST_KAFKA_BROKERS` is set; the test
//! command starts tansu and sets it). Each run makes its own topics and consumer groups.

mod kafka_support;

use kafka_support::{committed, end_offsets, produce, read_back, unique, Broker};
use sluice::{DeadLetter, MemorySink, Message, Pipeline};
use sluice_testing::conformance::{
    sink_conformance, source_conformance, SinkUnderTest, SourceUnderTest,
};
use sluice_transforms::io::kafka::{KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
use sluice_transforms::io::object::PathTemplate;

/// A record over the sink's 10 kB limit: refused to the dead letters.
fn too_large() -> Message {
    Message::new(vec![b'x'; 20_000]).with_attribute("document_namespace", "telemetry")
}

fn sink_suite(name: &str, broker: &Broker) {
    let brokers = broker.brokers();
    sink_conformance(name, || {
        let topic = unique("sink");
        broker.create_topic(&topic, 2);
        let mut config = KafkaSinkConfig::new(&brokers, PathTemplate::parse(&topic).unwrap());
        config.max_message_bytes = 10_000;
        config.options.extend(broker.producer_options());
        let b = brokers.clone();
        SinkUnderTest::new(config.sink(), move || read_back(&b, &topic)).refusing(too_large())
    });
}

fn source_suite(name: &str, broker: &Broker) {
    let brokers = broker.brokers();
    source_conformance(name, |records: &[Message]| {
        let topic = unique("source");
        broker.create_topic(&topic, 3);
        produce(&brokers, &topic, records);
        let group = unique("group");
        let b = brokers.clone();
        SourceUnderTest::resuming(move || {
            let mut config = KafkaSourceConfig::new(&b, &[topic.as_str()], &group);
            config.stop_at_end = true;
            config.source()
        })
    });
}

#[test]
fn sink_conformance_on_the_mock_cluster() {
    sink_suite("kafka sink (mock cluster)", &Broker::mock());
}

#[test]
fn source_conformance_on_the_mock_cluster() {
    source_suite("kafka source (mock cluster)", &Broker::mock());
}

#[test]
fn sink_conformance_on_the_broker() {
    if let Some(broker) = Broker::real("sink_conformance_on_the_broker") {
        sink_suite("kafka sink (broker)", &broker);
    }
}

#[test]
fn source_conformance_on_the_broker() {
    if let Some(broker) = Broker::real("source_conformance_on_the_broker") {
        source_suite("kafka source (broker)", &broker);
    }
}

/// The committed offsets stop at the end offsets the run started with, and a bounded source
/// with records beyond them does not read those.
fn bounded_read_commits_its_end(broker: &Broker) {
    let brokers = broker.brokers();
    let topic = unique("ends");
    broker.create_topic(&topic, 2);
    let input: Vec<Message> = (0..40)
        .map(|i| Message::new(format!("{i}")).with_attribute("n", i.to_string()))
        .collect();
    produce(&brokers, &topic, &input);
    let group = unique("group");
    let mut config = KafkaSourceConfig::new(&brokers, &[topic.as_str()], &group);
    config.stop_at_end = true;
    let run = |source: KafkaSource| {
        let out = MemorySink::<Message>::new();
        let o = out.clone();
        Pipeline::new("bounded")
            .workers(2)
            .run(move |p| {
                let mut dl = p.dead_letters();
                p.read_with_failures("read", source.clone())
                    .failures_to(&mut dl)
                    .write("write", o.clone());
                dl.write("dead_letters", MemorySink::<DeadLetter>::new());
                Ok(())
            })
            .unwrap();
        out.records()
    };
    assert_eq!(run(config.source()).len(), 40);
    assert_eq!(
        committed(&brokers, &group, &topic, 2),
        end_offsets(&brokers, &topic, 2)
    );
    let more: Vec<Message> = (40..50).map(|i| Message::new(format!("{i}"))).collect();
    produce(&brokers, &topic, &more);
    let mut second: Vec<Message> = run(config.source());
    second.sort();
    let mut more = more;
    more.sort();
    assert_eq!(
        second, more,
        "a rerun reads only what came after the commit"
    );
}

#[test]
fn a_bounded_read_commits_its_end_on_the_mock_cluster() {
    bounded_read_commits_its_end(&Broker::mock());
}

#[test]
fn a_bounded_read_commits_its_end_on_the_broker() {
    if let Some(broker) = Broker::real("a_bounded_read_commits_its_end_on_the_broker") {
        bounded_read_commits_its_end(&broker);
    }
}
