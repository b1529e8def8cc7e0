//! Crash safety into BigQuery: a file -> BigQuery job with a state directory is killed with
//! SIGKILL at 5 random points and restarted each time with the same state directory.
//! Afterwards every input record is a row of the table or of the error table (read back with
//! SQL queries from Python), and each kill costs at most the in-flight bound in duplicates.
//!
//! The job is the `sink` job in the `raw` row format (every attribute a column), so that a row
//! says which input line it came from; the debug decoder is too slow for six runs of a
//! meaningful input in a CI test. Needs `SLUICE_TEST_BIGQUERY_URL` (skipped, saying so, when
//! unset).

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
job = "sink"
[source]
type = "file"
path = "unset"
format = "json"
[sink]
type = "bigquery"
project = "unset"
auth = "none"
table = "unset.rows"
format = "raw"
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
        format!("sink.project={}", s.project),
        format!("sink.endpoint={}", s.url),
        format!("sink.table={}.rows", s.dataset),
        format!("dead_letter.project={}", s.project),
        format!("dead_letter.endpoint={}", s.url),
        format!("dead_letter.table={}.errors", s.dataset),
        format!("pipeline.epoch.max_records={EPOCH_RECORDS}"),
        format!("pipeline.in_flight.max_epochs={IN_FLIGHT_EPOCHS}"),
    ] {
        c.args(["--set", &set]);
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Every row of `dataset.table`, read with SQL over REST by Python's standard library.
fn rows(s: &Setup, table: &str) -> Vec<serde_json::Map<String, Value>> {
    const SCRIPT: &str = r#"
import sys, json, urllib.request, urllib.error
base, project, dataset, table = sys.argv[1:5]
def call(path, body=None):
    req = urllib.request.Request(base + '/bigquery/v2/projects/' + project + path,
        data=None if body is None else json.dumps(body).encode(),
        method='GET' if body is None else 'POST', headers={'Content-Type': 'application/json'})
    return json.load(urllib.request.urlopen(req, timeout=60))
try:
    call('/datasets/%s/tables/%s' % (dataset, table))
except urllib.error.HTTPError as e:
    if e.code == 404:
        sys.exit(0)
    raise
res = call('/queries', {'query': 'SELECT * FROM `%s.%s.%s`' % (project, dataset, table),
                        'useLegacySql': False, 'maxResults': 1000000, 'timeoutMs': 60000})
assert res.get('jobComplete', True), res
names = [f['name'] for f in res['schema']['fields']]
for r in res.get('rows', []):
    print(json.dumps({n: c['v'] for n, c in zip(names, r['f'])}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args([&s.url, &s.project, &s.dataset, table])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "reading {table} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

use checkpoints::At;

/// Every record in the table and the error table, by where it was read, with its copies.
fn written(s: &Setup, at: &BTreeMap<String, At>) -> BTreeMap<At, u32> {
    let mut seen = BTreeMap::new();
    for table in ["rows", "errors"] {
        for row in rows(s, table) {
            let text = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
            let where_ = match (text("uri"), text("error_type").as_deref()) {
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
                    at.get(&key)
                        .unwrap_or_else(|| panic!("a row that is not in the input: {row:?}"))
                        .clone()
                }
                (None, _) => panic!("row without uri: {row:?}"),
            };
            *seen.entry(where_).or_default() += 1;
        }
    }
    seen
}

#[test]
fn five_sigkills_into_bigquery_lose_nothing_and_duplicate_at_most_the_in_flight_bound() {
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

    let mut exposures = Vec::new();
    for kill in 1..=KILLS {
        let more = 100 + u64::from(rng.next_u32() % 251);
        let jitter = Duration::from_millis(u64::from(rng.next_u32() % 11));
        let target = checkpoints::acknowledged_total(&state, RECORDS_PER_FILE) + more;
        let mut child = job(&s, &config, &input, &state).spawn().unwrap();
        let running = checkpoints::run_until_acknowledged(
            &mut child,
            &state,
            target,
            RECORDS_PER_FILE,
            Duration::from_secs(120),
        );
        std::thread::sleep(jitter);
        let running = running && child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(running, "run {kill} ended before it could be killed");
        let acked = checkpoints::acknowledged(&state);
        let seen = written(&s, &at);
        let exposed = seen
            .keys()
            .filter(|(file, line)| *line > acked.get(file).copied().unwrap_or(0))
            .count();
        eprintln!(
            "kill {kill}: acknowledged {acked:?}; {} records in BigQuery; {exposed} not acknowledged (bound {IN_FLIGHT_BOUND})",
            seen.len()
        );
        assert!(exposed <= IN_FLIGHT_BOUND, "kill {kill} exposes {exposed}");
        exposures.push(exposed);
    }
    let status = job(&s, &config, &input, &state).status().unwrap();
    assert!(status.success(), "the last run finishes: {status}");
    let seen = written(&s, &at);
    let missing: Vec<&At> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let exposed: usize = exposures.iter().sum();
    eprintln!(
        "{} records, missing 0, {duplicates} duplicates after {KILLS} kills (exposed per kill {exposures:?}, bound {IN_FLIGHT_BOUND})",
        expected.len()
    );
    assert!(
        duplicates as usize <= exposed,
        "{duplicates} duplicates > {exposed} exposed"
    );
}
