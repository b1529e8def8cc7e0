//! The contracts the fuzz targets assert, one function per entry point, each taking the raw
//! bytes a fuzzer (or a property test) chose.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the stable property-based
//! pass (`transforms/tests/fuzz_props.rs`, which includes this file), so that both check the
//! same things. Every contract is more than "does not panic": errors must be values, outputs
//! must agree with an independent reading of the same input, and bounds must hold.

// The steps hand a refused message back whole with its error (their design): large `Err`s.
#![allow(clippy::result_large_err)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, OnceLock};

use sluice::{DeadLetter, Message, SourcePosition};
use sluice_schemas::{Limits, SchemaRegistry};
use sluice_transforms::decode::{DecodeError, DecompressPayload, ParsePayload, ParseUri};
use sluice_transforms::io::file::RecordReader;
use sluice_transforms::io::format::{InputFormat, READ_INPUT_ERROR_TYPE};
use sluice_transforms::io::object::{check_object_name, ObjectNames, PathTemplate};

// ---------------------------------------------------------------------------------------------
// Memory accounting

thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed by this thread since counting started.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The highest `LIVE` reached.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// A global allocator that can measure the peak of the bytes one thread holds during a call
/// ([`peak_bytes_during`]); install it with `#[global_allocator]` in the binary.
pub struct CountingAlloc;

fn count(delta: isize) {
    // `try_with`: allocations during thread teardown are simply not counted
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` and returns its result with the most bytes this thread held at once meanwhile,
/// beyond what it held before (0 unless [`CountingAlloc`] is the global allocator).
pub fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.set(0);
    PEAK.set(0);
    COUNTING.set(true);
    let out = f();
    COUNTING.set(false);
    (out, PEAK.get().max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// An error is a value that describes itself: a non-empty message, lowercase-led, without a
/// trailing period, and a finite source chain.
fn check_error(e: &(dyn std::error::Error + 'static)) {
    let mut depth = 0;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        assert!(!text.is_empty(), "an error with an empty message: {c:?}");
        depth += 1;
        assert!(depth < 32, "an error chain that does not end");
        cause = c.source();
    }
    let text = e.to_string();
    // an ellipsis (`expected /submit/<namespace>/...`) is not a period
    assert!(
        !text.ends_with('.') || text.ends_with("..."),
        "error message ends with a period: {text}"
    );
}

/// Splits `data` at its first `0xff`: a small header choosing parameters, and the input.
fn split_header(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[], data),
    }
}

fn position_line(position: &Option<SourcePosition>) -> Option<u64> {
    match position {
        Some(SourcePosition::Line { line, .. }) => Some(*line),
        _ => None,
    }
}

fn position_offset(position: &Option<SourcePosition>) -> Option<u64> {
    match position {
        Some(SourcePosition::Offset { offset, .. }) => Some(*offset),
        _ => None,
    }
}

fn dead_position(dead: &DeadLetter, key: &str) -> u64 {
    dead.source_position
        .get(key)
        .unwrap_or_else(|| panic!("dead letter without `{key}`: {dead:?}"))
        .parse()
        .expect("a numeric position")
}

/// Reads all of `input` with `reader`, in small batches, so that batch boundaries are
/// exercised; the reader must end, and never fail on an in-memory stream.
fn read_all(mut reader: RecordReader<&[u8]>, input_len: usize) -> Vec<Result<Message, DeadLetter>> {
    let mut out = Vec::new();
    // every call makes progress or ends: a bound on calls catches a reader that stalls
    for _ in 0..=input_len + 2 {
        let batch = reader
            .read_batch(&mut out, 3, 1 << 12)
            .expect("an in-memory stream never fails to read");
        if batch.end {
            return out;
        }
    }
    panic!("the reader did not reach the end of a {input_len}-byte input");
}

// ---------------------------------------------------------------------------------------------
// Contracts

/// The envelope (ndjson) reader: every line that is not blank becomes exactly one record, in
/// order, with its 1-based line number; a record is the message [`Message::from_json_line`]
/// decodes from the line, or a `ReadInput` dead letter holding the line's bytes (its first
/// `max` bytes when the line is over the limit). A decoded message round-trips through
/// [`Message::write_json_line`].
///
/// Input: an optional header (before the first `0xff`) whose first byte sets the line limit.
pub fn envelope(data: &[u8]) {
    let (header, input) = split_header(data);
    let max_line = header.first().map_or(64 * 1024, |&b| usize::from(b) + 1);
    let reader = RecordReader::new(input, InputFormat::Json)
        .with_file_name("fuzz.ndjson")
        .with_max_line_bytes(max_line);
    let records = read_all(reader, input.len());

    // the lines, read independently
    let mut expected = Vec::new();
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if input.ends_with(b"\n") || input.is_empty() {
        lines.pop();
    }
    for (i, line) in lines.into_iter().enumerate() {
        // a `\r` before the newline is dropped, and a line of whitespace skipped, only when
        // the line is within the limit (a longer one is a dead letter whatever it holds)
        let line = match line.strip_suffix(b"\r") {
            Some(stripped) if line.len() <= max_line => stripped,
            _ => line,
        };
        if line.len() <= max_line && line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        expected.push((i as u64 + 1, line));
    }
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per non-blank line"
    );

    for (record, (number, line)) in records.iter().zip(expected) {
        match record {
            Ok(m) => {
                assert!(line.len() <= max_line, "a line over the limit decoded");
                assert_eq!(position_line(&m.position), Some(number));
                let direct = Message::from_json_line(line).expect("the reader decoded it");
                assert_eq!(m.payload, direct.payload);
                assert_eq!(m.attributes, direct.attributes);
                let mut text = String::new();
                m.write_json_line(&mut text);
                let again = Message::from_json_line(text.as_bytes()).expect("own output reads");
                assert_eq!(again.payload, m.payload);
                assert_eq!(again.attributes, m.attributes);
            }
            Err(dead) => {
                assert_eq!(dead.error_type, READ_INPUT_ERROR_TYPE);
                assert_eq!(dead_position(dead, "input_line"), number);
                let kept = &line[..line.len().min(max_line)];
                assert_eq!(
                    &dead.original.payload[..],
                    kept,
                    "the dead letter keeps the line"
                );
                if line.len() <= max_line {
                    let e = Message::from_json_line(line).expect_err("the reader refused it");
                    check_error(&e);
                }
                assert!(!dead.error_message.is_empty());
            }
        }
    }
}

/// Heka framing: [`FrameDecoder`](sluice_schemas::heka::FrameDecoder) accounts for every
/// input byte exactly once (positions only grow, a broken frame's bytes are the input between
/// two positions, the end is the input's length); the record reader gives the same messages
/// and turns each run of broken frames into one dead letter holding exactly those bytes, at
/// their offset.
pub fn heka(data: &[u8]) {
    use sluice_schemas::heka::{heka_to_message, FrameDecoder};

    // the decoder alone
    let mut frames = FrameDecoder::new(data);
    let mut items = Vec::new(); // (start, end, message or None)
    let mut start = 0;
    while let Some(item) = frames.next() {
        let end = frames.position();
        assert!(end > start, "no progress at byte {start}");
        assert!(end <= data.len());
        match item {
            Ok(heka) => {
                let converted = heka_to_message(&heka);
                if let Err(e) = &converted {
                    check_error(e);
                }
                items.push((start, end, Some(converted.ok())));
            }
            Err(e) => {
                assert_eq!(
                    e.offset(),
                    start,
                    "a broken frame starts where the last item ended"
                );
                assert_eq!(e.raw(), &data[start..end], "a broken frame holds its bytes");
                check_error(&e);
                items.push((start, end, None));
            }
        }
        start = end;
    }
    assert_eq!(start, data.len(), "every byte belongs to an item");

    // the reader: runs of broken frames merged into one dead letter
    // (start, end, None for a broken stretch, Some(None) for a frame that does not convert)
    let mut expected: Vec<(usize, usize, Option<Option<Message>>)> = Vec::new();
    for (s, e, item) in items {
        match item {
            None => match expected.last_mut() {
                Some((_, end, None)) if *end == s => *end = e,
                _ => expected.push((s, e, None)),
            },
            converted => expected.push((s, e, converted)),
        }
    }
    let reader = RecordReader::new(data, InputFormat::Heka).with_file_name("fuzz.heka");
    let records = read_all(reader, data.len());
    // inputs here are far below the longest frame span, so no stretch is cut
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per frame or broken stretch"
    );
    for (record, (s, e, item)) in records.iter().zip(expected) {
        match (record, item) {
            (Ok(m), Some(Some(want))) => {
                assert_eq!(position_offset(&m.position), Some(s as u64));
                assert_eq!(m.payload, want.payload);
                assert_eq!(m.attributes, want.attributes);
            }
            // a broken stretch, or a frame whose message does not convert: one dead letter
            // holding exactly those bytes
            (Err(dead), None | Some(None)) => {
                assert_eq!(dead_position(dead, "input_offset"), s as u64);
                assert_eq!(&dead.original.payload[..], &data[s..e]);
                assert_eq!(dead.error_type, READ_INPUT_ERROR_TYPE);
                assert!(!dead.error_message.is_empty());
            }
            (record, item) => panic!("at byte {s}: read {record:?}, expected {item:?}"),
        }
    }
}

/// `ParseUri`: on success the attributes are exactly those of one of the `/submit/` forms,
/// every value free of `/`, `document_id` a UUID, and the values put back together give the
/// uri's path (split as gcp-ingestion splits it: trailing empty elements dropped, empty inner
/// elements and a query string kept as values); a `/stub/` uri becomes a `firefox-installer`
/// ping; on failure the message comes back unchanged.
///
/// Input: the uri (lossy UTF-8); a header byte, if any, adds a query string.
pub fn parse_uri(data: &[u8]) {
    let (header, input) = split_header(data);
    let mut uri = String::from_utf8_lossy(input).into_owned();
    if header.first().is_some_and(|b| b % 2 == 1) {
        uri.push_str("?v=4&x=/y/z");
    }
    let message = Message::new("{}")
        .with_attribute("uri", uri.clone())
        .with_attribute("document_version", "untouched");
    match ParseUri::apply_owned(message.clone()) {
        Ok(out) if uri.starts_with("/stub/") => {
            assert_eq!(
                out.attribute("document_namespace"),
                Some("firefox-installer")
            );
        }
        Ok(out) => {
            let rest = uri
                .strip_prefix("/submit/")
                .expect("parsed without the prefix")
                .trim_end_matches('/');
            let telemetry = out.attribute("document_namespace") == Some("telemetry")
                && rest.starts_with("telemetry/");
            let keys: &[&str] = if telemetry {
                &[
                    "document_id",
                    "document_type",
                    "app_name",
                    "app_version",
                    "app_update_channel",
                    "app_build_id",
                ]
            } else {
                &[
                    "document_namespace",
                    "document_type",
                    "document_version",
                    "document_id",
                ]
            };
            let values: Vec<&str> = keys
                .iter()
                .map(|k| out.attribute(k).unwrap_or_else(|| panic!("`{k}` not set")))
                .collect();
            for v in &values {
                assert!(!v.contains('/'), "{v:?}");
            }
            let joined = if telemetry {
                format!("telemetry/{}", values.join("/"))
            } else {
                values.join("/")
            };
            assert_eq!(joined, rest, "the values are the path's elements");
            let id = out.attribute("document_id").unwrap();
            assert!(is_uuid(id), "document id {id:?} is not a uuid");
            if telemetry {
                assert_eq!(out.attribute("document_version"), Some("untouched"));
            }
            assert_eq!(out.payload, message.payload);
        }
        Err((back, e)) => {
            assert_eq!(
                back, message,
                "a failed step hands the message back unchanged"
            );
            check_error(&e);
        }
    }
}

/// 8-4-4-4-12 hexadecimal digits, independently of the decoder's own check.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Memory the inflater itself may hold beyond its output (zlib state and window).
pub const INFLATE_OVERHEAD_BYTES: usize = 128 * 1024;

/// Decompression with a size cap: a payload without the gzip magic passes unchanged; a gzip
/// payload gives exactly what an independent, bounded gunzip gives, when that is at most the
/// cap, `DecompressedTooLarge` when it is more, `CorruptGzip` when the stream breaks before
/// the cap; and the step never holds more than cap + 1 bytes of output (plus the inflater's
/// fixed state), whatever the payload claims.
///
/// Input: a two-byte header (the cap, little-endian), then the payload.
pub fn decompress(data: &[u8]) {
    let (cap, payload) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (16, data),
    };
    let step = DecompressPayload::new().with_max_decompressed_bytes(cap);
    let message = Message::new(payload.to_vec()).with_attribute("k", "v");
    let (result, peak) = peak_bytes_during(|| step.apply_owned(message.clone()));
    assert!(
        peak <= cap + 1 + INFLATE_OVERHEAD_BYTES,
        "held {peak} bytes decompressing with a cap of {cap}"
    );

    if !payload.starts_with(&[0x1f, 0x8b]) {
        let out = result.expect("a payload that is not gzip passes");
        assert_eq!(out, message);
        return;
    }
    // the reference: flate2's reader, stopped at cap + 1 bytes
    let mut reference = Vec::new();
    let read = flate2::bufread::MultiGzDecoder::new(payload)
        .take(cap as u64 + 1)
        .read_to_end(&mut reference);
    match result {
        Ok(out) => {
            assert!(
                read.is_ok(),
                "decompressed what the reference cannot: {read:?}"
            );
            assert!(
                out.payload.len() <= cap,
                "{} bytes over a cap of {cap}",
                out.payload.len()
            );
            assert_eq!(out.payload, reference);
            assert_eq!(out.attribute("client_compression"), Some("gzip"));
            assert_eq!(out.attribute("k"), Some("v"));
        }
        Err((back, e)) => {
            assert_eq!(
                back, message,
                "a failed step hands the message back unchanged"
            );
            check_error(&e);
            match e {
                DecodeError::DecompressedTooLarge { limit, .. } => {
                    assert_eq!(limit, cap);
                    assert!(
                        read.is_ok() && reference.len() == cap + 1,
                        "not over the cap"
                    );
                }
                DecodeError::CorruptGzip { .. } => {
                    assert!(
                        read.is_err(),
                        "the reference read it: {} bytes",
                        reference.len()
                    );
                }
                other => panic!("unexpected error {other:?}"),
            }
        }
    }
}

/// The registry the payload target validates against: the repository's example schemas.
fn registry() -> Arc<SchemaRegistry> {
    static REGISTRY: OnceLock<Arc<SchemaRegistry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json");
            Arc::new(SchemaRegistry::load_strict(dir).expect("the repository's schemas load"))
        })
        .clone()
}

/// The routing attributes a payload is parsed with, chosen by a header byte.
const ROUTES: [(&str, &str, Option<&str>); 6] = [
    ("test", "test", Some("1")),
    ("telemetry", "main", None),
    ("telemetry", "event", Some("4")),
    ("org-mozilla-fenix", "baseline", Some("1")),
    (".test.", "test", Some("01")),
    ("test", "unknown", Some("1")),
];

/// Payload parsing with the depth guard: a document accepted is a JSON object that an
/// independent parse reads, nested no deeper than the limit; a document nested deeper is
/// refused, whatever else it holds; the attributes the message came with are never changed
/// (except the three routing names, set to the schema's canonical spelling, and the client id
/// and sample id derived from the payload); a refused message comes back unchanged.
///
/// Input: a header whose first byte picks the routing attributes and whose second sets the
/// depth limit; then the payload.
pub fn parse_payload(data: &[u8]) {
    let (header, payload) = split_header(data);
    let (namespace, doctype, version) =
        ROUTES[usize::from(header.first().copied().unwrap_or(0)) % ROUTES.len()];
    let max_depth = header
        .get(1)
        .map_or(Limits::DEFAULT_MAX_DEPTH, |&d| usize::from(d % 80));
    let limits = Limits {
        max_depth,
        ..Limits::default()
    };
    let mut message = Message::new(payload.to_vec())
        .with_attribute("document_namespace", namespace)
        .with_attribute("document_type", doctype)
        .with_attribute("submission_timestamp", "2024-03-01T10:11:12Z")
        .with_attribute("document_id", "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11");
    if let Some(v) = version {
        message = message.with_attribute("document_version", v);
    }
    let step = ParsePayload::new(registry()).with_limits(limits);
    let independent: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    match step.apply_owned(message.clone()) {
        Ok(out) => {
            assert!(
                independent.is_some(),
                "accepted a payload serde_json refuses"
            );
            // what is passed on (the payload minus lifted metadata) is within the depth limit
            let out_doc: serde_json::Value =
                serde_json::from_slice(&out.payload).expect("the output payload is json");
            assert!(out_doc.is_object(), "the output payload is an object");
            let depth = depth(&out_doc);
            assert!(
                depth <= max_depth,
                "accepted a document of depth {depth} > {max_depth}"
            );
            let canonical = ["document_namespace", "document_type", "document_version"];
            let derived = ["client_id", "sample_id"];
            for (k, v) in &message.attributes {
                if !canonical.contains(&k.as_str()) && !derived.contains(&k.as_str()) {
                    assert_eq!(
                        out.attribute(k),
                        Some(v.as_str()),
                        "attribute `{k}` changed"
                    );
                }
            }
            let (ns, dt, ver) = (
                out.attribute("document_namespace").expect("namespace"),
                out.attribute("document_type").expect("doctype"),
                out.attribute("document_version").expect("version"),
            );
            let ver: u32 = ver.parse().expect("a plain integer version");
            assert!(
                registry().get(ns, dt, ver).is_some(),
                "{ns}/{dt}/{ver} has no schema"
            );
        }
        Err((back, e)) => {
            assert_eq!(
                back, message,
                "a failed step hands the message back unchanged"
            );
            check_error(&e);
        }
    }
}

/// The nesting of a value, without recursion (a document may be deep).
fn depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|c| (c, d + 1))),
            _ => continue,
        }
        deepest = deepest.max(d + 1);
    }
    deepest
}

/// The path-template renderer: a template parses or is refused with an error; a rendered path
/// never starts with `/`, has no `.`/`..` or empty folder, no control character or `\`, and
/// no more folders than the template has `/`: values cannot escape or deepen the layout. Each
/// rendered prefix, with an object name after it, is a valid object name or refused with a
/// reason; a valid one is stored under exactly that name.
///
/// Input: the template, then `0x00`-separated `name=value` attributes.
pub fn path_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let template = fields.next().unwrap_or_default();
    let mut attributes = BTreeMap::new();
    for field in fields {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        attributes.insert(k.to_string(), v.to_string());
    }
    let strict = PathTemplate::parse(template);
    let parsed = match PathTemplate::parse_allow_missing(template) {
        Ok(t) => t,
        Err(e) => {
            check_error(&e);
            assert!(strict.is_err(), "refused leniently, accepted strictly");
            return;
        }
    };
    if let Err(e) = &strict {
        check_error(e);
    }
    let names = ObjectNames::new("job", "run", 0);
    for message in [
        Message::new("{}").with_attributes(attributes.clone()),
        Message::new("{}"),
    ] {
        let rendered = parsed.render(&message);
        assert!(!rendered.starts_with('/'), "{rendered:?}");
        assert!(
            !rendered.chars().any(|c| c.is_control() || c == '\\'),
            "{rendered:?}"
        );
        let segments: Vec<&str> = rendered.split('/').collect();
        let (last, folders) = segments.split_last().expect("split gives one at least");
        for s in folders {
            assert!(
                !s.is_empty() && *s != "." && *s != "..",
                "folder {s:?} in {rendered:?}"
            );
        }
        assert!(*last != "." && *last != "..", "{rendered:?}");
        let template_slashes = template.matches('/').count();
        assert!(
            folders.len() <= template_slashes,
            "{rendered:?} is deeper than {template:?}"
        );
        let name = format!("{rendered}{}", names.name(0, "ndjson.gz"));
        match check_object_name(&name) {
            Ok(()) => {
                let path = object_store::path::Path::parse(&name).expect("checked valid");
                assert_eq!(path.as_ref(), name, "the store would write elsewhere");
                assert!(name.len() <= 1024);
                assert!(name.split('/').all(|s| s.len() <= 255));
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
}
