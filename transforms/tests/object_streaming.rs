//! The object sink streams (`sluice::io::StreamingWriter`): records waiting in an open object
//! hold no memory of the pipeline, so a source waiting on its in-flight bound never makes the
//! runner close objects early. (That epochs are still acknowledged only once their objects are
//! written is the sink conformance suite's, run on this sink in `conformance.rs`.) Records in
//! open objects are unacknowledged, though: a source waiting on its unacknowledged-epochs
//! bound does make every sink close its objects.

use std::time::Duration;

use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice::{DeadLetter, EpochBounds, InFlightBounds, MemorySink, Message, Pipeline};
use sluice_testing::UnboundedMemorySource;
use sluice_transforms::io::object::{BatchBounds, Compression, ObjectSink, PathTemplate};

fn objects(store: &InMemory) -> Vec<(String, usize)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = Vec::new();
        for m in metas {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let lines = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            out.push((m.location.to_string(), lines));
        }
        out.sort();
        out
    })
}

#[test]
fn a_source_waiting_on_its_bound_does_not_close_streamed_objects() {
    // 40 epochs of 50 records under a bound of 2 epochs in flight: before streaming, every
    // wait flushed the sink, so each epoch became objects of its own.
    let (source, feeder) = UnboundedMemorySource::<Message>::new();
    feeder.push(
        (0..2000).map(|i| {
            Message::new(format!("{{\"i\":{i}}}")).with_attribute("kind", ["a", "b"][i % 2])
        }),
    );
    feeder.close();
    let store = InMemory::new();
    let sink = ObjectSink::memory(
        store.clone(),
        PathTemplate::parse("out/${kind:-none}/").unwrap(),
    )
    .with_compression(Compression::None)
    .with_batch(BatchBounds {
        max_bytes: 100 << 20,
        max_records: 1_000_000,
        max_age: Duration::from_secs(3600),
    });
    let dead = MemorySink::<DeadLetter>::new();
    let (s, d) = (source.clone(), dead.clone());
    Pipeline::new("streaming")
        .epoch_bounds(EpochBounds {
            max_records: 50,
            max_bytes: usize::MAX,
            max_age: Duration::from_millis(50),
        })
        .in_flight_bounds(InFlightBounds {
            max_epochs: 2,
            max_bytes: usize::MAX,
            ..InFlightBounds::default()
        })
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", s.clone())
                .write("write", sink.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    let objects = objects(&store);
    assert_eq!(
        objects.iter().map(|(_, n)| n).sum::<usize>(),
        2000,
        "{objects:?}"
    );
    assert_eq!(objects.len(), 2, "one object per path: {objects:?}");
    assert!(dead.is_empty());
    assert_eq!(
        source.acked_count(),
        2000,
        "everything acknowledged at the end"
    );
}

#[test]
fn a_source_waiting_on_unacknowledged_epochs_closes_streamed_objects() {
    // Objects that would stay open for an hour: only the unacknowledged bound closes them
    // before the end of input, and it must, or a crash would re-read everything.
    const RECORDS: usize = 2000;
    const EPOCH_RECORDS: usize = 50;
    const UNACKNOWLEDGED_EPOCHS: usize = 4;
    let (source, feeder) = UnboundedMemorySource::<Message>::new();
    let store = InMemory::new();
    let sink = ObjectSink::memory(
        store.clone(),
        PathTemplate::parse("out/${kind:-none}/").unwrap(),
    )
    .with_compression(Compression::None)
    .with_batch(BatchBounds {
        max_bytes: 100 << 20,
        max_records: 1_000_000,
        max_age: Duration::from_secs(3600),
    });
    let dead = MemorySink::<DeadLetter>::new();
    let (s, d) = (source.clone(), dead.clone());
    let run = std::thread::spawn(move || {
        Pipeline::new("unacknowledged")
            .epoch_bounds(EpochBounds {
                max_records: EPOCH_RECORDS,
                max_bytes: usize::MAX,
                max_age: Duration::from_millis(50),
            })
            .in_flight_bounds(InFlightBounds {
                max_epochs: 16,
                max_bytes: usize::MAX,
                max_unacknowledged_epochs: UNACKNOWLEDGED_EPOCHS,
            })
            .run(move |p| {
                let mut dead_letters = p.dead_letters();
                p.read("read", s.clone())
                    .write("write", sink.clone())
                    .failures_to(&mut dead_letters);
                dead_letters.write("dead_letters", d.clone());
                Ok(())
            })
    });
    feeder.push(
        (0..RECORDS).map(|i| {
            Message::new(format!("{{\"i\":{i}}}")).with_attribute("kind", ["a", "b"][i % 2])
        }),
    );
    feeder.close();
    // Read minus acknowledged, sampled while the job runs: read first, so a sample never
    // counts an acknowledgement that came after its read.
    let mut most_unacknowledged = 0;
    while !run.is_finished() {
        let read = RECORDS - feeder.queued();
        let acked = source.acked_count() as usize;
        most_unacknowledged = most_unacknowledged.max(read.saturating_sub(acked));
        std::thread::sleep(Duration::from_millis(1));
    }
    run.join().unwrap().unwrap();
    // The bound's epochs plus the one being read when the bound is reached.
    let bound = (UNACKNOWLEDGED_EPOCHS + 1) * EPOCH_RECORDS;
    assert!(
        most_unacknowledged <= bound,
        "{most_unacknowledged} records read and not acknowledged, bound {bound}"
    );
    let objects = objects(&store);
    assert_eq!(
        objects.iter().map(|(_, n)| n).sum::<usize>(),
        RECORDS,
        "{objects:?}"
    );
    assert!(
        objects.len() >= RECORDS / bound,
        "objects closed early at the unacknowledged bound: {objects:?}"
    );
    assert!(dead.is_empty());
    assert_eq!(source.acked_count() as usize, RECORDS);
}
