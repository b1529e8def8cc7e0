//! Throughput of a trivial `map` pipeline on memory IO: what the engine itself costs per record.
//!
//! `cargo bench -p sluice-sdk --bench map`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::{EpochBounds, MemorySink, MemorySource, Pipeline};

const RECORDS: usize = 1_000_000;

fn run(workers: usize, input: &[u64]) -> usize {
    // Batches of 50k, shared out to workers: the double's set-up stays out of the figure.
    let source = MemorySource::from_epochs(input.chunks(50_000).map(<[u64]>::to_vec).collect());
    let sink = MemorySink::new();
    let s = sink.clone();
    Pipeline::new("bench")
        .workers(workers)
        .epoch_bounds(EpochBounds {
            max_records: 50_000,
            max_bytes: usize::MAX,
            max_age: Duration::from_millis(200),
        })
        .run(move |p| {
            p.read("read", source.clone())
                .map(|x| x.wrapping_mul(31) ^ 7)
                .filter(|x| x % 3 != 0)
                .write("write", s.clone());
            Ok(())
        })
        .expect("bench pipeline runs");
    sink.len()
}

fn map_pipeline(c: &mut Criterion) {
    let input: Vec<u64> = (0..RECORDS as u64).collect();
    let mut group = c.benchmark_group("map_pipeline");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for workers in [1, 2] {
        group.bench_with_input(BenchmarkId::new("workers", workers), &workers, |b, &w| {
            b.iter(|| run(w, &input))
        });
    }
    group.finish();
}

criterion_group!(benches, map_pipeline);
criterion_main!(benches);
