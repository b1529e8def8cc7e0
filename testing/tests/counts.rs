//! `CountOutcomes`: the counts a pipeline keeps equal a recount of what its output and
//! dead-letter sinks received, on 1 and 3 workers.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice::{Clock, CountOutcomes, DeadLetter, Deduplicate, Failure, Message, OutcomeKey};
use sluice_testing::{MemorySink, MemorySource, TestPipeline};

fn input() -> Vec<Message> {
    (0..3_000u64)
        .map(|i| {
            // every 10th message is a copy of the one before it (same uri)
            let id = if i % 10 == 9 { i - 1 } else { i };
            let ns = ["telemetry", "activity-stream", "glean"][(id % 3) as usize];
            let dt = ["main", "event"][(id % 2) as usize];
            let uri = format!("/submit/{ns}/{dt}/{}/{id}", 1 + id % 4);
            let mut m = Message::new(format!("{i}"))
                .with_attribute("uri", uri)
                .with_attribute("submission_timestamp", "2020-01-01T00:00:00Z");
            if i % 7 == 0 {
                // decoded: the attributes win over the uri
                m = m.with_attribute("document_namespace", "decoded-ns");
            }
            m
        })
        .collect()
}

fn run(workers: usize) {
    let out = MemorySink::<Message>::new();
    let dead = MemorySink::<DeadLetter>::new();
    let (o, d) = (out.clone(), dead.clone());
    let source = MemorySource::from(input());
    let tp = TestPipeline::new().workers(workers);
    let metrics = tp.pipeline().metrics();
    // one minute for the whole run: the per-minute counts must then equal the totals
    let clock = Clock::from_fn(|| 26_000_000 * 60_000);
    tp.run(move |p| {
        let mut dead_letters = p.dead_letters();
        p.read("read", source.clone())
            .try_map("OddPayload", |m: &Message| {
                if m.payload.len() % 2 == 1 && m.payload.ends_with(b"3") {
                    Err(Failure::new("ends with 3"))
                } else {
                    Ok(m.clone())
                }
            })
            .failures_to(&mut dead_letters)
            .apply(
                "dedup",
                Deduplicate::new().with_window(Duration::from_secs(60)),
            )
            .failures_to(&mut dead_letters)
            .apply("count", CountOutcomes::new().with_clock(clock.clone()))
            .write("write", o.clone());
        let all = dead_letters
            .into_pcollection()
            .apply("count_dead", CountOutcomes::new().with_clock(clock.clone()));
        let mut dl = sluice::DeadLetters::for_pipeline_of(&all);
        dl.push(all);
        dl.write("dead_letters", d.clone());
        Ok(())
    })
    .unwrap();

    let mut recount: BTreeMap<OutcomeKey, u64> = BTreeMap::new();
    for m in out.records() {
        *recount.entry(OutcomeKey::of(&m, "decoded")).or_default() += 1;
    }
    for dl in dead.records() {
        *recount
            .entry(OutcomeKey::of(&dl.original, &dl.error_type))
            .or_default() += 1;
    }
    let outcomes: Vec<&str> = recount.keys().map(|k| k.outcome.as_str()).collect();
    assert!(outcomes.contains(&"Duplicate") && outcomes.contains(&"OddPayload"));
    assert!(recount.keys().any(|k| k.namespace == "decoded-ns"));
    let counted = metrics.outcomes().snapshot();
    assert_eq!(counted.totals, recount, "{workers} workers: totals");
    assert_eq!(counted.minutes.len(), 1);
    assert_eq!(
        counted.minutes.values().next().unwrap(),
        &recount,
        "{workers} workers: the minute"
    );
    assert_eq!(recount.values().sum::<u64>(), 3_000);
}

#[test]
fn counts_equal_a_recount_of_the_sinks_on_1_worker() {
    run(1);
}

#[test]
fn counts_equal_a_recount_of_the_sinks_on_3_workers() {
    run(3);
}
