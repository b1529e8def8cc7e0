//! Staging leftovers of a local directory sink: a run killed (SIGKILL) while objects are being
//! written leaves hidden staging files (`.<name>.staging`, `.<name>.staging#<n>`); the next run
//! of the same job removes them, and its output is complete. Final names never start with `.`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use sluice_pipelines::generate::{Generator, Record};
use support::read_object_lines;

const RECORDS: usize = 5_000;

/// Every file under `dir`, split into (final objects, staging files).
fn files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut objects, mut staging) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                assert!(
                    name.contains(".staging"),
                    "a hidden file that is not a staging file: {name}"
                );
                staging.push(p);
            } else {
                assert!(
                    name.ends_with(".ndjson.gz") && !name.contains('#'),
                    "a visible file that is not a final object: {name}"
                );
                objects.push(p);
            }
        }
    }
    (objects, staging)
}

fn job(input: &Path, out: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "../examples/configs/sink-local.toml",
            "--workers",
            "2",
        ])
        .args(["--set", &format!("source.path={}", input.display())])
        .args(["--set", &format!("source.state_dir={}", state.display())])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        // small parts: objects go up part by part, so a staging file exists most of the time
        .args(["--set", "sink.batch.part_size=16KB"])
        .args(["--set", "pipeline.epoch.max_records=500"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

fn key(m: &sluice::Message) -> String {
    format!(
        "{}|{}",
        m.attribute("uri").unwrap(),
        m.attribute("submission_timestamp").unwrap()
    )
}

#[test]
fn a_restart_removes_the_staging_files_a_killed_run_left_and_completes_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state) = (
        tmp.path().join("in.ndjson"),
        tmp.path().join("out"),
        tmp.path().join("state"),
    );
    let mut expected = BTreeSet::new();
    let mut buf = Vec::new();
    for r in Generator::new(7, 0.0).take(RECORDS) {
        if let Record::Message(m) = &r {
            expected.insert(key(m));
        }
        r.write_json_line(&mut buf);
    }
    assert_eq!(expected.len(), RECORDS, "generated keys are unique");
    std::fs::write(&input, buf).unwrap();

    // Kill runs the moment a staging file is seen, until one leaves a staging file behind.
    let mut left = Vec::new();
    for attempt in 1..=10 {
        let mut child = job(&input, &out, &state).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = false;
        while files(&out).1.is_empty() {
            if child.try_wait().unwrap().is_some() {
                ended = true;
                break;
            }
            assert!(Instant::now() < deadline, "no staging file within 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            !ended,
            "run {attempt} ended before it could be killed: the input is too small"
        );
        left = files(&out).1;
        eprintln!("kill {attempt}: staging files left {left:?}");
        if !left.is_empty() {
            break;
        }
    }
    assert!(
        !left.is_empty(),
        "no kill left a staging file behind: the test proves nothing"
    );

    let status = job(&input, &out, &state).status().unwrap();
    assert!(status.success(), "the restart finishes: {status}");
    let (objects, staging) = files(&out);
    assert!(
        staging.is_empty(),
        "staging files remain after a restart: {staging:?}"
    );
    let mut seen = BTreeSet::new();
    for p in &objects {
        let lines =
            read_object_lines(p).unwrap_or_else(|e| panic!("partial object {}: {e}", p.display()));
        for line in lines {
            let m = sluice::Message::from_json_line(line.as_bytes()).unwrap();
            assert!(m.attribute("error_type").is_none(), "a dead letter: {line}");
            seen.insert(key(&m));
        }
    }
    let missing = expected.difference(&seen).count();
    assert_eq!(missing, 0, "records missing after the restart");
}

#[test]
fn a_restart_leaves_other_jobs_files_and_final_objects_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state) = (
        tmp.path().join("in.ndjson"),
        tmp.path().join("out"),
        tmp.path().join("state"),
    );
    let mut buf = Vec::new();
    for r in Generator::new(8, 0.0).take(100) {
        r.write_json_line(&mut buf);
    }
    std::fs::write(&input, buf).unwrap();
    let raw = out.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let keep = [
        ".decoder-100-w0000-000001.ndjson.gz.staging",
        "notes.txt#1",
        ".hidden",
    ];
    let remove = [
        ".sink-100-w0000-000001.ndjson.gz.staging#1",
        ".sink-100-w0001-000003.ndjson.gz.staging",
        ".sink-100-w0007-000003.ndjson.gz.staging",
        "sink-100-w0000-000002.ndjson.gz#2",
    ];
    for f in keep.iter().chain(&remove) {
        std::fs::write(raw.join(f), b"partial").unwrap();
    }
    let status = job(&input, &out, &state).status().unwrap();
    assert!(status.success(), "the run finishes: {status}");
    for f in keep {
        assert!(raw.join(f).exists(), "{f} was removed");
    }
    for f in remove {
        assert!(!raw.join(f).exists(), "{f} remains");
    }
}
