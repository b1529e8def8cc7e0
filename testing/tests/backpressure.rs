//! Backpressure: a fast unbounded source feeding a slow sink never has more epochs in flight
//! than the configured bound.

use std::time::Duration;

use sluice::{EpochBounds, InFlightBounds};
use sluice_testing::{MemorySink, SlowSink, TestPipeline, UnboundedMemorySource};

#[test]
fn in_flight_epochs_stay_within_the_bound() {
    let (source, feeder) = UnboundedMemorySource::<u64>::new();
    feeder.push(0..20_000);
    feeder.close();
    let written = MemorySink::new();
    let slow = SlowSink::new(Duration::from_millis(15), written.clone());
    let (s, k) = (source.clone(), slow.clone());
    let max_epochs = 3;
    let max_records = 500;
    TestPipeline::new()
        .epoch_bounds(EpochBounds {
            max_records,
            max_bytes: usize::MAX,
            max_age: Duration::from_millis(50),
        })
        .in_flight_bounds(InFlightBounds {
            max_epochs,
            max_bytes: usize::MAX,
            ..InFlightBounds::default()
        })
        .run(move |p| {
            p.read("read", s.clone()).write("write", k.clone());
            Ok(())
        })
        .unwrap();
    let stats = slow.stats();
    assert_eq!(written.len(), 20_000, "everything is written");
    assert!(stats.writes >= 20_000 / max_records, "{stats:?}");
    assert!(
        stats.max_pending_writes <= max_epochs,
        "at most {max_epochs} epochs pending, saw {stats:?}"
    );
    assert!(
        stats.max_pending_records <= max_epochs * max_records,
        "records pending bounded, saw {stats:?}"
    );
    assert!(
        stats.max_pending_writes >= 2,
        "the bound was actually reached: {stats:?}"
    );
    assert_eq!(source.acked_count(), 20_000);
}

#[test]
fn the_byte_bound_also_holds_the_source_back() {
    let (source, feeder) = UnboundedMemorySource::<u64>::new();
    feeder.push(0..5_000);
    feeder.close();
    let written = MemorySink::new();
    let slow = SlowSink::new(Duration::from_millis(10), written.clone());
    let (s, k) = (source.clone(), slow.clone());
    // 100 records of 8 bytes per epoch, at most 1600 bytes in flight: two epochs
    TestPipeline::new()
        .epoch_bounds(EpochBounds {
            max_records: 100,
            max_bytes: usize::MAX,
            max_age: Duration::from_millis(50),
        })
        .in_flight_bounds(InFlightBounds {
            max_epochs: 100,
            max_bytes: 1600,
            ..InFlightBounds::default()
        })
        .run(move |p| {
            p.read("read", s.clone()).write("write", k.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(written.len(), 5_000);
    assert!(slow.stats().max_pending_writes <= 2, "{:?}", slow.stats());
}

#[test]
fn the_byte_bound_counts_what_the_sinks_hold_after_decompression() {
    // Each 1 KiB record "decompresses" to 100 KiB (a gzip ratio of 100): counted as read, 8
    // records per epoch are 8 KiB and far below the 2 MiB bound; as held by the sink they are
    // 800 KiB an epoch, so the bound lets about two epochs in, not sixteen.
    use sluice::Message;
    let (source, feeder) = UnboundedMemorySource::<Message>::new();
    feeder
        .push((0..400).map(|i| Message::new(vec![b'z'; 1024]).with_attribute("i", i.to_string())));
    feeder.close();
    let written = MemorySink::new();
    let slow = SlowSink::new(Duration::from_millis(10), written.clone());
    let (s, k) = (source.clone(), slow.clone());
    let bound = 2 << 20;
    let epoch_inflated = 8 * 100 * 1024;
    let pipeline = TestPipeline::new()
        .epoch_bounds(EpochBounds {
            max_records: 8,
            max_bytes: usize::MAX,
            max_age: Duration::from_millis(50),
        })
        .in_flight_bounds(InFlightBounds {
            max_epochs: 16,
            max_bytes: bound,
            ..InFlightBounds::default()
        });
    let metrics = pipeline.pipeline().metrics();
    pipeline
        .run(move |p| {
            p.read("read", s.clone())
                .map(|m: Message| {
                    let inflated = vec![m.payload[0]; m.payload.len() * 100];
                    Message::new(inflated).with_attributes(m.attributes)
                })
                .write("write", k.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(written.len(), 400);
    assert_eq!(source.acked_count(), 400);
    let peak = metrics.peak_held_bytes() as usize;
    println!(
        "peak bytes held by sinks: {peak} (bound {bound}, one epoch inflated {epoch_inflated})"
    );
    assert!(
        peak >= bound / 2,
        "the bound was actually approached: {peak}"
    );
    assert!(
        peak <= bound + epoch_inflated,
        "held {peak} bytes: over the bound {bound} by more than one epoch"
    );
    assert_eq!(metrics.held_bytes(), 0, "everything held was released");
}
