//! At-least-once: the source acknowledges exactly the epochs whose records were durably written;
//! after a sink failure nothing is acknowledged that was not written, and a second run (the sink
//! recovered) writes what is missing.

use std::collections::BTreeSet;

use sluice::Error;
use sluice_testing::{FailingSink, MemorySink, MemorySource, TestPipeline};

fn epochs(n: u64, per_epoch: u64) -> Vec<Vec<u64>> {
    (0..n)
        .map(|e| (e * per_epoch..(e + 1) * per_epoch).collect())
        .collect()
}

#[test]
fn acknowledged_epochs_are_exactly_the_written_ones_and_a_rerun_completes() {
    let source = MemorySource::from_epochs(epochs(40, 25));
    let written = MemorySink::new();
    // writes 1..=5 succeed, the 6th fails, and so does every 6th after it
    let failing = FailingSink::every(6, written.clone());
    let (s, f) = (source.clone(), failing.clone());
    let result = TestPipeline::new().run(move |p| {
        p.read("read", s.clone()).write("write", f.clone());
        Ok(())
    });
    match result {
        Err(Error::Sink { step, source }) => {
            assert_eq!(step, "write");
            assert!(
                source.to_string().contains("injected write failure"),
                "{source}"
            );
        }
        other => panic!("expected a sink failure, got {other:?}"),
    }
    assert!(failing.failed_writes() >= 1);
    let acked: BTreeSet<u64> = source.acked().into_iter().collect();
    let durable: BTreeSet<u64> = written.records().into_iter().collect();
    assert!(
        acked.is_subset(&durable),
        "acknowledged but never written: {:?}",
        acked.difference(&durable).collect::<Vec<_>>()
    );
    assert!(
        !source.all_acked(),
        "the failed epoch must not be acknowledged"
    );

    // The sink recovers: a second run reads only what was not acknowledged.
    let healthy = written.clone();
    let s = source.clone();
    TestPipeline::new()
        .run(move |p| {
            p.read("read", s.clone()).write("write", healthy.clone());
            Ok(())
        })
        .expect("second run succeeds");
    assert!(source.all_acked());
    let all: BTreeSet<u64> = written.records().into_iter().collect();
    let expected: BTreeSet<u64> = (0..1000).collect();
    assert_eq!(all, expected, "nothing is missing after the rerun");
    let duplicates = written.len() - all.len();
    assert!(
        duplicates <= 1000,
        "duplicates are allowed (at-least-once) but bounded"
    );
}

#[test]
fn with_two_workers_acks_follow_durable_writes_too() {
    let source = MemorySource::from_epochs(epochs(30, 10));
    let written = MemorySink::new();
    let failing = FailingSink::every(7, written.clone());
    let (s, f) = (source.clone(), failing.clone());
    let result = TestPipeline::new().workers(2).run(move |p| {
        p.read("read", s.clone()).write("write", f.clone());
        Ok(())
    });
    assert!(matches!(result, Err(Error::Sink { .. })), "{result:?}");
    let acked: BTreeSet<u64> = source.acked().into_iter().collect();
    let durable: BTreeSet<u64> = written.records().into_iter().collect();
    assert!(acked.is_subset(&durable));
}

#[test]
fn a_clean_run_acknowledges_everything() {
    let source = MemorySource::from_epochs(epochs(10, 10));
    let written = MemorySink::new();
    let (s, w) = (source.clone(), written.clone());
    let summary = TestPipeline::new()
        .workers(2)
        .run(move |p| {
            p.read("read", s.clone()).write("write", w.clone());
            Ok(())
        })
        .unwrap();
    assert!(source.all_acked());
    assert_eq!(written.len(), 100);
    assert_eq!(summary.read.get("read"), Some(&100));
    assert_eq!(summary.written.get("write"), Some(&100));
}
