//! Realistic telemetry-like submissions for the example schemas, deterministic for a seed.
//!
//! Documents are nested, about 70% gzipped, with the edge's attributes (`uri`,
//! `submission_timestamp`, `user_agent`, `x_forwarded_for`, `remote_addr`). With an error rate
//! `R`, a share `R` of the records is broken, spread evenly over every [`ErrorKind`]. Two
//! mixes ([`Workload`]): the 4 original doctypes with documents of about 1.9 KB, or the 9
//! bundled doctypes with documents of about 3.6 KB (issue 8's benchmark workload).
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

/// Which documents a [`Generator`] makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Workload {
    /// Telemetry main and event (6-part URIs), Fenix baseline and `test`: 4 doctypes,
    /// documents of about 1.9 KB (inflated).
    #[default]
    Small,
    /// All 9 bundled doctypes: telemetry main, event, crash and new-profile (6-part URIs),
    /// Fenix baseline, metrics and events, desktop newtab, and `test`; documents of about
    /// 3.6 KB mean (inflated): the workload of the benchmark (`scripts/bench.sh`).
    Telemetry,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "small" => Ok(Workload::Small),
            "telemetry" => Ok(Workload::Telemetry),
            other => Err(format!(
                "unknown workload `{other}`: expected `small` or `telemetry`"
            )),
        }
    }
}

/// An endless, deterministic stream of records; `take(n)` what you need.
pub struct Generator {
    rng: ChaCha8Rng,
    error_rate: f64,
    next_error: usize,
    bomb: Option<Vec<u8>>,
    workload: Workload,
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
            workload: Workload::Small,
            duplicates: 0.0,
            recent: std::collections::VecDeque::new(),
        }
    }

    /// The same generator making `workload`'s documents.
    pub fn with_workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
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

    /// `(base, spread)`: `base + below(spread)` items, larger in the telemetry workload.
    fn sized(&mut self, small: (u64, u64), telemetry: (u64, u64)) -> u64 {
        let (base, spread) = match self.workload {
            Workload::Small => small,
            Workload::Telemetry => telemetry,
        };
        base + self.below(spread)
    }

    fn histogram(&mut self) -> Value {
        let buckets = self.sized((3, 12), (14, 28));
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

    fn hex(&mut self, digits: usize) -> String {
        let mut h = String::with_capacity(digits + 16);
        while h.len() < digits {
            h.push_str(&format!("{:016x}", self.rng.next_u64()));
        }
        h.truncate(digits);
        h
    }

    fn application(&mut self, channel: &str, version: &str, build: &str) -> Value {
        json!({"architecture": "x86-64", "buildId": build, "name": "Firefox",
            "version": version, "displayVersion": version, "vendor": "Mozilla",
            "platformVersion": version, "xpcomAbi": "x86_64-gcc3", "channel": channel})
    }

    fn environment(&mut self) -> Value {
        let mut addons = Map::new();
        for i in 0..self.below(6) {
            addons.insert(
                format!("addon{i}@example.com"),
                json!({"name": format!("Addon {i}"), "version": format!("1.{i}.{}", self.below(9)),
                       "isSystem": self.chance(0.3), "installDay": 19000 + self.below(1000)}),
            );
        }
        json!({
            "system": {"memoryMB": 4096 * (1 + self.below(8)),
                "cpu": {"count": 2 + self.below(14), "cores": 1 + self.below(8), "vendor": "GenuineIntel",
                        "extensions": ["SSE2", "SSE4_2", "AVX", "AVX2"]},
                "os": {"name": "Windows_NT", "version": "10.0", "locale": self.pick(LOCALES)}},
            "settings": {"locale": self.pick(LOCALES), "telemetryEnabled": true,
                "isDefaultBrowser": self.chance(0.4), "defaultSearchEngine": "google",
                "userPrefs": {"browser.search.region": "US", "dom.ipc.processCount": 8}},
            "addons": {"activeAddons": addons}
        })
    }

    fn crash_ping(&mut self, doc_id: &str, channel: &str, version: &str, build: &str) -> Value {
        let threads: Vec<Value> = (0..1 + self.below(3))
            .map(|_| {
                let frames: Vec<Value> = (0..4 + self.below(16))
                    .map(|_| {
                        json!({"ip": format!("0x{:x}", self.rng.next_u32()),
                            "module_index": self.below(20),
                            "trust": self.pick(&["context", "cfi", "frame_pointer", "scan"])})
                    })
                    .collect();
                json!({ "frames": frames })
            })
            .collect();
        let modules: Vec<Value> = (0..3 + self.below(10))
            .map(|i| {
                let base = 0x7ff0_0000_0000u64 + self.below(1 << 30) * 4096;
                json!({"base_addr": format!("0x{base:x}"), "end_addr": format!("0x{:x}", base + 65536),
                    "code_id": self.hex(24), "debug_file": format!("mod{i}.pdb"),
                    "debug_id": self.hex(33).to_uppercase(), "filename": format!("mod{i}.dll"),
                    "version": version})
            })
            .collect();
        let date = self.timestamp();
        json!({
            "type": "crash", "id": doc_id, "creationDate": date.clone(), "version": 4,
            "clientId": self.uuid(),
            "application": self.application(channel, version, build),
            "environment": self.environment(),
            "payload": {"crashDate": &date[..10], "crashTime": date,
                "processType": self.pick(&["main", "content", "gpu", "rdd", "utility"]),
                "hasCrashEnvironment": true, "sessionId": self.uuid(),
                "minidumpSha256Hash": self.hex(64),
                "metadata": {"AsyncShutdownTimeout": "", "StartupCrash": "0",
                    "MozCrashReason": format!("MOZ_RELEASE_ASSERT(x) #{}", self.below(100))},
                "stackTraces": {"status": "OK",
                    "crash_info": {"type": "EXCEPTION_ACCESS_VIOLATION_READ",
                        "address": format!("0x{:x}", self.rng.next_u32()), "crashing_thread": 0},
                    "threads": threads, "modules": modules}}
        })
    }

    fn new_profile_ping(
        &mut self,
        doc_id: &str,
        channel: &str,
        version: &str,
        build: &str,
    ) -> Value {
        let mut scalars = Map::new();
        for i in 0..20 + self.below(40) {
            let v = match i % 3 {
                0 => json!(self.below(10_000)),
                1 => json!(self.chance(0.5)),
                _ => json!(format!("value-{}", self.below(100))),
            };
            scalars.insert(format!("browser.engagement.metric_{i}"), v);
        }
        json!({
            "type": "new-profile", "id": doc_id, "creationDate": self.timestamp(), "version": 4,
            "clientId": self.uuid(),
            "application": self.application(channel, version, build),
            "environment": self.environment(),
            "payload": {"reason": self.pick(&["startup", "shutdown"]),
                "processes": {"parent": {"scalars": scalars}}}
        })
    }

    /// Glean's `client_info` and `ping_info`, as the baseline ping has them.
    fn glean_envelope(&mut self, reasons: &[&str]) -> (Value, Value) {
        let start = self.timestamp();
        (
            json!({"client_id": self.uuid(), "app_build": "21310123", "app_channel": "release",
                "app_display_version": "132.0.1", "architecture": "arm64", "device_manufacturer": "Google",
                "device_model": "Pixel 8", "first_run_date": "2025-03-01-05:00", "locale": self.pick(LOCALES),
                "os": "Android", "os_version": "14", "telemetry_sdk_build": "61.2.0"}),
            json!({"seq": self.below(5000), "start_time": format!("{}-05:00", &start[..16]),
                "end_time": format!("{}-05:00", &start[..16]), "reason": self.pick(reasons),
                "experiments": {"new-tab-layout": {"branch": "treatment"}}}),
        )
    }

    fn glean_metrics(&mut self, counters: u64) -> Value {
        let mut counter = Map::new();
        let mut quantity = Map::new();
        let mut timing = Map::new();
        for i in 0..counters {
            counter.insert(
                format!("browser.engagement.counter_{i}"),
                json!(self.below(2000)),
            );
            quantity.insert(format!("memory.quantity_{i}"), json!(self.below(1 << 20)));
        }
        for i in 0..2 + self.below(4) {
            let mut values = Map::new();
            let mut sum = 0;
            for b in 0..4 + self.below(8) {
                let v = self.below(200);
                sum += v << b;
                values.insert(format!("{}", 1u64 << b), json!(v));
            }
            timing.insert(
                format!("perf.timing_{i}"),
                json!({"sum": sum, "values": values}),
            );
        }
        let list: Vec<String> = (0..self.below(8)).map(|i| format!("item-{i}")).collect();
        json!({"counter": counter, "quantity": quantity, "timing_distribution": timing,
            "string": {"search.default_engine": "google", "app.distribution": "default"},
            "string_list": {"addons.enabled": list},
            "uuid": {"legacy.client_id": self.uuid()},
            "boolean": {"metrics.default_browser": self.chance(0.5)}})
    }

    fn glean_events(&mut self, n: u64) -> Value {
        let events: Vec<Value> = (0..n)
            .map(|_| {
                json!({"timestamp": self.below(10_000_000),
                    "category": self.pick(&["newtab", "topsites", "pocket", "search"]),
                    "name": self.pick(&["impression", "click", "opened", "closed"]),
                    "extra": {"position": format!("{}", self.below(12)),
                        "newtab_visit_id": self.uuid(), "source": "newtab"}})
            })
            .collect();
        Value::Array(events)
    }

    fn metrics_ping(&mut self) -> Value {
        let (client_info, ping_info) =
            self.glean_envelope(&["active", "dirty_startup", "inactive"]);
        let counters = 15 + self.below(30);
        json!({"client_info": client_info, "ping_info": ping_info,
            "metrics": self.glean_metrics(counters)})
    }

    fn fenix_events_ping(&mut self) -> Value {
        let (client_info, ping_info) = self.glean_envelope(&["active", "inactive", "max_capacity"]);
        let n = 8 + self.below(32);
        json!({"client_info": client_info, "ping_info": ping_info, "events": self.glean_events(n)})
    }

    fn newtab_ping(&mut self) -> Value {
        let (client_info, ping_info) =
            self.glean_envelope(&["newtab_session_end", "component_init"]);
        let counters = 4 + self.below(8);
        let n = 6 + self.below(24);
        json!({"client_info": client_info, "ping_info": ping_info,
            "metrics": self.glean_metrics(counters), "events": self.glean_events(n)})
    }

    fn main_ping(&mut self, doc_id: &str, channel: &str, version: &str, build: &str) -> Value {
        let mut histograms = Map::new();
        let n = match self.workload {
            Workload::Small => 2 + self.below(HISTOGRAMS.len() as u64 - 2),
            Workload::Telemetry => 4 + self.below(HISTOGRAMS.len() as u64 - 3),
        };
        for name in HISTOGRAMS.iter().take(n as usize) {
            histograms.insert(name.to_string(), self.histogram());
        }
        let mut keyed = Map::new();
        if self.workload == Workload::Telemetry || self.chance(0.5) {
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
        for _ in 0..self.sized((5, 40), (15, 45)) {
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

    fn test_doc(&mut self) -> Value {
        let tags: Vec<String> = (0..30 + self.below(120))
            .map(|i| format!("tag-{i}-{:08x}", self.rng.next_u32()))
            .collect();
        json!({"field": format!("value {}", self.below(1000)), "count": self.below(100), "tags": tags})
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
        let telemetry_uri = |doctype: &str| {
            format!("/submit/telemetry/{doc_id}/{doctype}/Firefox/{version}/{channel}/{build}")
        };
        let pick = self.below(100);
        let (uri, mut doc) = if self.workload == Workload::Telemetry {
            // Weights (percent) and mean inflated sizes tuned for a 3.6 KB mean document.
            match pick {
                0..=29 => (
                    telemetry_uri("main"),
                    self.main_ping(&doc_id, channel, &version, &build),
                ),
                30..=39 => (
                    telemetry_uri("event"),
                    self.event_ping(&doc_id, channel, &version),
                ),
                40..=46 => (
                    telemetry_uri("crash"),
                    self.crash_ping(&doc_id, channel, &version, &build),
                ),
                47..=52 => (
                    telemetry_uri("new-profile"),
                    self.new_profile_ping(&doc_id, channel, &version, &build),
                ),
                53..=69 => (
                    format!("/submit/org-mozilla-fenix/baseline/1/{doc_id}"),
                    self.baseline_ping(),
                ),
                70..=79 => (
                    format!("/submit/org-mozilla-fenix/metrics/1/{doc_id}"),
                    self.metrics_ping(),
                ),
                80..=87 => (
                    format!("/submit/org-mozilla-fenix/events/1/{doc_id}"),
                    self.fenix_events_ping(),
                ),
                88..=94 => (
                    format!("/submit/firefox-desktop/newtab/1/{doc_id}"),
                    self.newtab_ping(),
                ),
                _ => (format!("/submit/test/test/1/{doc_id}"), self.test_doc()),
            }
        } else if pick < 45 {
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
            (format!("/submit/test/test/1/{doc_id}"), self.test_doc())
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
    fn the_telemetry_workload_has_9_doctypes_and_3_6_kb_documents() {
        let msgs: Vec<Message> = Generator::new(5, 0.0)
            .with_workload(Workload::Telemetry)
            .take(4000)
            .filter_map(|r| r.message().cloned())
            .collect();
        let mut inflated = 0usize;
        let mut gzipped = 0usize;
        let mut doctypes = std::collections::BTreeSet::new();
        let registry = sluice_schemas::SchemaRegistry::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/json"
        ))
        .unwrap();
        for m in &msgs {
            let body = if m.payload.starts_with(&[0x1f, 0x8b]) {
                gzipped += 1;
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&m.payload[..]),
                    &mut out,
                )
                .unwrap();
                out
            } else {
                m.payload.to_vec()
            };
            inflated += body.len();
            let uri = m.attribute("uri").unwrap();
            let parts: Vec<&str> = uri.split('/').collect();
            // the telemetry form has 6 parts after /submit/telemetry: id, doctype, app fields
            let doctype = if parts[2] == "telemetry" {
                assert_eq!(parts.len(), 9, "{uri}");
                parts[4]
            } else {
                parts[3]
            };
            doctypes.insert(format!("{}/{doctype}", parts[2]));
            // every valid document validates against its bundled schema
            let doc: Value = serde_json::from_slice(&body).unwrap();
            let version = if parts[2] == "telemetry" {
                doc["version"].as_u64().unwrap() as u32
            } else {
                parts[4].parse().unwrap()
            };
            let schema = registry.find(parts[2], doctype, version).unwrap();
            if let Err(e) = schema.validate(&doc) {
                panic!("{uri}: {e}");
            }
        }
        let mean = inflated / msgs.len();
        eprintln!(
            "mean inflated document {mean} bytes, {gzipped} of {} gzipped, {doctypes:?}",
            msgs.len()
        );
        assert_eq!(doctypes.len(), 9, "{doctypes:?}");
        assert!((3300..=3900).contains(&mean), "mean {mean}");
        assert!((2600..=3000).contains(&gzipped), "{gzipped} gzipped");
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
