//! `CountOutcomes`: the counts a pipeline keeps equal a recount of what its output and
//! dead-letter sinks received, on 1, 2 and 4 workers, with serialized exchanges and on a
//! 2-process cluster; minutes older than the retained hour are retracted while the totals stay,
//! and the counts' arrangement stays within the hour over a long stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::{
    Clock, CountOutcomes, DeadLetter, Deduplicate, Failure, Gauge, Message, OutcomeCounts,
    OutcomeKey, OutcomeSnapshot, Pipeline, PipelineBuilder,
};
use sluice_testing::cluster::{run_two_process_cluster, ClusterChild};
use sluice_testing::{MemorySink, MemorySource, TestPipeline, UnboundedMemorySource};

/// One minute for the whole run: the per-minute counts must then equal the totals.
const MINUTE: i64 = 26_000_000;

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

fn build(
    p: &mut PipelineBuilder<'_>,
    source: MemorySource<Message>,
    out: MemorySink<Message>,
    dead: MemorySink<DeadLetter>,
) {
    let clock = Clock::from_fn(|| MINUTE * 60_000);
    let mut dead_letters = p.dead_letters();
    p.read("read", source)
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
        .write("write", out);
    let all = dead_letters
        .into_pcollection()
        .apply("count_dead", CountOutcomes::new().with_clock(clock));
    let mut dl = sluice::DeadLetters::for_pipeline_of(&all);
    dl.push(all);
    dl.write("dead_letters", dead);
}

/// The counts of what the sinks received.
fn recount(out: &[Message], dead: &[(Message, String)]) -> BTreeMap<OutcomeKey, u64> {
    let mut recount: BTreeMap<OutcomeKey, u64> = BTreeMap::new();
    for m in out {
        *recount.entry(OutcomeKey::of(m, "decoded")).or_default() += 1;
    }
    for (original, error_type) in dead {
        *recount
            .entry(OutcomeKey::of(original, error_type))
            .or_default() += 1;
    }
    let outcomes: Vec<&str> = recount.keys().map(|k| k.outcome.as_str()).collect();
    assert!(outcomes.contains(&"Duplicate") && outcomes.contains(&"OddPayload"));
    assert!(recount.keys().any(|k| k.namespace == "decoded-ns"));
    assert_eq!(recount.values().sum::<u64>(), 3_000);
    recount
}

fn assert_counts(counted: &OutcomeSnapshot, recount: &BTreeMap<OutcomeKey, u64>, what: &str) {
    assert_eq!(&counted.totals, recount, "{what}: totals");
    assert_eq!(counted.minutes.len(), 1, "{what}: one minute");
    assert_eq!(
        counted.minutes.get(&MINUTE),
        Some(recount),
        "{what}: the minute"
    );
}

fn run(tp: TestPipeline, what: &str) {
    let out = MemorySink::<Message>::new();
    let dead = MemorySink::<DeadLetter>::new();
    let (o, d) = (out.clone(), dead.clone());
    let source = MemorySource::from(input());
    let metrics = tp.pipeline().metrics();
    tp.run(move |p| {
        build(p, source.clone(), o.clone(), d.clone());
        Ok(())
    })
    .unwrap();
    let dead: Vec<(Message, String)> = dead
        .records()
        .into_iter()
        .map(|d| (d.original, d.error_type))
        .collect();
    let recount = recount(&out.records(), &dead);
    assert_counts(&metrics.outcomes().snapshot(), &recount, what);
    let s = metrics.snapshot();
    for step in ["count", "count_dead"] {
        assert_eq!(
            s.gauges.get(&(Gauge::OutcomeEntries, step.to_string())),
            Some(&0),
            "{what}: a finished step gives its state back"
        );
    }
}

#[test]
fn counts_equal_a_recount_of_the_sinks_on_1_2_and_4_workers() {
    for workers in [1, 2, 4] {
        run(
            TestPipeline::new().workers(workers),
            &format!("{workers} workers"),
        );
    }
    run(
        TestPipeline::new().workers(2).serialize_exchanges(),
        "2 workers, serialized exchanges",
    );
}

const CHILD: &str = "SLUICE_COUNTS_CLUSTER_CHILD";

/// Runs as one process of the cluster when the parent test starts this binary with `CHILD` set:
/// writes what its sinks received and its process's counts.
#[test]
fn cluster_child() {
    let Some(ClusterChild {
        process,
        addresses,
        out_file,
    }) = ClusterChild::from_env(CHILD)
    else {
        return;
    };
    // the same input in each process: worker `w` of the cluster reads records `w % peers`
    let source = MemorySource::from(input());
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let pipeline = Pipeline::new("counts-cluster")
        .stack_traces(false)
        .cluster(process, addresses);
    let metrics = pipeline.metrics();
    pipeline
        .run(move |p| {
            build(p, source.clone(), o.clone(), d.clone());
            Ok(())
        })
        .expect("cluster pipeline runs");
    let mut text = String::new();
    for m in out.records() {
        text.push_str(&format!("out {}\n", m.to_json_line()));
    }
    for dl in dead.records() {
        let original = dl.original.with_attribute("error_type", &dl.error_type);
        text.push_str(&format!("dead {}\n", original.to_json_line()));
    }
    let counted = metrics.outcomes().snapshot();
    let key = |k: &OutcomeKey| {
        [&k.namespace, &k.doctype, &k.version, &k.outcome]
            .map(|s| s.as_str())
            .join("\t")
    };
    for (minute, counts) in &counted.minutes {
        for (k, n) in counts {
            text.push_str(&format!("minute {minute}\t{}\t{n}\n", key(k)));
        }
    }
    for (k, n) in &counted.totals {
        text.push_str(&format!("total {}\t{n}\n", key(k)));
    }
    std::fs::write(out_file, text).unwrap();
}

/// On two processes every key is counted in the process of the worker that owns it: the
/// processes' counts are disjoint, and together they equal a recount of both processes' sinks.
#[test]
fn counts_equal_a_recount_of_the_sinks_on_a_two_process_cluster() {
    let dir = std::env::temp_dir().join(format!("sluice-counts-cluster-{}", std::process::id()));
    let outputs = run_two_process_cluster("cluster_child", CHILD, &dir);
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let mut counted = OutcomeSnapshot::default();
    let mut per_process: Vec<usize> = Vec::new();
    for file in outputs {
        let mut totals = 0;
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let (kind, json) = line.split_once(' ').unwrap();
            let fields: Vec<&str> = json.split('\t').collect();
            let key = |f: &[&str]| OutcomeKey {
                namespace: f[0].to_string(),
                doctype: f[1].to_string(),
                version: f[2].to_string(),
                outcome: f[3].to_string(),
            };
            match kind {
                "out" => out.push(Message::from_json_line(json.as_bytes()).unwrap()),
                "dead" => {
                    let m = Message::from_json_line(json.as_bytes()).unwrap();
                    let error_type = m.attribute("error_type").unwrap().to_string();
                    dead.push((m, error_type));
                }
                "minute" => {
                    let n: u64 = fields[5].parse().unwrap();
                    let minutes = counted
                        .minutes
                        .entry(fields[0].parse().unwrap())
                        .or_default();
                    assert!(
                        minutes.insert(key(&fields[1..]), n).is_none(),
                        "a key's minute is counted in one process"
                    );
                }
                "total" => {
                    let n: u64 = fields[4].parse().unwrap();
                    assert!(
                        counted.totals.insert(key(&fields), n).is_none(),
                        "a key is counted in one process"
                    );
                    totals += 1;
                }
                _ => panic!("unexpected line {line}"),
            }
        }
        per_process.push(totals);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        per_process.iter().all(|n| *n > 0),
        "both processes own keys: {per_process:?}"
    );
    assert_counts(&counted, &recount(&out, &dead), "2 processes");
}

/// A job on a clock that moves: counts of minute 0 and minute 30; at minute 61 minute 0 is
/// retracted with no record arriving (the step expires on its own while idle), minute 30 stays;
/// at minute 121 minute 30 is gone too; the totals keep everything all along.
#[test]
fn minutes_older_than_the_retained_hour_are_retracted_while_totals_remain() {
    // the test's minutes assume an hour
    const _: () = assert!(OutcomeCounts::RETAINED_MINUTES == 60);
    let start = MINUTE * 60_000;
    let now = Arc::new(AtomicI64::new(start));
    let clock_now = now.clone();
    let clock = Clock::from_fn(move || clock_now.load(Ordering::SeqCst));
    let (source, feeder) = UnboundedMemorySource::<Message>::new();
    let out = MemorySink::<Message>::new();
    let o = out.clone();
    let tp = TestPipeline::new().workers(2);
    let metrics = tp.pipeline().metrics();
    let job = std::thread::spawn(move || {
        tp.run(move |p| {
            p.read("read", source.clone())
                .apply("count", CountOutcomes::new().with_clock(clock.clone()))
                .write("write", o.clone());
            Ok(())
        })
    });
    let a = Message::new("").with_attribute("uri", "/submit/ns/a/1/x");
    let b = Message::new("").with_attribute("uri", "/submit/ns/b/1/x");
    let (ka, kb) = (OutcomeKey::of(&a, "decoded"), OutcomeKey::of(&b, "decoded"));
    let counts = || metrics.outcomes().snapshot();
    let wait_for = |what: &str, f: &dyn Fn(&OutcomeSnapshot) -> bool| {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let s = counts();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < until, "gave up waiting for {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let minute = |m: i64, entries: &[(&OutcomeKey, u64)]| {
        (
            MINUTE + m,
            entries
                .iter()
                .map(|(k, n)| ((*k).clone(), *n))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    let totals = |a: u64, b: u64| {
        [(ka.clone(), a), (kb.clone(), b)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>()
    };

    feeder.push(std::iter::repeat_n(a.clone(), 10));
    wait_for("minute 0", &|s| s.totals == totals(10, 0));
    now.store(start + 30 * 60_000, Ordering::SeqCst);
    feeder.push(std::iter::repeat_n(b.clone(), 5));
    let s = wait_for("minute 30", &|s| s.totals == totals(10, 5));
    assert_eq!(
        s.minutes,
        BTreeMap::from([minute(0, &[(&ka, 10)]), minute(30, &[(&kb, 5)])])
    );

    // idle from here on: only the clock moves
    now.store(start + 61 * 60_000, Ordering::SeqCst);
    let s = wait_for("minute 0 retracted", &|s| s.minutes.len() == 1);
    assert_eq!(s.minutes, BTreeMap::from([minute(30, &[(&kb, 5)])]));
    assert_eq!(s.totals, totals(10, 5), "totals are never retracted");

    now.store(start + 121 * 60_000, Ordering::SeqCst);
    feeder.push([a.clone()]);
    let s = wait_for("minute 30 retracted", &|s| {
        s.totals == totals(11, 5) && s.minutes.len() == 1
    });
    assert_eq!(s.minutes, BTreeMap::from([minute(121, &[(&ka, 1)])]));

    feeder.close();
    job.join().unwrap().unwrap();
    assert_eq!(out.len(), 16);
    let s = counts();
    assert_eq!(s.totals, totals(11, 5));
    assert_eq!(s.minutes, BTreeMap::from([minute(121, &[(&ka, 1)])]));
}

/// 600 minutes of a stream of two keys, 50 records a minute, on a clock that moves with the
/// stream: the counts' arrangement, as differential reports its size, stays within a few
/// hours' worth of entries (two keys' 60 minutes and totals, plus retractions not yet merged
/// away), where a state that never forgot would hold 1,200 minutes' counts; only the last hour
/// is left at the end, and the totals hold every record.
#[test]
fn the_counts_state_stays_within_the_hour_over_a_long_stream() {
    const MINUTES: i64 = 600;
    const PER_MINUTE: i64 = 50;
    let now = Arc::new(AtomicI64::new(0));
    let input: Vec<Vec<Message>> = (0..MINUTES)
        .map(|minute| {
            (0..PER_MINUTE)
                .map(|i| {
                    Message::new(minute.to_string())
                        .with_attribute("uri", format!("/submit/ns/doc{}/1/x", i % 2))
                })
                .collect()
        })
        .collect();
    let source = MemorySource::from_epochs(input);
    let tp = TestPipeline::new();
    let metrics = tp.pipeline().metrics();
    let peak = Arc::new(AtomicI64::new(0));
    let (clock_now, set_now, seen_peak, seen_metrics) =
        (now.clone(), now.clone(), peak.clone(), metrics.clone());
    let clock = Clock::from_fn(move || clock_now.load(Ordering::SeqCst));
    let out = MemorySink::<Message>::new();
    let o = out.clone();
    tp.run(move |p| {
        let (set_now, seen_peak, seen_metrics) =
            (set_now.clone(), seen_peak.clone(), seen_metrics.clone());
        p.read("read", source.clone())
            // the clock is the minute the record says
            .inspect(move |m: &Message| {
                let minute: i64 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                set_now.fetch_max((MINUTE + minute) * 60_000, Ordering::SeqCst);
            })
            .apply("count", CountOutcomes::new().with_clock(clock.clone()))
            .inspect(move |_: &Message| {
                let size = seen_metrics
                    .snapshot()
                    .gauges
                    .get(&(Gauge::OutcomeEntries, "count".to_string()))
                    .copied()
                    .unwrap_or(0);
                seen_peak.fetch_max(size, Ordering::SeqCst);
            })
            .write("write", o.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(out.len(), (MINUTES * PER_MINUTE) as usize);
    let s = metrics.outcomes().snapshot();
    assert_eq!(
        s.totals.values().sum::<u64>(),
        (MINUTES * PER_MINUTE) as u64
    );
    assert_eq!(s.totals.len(), 2);
    let last = MINUTE + MINUTES - 1;
    assert_eq!(
        s.minutes.keys().copied().collect::<Vec<_>>(),
        ((last - OutcomeCounts::RETAINED_MINUTES + 1)..=last).collect::<Vec<_>>(),
        "the last hour is left"
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (120..=600).contains(&peak),
        "peak arrangement size {peak}: within a few hours' worth of two keys (and the hour is used)"
    );
}
