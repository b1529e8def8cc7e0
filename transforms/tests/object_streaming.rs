//! The object sink streams (`sluice::io::StreamingWriter`): records waiting in an open object
//! hold no memory of the pipeline, so a source waiting on its in-flight bound never makes the
//! runner close objects early. (That epochs are still acknowledged only once their objects are
//! written is the sink conformance suite's, run on this sink in `conformance.rs`.)

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
