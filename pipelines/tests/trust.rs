//! What a submission cannot do to the decoder job, through the built binary: its payload's
//! `metadata` never moves it to another partition or changes its id, spellings of a namespace
//! land in the repository's folder, and client IPs are never written unless the config keeps
//! them.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

mod support;
use support::read_object_lines;

const ID: &str = "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";
const OTHER_ID: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";
const EDGE_TIME: &str = "2026-11-20T10:00:00.000000Z";

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One input line in the json envelope.
fn envelope(attributes: &[(&str, &str)], payload: &str) -> String {
    let map: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "attributeMap": map,
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
    })
    .to_string()
}

/// Runs the decoder job on `lines` with `extra` config lines; gives (path, parsed envelope) of
/// every decoded record and of every dead letter.
fn run(dir: &Path, lines: &[String], extra: &[&str]) -> (Vec<(String, Value)>, Vec<Value>) {
    let input = dir.join("input.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join("out");
    let config = dir.join("job.toml");
    std::fs::write(
        &config,
        format!(
            r#"job = "decoder"
[source]
type = "file"
path = "{input}"
[decoder]
schemas = "{schemas}"
[sink]
type = "file"
dir = "{out}"
path = "${{document_namespace:-unknown}}/${{document_type:-unknown}}/v${{document_version:-0}}/${{submission_date:-unknown}}/"
compression = "none"
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/${{error_type:-unknown}}/"
compression = "none"
[pipeline]
stack_traces = false
"#,
            input = input.display(),
            schemas = manifest().join("../schemas/json").display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let mut args: Vec<String> = vec!["run".into(), config.display().to_string()];
    for e in extra {
        args.push("--set".into());
        args.push(e.to_string());
    }
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut decoded = Vec::new();
    let mut dead = Vec::new();
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&out).unwrap().to_string_lossy().to_string();
            let prefix = rel.rsplit_once('/').map_or("", |(a, _)| a).to_string();
            for line in read_object_lines(&p).unwrap() {
                let v: Value = serde_json::from_str(&line).unwrap();
                if rel.starts_with("errors/") {
                    dead.push(v);
                } else {
                    decoded.push((prefix.clone(), v));
                }
            }
        }
    }
    (decoded, dead)
}

fn payload_of(envelope: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn edge(uri: &str) -> Vec<(&str, &str)> {
    vec![
        ("uri", uri),
        ("submission_timestamp", EDGE_TIME),
        ("remote_addr", "192.0.2.1"),
        ("x_forwarded_for", "198.51.100.7, 192.0.2.1"),
        ("x_debug_id", "debug-me"),
    ]
}

#[test]
fn payload_metadata_cannot_move_a_submission_or_change_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("/submit/test/test/1/{ID}");
    let attack = json!({
        "metadata": {
            "document_namespace": "telemetry",
            "document_type": "main",
            "document_version": "4",
            "header": {"document_id": OTHER_ID}
        },
        "submission_timestamp": "1999-01-01T00:00:00Z",
        "document_id": OTHER_ID,
        "field": "x"
    });
    // a payload alone (as replayed output would be) whose id is not a uuid
    let bad_id = json!({
        "metadata": {"document_namespace": "test", "document_type": "test", "document_version": "1"},
        "submission_timestamp": EDGE_TIME,
        "document_id": "../../../x",
        "field": "y"
    });
    let lines = [
        envelope(&edge(&uri), &attack.to_string()),
        envelope(&[], &bad_id.to_string()),
    ];
    let (decoded, dead) = run(dir.path(), &lines, &[]);
    assert_eq!(decoded.len(), 1, "{decoded:?}");
    let (path, record) = &decoded[0];
    assert_eq!(path, "test/test/v1/2026-11-20");
    let attributes = &record["attributeMap"];
    assert_eq!(attributes["document_namespace"], "test");
    assert_eq!(attributes["document_type"], "test");
    assert_eq!(attributes["document_version"], "1");
    assert_eq!(attributes["document_id"], ID);
    assert_eq!(attributes["submission_timestamp"], EDGE_TIME);
    let payload = payload_of(record);
    assert_eq!(payload["document_id"], ID);
    assert_eq!(payload["submission_timestamp"], EDGE_TIME);
    assert_eq!(payload["metadata"]["document_namespace"], "test");
    assert_eq!(payload["field"], "x");

    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["attributeMap"]["error_type"], "ParsePayload");
    assert_eq!(
        dead[0]["attributeMap"]["error_message"],
        "document id `../../../x` is not a uuid"
    );
}

#[test]
fn namespace_spellings_are_written_under_the_repository_name() {
    let dir = tempfile::tempdir().unwrap();
    // a version spelled otherwise than the schema file is no schema (gcp-ingestion's outcome),
    // so `01` never makes a `v01/` folder
    let lines: Vec<String> = [".test.", "test-", "Test", "test", "test"]
        .iter()
        .zip(["1", "1", "1", "1", "01"])
        .map(|(ns, v)| {
            envelope(
                &[
                    ("uri", &format!("/submit/{ns}/test/{v}/{ID}")),
                    ("submission_timestamp", EDGE_TIME),
                ],
                r#"{"field":"x"}"#,
            )
        })
        .collect();
    let (decoded, dead) = run(dir.path(), &lines, &[]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["attributeMap"]["error_type"], "ParsePayload");
    assert_eq!(
        dead[0]["attributeMap"]["error_message"],
        "schema `test/test.01` not found"
    );
    assert_eq!(decoded.len(), 4);
    for (path, record) in &decoded {
        assert_eq!(path, "test/test/v1/2026-11-20");
        assert_eq!(record["attributeMap"]["document_namespace"], "test");
        assert_eq!(payload_of(record)["metadata"]["document_namespace"], "test");
    }
    // no hidden or raw-spelled folder anywhere (besides the dead letters' `errors/`)
    let names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "errors")
        .collect();
    assert_eq!(names, ["test"]);
    let versions: Vec<String> = std::fs::read_dir(dir.path().join("out/test/test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(versions, ["v1"]);
}

/// A valid submission and one failing validation, both with the edge's IP attributes.
fn with_client_ips() -> Vec<String> {
    let good = format!("/submit/test/test/1/{ID}");
    let bad = format!("/submit/test/test/1/{OTHER_ID}");
    vec![
        envelope(&edge(&good), r#"{"field":"x"}"#),
        envelope(&edge(&bad), r#"{"bad":1}"#),
    ]
}

fn ips(record: &Value) -> (Option<&str>, Option<&str>) {
    let a = &record["attributeMap"];
    (a["remote_addr"].as_str(), a["x_forwarded_for"].as_str())
}

#[test]
fn client_ips_are_scrubbed_from_outputs_and_dead_letters_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (decoded, dead) = run(dir.path(), &with_client_ips(), &[]);
    assert_eq!((decoded.len(), dead.len()), (1, 1));
    assert_eq!(ips(&decoded[0].1), (None, None));
    assert_eq!(ips(&dead[0]), (None, None));
    // nothing else was lost: the dead letter still replays
    assert_eq!(
        dead[0]["attributeMap"]["uri"],
        format!("/submit/test/test/1/{OTHER_ID}")
    );
    for (_, record) in &decoded {
        assert!(!record.to_string().contains("192.0.2.1"), "{record}");
    }
    assert!(!dead[0].to_string().contains("192.0.2.1"), "{}", dead[0]);
}

#[test]
fn keeping_client_ips_and_scrubbing_more_is_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (decoded, dead) = run(
        dir.path(),
        &with_client_ips(),
        &[
            "decoder.keep_client_ip=true",
            "dead_letter.keep_client_ip=true",
            "decoder.scrub_attributes=[\"x_debug_id\"]",
        ],
    );
    let kept = (Some("192.0.2.1"), Some("198.51.100.7, 192.0.2.1"));
    assert_eq!(ips(&decoded[0].1), kept);
    assert_eq!(ips(&dead[0]), kept);
    // a configured attribute is gone from attributes and from the nested metadata
    assert!(decoded[0].1["attributeMap"]["x_debug_id"].is_null());
    assert!(payload_of(&decoded[0].1)["metadata"]["header"]["x_debug_id"].is_null());
    assert!(dead[0]["attributeMap"]["x_debug_id"].is_null());

    // each section decides for itself
    let dir = tempfile::tempdir().unwrap();
    let (decoded, dead) = run(
        dir.path(),
        &with_client_ips(),
        &["dead_letter.keep_client_ip=true"],
    );
    assert_eq!(ips(&decoded[0].1), (None, None));
    assert_eq!(ips(&dead[0]), kept);
    // without configuration, other attributes stay
    assert_eq!(
        payload_of(&decoded[0].1)["metadata"]["header"]["x_debug_id"],
        "debug-me"
    );
}
