//! `sluice test CONFIG TESTFILE` through the binary: the example test file passes against its
//! config; a test file whose expectations are wrong fails (exit 1) with a readable diff naming
//! what was expected and not produced, and what was produced and not expected; multisets are
//! exact (a second copy is not "one matches"); a malformed test file is a clear error (exit 2).

use std::path::Path;
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn sluice(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn the_example_test_file_passes() {
    let (out, text) = sluice(&[
        "test",
        "examples/configs/decoder-dedup.toml",
        "examples/tests/decoder-dedup.test.toml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("3 test(s): 3 passed, 0 failed"), "{text}");
    assert!(
        text.contains("test a resent document is a Duplicate dead letter ... ok"),
        "{text}"
    );
}

const VALID: &str = r#"attributes = { uri = "/submit/test/test/1/2c3a0767-d9b4-4bbe-a4a0-8ba6d59c6f1e", submission_timestamp = "2026-11-21T04:43:27Z" }
payload = '{"field": "a"}'"#;

#[test]
fn wrong_expectations_fail_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.test.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[tests]]
name = "right"
[[tests.inputs]]
{VALID}
[[tests.outputs]]
attributes = {{ document_type = "test" }}
payload = '{{"field": "a"}}'

[[tests]]
name = "wrong doctype and a dead letter that does not happen"
[[tests.inputs]]
{VALID}
[[tests.outputs]]
attributes = {{ document_type = "main" }}
[[tests.dead_letters]]
error_type = "ParseUri"

[[tests]]
name = "two copies are not one"
[[tests.inputs]]
{VALID}
[[tests.inputs]]
{VALID}
[[tests.outputs]]
attributes = {{ document_type = "test" }}

[[tests]]
name = "a dead letter's message must contain the expected text"
[[tests.inputs]]
attributes = {{ uri = "/nowhere" }}
payload = "x"
[[tests.dead_letters]]
error_type = "ParseUri"
message = "this text is in no error message"
"#
        ),
    )
    .unwrap();
    // the decoder without dedup: two copies are two outputs
    let (out, text) = sluice(&[
        "test",
        "examples/configs/decoder-local.toml",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("test right ... ok"), "{text}");
    assert!(text.contains("4 test(s): 1 passed, 3 failed"), "{text}");
    assert!(
        text.contains("test wrong doctype and a dead letter that does not happen ... FAILED"),
        "{text}"
    );
    assert!(
        text.contains("outputs: expected 1, got 1 (0 matched)"),
        "{text}"
    );
    assert!(
        text.contains("- expected, not produced: attributes { document_type = \"main\" }"),
        "{text}"
    );
    assert!(
        text.contains("+ produced, not expected: attributes {")
            && text.contains("document_type = \"test\""),
        "{text}"
    );
    assert!(
        text.contains("dead letters: expected 1, got 0 (0 matched)")
            && text.contains("- expected, not produced: error_type ParseUri"),
        "{text}"
    );
    assert!(
        text.contains("outputs: expected 1, got 2 (1 matched)"),
        "multisets are exact: {text}"
    );
    assert!(
        text.contains("message containing \"this text is in no error message\"")
            && text.contains("+ produced, not expected: attributes {")
            && text.contains("error_type = \"ParseUri\""),
        "{text}"
    );
}

#[test]
fn a_malformed_test_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.test.toml");
    std::fs::write(
        &file,
        "[[tests]]\nname = \"x\"\n[[tests.inputs]]\npaylod = \"typo\"\n",
    )
    .unwrap();
    let (out, text) = sluice(&[
        "test",
        "examples/configs/decoder-local.toml",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("unknown field `paylod`"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
