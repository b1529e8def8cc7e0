//! The object writer's own memory accounting ([`ObjectWriter::open_bytes`],
//! [`ObjectWriter::held_bytes`]) checked against what it really allocates, counted by a
//! global allocator: the budget is only as good as this count, so it must not leave the
//! compressor state or the part buffers out. A binary of its own, so that no other test
//! allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use sluice::io::SinkWriter;
use sluice::Message;
use sluice_transforms::io::object::{
    BatchBounds, Compression, MemoryBudget, ObjectNames, ObjectSink, ObjectWriter, OutputFormat,
    PathTemplate,
};

/// Bytes allocated and not yet freed, by anyone in this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Records for `paths` paths: path `i` gets a few records of varied size, and the first ten
/// paths enough to send parts of 64 KiB on their way (their multipart uploads started).
fn input(paths: usize) -> Vec<Message> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    };
    let mut out = Vec::new();
    for i in 0..paths {
        let records = if i < 10 { 300 } else { i % 7 + 1 };
        for r in 0..records {
            out.push(
                Message::new(format!(
                    "{{\"n\":{r},\"pad\":\"{}\"}}",
                    noise((i * 37 + r) % 2000)
                ))
                .with_attribute("kind", format!("path{i}")),
            );
        }
    }
    out
}

/// Waits until no upload holds memory and the runtime's tasks are done with theirs.
fn settle(rt: &tokio::runtime::Runtime, w: &ObjectWriter) {
    rt.block_on(async {
        for _ in 0..10_000 {
            if w.held_bytes() == w.open_bytes() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    assert_eq!(w.held_bytes(), w.open_bytes(), "uploads never finished");
}

fn check(compression: Compression) {
    // Few blocking threads: a local directory takes a put and a rename per object, each on a
    // blocking thread, and a pool grown to hundreds of threads keeps their memory for seconds
    // after the objects closed, which would blur what the writer itself gives back.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = ObjectSink::local(dir.path(), PathTemplate::parse("${kind:-none}/").unwrap())
        .unwrap()
        .with_format(OutputFormat::Json)
        .with_compression(compression)
        .with_part_size(64 << 10)
        .with_batch(BatchBounds {
            max_records: usize::MAX,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(3600),
        })
        .with_budget(MemoryBudget {
            max_open_bytes: 1 << 30,
            max_open_batches: 10_000,
        });
    let paths = 300;
    let mut w = sink.open_writer(rt.handle().clone(), ObjectNames::new("mem", "1", 0));
    // Warm up what lives as long as the writer (its maps, the runtime's pools).
    let warm = w.write(0, input(1)[..1].to_vec());
    w.flush();
    rt.block_on(warm).unwrap();
    settle(&rt, &w);

    // The records are made after the first count: the writer drops them as it writes.
    let (live0, held0) = (live(), w.held_bytes() as isize);
    let pending = w.write(1, input(paths));
    settle(&rt, &w);
    let (live1, held1) = (live(), w.held_bytes() as isize);
    assert_eq!(w.open_batches(), paths);
    let actual = live1 - live0;
    let counted = held1 - held0;
    println!(
        "{compression:?}: {paths} open batches hold {actual} bytes; the writer counts {counted}"
    );
    // Not less than what is allocated (2% and 128 KiB for the runtime's own bookkeeping,
    // the upload tasks and the pending future)...
    assert!(
        actual <= counted + counted / 50 + (128 << 10),
        "{compression:?}: the writer counts {counted} bytes but holds {actual}"
    );
    // ...and not much more either, or the budget would waste memory.
    assert!(
        counted <= actual + actual / 4 + (128 << 10),
        "{compression:?}: the writer counts {counted} bytes but holds only {actual}"
    );

    // Closing every batch gives the memory back.
    w.flush();
    rt.block_on(pending).unwrap();
    settle(&rt, &w);
    assert_eq!(w.open_bytes(), 0);
    let left = live() - live0;
    assert!(
        left < (256 << 10),
        "{compression:?}: {left} bytes still held after every object closed"
    );
}

#[test]
fn open_batch_accounting_matches_the_allocator() {
    // One test function, so that nothing else runs (and allocates) while it measures.
    check(Compression::Gzip);
    check(Compression::None);
}
