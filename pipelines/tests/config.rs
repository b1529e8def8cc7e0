//! Config rules: one negative test per rule, all errors at once, overrides, example configs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_pipelines::config::{
    self, ConfigErrors, LocalSinkConfig, Overrides, SinkConfig, SourceConfig,
};
use sluice_pipelines::jobs;

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
    assert!(matches!(job.source, SourceConfig::File(_)));
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
    let e = errors(&BASE.replace("type = \"stderr\"", "type = \"memory\""));
    assert_one(&e, "dead_letter.type", "not supported by this build");
    let e = errors(&BASE.replace(
        "type = \"file\"\npath = \"examples",
        "type = \"memory\"\npath = \"examples",
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
        SourceConfig::File(ref c) if c.state_dir.as_ref().is_some_and(|d| d.ends_with("no-such-state"))
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
        .replace("type = \"stderr\"", "type = \"memory\"");
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
        SinkConfig::File(c) => {
            assert_eq!(c.dir, Path::new("/tmp/elsewhere"));
            assert_eq!(c.batch.max_records, 10);
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
fn an_override_error_is_not_blamed_on_the_file() {
    let path = root().join("examples/configs/decoder-local.toml");
    let e = config::load(&path, &Overrides::new().set("=x")).unwrap_err();
    assert_one(&e, "", "bad override `--set =x`");
    assert!(!e.to_string().contains("decoder-local.toml"), "{e}");
    let e = config::load(&path, &Overrides::new().set("sink.bukket=x")).unwrap_err();
    assert_one(&e, "sink.bukket", "unknown key");
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
        SinkConfig::File(c) => assert_eq!(c.batch.max_records, 10),
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

#[test]
fn every_example_config_round_trips_and_checks_without_touching_anything() {
    std::env::set_current_dir(root()).unwrap();
    for entry in std::fs::read_dir(root().join("examples/configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut job = config::load(&path, &Overrides::new()).unwrap();
        let text = toml::to_string(&job).unwrap();
        let back = config::parse_str(&text, &Overrides::new())
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert_eq!(back, job, "{}:\n{text}", path.display());
        // point local sinks at a directory that does not exist: checking must not create it
        for sink in [&mut job.sink, &mut job.dead_letter.sink] {
            if let SinkConfig::File(c) = sink {
                c.dir = out.clone();
            }
        }
        jobs::check(&job).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            !out.exists(),
            "{}: checking created {out:?}",
            path.display()
        );
    }
}

/// One config error per key set to zero (or below): the key path and the range expected.
#[test]
fn zero_and_negative_bounds_are_config_errors() {
    for (extra, key, expected) in [
        (
            "[pipeline]\nepoch = { max_records = 0 }",
            "pipeline.epoch.max_records",
            "expected an integer >= 1, found 0",
        ),
        (
            "[pipeline]\nepoch = { max_bytes = 0 }",
            "pipeline.epoch.max_bytes",
            "expected a size above zero, found 0",
        ),
        (
            "[pipeline]\nepoch = { max_age = 0 }",
            "pipeline.epoch.max_age",
            "expected a duration above zero, found 0",
        ),
        (
            "[pipeline]\nepoch = { max_age = \"0ms\" }",
            "pipeline.epoch.max_age",
            "expected a duration above zero, found \"0ms\"",
        ),
        (
            "[pipeline]\nin_flight = { max_epochs = 0 }",
            "pipeline.in_flight.max_epochs",
            "expected an integer >= 1, found 0",
        ),
        (
            "[pipeline]\nin_flight = { max_bytes = \"0MB\" }",
            "pipeline.in_flight.max_bytes",
            "expected a size above zero, found \"0MB\"",
        ),
        (
            "[pipeline]\nin_flight = { max_bytes = -1 }",
            "pipeline.in_flight.max_bytes",
            "expected a size like",
        ),
    ] {
        let e = errors(&with(extra));
        assert_one(&e, key, expected);
        assert_eq!(e.0.len(), 1, "{extra}: {e}");
    }
    for (workers, expected) in [
        ("workers = 0", "expected an integer >= 1, found 0"),
        ("workers = -2", "expected an integer >= 1, found -2"),
    ] {
        let e = errors(&format!("{workers}\n{BASE}"));
        assert_one(&e, "workers", expected);
        assert_eq!(e.0.len(), 1, "{workers}: {e}");
    }
    for (batch, key, expected) in [
        (
            "max_records = 0",
            "sink.batch.max_records",
            "expected an integer >= 1, found 0",
        ),
        (
            "max_bytes = 0",
            "sink.batch.max_bytes",
            "expected a size above zero",
        ),
        (
            "max_age = 0",
            "sink.batch.max_age",
            "expected a duration above zero",
        ),
    ] {
        let e = errors(&BASE.replace("[sink]\n", &format!("[sink]\nbatch = {{ {batch} }}\n")));
        assert_one(&e, key, expected);
        assert_eq!(e.0.len(), 1, "{batch}: {e}");
    }
    let e = errors(&BASE.replace(
        "schemas = \"schemas/json\"",
        "schemas = \"schemas/json\"\nmax_payload_bytes = 0",
    ));
    assert_one(
        &e,
        "decoder.max_payload_bytes",
        "expected a size above zero",
    );
}

/// One negative test per `deny_unknown_fields` struct a config file reaches.
#[test]
fn every_table_refuses_unknown_keys() {
    let sink_job = |source: &str, sink: &str, extra: &str| {
        let (top, extra) = if extra.contains('[') {
            ("", extra)
        } else {
            (extra, "")
        };
        format!(
            "job = \"sink\"\n{top}\n[source]\n{source}\n[sink]\n{sink}\n[dead_letter]\ntype = \"stderr\"\n{extra}"
        )
    };
    let file_source = "type = \"file\"\npath = \"examples/data/*.ndjson\"";
    let stdout = "type = \"stdout\"";
    for (text, key) in [
        (sink_job(file_source, stdout, "wrkers = 2"), "wrkers"),
        (
            sink_job(&format!("{file_source}\npaht = \"x\""), stdout, ""),
            "source.paht",
        ),
        (
            sink_job("type = \"stdin\"\npath = \"x\"", stdout, ""),
            "source.path",
        ),
        (
            sink_job(
                file_source,
                "type = \"file\"\ndir = \"o\"\nbukket = \"b\"",
                "",
            ),
            "sink.bukket",
        ),
        (
            sink_job(
                file_source,
                "type = \"s3\"\nbucket = \"b\"\ndir = \"o\"",
                "",
            ),
            "sink.dir",
        ),
        (
            sink_job(
                file_source,
                "type = \"s3\"\nbucket = \"b\"\naccess_key_id = \"k\"",
                "",
            ),
            "sink.access_key_id",
        ),
        (
            sink_job(file_source, "type = \"stdout\"\ndir = \"o\"", ""),
            "sink.dir",
        ),
        (
            sink_job(file_source, stdout, "").replace(
                "[dead_letter]\ntype = \"stderr\"",
                "[dead_letter]\ntype = \"stderr\"\ncompression = \"gzip\"",
            ),
            "dead_letter.compression",
        ),
        (
            sink_job(
                file_source,
                "type = \"file\"\ndir = \"o\"\nbatch = { max_size = 1 }",
                "",
            ),
            "sink.batch.max_size",
        ),
        (
            sink_job(file_source, stdout, "[pipeline]\nstack_trace = false"),
            "pipeline.stack_trace",
        ),
        (
            sink_job(file_source, stdout, "[pipeline]\nepoch = { max_recs = 3 }"),
            "pipeline.epoch.max_recs",
        ),
        (
            sink_job(
                file_source,
                stdout,
                "[pipeline]\nin_flight = { epochs = 3 }",
            ),
            "pipeline.in_flight.epochs",
        ),
        (
            BASE.replace(
                "schemas = \"schemas/json\"",
                "schemas = \"schemas/json\"\nstrict = true",
            ),
            "decoder.strict",
        ),
    ] {
        let e = errors(&text);
        assert_one(&e, key, "unknown key; expected one of: ");
        assert_eq!(e.0.len(), 1, "{text}\n{e}");
    }
}

#[test]
fn bad_type_keys_and_sections_name_their_paths() {
    let e = errors(&BASE.replace("type = \"stderr\"", "format = \"json\""));
    assert_one(
        &e,
        "dead_letter.type",
        "missing required key (expected one of \"file\"",
    );
    let e = errors(&BASE.replace("type = \"stderr\"", "type = 3"));
    assert_one(&e, "dead_letter.type", "found an integer");
    let e = errors(&BASE.replace("type = \"stderr\"", "type = \"stdrr\""));
    // the list grows with each connector: check its start and the value found
    assert_one(
        &e,
        "dead_letter.type",
        "expected one of \"file\", \"s3\", \"stdout\", \"stderr\"",
    );
    assert_one(&e, "dead_letter.type", "found \"stdrr\"");
    let e = errors(&BASE.replace("dir = \"out\"", "dir = 7"));
    assert_one(&e, "sink.dir", "found integer `7`");
    assert_eq!(
        e.0.len(),
        1,
        "a bad required key is not also reported missing: {e}"
    );
    let e = errors(&BASE.replace("job = \"decoder\"", "job = \"decode\""));
    assert_one(
        &e,
        "job",
        "expected one of \"decoder\", \"sink\", \"republisher\", found \"decode\"",
    );
    let e = errors(&BASE.replace("job = \"decoder\"\n", ""));
    assert_one(
        &e,
        "job",
        "missing required key (expected one of \"decoder\", \"sink\", \"republisher\")",
    );
    let e = errors(&BASE.replace("dir = \"out\"\n", ""));
    assert_one(&e, "sink.dir", "missing required key (expected a path)");
    let e = errors(&BASE.replace("path = \"examples/data/*.ndjson\"\n", ""));
    assert_one(
        &e,
        "source.path",
        "missing required key (expected a string)",
    );
    let e = errors(&with("[pipeline]\nepoch = 5"));
    assert_one(&e, "pipeline.epoch", "expected a table, found integer `5`");
}

/// A bare duration is seconds and a bare size is bytes, wherever it is written.
#[test]
fn bare_numbers_are_seconds_and_bytes() {
    std::env::set_current_dir(root()).unwrap();
    // the CLI path: file, --set and environment overrides
    let job = config::parse_str(
        &with("[pipeline]\nepoch = { max_age = 2, max_bytes = 1000 }"),
        &Overrides::new()
            .env([("SLUICE_SINK__BATCH__MAX_AGE".into(), "7".into())])
            .set("pipeline.in_flight.max_bytes=\"4096\"")
            .set("decoder.max_payload_bytes=\"1.5\""),
    )
    .unwrap();
    assert_eq!(job.pipeline.epoch.max_age, Some(Duration::from_secs(2)));
    assert_eq!(job.pipeline.epoch.max_bytes, Some(1000));
    assert_eq!(job.pipeline.in_flight.max_bytes, Some(4096));
    assert_eq!(
        job.decoder.unwrap().max_payload_bytes,
        2,
        "1.5 bytes round to 2"
    );
    match job.sink {
        SinkConfig::File(c) => assert_eq!(c.batch.max_age, Duration::from_secs(7)),
        other => panic!("{other:?}"),
    }
    // the Rust-level config struct of the connector, read on its own
    let c: LocalSinkConfig =
        toml::from_str("dir = \"d\"\nbatch = { max_age = 60, max_bytes = 100 }").unwrap();
    assert_eq!(c.batch.max_age, Duration::from_secs(60));
    assert_eq!(c.batch.max_bytes, 100);
    // and the printed config says so
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args([
            "validate",
            "--print",
            "examples/configs/sink-local.toml",
            "--set",
            "sink.batch.max_age=5",
            "--set",
            "pipeline.epoch.max_bytes=\"2KB\"",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("max_age = \"5s\""), "{printed}");
    assert!(printed.contains("max_bytes = 2000\n"), "{printed}");
}

#[test]
fn validate_command_creates_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new-dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(["validate", "examples/configs/decoder-local.toml", "--set"])
        .arg(format!("sink.dir={}", new.display()))
        .arg("--set")
        .arg(format!("dead_letter.dir={}", new.display()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!new.exists(), "validate created {new:?}");
    // a file where the directory should be is a setup error, found by validate
    std::fs::write(&new, "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(["validate", "examples/configs/decoder-local.toml", "--set"])
        .arg(format!("sink.dir={}", new.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

#[test]
fn privacy_and_schema_keys_default_off_and_are_checked() {
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(BASE, &Overrides::new()).unwrap();
    let decoder = job.decoder.as_ref().unwrap();
    assert!(!decoder.keep_client_ip);
    assert!(!decoder.strict_schemas);
    assert!(decoder.scrub_attributes.is_empty());
    assert!(!job.dead_letter.keep_client_ip);

    let text = BASE
        .replace(
            "[decoder]\n",
            "[decoder]\nkeep_client_ip = true\nstrict_schemas = true\nscrub_attributes = [\"x_debug_id\"]\n",
        )
        .replace("[dead_letter]\n", "[dead_letter]\nkeep_client_ip = true\n");
    let job = config::parse_str(&text, &Overrides::new()).unwrap();
    let decoder = job.decoder.as_ref().unwrap();
    assert!(decoder.keep_client_ip && decoder.strict_schemas);
    assert_eq!(decoder.scrub_attributes, ["x_debug_id"]);
    assert!(job.dead_letter.keep_client_ip);
    assert!(matches!(job.dead_letter.sink, SinkConfig::Stderr(_)));
    // round-trips
    let back = config::parse_str(&toml::to_string(&job).unwrap(), &Overrides::new()).unwrap();
    assert_eq!(back, job);

    let e = errors(&BASE.replace(
        "[dead_letter]\n",
        "[dead_letter]\nkeep_client_ip = \"yes\"\n",
    ));
    assert_one(&e, "dead_letter.keep_client_ip", "expected a boolean");
    let e = errors(&BASE.replace("[dead_letter]\n", "[dead_letter]\nkeep_client_ips = true\n"));
    assert_one(&e, "dead_letter.keep_client_ips", "unknown key");
    let e = errors(&BASE.replace("[decoder]\n", "[decoder]\nscrub_attributes = \"x\"\n"));
    assert_one(&e, "decoder.scrub_attributes", "expected");
    let e = errors(&BASE.replace("[sink]\n", "[sink]\nkeep_client_ip = true\n"));
    assert_one(&e, "sink.keep_client_ip", "unknown key");
}

#[test]
fn the_decoder_runs_without_geo_databases_saying_what_it_cannot_fill_and_rejects_a_bad_one() {
    // the config's paths are relative to the repository root (as the other example test does)
    std::env::set_current_dir(root()).unwrap();
    let job = config::load(
        &root().join("examples/configs/decoder-local.toml"),
        &Overrides::new(),
    )
    .unwrap();
    let d = job.decoder.as_ref().unwrap();
    assert_eq!(d.max_payload_bytes, 8 << 20, "the edge's limit, 8 MiB");
    assert_eq!(d.geo_city_database, None);
    let ok = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(["validate", "examples/configs/decoder-local.toml"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(
        stderr.contains("the decoder does not fill geo_country, geo_subdivision1, geo_subdivision2, geo_city, geo_db_version, normalized_country_code, isp_name, isp_organization, isp_db_version"),
        "{stderr}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(["validate", "examples/configs/decoder-local.toml"])
        .args(["--set", "decoder.geo_city_database=\"no/such/city.mmdb\""])
        .output()
        .unwrap();
    assert_ne!(bad.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("cannot open the geo database `no/such/city.mmdb`"),
        "{stderr}"
    );
}

#[test]
fn dedup_and_counts_are_off_by_default_and_checked() {
    use config::{DedupTimeConfig, OnDuplicateConfig};
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(BASE, &Overrides::new()).unwrap();
    assert_eq!((job.dedup, job.counts), (None, None));

    let job = config::parse_str(&with("[dedup]\n[counts]"), &Overrides::new()).unwrap();
    let d = job.dedup.clone().unwrap();
    assert!(d.enabled && job.counts.as_ref().unwrap().enabled);
    assert_eq!(d.key, "uri");
    assert_eq!(d.window, Duration::from_secs(24 * 3600));
    assert_eq!(d.lateness, Duration::from_secs(3600));
    assert_eq!(d.time, DedupTimeConfig::SubmissionTimestamp);
    assert_eq!(d.on_duplicate, OnDuplicateConfig::DeadLetter);
    let back = config::parse_str(&toml::to_string(&job).unwrap(), &Overrides::new()).unwrap();
    assert_eq!(back, job);

    let text = with(
        "[dedup]\nkey = \"document_id\"\nwindow = \"10m\"\ntime = \"processing\"\non_duplicate = \"drop\"\n[counts]\nenabled = false",
    );
    let job = config::parse_str(&text, &Overrides::new()).unwrap();
    let d = job.dedup.unwrap();
    assert_eq!(d.key, "document_id");
    assert_eq!(d.window, Duration::from_secs(600));
    assert_eq!(d.time, DedupTimeConfig::Processing);
    assert_eq!(d.on_duplicate, OnDuplicateConfig::Drop);
    assert!(!job.counts.unwrap().enabled);

    let e = errors(&with("[dedup]\nwindw = \"1h\""));
    assert_one(&e, "dedup.windw", "unknown key");
    let e = errors(&with("[counts]\nper_minute = true"));
    assert_one(&e, "counts.per_minute", "unknown key");
    let e = errors(&with("[dedup]\ntime = \"wallclock\""));
    assert_one(&e, "dedup.time", "wallclock");
    let e = errors(&with("[dedup]\non_duplicate = \"ignore\""));
    assert_one(&e, "dedup.on_duplicate", "ignore");
    let e = errors(&with("[dedup]\nwindow = \"soon\""));
    assert_one(&e, "dedup.window", "soon");
    let e = errors(&with("[dedup]\nwindow = \"0s\""));
    assert_one(&e, "dedup.window", "above zero");
    let e = errors(&with("[dedup]\npayload_field = \"client_id\""));
    assert_one(&e, "dedup.payload_field", "JSON pointer");
    let e = errors(&with("[dedup]\nkey = \"\""));
    assert_one(&e, "dedup.key", "empty");
    let sink_job = BASE
        .replace("job = \"decoder\"", "job = \"sink\"")
        .replace("[decoder]\nschemas = \"schemas/json\"\n", "");
    let e = errors(&format!("{sink_job}\n[dedup]\n[counts]"));
    assert_one(&e, "dedup", "only the decoder job");
    assert_one(&e, "counts", "only the decoder job");
}
