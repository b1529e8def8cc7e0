//! Property tests: generated valid documents validate, the frame decoder survives any input,
//! and the Heka conversions round-trip.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sluice::Message;
use sluice_schemas::heka::{
    decode_frames, encode_frame, format_timestamp, heka_to_message, message_to_heka, Field,
    FrameDecoder, HekaMessage, ValueType, RECORD_SEPARATOR,
};
use sluice_schemas::{snake_case, SchemaRegistry};

fn registry() -> &'static SchemaRegistry {
    static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();
    REGISTRY
        .get_or_init(|| SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/json")).unwrap())
}

fn uuid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

/// Any JSON value except objects with a `bad` key (there is none: keys are lowercase words
/// of 1 to 8 letters excluding `bad`).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                "[a-z]{1,8}".prop_filter("not bad", |k| k != "bad"),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Documents valid against `test/test.1`.
fn test_document() -> impl Strategy<Value = Value> {
    (
        prop::option::of(".{0,20}"),
        prop::option::of(0u32..1_000_000),
        prop::option::of(prop::collection::vec(".{0,5}", 0..4)),
        prop::collection::btree_map(
            "[a-z]{1,8}".prop_filter("not bad", |k| {
                !matches!(k.as_str(), "bad" | "field" | "count" | "tags")
            }),
            any_json(),
            0..4,
        ),
    )
        .prop_map(|(field, count, tags, extra)| {
            let mut doc: Map<String, Value> = extra.into_iter().collect();
            if let Some(field) = field {
                doc.insert("field".into(), field.into());
            }
            if let Some(count) = count {
                doc.insert("count".into(), count.into());
            }
            if let Some(tags) = tags {
                doc.insert("tags".into(), tags.into());
            }
            Value::Object(doc)
        })
}

fn histogram() -> impl Strategy<Value = Value> {
    (
        1u32..100,
        0u32..=5,
        any::<i32>(),
        prop::collection::btree_map(-5i64..1000, 0u32..10_000, 0..8),
    )
        .prop_map(|(buckets, kind, sum, values)| {
            let values: Map<String, Value> = values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            json!({
                "bucket_count": buckets, "histogram_type": kind, "sum": sum,
                "range": [1, 10000], "values": values
            })
        })
}

/// Documents valid against `telemetry/main.4`.
fn main_document() -> impl Strategy<Value = Value> {
    (
        (uuid(), uuid(), 0i64..4_000_000_000_000_000_000),
        ("[0-9]{14}", "(release|beta|nightly)", "[0-9]{2,3}\\.[0-9]"),
        prop::collection::btree_map("[A-Z_]{3,20}", histogram(), 0..5),
        prop::collection::btree_map("[a-z]{3,10}", 0u32..100_000, 0..4),
        (
            prop::option::of(0u32..65536),
            "[a-z]{2}-[A-Z]{2}",
            any::<bool>(),
        ),
        "(shutdown|daily|environment-change|aborted-session)",
    )
        .prop_map(|(ids, app, histograms, measurements, env, reason)| {
            let (client_id, doc_id, nanos) = ids;
            let (build_id, channel, version) = app;
            let (memory, locale, telemetry_enabled) = env;
            json!({
                "type": "main",
                "id": doc_id,
                "creationDate": format_timestamp(nanos),
                "version": 4,
                "clientId": client_id,
                "application": {
                    "architecture": "x86-64", "buildId": build_id, "name": "Firefox",
                    "version": version, "platformVersion": version, "channel": channel
                },
                "environment": {
                    "system": {"memoryMB": memory, "cpu": {"count": 4, "cores": 2},
                               "os": {"name": "Linux", "version": "6.1", "locale": locale}},
                    "settings": {"locale": locale, "telemetryEnabled": telemetry_enabled},
                    "addons": {"activeAddons": {"a@b": {"version": "1.0", "isSystem": false}}}
                },
                "payload": {
                    "info": {"reason": reason, "subsessionCounter": 1},
                    "simpleMeasurements": measurements,
                    "histograms": histograms,
                    "keyedHistograms": {}
                }
            })
        })
}

fn heka_field() -> impl Strategy<Value = Field> {
    (
        ".{0,10}",
        prop::option::of(0i32..5),
        prop::option::of(".{0,5}"),
        prop::collection::vec(".{0,8}", 0..3),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..3),
        prop::collection::vec(any::<i64>(), 0..3),
        prop::collection::vec(
            any::<f64>().prop_filter("comparable", |f| !f.is_nan()),
            0..3,
        ),
        prop::collection::vec(any::<bool>(), 0..3),
    )
        .prop_map(|(name, value_type, representation, s, b, i, d, bo)| Field {
            name,
            value_type,
            representation,
            value_string: s,
            value_bytes: b,
            value_integer: i,
            value_double: d,
            value_bool: bo,
        })
}

fn heka_message() -> impl Strategy<Value = HekaMessage> {
    (
        prop::collection::vec(any::<u8>(), 16),
        any::<i64>(),
        (
            prop::option::of(".{0,8}"),
            prop::option::of(".{0,8}"),
            prop::option::of(any::<i32>()),
        ),
        (
            prop::option::of(".{0,20}"),
            prop::option::of(".{0,4}"),
            prop::option::of(any::<i32>()),
        ),
        prop::option::of("[a-z0-9.-]{0,12}"),
        prop::collection::vec(heka_field(), 0..4),
    )
        .prop_map(
            |(
                uuid,
                timestamp,
                (r#type, logger, severity),
                (payload, env_version, pid),
                hostname,
                fields,
            )| {
                HekaMessage {
                    uuid,
                    timestamp,
                    r#type,
                    logger,
                    severity,
                    payload,
                    env_version,
                    pid,
                    hostname,
                    fields,
                }
            },
        )
}

/// Messages whose attributes survive the trip through Heka: normalised names, not `content`.
fn edge_message() -> impl Strategy<Value = Message> {
    (
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::btree_map(
            "[a-z][a-z0-9_]{0,15}".prop_filter("reserved", |k| k != "content"),
            ".{0,20}",
            0..6,
        ),
        prop::option::of(1i64..i64::MAX),
        prop::option::of(
            uuid().prop_filter("not nil", |u| u.chars().any(|c| c != '0' && c != '-')),
        ),
    )
        .prop_map(|(payload, mut attributes, nanos, heka_uuid)| {
            if let Some(nanos) = nanos {
                // what the edge writes has microsecond precision
                let micros = nanos - nanos % 1000;
                if micros != 0 {
                    attributes.insert("submission_timestamp".into(), format_timestamp(micros));
                }
            }
            if let Some(u) = heka_uuid {
                attributes.insert("heka_uuid".into(), u);
            }
            Message::new(payload).with_attributes(attributes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_test_documents_validate(doc in test_document()) {
        let schema = registry().get("test", "test", 1).unwrap();
        prop_assert!(schema.validate(&doc).is_ok(), "{}: {:?}", doc, schema.validate(&doc));
    }

    #[test]
    fn generated_main_pings_validate(doc in main_document()) {
        let schema = registry().get("telemetry", "main", 4).unwrap();
        prop_assert!(schema.validate(&doc).is_ok(), "{}: {:?}", doc, schema.validate(&doc));
    }

    #[test]
    fn a_bad_property_always_fails_at_its_pointer(doc in test_document(), bad in any_json()) {
        let mut doc = doc;
        doc["bad"] = bad;
        let failure = registry().get("test", "test", 1).unwrap().validate(&doc).unwrap_err();
        prop_assert_eq!(failure.instance_path(), "/bad");
    }

    #[test]
    fn snake_case_is_idempotent(name in "[A-Za-z0-9_. -]{0,20}") {
        let once = snake_case(&name);
        prop_assert_eq!(snake_case(&once), once.clone());
    }

    #[test]
    fn random_bytes_never_panic_and_every_byte_is_accounted_for(
        input in prop::collection::vec(
            prop_oneof![3 => any::<u8>(), 1 => Just(RECORD_SEPARATOR), 1 => Just(0x1F_u8)],
            0..512,
        )
    ) {
        let mut decoder = FrameDecoder::new(&input).with_max_message_len(256);
        let mut consumed = 0;
        let mut before = 0;
        while let Some(item) = decoder.next() {
            let step = decoder.position() - before;
            prop_assert!(step > 0, "no progress");
            if let Err(e) = item {
                prop_assert_eq!(e.offset(), before);
                prop_assert_eq!(e.raw(), &input[before..decoder.position()]);
            }
            consumed += step;
            before = decoder.position();
        }
        prop_assert_eq!(consumed, input.len());
    }

    #[test]
    fn good_frames_survive_garbage_between_them(
        messages in prop::collection::vec(heka_message(), 1..5),
        garbage in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no separator", |&b| b != RECORD_SEPARATOR), 0..20),
            5,
        ),
    ) {
        let mut stream = Vec::new();
        for (message, junk) in messages.iter().zip(&garbage) {
            stream.extend_from_slice(junk);
            stream.extend(encode_frame(message));
        }
        stream.extend_from_slice(&garbage[4]);
        let decoded: Vec<HekaMessage> = decode_frames(&stream).filter_map(Result::ok).collect();
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn heka_frames_round_trip(messages in prop::collection::vec(heka_message(), 0..4)) {
        let stream: Vec<u8> = messages.iter().flat_map(encode_frame).collect();
        let decoded: Vec<HekaMessage> =
            decode_frames(&stream).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn messages_round_trip_through_heka(message in edge_message()) {
        let heka = message_to_heka(&message).unwrap();
        let frame = encode_frame(&heka);
        let decoded = sluice_schemas::heka::decode_frame(&frame).unwrap();
        let back = heka_to_message(&decoded).unwrap();
        prop_assert_eq!(&back.payload, &message.payload);
        prop_assert_eq!(&back.attributes, &message.attributes);
    }

    #[test]
    fn conversion_of_arbitrary_heka_messages_never_panics(message in heka_message()) {
        let _ = heka_to_message(&message);
    }
}

#[test]
fn typed_fields_become_text() {
    let heka = HekaMessage {
        uuid: vec![0; 16],
        fields: vec![
            Field::string("content", "{}"),
            Field {
                name: "Flags".into(),
                value_type: Some(ValueType::Bool as i32),
                value_bool: vec![true, false],
                ..Field::default()
            },
            Field {
                name: "Ratio".into(),
                value_type: Some(ValueType::Double as i32),
                value_double: vec![0.5],
                ..Field::default()
            },
        ],
        ..HekaMessage::default()
    };
    let message = heka_to_message(&heka).unwrap();
    let expected: BTreeMap<String, String> = [("flags", "true, false"), ("ratio", "0.5")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(message.attributes, expected);
    assert_eq!(&message.payload[..], b"{}");
}
