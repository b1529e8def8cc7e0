//! `Deduplicate`: an oracle against a plain model on 1, 2 and 4 workers, with serialized
//! exchanges and on a 2-process cluster; the window's memory bound on a long stream; an idle
//! stream's state shrinking on processing time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sluice::{
    Clock, Counter, DeadLetter, DedupTime, Deduplicate, Gauge, Message, Pipeline, PipelineBuilder,
};
use sluice_testing::cluster::{run_two_process_cluster, ClusterChild};
use sluice_testing::{MemorySink, MemorySource, TestPipeline, UnboundedMemorySource};

const WINDOW_MS: i64 = 1_000;

/// An RFC 3339 timestamp `ms` milliseconds after 2020-01-01T00:00:00Z (under a day).
fn timestamp(ms: i64) -> String {
    format!(
        "2020-01-01T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn message(uri: Option<&str>, ms: i64, payload: &str) -> Message {
    let m = Message::new(payload.to_string()).with_attribute("submission_timestamp", timestamp(ms));
    match uri {
        Some(u) => m.with_attribute("uri", u),
        None => m,
    }
}

/// The logic as a plain loop over the stream in event-time order: a message is a duplicate
/// when another message with its `uri` (kept or a duplicate) lies less than the window before
/// it, or at the same time and arrived before it; messages without `uri` pass.
fn model(input: &[Message]) -> (Vec<Message>, Vec<Message>) {
    let mut order: Vec<(i64, usize)> = input
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                chrono_free_millis(m.attribute("submission_timestamp").unwrap()),
                i,
            )
        })
        .collect();
    order.sort();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    for (t, i) in order {
        let m = &input[i];
        let Some(uri) = m.attribute("uri") else {
            out.push(m.clone());
            continue;
        };
        match last.insert(uri.to_string(), t) {
            Some(l) if t - l < WINDOW_MS => dead.push(m.clone()),
            _ => out.push(m.clone()),
        }
    }
    out.sort();
    dead.sort();
    (out, dead)
}

/// Reads back what [`timestamp`] wrote.
fn chrono_free_millis(ts: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    n(11..13) * 3_600_000 + n(14..16) * 60_000 + n(17..19) * 1000 + n(20..23)
}

fn dedup() -> Deduplicate {
    Deduplicate::new()
        .with_window(Duration::from_millis(WINDOW_MS as u64))
        // the whole stream: copies may arrive in any order across workers
        .with_lateness(Duration::from_secs(24 * 3600))
}

fn build(
    p: &mut PipelineBuilder<'_>,
    source: MemorySource<Message>,
    out: MemorySink<Message>,
    dead: MemorySink<DeadLetter>,
    transform: Deduplicate,
) {
    let mut dead_letters = p.dead_letters();
    p.read("read", source)
        .apply("dedup", transform)
        .failures_to(&mut dead_letters)
        .write("write", out);
    dead_letters.write("dead_letters", dead);
}

fn run(tp: TestPipeline, epochs: Vec<Vec<Message>>) -> (Vec<Message>, Vec<Message>) {
    let source = MemorySource::from_epochs(epochs);
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    tp.run(move |p| {
        build(p, source.clone(), o.clone(), d.clone(), dedup());
        Ok(())
    })
    .expect("pipeline runs");
    let dead = dead.sorted();
    for dl in &dead {
        assert_eq!(dl.error_type, "Duplicate");
        assert_eq!(dl.exception_class, "sluice::dedup::Duplicate");
    }
    let mut dead: Vec<Message> = dead.into_iter().map(|d| d.original).collect();
    dead.sort();
    (out.sorted(), dead)
}

/// Copies of a key come in groups: identical within a group (one time), groups a few windows
/// apart, so a copy after the window is kept; plus messages without a key.
fn arb_stream() -> impl Strategy<Value = Vec<Vec<Message>>> {
    let key = (1usize..4, 1usize..5, 0i64..500);
    (
        proptest::collection::vec(key, 1..40),
        0usize..10,
        proptest::collection::vec(1usize..30, 1..20),
    )
        .prop_flat_map(|(keys, keyless, cuts)| {
            let mut all = Vec::new();
            for (k, (groups, copies, jitter)) in keys.into_iter().enumerate() {
                let uri = format!("/submit/ns/doc/1/{k}");
                for g in 0..groups {
                    // groups two windows apart: a copy of the next group is after the window
                    let t = k as i64 * 10 * WINDOW_MS + g as i64 * (WINDOW_MS * 2) + jitter;
                    for _ in 0..copies {
                        all.push(message(Some(&uri), t, &format!("{k}-{g}")));
                    }
                }
            }
            for i in 0..keyless {
                all.push(message(None, i as i64, &format!("keyless-{i}")));
            }
            (Just(all).prop_shuffle(), Just(cuts))
        })
        .prop_map(|(all, cuts)| {
            let mut epochs = Vec::new();
            let mut rest = &all[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at((*c).min(rest.len()));
                epochs.push(head.to_vec());
                rest = tail;
            }
            epochs
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn same_output_and_duplicates_as_the_model_on_1_2_and_4_workers(epochs in arb_stream()) {
        let flat: Vec<Message> = epochs.iter().flatten().cloned().collect();
        let expected = model(&flat);
        for workers in [1, 2, 4] {
            let got = run(TestPipeline::new().workers(workers), epochs.clone());
            prop_assert_eq!(&got, &expected, "{} workers", workers);
        }
        let got = run(TestPipeline::new().workers(2).serialize_exchanges(), epochs);
        prop_assert_eq!(&got, &expected, "2 workers, serialized exchanges");
    }
}

/// A fixed stream for the cluster run: 300 keys with 1 to 3 groups of 1 to 4 copies.
fn cluster_input() -> Vec<Vec<Message>> {
    let mut all = Vec::new();
    for k in 0..300i64 {
        let uri = format!("/submit/ns/doc/1/{k}");
        for g in 0..(1 + k % 3) {
            for c in 0..(1 + k % 4) {
                // copies spread over the stream so that they land in different epochs
                let t = k * 10 * WINDOW_MS + g * 2 * WINDOW_MS;
                all.push((
                    (c * 7919 + k * 31 + g) % 1000,
                    message(Some(&uri), t, &format!("{k}-{g}")),
                ));
            }
        }
    }
    all.sort_by_key(|(order, _)| *order);
    let flat: Vec<Message> = all.into_iter().map(|(_, m)| m).collect();
    flat.chunks(37).map(<[Message]>::to_vec).collect()
}

const CHILD: &str = "SLUICE_DEDUP_CLUSTER_CHILD";

/// Runs as one process of the cluster when the parent test starts this binary with `CHILD` set.
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
    let source = MemorySource::from_epochs(cluster_input());
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    Pipeline::new("dedup-oracle")
        .stack_traces(false)
        .cluster(process, addresses)
        .run(move |p| {
            build(p, source.clone(), o.clone(), d.clone(), dedup());
            Ok(())
        })
        .expect("cluster pipeline runs");
    let mut text = String::new();
    for m in out.records() {
        text.push_str(&format!("out {}\n", m.to_json_line()));
    }
    for dl in dead.records() {
        assert_eq!(dl.error_type, "Duplicate");
        text.push_str(&format!("dead {}\n", dl.original.to_json_line()));
    }
    std::fs::write(out_file, text).unwrap();
}

#[test]
fn same_output_and_duplicates_as_the_model_on_a_two_process_cluster() {
    let dir = std::env::temp_dir().join(format!("sluice-dedup-oracle-{}", std::process::id()));
    let outputs = run_two_process_cluster("cluster_child", CHILD, &dir);
    let (mut got_out, mut got_dead) = (Vec::new(), Vec::new());
    for out in outputs {
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let (kind, json) = line.split_once(' ').unwrap();
            let m = Message::from_json_line(json.as_bytes()).unwrap();
            match kind {
                "out" => got_out.push(m),
                "dead" => got_dead.push(m),
                _ => panic!("unexpected line {line}"),
            }
        }
    }
    got_out.sort();
    got_dead.sort();
    let _ = std::fs::remove_dir_all(&dir);
    let flat: Vec<Message> = cluster_input().into_iter().flatten().collect();
    let expected = model(&flat);
    assert!(expected.1.len() > 300, "the input must hold duplicates");
    assert_eq!((got_out, got_dead), expected);
}

/// 200,000 messages, one per millisecond, 5% of them copies of a message up to two windows
/// earlier: the arrangement, as differential reports its size (updates in its trace's batches),
/// stays within a few windows' worth of sightings (one per millisecond, so 1,000 a window), a
/// copy within the window is a duplicate and one after it is kept, exactly as the model says.
#[test]
fn state_stays_within_the_window_over_a_long_stream() {
    let n = 200_000i64;
    let mut input = Vec::with_capacity(n as usize);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut copies_after_window = 0;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = if i > 2 * WINDOW_MS && x.is_multiple_of(20) {
            let back = (x >> 8) as i64 % (2 * WINDOW_MS) + 1;
            if back >= WINDOW_MS {
                copies_after_window += 1;
            }
            i - back
        } else {
            i
        };
        input.push(message(Some(&format!("/k/{key}")), i, &i.to_string()));
    }
    let expected = model(&input);
    let epochs: Vec<Vec<Message>> = input.chunks(1000).map(<[Message]>::to_vec).collect();
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let source = MemorySource::from_epochs(epochs);
    let tp = TestPipeline::new();
    let metrics = tp.pipeline().metrics();
    tp.run(move |p| {
        let transform = Deduplicate::new()
            .with_window(Duration::from_millis(WINDOW_MS as u64))
            .with_lateness(Duration::ZERO);
        build(p, source.clone(), o.clone(), d.clone(), transform);
        Ok(())
    })
    .unwrap();
    let s = metrics.snapshot();
    let peak = s.gauges[&(Gauge::DedupEntriesPeak, "dedup/Duplicate".to_string())];
    let now = s.gauges[&(Gauge::DedupEntries, "dedup/Duplicate".to_string())];
    // The window holds 1,000 sightings, plus those the next sweep (an eighth of the window
    // later) retracts, plus retractions not yet merged away: a bound of the window's size,
    // where a state that never forgot would reach 200,000.
    assert!(
        (1_000..=4_000).contains(&peak),
        "peak arrangement size {peak}: at most 4 windows' worth (and the window is used)"
    );
    assert_eq!(now, 0, "a finished step gives its state back");
    assert!(
        copies_after_window > 1_000,
        "the stream has copies after the window"
    );
    let got_dead: Vec<Message> = dead.sorted().into_iter().map(|d| d.original).collect();
    assert_eq!(out.len() + got_dead.len(), n as usize);
    assert_eq!(
        s.family(Counter::Duplicates)["dedup/Duplicate"],
        expected.1.len() as u64
    );
    let mut got_dead = got_dead;
    got_dead.sort();
    assert_eq!((out.sorted(), got_dead), expected);
}

/// On processing time, a stream that goes idle still forgets: the state empties once the clock
/// passes the window, with no record arriving.
#[test]
fn an_idle_stream_forgets_on_processing_time() {
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock_now = now.clone();
    let clock = Clock::from_fn(move || clock_now.load(Ordering::SeqCst));
    let (source, feeder) = UnboundedMemorySource::<Message>::new();
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let tp = TestPipeline::new().workers(2);
    let metrics = tp.pipeline().metrics();
    let entries = move || {
        metrics
            .snapshot()
            .gauges
            .get(&(Gauge::DedupEntries, "dedup/Duplicate".to_string()))
            .copied()
            .unwrap_or(0)
    };
    let job = std::thread::spawn(move || {
        tp.run(move |p| {
            let mut dead_letters = p.dead_letters();
            let transform = Deduplicate::new()
                .with_time(DedupTime::ProcessingTime)
                .with_window(Duration::from_secs(60))
                .with_lateness(Duration::ZERO)
                .with_clock(clock.clone());
            p.read("read", source.clone())
                .apply("dedup", transform)
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
    });
    feeder.push((0..100).map(|i| message(Some(&format!("/k/{i}")), 0, "")));
    feeder.push((0..10).map(|i| message(Some(&format!("/k/{i}")), 0, "")));
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(
                Instant::now() < until,
                "gave up waiting for {what} (dedup entries {})",
                entries()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("110 records through the step", &|| {
        out.len() + dead.len() == 110
    });
    // every sighting is in the arrangement, the duplicates' too (one update with a count of
    // 2 when a copy arrived in its original's epoch)
    wait_for("the sightings in the arrangement", &|| entries() >= 100);
    assert!((100..=110).contains(&entries()), "{}", entries());
    assert_eq!(dead.len(), 10);
    // idle from here on: only the clock moves
    now.fetch_add(61_000, Ordering::SeqCst);
    wait_for("the state to empty", &|| entries() == 0);
    // and a copy after the window is kept
    feeder.push([message(Some("/k/1"), 0, "")]);
    wait_for("the late copy", &|| out.len() == 101);
    feeder.close();
    job.join().unwrap().unwrap();
    assert_eq!(dead.len(), 10);
}

/// `OnDuplicate::Drop` writes no dead letter but counts every duplicate; a payload field can
/// be the key.
#[test]
fn dropped_duplicates_are_counted_and_payload_fields_can_be_keys() {
    use sluice::{DedupKey, OnDuplicate};
    let input: Vec<Message> = (0..100)
        .map(|i| {
            message(
                None,
                0,
                &format!("{{\"client_id\": \"c{}\", \"n\": {i}}}", i % 40),
            )
        })
        .collect();
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let source = MemorySource::from(input);
    let tp = TestPipeline::new().workers(2);
    let metrics = tp.pipeline().metrics();
    tp.run(move |p| {
        let transform = dedup()
            .with_key(DedupKey::PayloadField("/client_id".to_string()))
            .on_duplicate(OnDuplicate::Drop);
        build(p, source.clone(), o.clone(), d.clone(), transform);
        Ok(())
    })
    .unwrap();
    assert_eq!(out.len(), 40, "one per client_id");
    assert_eq!(dead.len(), 0);
    let counted = metrics.snapshot().family(Counter::Duplicates);
    assert_eq!(counted["dedup/Duplicate"], 60);
}
