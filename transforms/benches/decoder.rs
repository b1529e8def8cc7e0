//! The `Decoder` on telemetry-like input (valid telemetry/main v4 documents of ~1 KB and ~8 KB,
//! 70% gzipped), against a bare loop doing the same work by hand in the same run: serde_json,
//! flate2 (same backend) and the same precompiled validators.
//!
//! `cargo bench -p sluice-transforms --bench decoder`; prints MB/s of input and msgs/s of both,
//! and their ratio.

#[path = "../tests/decode_support.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use serde_json::Value;
use sluice::{Bytes, MemorySink, MemorySource, Message, Pipeline};
use sluice_schemas::SchemaRegistry;
use sluice_transforms::decode::{nest_metadata, sample_id, Decoder};
use support::*;

fn workload(n: usize, doc_bytes: usize) -> Vec<Message> {
    let mut rng = Rng::new(doc_bytes as u64);
    // a pool of distinct documents, reused, so generation does not dominate set-up
    let pool: Vec<Vec<u8>> = (0..200)
        .map(|_| telemetry_main(&mut rng, doc_bytes).to_string().into_bytes())
        .collect();
    (0..n)
        .map(|i| {
            let doc = &pool[i % pool.len()];
            let payload = if i % 10 < 7 { gzip(doc) } else { doc.clone() };
            submission(payload, telemetry_uri(&rng.uuid(), "main"), &mut rng)
        })
        .collect()
}

fn run_decoder(registry: &Arc<SchemaRegistry>, input: Vec<Message>) -> usize {
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let registry = registry.clone();
    let source = MemorySource::from(input);
    Pipeline::new("bench")
        .stack_traces(false)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", source.clone())
                .apply("decoder", Decoder::new(registry.clone()))
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead", d.clone());
            Ok(())
        })
        .expect("the pipeline runs");
    assert!(dead.is_empty());
    out.len()
}

/// The same work without the SDK: parse the uri, gunzip, bound, parse once, validate, add the
/// client id, write the payload with metadata.
fn bare_loop(registry: &SchemaRegistry, input: Vec<Message>) -> usize {
    let mut out = Vec::with_capacity(input.len());
    for m in input {
        let mut attributes: BTreeMap<String, String> = m.attributes.clone();
        let uri = attributes["uri"].clone();
        let parts: Vec<&str> = uri.trim_start_matches("/submit/").split('/').collect();
        for (k, v) in [
            ("document_namespace", parts[0]),
            ("document_id", parts[1]),
            ("document_type", parts[2]),
            ("app_name", parts[3]),
            ("app_version", parts[4]),
            ("app_update_channel", parts[5]),
            ("app_build_id", parts[6]),
        ] {
            attributes.insert(k.to_string(), v.to_string());
        }
        let payload: Bytes = if m.payload.starts_with(&[0x1f, 0x8b]) {
            let mut buf = Vec::with_capacity(m.payload.len() * 6);
            flate2::read::MultiGzDecoder::new(&m.payload[..])
                .take(80 << 20)
                .read_to_end(&mut buf)
                .expect("valid gzip");
            attributes.insert("client_compression".into(), "gzip".into());
            Bytes::from(buf)
        } else {
            m.payload.clone()
        };
        assert!(payload.len() <= 8 << 20);
        let doc: Value = serde_json::from_slice(&payload).expect("valid json");
        let version = doc["version"].to_string();
        let schema = registry
            .get("telemetry", "main", version.parse().expect("a version"))
            .expect("a schema");
        schema.validate(&doc).expect("valid");
        attributes.insert("document_version".into(), version);
        let client_id = doc["clientId"].as_str().expect("a client id");
        attributes.insert("sample_id".into(), sample_id(client_id).to_string());
        attributes.insert("client_id".into(), client_id.to_string());
        let meta = nest_metadata(&attributes);
        let mut with = Vec::with_capacity(payload.len() + meta.len() + 1);
        with.push(b'{');
        with.extend_from_slice(&meta);
        with.push(b',');
        with.extend_from_slice(&payload[1..]);
        out.push(Message::new(with).with_attributes(attributes));
    }
    out.len()
}

fn bench(c: &mut Criterion) {
    let registry = registry();
    let mut report = Vec::new();
    for (label, doc_bytes, n) in [("1KB", 1024, 20_000), ("8KB", 8 * 1024, 5_000)] {
        let input = workload(n, doc_bytes);
        let input_bytes: usize = input.iter().map(|m| m.payload.len()).sum();
        let mut group = c.benchmark_group(format!("decoder_{label}"));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(8))
            .throughput(Throughput::Bytes(input_bytes as u64));
        group.bench_function("decoder", |b| {
            b.iter_batched(
                || input.clone(),
                |i| run_decoder(&registry, i),
                BatchSize::PerIteration,
            )
        });
        group.bench_function("bare_loop", |b| {
            b.iter_batched(
                || input.clone(),
                |i| bare_loop(&registry, i),
                BatchSize::PerIteration,
            )
        });
        group.finish();
        // a direct measurement for the summary line (median of 5)
        let time = |f: &dyn Fn(Vec<Message>) -> usize| {
            let mut t: Vec<Duration> = (0..5)
                .map(|_| {
                    let i = input.clone();
                    let start = Instant::now();
                    assert_eq!(f(i), n);
                    start.elapsed()
                })
                .collect();
            t.sort();
            t[2]
        };
        let d = time(&|i| run_decoder(&registry, i));
        let b = time(&|i| bare_loop(&registry, i));
        report.push((label, n, input_bytes, d, b));
    }
    for (label, n, bytes, d, b) in report {
        let mbs = |t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();
        let mps = |t: Duration| n as f64 / t.as_secs_f64();
        println!(
            "{label}: decoder {:.1} MB/s {:.0} msgs/s | bare loop {:.1} MB/s {:.0} msgs/s | ratio {:.0}%  ({n} msgs, {:.1} MB input)",
            mbs(d),
            mps(d),
            mbs(b),
            mps(b),
            100.0 * b.as_secs_f64() / d.as_secs_f64(),
            bytes as f64 / 1e6
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
