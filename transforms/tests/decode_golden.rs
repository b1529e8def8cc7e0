//! Golden test: a fixture of gcp-ingestion envelope lines run through the `Decoder` with every
//! step on (geo and ISP lookups on databases the test writes), compared line by line (sorted)
//! with the committed expected outputs and dead letters; decoding the output again must give
//! the output.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p sluice-transforms --test decode_golden`, then
//! review the diff of `tests/fixtures/decoder/` by eye.

#[path = "decode_support.rs"]
mod support;

#[path = "mmdb_support.rs"]
mod mmdb;

use std::path::PathBuf;

use serde_json::json;
use sluice::{DeadLetter, Failure, Message};
use sluice_transforms::decode::{
    AddMetadata, Decoder, DecompressPayload, GeoLookup, ParsePayload, ParseUri,
};
use support::*;

/// The Decoder's payload limit in this test (decompression stops one byte past it).
const MAX_PAYLOAD: usize = 64 * 1024;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoder")
        .join(name)
}

/// The input, deterministic: valid documents of every example schema (some gzipped), every
/// error kind, replays of decoded output and of dead letters, a document split in parts.
fn generate() -> Vec<Message> {
    let mut rng = Rng::new(2024);
    let mut out = Vec::new();
    // valid documents
    for i in 0..12 {
        let doc = telemetry_main(&mut rng, 400 + 300 * i);
        let bytes = doc.to_string().into_bytes();
        let payload = if i % 3 != 2 { gzip(&bytes) } else { bytes };
        let uri = telemetry_uri(&rng.uuid(), "main");
        out.push(submission(payload, uri, &mut rng));
    }
    for i in 0..8 {
        let bytes = telemetry_event(&mut rng).to_string().into_bytes();
        let payload = if i % 2 == 0 { gzip(&bytes) } else { bytes };
        let uri = telemetry_uri(&rng.uuid(), "event");
        out.push(submission(payload, uri, &mut rng));
    }
    for i in 0..8 {
        let bytes = fenix_baseline(&mut rng).to_string().into_bytes();
        let payload = if i % 2 == 1 { gzip(&bytes) } else { bytes };
        let uri = generic_uri("org-mozilla-fenix", "baseline", 1, &rng.uuid());
        out.push(submission(payload, uri, &mut rng));
    }
    for i in 0..8 {
        let bytes = test_doc(&mut rng).to_string().into_bytes();
        let payload = if i % 4 == 0 { gzip(&bytes) } else { bytes };
        let mut uri = generic_uri("test", "test", 1, &rng.uuid());
        if i == 3 {
            uri.push_str("?v=4&debug=1");
        }
        let mut m = submission(payload, uri, &mut rng);
        if i == 5 {
            m = m.with_attribute("args", "v=4");
        }
        out.push(m);
    }
    // pretty-printed, with whitespace that must survive decoding and replay
    let pretty = serde_json::to_string_pretty(&test_doc(&mut rng)).unwrap();
    let uri = generic_uri("test", "test", 1, &rng.uuid());
    out.push(submission(pretty, uri, &mut rng));

    // ParseUri errors
    let id = rng.uuid();
    for uri in [
        format!("/other/test/test/1/{id}"),
        "/submit/test/test/1".to_string(),
        format!("/submit/test/test/1/{id}/extra"),
        format!("/submit/telemetry/{id}/main/Firefox/124.0/release"),
        format!("/submit/test//1/{id}"),
        "/submit/test/test/1/not-a-uuid".to_string(),
    ] {
        out.push(submission(test_doc(&mut rng).to_string(), uri, &mut rng));
    }
    // DecompressPayload errors: corrupt, truncated; a bomb (a LimitPayloadSize failure, as
    // gunzip stops one byte past the payload limit)
    let mut corrupt = gzip(test_doc(&mut rng).to_string().as_bytes());
    let n = corrupt.len();
    corrupt[n - 6] ^= 0x55;
    out.push(submission(
        corrupt,
        generic_uri("test", "test", 1, &rng.uuid()),
        &mut rng,
    ));
    let truncated = gzip(test_doc(&mut rng).to_string().as_bytes())[..15].to_vec();
    out.push(submission(
        truncated,
        generic_uri("test", "test", 1, &rng.uuid()),
        &mut rng,
    ));
    let bomb = gzip(&vec![b' '; 20 * MAX_PAYLOAD]);
    out.push(submission(
        bomb,
        generic_uri("test", "test", 1, &rng.uuid()),
        &mut rng,
    ));
    // LimitPayloadSize: plain and gzipped, just over the limit
    let big = format!("{{\"field\":\"{}\"}}", "x".repeat(MAX_PAYLOAD));
    out.push(submission(
        big.clone(),
        generic_uri("test", "test", 1, &rng.uuid()),
        &mut rng,
    ));
    out.push(submission(
        gzip(big.as_bytes()),
        generic_uri("test", "test", 1, &rng.uuid()),
        &mut rng,
    ));
    // ParsePayload errors
    let uri = |rng: &mut Rng| generic_uri("test", "test", 1, &rng.uuid());
    let u = uri(&mut rng);
    out.push(submission("{\"field\": tru", u, &mut rng));
    let u = uri(&mut rng);
    out.push(submission(vec![0xff, 0xfe, b'{'], u, &mut rng));
    let u = uri(&mut rng);
    out.push(submission("[1,2,3]", u, &mut rng));
    let u = uri(&mut rng);
    out.push(submission("", u, &mut rng));
    let u = generic_uri("nospace", "nothing", 1, &rng.uuid());
    out.push(submission("{}", u, &mut rng));
    let u = generic_uri("test", "test", 9, &rng.uuid());
    out.push(submission("{}", u, &mut rng));
    let u = generic_uri("test", "test", 0x7fff_ffff, &rng.uuid()).replace("2147483647", "one");
    out.push(submission("{}", u, &mut rng));
    let mut no_version = telemetry_main(&mut rng, 300);
    no_version.as_object_mut().unwrap().remove("version");
    let u = telemetry_uri(&rng.uuid(), "main");
    out.push(submission(
        gzip(no_version.to_string().as_bytes()),
        u,
        &mut rng,
    ));
    let mut bad_client = telemetry_main(&mut rng, 300);
    bad_client["clientId"] = json!("not-a-client-id");
    let u = telemetry_uri(&rng.uuid(), "main");
    out.push(submission(bad_client.to_string(), u, &mut rng));
    let mut bad_hist = telemetry_main(&mut rng, 900);
    bad_hist["payload"]["histograms"]["EXTRA"] = json!({"bucket_count": -1});
    let u = telemetry_uri(&rng.uuid(), "main");
    out.push(submission(
        gzip(bad_hist.to_string().as_bytes()),
        u,
        &mut rng,
    ));
    let mut bad_event = telemetry_event(&mut rng);
    bad_event["payload"]["events"]["parent"][0][0] = json!("late");
    let u = telemetry_uri(&rng.uuid(), "event");
    out.push(submission(bad_event.to_string(), u, &mut rng));
    let mut bad_baseline = fenix_baseline(&mut rng);
    bad_baseline["ping_info"]["start_time"] = json!("yesterday");
    let u = generic_uri("org-mozilla-fenix", "baseline", 1, &rng.uuid());
    out.push(submission(bad_baseline.to_string(), u, &mut rng));
    let u = uri(&mut rng);
    out.push(submission(
        "{\"bad\":true,\"count\":-3,\"field\":7}",
        u,
        &mut rng,
    ));
    let deep = format!("{{\"tags\":{}\"x\"{}}}", "[".repeat(80), "]".repeat(80));
    let u = uri(&mut rng);
    out.push(submission(deep, u, &mut rng));

    // replays of decoded output: with attributes, and with the payload alone
    let registry = registry();
    let steps = |m: &Message| -> Message {
        let m = ParseUri::apply_to(m).unwrap();
        let m = DecompressPayload::new().apply_to(&m).unwrap();
        let m = ParsePayload::new(registry.clone()).apply_to(&m).unwrap();
        AddMetadata::apply_to(&m).unwrap()
    };
    let decoded: Vec<Message> = [0usize, 3, 13, 21, 30, 36]
        .iter()
        .map(|&i| steps(&out[i]))
        .collect();
    for (i, m) in decoded.into_iter().enumerate() {
        if i % 2 == 0 {
            out.push(m);
        } else {
            out.push(Message::new(m.payload));
        }
    }
    // replays of dead letters (error attributes stripped on the way in): one now fixed (the
    // original was valid), one still failing
    let valid = ParseUri::apply_to(&out[33]).unwrap();
    let mut dl = DeadLetter::new(
        valid,
        "ParsePayload",
        Failure::new("schema `test/test.1` not found"),
    );
    dl.job_name = Some("decoder".into());
    dl.input = Some("projects/x/topics/raw".into());
    dl.input_type = Some("pubsub".into());
    dl.source_position.insert("input_line".into(), "17".into());
    out.push(dl.to_message());
    let failing = out
        .iter()
        .find(|m| m.payload.as_ref() == b"[1,2,3]")
        .unwrap()
        .clone();
    let dl = DeadLetter::new(
        failing,
        "ParsePayload",
        Failure::new("payload is a json array, expected an object"),
    );
    out.push(dl.to_message());

    // the enriching steps: user agents, a proxied submission, a stub installer ping, Glean and
    // core-ping os fields (ParseUserAgent, ParseProxy, ParseUri.StubUri, NormalizeAttributes)
    for ua in [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Firefox/124.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Firefox-iOS-Sync/108.1b24234 (iPad; iPhone OS 16.0) (Firefox)",
    ] {
        let bytes = telemetry_event(&mut rng).to_string().into_bytes();
        let uri = telemetry_uri(&rng.uuid(), "event");
        let mut m = submission(bytes, uri, &mut rng)
            .with_attribute("user_agent", ua)
            .with_attribute("x_forwarded_for", "10.0.0.1, 203.0.113.7, 35.1.1.1");
        // not looked up yet: the geo and ISP databases fill these
        m.attributes.retain(|k, _| !k.starts_with("geo_"));
        out.push(m);
    }
    let bytes = fenix_baseline(&mut rng).to_string().into_bytes();
    let uri = generic_uri("org-mozilla-fenix", "baseline", 1, &rng.uuid());
    let mut m = submission(gzip(&bytes), uri, &mut rng)
        .with_attribute("x_pipeline_proxy", "2024-03-01T11:59:00.000000Z")
        .with_attribute(
            "x_forwarded_for",
            "10.0.0.1, 198.51.100.9, 35.1.1.1, 35.2.2.2",
        )
        .with_attribute("x_foxsec_ip_reputation", "reputation=90");
    m.attributes.retain(|k, _| !k.starts_with("geo_"));
    out.push(m);
    let stub = "/stub/v6/release/release/fr/1/1/10/0/19045/sp/0/0/2/0/100/200/3/4/5//6/7/8/9/0/0/1/95.0/2022/96.0/2023/1/1/1/2/1.2.3.4";
    out.push(submission("", stub.to_string(), &mut rng));
    let core = json!({"field": "core", "os": "iOS", "osversion": "17.2.1", "release_channel": "beta-2",
                      "client_id": rng.uuid().to_uppercase()});
    let uri = generic_uri("test", "test", 1, &rng.uuid());
    out.push(submission(core.to_string(), uri, &mut rng));

    // ping splitting (test/split's split_config): the document and its parts; a document
    // whose subset fails its schema, one dead letter
    let split = json!({"client_id": rng.uuid().to_uppercase(),
                       "payload": {"int": 7, "int64": 8, "string": "kept"},
                       "test_int": 9, "test_string": "rest"});
    let uri = generic_uri("test", "split", 1, &rng.uuid());
    out.push(submission(
        gzip(split.to_string().as_bytes()),
        uri,
        &mut rng,
    ));
    let uri = generic_uri("test", "split", 1, &rng.uuid());
    out.push(submission(r#"{"stray_int":1}"#, uri, &mut rng));
    out
}

/// City and ISP databases written by the test (never downloaded ones), and the lookup.
fn geo() -> (tempfile::TempDir, GeoLookup) {
    let dir = tempfile::tempdir().unwrap();
    // 2024-03-01T00:00:00Z
    let mut city = mmdb::Writer::new("GeoIP2-City", 1_709_251_200);
    city.insert(
        "203.0.113.0".parse().unwrap(),
        24,
        mmdb::city("NZ", Some((2_179_537, "Wellington")), &["WGN"]),
    );
    city.insert(
        "198.51.100.0".parse().unwrap(),
        24,
        mmdb::city("CA", Some((6_138_610, "Saint-Lazare")), &["QC"]),
    );
    std::fs::write(dir.path().join("city.mmdb"), city.finish()).unwrap();
    let mut isp = mmdb::Writer::new("GeoIP2-ISP", 1_709_251_200);
    isp.insert(
        "203.0.113.7".parse().unwrap(),
        32,
        mmdb::isp("Example Net", "Example Org"),
    );
    std::fs::write(dir.path().join("isp.mmdb"), isp.finish()).unwrap();
    // Saint-Lazare is below the population threshold
    std::fs::write(dir.path().join("cities15000.txt"), "2179537\tWellington\n").unwrap();
    let geo = GeoLookup::none()
        .with_city_database(dir.path().join("city.mmdb"))
        .unwrap()
        .with_city_filter(dir.path().join("cities15000.txt"))
        .unwrap()
        .with_isp_database(dir.path().join("isp.mmdb"))
        .unwrap();
    (dir, geo)
}

fn lines(messages: impl IntoIterator<Item = Message>) -> Vec<String> {
    let mut l: Vec<String> = messages.into_iter().map(|m| m.to_json_line()).collect();
    l.sort();
    l
}

fn read_lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (run with UPDATE_GOLDEN=1)",
            fixture(name).display()
        )
    });
    text.lines().map(str::to_string).collect()
}

fn write_lines(name: &str, lines: &[String]) {
    std::fs::create_dir_all(fixture("")).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(fixture(name), text).unwrap();
}

#[test]
fn decoder_matches_golden_files() {
    let generated: Vec<String> = generate().iter().map(Message::to_json_line).collect();
    assert!(generated.len() >= 60, "{}", generated.len());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if update {
        write_lines("input.ndjson", &generated);
    }
    let input_lines = read_lines("input.ndjson");
    assert_eq!(
        input_lines, generated,
        "the generator changed: regenerate with UPDATE_GOLDEN=1"
    );
    let input: Vec<Message> = input_lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Message::from_json_line(l.as_bytes())
                .unwrap_or_else(|e| panic!("input line {}: {e}", i + 1))
        })
        .collect();
    let registry = registry();
    let (_dir, geo) = geo();
    let geo_again = geo.clone();
    let out = sluice::harness::run(input.clone(), move |input, dead| {
        input
            .apply(
                "decoder",
                Decoder::new(registry.clone())
                    .with_max_payload_bytes(MAX_PAYLOAD)
                    .with_geo(geo.clone()),
            )
            .failures_to(dead)
    });
    // every input is one output or one dead letter, but the split document: three outputs
    let split_parts = out
        .output
        .iter()
        .filter(|m| m.attribute("split_from").is_some())
        .count();
    assert_eq!(split_parts, 3);
    assert_eq!(
        out.output.len() + out.dead_letters.len(),
        input.len() + split_parts - 1
    );
    let output = lines(out.output);
    let dead = lines(out.dead_letters.iter().map(DeadLetter::to_message));
    if update {
        write_lines("expected-output.ndjson", &output);
        write_lines("expected-dead-letters.ndjson", &dead);
    }
    for (name, got) in [
        ("expected-output.ndjson", &output),
        ("expected-dead-letters.ndjson", &dead),
    ] {
        let want = read_lines(name);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let cut = |s: &str| s.chars().take(400).collect::<String>();
            assert!(
                g == w,
                "{name}: sorted line {} differs:\n got  {}\n want {}",
                i + 1,
                cut(g),
                cut(w)
            );
        }
        assert_eq!(got.len(), want.len(), "{name}: line count");
    }
    // idempotence: the output decoded again is the output
    let registry = support::registry();
    let decoded: Vec<Message> = output
        .iter()
        .map(|l| Message::from_json_line(l.as_bytes()).unwrap())
        .collect();
    let again = sluice::harness::run(decoded, move |input, dead| {
        input
            .apply(
                "decoder",
                Decoder::new(registry.clone())
                    .with_max_payload_bytes(MAX_PAYLOAD)
                    .with_geo(geo_again.clone()),
            )
            .failures_to(dead)
    });
    assert!(again.dead_letters.is_empty(), "{:?}", again.dead_letters);
    assert_eq!(
        lines(again.output),
        output,
        "decoding the output again changed it"
    );
    // every error kind the Decoder can produce is covered
    let types: std::collections::BTreeSet<&str> = out
        .dead_letters
        .iter()
        .map(|d| d.error_type.as_str())
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        [
            "DecompressPayload",
            "LimitPayloadSize",
            "ParsePayload",
            "ParseUri"
        ]
    );
}
