//! The file source's checkpoint store: what was acknowledged of each input file, kept in a
//! state directory so that a restart resumes where the durable output ends.
//!
//! One small JSON file per input file, named after the input's file name and a hash of its
//! canonical path, replaced atomically (written to a temporary file, fsynced, renamed over
//! the old one, and the directory fsynced): a kill at any point leaves the old checkpoint or
//! the new one, never a torn one. Each input file is read by one worker, so no two writers
//! share a checkpoint file.
//!
//! A checkpoint names the file it belongs to by path, size, modification time and a CRC-32 of
//! its first KiB: a file that changed since is read again from its start (with a warning).
//! A checkpoint file that cannot be parsed is an error naming it (delete it to re-read that
//! input): acknowledged input is never re-read silently, nor skipped on a guess.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::{FileCheckpoint, FileError};

/// The format version written; another version is an error, not a guess.
const VERSION: u32 = 1;
/// How every checkpoint file's name ends.
const SUFFIX: &str = ".checkpoint.json";
/// Bytes of an input's head whose CRC is part of its identity.
const HEAD_BYTES: usize = 1024;

/// What identifies one version of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileIdentity {
    size: u64,
    modified_ns: u64,
    head_crc32: u32,
    /// The head starts with the gzip magic: the file is read through gunzip.
    #[serde(skip)]
    pub(crate) gzip_magic: bool,
}

impl FileIdentity {
    /// The identity of `path` as it is now.
    pub(crate) fn of(path: &Path) -> io::Result<FileIdentity> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let modified_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut head = Vec::with_capacity(HEAD_BYTES);
        Read::by_ref(&mut file)
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)?;
        Ok(FileIdentity {
            size: meta.len(),
            modified_ns,
            head_crc32: crc32fast::hash(&head),
            gzip_magic: head.starts_with(&[0x1f, 0x8b]),
        })
    }

    fn same_file(&self, other: &FileIdentity) -> bool {
        (self.size, self.modified_ns, self.head_crc32)
            == (other.size, other.modified_ns, other.head_crc32)
    }
}

/// The stored form of one checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// The input's canonical path: checkpoints are keyed by it.
    path: PathBuf,
    #[serde(flatten)]
    identity: FileIdentity,
    lines: u64,
    offset: u64,
    complete: bool,
}

/// What the store knows of one input when it is opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// No checkpoint (or one of an earlier version of the file): read from the start.
    Start,
    /// Skip what this checkpoint says was acknowledged.
    From(FileCheckpoint),
}

/// What a state directory says of one input file as the file is now (see
/// [`super::FileSource::input_states`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputState {
    /// No checkpoint: the file is read from its start.
    New,
    /// A checkpoint of an earlier version of the file (size, modification time or first KiB
    /// differ): the file is read again from its start.
    Changed,
    /// Acknowledged up to here: a run resumes after it, and skips the file when `complete`.
    At(FileCheckpoint),
}

/// Checkpoints of input files in one state directory.
#[derive(Clone, Debug)]
pub(crate) struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// The store in `dir`, created if missing.
    pub(crate) fn open(dir: &Path) -> Result<CheckpointStore, FileError> {
        fs::create_dir_all(dir).map_err(|source| FileError::StateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The store in `dir`, which may not exist (nothing is created: for inspecting).
    pub(crate) fn at(dir: &Path) -> CheckpointStore {
        CheckpointStore {
            dir: dir.to_path_buf(),
        }
    }

    /// The key of an input: its canonical path (the path as given if that fails).
    pub(crate) fn key(input: &Path) -> PathBuf {
        fs::canonicalize(input).unwrap_or_else(|_| input.to_path_buf())
    }

    /// Where the checkpoint of the input with key `key` lives: its file name, made safe, and
    /// a hash of the whole key, so that equal names in different directories do not meet.
    fn file_for(&self, key: &Path) -> PathBuf {
        let name: String = key
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(96)
            .collect();
        let hash = fnv1a(key.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{name}.{hash:016x}{SUFFIX}"))
    }

    /// Where the input with key `key` and identity `now` resumes.
    pub(crate) fn load(&self, key: &Path, now: &FileIdentity) -> Result<Resume, FileError> {
        Ok(match self.inspect(key, now)? {
            InputState::New => Resume::Start,
            InputState::Changed => {
                tracing::warn!(
                    input = %key.display(),
                    checkpoint = %self.file_for(key).display(),
                    "input file changed since its checkpoint (size, modification time or first bytes): reading it again from the start"
                );
                Resume::Start
            }
            InputState::At(c) => Resume::From(c),
        })
    }

    /// What the store says of the input with key `key` and identity `now`.
    pub(crate) fn inspect(&self, key: &Path, now: &FileIdentity) -> Result<InputState, FileError> {
        let file = self.file_for(key);
        let text = match fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(InputState::New),
            Err(source) => return Err(FileError::StateDir { path: file, source }),
        };
        let corrupt = |reason: String| FileError::CorruptCheckpoint {
            path: file.clone(),
            input: key.to_path_buf(),
            reason,
        };
        let stored: Stored = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if stored.version != VERSION {
            return Err(corrupt(format!(
                "unknown version {} (expected {VERSION})",
                stored.version
            )));
        }
        if stored.path != key {
            return Err(corrupt(format!(
                "it belongs to {}, not to this input",
                stored.path.display()
            )));
        }
        if !stored.identity.same_file(now) {
            return Ok(InputState::Changed);
        }
        Ok(InputState::At(FileCheckpoint {
            lines: stored.lines,
            offset: stored.offset,
            complete: stored.complete,
        }))
    }

    /// Every checkpoint in the directory, by the input it is for (none if the directory does
    /// not exist); a checkpoint that cannot be parsed is an error naming it.
    pub(crate) fn list(&self) -> Result<Vec<(PathBuf, FileCheckpoint)>, FileError> {
        let mut found = Vec::new();
        for file in self.checkpoint_files(false)? {
            let text = fs::read(&file).map_err(|source| FileError::StateDir {
                path: file.clone(),
                source,
            })?;
            let stored: Stored =
                serde_json::from_slice(&text).map_err(|e| FileError::CorruptCheckpoint {
                    path: file.clone(),
                    input: PathBuf::from("(unknown)"),
                    reason: e.to_string(),
                })?;
            found.push((
                stored.path,
                FileCheckpoint {
                    lines: stored.lines,
                    offset: stored.offset,
                    complete: stored.complete,
                },
            ));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Removes every checkpoint (and temporary checkpoint a kill left) in the directory, and
    /// nothing else; returns how many checkpoints were removed.
    pub(crate) fn clear(&self) -> Result<usize, FileError> {
        let mut removed = 0;
        for file in self.checkpoint_files(true)? {
            fs::remove_file(&file).map_err(|source| FileError::StateDir {
                path: file.clone(),
                source,
            })?;
            if file.to_string_lossy().ends_with(SUFFIX) {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The checkpoint files in the directory (and temporary ones if `temporary`), sorted.
    fn checkpoint_files(&self, temporary: bool) -> Result<Vec<PathBuf>, FileError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(FileError::StateDir {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| FileError::StateDir {
                    path: self.dir.clone(),
                    source,
                })?
                .path();
            let name = path.to_string_lossy();
            let tmp = name
                .strip_suffix(".tmp")
                .is_some_and(|n| n.ends_with(SUFFIX));
            if name.ends_with(SUFFIX) || (temporary && tmp) {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Replaces the checkpoint of the input with key `key` atomically.
    pub(crate) fn save(
        &self,
        key: &Path,
        identity: &FileIdentity,
        checkpoint: &FileCheckpoint,
    ) -> Result<(), FileError> {
        let file = self.file_for(key);
        let stored = Stored {
            version: VERSION,
            path: key.to_path_buf(),
            identity: *identity,
            lines: checkpoint.lines,
            offset: checkpoint.offset,
            complete: checkpoint.complete,
        };
        let mut tmp_name = file.clone().into_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer(&mut f, &stored)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &file)?;
            // the rename itself is durable once the directory is
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| FileError::StateDir { path: file, source })
    }
}

/// 64-bit FNV-1a: a stable hash (the same in every process and release) for file names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(lines: u64) -> FileCheckpoint {
        FileCheckpoint {
            lines,
            offset: lines * 10,
            complete: false,
        }
    }

    #[test]
    fn saves_loads_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        fs::write(&input, "a\nb\n").unwrap();
        let store = CheckpointStore::open(&dir.path().join("state")).unwrap();
        let key = CheckpointStore::key(&input);
        let id = FileIdentity::of(&input).unwrap();
        assert_eq!(store.load(&key, &id).unwrap(), Resume::Start);
        store.save(&key, &id, &checkpoint(1)).unwrap();
        store.save(&key, &id, &checkpoint(2)).unwrap();
        assert_eq!(store.load(&key, &id).unwrap(), Resume::From(checkpoint(2)));
        let files: Vec<_> = fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 1, "no temporary file is left: {files:?}");
        assert!(files[0].starts_with("in.ndjson."), "{files:?}");
    }

    #[test]
    fn lists_inspects_and_clears_only_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        fs::write(&input, "a\nb\n").unwrap();
        let state = dir.path().join("state");
        assert!(CheckpointStore::at(&state).list().unwrap().is_empty());
        assert_eq!(CheckpointStore::at(&state).clear().unwrap(), 0);
        let store = CheckpointStore::open(&state).unwrap();
        let key = CheckpointStore::key(&input);
        let id = FileIdentity::of(&input).unwrap();
        assert_eq!(store.inspect(&key, &id).unwrap(), InputState::New);
        store.save(&key, &id, &checkpoint(1)).unwrap();
        assert_eq!(
            store.inspect(&key, &id).unwrap(),
            InputState::At(checkpoint(1))
        );
        assert_eq!(store.list().unwrap(), vec![(key.clone(), checkpoint(1))]);
        fs::write(&input, "changed\n").unwrap();
        let now = FileIdentity::of(&input).unwrap();
        assert_eq!(store.inspect(&key, &now).unwrap(), InputState::Changed);
        // a temporary file a kill left, and a file that is no checkpoint
        let tmp = format!("{}.tmp", store.file_for(&key).display());
        fs::write(&tmp, "{").unwrap();
        fs::write(state.join("run.lock"), "").unwrap();
        assert_eq!(store.clear().unwrap(), 1);
        assert!(!Path::new(&tmp).exists());
        assert!(state.join("run.lock").exists(), "other files are kept");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_changed_file_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        fs::write(&input, "a\nb\n").unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let key = CheckpointStore::key(&input);
        let id = FileIdentity::of(&input).unwrap();
        store.save(&key, &id, &checkpoint(2)).unwrap();
        // same size, other first bytes
        fs::write(&input, "c\nd\n").unwrap();
        let now = FileIdentity::of(&input).unwrap();
        assert_eq!(store.load(&key, &now).unwrap(), Resume::Start);
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        fs::write(&input, "a\n").unwrap();
        let store = CheckpointStore::open(&dir.path().join("state")).unwrap();
        let key = CheckpointStore::key(&input);
        let id = FileIdentity::of(&input).unwrap();
        store.save(&key, &id, &checkpoint(1)).unwrap();
        let file = store.file_for(&key);
        for garbage in [
            &b"{\"version\":1,"[..],
            b"",
            b"\x00\xff",
            b"{\"version\":7}",
        ] {
            fs::write(&file, garbage).unwrap();
            let e = store.load(&key, &id).unwrap_err();
            assert!(matches!(e, FileError::CorruptCheckpoint { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&file.display().to_string()), "{msg}");
            assert!(msg.contains("delete it"), "{msg}");
        }
    }

    #[test]
    fn equal_names_in_other_directories_do_not_meet() {
        let store = CheckpointStore {
            dir: PathBuf::from("/state"),
        };
        assert_ne!(
            store.file_for(Path::new("/a/x.ndjson")),
            store.file_for(Path::new("/b/x.ndjson"))
        );
    }
}
