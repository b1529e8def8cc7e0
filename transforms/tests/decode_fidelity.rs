//! Fidelity with gcp-ingestion's decoder: each test runs gcp-ingestion's own cases (or the
//! behaviour of the code it cites) through the real `Decoder` on memory IO and expects
//! gcp-ingestion's outcome, or Sluice's documented, deliberate difference.
//!
//! References are to mozilla/gcp-ingestion, `ingestion-beam/src/main/java/com/mozilla/telemetry/`
//! (`decoder/ParseUri.java`, `decoder/ParsePayload.java`, ...) and its tests under
//! `ingestion-beam/src/test/java/...`.

#[path = "decode_support.rs"]
mod support;

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice::harness::{self, Output};
use sluice::Message;
use sluice_schemas::SchemaRegistry;
use sluice_transforms::decode::{sample_id, Decoder, ScrubPayloadConfig};
use support::gzip;

const ID: &str = "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";
const TIMESTAMP: &str = "2024-03-01T12:00:00.000000Z";

/// The example schemas plus a few with `mozPipelineMetadata`, as mozilla-pipeline-schemas
/// writes it.
fn registry() -> Arc<SchemaRegistry> {
    let mut r = SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json"))
        .expect("the example schemas load");
    let open = |meta: Value| json!({"type": "object", "mozPipelineMetadata": meta});
    r.add(
        "test",
        "impression",
        1,
        open(json!({"sample_id_source_uuid_payload_path": ["impression_id"]})),
    )
    .unwrap();
    r.add(
        "test",
        "by-document",
        1,
        open(json!({"sample_id_source_uuid_attribute": "document_id",
                    "sample_id_source_uuid_payload_path": ["impression_id"]})),
    )
    .unwrap();
    r.add(
        "test",
        "expiring",
        1,
        open(json!({"expiration_policy": {"delete_after_days": 30, "collect_through_date": "2024-02-29"}})),
    )
    .unwrap();
    r.add(
        "test",
        "badly-expiring",
        1,
        open(json!({"expiration_policy": {"collect_through_date": "2022/03/01"}})),
    )
    .unwrap();
    r.add("firefox-installer", "install", 1, json!({"type": "object"}))
        .unwrap();
    r.add("telemetry", "open", 4, json!({"type": "object"}))
        .unwrap();
    Arc::new(r)
}

fn decode(input: Vec<Message>) -> Output<Message> {
    let registry = registry();
    harness::run(input, move |input, dead| {
        input
            .apply("decoder", Decoder::new(registry.clone()))
            .failures_to(dead)
    })
}

/// One message through the decoder: the decoded message, or the dead letter's error type and
/// message.
fn decode_one(m: Message) -> Result<Message, (String, String)> {
    let mut out = decode(vec![m]);
    match (out.output.pop(), out.dead_letters.pop()) {
        (Some(m), None) => Ok(m),
        (None, Some(d)) => Err((d.error_type, d.error_message)),
        other => panic!("expected one record, got {other:?}"),
    }
}

fn submit(uri: &str, payload: impl Into<sluice::Bytes>) -> Message {
    Message::new(payload)
        .with_attribute("uri", uri)
        .with_attribute("submission_timestamp", TIMESTAMP)
}

fn generic(doctype: &str, payload: Value) -> Message {
    submit(
        &format!("/submit/test/{doctype}/1/{ID}"),
        payload.to_string(),
    )
}

fn payload(m: &Message) -> Value {
    serde_json::from_slice(&m.payload).unwrap()
}

// ---- client_id and sample_id (ParsePayload.addClientIdFromPayload, normalizeUuid) ----

#[test]
fn client_ids_are_lower_cased_in_the_attribute_and_the_payload() {
    // an id whose upper-case spelling hashes to another bucket than its lower-case one
    let upper = "2907648D-1A3B-4C5D-8E9F-0A1B2C3D4E5F";
    let lower = upper.to_lowercase();
    assert_ne!(sample_id(upper), sample_id(&lower));
    for (doc, pointer) in [
        (json!({"clientId": upper, "field": "x"}), "/clientId"),
        (json!({"client_id": upper}), "/client_id"),
        (
            json!({"client_info": {"client_id": format!("{{{upper}}}")}}),
            "/client_info/client_id",
        ),
    ] {
        let out = decode_one(generic("test", doc.clone())).unwrap();
        assert_eq!(out.attribute("client_id"), Some(lower.as_str()), "{doc}");
        let want = sample_id(&lower).to_string();
        assert_eq!(out.attribute("sample_id"), Some(want.as_str()), "{doc}");
        // gcp-ingestion writes the normalized id back into the payload
        let p = payload(&out);
        assert_eq!(p.pointer(pointer), Some(&json!(lower)), "{doc}");
        assert_eq!(p["sample_id"], json!(sample_id(&lower)));
    }
}

#[test]
fn the_first_client_id_that_is_a_uuid_wins() {
    let (a, b) = (
        "aaaaaaaa-1a3b-4c5d-8e9f-0a1b2c3d4e5f",
        "bbbbbbbb-1a3b-4c5d-8e9f-0a1b2c3d4e5f",
    );
    // Glean's client_info first, then top-level client_id, then clientId
    let out = decode_one(generic(
        "test",
        json!({"client_info": {"client_id": "n/a"}, "client_id": a, "clientId": b}),
    ))
    .unwrap();
    assert_eq!(out.attribute("client_id"), Some(a));
    let out = decode_one(generic("test", json!({"client_id": 7, "clientId": b}))).unwrap();
    assert_eq!(out.attribute("client_id"), Some(b));
}

#[test]
fn a_client_id_that_is_not_a_uuid_is_not_used() {
    // gcp-ingestion's normalizeUuid returns null: no client_id, no sample_id, still decoded
    for id in [
        "n/a",
        "",
        "2907648d1a3b4c5d8e9f0a1b2c3d4e5f",
        "zzzzzzzz-1a3b-4c5d-8e9f-0a1b2c3d4e5f",
    ] {
        let out = decode_one(generic("test", json!({"clientId": id}))).unwrap();
        assert_eq!(out.attribute("client_id"), None, "{id}");
        assert_eq!(out.attribute("sample_id"), None, "{id}");
        assert_eq!(payload(&out)["clientId"], json!(id), "left as sent");
    }
}

#[test]
fn sample_id_sources_come_from_the_schemas_pipeline_metadata() {
    // ParsePayload: sample_id_source_uuid_attribute first, then the payload path; braces
    // removed (activity-stream's impression_id is "{uuid}")
    let impression = "{CE39B608-F595-4C69-B6A6-F7A436604648}";
    let hashed = sample_id("ce39b608-f595-4c69-b6a6-f7a436604648").to_string();
    let client = "c0ffeec0-ffee-c0ff-eec0-ffeec0ffeec0";
    let out = decode_one(generic(
        "impression",
        json!({"impression_id": impression, "client_id": client}),
    ))
    .unwrap();
    assert_eq!(out.attribute("sample_id"), Some(hashed.as_str()));
    // the client id is still taken, just not hashed
    assert_eq!(out.attribute("client_id"), Some(client));

    let out = decode_one(generic("by-document", json!({"impression_id": impression}))).unwrap();
    assert_eq!(
        out.attribute("sample_id"),
        Some(sample_id(ID).to_string().as_str())
    );

    // no valid source: no sample_id
    let out = decode_one(generic("impression", json!({"impression_id": 12}))).unwrap();
    assert_eq!(out.attribute("sample_id"), None);
}

proptest! {
    /// `sample_id == crc32(lower(client_id)) % 100` for every spelling of a valid UUID: any
    /// case, with or without braces, in any of the three places a client id is read.
    #[test]
    fn sample_id_hashes_the_lower_case_uuid(
        hex in "[0-9a-f]{32}",
        upper in proptest::collection::vec(any::<bool>(), 32),
        braces: bool,
        place in 0..3usize,
    ) {
        let lower = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        let mut i = 0;
        let spelled: String = lower.chars().map(|c| {
            if c == '-' { return c; }
            i += 1;
            if upper[i - 1] { c.to_ascii_uppercase() } else { c }
        }).collect();
        let spelled = if braces { format!("{{{spelled}}}") } else { spelled };
        let doc = match place {
            0 => json!({"clientId": spelled}),
            1 => json!({"client_id": spelled}),
            _ => json!({"client_info": {"client_id": spelled}}),
        };
        let out = decode_one(generic("test", doc)).unwrap();
        let want = (crc32fast::hash(lower.as_bytes()) % 100).to_string();
        prop_assert_eq!(out.attribute("sample_id"), Some(want.as_str()));
        prop_assert_eq!(out.attribute("client_id"), Some(lower.as_str()));
    }
}

// ---- versions (ParsePayload.getVersionFromTelemetryPayload, JSONSchemaStore) ----

#[test]
fn a_version_is_the_schema_files_spelling() {
    // gcp-ingestion looks up `test.01.schema.json`: no such schema, a ParsePayload error
    for version in ["01", "+1", "1.0", " 1"] {
        let m = submit(&format!("/submit/test/test/{version}/{ID}"), "{}");
        let (error_type, message) = decode_one(m).unwrap_err();
        assert_eq!(error_type, "ParsePayload", "{version}");
        assert_eq!(message, format!("schema `test/test.{version}` not found"));
    }
}

#[test]
fn the_payload_version_falls_back_to_v() {
    // `version` is an object, so `v` names the schema (gcp-ingestion takes the first value node)
    let uri = support::telemetry_uri(ID, "open");
    let doc = json!({"version": {"major": 4}, "v": 4});
    let out = decode_one(submit(&uri, doc.to_string())).unwrap();
    assert_eq!(out.attribute("document_version"), Some("4"));
    // a scalar `version` comes first, even a wrong one (then no schema), and `null` is one
    for (version, want) in [
        (json!("5"), "5"),
        (json!(null), "null"),
        (json!(4.0), "4.0"),
    ] {
        let doc = json!({"version": version, "v": 4});
        let (error_type, message) = decode_one(submit(&uri, doc.to_string())).unwrap_err();
        assert_eq!(error_type, "ParsePayload");
        assert_eq!(message, format!("schema `telemetry/open.{want}` not found"));
    }
    // neither: missing
    let (_, message) = decode_one(submit(&uri, "{\"v\":[4]}")).unwrap_err();
    assert!(
        message.starts_with("missing document version for `telemetry/open`"),
        "{message}"
    );
}

// ---- ParseUri (ParseUri.processElement: Java's String.split; ParseUriTest.testStubUri) ----

#[test]
fn a_trailing_slash_is_accepted_as_javas_split_drops_it() {
    let out = decode_one(submit(&format!("/submit/test/test/1/{ID}/"), "{}")).unwrap();
    assert_eq!(out.attribute("document_id"), Some(ID));
    let mut rng = support::Rng::new(1);
    let doc = support::telemetry_main(&mut rng, 300).to_string();
    let out = decode_one(submit(
        &format!("{}/", support::telemetry_uri(ID, "main")),
        doc,
    ))
    .unwrap();
    assert_eq!(out.attribute("app_build_id"), Some("20240301093000"));
}

#[test]
fn empty_path_elements_fail_in_parse_payload() {
    for (uri, want) in [
        (format!("/submit/test//1/{ID}"), "no such doctype `test/`"),
        (format!("/submit//test/1/{ID}"), "no such doctype `/test`"),
        (
            format!("/submit/test/test//{ID}"),
            "schema `test/test.` not found",
        ),
    ] {
        let (error_type, message) = decode_one(submit(&uri, "{}")).unwrap_err();
        assert_eq!(
            (error_type.as_str(), message.as_str()),
            ("ParsePayload", want),
            "{uri}"
        );
    }
}

#[test]
fn a_query_string_stays_in_the_last_element() {
    // gcp-ingestion does not strip it: it becomes part of app_build_id ...
    let mut rng = support::Rng::new(2);
    let doc = support::telemetry_main(&mut rng, 300).to_string();
    let uri = format!("{}?v=4", support::telemetry_uri(ID, "main"));
    let out = decode_one(submit(&uri, doc)).unwrap();
    assert_eq!(out.attribute("app_build_id"), Some("20240301093000?v=4"));
    // ... or of document_id, which Sluice requires to be a UUID (a deliberate difference)
    let (error_type, _) =
        decode_one(submit(&format!("/submit/test/test/1/{ID}?v=4"), "{}")).unwrap_err();
    assert_eq!(error_type, "ParseUri");
}

#[test]
fn stub_installer_uris_become_firefox_installer_pings() {
    // ParseUriTest.testStubUri: the uri is the ping
    let mut fields = vec![
        "v7-4", "release", "release", "de", "1", "1", "10", "0", "19045", "", "0", "0", "1",
    ];
    fields.extend([
        "0", "100", "200", "3", "4", "5", "", "6", "7", "8", "9", "0", "0", "1",
    ]);
    fields.extend([
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
    ]);
    let uri = format!("/stub/{}", fields.join("/"));
    let out = decode_one(Message::new("").with_attribute("uri", uri.as_str())).unwrap();
    assert_eq!(
        out.attribute("document_namespace"),
        Some("firefox-installer")
    );
    assert_eq!(out.attribute("document_type"), Some("install"));
    assert_eq!(out.attribute("document_version"), Some("1"));
    let p = payload(&out);
    assert_eq!(p["ping_version"], "v7-4");
    assert_eq!(p["funnelcake"], "4");
    assert_eq!(p["locale"], "de");
    assert_eq!(p["succeeded"], true);
    assert_eq!(p["old_running"], true);
    assert_eq!(p["os_version"], "10.0.19045");
    assert_eq!(p["attribution"], "campaign%3Dx");
    assert_eq!(p["set_default"], true);
    // the wrong number of elements for v7
    let short = format!("/stub/{}", fields[..36].join("/"));
    let (error_type, message) =
        decode_one(Message::new("").with_attribute("uri", short.as_str())).unwrap_err();
    assert_eq!(error_type, "ParseUri");
    assert!(
        message.contains("has 36 path elements after /stub/, expected 37"),
        "{message}"
    );
}

// ---- ParsePayload.deprecationCheck ----

#[test]
fn a_doctype_past_its_collect_through_date_is_rejected() {
    let on_time = generic("expiring", json!({}))
        .with_attribute("submission_timestamp", "2024-02-29T23:59:59Z");
    assert!(decode_one(on_time).is_ok());
    // the UTC day counts: 23:30 at -01:00 is the next day
    let late = generic("expiring", json!({}))
        .with_attribute("submission_timestamp", "2024-02-29T23:30:00-01:00");
    let (error_type, message) = decode_one(late).unwrap_err();
    assert_eq!(error_type, "ParsePayload");
    assert_eq!(
        message,
        "`test/expiring.1` is no longer collected: submitted 2024-03-01, collected through 2024-02-29"
    );
    // an unparsable date or timestamp disables the check, as in gcp-ingestion
    assert!(decode_one(generic("badly-expiring", json!({}))).is_ok());
    let untimed =
        generic("expiring", json!({})).with_attribute("submission_timestamp", "yesterday");
    assert!(decode_one(untimed).is_ok());
}

// ---- ParsePayload.addAttributesFromPayload: os, os_version, app_update_channel ----

#[test]
fn os_and_channel_come_from_client_info_or_environment() {
    let glean = generic(
        "test",
        json!({"client_info": {"app_channel": "beta", "os": "Android", "os_version": "14"},
               "environment": {"system": {"os": {"name": "Linux", "version": "6.1"}}}}),
    );
    let out = decode_one(glean).unwrap();
    assert_eq!(out.attribute("app_update_channel"), Some("beta"));
    assert_eq!(out.attribute("os"), Some("Android"));
    assert_eq!(out.attribute("os_version"), Some("14"));

    let mut rng = support::Rng::new(3);
    let doc = support::telemetry_main(&mut rng, 300).to_string();
    let out = decode_one(submit(&support::telemetry_uri(ID, "main"), doc)).unwrap();
    assert_eq!(out.attribute("os"), Some("Linux"));
    assert_eq!(out.attribute("os_version"), Some("6.1"));
    assert_eq!(
        out.attribute("app_update_channel"),
        Some("release"),
        "from the uri"
    );

    // activity-stream and core-ping fields, empty strings ignored
    let core = generic(
        "test",
        json!({"release_channel": "nightly", "os": "iOS", "osversion": ""}),
    );
    let out = decode_one(core).unwrap();
    assert_eq!(out.attribute("app_update_channel"), Some("nightly"));
    assert_eq!(out.attribute("os"), Some("iOS"));
    assert_eq!(out.attribute("os_version"), None);
}

// ---- NestedMetadata.HEADER_ATTRIBUTES ----

#[test]
fn x_foxsec_ip_reputation_is_nested_as_a_header() {
    let m = generic("test", json!({})).with_attribute("x_foxsec_ip_reputation", "reputation=75");
    let out = decode_one(m).unwrap();
    assert_eq!(
        payload(&out)["metadata"]["header"]["x_foxsec_ip_reputation"],
        "reputation=75"
    );
    // and replays back into the attribute
    let replay = decode_one(Message::new(out.payload.clone())).unwrap();
    assert_eq!(
        replay.attribute("x_foxsec_ip_reputation"),
        Some("reputation=75")
    );
}

// ---- DecompressPayload: GZIPInputStream ignores trailing garbage ----

#[test]
fn a_gzip_member_followed_by_garbage_decodes_the_member() {
    let mut body = gzip(br#"{"field":"x"}"#);
    body.extend_from_slice(b"\0\0garbage after the member");
    let out = decode_one(submit(&format!("/submit/test/test/1/{ID}"), body)).unwrap();
    assert_eq!(payload(&out)["field"], "x");
    assert_eq!(out.attribute("client_compression"), Some("gzip"));
    // a corrupt member stays a DecompressPayload dead letter (deliberate: gcp-ingestion passes
    // the bytes on and fails ParsePayload)
    let mut corrupt = gzip(br#"{"field":"x"}"#);
    let n = corrupt.len();
    corrupt[n - 6] ^= 0x55;
    let (error_type, _) =
        decode_one(submit(&format!("/submit/test/test/1/{ID}"), corrupt)).unwrap_err();
    assert_eq!(error_type, "DecompressPayload");
}

// ---- LimitPayloadSize: 8 MiB ----

#[test]
fn an_eight_mib_payload_passes_and_one_byte_more_does_not() {
    let limit = 8 * 1024 * 1024;
    assert_eq!(sluice_transforms::decode::DEFAULT_MAX_PAYLOAD_BYTES, limit);
    let exact = format!(r#"{{"field":"{}"}}"#, "x".repeat(limit - 12));
    assert_eq!(exact.len(), limit);
    let uri = format!("/submit/test/test/1/{ID}");
    assert!(decode_one(submit(&uri, exact.clone())).is_ok());
    let over = format!(r#"{{"field":"{}"}}"#, "x".repeat(limit - 11));
    let (error_type, _) = decode_one(submit(&uri, over)).unwrap_err();
    assert_eq!(error_type, "LimitPayloadSize");
}

// ---- ParseProxy (ParseProxyTest.testOutput) ----

#[test]
fn a_proxied_submission_takes_the_proxys_timestamp_and_drops_its_forwarding_entry() {
    let proxied = |xpp: &str| {
        generic("test", json!({}))
            .with_attribute("submission_timestamp", "2000-01-01T00:00:00.000000Z")
            .with_attribute("x_forwarded_for", "4, 3, 2, 1")
            .with_attribute("x_pipeline_proxy", xpp)
    };
    // keep the IPs to see what ParseProxy did to them
    let decode_keeping_ips = |m: Message| {
        let registry = registry();
        let mut out = harness::run(vec![m], move |input, dead| {
            input
                .apply(
                    "decoder",
                    Decoder::new(registry.clone())
                        .with_scrub(sluice_transforms::scrub::ScrubAttributes::none()),
                )
                .failures_to(dead)
        });
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        out.output.pop().unwrap()
    };
    let out = decode_keeping_ips(proxied("1999-12-31T23:59:59.999999Z"));
    assert_eq!(
        out.attribute("submission_timestamp"),
        Some("1999-12-31T23:59:59.999999Z")
    );
    assert_eq!(
        out.attribute("proxy_timestamp"),
        Some("2000-01-01T00:00:00.000000Z")
    );
    assert_eq!(out.attribute("x_forwarded_for"), Some("4, 3, 2"));
    assert_eq!(out.attribute("x_pipeline_proxy"), None);
    assert_eq!(
        payload(&out)["submission_timestamp"],
        "1999-12-31T23:59:59.999999Z"
    );
    // a value that is not a timestamp: only the forwarding entry goes
    let out = decode_keeping_ips(proxied("1"));
    assert_eq!(
        out.attribute("submission_timestamp"),
        Some("2000-01-01T00:00:00.000000Z")
    );
    assert_eq!(out.attribute("proxy_timestamp"), None);
    assert_eq!(out.attribute("x_forwarded_for"), Some("4, 3, 2"));
    // not proxied: unchanged, and the IPs are scrubbed by default afterwards
    let plain = generic("test", json!({})).with_attribute("x_forwarded_for", "3, 2, 1");
    let out = decode_one(plain).unwrap();
    assert_eq!(out.attribute("x_forwarded_for"), None);
    // ParseProxyTest.testWithGeoCityLookup: the client IP gcp-ingestion's lookups then use
    let mut m = Message::new("")
        .with_attribute("x_forwarded_for", "_, 202.196.224.0, _, _")
        .with_attribute("x_pipeline_proxy", "1");
    sluice_transforms::decode::ParseProxy::apply(&mut m);
    assert_eq!(
        sluice_transforms::decode::client_ip(&m.attributes),
        Some("202.196.224.0")
    );
}

// ---- ParseUserAgent (ParseUserAgent.java, ParseUserAgentTest.testOutput) ----

#[test]
fn the_user_agent_is_parsed_and_removed() {
    let ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.13; rv:63.0) Gecko/20100101 Firefox/63.0";
    let out = decode_one(generic("test", json!({})).with_attribute("user_agent", ua)).unwrap();
    assert_eq!(out.attribute("user_agent"), None);
    assert_eq!(out.attribute("user_agent_browser"), Some("Firefox"));
    // the current ParseUserAgent takes the major version (`\d+`)
    assert_eq!(out.attribute("user_agent_version"), Some("63"));
    assert_eq!(out.attribute("user_agent_os"), Some("Macintosh"));
    assert_eq!(
        payload(&out)["metadata"]["user_agent"],
        json!({"browser": "Firefox", "os": "Macintosh", "version": "63"})
    );
    // an empty agent: removed, nothing set
    let out = decode_one(generic("test", json!({})).with_attribute("user_agent", "")).unwrap();
    assert_eq!(out.attribute("user_agent"), None);
    assert_eq!(payload(&out)["metadata"]["user_agent"], json!({}));
}

// ---- NormalizeAttributes (transforms/NormalizeAttributes.java) ----

#[test]
fn attributes_are_normalized_into_top_level_fields() {
    let m = generic(
        "test",
        json!({"client_info": {"app_channel": "nightly-cck-x", "os": "Windows_NT", "os_version": "10.0.19045.1"}}),
    )
    .with_attribute("geo_country", "fr");
    let out = decode_one(m).unwrap();
    let p = payload(&out);
    assert_eq!(p["normalized_channel"], "nightly");
    assert_eq!(p["normalized_os"], "Windows");
    assert_eq!(p["normalized_os_version"], "10.0.19045");
    assert_eq!(p["normalized_country_code"], "FR");
    assert!(p.get("normalized_app_name").is_none(), "no app_name");
    let mut rng = support::Rng::new(4);
    let doc = support::telemetry_main(&mut rng, 300).to_string();
    let uri =
        "/submit/telemetry/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11/main/Fennec-beta/124.0/aurora/1";
    let out = decode_one(submit(uri, doc)).unwrap();
    let p = payload(&out);
    assert_eq!(p["normalized_app_name"], "Fennec");
    assert_eq!(p["normalized_channel"], "aurora");
    assert_eq!(p["normalized_os"], "Linux");
    assert_eq!(p["normalized_os_version"], "6.1");
}

// ---- GeoCityLookup and GeoIspLookup, on databases the test writes ----

#[path = "mmdb_support.rs"]
mod mmdb;

use sluice_transforms::decode::GeoLookup;

/// 2019-01-03T21:26:19Z, the build time of gcp-ingestion's test city database.
const BUILD_EPOCH: u64 = 1_546_550_779;

/// City and ISP databases and a city filter in a temporary directory.
fn geo_files() -> (tempfile::TempDir, GeoLookup) {
    let dir = tempfile::tempdir().unwrap();
    let mut city = mmdb::Writer::new("GeoIP2-City", BUILD_EPOCH);
    // GeoCityLookupTest's addresses, with records of our own
    city.insert(
        "202.196.224.0".parse().unwrap(),
        20,
        mmdb::city("PH", Some((1_701_668, "Manila")), &["00"]),
    );
    city.insert(
        "216.160.83.56".parse().unwrap(),
        29,
        mmdb::city("US", Some((5_803_556, "Milton")), &["WA", "XX"]),
    );
    city.insert(
        "2.125.160.216".parse().unwrap(),
        29,
        mmdb::city("GB", Some((2_655_045, "Boxford")), &[]),
    );
    std::fs::write(dir.path().join("city.mmdb"), city.finish()).unwrap();
    let mut isp = mmdb::Writer::new("GeoIP2-ISP", BUILD_EPOCH + 86_400);
    isp.insert(
        "24.38.243.141".parse().unwrap(),
        32,
        mmdb::isp("LAWN", "Lawn Doctor"),
    );
    std::fs::write(dir.path().join("isp.mmdb"), isp.finish()).unwrap();
    // Milton and Manila are large enough, Boxford is not
    std::fs::write(
        dir.path().join("cities15000.txt"),
        "1701668\tManila\n5803556\tMilton\n",
    )
    .unwrap();
    let geo = GeoLookup::none()
        .with_city_database(dir.path().join("city.mmdb"))
        .unwrap()
        .with_city_filter(dir.path().join("cities15000.txt"))
        .unwrap()
        .with_isp_database(dir.path().join("isp.mmdb"))
        .unwrap();
    (dir, geo)
}

fn decode_with_geo(geo: GeoLookup, input: Vec<Message>) -> Output<Message> {
    let registry = registry();
    harness::run(input, move |input, dead| {
        input
            .apply(
                "decoder",
                Decoder::new(registry.clone()).with_geo(geo.clone()),
            )
            .failures_to(dead)
    })
}

#[test]
fn geo_and_isp_come_from_the_client_ip_before_it_is_scrubbed() {
    let (_dir, geo) = geo_files();
    let with = |pairs: &[(&str, &str)]| {
        pairs.iter().fold(generic("test", json!({})), |m, (k, v)| {
            m.with_attribute(*k, *v)
        })
    };
    let input = vec![
        // GeoCityLookupTest: x_forwarded_for's second-to-last entry is the client
        with(&[
            ("x_forwarded_for", "_, 216.160.83.56, 35.1.1.1"),
            ("remote_addr", "10.0.0.1"),
        ]),
        // remote_addr without x_forwarded_for; a city below the population threshold
        with(&[("remote_addr", "2.125.160.216")]),
        // proxied (ParseProxyTest.testWithGeoCityLookup): the proxy's entry is dropped first
        with(&[
            ("x_pipeline_proxy", "1"),
            ("x_forwarded_for", "_, 202.196.224.0, _, _"),
        ]),
        // ISP database only knows this one; unknown to the city database
        with(&[("remote_addr", "24.38.243.141")]),
        // not an address: only the database versions
        with(&[("remote_addr", "not-an-ip")]),
        // already looked up (a replay): left alone
        with(&[
            ("remote_addr", "216.160.83.56"),
            ("geo_country", "FR"),
            ("isp_name", "Kept"),
        ]),
    ];
    let out = decode_with_geo(geo, input);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let fields = |m: &Message| -> Vec<(String, String)> {
        m.attributes
            .iter()
            .filter(|(k, _)| {
                k.starts_with("geo_")
                    || k.starts_with("isp_")
                    || k.starts_with("normalized_country")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut got: Vec<Vec<(String, String)>> = out.output.iter().map(fields).collect();
    got.sort();
    let v = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.sort();
        p
    };
    let city_v = "2019-01-03T21:26:19Z";
    let isp_v = "2019-01-04T21:26:19Z";
    let mut want = vec![
        v(&[
            ("geo_city", "Milton"),
            ("geo_country", "US"),
            ("geo_subdivision1", "WA"),
            ("geo_subdivision2", "XX"),
            ("geo_db_version", city_v),
            ("isp_db_version", isp_v),
            ("normalized_country_code", "US"),
        ]),
        v(&[
            ("geo_country", "GB"),
            ("geo_db_version", city_v),
            ("isp_db_version", isp_v),
            ("normalized_country_code", "GB"),
        ]),
        v(&[
            ("geo_city", "Manila"),
            ("geo_country", "PH"),
            ("geo_subdivision1", "00"),
            ("geo_db_version", city_v),
            ("isp_db_version", isp_v),
            ("normalized_country_code", "PH"),
        ]),
        v(&[
            ("geo_db_version", city_v),
            ("isp_db_version", isp_v),
            ("isp_name", "LAWN"),
            ("isp_organization", "Lawn Doctor"),
        ]),
        v(&[("geo_db_version", city_v), ("isp_db_version", isp_v)]),
        v(&[
            ("geo_country", "FR"),
            ("isp_name", "Kept"),
            ("normalized_country_code", "FR"),
        ]),
    ];
    want.sort();
    assert_eq!(got, want);
    // the IPs are gone from attributes and payload; geo is nested
    for m in &out.output {
        assert_eq!(m.attribute("remote_addr"), None);
        assert_eq!(m.attribute("x_forwarded_for"), None);
        let p = payload(m);
        assert!(p["metadata"]["geo"].is_object() && p["metadata"]["isp"].is_object());
        assert!(!String::from_utf8_lossy(&m.payload).contains("216.160.83.56"));
    }
}

#[test]
fn the_decoder_runs_without_geo_databases_and_says_what_it_cannot_fill() {
    let none = GeoLookup::none();
    assert_eq!(
        none.unfilled_fields(),
        [
            "geo_country",
            "geo_subdivision1",
            "geo_subdivision2",
            "geo_city",
            "geo_db_version",
            "normalized_country_code",
            "isp_name",
            "isp_organization",
            "isp_db_version"
        ]
    );
    let (_dir, geo) = geo_files();
    assert!(geo.unfilled_fields().is_empty());
    let out = decode_one(generic("test", json!({})).with_attribute("remote_addr", "216.160.83.56"))
        .unwrap();
    assert_eq!(out.attribute("geo_country"), None);
    assert_eq!(out.attribute("geo_db_version"), None);
    // a bad database or filter is a clear error at start
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.mmdb"), b"not a database").unwrap();
    let e = GeoLookup::none()
        .with_city_database(dir.path().join("bad.mmdb"))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("cannot open the geo database `"),
        "{e}"
    );
    std::fs::write(dir.path().join("filter.txt"), "123\tok\nParis\n").unwrap();
    let e = GeoLookup::none()
        .with_city_filter(dir.path().join("filter.txt"))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("line 2 of the geo city filter `")
            && e.to_string()
                .ends_with("does not begin with a geoname integer id: `Paris`"),
        "{e}"
    );
}

// ---- Ping splitting: mozPipelineMetadata.split_config ----
//
// The contract is mozilla-schema-generator's `subset_pings.generate` (and its `test_subset`),
// which writes the schemas of the parts from the same `split_config`: fields whose dotted path
// fully matches a subset's `pattern` or `extra_pattern` move to that subset (with copies of
// `client_id`, `clientId`, `client_info`), the rest to the remainder, the original is kept
// when `preserve_original` is true. The bundled `test/split` schema declares one.

const UPPER_ID: &str = "2907648D-1A3B-4C5D-8E9F-0A1B2C3D4E5F";

fn split_input(extra: Value) -> Message {
    let mut p = json!({
        "client_id": UPPER_ID,
        "payload": {"int": 1, "int64": 2, "string": "s"},
        "test_int": 3,
        "test_string": "t"
    });
    p.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    generic("split", p)
}

/// The outputs by document type.
fn by_doctype(out: &[Message]) -> std::collections::BTreeMap<String, &Message> {
    out.iter()
        .map(|m| (m.attribute("document_type").unwrap().to_string(), m))
        .collect()
}

/// A payload without the members AddMetadata adds.
fn document(m: &Message) -> Value {
    let mut p = payload(m);
    for k in [
        "metadata",
        "submission_timestamp",
        "document_id",
        "sample_id",
        "normalized_app_name",
        "normalized_channel",
        "normalized_os",
        "normalized_os_version",
        "normalized_country_code",
    ] {
        p.as_object_mut().unwrap().remove(k);
    }
    p
}

#[test]
fn a_document_whose_schema_declares_a_split_becomes_its_parts() {
    let position = sluice::SourcePosition::Line {
        file: Some("in.ndjson".into()),
        line: 7,
    };
    let out = decode(vec![split_input(json!({})).with_position(position.clone())]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let parts = by_doctype(&out.output);
    assert_eq!(
        parts.keys().collect::<Vec<_>>(),
        ["split", "split-remainder", "split-subset"]
    );
    let lower = UPPER_ID.to_ascii_lowercase();
    // the original, whole (preserve_original), its client id lower-cased as usual
    assert_eq!(
        document(parts["split"]),
        json!({"client_id": lower, "payload": {"int": 1, "int64": 2, "string": "s"},
               "test_int": 3, "test_string": "t"})
    );
    // `.*int` and `.*int64` move to the subset, with a copy of the client id
    assert_eq!(
        document(parts["split-subset"]),
        json!({"client_id": lower, "payload": {"int": 1, "int64": 2}, "test_int": 3})
    );
    // what no subset took
    assert_eq!(
        document(parts["split-remainder"]),
        json!({"client_id": lower, "payload": {"string": "s"}, "test_string": "t"})
    );
    for (doctype, m) in &parts {
        // each is its own document: its names in the attributes and the nested metadata ...
        assert_eq!(m.attribute("document_namespace"), Some("test"));
        assert_eq!(m.attribute("document_version"), Some("1"));
        assert_eq!(payload(m)["metadata"]["document_type"], doctype.as_str());
        // ... with the submission's id, time, client and sample, where it was read, and
        // where it was split from
        assert_eq!(m.attribute("document_id"), Some(ID));
        assert_eq!(payload(m)["submission_timestamp"], TIMESTAMP);
        assert_eq!(m.attribute("client_id"), Some(lower.as_str()));
        assert_eq!(
            m.attribute("sample_id"),
            Some(sample_id(&lower).to_string().as_str())
        );
        assert_eq!(m.position.as_ref(), Some(&position), "{doctype}");
        assert_eq!(m.attribute("split_from"), Some("test/split/1"));
    }
}

#[test]
fn the_split_outputs_decode_again_to_themselves() {
    // the preserved original carries `split_from`, so it is not split a second time
    let first = decode(vec![split_input(json!({}))]);
    let again = decode(first.output.clone());
    assert!(again.dead_letters.is_empty(), "{:?}", again.dead_letters);
    let lines = |out: &[Message]| {
        let mut l: Vec<String> = out
            .iter()
            .map(|m| {
                let mut s = String::new();
                m.write_json_line(&mut s);
                s
            })
            .collect();
        l.sort();
        l
    };
    assert_eq!(lines(&again.output), lines(&first.output));
}

#[test]
fn a_subset_that_takes_nothing_makes_no_document() {
    let p = json!({"client_id": ID, "payload": {"string": "s"}, "test_string": "t"});
    let out = decode(vec![generic("split", p)]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(
        by_doctype(&out.output).keys().collect::<Vec<_>>(),
        ["split", "split-remainder"]
    );
}

#[test]
fn a_part_that_fails_makes_the_whole_submission_one_dead_letter() {
    // valid as test/split (open), but `other_int` goes to the subset, whose schema is closed:
    // no part is written, and the one dead letter holds the submission as received, so that
    // replaying it once fixed makes every part again
    let input = split_input(json!({"other_int": 4}));
    let out = decode(vec![input.clone()]);
    assert!(out.output.is_empty(), "{:?}", out.output);
    let dl = &out.dead_letters[0];
    assert_eq!(dl.error_type, "ParsePayload");
    assert_eq!(dl.original.payload, input.payload);
    assert_eq!(dl.original.attribute("uri"), input.attribute("uri"));
    assert!(
        dl.error_message
            .starts_with("split part `test/split-subset.1` failed: payload does not match schema `test/split-subset.1`"),
        "{}",
        dl.error_message
    );
    assert!(
        dl.error_message.contains("other_int"),
        "{}",
        dl.error_message
    );
    // an invalid original is the original's error, not a part's
    let out = decode(vec![split_input(json!({"test_int": "three"}))]);
    assert!(out.output.is_empty());
    assert!(
        out.dead_letters[0]
            .error_message
            .starts_with("payload does not match schema `test/split.1`"),
        "{}",
        out.dead_letters[0].error_message
    );
}

#[test]
fn a_split_to_an_unknown_schema_or_a_bad_split_config_is_an_error() {
    let mut r = SchemaRegistry::empty();
    let with_split =
        |split: Value| json!({"type": "object", "mozPipelineMetadata": {"split_config": split}});
    r.add(
        "test",
        "lost",
        1,
        with_split(json!({"remainder": {"document_namespace": "test",
                                        "document_type": "nowhere", "document_version": "1"}})),
    )
    .unwrap();
    let registry = Arc::new(r);
    let out = harness::run(
        vec![generic("lost", json!({"a": 1}))],
        move |input, dead| {
            input
                .apply("decoder", Decoder::new(registry.clone()))
                .failures_to(dead)
        },
    );
    assert!(out.output.is_empty());
    assert_eq!(
        out.dead_letters[0].error_message,
        "split part `test/nowhere.1` failed: schema `test/nowhere.1` not found"
    );
    // a pattern that is no regular expression: the schema does not load
    let e = SchemaRegistry::empty()
        .add(
            "test",
            "bad",
            1,
            with_split(
                json!({"subsets": [{"document_namespace": "test", "document_type": "s",
                                           "document_version": "1", "pattern": "(unclosed"}]}),
            ),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("schema file `test/bad/bad.1.schema.json (in memory)` does not compile: mozPipelineMetadata: `split_config.subsets[0]`: pattern `(unclosed`"),
        "{e}"
    );
}

// ---- MessageScrubber: payload rules before validation (gcp-ingestion #1135) ----
//
// ParsePayload.java calls MessageScrubber after parsing the payload and lifting replayed
// metadata, before `docTypeExists`, the version lookup and validation: a rule drops or
// redacts a document whatever its validity, and the outcome is the rule's.

fn decode_with_rules(rules: &str, input: Vec<Message>) -> Output<Message> {
    let registry = registry();
    let rules: ScrubPayloadConfig = serde_json::from_str(rules).unwrap();
    harness::run(input, move |input, dead| {
        input
            .apply(
                "decoder",
                Decoder::new(registry.clone()).with_scrub_payload(&rules),
            )
            .failures_to(dead)
    })
}

#[test]
fn payload_rules_run_before_validation() {
    // test/test refuses any document with a `bad` member
    let invalid = |extra: Value| {
        let mut p = json!({"field": "x", "bad": {"secret": 1}});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        generic("test", p)
    };
    // without rules: a ParsePayload dead letter
    let out = decode(vec![invalid(json!({}))]);
    assert_eq!(out.dead_letters[0].error_type, "ParsePayload");

    // a redacted field is gone before validation: the document decodes
    let out = decode_with_rules(
        r#"{"drop_fields": [{"field": "/bad", "namespace": "test"}]}"#,
        vec![invalid(json!({}))],
    );
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(document(&out.output[0]), json!({"field": "x"}));

    // a dropped document is the rule's outcome: a ScrubPayload dead letter holding the
    // submission as received, or (count) nothing at all
    let rules = r#"{"drop_documents": [
        {"name": "counted", "field": "/tag", "equals": "c", "action": "count"},
        {"name": "dead", "field": "/tag", "equals": "d"}
    ]}"#;
    let input = vec![
        invalid(json!({"tag": "c"})),
        invalid(json!({"tag": "d"})),
        invalid(json!({"tag": "other"})),
    ];
    let out = decode_with_rules(rules, input.clone());
    assert!(out.output.is_empty(), "{:?}", out.output);
    let mut types: Vec<(&str, &str)> = out
        .dead_letters
        .iter()
        .map(|d| (d.error_type.as_str(), d.error_message.as_str()))
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            (
                "ParsePayload",
                "payload does not match schema `test/test.1`: /bad: False schema does not allow {\"secret\":1}"
            ),
            (
                "ScrubPayload",
                "document dropped by payload rule `dead`: `/tag` matched"
            ),
        ]
    );
    let dropped = out
        .dead_letters
        .iter()
        .find(|d| d.error_type == "ScrubPayload")
        .unwrap();
    assert_eq!(dropped.original.payload, input[1].payload);
}

#[test]
fn payload_rules_see_the_uris_names_and_values_and_drop_documents_no_schema_knows() {
    // gcp-ingestion's MessageScrubber drops by namespace/doctype before `docTypeExists`: a
    // doctype without a schema is the rule's, not "unknown doctype"
    let rules = r#"{"drop_documents": [
        {"name": "retired", "field": "/v", "namespace": "org-mozilla-fenix", "doctype": "old-ping"},
        {"name": "old_nightly", "attribute": "app_version", "equals": "61.0a1"}
    ]}"#;
    let uri = |ns: &str| format!("/submit/{ns}/old-ping/1/{ID}");
    let out = decode_with_rules(
        rules,
        vec![
            submit(&uri("org-mozilla-fenix"), r#"{"v":1}"#),
            // the registry's comparison of names: snake_case
            submit(&uri("org_mozilla_fenix"), r#"{"v":1}"#),
            // not matched: the usual ParsePayload outcome
            submit(&uri("org-mozilla-fenix"), r#"{"w":1}"#),
            // by what the uri says: an invalid main ping of that version is the rule's
            submit(
                &format!("/submit/telemetry/{ID}/main/Firefox/61.0a1/nightly/20180328030202"),
                r#"{"version":4}"#,
            ),
        ],
    );
    let by_payload = |p: &str| {
        out.dead_letters
            .iter()
            .filter(|d| d.original.payload == p.as_bytes())
            .map(|d| (d.error_type.as_str(), d.error_message.as_str()))
            .collect::<Vec<_>>()
    };
    let retired = (
        "ScrubPayload",
        "document dropped by payload rule `retired`: `/v` matched",
    );
    assert_eq!(by_payload(r#"{"v":1}"#), [retired, retired]);
    let unmatched = by_payload(r#"{"w":1}"#);
    assert_eq!(unmatched[0].0, "ParsePayload");
    assert!(
        unmatched[0].1.starts_with("no such doctype"),
        "{unmatched:?}"
    );
    assert_eq!(
        by_payload(r#"{"version":4}"#),
        [(
            "ScrubPayload",
            "document dropped by payload rule `old_nightly`: attribute `app_version` matched"
        )]
    );
}
