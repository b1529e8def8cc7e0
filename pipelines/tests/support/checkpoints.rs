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

/// What a file job's state directory says is acknowledged: per input file name, line ranges
/// (a file read whole has one, from its first line; a large file read in splits has one per
/// split, named `path@start` in its checkpoint).
#[derive(Debug, Default)]
pub struct Acknowledged {
    /// (file name, first line of the split) -> (last line acknowledged, the split is whole)
    ranges: BTreeMap<(String, u64), (u64, bool)>,
}

impl Acknowledged {
    /// Whether the record at `at` is acknowledged.
    pub fn contains(&self, (file, line): &At) -> bool {
        self.ranges
            .range((file.clone(), 0)..=(file.clone(), *line))
            .next_back()
            .is_some_and(|(_, (last, _))| line <= last)
    }

    /// Lines acknowledged in all.
    pub fn total(&self) -> u64 {
        self.ranges
            .iter()
            .map(|((_, first), (last, _))| (last + 1).saturating_sub(*first))
            .sum()
    }

    /// Whether every checkpoint says its input is acknowledged whole, and there is one.
    pub fn all_whole(&self) -> bool {
        !self.ranges.is_empty() && self.ranges.values().all(|(_, whole)| *whole)
    }
}

/// Reads the state directory.
pub fn acknowledged(state: &Path) -> Acknowledged {
    let mut acked = Acknowledged::default();
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
        let key = v["path"].as_str().unwrap();
        // a split's checkpoint is named `path@start`: its lines start after the newlines
        // before `start`
        let (path, first) = match key.rsplit_once('@') {
            Some((path, start)) if start.parse::<usize>().is_ok() => {
                let start: usize = start.parse().unwrap();
                let bytes = std::fs::read(path).unwrap();
                let before = bytes[..start].iter().filter(|b| **b == b'\n').count();
                (path, before as u64 + 1)
            }
            _ => (key, 1),
        };
        let name = Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let last = v["lines"].as_u64().unwrap();
        let whole = v["complete"].as_bool().unwrap();
        acked.ranges.insert((name, first), (last, whole));
    }
    acked
}

/// Lines acknowledged in all.
pub fn acknowledged_total(state: &Path) -> u64 {
    acknowledged(state).total()
}

/// Waits until `target` lines are acknowledged, or the child ends by itself; true if it still
/// runs. Fails the test after `patience` without reaching the target.
pub fn run_until_acknowledged(
    child: &mut Child,
    state: &Path,
    target: u64,
    patience: Duration,
) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if acknowledged_total(state) >= target {
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
