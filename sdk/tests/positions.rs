//! Source positions travel with their messages across worker exchanges that serialize like a
//! cluster (timely's `ProcessBinary`), so a dead letter made after an exchange still names
//! where its record was read.

use std::sync::Arc;

use sluice::{
    Failure, MemorySink, MemorySource, Message, Pipeline, PubSubPosition, SourcePosition,
};

fn positioned(n: u64) -> Vec<Message> {
    let file: Arc<str> = Arc::from("in/a.ndjson");
    (0..n)
        .map(|i| {
            let position = match i % 3 {
                0 => SourcePosition::Line {
                    file: Some(file.clone()),
                    line: i + 1,
                },
                1 => SourcePosition::Kafka {
                    topic: Arc::from("raw"),
                    partition: 1,
                    offset: i as i64,
                },
                _ => SourcePosition::PubSub(Box::new(PubSubPosition {
                    subscription: Arc::from("projects/p/subscriptions/s"),
                    message_id: Arc::from(i.to_string()),
                    publish_time: Some(Arc::from("2026-12-04T00:00:00Z")),
                    delivery_attempt: Some(1),
                })),
            };
            Message::new(i.to_string()).with_position(position)
        })
        .collect()
}

#[test]
fn positions_survive_a_serializing_rebalance() {
    let input = positioned(60);
    let expected: Vec<(String, Option<SourcePosition>)> = input
        .iter()
        .map(|m| {
            (
                String::from_utf8(m.payload.to_vec()).unwrap(),
                m.position.clone(),
            )
        })
        .collect();
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    // Two workers each read half of the epochs, and rebalance sends about half of each
    // worker's records to the other one through bincode.
    let epochs: Vec<Vec<Message>> = input.chunks(5).map(<[Message]>::to_vec).collect();
    let source = MemorySource::from_epochs(epochs);
    Pipeline::new("positions")
        .workers(2)
        .serialize_exchanges()
        .stack_traces(false)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", source.clone())
                .rebalance()
                .try_map("Odd", |m: &Message| {
                    let n: u64 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                    if n.is_multiple_of(2) {
                        Ok(m.clone())
                    } else {
                        Err(Failure::new("odd"))
                    }
                })
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();

    let mut got: Vec<(String, Option<SourcePosition>)> = out
        .records()
        .into_iter()
        .map(|m| (String::from_utf8(m.payload.to_vec()).unwrap(), m.position))
        .collect();
    got.sort_by_key(|(p, _)| p.parse::<u64>().unwrap());
    let even: Vec<_> = expected
        .iter()
        .filter(|(p, _)| p.parse::<u64>().unwrap().is_multiple_of(2))
        .cloned()
        .collect();
    assert_eq!(got, even);

    let dead = dead.records();
    assert_eq!(dead.len(), 30);
    for dl in dead {
        let n: u64 = std::str::from_utf8(&dl.original.payload)
            .unwrap()
            .parse()
            .unwrap();
        let position = expected[n as usize].1.clone().unwrap();
        assert_eq!(dl.original.position.as_ref(), Some(&position));
        assert_eq!(dl.source_position, position.to_attributes());
    }
}
