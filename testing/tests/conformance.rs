//! The conformance suites against the SDK's memory doubles (the connectors run them in their
//! own crates' tests, against their real services too).

use sluice::{MemorySink, MemorySource, Message};
use sluice_testing::conformance::{
    sink_conformance, source_conformance, SinkUnderTest, SourceUnderTest,
};

#[test]
fn the_memory_sink_conforms() {
    sink_conformance("memory sink", || {
        let sink = MemorySink::<Message>::new();
        let read = sink.clone();
        SinkUnderTest::new(sink, move || read.records())
    });
}

#[test]
fn a_refusing_memory_sink_conforms() {
    sink_conformance("refusing memory sink", || {
        let sink = MemorySink::rejecting(|m: &Message| {
            (m.attribute("poison").is_some()).then(|| "poisoned".to_string())
        });
        let read = sink.clone();
        SinkUnderTest::new(sink, move || read.records())
            .refusing(Message::new("bad").with_attribute("poison", "yes"))
    });
}

#[test]
fn the_memory_source_conforms() {
    source_conformance("memory source", |records: &[Message]| {
        let source = MemorySource::from(records.to_vec());
        SourceUnderTest::resuming(move || source.clone())
    });
}

#[test]
fn the_memory_source_with_explicit_epochs_conforms() {
    source_conformance("memory source (epochs)", |records: &[Message]| {
        let source =
            MemorySource::from_epochs(records.chunks(3).map(<[Message]>::to_vec).collect());
        SourceUnderTest::resuming(move || source.clone())
    });
}
