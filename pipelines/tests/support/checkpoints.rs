//! The file crash tests' input, and what a file job's state directory says is acknowledged:
//! the tests kill a run once enough is acknowledged, and check that nothing acknowledged is
//! missing after restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use sluice_pipelines::generate::{Generator, Record};

/// Where an input record is: (file name, 1-based line).
pub type At = (String, u64);

/// Writes one generated input file per seed (`part<i>.ndjson`, so every worker reads one) and
/// returns where each message is, by its `uri|submission_timestamp` key, and every record's
/// place (messages and unreadable lines alike).
pub fn write_inputs(
    input: &Path,
    seeds: &[u64],
    records_per_file: usize,
) -> (BTreeMap<String, At>, BTreeSet<At>) {
    std::fs::create_dir_all(input).unwrap();
    let mut at = BTreeMap::new();
    let mut expected = BTreeSet::new();
    for (i, seed) in seeds.iter().enumerate() {
        let name = format!("part{i}.ndjson");
        let mut buf = Vec::new();
        for (line, r) in Generator::new(*seed, 0.1)
            .take(records_per_file)
            .enumerate()
        {
            let here = (name.clone(), line as u64 + 1);
            if let Record::Message(m) = &r {
                let key = format!(
                    "{}|{}",
                    m.attribute("uri").unwrap(),
                    m.attribute("submission_timestamp").unwrap()
                );
                assert!(
                    at.insert(key, here.clone()).is_none(),
                    "generated keys are unique"
                );
            }
            expected.insert(here);
            r.write_json_line(&mut buf);
        }
        std::fs::write(input.join(&name), buf).unwrap();
    }
    (at, expected)
}

/// Lines acknowledged per input file name (`u64::MAX`: the whole file).
pub fn acknowledged(state: &Path) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(state) else {
        return acked;
    };
    for e in entries {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".checkpoint.json") {
            continue; // a temporary file a kill left behind
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
            .unwrap_or_else(|e| panic!("torn checkpoint {}: {e}", p.display()));
        let name = Path::new(v["path"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let lines = if v["complete"].as_bool().unwrap() {
            u64::MAX
        } else {
            v["lines"].as_u64().unwrap()
        };
        acked.insert(name, lines);
    }
    acked
}

/// Lines acknowledged in all, a whole file counted as `records_per_file`.
pub fn acknowledged_total(state: &Path, records_per_file: usize) -> u64 {
    acknowledged(state)
        .values()
        .map(|l| (*l).min(records_per_file as u64))
        .sum()
}

/// Waits until `target` lines are acknowledged, or the child ends by itself; true if it still
/// runs. Fails the test after `patience` without reaching the target.
pub fn run_until_acknowledged(
    child: &mut Child,
    state: &Path,
    target: u64,
    records_per_file: usize,
    patience: Duration,
) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if acknowledged_total(state, records_per_file) >= target {
            return child.try_wait().unwrap().is_none();
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "no progress for {} s",
            patience.as_secs()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
