use std::collections::BTreeMap;

use sluice::Message;

use super::*;
use crate::io::object::{Compression, PathTemplate};

fn sink(template: &str) -> PubsubSink {
    PubsubSink::memory(&MemoryPubsub::new(), PathTemplate::parse(template).unwrap())
}

fn refusal(s: &PubsubSink, m: &Message) -> Option<PubsubRefusal> {
    s.prepare(m, &mut String::new()).err()
}

#[test]
fn limits_are_refusals_with_reasons() {
    let s = sink("projects/p/topics/out");
    let many: BTreeMap<String, String> = (0..101).map(|i| (format!("k{i}"), "v".into())).collect();
    assert!(matches!(
        refusal(&s, &Message::new("x").with_attributes(many)),
        Some(PubsubRefusal::TooManyAttributes { count: 101 })
    ));
    let at_limit: BTreeMap<String, String> =
        (0..100).map(|i| (format!("k{i}"), "v".into())).collect();
    assert!(refusal(&s, &Message::new("x").with_attributes(at_limit)).is_none());
    let long = Message::new("x").with_attribute("uri", "u".repeat(1500));
    let r = refusal(&s, &long).unwrap();
    assert!(r.to_string().contains("`uri` is 1500 bytes"), "{r}");
    assert!(refusal(
        &s,
        &Message::new("x").with_attribute("uri", "u".repeat(1024))
    )
    .is_none());
    let long_key = Message::new("x").with_attribute("k".repeat(300), "v");
    assert!(matches!(
        refusal(&s, &long_key),
        Some(PubsubRefusal::AttributeKeyTooLong { bytes: 300, .. })
    ));
    assert!(matches!(
        refusal(&s, &Message::new(vec![b'a'; 7_000_001])),
        Some(PubsubRefusal::TooLarge {
            bytes: 7_000_001,
            max: 7_000_000
        })
    ));
    assert!(matches!(
        refusal(&s, &Message::new("")),
        Some(PubsubRefusal::Empty)
    ));
    assert!(refusal(&s, &Message::new("").with_attribute("a", "b")).is_none());
}

#[test]
fn gzip_counts_the_published_size() {
    let s = sink("projects/p/topics/out")
        .compression(Compression::Gzip)
        .max_message_bytes(100_000);
    // compresses far below the limit
    let m = Message::new(vec![b'a'; 1_000_000]);
    let data = s.prepare(&m, &mut String::new()).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut back).unwrap();
    assert_eq!(back, m.payload);
    // does not compress: refused with its compressed size
    let mut x: u64 = 1;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert!(matches!(
        refusal(&s, &Message::new(noise)),
        Some(PubsubRefusal::TooLarge { max: 100_000, .. })
    ));
}

#[test]
fn rendered_topics_must_be_topic_names() {
    let s = sink("projects/p/topics/decoded-${document_type:-unknown}");
    let mut topic = String::new();
    s.prepare(
        &Message::new("x").with_attribute("document_type", "main"),
        &mut topic,
    )
    .unwrap();
    assert_eq!(topic, "projects/p/topics/decoded-main");
    // a `/` in a value is sanitised to `_`; a space is not a topic character
    let bad = Message::new("x").with_attribute("document_type", "a b");
    let r = refusal(&s, &bad).unwrap();
    assert!(matches!(r, PubsubRefusal::BadTopic { .. }), "{r}");
    let s = sink("projects/p/topics/${document_type:-x}");
    assert!(matches!(
        refusal(&s, &Message::new("x")),
        Some(PubsubRefusal::BadTopic { .. })
    ));
}

#[test]
fn resource_names() {
    assert!(check_resource_name("projects/p/topics/abc", "topics").is_ok());
    for bad in [
        "projects/p/topics/ab",
        "projects/p/topics/1abc",
        "projects/p/topics/googabc",
        "projects/p/topics/a/b",
        "projects/p/subscriptions/abc",
        "topics/abc",
    ] {
        assert!(check_resource_name(bad, "topics").is_err(), "{bad}");
    }
}

#[test]
fn the_double_redelivers_after_nack_and_lease_expiry() {
    let ps = MemoryPubsub::new();
    ps.create_subscription("projects/p/subscriptions/s", "projects/p/topics/t");
    for i in 0..3 {
        ps.publish("projects/p/topics/t", Message::new(format!("{i}")))
            .unwrap();
    }
    let sub = "projects/p/subscriptions/s";
    let first = ps.pull(sub, 3).unwrap();
    ps.expire_leases(sub);
    // the old ack id no longer acks
    ps.ack(sub, first[0].0);
    assert_eq!(ps.unacked(sub), 3);
    let second = ps.pull(sub, 3).unwrap();
    assert!(second.iter().all(|(_, _, attempt)| *attempt == 2));
    for (id, _, _) in second.iter().rev() {
        ps.ack(sub, *id);
    }
    assert_eq!(ps.unacked(sub), 0);
    assert_eq!(ps.acked(sub).len(), 3);
}
