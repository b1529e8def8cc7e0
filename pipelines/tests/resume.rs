//! Resumable file jobs, the user's side, through the binary: with no state setting at all, a
//! file job keeps its positions in `.sluice-state/<config name>/` beside its config, so a
//! re-run after `kill -9` resumes (duplicates at most the in-flight bound, nothing missing), a
//! re-run of a finished job reads nothing and says so, `--from-start` reads everything, and
//! `sluice state show|reset` show and forget the positions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[path = "support/checkpoints.rs"]
mod checkpoints;
mod support;

use checkpoints::At;

const WORKERS: usize = 2;
const EPOCH_RECORDS: usize = 50;
const IN_FLIGHT_EPOCHS: usize = 4;
/// Records read but not acknowledged at any moment, at most: what one kill may duplicate.
const IN_FLIGHT_BOUND: usize = IN_FLIGHT_EPOCHS * EPOCH_RECORDS * WORKERS;
const RECORDS_PER_FILE: usize = 4000;

/// A sink job (files -> local objects) whose config lives in `dir/jobs/nightly.toml` and sets
/// no state directory.
fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"job = "sink"
workers = {WORKERS}
[source]
type = "file"
path = "{input}/*.ndjson"
[sink]
type = "file"
dir = "{out}"
path = "raw/"
batch = {{ max_records = 50 }}
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/"
[pipeline]
epoch = {{ max_records = {EPOCH_RECORDS} }}
in_flight = {{ max_epochs = {IN_FLIGHT_EPOCHS}, max_unacknowledged_epochs = {IN_FLIGHT_EPOCHS} }}
"#,
        input = dir.join("in").display(),
        out = dir.join("out").display(),
    );
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    let path = dir.join("jobs/nightly.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sluice(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.args(args).env("RUST_LOG", "warn");
    c
}

fn output(args: &[&str]) -> (Output, String) {
    let out = sluice(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Every record written so far (outputs and dead letters), by where it was read, with its
/// number of copies.
fn written(out: &Path, at: &BTreeMap<String, At>) -> BTreeMap<At, u32> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // staging files of a killed run are hidden or end in `#<n>`
            if name.starts_with('.') || name.contains('#') {
                continue;
            }
            for line in support::read_object_lines(&p).unwrap() {
                let m = sluice::Message::from_json_line(line.as_bytes()).unwrap();
                let here = match m.attribute("error_type") {
                    Some("ReadInput") => (
                        Path::new(m.attribute("input_file").unwrap())
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                        m.attribute("input_line").unwrap().parse().unwrap(),
                    ),
                    _ => {
                        let key = format!(
                            "{}|{}",
                            m.attribute("uri").unwrap(),
                            m.attribute("submission_timestamp").unwrap()
                        );
                        at.get(&key)
                            .unwrap_or_else(|| panic!("not an input record: {line}"))
                            .clone()
                    }
                };
                *seen.entry(here).or_default() += 1;
            }
        }
    }
    seen
}

#[test]
fn a_killed_file_job_resumes_by_default_and_a_finished_one_reads_nothing_unless_from_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let cfg = config.to_str().unwrap();
    let state = tmp.path().join("jobs/.sluice-state/nightly");
    let out = tmp.path().join("out");
    let (at, expected) =
        checkpoints::write_inputs(&tmp.path().join("in"), &[21, 22], RECORDS_PER_FILE);

    // `state show` before any run: nothing saved, nothing created
    let (shown, text) = output(&["state", "show", cfg]);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains("does not exist yet"), "{text}");
    assert!(text.contains("no checkpoint"), "{text}");
    assert!(!state.exists(), "show creates nothing");

    // kill -9 once part of the input is acknowledged in the default state directory
    let mut child = sluice(&["run", "--no-progress", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running =
        checkpoints::run_until_acknowledged(&mut child, &state, 500, Duration::from_secs(120));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        running,
        "the run ended before it could be killed: the input is too small to prove anything"
    );
    let acked = checkpoints::acknowledged(&state);
    assert!(
        acked.total() < 2 * RECORDS_PER_FILE as u64,
        "killed mid-input: {acked:?}"
    );
    let exposed = written(&out, &at)
        .keys()
        .filter(|at| !acked.contains(at))
        .count();
    assert!(
        exposed <= IN_FLIGHT_BOUND,
        "{exposed} records written but not acknowledged, bound {IN_FLIGHT_BOUND}"
    );

    let (shown, text) = output(&["state", "show", cfg]);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains("resumes after line"), "{text}");

    // the re-run resumes: nothing missing, duplicates within what the kill exposed
    let (rerun, log) = output(&["run", "--no-progress", cfg]);
    assert_eq!(rerun.status.code(), Some(0), "{log}");
    assert!(
        log.contains("resumed after line"),
        "the summary says so: {log}"
    );
    let seen = written(&out, &at);
    let missing = expected.iter().filter(|k| !seen.contains_key(*k)).count();
    assert_eq!(missing, 0, "records lost");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "acknowledged at the kill {acked:?}; {exposed} exposed; {duplicates} duplicates (bound {IN_FLIGHT_BOUND})"
    );
    assert!(
        duplicates as usize <= exposed,
        "{duplicates} duplicates, {exposed} exposed"
    );
    let total: u32 = seen.values().sum();

    // a re-run of the finished job reads nothing, and says why
    let (again, log) = output(&["run", "--no-progress", cfg]);
    assert_eq!(again.status.code(), Some(0), "{log}");
    assert!(log.contains("read 0 records"), "{log}");
    assert!(
        log.contains("2 file(s) finished by an earlier run: skipped"),
        "{log}"
    );
    assert!(log.contains("--from-start"), "{log}");
    assert_eq!(written(&out, &at).values().sum::<u32>(), total);

    let (shown, text) = output(&["state", "show", cfg]);
    assert!(shown.status.success(), "{text}");
    assert_eq!(text.matches("finished").count(), 2, "{text}");

    // --from-start reads every record again
    let (from_start, log) = output(&["run", "--no-progress", "--from-start", cfg]);
    assert_eq!(from_start.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("read {} records", 2 * RECORDS_PER_FILE)),
        "{log}"
    );
    assert!(log.contains("checkpoint(s) forgotten"), "{log}");
    assert_eq!(
        written(&out, &at).values().sum::<u32>(),
        total + 2 * RECORDS_PER_FILE as u32
    );

    // `state reset` forgets: the next run reads everything
    let (reset, text) = output(&["state", "reset", cfg]);
    assert!(reset.status.success(), "{text}");
    assert!(text.contains("removed 2 checkpoint(s)"), "{text}");
    let (shown, text) = output(&["state", "show", cfg]);
    assert_eq!(text.matches("no checkpoint").count(), 2, "{text}");
    assert!(shown.status.success());
    let (after_reset, log) = output(&["run", "--no-progress", cfg]);
    assert_eq!(after_reset.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("read {} records", 2 * RECORDS_PER_FILE)),
        "{log}"
    );
}

#[test]
fn data_dir_moves_the_state_and_a_relative_one_is_beside_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path());
    let cfg = config.to_str().unwrap();
    checkpoints::write_inputs(&tmp.path().join("in"), &[5], 10);
    let (run, log) = output(&["run", "--no-progress", cfg, "--set", "data_dir=state-here"]);
    assert_eq!(run.status.code(), Some(0), "{log}");
    let acked = checkpoints::acknowledged(&tmp.path().join("jobs/state-here"));
    assert!(acked.all_whole() && acked.total() == 10, "{log}: {acked:?}");
    assert!(!tmp.path().join("jobs/.sluice-state").exists());
}
