//! Realistic telemetry-like submissions for the example schemas, deterministic for a seed.
//!
//! Documents are nested, 1–8 KB, about 70% gzipped, with the edge's attributes (`uri`,
//! `submission_timestamp`, `user_agent`, `x_forwarded_for`, `remote_addr`). With an error rate
//! `R`, a share `R` of the records is broken, spread evenly over every [`ErrorKind`].
//!
//! ```
//! use sluice_pipelines::generate::{Generator, Record};
//! let a: Vec<Record> = Generator::new(7, 0.1).take(50).collect();
//! let b: Vec<Record> = Generator::new(7, 0.1).take(50).collect();
//! assert_eq!(a, b);
//! ```

use std::io::Write;

use flate2::write::GzEncoder;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use sluice::Message;

/// The ways a generated record is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A URI that matches no submission form.
    BadUri,
    /// A document id that is not a UUID.
    BadDocumentId,
    /// A payload with a gzip header and a corrupt body.
    CorruptGzip,
    /// A payload that is not JSON.
    NotJson,
    /// A JSON document that fails its schema.
    SchemaInvalid,
    /// A namespace/doctype with no schema.
    UnknownDoctype,
    /// A gzip payload that inflates past the decoder's 8 MB limit.
    TooLarge,
    /// A line (or frame) that is not even a message.
    Unframable,
}

impl ErrorKind {
    /// Every kind, in the order the generator cycles through them.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadUri,
        ErrorKind::BadDocumentId,
        ErrorKind::CorruptGzip,
        ErrorKind::NotJson,
        ErrorKind::SchemaInvalid,
        ErrorKind::UnknownDoctype,
        ErrorKind::TooLarge,
        ErrorKind::Unframable,
    ];
}

/// One generated record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A submission (valid or broken in its content).
    Message(Message),
    /// Bytes that do not frame as a message (written as one raw line or a broken frame).
    Unframable(Vec<u8>),
}

impl Record {
    /// Writes the record as one gcp-ingestion ndjson line.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        match self {
            Record::Message(m) => {
                let mut line = String::with_capacity(m.byte_size() * 4 / 3 + 128);
                m.write_json_line(&mut line);
                out.extend_from_slice(line.as_bytes());
            }
            Record::Unframable(raw) => out.extend_from_slice(raw),
        }
        out.push(b'\n');
    }

    /// Writes the record as one Heka stream frame (Mozilla's edge to Kafka format); an
    /// unframable record is written as its raw bytes, a broken stretch between frames.
    pub fn write_heka_frame(
        &self,
        out: &mut Vec<u8>,
    ) -> Result<(), sluice_schemas::heka::ConversionError> {
        match self {
            Record::Message(m) => {
                let heka = sluice_schemas::heka::message_to_heka(m)?;
                out.extend_from_slice(&sluice_schemas::heka::encode_frame(&heka));
            }
            Record::Unframable(raw) => out.extend_from_slice(raw),
        }
        Ok(())
    }

    /// The message, if the record is one.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Record::Message(m) => Some(m),
            Record::Unframable(_) => None,
        }
    }
}

/// An endless, deterministic stream of records; `take(n)` what you need.
pub struct Generator {
    rng: ChaCha8Rng,
    error_rate: f64,
    next_error: usize,
    bomb: Option<Vec<u8>>,
    duplicates: f64,
    recent: std::collections::VecDeque<Message>,
}

/// How many recent submissions a resend may copy.
const RESEND_HORIZON: usize = 1000;

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.6; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "org.mozilla.fenix/132.0.1 (Android 14; Pixel 8)",
];
const CHANNELS: &[&str] = &["release", "beta", "nightly", "esr"];
const LOCALES: &[&str] = &["en-US", "de", "fr", "ja", "pt-BR", "es-ES"];
const HISTOGRAMS: &[&str] = &[
    "GC_MS",
    "CYCLE_COLLECTOR_MAX_PAUSE",
    "FX_TAB_SWITCH_TOTAL_MS",
    "MEMORY_RESIDENT_FAST",
    "HTTP_PAGELOAD_IS_SSL",
    "TIME_TO_FIRST_INTERACTION_MS",
    "CONTENT_PAINT_TIME",
    "SSL_HANDSHAKE_VERSION",
    "PLACES_BOOKMARKS_COUNT",
    "SEARCH_SERVICE_INIT_MS",
];

impl Generator {
    /// A generator for `seed` that breaks a share `error_rate` (0..=1) of its records.
    pub fn new(seed: u64, error_rate: f64) -> Self {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            error_rate: error_rate.clamp(0.0, 1.0),
            next_error: 0,
            bomb: None,
            duplicates: 0.0,
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Makes a share `rate` (0..=1) of the records resends: exact copies (same `uri`, same
    /// payload) of one of the last 1,000 submissions, as a client resends after a network
    /// error.
    pub fn with_duplicates(mut self, rate: f64) -> Self {
        self.duplicates = rate.clamp(0.0, 1.0);
        self
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn timestamp(&mut self) -> String {
        let day = 19 + self.below(3);
        let (h, m, s, us) = (
            self.below(24),
            self.below(60),
            self.below(60),
            self.below(1_000_000),
        );
        format!("2026-11-{day:02}T{h:02}:{m:02}:{s:02}.{us:06}Z")
    }

    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            11 + self.below(200),
            self.below(256),
            self.below(256),
            1 + self.below(254)
        )
    }

    fn histogram(&mut self) -> Value {
        let buckets = 3 + self.below(12);
        let mut values = Map::new();
        let mut sum = 0u64;
        for b in 0..buckets {
            let v = self.below(500);
            sum += v * (b + 1);
            values.insert(format!("{}", b * b * 10), json!(v));
        }
        json!({"bucket_count": buckets + 2, "histogram_type": self.below(5), "sum": sum,
               "range": [1, 10000], "values": values})
    }

    fn main_ping(&mut self, doc_id: &str, channel: &str, version: &str, build: &str) -> Value {
        let mut histograms = Map::new();
        let n = 2 + self.below(HISTOGRAMS.len() as u64 - 2);
        for name in HISTOGRAMS.iter().take(n as usize) {
            histograms.insert(name.to_string(), self.histogram());
        }
        let mut keyed = Map::new();
        if self.chance(0.5) {
            let mut inner = Map::new();
            for key in ["google", "bing", "ddg"]
                .iter()
                .take(1 + self.below(3) as usize)
            {
                inner.insert(key.to_string(), self.histogram());
            }
            keyed.insert("SEARCH_COUNTS".to_string(), Value::Object(inner));
        }
        let mut addons = Map::new();
        for i in 0..self.below(6) {
            addons.insert(
                format!("addon{i}@example.com"),
                json!({"name": format!("Addon {i}"), "version": format!("1.{i}.{}", self.below(9)),
                       "isSystem": self.chance(0.3), "installDay": 19000 + self.below(1000)}),
            );
        }
        json!({
            "type": "main", "id": doc_id, "creationDate": self.timestamp(), "version": 4,
            "clientId": self.uuid(),
            "application": {"architecture": "x86-64", "buildId": build, "name": "Firefox",
                "version": version, "displayVersion": version, "vendor": "Mozilla",
                "platformVersion": version, "xpcomAbi": "x86_64-gcc3", "channel": channel},
            "environment": {
                "system": {"memoryMB": 4096 * (1 + self.below(8)),
                    "cpu": {"count": 2 + self.below(14), "cores": 1 + self.below(8), "vendor": "GenuineIntel",
                            "extensions": ["SSE2", "SSE4_2", "AVX", "AVX2"]},
                    "os": {"name": "Windows_NT", "version": "10.0", "locale": self.pick(LOCALES)}},
                "settings": {"locale": self.pick(LOCALES), "telemetryEnabled": true,
                    "isDefaultBrowser": self.chance(0.4), "defaultSearchEngine": "google",
                    "userPrefs": {"browser.search.region": "US", "dom.ipc.processCount": 8}},
                "addons": {"activeAddons": addons}
            },
            "payload": {
                "info": {"reason": self.pick(&["aborted-session", "daily", "environment-change", "shutdown"]),
                    "sessionId": self.uuid(), "subsessionId": self.uuid(),
                    "subsessionCounter": 1 + self.below(20), "sessionLength": self.below(100_000)},
                "simpleMeasurements": {"totalTime": self.below(100_000), "uptime": self.below(2000),
                    "main": self.below(500), "firstPaint": self.below(3000), "sessionRestored": self.below(4000)},
                "histograms": histograms,
                "keyedHistograms": keyed
            }
        })
    }

    fn event_ping(&mut self, doc_id: &str, channel: &str, version: &str) -> Value {
        let mut events = Vec::new();
        for _ in 0..(5 + self.below(40)) {
            events.push(json!([self.below(1_000_000),
                self.pick(&["navigation", "pwmgr", "security.ui", "urlbar"]),
                self.pick(&["search", "open", "click", "engagement"]),
                self.pick(&["urlbar", "bookmark", "tab", "menu"]),
                if self.chance(0.5) { Value::from("enter") } else { Value::Null },
                {"engine": "google", "window": "1"}]));
        }
        json!({
            "type": "event", "id": doc_id, "creationDate": self.timestamp(), "version": 4,
            "clientId": self.uuid(),
            "application": {"name": "Firefox", "version": version, "channel": channel, "buildId": "20261101000000"},
            "payload": {"reason": self.pick(&["max", "periodic", "shutdown"]),
                "processStartTimestamp": self.below(1_000_000_000), "sessionId": self.uuid(),
                "subsessionId": self.uuid(), "lostEventsCount": 0,
                "events": {"parent": events}}
        })
    }

    fn baseline_ping(&mut self) -> Value {
        let mut counters = Map::new();
        for name in [
            "browser.total_uri_count",
            "events.total_uri_count",
            "metrics.tabs_open",
        ] {
            counters.insert(name.to_string(), json!(self.below(2000)));
        }
        let mut labeled = Map::new();
        for (i, engine) in ["google", "bing", "ddg", "ecosia"].iter().enumerate() {
            if self.chance(0.7) {
                labeled.insert(
                    format!("browser.search.{i}"),
                    json!({ *engine: self.below(50) }),
                );
            }
        }
        let start = self.timestamp();
        json!({
            "client_info": {"client_id": self.uuid(), "app_build": "21310123", "app_channel": "release",
                "app_display_version": "132.0.1", "architecture": "arm64", "device_manufacturer": "Google",
                "device_model": "Pixel 8", "first_run_date": "2025-03-01-05:00", "locale": self.pick(LOCALES),
                "os": "Android", "os_version": "14", "telemetry_sdk_build": "61.2.0"},
            "ping_info": {"seq": self.below(5000), "start_time": format!("{}-05:00", &start[..16]), "end_time": format!("{}-05:00", &start[..16]),
                "reason": self.pick(&["active", "dirty_startup", "inactive"]),
                "experiments": {"new-tab-layout": {"branch": "treatment"}}},
            "metrics": {"counter": counters, "labeled_counter": labeled,
                "boolean": {"metrics.default_browser": self.chance(0.5)},
                "timespan": {"glean.baseline.duration": {"time_unit": "second", "value": self.below(3600)}}}
        })
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(
            Vec::with_capacity(data.len() / 3),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn bomb(&mut self) -> Vec<u8> {
        self.bomb
            .get_or_insert_with(|| {
                let mut doc = b"{\"type\":\"main\",\"padding\":\"".to_vec();
                doc.resize(doc.len() + 9_000_000, b'a');
                doc.extend_from_slice(b"\"}");
                Self::gzip(&doc)
            })
            .clone()
    }

    fn next_record(&mut self) -> Record {
        let error = if self.chance(self.error_rate) {
            let kind = ErrorKind::ALL[self.next_error % ErrorKind::ALL.len()];
            self.next_error += 1;
            Some(kind)
        } else {
            None
        };
        if error == Some(ErrorKind::Unframable) {
            let n = self.below(3);
            let junk: &[u8] = match n {
                0 => b"{\"attributeMap\": {\"uri\": \"/submit/test/test/1/x\"}, \"payload\": ",
                1 => b"this line is not an envelope",
                _ => b"{\"payload\": 42}",
            };
            return Record::Unframable(junk.to_vec());
        }
        let doc_id = if error == Some(ErrorKind::BadDocumentId) {
            format!("not-a-uuid-{}", self.below(1000))
        } else {
            self.uuid()
        };
        let channel = self.pick(CHANNELS);
        let major = 128 + self.below(6);
        let version = format!("{major}.0");
        let build = format!("202611{:02}{:06}", 1 + self.below(20), self.below(240000));
        let pick = self.below(100);
        let (uri, mut doc) = if pick < 45 {
            (
                format!("/submit/telemetry/{doc_id}/main/Firefox/{version}/{channel}/{build}"),
                self.main_ping(&doc_id, channel, &version, &build),
            )
        } else if pick < 65 {
            (
                format!("/submit/telemetry/{doc_id}/event/Firefox/{version}/{channel}/{build}"),
                self.event_ping(&doc_id, channel, &version),
            )
        } else if pick < 90 {
            (
                format!("/submit/org-mozilla-fenix/baseline/1/{doc_id}"),
                self.baseline_ping(),
            )
        } else {
            let tags: Vec<String> = (0..30 + self.below(120))
                .map(|i| format!("tag-{i}-{:08x}", self.rng.next_u32()))
                .collect();
            (
                format!("/submit/test/test/1/{doc_id}"),
                json!({"field": format!("value {}", self.below(1000)), "count": self.below(100), "tags": tags}),
            )
        };
        let uri = match error {
            Some(ErrorKind::BadUri) => match self.below(3) {
                0 => format!("/submit/telemetry/{doc_id}"),
                1 => "/bogus/path".to_string(),
                _ => format!("/submit/org-mozilla-fenix/baseline/{doc_id}"),
            },
            Some(ErrorKind::UnknownDoctype) => {
                format!("/submit/org-mozilla-fenix/no-such-ping/1/{doc_id}")
            }
            _ => uri,
        };
        if error == Some(ErrorKind::SchemaInvalid) {
            match doc.as_object_mut() {
                Some(o) if o.contains_key("clientId") => {
                    o.insert("clientId".to_string(), json!(12345));
                }
                Some(o) if o.contains_key("client_info") => {
                    o.remove("ping_info");
                }
                Some(o) => {
                    o.insert("bad".to_string(), json!(true));
                }
                None => {}
            }
        }
        let mut body = serde_json::to_vec(&doc).unwrap_or_default();
        let mut gzipped = self.chance(0.7);
        match error {
            Some(ErrorKind::NotJson) => {
                body = format!("<html>not json {}</html>", self.below(1000)).into_bytes();
            }
            Some(ErrorKind::CorruptGzip) => {
                let mut z = Self::gzip(&body);
                let mid = z.len() / 2;
                for b in &mut z[10..mid.max(11)] {
                    *b ^= 0x5a;
                }
                body = z;
                gzipped = false;
            }
            Some(ErrorKind::TooLarge) => {
                body = self.bomb();
                gzipped = false;
            }
            _ => {}
        }
        if gzipped {
            body = Self::gzip(&body);
        }
        let ua = self.pick(USER_AGENTS);
        let mut m = Message::new(body)
            .with_attribute("uri", uri)
            .with_attribute("submission_timestamp", self.timestamp())
            .with_attribute("user_agent", ua)
            .with_attribute("remote_addr", "172.31.0.1");
        if self.chance(0.8) {
            let xff = format!("{}, {}", self.ip(), self.ip());
            m = m.with_attribute("x_forwarded_for", xff);
        }
        if self.chance(0.3) {
            m = m.with_attribute("args", "v=4");
        }
        Record::Message(m)
    }
}

impl Iterator for Generator {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        if self.duplicates > 0.0 && !self.recent.is_empty() && self.chance(self.duplicates) {
            let i = self.below(self.recent.len() as u64) as usize;
            return Some(Record::Message(self.recent[i].clone()));
        }
        let record = self.next_record();
        if self.duplicates > 0.0 {
            if let Record::Message(m) = &record {
                if self.recent.len() == RESEND_HORIZON {
                    self.recent.pop_front();
                }
                self.recent.push_back(m.clone());
            }
        }
        Some(record)
    }
}

/// `count` messages (unframable records left out), for in-memory runs and benches.
pub fn messages(count: usize, seed: u64, error_rate: f64) -> Vec<Message> {
    messages_with_duplicates(count, seed, error_rate, 0.0)
}

/// Like [`messages`], a share `duplicates` of them resends (see [`Generator::with_duplicates`]).
pub fn messages_with_duplicates(
    count: usize,
    seed: u64,
    error_rate: f64,
    duplicates: f64,
) -> Vec<Message> {
    Generator::new(seed, error_rate)
        .with_duplicates(duplicates)
        .filter_map(|r| match r {
            Record::Message(m) => Some(m),
            Record::Unframable(_) => None,
        })
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_mix_look_like_telemetry() {
        let records: Vec<Record> = Generator::new(1, 0.0).take(300).collect();
        let msgs: Vec<&Message> = records.iter().filter_map(Record::message).collect();
        assert_eq!(msgs.len(), 300);
        let gz = msgs
            .iter()
            .filter(|m| m.payload.starts_with(&[0x1f, 0x8b]))
            .count();
        assert!((150..=260).contains(&gz), "{gz} gzipped");
        for m in &msgs {
            assert!(m.attribute("uri").unwrap().starts_with("/submit/"));
            if !m.payload.starts_with(&[0x1f, 0x8b]) {
                assert!(
                    m.payload.len() >= 200 && m.payload.len() <= 12_000,
                    "{}",
                    m.payload.len()
                );
            }
        }
    }

    #[test]
    fn a_share_of_records_are_resends_of_recent_ones() {
        let records: Vec<Record> = Generator::new(5, 0.0)
            .with_duplicates(0.05)
            .take(20_000)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let resends = records
            .iter()
            .filter_map(|r| match r {
                Record::Message(m) => Some(m.attribute("uri").unwrap().to_string()),
                Record::Unframable(_) => None,
            })
            .filter(|uri| !seen.insert(uri.clone()))
            .count();
        assert!(
            (800..1200).contains(&resends),
            "{resends} resends of 20,000"
        );
        let plain: Vec<Record> = Generator::new(5, 0.0).take(100).collect();
        let again: Vec<Record> = Generator::new(5, 0.0)
            .with_duplicates(0.0)
            .take(100)
            .collect();
        assert_eq!(plain, again, "no duplicates: the same stream as before");
    }

    #[test]
    fn every_error_kind_appears() {
        let records: Vec<Record> = Generator::new(3, 0.5).take(200).collect();
        assert!(records.iter().any(|r| matches!(r, Record::Unframable(_))));
        assert!(records
            .iter()
            .filter_map(Record::message)
            .any(|m| m.attribute("uri").unwrap().contains("not-a-uuid")));
    }
}
