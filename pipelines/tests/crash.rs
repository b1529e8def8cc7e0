//! Crash safety: SIGKILL `sluice run` mid-run, run it again, and every input record is in the
//! outputs or the dead letters (duplicates allowed and counted), with no partial object visible.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;
use sluice_pipelines::generate::{Generator, Record};
use support::read_object_lines;

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
                name.ends_with(".ndjson.gz"),
                "unexpected file in the output: {name}"
            );
            out.push(p);
        }
    }
}

fn run(input: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "../examples/configs/decoder-local.toml",
            "--workers",
            "2",
        ])
        .args([
            "--set",
            &format!("source.path={}/*.ndjson", input.display()),
        ])
        .args(["--set", "decoder.schemas=../schemas/json"])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        .args(["--set", "sink.batch.max_records=50"])
        .args(["--set", "pipeline.epoch.max_records=50"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

#[test]
fn sigkill_mid_run_then_restart_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    // Two files, so both workers read.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for (i, seed) in [11u64, 12].iter().enumerate() {
        let name = input.join(format!("part{i}.ndjson"));
        let mut buf = Vec::new();
        for (line, r) in Generator::new(*seed, 0.1).take(1500).enumerate() {
            match &r {
                Record::Message(m) => {
                    expected.insert(format!(
                        "{}|{}",
                        m.attribute("uri").unwrap(),
                        m.attribute("submission_timestamp").unwrap()
                    ));
                }
                Record::Unframable(_) => {
                    expected.insert(format!("{}:{}", name.display(), line + 1));
                }
            }
            r.write_json_line(&mut buf);
        }
        std::fs::write(&name, buf).unwrap();
    }

    let mut child = run(&input, &out).spawn().unwrap();
    let mut killed_mid_run = false;
    loop {
        let mut objs = Vec::new();
        visible_objects(&out, &mut objs);
        if !objs.is_empty() {
            killed_mid_run = child.try_wait().unwrap().is_none();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        killed_mid_run,
        "the job ended before it could be killed: this run proves nothing about crashes"
    );
    let mut before = Vec::new();
    visible_objects(&out, &mut before);
    for p in &before {
        read_object_lines(p).unwrap_or_else(|e| panic!("partial object {}: {e}", p.display()));
    }

    let status = run(&input, &out).status().unwrap();
    assert!(status.success());

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut objs = Vec::new();
    visible_objects(&out, &mut objs);
    for p in &objs {
        for line in read_object_lines(p).unwrap() {
            let m = sluice::Message::from_json_line(line.as_bytes()).unwrap();
            let key = match (m.attribute("uri"), m.attribute("error_type")) {
                (_, Some("ReadInput")) => format!(
                    "{}:{}",
                    m.attribute("input_file").unwrap(),
                    m.attribute("input_line").unwrap()
                ),
                (Some(uri), _) => format!("{uri}|{}", m.attribute("submission_timestamp").unwrap()),
                (None, _) => panic!("record without uri: {line}"),
            };
            *seen.entry(key).or_default() += 1;
        }
    }
    let missing: Vec<&String> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "killed mid-run: {killed_mid_run}; {} objects before the kill; {} records, {duplicates} duplicates after restart",
        before.len(),
        expected.len()
    );
}
