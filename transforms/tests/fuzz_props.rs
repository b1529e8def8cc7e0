//! The stable, property-based pass over the fuzz targets' entry points: the same contracts as
//! the cargo-fuzz targets (`fuzz/src/contracts.rs`, included here), fed by proptest with
//! structured inputs that reach past the first parse, plus every checked-in seed and crash
//! regression in `fuzz/seeds/`. Runs in the normal `cargo test` in a few seconds; the
//! coverage-guided runs are `scripts/fuzz.sh`.

#[path = "../../fuzz/src/contracts.rs"]
#[allow(dead_code)]
mod contracts;

use std::io::Write;

use proptest::prelude::*;
use sluice::Message;
use sluice_schemas::heka::{encode_frame, message_to_heka};
use sluice_testing::strategies::{arb_attributes, arb_bytes};

#[global_allocator]
static ALLOC: contracts::CountingAlloc = contracts::CountingAlloc;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        // a failure is reproduced from its printed input; no persistence files in the tree
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every file of `fuzz/seeds/<target>/` (seeds and crash regressions) through `contract`.
fn replay_seeds(target: &str, contract: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let data = std::fs::read(&path).expect("a readable seed");
        contract(&data);
        files += 1;
    }
    assert!(files >= 3, "{}: only {files} seeds", dir.display());
}

#[test]
fn checked_in_seeds_and_regressions_hold_their_contracts() {
    replay_seeds("envelope", contracts::envelope);
    replay_seeds("heka", contracts::heka);
    replay_seeds("parse_uri", contracts::parse_uri);
    replay_seeds("decompress", contracts::decompress);
    replay_seeds("parse_payload", contracts::parse_payload);
    replay_seeds("path_template", contracts::path_template);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// An envelope line of an arbitrary message.
fn arb_envelope() -> impl Strategy<Value = Vec<u8>> {
    (arb_bytes(64), arb_attributes()).prop_map(|(p, a)| {
        Message::new(p)
            .with_attributes(a)
            .to_json_line()
            .into_bytes()
    })
}

/// One line of an ndjson input: an envelope, something close to one, or noise.
fn arb_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => arb_envelope(),
        1 => arb_envelope().prop_map(|mut l| { l.truncate(l.len() / 2); l }),
        1 => Just(b"{\"payload\":\"not base64!\"}".to_vec()),
        1 => Just(b"{\"attributeMap\":{\"a\":1}}".to_vec()),
        1 => Just(b" \t\r".to_vec()),
        1 => arb_bytes(40).prop_filter("one line", |b| !b.contains(&b'\n')),
    ]
}

/// A Heka stream: frames of arbitrary messages, some cut short, with noise between.
fn arb_heka_stream() -> impl Strategy<Value = Vec<u8>> {
    let message = (arb_bytes(48), arb_attributes()).prop_map(|(p, mut a)| {
        a.remove("content");
        Message::new(p).with_attributes(a)
    });
    let piece = (message, 0usize..4, arb_bytes(6)).prop_map(|(m, how, noise)| {
        let frame = encode_frame(&message_to_heka(&m).expect("no `content` attribute"));
        match how {
            0 => [frame, noise].concat(),
            1 => frame[..frame.len() * 2 / 3].to_vec(),
            _ => frame,
        }
    });
    proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

const UUID: &str = "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";

/// A uri made of plausible path elements, so that most reach the element checks.
fn arb_uri() -> impl Strategy<Value = Vec<u8>> {
    let element = prop_oneof![
        Just("telemetry".to_string()),
        Just(UUID.to_string()),
        Just(String::new()),
        "[a-z0-9.-]{1,8}",
        any::<String>(),
    ];
    (
        proptest::collection::vec(element, 0..9),
        any::<bool>(),
        "[a-z/?=&]{0,8}",
    )
        .prop_map(|(elements, query, tail)| {
            let mut uri = format!("/submit/{}", elements.join("/"));
            if query {
                uri.push('?');
                uri.push_str(&tail);
            }
            uri.into_bytes()
        })
}

/// A gzip payload (whole, cut, or two members) and a cap around its size.
fn arb_gzip_case() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((any::<u8>(), 1usize..400), 0..8),
        0usize..3,
        any::<u16>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(runs, how, cap, cut)| {
            let data: Vec<u8> = runs
                .iter()
                .flat_map(|&(b, n)| std::iter::repeat_n(b, n))
                .collect();
            let gz = gzip(&data);
            let payload = match how {
                0 => gz,
                1 => gz[..cut.index(gz.len())].to_vec(),
                _ => [gz.clone(), gzip(&data[..data.len() / 2])].concat(),
            };
            // a cap often close to the decompressed size, where off-by-one errors live
            let cap = match cap % 3 {
                0 => data.len() as u16,
                1 => data.len().saturating_sub(1) as u16,
                _ => cap,
            };
            [cap.to_le_bytes().to_vec(), payload].concat()
        })
}

/// JSON documents, some nested deeper than the limits, some with a `metadata` member.
fn arb_document() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(12, 64, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("clientId".to_string()),
                    Just("version".to_string()),
                    "[a-z]{1,5}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_payload_case() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), 0u8..80, arb_document(), 0usize..70).prop_map(|(route, depth, doc, wrap)| {
        // wrap in objects to cross the depth limit from both sides
        let mut text = serde_json::to_string(&doc).expect("a value serializes");
        for _ in 0..wrap % 40 {
            text = format!("{{\"a\":{text}}}");
        }
        [vec![route, depth, 0xff], text.into_bytes()].concat()
    })
}

/// A template of literals and placeholders, then hostile attribute values.
fn arb_template_case() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("a"),
        Just("b"),
        Just("submission_date"),
        Just("document_type")
    ];
    let part = prop_oneof![
        Just("/".to_string()),
        Just("..".to_string()),
        "[a-z.#%-]{0,4}",
        (name.clone(), proptest::option::of("[a-z./]{0,3}")).prop_map(|(n, d)| match d {
            Some(d) => format!("${{{n}:-{d}}}"),
            None => format!("${{{n}}}"),
        }),
    ];
    let value = prop_oneof![
        Just(".".to_string()),
        Just("..".to_string()),
        Just("../../etc".to_string()),
        Just("x".repeat(300)),
        any::<String>().prop_map(|s| s.replace('\0', "")),
    ];
    (
        proptest::collection::vec(part, 0..10),
        proptest::collection::vec((name, value), 0..4),
    )
        .prop_map(|(parts, attributes)| {
            let mut text = parts.concat();
            for (k, v) in attributes {
                text.push('\0');
                text.push_str(&format!("{k}={v}"));
            }
            text.into_bytes()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn envelope_reader(header in proptest::option::of(any::<u8>()),
                       lines in proptest::collection::vec(arb_line(), 0..8),
                       crlf in any::<bool>()) {
        let mut input = match header {
            Some(b) => vec![b, 0xff],
            None => Vec::new(),
        };
        for line in lines {
            input.extend_from_slice(&line);
            input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        contracts::envelope(&input);
    }

    #[test]
    fn envelope_reader_on_noise(data in arb_bytes(256)) {
        contracts::envelope(&data);
    }

    #[test]
    fn heka_framing(stream in arb_heka_stream()) {
        contracts::heka(&stream);
    }

    #[test]
    fn heka_framing_on_noise(data in arb_bytes(256)) {
        contracts::heka(&data);
    }

    #[test]
    fn parse_uri(uri in arb_uri(), header in any::<u8>()) {
        contracts::parse_uri(&uri);
        contracts::parse_uri(&[vec![header, 0xff], uri].concat());
    }

    #[test]
    fn decompress_with_cap(case in arb_gzip_case()) {
        contracts::decompress(&case);
    }

    #[test]
    fn decompress_on_noise(data in arb_bytes(64)) {
        contracts::decompress(&[&[64, 0, 0x1f, 0x8b][..], &data].concat());
        contracts::decompress(&data);
    }

    #[test]
    fn parse_payload_with_depth_guard(case in arb_payload_case()) {
        contracts::parse_payload(&case);
    }

    #[test]
    fn path_template_renderer(case in arb_template_case()) {
        contracts::path_template(&case);
    }
}
