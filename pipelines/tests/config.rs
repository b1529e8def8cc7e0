//! Config rules: one negative test per rule, all errors at once, overrides, example configs.

use std::path::Path;
use std::process::Command;

use sluice_pipelines::config::{self, ConfigErrors, Overrides, SinkConfig, SourceConfig};

const BASE: &str = r#"
job = "decoder"
[source]
type = "file"
path = "examples/data/*.ndjson"
[decoder]
schemas = "schemas/json"
[sink]
type = "file"
dir = "out"
path = "${document_namespace:-unknown}/${document_type:-unknown}/"
[dead_letter]
type = "stderr"
"#;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn errors(text: &str) -> ConfigErrors {
    std::env::set_current_dir(root()).unwrap();
    config::parse_str(text, &Overrides::new()).expect_err("config should be rejected")
}

fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn assert_one(errors: &ConfigErrors, key: &str, needle: &str) {
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.key == key && e.message.contains(needle)),
        "no error at `{key}` containing {needle:?} in:\n{errors}"
    );
}

#[test]
fn base_config_is_valid() {
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(BASE, &Overrides::new()).unwrap();
    assert_eq!(job.workers, 1);
    assert!(matches!(job.source, SourceConfig::File { .. }));
}

#[test]
fn unknown_key_names_its_path() {
    let e = errors(&BASE.replace("[sink]\n", "[sink]\nbukket = \"x\"\n"));
    assert_one(&e, "sink.bukket", "unknown key");
    let e = errors(&with("[pipeline]\nepoch = { max_recs = 3 }"));
    assert_one(&e, "pipeline.epoch.max_recs", "unknown key");
}

#[test]
fn missing_required_key_names_its_path() {
    let e = errors(&BASE.replace("dir = \"out\"\n", ""));
    assert_one(&e, "sink.dir", "missing required key");
    let e = errors(&BASE.replace("[dead_letter]\ntype = \"stderr\"\n", ""));
    assert_one(&e, "dead_letter", "missing required section");
}

#[test]
fn defaultless_placeholder_in_a_path_is_an_error() {
    // gcp-ingestion's rule for file outputs: every placeholder needs a default
    let e = errors(&BASE.replace(
        "path = \"${document_namespace:-unknown}/${document_type:-unknown}/\"",
        "path = \"${document_namespace}/${document_type:-unknown}\"",
    ));
    assert_one(&e, "sink.path", "`${document_namespace}` without a default");
}

#[test]
fn bad_size_and_duration_name_their_paths() {
    let e = errors(&BASE.replace(
        "[sink]\n",
        "[sink]\nbatch = { max_bytes = \"lots\", max_age = \"soon\" }\n",
    ));
    assert_one(&e, "sink.batch.max_bytes", "expected a size");
    assert_one(&e, "sink.batch.max_age", "expected a duration");
}

#[test]
fn unsupported_kinds_are_config_errors() {
    let e = errors(&BASE.replace("type = \"stderr\"", "type = \"bigquery\""));
    assert_one(&e, "dead_letter.type", "not supported by this build");
    let e = errors(&BASE.replace(
        "type = \"file\"\npath = \"examples",
        "type = \"kafka\"\npath = \"examples",
    ));
    assert_one(&e, "source.type", "not supported by this build");
}

#[test]
fn a_file_state_dir_must_be_a_directory() {
    let state =
        |value: &str| BASE.replace("[decoder]\n", &format!("state_dir = {value}\n[decoder]\n"));
    let e = errors(&state("3"));
    assert_one(&e, "source.state_dir", "expected the path of a directory");
    let e = errors(&state("\"\""));
    assert_one(&e, "source.state_dir", "found an empty string");
    let e = errors(&state("\"Cargo.toml\""));
    assert_one(&e, "source.state_dir", "exists and is not a directory");
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(&state("\"target/no-such-state\""), &Overrides::new()).unwrap();
    assert!(matches!(
        job.source,
        SourceConfig::File { state_dir: Some(ref d), .. } if d.ends_with("no-such-state")
    ));
}

#[test]
fn missing_schemas_path_is_an_error() {
    let e = errors(&BASE.replace("schemas/json", "no/such/schemas"));
    assert_one(&e, "decoder.schemas", "does not exist");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = BASE
        .replace(
            "job = \"decoder\"",
            "job = \"decoder\"\nworkers = 0\ncolour = \"blue\"",
        )
        .replace("[sink]\n", "[sink]\nbatch = { max_bytes = \"lots\" }\n")
        .replace("type = \"stderr\"", "type = \"pubsub\"");
    let e = errors(&text);
    assert_one(&e, "workers", "expected an integer >= 1");
    assert_one(&e, "colour", "unknown key");
    assert_one(&e, "sink.batch.max_bytes", "expected a size");
    assert_one(&e, "dead_letter.type", "not supported");
    assert_eq!(e.0.len(), 4, "{e}");
}

#[test]
fn set_and_env_overrides_apply_before_checks() {
    std::env::set_current_dir(root()).unwrap();
    let o = Overrides::new()
        .env([
            ("SLUICE_WORKERS".to_string(), "3".to_string()),
            (
                "SLUICE_SINK__BATCH__MAX_RECORDS".to_string(),
                "10".to_string(),
            ),
            ("HOME".to_string(), "/x".to_string()),
        ])
        .set("sink.dir=/tmp/elsewhere")
        .set("workers=5");
    let job = config::parse_str(BASE, &o).unwrap();
    assert_eq!(job.workers, 5, "--set wins over the environment");
    match job.sink {
        SinkConfig::File { dir, batch, .. } => {
            assert_eq!(dir, Path::new("/tmp/elsewhere"));
            assert_eq!(batch.max_records, 10);
        }
        other => panic!("{other:?}"),
    }
    let e = config::parse_str(BASE, &Overrides::new().set("sink.bukket=x")).unwrap_err();
    assert_one(&e, "sink.bukket", "unknown key");
    let e = config::parse_str(
        BASE,
        &Overrides::new().env([("SLUICE_SINK__BATCH__MAX_BYTES".into(), "huge".into())]),
    )
    .unwrap_err();
    assert_one(&e, "sink.batch.max_bytes", "expected a size");
}

#[test]
fn sluice_variables_that_name_no_config_key_are_not_overrides() {
    std::env::set_current_dir(root()).unwrap();
    let o = Overrides::new().env([
        // a test harness's or a deployment's own variables
        (
            "SLUICE_TEST_S3_ENDPOINT".to_string(),
            "http://127.0.0.1:5000".to_string(),
        ),
        ("SLUICE_S3_PORT".to_string(), "5000".to_string()),
        (
            "SLUICE_SINK__BATCH__MAX_RECORDS".to_string(),
            "10".to_string(),
        ),
    ]);
    assert_eq!(
        o.ignored_env(),
        ["SLUICE_S3_PORT", "SLUICE_TEST_S3_ENDPOINT"]
    );
    let job = config::parse_str(BASE, &o).expect("foreign SLUICE_ variables are no config error");
    match job.sink {
        SinkConfig::File { batch, .. } => assert_eq!(batch.max_records, 10),
        other => panic!("{other:?}"),
    }
    // a key inside a known section is still checked: a typo there is an error
    let e = config::parse_str(
        BASE,
        &Overrides::new().env([("SLUICE_SINK__BUKKET".into(), "x".into())]),
    )
    .unwrap_err();
    assert_one(&e, "sink.bukket", "unknown key");
}

#[test]
fn every_example_config_parses_and_validates() {
    std::env::set_current_dir(root()).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("examples/configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            config::load(&path, &Overrides::new())
                .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} example configs");
}

#[test]
fn validate_command_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        BASE.replace("job = \"decoder\"", "job = \"decoder\"\nworkerz = 2")
            .replace(
                "[sink]\n",
                "[sink]\nbatch = { max_age = \"10 fortnights\" }\n",
            ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`workerz`: unknown key"), "{stderr}");
    assert!(
        stderr.contains("`sink.batch.max_age`: expected a duration"),
        "{stderr}"
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(["validate", "examples/configs/decoder-local.toml"])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
