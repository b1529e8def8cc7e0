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
    let e = rt.block_on(f).unwrap_err().to_string();
    assert!(e.starts_with("uploading object `out/a/job-"), "{e}");
    assert!(e.contains("injected failure"), "{e}");
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
