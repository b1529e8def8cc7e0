//! Writer behaviour on `InMemory`, with `FaultyStore` for held and failed uploads.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice::io::SinkWriter;
use sluice::Message;

use super::fault::FaultyStore;
use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn msgs(n: usize, kind: &str) -> Vec<Message> {
    (0..n)
        .map(|i| Message::new(format!("{{\"n\":{i}}}")).with_attribute("kind", kind))
        .collect()
}

fn template() -> PathTemplate {
    PathTemplate::parse("out/${kind:-none}/").unwrap()
}

fn names(worker: usize) -> ObjectNames {
    ObjectNames::new("job", "1700000000000000001", worker)
}

/// Every object: (path, lines).
fn objects(rt: &tokio::runtime::Runtime, store: &dyn ObjectStore) -> Vec<(String, Vec<String>)> {
    rt.block_on(async {
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = Vec::new();
        for m in metas {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let name = m.location.to_string();
            let mut text = String::new();
            if name.ends_with(".gz") {
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
            } else {
                text = String::from_utf8(bytes.to_vec()).unwrap();
            }
            out.push((name, text.lines().map(str::to_string).collect()));
        }
        out.sort();
        out
    })
}

fn sink(store: Arc<dyn ObjectStore>, bounds: BatchBounds) -> ObjectSink {
    ObjectSink::new(store, template())
        .with_compression(Compression::None)
        .with_format(OutputFormat::Decoded)
        .with_batch(bounds)
}

const NO_AGE: Duration = Duration::from_secs(3600);

#[test]
fn batches_close_at_max_records() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let bounds = BatchBounds {
        max_records: 3,
        max_bytes: usize::MAX,
        max_age: NO_AGE,
    };
    let mut w = sink(store.clone(), bounds).open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, msgs(10, "a"));
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.as_ref());
    let sizes: Vec<usize> = objs.iter().map(|(_, l)| l.len()).collect();
    assert_eq!(sizes, vec![3, 3, 3, 1]);
    assert!(objs
        .iter()
        .all(|(p, _)| p.starts_with("out/a/job-1700000000000000001-w0000-")));
}

#[test]
fn batches_close_before_exceeding_max_bytes() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    // Each line `{"n":i}\n` is 8 bytes for i < 10: two fit in 16, a third does not.
    let bounds = BatchBounds {
        max_records: usize::MAX,
        max_bytes: 20,
        max_age: NO_AGE,
    };
    let mut w = sink(store.clone(), bounds).open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, msgs(5, "a"));
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.as_ref());
    let sizes: Vec<usize> = objs.iter().map(|(_, l)| l.len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
}

#[test]
fn a_single_record_larger_than_max_bytes_is_its_own_object() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let bounds = BatchBounds {
        max_records: usize::MAX,
        max_bytes: 4,
        max_age: NO_AGE,
    };
    let mut w = sink(store.clone(), bounds).open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, msgs(3, "a"));
    // No flush needed: every record fills its batch.
    rt.block_on(f).unwrap();
    assert_eq!(objects(&rt, store.as_ref()).len(), 3);
}

#[test]
fn batches_close_at_max_age_without_flush() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let bounds = BatchBounds {
        max_records: usize::MAX,
        max_bytes: usize::MAX,
        max_age: Duration::from_millis(20),
    };
    let mut w = sink(store.clone(), bounds).open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, msgs(4, "a"));
    // Resolves only because the age timer closed the batch.
    rt.block_on(f).unwrap();
    assert_eq!(w.open_batches(), 0);
    assert_eq!(objects(&rt, store.as_ref())[0].1.len(), 4);
}

#[test]
fn one_batch_per_rendered_prefix_and_flush_writes_partial_batches() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let mut w =
        sink(store.clone(), BatchBounds::default()).open_writer(rt.handle().clone(), names(0));
    let mut input = msgs(3, "a");
    input.extend(msgs(2, "b"));
    input.push(Message::new("{}"));
    let f = w.write(7, input);
    assert_eq!(w.open_batches(), 3);
    assert!(objects(&rt, store.as_ref()).is_empty());
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.as_ref());
    let dirs: Vec<(&str, usize)> = objs
        .iter()
        .map(|(p, l)| (p.rsplit_once('/').unwrap().0, l.len()))
        .collect();
    assert_eq!(dirs, vec![("out/a", 3), ("out/b", 2), ("out/none", 1)]);
    // Flushing again with nothing open writes nothing.
    w.flush();
    assert_eq!(objects(&rt, store.as_ref()).len(), 3);
}

#[test]
fn gzip_json_objects_round_trip_to_the_same_messages() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let sink = ObjectSink::new(store.clone(), template()).with_format(OutputFormat::Json);
    let mut w = sink.open_writer(rt.handle().clone(), names(0));
    let input: Vec<Message> = msgs(50, "a")
        .into_iter()
        .map(|m| m.with_attribute("x", "y\u{e9}\n\"q\""))
        .collect();
    let f = w.write(1, input.clone());
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.as_ref());
    assert_eq!(objs.len(), 1);
    assert!(objs[0].0.ends_with(".ndjson.gz"), "{}", objs[0].0);
    let back: Vec<Message> = objs[0]
        .1
        .iter()
        .map(|l| Message::from_json_line(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(back, input);
}

#[test]
fn names_are_unique_across_workers_and_runs() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let bounds = BatchBounds {
        max_records: 2,
        max_bytes: usize::MAX,
        max_age: NO_AGE,
    };
    let s = sink(store.clone(), bounds);
    let mut futures = Vec::new();
    for (run, worker) in [("1", 0), ("1", 1), ("2", 0), ("2", 1)] {
        let mut w = s.open_writer(
            rt.handle().clone(),
            ObjectNames::new("my job:x", run, worker),
        );
        futures.push(w.write(1, msgs(5, "a")));
        w.flush();
    }
    for f in futures {
        rt.block_on(f).unwrap();
    }
    let objs = objects(&rt, store.as_ref());
    assert_eq!(objs.len(), 4 * 3);
    let total: usize = objs.iter().map(|(_, l)| l.len()).sum();
    assert_eq!(total, 20);
    assert!(objs
        .iter()
        .all(|(p, _)| !p.contains(':') && p.contains("my_job_x-")));
}

#[test]
fn futures_resolve_only_after_the_upload() {
    let rt = runtime();
    let store = FaultyStore::new(InMemory::new());
    store.hold_puts(true);
    let s = sink(Arc::new(store.clone()), BatchBounds::default());
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let mut f1 = w.write(1, msgs(2, "a"));
    let mut f2 = w.write(2, msgs(1, "b"));
    w.flush();
    rt.block_on(async {
        while store.waiting() < 2 {
            tokio::task::yield_now().await;
        }
    });
    assert!((&mut f1).now_or_never().is_none());
    assert!((&mut f2).now_or_never().is_none());
    assert_eq!(store.puts(), 0);
    store.hold_puts(false);
    rt.block_on(f1).unwrap();
    rt.block_on(f2).unwrap();
    assert_eq!(store.puts(), 2);
}

#[test]
fn an_epoch_waits_for_every_batch_holding_its_records() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let s = sink(
        store.clone(),
        BatchBounds {
            max_records: 3,
            max_bytes: usize::MAX,
            max_age: NO_AGE,
        },
    );
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    // Epoch 1 fills one batch of `a` and leaves a record in the open `a` batch, which epoch 2
    // shares: neither is done until that batch is written.
    let mut f1 = w.write(1, msgs(4, "a"));
    let mut f2 = w.write(2, msgs(1, "a"));
    rt.block_on(async {
        while objects_len(store.as_ref()).await < 1 {
            tokio::task::yield_now().await;
        }
    });
    assert!((&mut f1).now_or_never().is_none());
    assert!((&mut f2).now_or_never().is_none());
    w.flush();
    rt.block_on(f1).unwrap();
    rt.block_on(f2).unwrap();
    assert_eq!(objects(&rt, store.as_ref()).len(), 2);
}

async fn objects_len(store: &dyn ObjectStore) -> usize {
    store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

#[test]
fn an_upload_failure_fails_the_write_future_and_stops_the_writer() {
    let rt = runtime();
    let store = FaultyStore::new(InMemory::new());
    store.fail_puts(true);
    let s = sink(Arc::new(store.clone()), BatchBounds::default());
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, msgs(2, "a"));
    w.flush();
    let e = sluice::chain(&*rt.block_on(f).unwrap_err());
    assert!(e.starts_with("cannot upload object `out/a/job-"), "{e}");
    assert_eq!(e.matches("injected failure").count(), 1, "{e}");
    store.fail_puts(false);
    let e = rt
        .block_on(w.write(2, msgs(1, "a")))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("object sink stopped after an earlier failure"),
        "{e}"
    );
    assert!(objects(&rt, store.inner()).is_empty());
}

#[test]
fn big_objects_go_up_in_parts_and_arrive_whole() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let s = sink(store.clone(), BatchBounds::default()).with_part_size(64);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, msgs(100, "a"));
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.as_ref());
    assert_eq!(objs.len(), 1);
    let expected: Vec<String> = (0..100).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(objs[0].1, expected);
}

#[test]
fn an_empty_write_resolves_at_once() {
    let rt = runtime();
    let s = sink(Arc::new(InMemory::new()), BatchBounds::default());
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    assert!(w.write(1, Vec::new()).now_or_never().unwrap().is_ok());
}

/// Waits (without a deadline that could make the test flaky on a slow machine, but never
/// forever) until `done` holds.
fn eventually(rt: &tokio::runtime::Runtime, what: &str, mut done: impl FnMut() -> bool) {
    rt.block_on(async {
        for _ in 0..20_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never happened: {what}");
    })
}

/// Records of ~`size` bytes that gzip cannot shrink to nothing.
fn noisy(n: usize, size: usize, kind: &str) -> Vec<Message> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            let pad: String = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            Message::new(format!("{{\"n\":{i},\"pad\":\"{pad}\"}}")).with_attribute("kind", kind)
        })
        .collect()
}

fn no_bounds() -> BatchBounds {
    BatchBounds {
        max_records: usize::MAX,
        max_bytes: usize::MAX,
        max_age: NO_AGE,
    }
}

#[test]
fn an_object_goes_up_in_parts_while_its_batch_is_open_and_appears_only_when_closed() {
    let rt = runtime();
    let store = FaultyStore::new(InMemory::new());
    let s = sink(Arc::new(store.clone()), no_bounds()).with_part_size(1000);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let input = noisy(40, 200, "a");
    let f = w.write(1, input.clone());
    // ~8 KB in parts of 1000 bytes: seven parts went up, the batch is still open...
    eventually(&rt, "seven parts uploaded", || store.parts() >= 7);
    assert_eq!(w.open_batches(), 1);
    assert_eq!(store.puts(), 1, "one multipart upload, no put");
    // ...holding less than two parts, and nothing is visible yet.
    assert!(w.open_bytes() < 2 * 1000 + 1024, "{}", w.open_bytes());
    assert!(objects(&rt, store.inner()).is_empty());
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.inner());
    assert_eq!(objs.len(), 1);
    let back: Vec<String> = input
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(objs[0].1, back);
    let stats = w.stats();
    assert_eq!((stats.objects, stats.records), (1, 40));
    assert_eq!(w.held_bytes(), 0);
}

#[test]
fn a_gzip_object_streamed_in_parts_is_one_valid_member() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let s = ObjectSink::new(store.clone(), template())
        .with_format(OutputFormat::Json)
        .with_batch(no_bounds())
        .with_part_size(4096);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let input = noisy(300, 500, "a");
    let f = w.write(1, input.clone());
    w.flush();
    rt.block_on(f).unwrap();
    let objs = objects(&rt, store.as_ref());
    assert_eq!(objs.len(), 1);
    assert!(w.stats().object_bytes > 10 * 4096, "{:?}", w.stats());
    let back: Vec<Message> = objs[0]
        .1
        .iter()
        .map(|l| Message::from_json_line(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(back, input);
}

#[test]
fn the_budget_closes_the_least_recently_written_batches_early() {
    let rt = runtime();
    // What one batch of 10 records of ~300 bytes holds (a 4 KiB part buffer and bookkeeping).
    let probe = sink(Arc::new(InMemory::new()), no_bounds()).with_part_size(4096);
    let mut p = probe.open_writer(rt.handle().clone(), names(0));
    drop(p.write(0, noisy(10, 300, "x")));
    let one = p.open_bytes();
    assert!(one > 4096, "{one}");

    let store = Arc::new(InMemory::new());
    let budget = MemoryBudget {
        max_open_bytes: 3 * one + one / 2,
        max_open_batches: 100,
    };
    let s = sink(store.clone(), no_bounds())
        .with_part_size(4096)
        .with_budget(budget);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let mut futures = Vec::new();
    // Three batches fit; `a` is written again (it stays within its buffer), so `b` is the
    // one written longest ago when `d` needs room.
    for (epoch, (kind, n)) in [("a", 10), ("b", 10), ("c", 10), ("a", 1), ("d", 10)]
        .into_iter()
        .enumerate()
    {
        futures.push(w.write(epoch as u64, noisy(n, 300, kind)));
        assert!(
            w.open_bytes() <= budget.max_open_bytes,
            "{}",
            w.open_bytes()
        );
    }
    assert_eq!(w.open_batches(), 3);
    assert_eq!(w.stats().closed_early, 1);
    rt.block_on(futures.remove(1)).unwrap();
    let first = objects(&rt, store.as_ref());
    assert_eq!(first.len(), 1);
    assert!(first[0].0.starts_with("out/b/"), "{:?}", first[0].0);
    assert_eq!(first[0].1.len(), 10);
    assert!(w.stats().peak_open_bytes <= budget.max_open_bytes);
    w.flush();
    for f in futures {
        rt.block_on(f).unwrap();
    }
    let total: usize = objects(&rt, store.as_ref())
        .iter()
        .map(|(_, l)| l.len())
        .sum();
    assert_eq!(total, 41);
}

#[test]
fn opening_more_batches_than_the_cap_closes_the_least_recently_written() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let s = sink(store.clone(), no_bounds()).with_budget(MemoryBudget {
        max_open_batches: 2,
        ..MemoryBudget::default()
    });
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let f1 = w.write(1, msgs(1, "a"));
    let f2 = w.write(2, msgs(1, "b"));
    let f3 = w.write(3, msgs(1, "a"));
    assert_eq!(w.open_batches(), 2);
    // `c` needs a third batch: `b` (written before the second `a`) closes.
    let f4 = w.write(4, msgs(1, "c"));
    assert_eq!(w.open_batches(), 2);
    rt.block_on(f2).unwrap();
    let objs = objects(&rt, store.as_ref());
    assert_eq!(objs.len(), 1);
    assert!(objs[0].0.starts_with("out/b/"));
    assert_eq!(w.stats().closed_early, 1);
    w.flush();
    for f in [f1, f3, f4] {
        rt.block_on(f).unwrap();
    }
    let dirs: Vec<(String, usize)> = objects(&rt, store.as_ref())
        .into_iter()
        .map(|(p, l)| (p.rsplit_once('/').unwrap().0.to_string(), l.len()))
        .collect();
    assert_eq!(
        dirs,
        vec![
            ("out/a".to_string(), 2),
            ("out/b".to_string(), 1),
            ("out/c".to_string(), 1)
        ]
    );
}

/// Paths of a skewed popularity, as output paths are: a few take most records.
fn skewed_kind(i: usize, paths: usize) -> String {
    let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
    let u = (h % 1_000_000) as f64 / 1_000_000.0;
    // ~u^3 puts most records on low path numbers, yet every path gets some.
    let k = ((u * u * u) * paths as f64) as usize;
    format!("p{:04}", k.min(paths - 1))
}

#[test]
fn a_thousand_paths_stay_within_the_open_batch_budget() {
    let rt = runtime();
    let store = Arc::new(InMemory::new());
    let budget = MemoryBudget::default();
    let s = ObjectSink::new(store.clone(), template())
        .with_format(OutputFormat::Json)
        .with_batch(no_bounds())
        .with_part_size(256 << 10)
        .with_budget(budget);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let n = 20_000;
    let mut per_path = std::collections::BTreeMap::new();
    let mut futures = Vec::new();
    let mut peak = 0;
    for epoch in 0..(n / 500) {
        let records: Vec<Message> = (epoch * 500..(epoch + 1) * 500)
            .map(|i| {
                let kind = if i < 1000 {
                    format!("p{i:04}") // every path at least once
                } else {
                    skewed_kind(i, 1000)
                };
                *per_path.entry(kind.clone()).or_insert(0usize) += 1;
                Message::new(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 300)))
                    .with_attribute("kind", kind)
            })
            .collect();
        futures.push(w.write(epoch as u64, records));
        peak = peak.max(w.open_bytes());
        assert!(w.open_bytes() <= budget.max_open_bytes);
        assert!(w.open_batches() <= budget.max_open_batches);
    }
    assert_eq!(per_path.len(), 1000);
    let stats = w.stats();
    assert!(
        stats.peak_open_bytes <= budget.max_open_bytes,
        "{} > {}",
        stats.peak_open_bytes,
        budget.max_open_bytes
    );
    // A gzip batch holds ~400 KB of compressor state: 1000 at once would be ~400 MB.
    assert!(stats.closed_early > 0);
    w.flush();
    for f in futures {
        rt.block_on(f).unwrap();
    }
    let objs = objects(&rt, store.as_ref());
    let total: usize = objs.iter().map(|(_, l)| l.len()).sum();
    assert_eq!(total, n);
    let stats = w.stats();
    assert_eq!(stats.objects as usize, objs.len());
    assert_eq!(w.held_bytes(), 0);
    println!(
        "1000 paths, {n} records, budget {} MiB: peak open {:.1} MiB, {} objects ({} closed early), mean object {:.0} bytes",
        budget.max_open_bytes >> 20,
        stats.peak_open_bytes as f64 / (1 << 20) as f64,
        stats.objects,
        stats.closed_early,
        stats.object_bytes as f64 / stats.objects as f64,
    );
}

#[test]
fn parts_waiting_for_the_store_are_counted_until_it_takes_them() {
    let rt = runtime();
    let store = FaultyStore::new(InMemory::new());
    store.hold_puts(true);
    let s = sink(Arc::new(store.clone()), no_bounds()).with_part_size(1000);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let f = w.write(1, noisy(20, 200, "a"));
    // The upload cannot start: the full parts wait in its queue, counted.
    assert!(
        w.held_bytes() >= w.open_bytes() + 3 * 1000,
        "{}",
        w.held_bytes()
    );
    w.flush();
    store.hold_puts(false);
    rt.block_on(f).unwrap();
    eventually(&rt, "nothing held", || w.held_bytes() == 0);
    assert_eq!(objects(&rt, store.inner())[0].1.len(), 20);
}

#[test]
fn a_failed_part_fails_every_waiting_epoch_and_leaves_no_object() {
    let rt = runtime();
    let store = FaultyStore::new(InMemory::new());
    let s = sink(Arc::new(store.clone()), no_bounds()).with_part_size(1000);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let f1 = w.write(1, noisy(10, 200, "a"));
    let f2 = w.write(2, msgs(1, "b"));
    eventually(&rt, "a part uploaded", || store.parts() >= 1);
    store.fail_parts(true);
    let f3 = w.write(3, noisy(10, 200, "a"));
    // Nothing was flushed: the failure alone resolves the futures, with its error.
    for f in [f1, f2, f3] {
        let e = sluice::chain(&*rt.block_on(f).unwrap_err());
        assert_eq!(
            e.matches("injected failure writing a part").count(),
            1,
            "{e}"
        );
    }
    let e = rt
        .block_on(w.write(4, msgs(1, "a")))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("object sink stopped"), "{e}");
    assert_eq!(w.open_batches(), 0);
    w.flush();
    assert!(objects(&rt, store.inner()).is_empty());
}

/// Files under `dir`, relative, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn on_a_directory_parts_go_to_a_staging_file_renamed_into_place_when_closed() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectSink::local(dir.path(), template())
        .unwrap()
        .with_compression(Compression::None)
        .with_format(OutputFormat::Decoded)
        .with_batch(no_bounds())
        .with_part_size(1000);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    let input = noisy(40, 200, "a");
    let f = w.write(1, input.clone());
    let staging = || {
        files(dir.path())
            .into_iter()
            .find(|f| f.contains('#'))
            .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
    };
    eventually(&rt, "parts in the staging file", || {
        staging().is_some_and(|len| len >= 7000)
    });
    // Only the staging file exists: a reader never sees a partial object under its name.
    let now = files(dir.path());
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        now[0].starts_with("out/a/.job-") && now[0].ends_with(".ndjson.staging#1"),
        "{now:?}"
    );
    w.flush();
    rt.block_on(f).unwrap();
    let now = files(dir.path());
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now[0].ends_with(".ndjson"), "{now:?}");
    let text = std::fs::read_to_string(dir.path().join(&now[0])).unwrap();
    let expected: String = input
        .iter()
        .map(|m| format!("{}\n", String::from_utf8_lossy(&m.payload)))
        .collect();
    assert_eq!(text, expected);
}

#[test]
fn dropping_the_writer_aborts_open_uploads_and_fails_their_epochs() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectSink::local(dir.path(), template())
        .unwrap()
        .with_batch(no_bounds())
        .with_part_size(1000);
    let mut w = s.open_writer(rt.handle().clone(), names(0));
    // Enough that deflate emits blocks before the object ends.
    let f = w.write(1, noisy(400, 200, "a"));
    eventually(&rt, "a staging file", || !files(dir.path()).is_empty());
    drop(w);
    let e = rt.block_on(f).unwrap_err().to_string();
    assert!(e.contains("closed before epoch 1 was written"), "{e}");
    eventually(&rt, "the staging file removed", || {
        files(dir.path()).is_empty()
    });
}
