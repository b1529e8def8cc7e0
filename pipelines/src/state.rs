//! Where a job keeps its state between runs, and what a run resumes: the user's side of the
//! file source's checkpoints (`sluice_transforms::io::file`).
//!
//! A file job persists, per input file, what every sink made durable. The directory is, in
//! order: `source.state_dir` if the config gives it, else the top-level `data_dir` (relative to
//! the config file's folder), else `.sluice-state/<config file stem>/` beside the config file.
//! So a re-run of the same config after Ctrl-C, SIGTERM or a crash resumes where the durable
//! output ends, and a finished input is not read again unless the run says `--from-start`.
//!
//! A run holds a lock file in the directory (`run.lock`, or `run.process-<i>.lock` for process
//! `i` of a cluster): a second run of the same job on the same host refuses to start instead of
//! reading the same input twice. The lock is the operating system's (`flock`), so a killed run
//! leaves none behind.
//!
//! ```
//! use sluice_pipelines::config::{self, Overrides};
//! use sluice_pipelines::state;
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("in.ndjson"), "").unwrap();
//! let text = format!(
//!     "job = \"sink\"\n[source]\ntype = \"file\"\npath = \"{}/in.ndjson\"\n[sink]\ntype = \"stdout\"\n[dead_letter]\ntype = \"stderr\"\n",
//!     dir.path().display()
//! );
//! let mut job = config::parse_str(&text, &Overrides::new()).unwrap();
//! let at = state::apply(&mut job, &dir.path().join("jobs/nightly.toml")).unwrap();
//! assert_eq!(at, dir.path().join("jobs/.sluice-state/nightly"));
//! ```

use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use sluice_transforms::io::file::{FileCheckpoint, FileError, FileSource, InputState};

use crate::config::{JobConfig, SourceConfig};

/// The folder, beside the config file, that holds the default state directories.
pub const DEFAULT_STATE_FOLDER: &str = ".sluice-state";

/// Why a job's state cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another run holds the directory's lock.
    #[error("state directory {path} is in use by another run of this job{pid}: two runs would read the same input twice; wait for it to end or stop it")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// ` (pid N)` when the lock file names it.
        pid: String,
    },
    /// The directory or its lock file cannot be created or locked.
    #[error("cannot use state directory {path}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file source's checkpoints cannot be read or removed.
    #[error(transparent)]
    File(#[from] FileError),
}

/// The state directory of a job on files (`None` for other sources, which keep their
/// positions in the service: Kafka offsets, Pub/Sub acknowledgements), as the module doc
/// says; `config_path` is the config file the job was read from.
pub fn state_dir(config: &JobConfig, config_path: &Path) -> Option<PathBuf> {
    let SourceConfig::File(source) = &config.source else {
        return None;
    };
    if let Some(dir) = &source.state_dir {
        return Some(dir.clone());
    }
    let folder = config_path.parent().unwrap_or(Path::new(""));
    Some(match &config.data_dir {
        Some(dir) => folder.join(dir),
        None => {
            let stem = config_path
                .file_stem()
                .map_or_else(|| "job".into(), |s| s.to_string_lossy().into_owned());
            folder.join(DEFAULT_STATE_FOLDER).join(stem)
        }
    })
}

/// Sets a file job's `source.state_dir` to its [`state_dir`] and returns it (`None` for other
/// sources). Creates nothing.
pub fn apply(config: &mut JobConfig, config_path: &Path) -> Option<PathBuf> {
    let dir = state_dir(config, config_path)?;
    if let SourceConfig::File(source) = &mut config.source {
        source.state_dir = Some(dir.clone());
    }
    Some(dir)
}

/// The file source a file job's config describes (with its state directory), if it is one.
fn file_source(config: &JobConfig) -> Option<FileSource> {
    match &config.source {
        SourceConfig::File(c) => Some(c.source()),
        _ => None,
    }
}

/// A run's hold on its state directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Creates the state directory if missing and takes its lock for this run (`process`: the
/// index of this process in a cluster, whose processes each take their own).
pub fn lock(dir: &Path, process: Option<usize>) -> Result<RunLock, StateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(match process {
        Some(i) => format!("run.process-{i}.lock"),
        None => "run.lock".to_string(),
    });
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map_or_else(String::new, |p| format!(" (pid {p})"));
            return Err(StateError::InUse {
                path: dir.to_path_buf(),
                pid,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
    }
    // which process holds it, for the message above; the lock itself is what counts
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(RunLock { _file: file })
}

/// Forgets what a file job acknowledged (`sluice state reset`, `run --from-start`): removes its
/// checkpoints; returns how many.
pub fn reset(config: &JobConfig) -> Result<usize, StateError> {
    Ok(match file_source(config) {
        Some(source) => source.clear_state()?,
        None => 0,
    })
}

/// What a run of a file job resumes, taken before it reads (see [`Resumption::of`]).
#[derive(Clone, Debug, Default)]
pub struct Resumption {
    /// The state directory.
    pub dir: PathBuf,
    /// Files an earlier run finished: skipped.
    pub finished: Vec<PathBuf>,
    /// Files an earlier run stopped in: (path, lines or bytes already acknowledged, which).
    pub resumed: Vec<(PathBuf, u64, &'static str)>,
    /// Files that changed since their checkpoint: read again from the start.
    pub changed: Vec<PathBuf>,
    /// Files without a checkpoint.
    pub new: usize,
    /// `--from-start` removed this many checkpoints first.
    pub forgotten: Option<usize>,
}

impl Resumption {
    /// What the state directory says of each input file of a file job now (`None` for other
    /// sources).
    pub fn of(config: &JobConfig) -> Option<Result<Resumption, StateError>> {
        let source = file_source(config)?;
        let dir = source.state_dir()?.to_path_buf();
        Some(source.input_states().map_err(Into::into).map(|states| {
            let mut r = Resumption {
                dir,
                ..Resumption::default()
            };
            for (path, state) in states {
                match state {
                    InputState::At(c) if c.complete => r.finished.push(path),
                    InputState::At(c) => {
                        let (n, unit) = position(&c);
                        r.resumed.push((path, n, unit));
                    }
                    InputState::Changed => r.changed.push(path),
                    _ => r.new += 1,
                }
            }
            r
        }))
    }

    /// Whether the run reads nothing: every input was finished by an earlier run.
    pub fn nothing_to_read(&self) -> bool {
        !self.finished.is_empty()
            && self.resumed.is_empty()
            && self.changed.is_empty()
            && self.new == 0
    }

    /// Logs, as the run starts, what it resumes.
    pub fn log(&self) {
        if self.finished.is_empty() && self.resumed.is_empty() {
            tracing::info!(state = %self.dir.display(), "no input file to resume: reading from the start");
        } else {
            tracing::info!(
                state = %self.dir.display(),
                skipped = self.finished.len(),
                resumed = self.resumed.len(),
                "resuming where earlier runs stopped: files they finished are skipped (--from-start reads everything again)"
            );
        }
    }

    /// The lines the run's summary ends with: what was resumed or skipped, and how to read
    /// everything again.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(n) = self.forgotten {
            out.push_str(&format!(
                "  --from-start: {n} checkpoint(s) forgotten in {}; every input read from its start\n",
                self.dir.display()
            ));
        }
        if self.finished.is_empty() && self.resumed.is_empty() && self.changed.is_empty() {
            if self.forgotten.is_none() {
                out.push_str(&format!(
                    "  state: {} (nothing to resume: every input read from its start)\n",
                    self.dir.display()
                ));
            }
            return out;
        }
        out.push_str(&format!("  resumed from state {}:\n", self.dir.display()));
        if !self.finished.is_empty() {
            out.push_str(&format!(
                "    {} file(s) finished by an earlier run: skipped{}\n",
                self.finished.len(),
                if self.nothing_to_read() {
                    " (nothing to read; `--from-start` reads them again, `sluice state reset` forgets them)"
                } else {
                    ""
                }
            ));
        }
        for (path, n, unit) in self.resumed.iter().take(20) {
            out.push_str(&format!(
                "    resumed after {unit} {n}: {}\n",
                path.display()
            ));
        }
        if self.resumed.len() > 20 {
            out.push_str(&format!(
                "    ... and {} more resumed\n",
                self.resumed.len() - 20
            ));
        }
        for path in &self.changed {
            out.push_str(&format!(
                "    changed since its checkpoint, read again from the start: {}\n",
                path.display()
            ));
        }
        if self.new > 0 {
            out.push_str(&format!(
                "    {} file(s) without a checkpoint: read from the start\n",
                self.new
            ));
        }
        out
    }
}

/// How far a checkpoint goes: lines for line formats, else decompressed bytes.
fn position(c: &FileCheckpoint) -> (u64, &'static str) {
    if c.lines > 0 || c.offset == 0 {
        (c.lines, "line")
    } else {
        (c.offset, "byte")
    }
}

/// `sluice state show`: the state directory and, per input file, where a run would resume;
/// checkpoints of files no longer listed too.
pub fn show(config: &JobConfig) -> Result<String, StateError> {
    let Some(source) = file_source(config) else {
        return Ok("this job reads no files and keeps no state of its own: a Kafka source's positions are its consumer group's committed offsets, a Pub/Sub source's the subscription's acknowledgements, stdin is read once\n".to_string());
    };
    let Some(dir) = source.state_dir() else {
        return Ok("this job has no state directory\n".to_string());
    };
    let mut out = format!(
        "state directory {}{}\n",
        dir.display(),
        if dir.exists() {
            ""
        } else {
            " (does not exist yet: no run has saved anything)"
        }
    );
    let states = source.input_states()?;
    let listed: Vec<PathBuf> = states
        .iter()
        .map(|(p, _)| fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    for (path, state) in &states {
        let what = match state {
            InputState::At(c) if c.complete => "finished (skipped by a run)".to_string(),
            InputState::At(c) => {
                let (n, unit) = position(c);
                format!("resumes after {unit} {n}")
            }
            InputState::Changed => {
                "changed since its checkpoint (read again from the start)".to_string()
            }
            _ => "no checkpoint (read from the start)".to_string(),
        };
        out.push_str(&format!("  {}: {what}\n", path.display()));
    }
    let stale: Vec<(PathBuf, FileCheckpoint)> = source
        .stored_checkpoints()?
        .into_iter()
        .filter(|(p, _)| !listed.contains(p))
        .collect();
    if !stale.is_empty() {
        out.push_str("checkpoints of files the input no longer lists:\n");
        for (path, c) in stale {
            let (n, unit) = position(&c);
            out.push_str(&format!(
                "  {}: {}\n",
                path.display(),
                if c.complete {
                    "finished".to_string()
                } else {
                    format!("at {unit} {n}")
                }
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Overrides};

    fn job(extra: &str) -> JobConfig {
        config::parse_str(
            // an input that exists: parsing checks that the pattern matches
            &format!(
                "job = \"sink\"\n{extra}\n[source]\ntype = \"file\"\npath = \"{}/Cargo.toml\"\n[sink]\ntype = \"stdout\"\n[dead_letter]\ntype = \"stderr\"\n",
                env!("CARGO_MANIFEST_DIR")
            ),
            &Overrides::new(),
        )
        .unwrap()
    }

    #[test]
    fn the_state_dir_is_source_state_dir_then_data_dir_then_the_default() {
        let cfg = Path::new("/etc/sluice/nightly.toml");
        assert_eq!(
            state_dir(&job(""), cfg).unwrap(),
            Path::new("/etc/sluice/.sluice-state/nightly")
        );
        assert_eq!(
            state_dir(&job("data_dir = \"state\""), cfg).unwrap(),
            Path::new("/etc/sluice/state")
        );
        assert_eq!(
            state_dir(&job("data_dir = \"/var/lib/sluice\""), cfg).unwrap(),
            Path::new("/var/lib/sluice")
        );
        let mut explicit = job("data_dir = \"/var/lib/sluice\"");
        if let SourceConfig::File(s) = &mut explicit.source {
            s.state_dir = Some(PathBuf::from("/elsewhere"));
        }
        assert_eq!(state_dir(&explicit, cfg).unwrap(), Path::new("/elsewhere"));
        let stdin = config::parse_str(
            "job = \"sink\"\n[source]\ntype = \"stdin\"\n[sink]\ntype = \"stdout\"\n[dead_letter]\ntype = \"stderr\"\n",
            &Overrides::new(),
        )
        .unwrap();
        assert_eq!(state_dir(&stdin, cfg), None);
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = lock(&state, None).unwrap();
        let e = lock(&state, None).unwrap_err().to_string();
        assert!(e.contains("in use by another run"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        // each process of a cluster has its own
        drop(lock(&state, Some(1)).unwrap());
        drop(first);
        drop(lock(&state, None).unwrap());
    }
}
