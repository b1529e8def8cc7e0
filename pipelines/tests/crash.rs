//! Crash safety: a file job with a state directory is killed with SIGKILL at 5 random points and
//! restarted each time with the same state directory. Afterwards every input record is in the
//! outputs or the dead letters, no partial object is ever visible, and each kill costs at most
//! the in-flight bound in duplicates: the records of the epochs that were read but not yet
//! acknowledged (in-flight epochs x records per epoch per worker x workers).
//!
//! The job is the `sink` job (files in, objects out, no decoding): what is under test is the
//! file source's acknowledgements and the object sink, and a debug build decodes too slowly
//! for six runs of a meaningful input to fit in a CI test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "support/checkpoints.rs"]
mod checkpoints;

use rand_chacha::rand_core::{RngCore, SeedableRng};

mod support;
use support::read_object_lines;

const WORKERS: usize = 2;
const EPOCH_RECORDS: usize = 50;
const IN_FLIGHT_EPOCHS: usize = 4;
/// Records read but not acknowledged at any moment, at most: what one kill may duplicate.
const IN_FLIGHT_BOUND: usize = IN_FLIGHT_EPOCHS * EPOCH_RECORDS * WORKERS;
const KILLS: usize = 5;
const RECORDS_PER_FILE: usize = 5000;

fn visible_objects(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            visible_objects(&p, out);
        } else {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // The object sink's contract for a local directory: an object appears whole under its
            // final name; a kill mid-write can leave a staging file `<name>#<digits>`, which no
            // object name ends with and object_store listings skip.
            let staging = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if staging || name.starts_with('.') {
                continue;
            }
            assert!(
                name.ends_with(".ndjson") || name.ends_with(".ndjson.gz"),
                "unexpected file in the output: {name}"
            );
            out.push(p);
        }
    }
}

fn job(input: &Path, out: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "../examples/configs/sink-local.toml",
            "--workers",
            &WORKERS.to_string(),
        ])
        .args([
            "--set",
            &format!("source.path={}/*.ndjson", input.display()),
        ])
        .args(["--set", &format!("source.state_dir={}", state.display())])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        .args(["--set", "sink.batch.max_records=50"])
        .args([
            "--set",
            &format!("pipeline.epoch.max_records={EPOCH_RECORDS}"),
        ])
        .args([
            "--set",
            &format!("pipeline.in_flight.max_epochs={IN_FLIGHT_EPOCHS}"),
        ])
        .args([
            "--set",
            &format!("pipeline.in_flight.max_unacknowledged_epochs={IN_FLIGHT_EPOCHS}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

use checkpoints::At;

/// Every record written so far, by where it was read, with how many copies are visible.
fn written(out: &Path, at: &BTreeMap<String, At>) -> BTreeMap<At, u32> {
    let mut seen = BTreeMap::new();
    let mut objs = Vec::new();
    visible_objects(out, &mut objs);
    for p in &objs {
        let lines =
            read_object_lines(p).unwrap_or_else(|e| panic!("partial object {}: {e}", p.display()));
        for line in lines {
            let m = sluice::Message::from_json_line(line.as_bytes()).unwrap();
            let where_ = match (m.attribute("uri"), m.attribute("error_type")) {
                (_, Some("ReadInput")) => {
                    let file = Path::new(m.attribute("input_file").unwrap());
                    (
                        file.file_name().unwrap().to_string_lossy().into_owned(),
                        m.attribute("input_line").unwrap().parse().unwrap(),
                    )
                }
                (Some(uri), _) => {
                    let key = format!("{uri}|{}", m.attribute("submission_timestamp").unwrap());
                    at.get(&key)
                        .unwrap_or_else(|| panic!("a record that is not in the input: {line}"))
                        .clone()
                }
                (None, _) => panic!("record without uri: {line}"),
            };
            *seen.entry(where_).or_default() += 1;
        }
    }
    seen
}

#[test]
fn five_sigkills_with_a_state_dir_lose_nothing_and_duplicate_at_most_the_in_flight_bound() {
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (set SLUICE_CRASH_SEED to repeat)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state) = (
        tmp.path().join("in"),
        tmp.path().join("out"),
        tmp.path().join("state"),
    );
    // Two files, so both workers read; every record's key says where it is.
    let (at, expected) = checkpoints::write_inputs(&input, &[11, 12], RECORDS_PER_FILE);

    let mut exposures = Vec::new();
    for kill in 1..=KILLS {
        // a random point: once 100 to 350 more lines are acknowledged, and 0 to 10 ms later
        let more = 100 + u64::from(rng.next_u32() % 251);
        let jitter = Duration::from_millis(u64::from(rng.next_u32() % 11));
        let target = checkpoints::acknowledged_total(&state) + more;
        let mut child = job(&input, &out, &state).spawn().unwrap();
        let running = checkpoints::run_until_acknowledged(
            &mut child,
            &state,
            target,
            Duration::from_secs(60),
        );
        std::thread::sleep(jitter);
        let running = running && child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            running,
            "run {kill} ended before it could be killed: the input is too small to prove anything"
        );
        // What the restart will read again: records written but past the acknowledged lines.
        let acked = checkpoints::acknowledged(&state);
        let seen = written(&out, &at);
        let exposed = seen.keys().filter(|at| !acked.contains(at)).count();
        let copies: u32 = seen.values().sum();
        eprintln!(
            "kill {kill}: {more} more lines acknowledged + {jitter:?}; acknowledged lines {acked:?}; {} records written ({copies} copies); {exposed} written but not acknowledged (bound {IN_FLIGHT_BOUND})",
            seen.len()
        );
        assert!(
            exposed <= IN_FLIGHT_BOUND,
            "kill {kill} exposes {exposed} records to a re-read, more than the in-flight bound {IN_FLIGHT_BOUND}"
        );
        exposures.push(exposed);
    }

    let status = job(&input, &out, &state).status().unwrap();
    assert!(status.success(), "the last run finishes: {status}");
    let seen = written(&out, &at);
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
        "{} records, missing 0, {duplicates} duplicates after {KILLS} kills (per kill at most {:?} of bound {IN_FLIGHT_BOUND}: {IN_FLIGHT_EPOCHS} epochs x {EPOCH_RECORDS} records x {WORKERS} workers)",
        expected.len(),
        exposures.iter().max(),
    );
    assert!(
        duplicates as usize <= exposed,
        "{duplicates} duplicates, but only {exposed} records were exposed by the kills"
    );
    assert!(
        checkpoints::acknowledged(&state).all_whole(),
        "every input file is acknowledged whole"
    );
}
