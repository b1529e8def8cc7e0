//! The `kafka` source and sink sections: parsed into their connectors' configs, every error
//! reported with its key path, all at once, before any connection.

use std::path::Path;

use sluice_pipelines::config::{self, ConfigErrors, Overrides, SinkConfig, SourceConfig};
use sluice_pipelines::jobs;

const KAFKA: &str = r#"
job = "decoder"
[source]
type = "kafka"
brokers = "127.0.0.1:1"
topics = ["telemetry-raw"]
group_id = "sluice-decoder"
format = "heka"
[decoder]
schemas = "schemas/json"
[sink]
type = "kafka"
brokers = "127.0.0.1:1"
topic = "decoded-${document_namespace:-unknown}"
[dead_letter]
type = "kafka"
brokers = "127.0.0.1:1"
topic = "errors"
"#;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn errors(text: &str) -> ConfigErrors {
    std::env::set_current_dir(root()).unwrap();
    config::parse_str(text, &Overrides::new()).expect_err("config should be rejected")
}

fn assert_one(errors: &ConfigErrors, key: &str, needle: &str) {
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.key == key && e.message.contains(needle)),
        "no error at `{key}` containing {needle:?} in:\n{errors}"
    );
}

#[test]
fn kafka_sections_parse_and_check_without_connecting() {
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(KAFKA, &Overrides::new()).unwrap();
    assert!(matches!(&job.source, SourceConfig::Kafka(s) if s.topics == ["telemetry-raw"]));
    assert!(matches!(&job.sink, SinkConfig::Kafka(_)));
    assert!(matches!(&job.dead_letter.sink, SinkConfig::Kafka(_)));
    // no broker listens on port 1: plain checks connect to nothing
    jobs::check(&job).unwrap();
    let text = toml::to_string(&job).unwrap();
    assert_eq!(config::parse_str(&text, &Overrides::new()).unwrap(), job);
}

#[test]
fn every_kafka_error_names_its_key_at_once() {
    let text = KAFKA
        .replace("topics = [\"telemetry-raw\"]", "topics = []")
        .replace(
            "format = \"heka\"",
            "format = \"avro\"\n[source.options]\n\"enable.auto.commit\" = \"true\"",
        )
        .replace(
            "topic = \"decoded-${document_namespace:-unknown}\"",
            "topic = \"decoded-${document_namespace}\"\nmax_message_bytes = 0",
        )
        .replace("topic = \"errors\"", "topik = \"errors\"");
    let e = errors(&text);
    assert_one(&e, "source.topics", "at least one topic");
    assert_one(
        &e,
        "source.format",
        "expected one of \"raw\", \"json\", \"heka\"",
    );
    assert_one(
        &e,
        "source.options",
        "option `enable.auto.commit` is set by sluice",
    );
    assert_one(&e, "sink.topic", "without a default");
    assert_one(&e, "sink.max_message_bytes", "above zero");
    assert_one(&e, "dead_letter.topik", "unknown key");
    assert_one(&e, "dead_letter.topic", "missing required key");
}

#[test]
fn overrides_reach_kafka_keys() {
    std::env::set_current_dir(root()).unwrap();
    let o = Overrides::new()
        .set("source.brokers=kafka-1:9092")
        .set("source.stop_at_end=true");
    let job = config::parse_str(KAFKA, &o).unwrap();
    let SourceConfig::Kafka(s) = job.source else {
        panic!("a kafka source")
    };
    assert_eq!(s.brokers, "kafka-1:9092");
    assert!(s.stop_at_end);
}
