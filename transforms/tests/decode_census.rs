//! The fidelity census of issue #13: gcp-ingestion's decoder fixture records and the URI and
//! edge cases of its unit tests, each run through Sluice (the `ParseUri` step alone for the
//! URI cases, as `ParseUriTest` runs gcp-ingestion's; the whole `Decoder` on memory IO for the
//! others), and each either reaching gcp-ingestion's outcome or a deliberate difference the
//! README lists ("Kept different from gcp-ingestion on purpose"). The test asserts both the
//! outcome of every case and the counts, so a change in either direction shows.
//!
//! Sources, in mozilla/gcp-ingestion `ingestion-beam/src/test/`: `resources/testdata/
//! decoder-integration/{valid-input,gzipped,error-input}.ndjson` (the fixture records, rewritten
//! here as cases), `java/.../decoder/ParseUriTest.java` (`testOutput`, `testStubUri`),
//! `ParsePayloadTest.java` (`testOutput`, `testErrors`, `testVersionInPayload`,
//! `testMetadataInPayload`), and the behaviour of `ParseUri.java`, `ParsePayload.java`,
//! `DecompressPayload.java` (`GZIPInputStream`), `LimitPayloadSize.java`, `ParseProxy.java`,
//! `ParseUserAgent.java` and ingestion-core's `NestedMetadata.java` that the issue lists.
//! Ping splitting is not counted: gcp-ingestion's splitting code was not in the reference
//! material (its contract is taken from mozilla-schema-generator; see `decode_fidelity.rs`).

#[path = "decode_support.rs"]
mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use sluice::harness;
use sluice::Message;
use sluice_schemas::SchemaRegistry;
use sluice_transforms::decode::{sample_id, Decoder, ParseUri};
use support::gzip;

const TIMESTAMP: &str = "2024-03-01T12:00:00.000000Z";
const ID: &str = "2c3a0767-d84a-4d02-8a92-fa54a3376049";
const TELEMETRY_ID: &str = "ce39b608-f595-4c69-b6a6-f7a436604648";

/// The example schemas plus an expired doctype, one sampled by `impression_id`, the stub
/// installer's and an open telemetry doctype.
fn registry() -> Arc<SchemaRegistry> {
    let mut r = SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json"))
        .expect("the example schemas load");
    let open = |meta: Value| json!({"type": "object", "mozPipelineMetadata": meta});
    r.add(
        "test",
        "expiring",
        1,
        open(json!({"expiration_policy": {"collect_through_date": "2024-02-29"}})),
    )
    .unwrap();
    r.add(
        "test",
        "impression",
        1,
        open(json!({"sample_id_source_uuid_payload_path": ["impression_id"]})),
    )
    .unwrap();
    r.add("firefox-installer", "install", 1, json!({"type": "object"}))
        .unwrap();
    r.add("telemetry", "open", 4, json!({"type": "object"}))
        .unwrap();
    Arc::new(r)
}

/// An outcome: decoded with these attributes (`None`: absent) and payload fields (JSON
/// pointers), or a dead letter of this error type.
#[derive(Clone, Debug)]
enum Outcome {
    Decoded {
        attributes: Vec<(&'static str, Option<String>)>,
        fields: Vec<(&'static str, Value)>,
        /// Text the payload's bytes hold.
        raw: Vec<&'static str>,
    },
    Failed(&'static str),
}

fn ok(attributes: &[(&'static str, &str)]) -> Outcome {
    Outcome::Decoded {
        attributes: attributes
            .iter()
            .map(|(k, v)| (*k, Some(v.to_string())))
            .collect(),
        fields: Vec::new(),
        raw: Vec::new(),
    }
}

fn failed(step: &'static str) -> Outcome {
    Outcome::Failed(step)
}

impl Outcome {
    fn absent(mut self, name: &'static str) -> Self {
        if let Outcome::Decoded { attributes, .. } = &mut self {
            attributes.push((name, None));
        }
        self
    }

    fn raw(mut self, text: &'static str) -> Self {
        if let Outcome::Decoded { raw, .. } = &mut self {
            raw.push(text);
        }
        self
    }

    fn field(mut self, pointer: &'static str, value: Value) -> Self {
        if let Outcome::Decoded { fields, .. } = &mut self {
            fields.push((pointer, value));
        }
        self
    }

    /// Whether `result` (a decoded message or a dead letter's error type) is this outcome.
    fn is(&self, result: &Result<Message, String>) -> bool {
        match (self, result) {
            (Outcome::Failed(step), Err(t)) => step == t,
            (
                Outcome::Decoded {
                    attributes,
                    fields,
                    raw,
                },
                Ok(m),
            ) => {
                let payload: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                let text = String::from_utf8_lossy(&m.payload);
                attributes
                    .iter()
                    .all(|(k, v)| m.attribute(k) == v.as_deref())
                    && fields.iter().all(|(p, v)| payload.pointer(p) == Some(v))
                    && raw.iter().all(|r| text.contains(r))
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Fixture,
    Uri,
    Edge,
}

/// How Sluice runs a case.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// `ParseUri` alone.
    ParseUri,
    /// The whole `Decoder`.
    Decoder,
}

struct Case {
    group: Group,
    name: &'static str,
    run: Run,
    input: Message,
    /// gcp-ingestion's outcome.
    gcp: Outcome,
    /// Sluice's, where it differs on purpose (and why, as the README says it).
    deliberate: Option<(Outcome, &'static str)>,
}

fn case(group: Group, name: &'static str, input: Message, gcp: Outcome) -> Case {
    let run = if group == Group::Uri {
        Run::ParseUri
    } else {
        Run::Decoder
    };
    Case {
        group,
        name,
        run,
        input,
        gcp,
        deliberate: None,
    }
}

impl Case {
    fn differs(mut self, sluice: Outcome, why: &'static str) -> Self {
        self.deliberate = Some((sluice, why));
        self
    }

    fn through(mut self, run: Run) -> Self {
        self.run = run;
        self
    }
}

fn uri(uri: &str) -> Message {
    Message::new("").with_attribute("uri", uri)
}

fn submit(uri: &str, payload: impl Into<sluice::Bytes>) -> Message {
    Message::new(payload)
        .with_attribute("uri", uri)
        .with_attribute("submission_timestamp", TIMESTAMP)
}

fn test_doc(payload: Value) -> Message {
    submit(&format!("/submit/test/test/1/{ID}"), payload.to_string())
}

/// `ParseUriTest.testStubUri`'s v7 case with funnelcake 4; v6 drops the attribution, v8 adds
/// the profile-cleanup fields.
fn stub(version: &str) -> String {
    let mut fields = vec![
        "v7-4",
        "release",
        "release",
        "de",
        "1",
        "1",
        "10",
        "0",
        "19045",
        "",
        "0",
        "0",
        "1",
        "0",
        "100",
        "200",
        "3",
        "4",
        "5",
        "",
        "6",
        "7",
        "8",
        "9",
        "0",
        "0",
        "1",
        "95.0",
        "2022",
        "96.0",
        "2023",
        "1",
        "1",
        "1",
        "2",
        "1.2.3.4",
        "campaign%3Dx",
    ];
    match version {
        "v6" => {
            fields[0] = "v6";
            fields.pop();
        }
        "v8-3" => {
            fields[0] = "v8-3";
            fields.extend(["1", "1"]);
        }
        _ => {}
    }
    format!("/stub/{}", fields.join("/"))
}

fn spaces(version: &str, n: usize) -> String {
    format!("/stub/{version}/{}", vec![" "; n].join("/"))
}

fn cases() -> Vec<Case> {
    use Group::*;
    let telemetry_uri =
        format!("/submit/telemetry/{TELEMETRY_ID}/main/Firefox/61.0a1/nightly/20180328030202");
    let telemetry_attrs = |id: &str, build: &str| {
        vec![
            ("document_namespace", "telemetry".to_string()),
            ("document_type", "main".to_string()),
            ("document_id", id.to_string()),
            ("app_name", "Firefox".to_string()),
            ("app_version", "61.0a1".to_string()),
            ("app_update_channel", "nightly".to_string()),
            ("app_build_id", build.to_string()),
        ]
    };
    let decoded_telemetry = |id: &str, build: &str| Outcome::Decoded {
        attributes: telemetry_attrs(id, build)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect(),
        fields: Vec::new(),
        raw: Vec::new(),
    };
    let test_ok = |id: &str| {
        ok(&[
            ("document_namespace", "test"),
            ("document_type", "test"),
            ("document_version", "1"),
            ("document_id", id),
        ])
    };
    let upper = "2907648D-1A3B-4C5D-8E9F-0A1B2C3D4E5F";
    let lower = upper.to_ascii_lowercase();
    let lower_sample = sample_id(&lower).to_string();
    let eight_mib = 8 << 20;
    let sized = |n: usize| {
        // {"field":"xxx..."} of exactly n bytes
        let filler = "x".repeat(n - r#"{"field":""}"#.len());
        test_doc(json!({ "field": filler }))
    };
    let mut two_members = gzip(br#"{"field":"#);
    two_members.extend(gzip(br#""two"}"#));
    let mut with_garbage = gzip(br#"{"field":"x"}"#);
    with_garbage.extend_from_slice(b"\0\0garbage");
    let mut corrupt = gzip(br#"{"field":"x"}"#);
    let n = corrupt.len();
    corrupt[n / 2] ^= 0xff;
    corrupt.truncate(n - 4);
    let firefox_ua =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Firefox/124.0";

    vec![
        // ---- decoder-integration fixture records ----
        case(
            Fixture,
            "valid-input: test/test/1 {}",
            test_doc(json!({})),
            test_ok(ID),
        ),
        case(
            Fixture,
            "valid-input: with remote_addr (no geo database here)",
            test_doc(json!({})).with_attribute("remote_addr", "202.196.224.0"),
            test_ok(ID).absent("remote_addr"),
        ),
        case(
            Fixture,
            "valid-input: proxied, x_pipeline_proxy not a timestamp",
            test_doc(json!({}))
                .with_attribute("x_pipeline_proxy", "1")
                .with_attribute("x_forwarded_for", "_,202.196.224.0,_,_"),
            test_ok(ID).absent("x_forwarded_for"),
        ),
        case(
            Fixture,
            "gzipped: client_compression",
            submit(&format!("/submit/test/test/1/{ID}"), gzip(b"{}")),
            ok(&[("document_type", "test"), ("client_compression", "gzip")]),
        ),
        case(
            Fixture,
            "error-input: telemetry uri without a document id",
            submit(
                "/submit/telemetry/main/Firefox/61.0a1/nightly/20180328030202",
                "",
            )
            .with_attribute("x_forwarded_for", "202.196.224.0,_,_"),
            failed("ParseUri"),
        ),
        case(
            Fixture,
            "error-input: a doctype without a schema",
            submit(&format!("/submit/eng-workflow/hgpush/1/{ID}"), "{}"),
            failed("ParsePayload"),
        ),
        // ---- ParseUriTest.testOutput ----
        case(
            Uri,
            "no uri: passed on",
            Message::new(""),
            ok(&[]).absent("document_namespace"),
        ),
        case(
            Uri,
            "telemetry uri",
            uri(&telemetry_uri),
            decoded_telemetry(TELEMETRY_ID, "20180328030202"),
        ),
        case(
            Uri,
            "generic uri",
            uri(&format!("/submit/eng-workflow/hgpush/1/{ID}")),
            ok(&[
                ("document_namespace", "eng-workflow"),
                ("document_type", "hgpush"),
                ("document_version", "1"),
                ("document_id", ID),
            ]),
        ),
        case(
            Uri,
            "unknown prefix",
            uri(&format!(
                "/nonexistent_prefix/{TELEMETRY_ID}/main/Firefox/61.0a1/nightly/20180328030202"
            )),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "telemetry uri without a doctype",
            uri(&format!(
                "/submit/telemetry/{TELEMETRY_ID}/Firefox/61.0a1/nightly/20180328030202"
            )),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "generic uri without a version",
            uri(&format!("/submit/eng-workflow/hgpush/{ID}")),
            failed("ParseUri"),
        ),
        // ---- ParseUriTest.testStubUri ----
        case(
            Uri,
            "stub v6",
            uri(&stub("v6")),
            ok(&[
                ("document_namespace", "firefox-installer"),
                ("document_type", "install"),
            ]),
        ),
        case(
            Uri,
            "stub v7 with funnelcake",
            uri(&stub("v7-4")),
            ok(&[
                ("document_namespace", "firefox-installer"),
                ("document_version", "1"),
            ]),
        ),
        case(
            Uri,
            "stub v8 with funnelcake",
            uri(&stub("v8-3")),
            ok(&[
                ("document_namespace", "firefox-installer"),
                ("document_type", "install"),
            ]),
        ),
        case(
            Uri,
            "stub v6, spaces for integers",
            uri(&spaces("v6", 35)),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "stub v7, spaces for integers",
            uri(&spaces("v7", 36)),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "stub v8, spaces for integers",
            uri(&spaces("v8", 38)),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "stub without a version",
            uri("/stub/"),
            failed("ParseUri"),
        ),
        case(Uri, "stub v6 alone", uri("/stub/v6"), failed("ParseUri")),
        case(Uri, "stub v7 alone", uri("/stub/v7"), failed("ParseUri")),
        case(Uri, "stub v8 alone", uri("/stub/v8"), failed("ParseUri")),
        // ---- ParseUri.java: Java's split("/") ----
        case(
            Uri,
            "generic uri, trailing slash",
            uri(&format!("/submit/test/test/1/{ID}/")),
            ok(&[("document_type", "test"), ("document_id", ID)]),
        ),
        case(
            Uri,
            "telemetry uri, trailing slash",
            uri(&format!("{telemetry_uri}/")),
            decoded_telemetry(TELEMETRY_ID, "20180328030202"),
        ),
        case(
            Uri,
            "generic uri, extra element",
            uri(&format!("/submit/test/test/1/{ID}/extra")),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "telemetry uri, extra element",
            uri(&format!("{telemetry_uri}/extra")),
            failed("ParseUri"),
        ),
        case(
            Uri,
            "empty doctype: a value, failing later",
            uri(&format!("/submit/test//1/{ID}")),
            ok(&[("document_namespace", "test"), ("document_type", "")]),
        ),
        case(
            Uri,
            "empty namespace: a value, failing later",
            uri(&format!("/submit//test/1/{ID}")),
            ok(&[("document_namespace", ""), ("document_type", "test")]),
        ),
        case(
            Uri,
            "query string kept in the build id",
            uri(&format!("{telemetry_uri}?v=4")),
            decoded_telemetry(TELEMETRY_ID, "20180328030202?v=4"),
        ),
        case(
            Uri,
            "query string after the document id",
            uri(&format!("/submit/test/test/1/{ID}?v=4")),
            ok(&[("document_id", &format!("{ID}?v=4"))]),
        )
        .differs(
            failed("ParseUri"),
            "document_id must be a UUID (gcp-ingestion takes any text)",
        ),
        case(
            Uri,
            "a document id that is no UUID",
            uri("/submit/test/test/1/not-a-uuid"),
            ok(&[("document_id", "not-a-uuid")]),
        )
        .differs(
            failed("ParseUri"),
            "document_id must be a UUID (gcp-ingestion takes any text)",
        ),
        // ---- ParsePayloadTest ----
        case(Edge, "testOutput: {}", test_doc(json!({})), test_ok(ID)),
        case(
            Edge,
            "testOutput: {\"id\":null}",
            test_doc(json!({"id": null})),
            test_ok(ID).field("/id", Value::Null),
        ),
        case(
            Edge,
            "testOutput: []",
            submit(&format!("/submit/test/test/1/{ID}"), "[]"),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "testOutput: {",
            submit(&format!("/submit/test/test/1/{ID}"), "{"),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "testErrors: empty payload",
            submit(&format!("/submit/eng-workflow/hgpush/1/{ID}"), ""),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "testErrors: no namespace",
            Message::new("{}")
                .with_attribute("app_name", "Firefox")
                .with_attribute("document_type", "main"),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "testErrors: no attributes",
            Message::new("{}"),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "testVersionInPayload: version 4 found, invalid main ping",
            submit(
                &format!("/submit/telemetry/{TELEMETRY_ID}/main/Firefox/61.0a1/nightly/1"),
                r#"{"version":4}"#,
            ),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "testMetadataInPayload: routing from nested metadata",
            Message::new(
                r#"{"id":null,"metadata":{"document_namespace":"test","document_type":"test","document_version":1}}"#,
            ),
            ok(&[("document_namespace", "test"), ("document_version", "1")])
                .field("/id", Value::Null),
        ),
        // ---- ParsePayload.java: client id, sample id, version, expiration, os ----
        case(
            Edge,
            "upper-case client id: lower-cased, hashed lower-case",
            test_doc(json!({"client_id": upper})),
            ok(&[("client_id", &lower), ("sample_id", &lower_sample)])
                .field("/client_id", json!(lower)),
        ),
        case(
            Edge,
            "Glean client_info.client_id",
            test_doc(json!({"client_info": {"client_id": upper, "os": "Android",
                                            "os_version": "14", "app_channel": "beta"}})),
            ok(&[
                ("client_id", &lower),
                ("os", "Android"),
                ("os_version", "14"),
                ("app_update_channel", "beta"),
            ]),
        ),
        case(
            Edge,
            "legacy clientId",
            test_doc(json!({"clientId": upper})),
            ok(&[("client_id", &lower)]),
        ),
        case(
            Edge,
            "a client id that is no UUID",
            test_doc(json!({"client_id": "n/a"})),
            test_ok(ID).absent("client_id").absent("sample_id"),
        ),
        case(
            Edge,
            "a client id of shortened UUID groups",
            test_doc(json!({"client_id": "1-2-3-4-5"})),
            ok(&[("client_id", "1-2-3-4-5")]),
        )
        .differs(
            test_ok(ID).absent("client_id"),
            "a UUID is 8-4-4-4-12 hex digits (Java's UUID.fromString also takes 1-2-3-4-5)",
        ),
        case(
            Edge,
            "sample id from impression_id",
            submit(
                &format!("/submit/test/impression/1/{ID}"),
                json!({"impression_id": format!("{{{upper}}}")}).to_string(),
            ),
            ok(&[("sample_id", &lower_sample)]),
        ),
        case(
            Edge,
            "os from environment.system.os",
            test_doc(
                json!({"environment": {"system": {"os": {"name": "Linux", "version": "6.1"}}}}),
            ),
            ok(&[("os", "Linux"), ("os_version", "6.1")]),
        ),
        case(
            Edge,
            "version 01: no such schema file",
            submit(&format!("/submit/test/test/01/{ID}"), "{}"),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "version +1: no such schema file",
            submit(&format!("/submit/test/test/+1/{ID}"), "{}"),
            failed("ParsePayload"),
        ),
        case(
            Edge,
            "telemetry version from v when version is an object",
            submit(
                &format!("/submit/telemetry/{TELEMETRY_ID}/open/Firefox/61.0a1/nightly/1"),
                r#"{"version":{"major":4},"v":4}"#,
            ),
            ok(&[("document_type", "open"), ("document_version", "4")]),
        ),
        case(
            Edge,
            "a doctype past its collect_through_date",
            submit(&format!("/submit/test/expiring/1/{ID}"), "{}"),
            failed("ParsePayload"),
        ),
        // ---- DecompressPayload.java (GZIPInputStream) ----
        case(
            Edge,
            "two gzip members: both read",
            submit(&format!("/submit/test/test/1/{ID}"), two_members),
            test_ok(ID).field("/field", json!("two")),
        ),
        case(
            Edge,
            "a gzip member followed by garbage: the member",
            submit(&format!("/submit/test/test/1/{ID}"), with_garbage),
            test_ok(ID).field("/field", json!("x")),
        ),
        case(
            Edge,
            "not gzip: passed on as it is",
            test_doc(json!({"field": "plain"})),
            test_ok(ID).absent("client_compression"),
        ),
        case(
            Edge,
            "a corrupt gzip",
            submit(&format!("/submit/test/test/1/{ID}"), corrupt),
            failed("ParsePayload"),
        )
        .differs(
            failed("DecompressPayload"),
            "a corrupt gzip is a DecompressPayload dead letter saying what the gzip decoder found",
        ),
        // ---- LimitPayloadSize.java: 8 MiB ----
        case(Edge, "exactly 8 MiB", sized(eight_mib), test_ok(ID)),
        case(
            Edge,
            "8 MiB and one byte",
            sized(eight_mib + 1),
            failed("LimitPayloadSize"),
        ),
        // ---- ParseProxy.java ----
        case(
            Edge,
            "proxied with a timestamp",
            test_doc(json!({}))
                .with_attribute("x_pipeline_proxy", "2024-03-01T11:00:00.000000Z")
                .with_attribute("x_forwarded_for", "1.2.3.4, 5.6.7.8"),
            ok(&[
                ("submission_timestamp", "2024-03-01T11:00:00.000000Z"),
                ("proxy_timestamp", TIMESTAMP),
            ]),
        ),
        // ---- ParseUserAgent.java ----
        case(
            Edge,
            "a Firefox user agent",
            test_doc(json!({})).with_attribute("user_agent", firefox_ua),
            ok(&[
                ("user_agent_browser", "Firefox"),
                ("user_agent_version", "124"),
                ("user_agent_os", "Windows 10"),
            ])
            .absent("user_agent"),
        ),
        // ---- NestedMetadata.java ----
        case(
            Edge,
            "headers nested under metadata.header",
            test_doc(json!({}))
                .with_attribute("x_debug_id", "dbg")
                .with_attribute("x_foxsec_ip_reputation", "reputation=75")
                .with_attribute("dnt", "1"),
            test_ok(ID)
                .field("/metadata/header/x_debug_id", json!("dbg"))
                .field(
                    "/metadata/header/x_foxsec_ip_reputation",
                    json!("reputation=75"),
                )
                .field("/metadata/header/dnt", json!("1")),
        ),
        case(
            Edge,
            "telemetry uri parts nested under metadata.uri",
            submit(
                &telemetry_uri.replace("/main/", "/open/"),
                r#"{"version":4}"#,
            ),
            ok(&[("document_type", "open")])
                .field("/metadata/uri/app_name", json!("Firefox"))
                .field("/metadata/uri/app_build_id", json!("20180328030202")),
        )
        .through(Run::Decoder),
        case(
            Edge,
            "geo attributes nested, normalized country at the top level",
            test_doc(json!({})).with_attribute("geo_country", "fr"),
            test_ok(ID)
                .field("/metadata/geo/country", json!("fr"))
                .field("/normalized_country_code", json!("FR")),
        ),
        case(
            Edge,
            "sample_id an integer at the top level",
            test_doc(json!({"client_id": lower})),
            test_ok(ID).field("/sample_id", json!(sample_id(&lower))),
        ),
        case(
            Edge,
            "x_lb_tags",
            test_doc(json!({})).with_attribute("x_lb_tags", "TLSv1.3"),
            test_ok(ID).field("/metadata/header", json!({})),
        )
        .differs(
            test_ok(ID).field("/metadata/header/x_lb_tags", json!("TLSv1.3")),
            "x_lb_tags stays nested as a header so that earlier outputs replay alike",
        ),
        case(
            Edge,
            "whitespace in the payload",
            submit(&format!("/submit/test/test/1/{ID}"), r#"{ "field" : "x" }"#),
            test_ok(ID).raw(r#""field":"x""#),
        )
        .differs(
            test_ok(ID).raw(r#""field" : "x""#),
            "payloads are never re-serialized (gcp-ingestion writes the document anew)",
        ),
        case(
            Edge,
            "stub ping: document id",
            uri(&stub("v7-4")),
            ok(&[
                ("document_type", "install"),
                ("document_id", "<pubsub message id>"),
            ]),
        )
        .differs(
            ok(&[("document_type", "install")]).absent("document_id"),
            "stub pings get no document_id (gcp-ingestion derives one from the Pub/Sub message id)",
        ),
    ]
}

/// Sluice's result for a case: the decoded message, or the dead letter's error type.
fn run(registry: &Arc<SchemaRegistry>, case: &Case) -> Result<Message, String> {
    match case.run {
        Run::ParseUri => ParseUri::apply_to(&case.input).map_err(|_| "ParseUri".to_string()),
        Run::Decoder => {
            let registry = registry.clone();
            let mut out = harness::run(vec![case.input.clone()], move |input, dead| {
                input
                    .apply("decoder", Decoder::new(registry.clone()))
                    .failures_to(dead)
            });
            match (out.output.pop(), out.dead_letters.pop()) {
                (Some(m), None) => Ok(m),
                (None, Some(d)) => Err(d.error_type),
                other => panic!("{}: expected one record, got {other:?}", case.name),
            }
        }
    }
}

#[test]
fn the_census_of_gcp_ingestion_cases() {
    let registry = registry();
    let mut counts = std::collections::BTreeMap::<Group, (usize, usize)>::new();
    let mut wrong = Vec::new();
    for case in cases() {
        let result = run(&registry, &case);
        let entry = counts.entry(case.group).or_default();
        match &case.deliberate {
            None if case.gcp.is(&result) => entry.0 += 1,
            // a deliberate difference is one: Sluice's outcome, and not gcp-ingestion's
            Some((sluice, _)) if sluice.is(&result) && !case.gcp.is(&result) => entry.1 += 1,
            _ => wrong.push(format!(
                "{:?} `{}`: gcp-ingestion {:?}, deliberate {:?}, Sluice {:?}",
                case.group,
                case.name,
                case.gcp,
                case.deliberate.as_ref().map(|d| d.1),
                result.map(|m| m.attributes)
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // (same outcome as gcp-ingestion, deliberately different) per group
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            (Group::Fixture, (6, 0)),
            (Group::Uri, (23, 2)),
            (Group::Edge, (30, 5)),
        ]
    );
}
