//! Behaviour of the decoder's steps and of the `Decoder` on in-memory pipelines.

#[path = "decode_support.rs"]
mod support;

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use sluice::harness::{self, Output};
use sluice::{DeadLetter, Message};
use sluice_schemas::{Limits, SchemaRegistry};
use sluice_transforms::decode::{
    AddMetadata, DecodeError, Decoder, DecompressPayload, LimitPayloadSize, ParsePayload, ParseUri,
};
use support::*;

const ID: &str = "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";
const CLIENT: &str = "c0ffeec0-ffee-c0ff-eec0-ffeec0ffeec0";

fn decode(registry: Arc<SchemaRegistry>, input: Vec<Message>) -> Output<Message> {
    harness::run(input, move |input, dead| {
        input
            .apply("decoder", Decoder::new(registry.clone()))
            .failures_to(dead)
    })
}

fn parse(m: Message) -> Result<Message, DecodeError> {
    ParsePayload::new(registry()).apply_to(&m)
}

fn test_message(payload: &str) -> Message {
    Message::new(payload.to_string())
        .with_attribute("document_namespace", "test")
        .with_attribute("document_type", "test")
        .with_attribute("document_version", "1")
}

#[test]
fn parse_payload_every_error_kind() {
    let cases: Vec<(Message, &str)> =
        vec![
        (test_message("{\"field\":"), "payload is not valid json: EOF while parsing"),
        (test_message("[1]"), "payload is a json array, expected an object"),
        (
            Message::new("{}").with_attribute("document_type", "test"),
            "missing required attribute `document_namespace`",
        ),
        (
            Message::new("{}").with_attribute("document_namespace", "test"),
            "missing required attribute `document_type`",
        ),
        (
            test_message("{}").with_attribute("document_type", "nope"),
            "no such doctype `test/nope`",
        ),
        (
            Message::new("{}")
                .with_attribute("document_namespace", "telemetry")
                .with_attribute("document_type", "main"),
            "missing document version for `telemetry/main`: not in the uri, nor at /version or /v",
        ),
        (
            test_message("{}").with_attribute("document_version", "1.5"),
            "schema `test/test.1.5` not found",
        ),
        (
            test_message("{}").with_attribute("document_version", "7"),
            "schema `test/test.7` not found",
        ),
        (
            test_message("{\"count\":-1}"),
            "payload does not match schema `test/test.1`: /count: ",
        ),
        (
            test_message(&format!("{{\"a\":{}1{}}}", "[".repeat(70), "]".repeat(70))),
            "payload exceeds document limits: /a/",
        ),
    ];
    for (m, want) in cases {
        // the message and its causes, each once (what a dead letter's error_message holds)
        let e = sluice::chain(&parse(m.clone()).unwrap_err());
        assert!(e.starts_with(want), "{m:?}: got `{e}`, want `{want}`");
    }
}

#[test]
fn parse_payload_validates_and_sets_client_id() {
    let out = parse(test_message(&format!(
        "{{\"field\":\"x\",\"clientId\":\"{CLIENT}\"}}"
    )))
    .unwrap();
    assert_eq!(out.attribute("client_id"), Some(CLIENT));
    assert_eq!(out.attribute("sample_id"), Some("33"));
    let m = Message::new(
        json!({"client_info": {"client_id": CLIENT, "telemetry_sdk_build": "1"},
               "ping_info": {"seq": 1, "start_time": "2024-01-01T00:00Z", "end_time": "2024-01-01T00:00Z"}})
        .to_string(),
    )
    .with_attribute("document_namespace", "org-mozilla-fenix")
    .with_attribute("document_type", "baseline")
    .with_attribute("document_version", "1");
    assert_eq!(parse(m).unwrap().attribute("client_id"), Some(CLIENT));
}

#[test]
fn telemetry_version_comes_from_the_payload() {
    let mut rng = support::Rng::new(1);
    let doc = telemetry_main(&mut rng, 500);
    let base = Message::new(doc.to_string())
        .with_attribute("document_namespace", "telemetry")
        .with_attribute("document_type", "main");
    assert_eq!(
        parse(base.clone()).unwrap().attribute("document_version"),
        Some("4")
    );
    let mut v = doc.clone();
    v.as_object_mut().unwrap().remove("version");
    v["v"] = json!("4");
    let m = Message::new(v.to_string()).with_attributes(base.attributes.clone());
    let e = parse(m).unwrap_err();
    // the version is found, then the schema requires `version`
    assert!(
        e.to_string()
            .starts_with("payload does not match schema `telemetry/main.4`"),
        "{e}"
    );
}

#[test]
fn depth_is_bounded_before_validation() {
    let deep = format!("{{\"tags\":{}{}}}", "[".repeat(10), "]".repeat(10));
    let step = ParsePayload::new(registry()).with_limits(Limits {
        max_depth: 5,
        max_array_len: 10,
    });
    let e = step.apply_to(&test_message(&deep)).unwrap_err();
    assert!(matches!(e, DecodeError::Limits(_)), "{e}");
    assert!(sluice::chain(&e).contains("/tags/0/0/0"), "{e}");
}

#[test]
fn each_step_names_its_error_type() {
    let gz_bad = {
        let mut g = gzip(b"{\"field\":\"x\"}");
        g.truncate(10);
        g
    };
    let input = vec![
        Message::new("{}").with_attribute("uri", "/nope"),
        Message::new(gz_bad).with_attribute("uri", generic_uri("test", "test", 1, ID)),
        Message::new(vec![b' '; 200]).with_attribute("uri", generic_uri("test", "test", 1, ID)),
        Message::new("[]").with_attribute("uri", generic_uri("test", "test", 1, ID)),
    ];
    let registry = registry();
    let out = harness::run(input, move |input, dead| {
        input
            .apply(
                "decoder",
                Decoder::new(registry.clone()).with_max_payload_bytes(100),
            )
            .failures_to(dead)
    });
    assert!(out.output.is_empty());
    let mut types: Vec<&str> = out
        .dead_letters
        .iter()
        .map(|d| d.error_type.as_str())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "DecompressPayload",
            "LimitPayloadSize",
            "ParsePayload",
            "ParseUri"
        ]
    );
    for d in &out.dead_letters {
        assert!(
            d.exception_class
                .starts_with("sluice_transforms::decode::error::DecodeError::"),
            "{}",
            d.exception_class
        );
    }
    // AddMetadata fails only when used on its own on a non-object
    let out = harness::run(vec![Message::new("[1]")], |input, dead| {
        input
            .apply("add_metadata", AddMetadata::new())
            .failures_to(dead)
    });
    assert_eq!(out.dead_letters[0].error_type, "AddMetadata");
    assert_eq!(out.dead_letters[0].original, Message::new("[1]"));
}

#[test]
fn dead_letter_keeps_the_step_input() {
    // ParsePayload's dead letter has the decompressed payload and the parsed uri attributes
    let raw = gzip(b"{\"bad\":true}");
    let uri = generic_uri("test", "test", 1, ID);
    let out = decode(
        registry(),
        vec![Message::new(raw).with_attribute("uri", uri.clone())],
    );
    let d = &out.dead_letters[0];
    assert_eq!(d.error_type, "ParsePayload");
    assert_eq!(d.original.payload, "{\"bad\":true}");
    assert_eq!(d.original.attribute("client_compression"), Some("gzip"));
    assert_eq!(d.original.attribute("document_id"), Some(ID));
    assert_eq!(d.original.attribute("uri"), Some(uri.as_str()));
    assert!(d.error_message.contains("/bad"), "{}", d.error_message);
}

#[test]
fn decoded_layout_matches_gcp_ingestion() {
    let mut rng = support::Rng::new(7);
    let doc = telemetry_main(&mut rng, 300);
    let id = rng.uuid();
    let m = submission(
        gzip(doc.to_string().as_bytes()),
        telemetry_uri(&id, "main"),
        &mut rng,
    );
    let out = decode(registry(), vec![m]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let m = &out.output[0];
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["metadata"]["uri"]["app_name"], "Firefox");
    assert_eq!(v["metadata"]["geo"]["country"], "FR");
    assert_eq!(v["metadata"]["user_agent"]["os"], "Linux");
    assert_eq!(v["metadata"]["header"]["x_debug_id"], "golden");
    assert_eq!(v["metadata"]["document_namespace"], "telemetry");
    assert_eq!(v["metadata"]["document_version"], "4");
    assert_eq!(v["document_id"], id);
    assert_eq!(
        v["sample_id"],
        json!(sluice_transforms::decode::sample_id(
            doc["clientId"].as_str().unwrap()
        ))
    );
    // the document itself is unchanged, byte for byte, after the spliced metadata
    let doc_bytes = doc.to_string();
    assert!(std::str::from_utf8(&m.payload)
        .unwrap()
        .ends_with(&doc_bytes[1..]));
    assert_eq!(m.attribute("client_compression"), Some("gzip"));
    assert_eq!(m.attribute("document_version"), Some("4"));
}

#[test]
fn decoding_is_idempotent() {
    let mut rng = support::Rng::new(3);
    let mut input = Vec::new();
    for i in 0..12 {
        let (doc, uri) = match i % 4 {
            0 => (
                telemetry_main(&mut rng, 400),
                telemetry_uri(&rng.uuid(), "main"),
            ),
            1 => (
                telemetry_event(&mut rng),
                telemetry_uri(&rng.uuid(), "event"),
            ),
            2 => (
                fenix_baseline(&mut rng),
                generic_uri("org-mozilla-fenix", "baseline", 1, &rng.uuid()),
            ),
            _ => (
                test_doc(&mut rng),
                generic_uri("test", "test", 1, &rng.uuid()),
            ),
        };
        let bytes = doc.to_string().into_bytes();
        let payload = if i % 3 == 0 { gzip(&bytes) } else { bytes };
        input.push(submission(payload, uri, &mut rng));
    }
    let once = decode(registry(), input);
    assert!(once.dead_letters.is_empty(), "{:?}", once.dead_letters);
    assert_eq!(once.output.len(), 12);
    let twice = decode(registry(), once.output.clone());
    assert!(twice.dead_letters.is_empty());
    assert_eq!(twice.output, once.output);
    // attributes lost (as after a BigQuery insert error): the payload alone routes the replay
    let bare: Vec<Message> = once
        .output
        .iter()
        .map(|m| Message::new(m.payload.clone()))
        .collect();
    let replayed = decode(registry(), bare);
    assert!(
        replayed.dead_letters.is_empty(),
        "{:?}",
        replayed.dead_letters
    );
    let payloads = |o: &Output<Message>| {
        let mut p: Vec<_> = o.output.iter().map(|m| m.payload.clone()).collect();
        p.sort();
        p
    };
    assert_eq!(payloads(&replayed), payloads(&once));
}

#[test]
fn missing_schema_dead_letters_decode_once_the_schema_exists() {
    let mut rng = support::Rng::new(11);
    let uri = generic_uri("newspace", "thing", 2, &rng.uuid());
    let raw = gzip(br#"{"answer": 42}"#);
    let m = submission(raw, uri, &mut rng);
    let first = decode(registry(), vec![m.clone()]);
    assert_eq!(first.dead_letters.len(), 1);
    assert_eq!(
        first.dead_letters[0].error_message,
        "no such doctype `newspace/thing`"
    );
    // the dead letter as written to a sink (with error attributes), fed back in
    let replay: Vec<Message> = first
        .dead_letters
        .iter()
        .map(DeadLetter::to_message)
        .collect();
    assert!(replay[0].attribute("error_type").is_some());
    let mut fixed =
        SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json")).unwrap();
    fixed
        .add(
            "newspace",
            "thing",
            2,
            json!({"type": "object", "properties": {"answer": {"type": "integer"}}}),
        )
        .unwrap();
    let fixed = Arc::new(fixed);
    let second = decode(fixed.clone(), replay);
    assert!(second.dead_letters.is_empty(), "{:?}", second.dead_letters);
    let direct = decode(fixed, vec![m]);
    assert_eq!(second.output, direct.output);
    assert_eq!(second.output[0].attribute("error_type"), None);
}

#[test]
fn replayed_metadata_is_lifted_with_whitespace_kept() {
    let payload = "{ \"field\" : \"x\" ,\n \"count\": 3 }\n";
    let m = Message::new(payload).with_attribute("uri", generic_uri("test", "test", 1, ID));
    let once = decode(registry(), vec![m]);
    let out = &once.output[0];
    assert!(std::str::from_utf8(&out.payload)
        .unwrap()
        .ends_with(" \"field\" : \"x\" ,\n \"count\": 3 }\n"));
    let lifted = ParsePayload::new(registry()).apply_to(out).unwrap();
    assert_eq!(lifted.payload, payload);
    assert_eq!(lifted.attributes, out.attributes);
}

#[test]
fn payload_metadata_never_overwrites_attributes() {
    let mut rng = support::Rng::new(5);
    let payload = format!(
        r#"{{"metadata":{{"document_namespace":"telemetry","document_type":"main","document_version":"4",
            "geo":{{"country":"XX"}}}},
           "submission_timestamp":"1999-12-31T00:00:00Z","document_id":"{CLIENT}","field":"x"}}"#
    );
    let m = submission(payload, generic_uri("test", "test", 1, ID), &mut rng);
    let out = decode(registry(), vec![m.clone()]);
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    let got = &out.output[0];
    for name in [
        "document_namespace",
        "document_type",
        "document_version",
        "document_id",
        "submission_timestamp",
        "geo_country",
    ] {
        let edge = ParseUri::apply_to(&m).unwrap();
        assert_eq!(got.attribute(name), edge.attribute(name), "{name}");
    }
    let v: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(v["metadata"]["document_namespace"], "test");
    assert_eq!(v["document_id"], ID);
    assert_eq!(v["field"], "x");
}

#[test]
fn a_document_id_from_the_payload_must_be_a_uuid() {
    // a payload alone (no uri): its metadata fills the attributes, the id is still checked
    let payload = r#"{"metadata":{"document_namespace":"test","document_type":"test","document_version":"1"},"document_id":"../../etc","field":"x"}"#;
    let e = parse(Message::new(payload)).unwrap_err();
    assert_eq!(e.to_string(), "document id `../../etc` is not a uuid");
    let ok = parse(Message::new(payload.replace("../../etc", ID))).unwrap();
    assert_eq!(ok.attribute("document_id"), Some(ID));
}

#[test]
fn outputs_carry_the_canonical_names_the_schema_was_found_by() {
    for (namespace, doctype, version) in [
        (".test.", "test", "1"),
        ("test-", "Test", "1"),
        ("Org-Mozilla-Fenix", "baseline", "1"),
        ("org_mozilla_fenix", "baseline", "1"),
    ] {
        let payload = if namespace.to_lowercase().contains("fenix") {
            fenix_baseline(&mut support::Rng::new(1)).to_string()
        } else {
            r#"{"field":"x"}"#.to_string()
        };
        let uri = format!("/submit/{namespace}/{doctype}/{version}/{ID}");
        let out = decode(
            registry(),
            vec![Message::new(payload).with_attribute("uri", uri)],
        );
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        let m = &out.output[0];
        let want = if namespace.to_lowercase().contains("fenix") {
            ("org-mozilla-fenix", "baseline")
        } else {
            ("test", "test")
        };
        assert_eq!(m.attribute("document_namespace"), Some(want.0));
        assert_eq!(m.attribute("document_type"), Some(want.1));
        assert_eq!(m.attribute("document_version"), Some("1"));
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["metadata"]["document_namespace"], want.0);
        assert_eq!(v["metadata"]["document_version"], "1");
    }
}

#[test]
fn the_decoder_scrubs_client_ips_unless_told_otherwise() {
    let m = Message::new(r#"{"field":"x"}"#)
        .with_attribute("uri", generic_uri("test", "test", 1, ID))
        .with_attribute("remote_addr", "192.0.2.1")
        .with_attribute("x_forwarded_for", "192.0.2.1")
        .with_attribute("x_debug_id", "dbg");
    let out = decode(registry(), vec![m.clone()]);
    let got = &out.output[0];
    assert_eq!(got.attribute("remote_addr"), None);
    assert_eq!(got.attribute("x_forwarded_for"), None);
    assert_eq!(got.attribute("x_debug_id"), Some("dbg"));

    let registry = registry();
    let out = harness::run(vec![m], move |input, dead| {
        let scrub =
            sluice_transforms::scrub::ScrubAttributes::none().with_attributes(["x_debug_id"]);
        input
            .apply("decoder", Decoder::new(registry.clone()).with_scrub(scrub))
            .failures_to(dead)
    });
    let got = &out.output[0];
    assert_eq!(got.attribute("remote_addr"), Some("192.0.2.1"));
    assert_eq!(got.attribute("x_debug_id"), None);
    let v: Value = serde_json::from_slice(&got.payload).unwrap();
    assert!(v["metadata"]["header"]["x_debug_id"].is_null(), "{v}");
}

// ---- every input exactly once, random input never panics ----

fn arbitrary_message() -> impl Strategy<Value = Message> {
    let uri = prop_oneof![
        Just(None),
        Just(Some(generic_uri("test", "test", 1, ID))),
        Just(Some(telemetry_uri(ID, "main"))),
        Just(Some(format!("/submit/test/test/1/{ID}/extra"))),
        "[ -~]{0,40}".prop_map(Some),
    ];
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"field\":\"ok\"}".to_vec()),
        Just(b"{\"bad\":1}".to_vec()),
        "\\{\"[a-z]{1,3}\":[0-9]{1,3}\\}".prop_map(String::into_bytes),
    ];
    (uri, payload, any::<bool>()).prop_map(|(uri, payload, gz)| {
        let payload = if gz { gzip(&payload) } else { payload };
        let m = Message::new(payload);
        match uri {
            Some(u) => m.with_attribute("uri", u),
            None => m,
        }
    })
}

fn exactly_once(input: &[Message], out: &Output<Message>) -> Result<(), TestCaseError> {
    prop_assert_eq!(out.output.len() + out.dead_letters.len(), input.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_step_keeps_every_input_exactly_once(input in proptest::collection::vec(arbitrary_message(), 0..24)) {
        let out = harness::run(input.clone(), |i, d| i.apply("s", ParseUri::new()).failures_to(d));
        exactly_once(&input, &out)?;
        let out = harness::run(input.clone(), |i, d| i.apply("s", DecompressPayload::new().with_max_decompressed_bytes(50)).failures_to(d));
        exactly_once(&input, &out)?;
        let out = harness::run(input.clone(), |i, d| i.apply("s", LimitPayloadSize::new(20)).failures_to(d));
        exactly_once(&input, &out)?;
        let with_routing: Vec<Message> = input.iter().map(|m| m.clone()
            .with_attribute("document_namespace", "test").with_attribute("document_type", "test")
            .with_attribute("document_version", "1")).collect();
        let registry = registry();
        let out = harness::run(with_routing.clone(), move |i, d| i.apply("s", ParsePayload::new(registry.clone())).failures_to(d));
        exactly_once(&with_routing, &out)?;
        let out = harness::run(input.clone(), |i, d| i.apply("s", AddMetadata::new()).failures_to(d));
        exactly_once(&input, &out)?;
        let out = decode(support::registry(), input.clone());
        exactly_once(&input, &out)?;
        // dead letters keep an untouched original of the step that failed
        for d in &out.dead_letters {
            prop_assert!(!d.error_message.is_empty());
        }
    }

    #[test]
    fn random_bytes_never_panic(payload: Vec<u8>, uri: Option<String>) {
        let mut m = Message::new(payload).with_attribute("document_namespace", "test")
            .with_attribute("document_type", "test").with_attribute("document_version", "1");
        if let Some(u) = uri { m = m.with_attribute("uri", u); }
        let _ = ParseUri::apply_to(&m);
        let _ = DecompressPayload::new().apply_to(&m);
        let _ = ParsePayload::new(registry()).apply_to(&m);
        let _ = AddMetadata::apply_to(&m);
    }
}

// ---- owned steps: a failure hands the message back as it came ----

fn message_for_every_step() -> impl Strategy<Value = Message> {
    let routing = prop_oneof![
        Just(vec![]),
        Just(vec![
            ("document_namespace", "test"),
            ("document_type", "test"),
            ("document_version", "1")
        ]),
        // telemetry takes its version from the payload
        Just(vec![
            ("document_namespace", "telemetry"),
            ("document_type", "main")
        ]),
    ];
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| (b, false)),
        // replays whose metadata is lifted before validation fails
        Just((
            br#"{"metadata":{"geo":{"country":"FR"},"document_type":"other"},"document_id":"x","bad":1}"#
                .to_vec(),
            false
        )),
        Just((br#"{"version":4,"v":1,"clientId":"x"}"#.to_vec(), false)),
        Just((br#"{"field":"ok"}"#.to_vec(), true)),
        Just(([b' '; 300].to_vec(), true)),
    ];
    (arbitrary_message(), routing, payload).prop_map(|(m, routing, (payload, replace))| {
        let mut m = if replace {
            m
        } else {
            Message::new(payload).with_attributes(m.attributes)
        };
        for (k, v) in routing {
            m = m.with_attribute(k, v);
        }
        m.with_attribute("x_debug_id", "kept")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_failing_owned_step_hands_back_the_message_unchanged(m in message_for_every_step()) {
        let parse_payload = ParsePayload::new(registry());
        let limit = LimitPayloadSize::new(200);
        let decompress = DecompressPayload::new().limited_by(&limit);
        let results = [
            ("ParseUri", ParseUri::apply_owned(m.clone()).err()),
            ("DecompressPayload", decompress.apply_owned(m.clone()).err()),
            ("LimitPayloadSize", limit.apply_owned(m.clone()).err()),
            ("ParsePayload", parse_payload.apply_owned(m.clone()).err()),
            ("AddMetadata", AddMetadata::apply_owned(m.clone()).err()),
        ];
        for (name, failed) in results {
            if let Some((back, e)) = failed {
                prop_assert_eq!(&back, &m, "{} changed the message it rejected: {}", name, e);
            }
        }
    }
}
