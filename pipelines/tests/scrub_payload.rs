//! Payload field rules (`[decoder.scrub_payload]`) through the built binary: a dropped field
//! is gone from the output, a document a `dead_letter` rule matches is a `ScrubPayload` dead
//! letter, a document a `count` rule matches is counted in the summary (never a silent loss),
//! and a bad rule is a config error naming its key. The rules run before validation (where
//! gcp-ingestion's MessageScrubber runs): a document that would fail validation gets the rule's
//! outcome, not a `ParsePayload` dead letter.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use serde_json::{json, Value};

mod support;
use support::read_object_lines;

fn envelope(id: &str, payload: &Value) -> String {
    json!({
        "attributeMap": {
            "uri": format!("/submit/test/test/1/{id}"),
            "submission_timestamp": "2026-11-20T10:00:00.000000Z",
        },
        "payload": base64::engine::general_purpose::STANDARD.encode(payload.to_string()),
    })
    .to_string()
}

fn config(dir: &Path, rules: &str) -> std::path::PathBuf {
    let out = dir.join("out");
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"job = "decoder"
workers = 1
[source]
type = "file"
path = "{input}"
[decoder]
schemas = "{schemas}"
{rules}
[sink]
type = "file"
dir = "{out}"
path = "decoded/"
compression = "none"
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/${{error_type:-unknown}}/"
compression = "none"
[pipeline]
stack_traces = false
"#,
            input = dir.join("input.ndjson").display(),
            schemas = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../schemas/json")
                .display(),
            out = out.display(),
        ),
    )
    .unwrap();
    path
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap()
}

/// The parsed lines of every object under `dir`.
fn lines(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        for line in read_object_lines(&p).unwrap() {
            out.push(serde_json::from_str(&line).unwrap());
        }
    }
    out
}

fn payload_of(envelope: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

const RULES: &str = r#"
[[decoder.scrub_payload.drop_fields]]
field = "/secret/token"

[[decoder.scrub_payload.drop_documents]]
name = "debug_pings"
field = "/tags/0"
equals = "debug"
action = "count"

[[decoder.scrub_payload.drop_documents]]
name = "blocked"
field = "/field"
in = ["blocked", "banned"]
"#;

#[test]
fn fields_and_documents_are_dropped_as_configured_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [
        "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11",
        "0f0e0d0c-0b0a-4908-8706-050403020100",
        "1f0e0d0c-0b0a-4908-8706-050403020101",
        "2f0e0d0c-0b0a-4908-8706-050403020102",
        "3f0e0d0c-0b0a-4908-8706-050403020103",
        "4f0e0d0c-0b0a-4908-8706-050403020104",
        "5f0e0d0c-0b0a-4908-8706-050403020105",
    ];
    let input = [
        json!({"field": "kept", "secret": {"token": "t0k3n", "kind": "k"}}),
        json!({"field": "x", "tags": ["debug"]}),
        json!({"field": "y", "tags": ["debug", "more"]}),
        json!({"field": "banned"}),
        json!({"field": "ok", "tags": ["release", "debug"]}),
        // invalid (test/test refuses `bad`), but the rules come first
        json!({"field": "blocked", "bad": true}),
        json!({"field": "z", "tags": ["debug"], "bad": 1}),
    ];
    let text: Vec<String> = ids
        .iter()
        .zip(&input)
        .map(|(i, p)| envelope(i, p))
        .collect();
    std::fs::write(dir.path().join("input.ndjson"), text.join("\n") + "\n").unwrap();
    let cfg = config(dir.path(), RULES);
    let run = sluice(&["run", cfg.to_str().unwrap(), "--no-progress"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stderr}");

    let decoded = lines(&dir.path().join("out/decoded"));
    let fields: Vec<Value> = decoded
        .iter()
        .map(|e| payload_of(e)["field"].clone())
        .collect();
    assert_eq!(fields, [json!("kept"), json!("ok")], "{decoded:?}");
    let first = payload_of(&decoded[0]);
    assert_eq!(
        first["secret"],
        json!({"kind": "k"}),
        "the token is dropped"
    );
    assert!(!decoded[0].to_string().contains("t0k3n"));

    let mut dead = lines(&dir.path().join("out/errors/ScrubPayload"));
    dead.sort_by_key(|d| payload_of(d)["field"].to_string());
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (d, field) in dead.iter().zip(["banned", "blocked"]) {
        assert_eq!(
            d["attributeMap"]["error_message"],
            "document dropped by payload rule `blocked`: `/field` matched"
        );
        assert_eq!(payload_of(d)["field"], field);
    }
    assert!(
        !dir.path().join("out/errors/ParsePayload").exists(),
        "an invalid document a rule drops is no ParsePayload dead letter"
    );

    // Three documents dropped without a dead letter: in the summary, by rule.
    let summary = format!("{stdout}{stderr}");
    let counted = summary
        .lines()
        .find(|l| l.trim_start().starts_with("debug_pings"))
        .unwrap_or_else(|| panic!("no count of the rule in the summary:\n{summary}"));
    assert_eq!(counted.split_whitespace().last(), Some("3"), "{counted}");
    assert!(summary.contains("3 dropped by rules"), "{summary}");
}

#[test]
fn a_bad_rule_is_a_config_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.ndjson"), "").unwrap();
    let cfg = config(
        dir.path(),
        "[[decoder.scrub_payload.drop_fields]]\nfield = \"secret\"\n",
    );
    let run = sluice(&["validate", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("decoder.scrub_payload.drop_fields")
            && stderr.contains("must start with `/`"),
        "{stderr}"
    );
}
