//! Crash safety into BigQuery: the decoder job (files -> decoder -> one table per
//! namespace/doctype/version, created from the derived schemas, and the error table) with a
//! state directory is killed with SIGKILL at 5 random points and restarted each time with the
//! same state directory. Afterwards every input record is a row of its table or of the error
//! table (read back with SQL queries from Python), and each kill costs at most the in-flight
//! bound in duplicates. The duplicates are counted and printed: the emulator ignores insert
//! ids, so the figure is what BigQuery's best-effort dedup would have to catch.
//!
//! A decoded row is found by its document id (the generated ids are random uuids), an error
//! row by its `uri` and `submission_timestamp` (or its input line, for a line that is not an
//! envelope). Needs `SLUICE_TEST_BIGQUERY_URL` (skipped, saying so, when unset).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[path = "support/checkpoints.rs"]
mod checkpoints;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::Value;

const WORKERS: usize = 2;
const EPOCH_RECORDS: usize = 50;
const IN_FLIGHT_EPOCHS: usize = 4;
/// Records read but not acknowledged at any moment, at most: what one kill may duplicate.
const IN_FLIGHT_BOUND: usize = IN_FLIGHT_EPOCHS * EPOCH_RECORDS * WORKERS;
const KILLS: usize = 5;
const RECORDS_PER_FILE: usize = 1500;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn emulator() -> Option<(String, String)> {
    match std::env::var("SLUICE_TEST_BIGQUERY_URL") {
        Ok(u) if !u.is_empty() => Some((
            u,
            std::env::var("SLUICE_TEST_BIGQUERY_PROJECT").unwrap_or_else(|_| "test-proj".into()),
        )),
        _ => {
            println!(
                "skipped: set SLUICE_TEST_BIGQUERY_URL (e.g. http://127.0.0.1:9250 after \
                 scripts/services/bigquery.sh start) to run the BigQuery crash test"
            );
            None
        }
    }
}

struct Setup {
    url: String,
    project: String,
    dataset: String,
}

const CONFIG: &str = r#"
job = "decoder"
[source]
type = "file"
path = "unset"
format = "json"
[decoder]
schemas = "unset"
[sink]
type = "bigquery"
project = "unset"
auth = "none"
format = "payload"
create_tables = true
[dead_letter]
type = "bigquery"
project = "unset"
auth = "none"
table = "unset.errors"
format = "raw"
create_tables = true
"#;

fn job(s: &Setup, config: &Path, input: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.args(["run", config.to_str().unwrap(), "--no-progress"])
        .args(["--workers", &WORKERS.to_string()]);
    for set in [
        format!("source.path={}/*.ndjson", input.display()),
        format!("source.state_dir={}", state.display()),
        format!("decoder.schemas={}", root().join("schemas/json").display()),
        format!("sink.project={}", s.project),
        format!("sink.endpoint={}", s.url),
        format!(
            "sink.table={}_${{document_namespace}}.${{document_type}}_v${{document_version}}",
            s.dataset
        ),
        format!("dead_letter.project={}", s.project),
        format!("dead_letter.endpoint={}", s.url),
        format!("dead_letter.table={}_errors.decoder", s.dataset),
        format!("pipeline.epoch.max_records={EPOCH_RECORDS}"),
        format!("pipeline.in_flight.max_epochs={IN_FLIGHT_EPOCHS}"),
    ] {
        c.args(["--set", &set]);
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Every row of every table of the datasets whose name starts with `prefix`, as
/// `(dataset.table, row)`: listed and queried with SQL over REST by Python's standard library.
fn all_rows(s: &Setup, prefix: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
    const SCRIPT: &str = r#"
import sys, json, urllib.request
base, project, prefix = sys.argv[1:4]
def call(path, body=None):
    req = urllib.request.Request(base + '/bigquery/v2/projects/' + project + path,
        data=None if body is None else json.dumps(body).encode(),
        method='GET' if body is None else 'POST', headers={'Content-Type': 'application/json'})
    return json.load(urllib.request.urlopen(req, timeout=60))
for d in call('/datasets?all=true&maxResults=10000').get('datasets', []):
    ds = d['datasetReference']['datasetId']
    if not ds.startswith(prefix):
        continue
    for t in call('/datasets/%s/tables?maxResults=10000' % ds).get('tables', []):
        name = t['tableReference']['tableId']
        res = call('/queries', {'query': 'SELECT * FROM `%s.%s.%s`' % (project, ds, name),
                                'useLegacySql': False, 'maxResults': 1000000, 'timeoutMs': 60000})
        assert res.get('jobComplete', True), res
        names = [f['name'] for f in res['schema']['fields']]
        for r in res.get('rows', []):
            print(json.dumps([ds + '.' + name, {n: c['v'] for n, c in zip(names, r['f'])}]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args([&s.url, &s.project, prefix])
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

use checkpoints::At;

/// The document id in a submission uri (a uuid path element), lowercased.
fn document_id(uri: &str) -> Option<String> {
    uri.split('/')
        .find(|e| e.len() == 36 && e.matches('-').count() == 4)
        .map(str::to_lowercase)
}

/// Where each input record is: by `uri|submission_timestamp` (error rows) and by document
/// id (decoded rows).
struct Inputs {
    by_key: BTreeMap<String, At>,
    by_document_id: BTreeMap<String, At>,
}

impl Inputs {
    fn new(by_key: BTreeMap<String, At>) -> Self {
        let mut by_document_id = BTreeMap::new();
        for (key, at) in &by_key {
            let uri = key.split('|').next().unwrap();
            if let Some(id) = document_id(uri) {
                assert!(
                    by_document_id.insert(id, at.clone()).is_none(),
                    "generated document ids are unique"
                );
            }
        }
        Inputs {
            by_key,
            by_document_id,
        }
    }
}

/// Every record in the decoded tables and the error table, by where it was read, with its
/// copies (each as its table and row), and the decoded rows' tables.
fn written(s: &Setup, inputs: &Inputs) -> (BTreeMap<At, Vec<String>>, BTreeMap<String, usize>) {
    let mut seen: BTreeMap<At, Vec<String>> = BTreeMap::new();
    let mut tables: BTreeMap<String, usize> = BTreeMap::new();
    for (table, row) in all_rows(s, &format!("{}_", s.dataset)) {
        let text = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
        let where_ = if table.ends_with("_errors.decoder") {
            match (text("uri"), text("error_type").as_deref()) {
                (_, Some("ReadInput")) => {
                    let file = text("input_file").unwrap();
                    (
                        Path::new(&file)
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                        text("input_line").unwrap().parse().unwrap(),
                    )
                }
                (Some(uri), _) => {
                    let key = format!("{uri}|{}", text("submission_timestamp").unwrap());
                    inputs
                        .by_key
                        .get(&key)
                        .unwrap_or_else(|| panic!("an error row not in the input: {row:?}"))
                        .clone()
                }
                (None, _) => panic!("error row without uri: {row:?}"),
            }
        } else {
            *tables.entry(table.clone()).or_default() += 1;
            let id = text("document_id")
                .unwrap_or_else(|| panic!("{table}: a row without document_id"))
                .to_lowercase();
            inputs
                .by_document_id
                .get(&id)
                .unwrap_or_else(|| panic!("{table}: a row not in the input: {id}"))
                .clone()
        };
        let copy = format!("{table} {}", Value::Object(row.clone()));
        seen.entry(where_).or_default().push(copy);
    }
    (seen, tables)
}

#[test]
fn the_decoder_killed_five_times_into_bigquery_loses_nothing_and_duplicates_at_most_the_in_flight_bound(
) {
    let Some((url, project)) = emulator() else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let s = Setup {
        url,
        project,
        dataset: format!("crash{}_{nanos}", std::process::id()),
    };
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(nanos as u64);
    eprintln!("crash test seed {seed} (set SLUICE_CRASH_SEED to repeat)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().unwrap();
    let (input, state, config) = (
        tmp.path().join("in"),
        tmp.path().join("state"),
        tmp.path().join("job.toml"),
    );
    std::fs::write(&config, CONFIG).unwrap();
    // Two files, so both workers read; every record's key says where it is.
    let (at, expected) = checkpoints::write_inputs(&input, &[21, 22], RECORDS_PER_FILE);
    let inputs = Inputs::new(at);

    let mut exposures = Vec::new();
    for kill in 1..=KILLS {
        let more = 100 + u64::from(rng.next_u32() % 251);
        let jitter = Duration::from_millis(u64::from(rng.next_u32() % 11));
        let target = checkpoints::acknowledged_total(&state) + more;
        let mut child = job(&s, &config, &input, &state).spawn().unwrap();
        let running = checkpoints::run_until_acknowledged(
            &mut child,
            &state,
            target,
            Duration::from_secs(120),
        );
        std::thread::sleep(jitter);
        let running = running && child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(running, "run {kill} ended before it could be killed");
        let acked = checkpoints::acknowledged(&state);
        let (seen, _) = written(&s, &inputs);
        let exposed = seen.keys().filter(|at| !acked.contains(at)).count();
        eprintln!(
            "kill {kill}: acknowledged {acked:?}; {} records in BigQuery; {exposed} not acknowledged (bound {IN_FLIGHT_BOUND})",
            seen.len()
        );
        assert!(exposed <= IN_FLIGHT_BOUND, "kill {kill} exposes {exposed}");
        exposures.push(exposed);
    }
    let status = job(&s, &config, &input, &state).status().unwrap();
    assert!(status.success(), "the last run finishes: {status}");
    assert!(
        checkpoints::acknowledged(&state).all_whole(),
        "every input file is acknowledged whole"
    );
    let (seen, tables) = written(&s, &inputs);
    assert!(
        tables.len() >= 3,
        "the decoder wrote to one table per doctype: {tables:?}"
    );
    let missing: Vec<&At> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let duplicates: usize = seen.values().map(|copies| copies.len() - 1).sum();
    // A record written again after a kill is the same row in the same table: it was sent
    // with the same insert id (table, input line and row decide it), so BigQuery's dedup,
    // which the emulator lacks, could drop it.
    for (at, copies) in &seen {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "the copies of {at:?} differ: {copies:#?}"
        );
    }
    let exposed: usize = exposures.iter().sum();
    eprintln!(
        "{} records, missing 0, {duplicates} duplicates after {KILLS} kills (exposed per kill {exposures:?}, bound {IN_FLIGHT_BOUND}); decoded rows per table {tables:?}",
        expected.len()
    );
    assert!(
        duplicates <= exposed,
        "{duplicates} duplicates > {exposed} exposed"
    );
}
