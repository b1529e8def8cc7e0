//! Staging names of a local directory sink, and the removal of the staging files that a killed
//! run left behind.
//!
//! An object `<dir>/<name>` is written as the hidden file `<dir>/.<name>.staging` (through
//! `LocalFileSystem`, which itself writes `<dir>/.<name>.staging#<n>` first), then renamed to
//! its final name once whole. Readers that skip hidden names (Spark, Hadoop, Hive: names
//! starting with `.` or `_`) never see a partial object, even after a crash.
//!
//! On opening, a writer removes the staging leftovers of its own worker index from earlier runs
//! of the same job under the template's fixed prefix (worker 0 also those of worker indices
//! the current run does not have): only names made by [`ObjectNames`] with another run id.
//! Files of the current run, of other jobs and any other file are never touched, so processes
//! of a cluster (each with its own run id and worker indices) never remove each other's files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::writer::ObjectNames;

/// The suffix of a staging name, after the final name.
pub(crate) const STAGING_SUFFIX: &str = ".staging";

/// The staging name of object `name` (`a/b/x.ndjson` -> `a/b/.x.ndjson.staging`).
pub(crate) fn staging_name(name: &str) -> String {
    match name.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/.{file}{STAGING_SUFFIX}"),
        None => format!(".{name}{STAGING_SUFFIX}"),
    }
}

/// If `file` (a file name, no directory) is a staging file of job `job` (as cleaned by
/// [`ObjectNames`]), the run id and worker index in it.
///
/// Staging files are `.<final>.staging`, `.<final>.staging#<n>` and, from versions that wrote
/// in place, `<final>#<n>`; `<final>` holds `<job>-<run>-w<worker>-<seq>.` after whatever the
/// template's last segment put before it.
fn parse_leftover<'a>(file: &'a str, job: &str) -> Option<(&'a str, usize)> {
    let (base, hash_suffix) = match file.rsplit_once('#') {
        Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => (b, true),
        _ => (file, false),
    };
    let fin = match base
        .strip_prefix('.')
        .and_then(|b| b.strip_suffix(STAGING_SUFFIX))
    {
        Some(f) => f,
        None if hash_suffix => base,
        None => return None,
    };
    let marker = format!("{job}-");
    let mut from = 0;
    while let Some(i) = fin[from..].find(&marker) {
        let rest = &fin[from + i + marker.len()..];
        if let Some(found) = parse_stem_tail(rest) {
            return Some(found);
        }
        from += i + 1;
    }
    None
}

/// `<run digits>-w<worker digits>-<seq digits>.` at the start of `s`.
fn parse_stem_tail(s: &str) -> Option<(&str, usize)> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let run_len = digits(s);
    if run_len == 0 {
        return None;
    }
    let (run, rest) = s.split_at(run_len);
    let rest = rest.strip_prefix("-w")?;
    let worker_len = digits(rest);
    let worker = rest[..worker_len].parse().ok()?;
    let rest = rest[worker_len..].strip_prefix('-')?;
    let seq_len = digits(rest);
    (seq_len > 0 && rest[seq_len..].starts_with('.')).then_some((run, worker))
}

/// The leftovers found by one scan, by worker index.
type Found = HashMap<usize, Vec<PathBuf>>;

/// Staging leftovers under a local sink's directory, scanned once per run of a process (the
/// first writer to open scans, each writer removes its own). Clones share the scan.
#[derive(Clone, Debug)]
pub(crate) struct Leftovers {
    root: PathBuf,
    scanned: Arc<Mutex<Option<(String, Found)>>>,
}

impl Leftovers {
    /// Leftovers of sinks writing under `root`.
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Leftovers {
            root: root.into(),
            scanned: Arc::default(),
        }
    }

    /// Removes the leftovers of earlier runs that are this writer's to remove: those of
    /// `worker`, and for worker 0 those of workers `>= peers`. Looks under `fixed_prefix` (the
    /// template's). Returns how many files were removed; a file that cannot be removed is
    /// logged and left.
    pub(crate) fn remove_for(
        &self,
        names: &ObjectNames,
        fixed_prefix: &str,
        worker: usize,
        peers: usize,
    ) -> usize {
        let mine: Vec<PathBuf> = {
            let mut scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
            if scanned.as_ref().map(|(run, _)| run.as_str()) != Some(names.run()) {
                let found = self.scan(names, fixed_prefix);
                *scanned = Some((names.run().to_string(), found));
            }
            let Some((_, found)) = scanned.as_mut() else {
                return 0;
            };
            let keys: Vec<usize> = found
                .keys()
                .copied()
                .filter(|w| *w == worker || (worker == 0 && *w >= peers))
                .collect();
            keys.into_iter()
                .flat_map(|w| found.remove(&w).unwrap_or_default())
                .collect()
        };
        let mut removed = 0;
        for path in mine {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "cannot remove a staging file left by an earlier run"
                ),
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                worker,
                dir = %self.root.display(),
                "removed staging files left by earlier runs"
            );
        }
        removed
    }

    /// Every staging leftover of `names`' job from another run, under `fixed_prefix`.
    fn scan(&self, names: &ObjectNames, fixed_prefix: &str) -> Found {
        let mut found = Found::new();
        let start = self.root.join(fixed_prefix.trim_end_matches('/'));
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot look for staging files");
                    continue;
                }
            };
            for entry in entries.flatten() {
                // Symbolic links are neither followed nor removed.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                if let Some((run, worker)) = parse_leftover(name, names.job()) {
                    if run != names.run() {
                        found.entry(worker).or_default().push(entry.path());
                    }
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_hidden_beside_the_object() {
        assert_eq!(staging_name("a/b/x.ndjson"), "a/b/.x.ndjson.staging");
        assert_eq!(staging_name("x.ndjson.gz"), ".x.ndjson.gz.staging");
    }

    #[test]
    fn recognises_only_staging_names_of_its_job() {
        let job = "decoder";
        let fin = "decoder-1700000000000000001-w0003-000012.ndjson.gz";
        assert_eq!(
            parse_leftover(&format!(".{fin}.staging"), job),
            Some(("1700000000000000001", 3))
        );
        assert_eq!(
            parse_leftover(&format!(".{fin}.staging#1"), job),
            Some(("1700000000000000001", 3))
        );
        assert_eq!(
            parse_leftover(&format!("{fin}#12"), job),
            Some(("1700000000000000001", 3))
        );
        // a template whose last segment is a name prefix
        assert_eq!(
            parse_leftover(&format!(".part-{fin}.staging"), job),
            Some(("1700000000000000001", 3))
        );
        // final objects, other jobs, other files: never
        assert_eq!(parse_leftover(fin, job), None);
        assert_eq!(parse_leftover(&format!(".{fin}"), job), None);
        assert_eq!(parse_leftover(&format!(".{fin}.staging"), "sink"), None);
        assert_eq!(parse_leftover(&format!("{fin}#"), job), None);
        assert_eq!(parse_leftover(&format!("{fin}#1a"), job), None);
        assert_eq!(parse_leftover(".decoder-x-w1-2.json.staging", job), None);
        assert_eq!(parse_leftover("notes.staging", job), None);
    }

    #[test]
    fn removes_its_own_leftovers_of_other_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("out/a");
        std::fs::create_dir_all(&sub).unwrap();
        let file = |name: &str| {
            std::fs::write(sub.join(name), b"x").unwrap();
        };
        let old0 = ".job-100-w0000-000001.ndjson.staging";
        let old0b = "job-100-w0000-000002.ndjson#1";
        let old1 = ".job-100-w0001-000001.ndjson.staging#3";
        let old5 = ".job-100-w0005-000001.ndjson.staging";
        let current = ".job-200-w0000-000001.ndjson.staging#1";
        let other_job = ".other-100-w0000-000001.ndjson.staging";
        let done = "job-100-w0000-000000.ndjson";
        for f in [old0, old0b, old1, old5, current, other_job, done] {
            file(f);
        }
        let left = Leftovers::new(dir.path());
        let names = |w| ObjectNames::new("job", "200", w);
        let exists = |f: &str| sub.join(f).exists();
        // worker 1 of 2 removes only its own
        assert_eq!(left.remove_for(&names(1), "out/", 1, 2), 1);
        assert!(!exists(old1) && exists(old0) && exists(old5));
        // worker 0 of 2: its own and those of workers the run does not have
        assert_eq!(left.remove_for(&names(0), "out/", 0, 2), 3);
        for f in [old0, old0b, old5] {
            assert!(!exists(f), "{f}");
        }
        for f in [current, other_job, done] {
            assert!(exists(f), "{f}");
        }
        // a prefix that does not exist yet is nothing to clean
        let fresh = Leftovers::new(dir.path());
        assert_eq!(fresh.remove_for(&names(0), "nowhere/", 0, 1), 0);
    }
}
