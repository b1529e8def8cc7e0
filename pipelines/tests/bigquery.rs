//! The BigQuery sink in jobs: its config rules, `sluice schemas bigquery`, and the decoder
//! writing generated submissions (every kind of error included) into tables created from the
//! derived schemas on the BigQuery emulator, read back with SQL queries from Python.
//!
//! The emulator test needs `SLUICE_TEST_BIGQUERY_URL` (e.g. `http://127.0.0.1:9250` from
//! `scripts/services/bigquery.sh start`); it is skipped, saying so, when the variable is unset.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sluice_pipelines::config::{self, ConfigErrors, Overrides, SinkConfig};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

const BASE: &str = r#"
job = "decoder"
[source]
type = "file"
path = "examples/data/*.ndjson"
[decoder]
schemas = "schemas/json"
[sink]
type = "bigquery"
project = "p"
endpoint = "http://127.0.0.1:9250"
auth = "none"
create_tables = true
[dead_letter]
type = "bigquery"
project = "p"
table = "errors.decoder"
format = "raw"
"#;

fn errors(text: &str) -> ConfigErrors {
    std::env::set_current_dir(root()).unwrap();
    config::parse_str(text, &Overrides::new()).expect_err("config should be rejected")
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
fn a_bigquery_config_is_valid_and_builds() {
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(BASE, &Overrides::new()).unwrap();
    let SinkConfig::BigQuery(c) = &job.sink else {
        panic!("not a bigquery sink: {:?}", job.sink)
    };
    assert!(c.create_tables);
    assert_eq!(job.dead_letter.sink.kind(), "bigquery");
    sluice_pipelines::jobs::check(&job).unwrap();
}

#[test]
fn bigquery_config_errors_name_their_keys() {
    let e = errors(&BASE.replace("format = \"raw\"", "format = \"payload\""));
    assert_one(&e, "dead_letter.format", "`raw` format");
    let e = errors(&BASE.replace("format = \"raw\"\n", ""));
    assert_one(&e, "dead_letter.format", "`raw` format");
    let e = errors(
        &BASE
            .replace("job = \"decoder\"", "job = \"sink\"")
            .replace("[decoder]\nschemas = \"schemas/json\"\n", ""),
    );
    assert_one(&e, "sink.create_tables", "decoder's schemas");
    let e = errors(&BASE.replace(
        "auth = \"none\"",
        "auth = \"none\"\nbatch = { max_rows = 0 }",
    ));
    assert_one(&e, "sink.batch.max_rows", "");
    let e = errors(&BASE.replace("auth = \"none\"", "auth = \"anonymous\""));
    assert_one(&e, "sink.auth", "");
    let e = errors(&BASE.replace("project = \"p\"\nendpoint", "endpoint"));
    assert_one(&e, "sink.project", "");
    let e = errors(&BASE.replace("create_tables = true", "tables = 1"));
    assert_one(&e, "sink.tables", "unknown key");
}

#[test]
fn no_auth_without_an_endpoint_fails_the_check() {
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(
        &BASE.replace("endpoint = \"http://127.0.0.1:9250\"\n", ""),
        &Overrides::new(),
    )
    .unwrap();
    let e = sluice::chain(&sluice_pipelines::jobs::check(&job).unwrap_err());
    assert!(e.contains("endpoint"), "{e}");
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn schemas_bigquery_prints_the_derived_table() {
    let out = sluice(&["schemas", "bigquery", "telemetry/main.4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for expected in [
        "client_id",
        "creation_date",
        "metadata",
        "additional_properties",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    let raw = sluice(&["schemas", "bigquery", "--format", "raw"]);
    assert!(raw.status.success());
    assert!(String::from_utf8_lossy(&raw.stdout).contains("\"error_reason\""));
    for bad in [
        &["schemas", "bigquery", "telemetry/main"][..],
        &["schemas", "bigquery", "nope/nope.1"],
        &["schemas", "bigquery"],
        &["schemas", "bigquery", "telemetry/main.4", "--format", "raw"],
    ] {
        let out = sluice(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty());
    }
}

// ---- the decoder into the emulator ----

fn emulator() -> Option<(String, String)> {
    match std::env::var("SLUICE_TEST_BIGQUERY_URL") {
        Ok(u) if !u.is_empty() => Some((
            u,
            std::env::var("SLUICE_TEST_BIGQUERY_PROJECT").unwrap_or_else(|_| "test-proj".into()),
        )),
        _ => {
            println!(
                "skipped: set SLUICE_TEST_BIGQUERY_URL (e.g. http://127.0.0.1:9250 after \
                 scripts/services/bigquery.sh start) to run the BigQuery emulator tests"
            );
            None
        }
    }
}

/// Every row of every table of the datasets whose name starts with `prefix`, as
/// `(dataset.table, row)`: tables listed and queried with SQL over REST by Python's standard
/// library (an independent client).
fn all_rows(
    url: &str,
    project: &str,
    prefix: &str,
) -> Vec<(String, serde_json::Map<String, Value>)> {
    const SCRIPT: &str = r#"
import sys, json, urllib.request
base, project, prefix = sys.argv[1:4]
def call(path, body=None):
    req = urllib.request.Request(base + '/bigquery/v2/projects/' + project + path,
        data=None if body is None else json.dumps(body).encode(),
        method='GET' if body is None else 'POST', headers={'Content-Type': 'application/json'})
    return json.load(urllib.request.urlopen(req, timeout=60))
def val(field, v):
    if v is None:
        return None
    if field.get('mode') == 'REPEATED':
        return [val(dict(field, mode='NULLABLE'), x['v']) for x in v]
    if field['type'] in ('RECORD', 'STRUCT'):
        return row(field['fields'], v['f'])
    return v
def row(fields, cells):
    return {f['name']: val(f, c['v']) for f, c in zip(fields, cells)}
for d in call('/datasets?all=true&maxResults=10000').get('datasets', []):
    ds = d['datasetReference']['datasetId']
    if not ds.startswith(prefix):
        continue
    for t in call('/datasets/%s/tables?maxResults=10000' % ds).get('tables', []):
        name = t['tableReference']['tableId']
        res = call('/queries', {'query': 'SELECT * FROM `%s.%s.%s`' % (project, ds, name),
                                'useLegacySql': False, 'maxResults': 1000000, 'timeoutMs': 60000})
        assert res.get('jobComplete', True), res
        for r in res.get('rows', []):
            print(json.dumps([ds + '.' + name, row(res['schema']['fields'], r['f'])]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args([url, project, prefix])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "reading the tables failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What identifies a submission: the document id in its uri (lowercased), else the uri.
fn key_of_uri(uri: &str) -> String {
    uri.split('/')
        .find(|s| s.len() == 36 && s.matches('-').count() == 4)
        .map(str::to_lowercase)
        .unwrap_or_else(|| uri.to_string())
}

#[test]
fn decoder_writes_every_submission_to_its_table_or_the_error_table_once() {
    let Some((url, project)) = emulator() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let gen = sluice(&[
        "generate",
        "--count",
        "300",
        "--seed",
        "12",
        "--error-rate",
        "0.3",
        "--output",
        input.to_str().unwrap(),
    ]);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("e2e{}_{nanos}_", std::process::id());
    let sets = [
        format!("source.path={}", input.display()),
        format!("sink.endpoint={url}"),
        format!("sink.project={project}"),
        format!(
            "sink.table={prefix}${{document_namespace}}.${{document_type}}_v${{document_version}}"
        ),
        "sink.batch.max_rows=40".to_string(),
        format!("dead_letter.endpoint={url}"),
        format!("dead_letter.project={project}"),
        format!("dead_letter.table={prefix}errors.decoder"),
        // the file source's positions, apart from other tests' and from the repository
        format!("data_dir={}", dir.path().join("state").display()),
    ];
    let mut args = vec![
        "run",
        "examples/configs/file-to-bigquery.toml",
        "--no-progress",
    ];
    for s in &sets {
        args.push("--set");
        args.push(s);
    }
    let run = sluice(&args);
    assert!(
        run.status.success(),
        "the decoder failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    // what went in, by key
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let uri = v["attributeMap"]["uri"].as_str().unwrap_or_default();
        *expected.entry(key_of_uri(uri)).or_default() += 1;
    }
    // what came out, from every table of this run
    let rows = all_rows(&url, &project, &prefix);
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    let (mut decoded, mut errors) = (0, 0);
    let mut error_types: BTreeMap<String, usize> = BTreeMap::new();
    for (table, row) in &rows {
        let key = if table.ends_with("errors.decoder") {
            errors += 1;
            *error_types
                .entry(row["error_type"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
            key_of_uri(row["uri"].as_str().unwrap_or_default())
        } else {
            decoded += 1;
            assert!(row.contains_key("metadata"), "{table}: {row:?}");
            row["document_id"].as_str().unwrap().to_lowercase()
        };
        *found.entry(key).or_default() += 1;
    }
    println!("{decoded} decoded rows, {errors} error rows {error_types:?}");
    assert!(
        decoded > 100 && errors > 30,
        "{decoded} decoded, {errors} errors"
    );
    assert_eq!(
        found, expected,
        "every submission is in its table or the error table, once"
    );
    assert!(
        !error_types.contains_key("WriteBigQuery"),
        "a valid document did not fit its derived table: {error_types:?}"
    );
}
