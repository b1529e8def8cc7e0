//! Deterministic documents and submissions for the decoder's tests and benchmark
//! (included with `#[path]` by `decode*.rs` tests and `benches/decoder.rs`).
#![allow(dead_code)]

use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Value};
use sluice::Message;
use sluice_schemas::SchemaRegistry;

/// The example schemas of the `sluice-schemas` crate.
pub fn registry() -> Arc<SchemaRegistry> {
    Arc::new(
        SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json"))
            .expect("the example schemas load"),
    )
}

/// A small deterministic generator (xorshift), so fixtures never change by accident.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
    pub fn word(&mut self) -> String {
        const WORDS: [&str; 8] = [
            "alpha", "beta", "gamma", "delta", "echo", "fox", "golf", "hotel",
        ];
        WORDS[self.below(8) as usize].to_string()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// A valid telemetry `main` v4 document of about `target_bytes` (histograms fill it up).
pub fn telemetry_main(rng: &mut Rng, target_bytes: usize) -> Value {
    let mut histograms = serde_json::Map::new();
    let mut doc = json!({
        "type": "main",
        "id": rng.uuid(),
        "creationDate": "2024-03-01T12:34:56.789Z",
        "version": 4,
        "clientId": rng.uuid(),
        "application": {
            "architecture": "x86-64", "buildId": "20240301093000", "name": "Firefox",
            "version": "124.0", "platformVersion": "124.0", "channel": "release",
            "vendor": "Mozilla", "xpcomAbi": "x86_64-gcc3"
        },
        "environment": {
            "system": {"memoryMB": 16000, "cpu": {"count": 8, "cores": 4, "vendor": "GenuineIntel",
                "extensions": ["SSE2", "AVX"]}, "os": {"name": "Linux", "version": "6.1", "locale": "en-US"}},
            "settings": {"locale": "en-US", "telemetryEnabled": true, "isDefaultBrowser": null,
                "defaultSearchEngine": "google", "userPrefs": {"browser.x": 1, "browser.y": "z"}}
        },
        "payload": {"histograms": {}}
    });
    let mut i = 0;
    while doc.to_string().len() + histograms.len() * 10 < target_bytes {
        let mut values = serde_json::Map::new();
        for b in 0..(3 + rng.below(6)) {
            values.insert(format!("{}", b * 3), json!(rng.below(1000)));
        }
        histograms.insert(
            format!("{}_{}", rng.word().to_uppercase(), i),
            json!({"bucket_count": 20, "histogram_type": 0, "sum": rng.below(100000),
                   "range": [1, 1000], "values": values}),
        );
        i += 1;
        doc["payload"]["histograms"] = Value::Object(histograms.clone());
    }
    doc
}

pub fn telemetry_event(rng: &mut Rng) -> Value {
    json!({
        "type": "event", "id": rng.uuid(), "creationDate": "2024-03-01T12:00:00Z", "version": 4,
        "clientId": rng.uuid(),
        "application": {"name": "Firefox", "version": "124.0", "channel": "beta"},
        "payload": {"reason": "periodic", "processStartTimestamp": 1000, "events": {
            "parent": [[rng.below(10000), "navigation", "search", rng.word(), null, {"engine": "ddg"}]]
        }}
    })
}

pub fn fenix_baseline(rng: &mut Rng) -> Value {
    json!({
        "$schema": "moz://mozilla.org/schemas/glean/ping/1",
        "client_info": {"client_id": rng.uuid(), "telemetry_sdk_build": "52.0.0", "os": "Android",
            "app_channel": "release", "first_run_date": "2024-01-02+01:00"},
        "ping_info": {"seq": rng.below(1000), "start_time": "2024-03-01T10:00+01:00",
            "end_time": "2024-03-01T11:00+01:00", "reason": "active"},
        "metrics": {"counter": {"events.total_uri_count": rng.below(50)},
            "string": {"search.default_engine": rng.word()}}
    })
}

pub fn test_doc(rng: &mut Rng) -> Value {
    json!({"field": rng.word(), "count": rng.below(100), "tags": [rng.word(), rng.word()]})
}

/// A submission as the edge would send it: `uri`, `submission_timestamp` and a few headers.
pub fn submission(payload: impl Into<sluice::Bytes>, uri: String, rng: &mut Rng) -> Message {
    Message::new(payload)
        .with_attribute("uri", uri)
        .with_attribute(
            "submission_timestamp",
            format!(
                "2024-03-01T12:{:02}:{:02}.000000Z",
                rng.below(60),
                rng.below(60)
            ),
        )
        .with_attribute("x_debug_id", "golden")
        .with_attribute("geo_country", "FR")
        .with_attribute("geo_city", "Paris")
        .with_attribute("user_agent_os", "Linux")
        .with_attribute("date", "Fri, 01 Mar 2024 12:00:00 GMT")
}

pub fn telemetry_uri(id: &str, doctype: &str) -> String {
    format!("/submit/telemetry/{id}/{doctype}/Firefox/124.0/release/20240301093000")
}

pub fn generic_uri(namespace: &str, doctype: &str, version: u32, id: &str) -> String {
    format!("/submit/{namespace}/{doctype}/{version}/{id}")
}
