//! Local files as a bounded source: `json` (gcp-ingestion ndjson), `text` lines or Heka
//! streams, gzipped or not, shared out to the workers file by file, and a large plain file in
//! line-aligned splits.
//!
//! ```
//! use sluice::{MemorySink, Pipeline};
//! use sluice_transforms::io::file::FileSource;
//! use sluice_transforms::io::format::InputFormat;
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("a.ndjson"), "{\"payload\":\"aGk=\"}\nnot json\n").unwrap();
//! let pattern = dir.path().join("*.ndjson").display().to_string();
//!
//! let (out, dead) = (MemorySink::new(), MemorySink::new());
//! let (o, d) = (out.clone(), dead.clone());
//! Pipeline::new("read-files")
//!     .run(move |p| {
//!         let mut dead_letters = p.dead_letters();
//!         p.read_with_failures("read", FileSource::glob(&pattern, InputFormat::Json))
//!             .failures_to(&mut dead_letters)
//!             .write("write", o.clone());
//!         dead_letters.write("dead_letters", d.clone());
//!         Ok(())
//!     })
//!     .unwrap();
//! assert_eq!(out.records()[0].payload, "hi");
//! let dl = &dead.records()[0];
//! assert_eq!(dl.error_type, "ReadInput");
//! assert_eq!(dl.original.payload, "not json");
//! assert_eq!(dl.source_position["input_line"], "2");
//! ```

mod checkpoint;
mod config;
mod reader;
mod split;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sluice::{
    BoxError, Epoch, EpochLedger, ReadState, ReadStatus, Source, SourceContext, SourcePosition,
    SourceReader,
};

pub use checkpoint::InputState;
use checkpoint::{CheckpointStore, FileIdentity, Resume};

use crate::io::format::{FormatError, InputFormat};

pub use config::FileSourceConfig;
pub(crate) use reader::{decompressed, record_bytes};
pub use reader::{Batch, ReadResult, RecordReader, DEFAULT_MAX_LINE_BYTES, LONG_LINE_HEAD_BYTES};
use split::Unit;
pub use split::DEFAULT_SPLIT_BYTES;

/// Records returned by one `read` call at most, so a worker is never held for long.
const RECORDS_PER_READ: usize = 512;
/// Bytes of records returned by one `read` call, roughly (one record may go over).
const BYTES_PER_READ: usize = 1024 * 1024;

/// Why a file input cannot be opened or read.
///
/// Records that do not decode are not errors but dead letters (see
/// [`crate::io::format::FormatError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// No path or pattern was given.
    #[error("file source has no input path")]
    NoInput,
    /// A glob pattern is not valid.
    #[error("invalid input file pattern {pattern:?}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: glob::PatternError,
    },
    /// A glob pattern matches no file.
    #[error("input file pattern {pattern:?} matches no file")]
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// A path cannot be opened or inspected (missing, a directory, no permission).
    #[error("cannot open input file {path}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state directory or a checkpoint in it cannot be read or written.
    #[error("cannot use file source state {path}")]
    StateDir {
        /// The directory or checkpoint file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A checkpoint file exists but does not hold a checkpoint of this input.
    #[error("corrupt checkpoint {path} of input file {input}: {reason}; delete it to read that input again from the start")]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The input file it is for.
        input: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file was shorter at its end than when it was listed: it shrank while being read,
    /// and the records of the part cut off are lost to this run.
    #[error("input file {path} shrank while being read: {listed} bytes when listed, {read} read")]
    Shrunk {
        /// The path.
        path: PathBuf,
        /// Its size when the input was listed.
        listed: u64,
        /// The bytes read to its end.
        read: u64,
    },
    /// Reading a file failed after this many lines or bytes (a disk error).
    #[error("cannot read input file {path} after {position}")]
    Read {
        /// The path.
        path: PathBuf,
        /// How far it was read, e.g. `line 12` or `byte 4096`.
        position: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How far the acknowledged input of one file goes: every record up to here is durably
/// written by every sink. A restart may skip `lines` lines (or `offset` decompressed bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCheckpoint {
    /// Lines consumed (`json`, `text`), blank lines included.
    pub lines: u64,
    /// Decompressed bytes consumed.
    pub offset: u64,
    /// The whole file is acknowledged.
    pub complete: bool,
}

/// The acknowledged input of a [`FileSource`], per file (per split, named `path@start`, for a
/// file read in splits), shared by all its clones and workers.
#[derive(Clone, Debug, Default)]
pub struct FileCheckpoints(Arc<Mutex<BTreeMap<PathBuf, FileCheckpoint>>>);

impl FileCheckpoints {
    /// The checkpoint of `path` (as listed by [`FileSource::resolve`], or `path@start` for a
    /// split of it), if any input of it is acknowledged.
    pub fn get(&self, path: &Path) -> Option<FileCheckpoint> {
        self.lock().get(path).copied()
    }

    /// All checkpoints, by path.
    pub fn all(&self) -> BTreeMap<PathBuf, FileCheckpoint> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, FileCheckpoint>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The resolved input files, sorted, with their sizes.
type Listing = Arc<Vec<(PathBuf, u64)>>;

/// What the workers read: every file whole, or large plain ones in splits, in listing order.
type Units = Arc<Vec<Unit>>;

/// Reads local files: a list of paths and glob patterns, in an [`InputFormat`].
///
/// - The inputs are resolved when the source opens: a pattern with glob characters
///   (`*?[`) must match at least one file, a plain path must exist; the files are sorted.
/// - A plain (not gzipped) `json` or `text` file larger than the split size
///   ([`DEFAULT_SPLIT_BYTES`], see [`FileSource::split_bytes`]) is cut into splits at line
///   starts, so that the workers share a big file as they share many small ones; its records
///   keep the positions (`input_line`) they have when the file is read whole.
/// - Unit `i` of the listing (a whole file, or a split) is read in the process of worker
///   `i % peers`; within a process, each worker takes the next unit nobody has taken when it
///   finishes one, so a worker that is ahead does not idle while another still reads.
/// - Files whose name ends in `.gz` or whose content starts with the gzip magic are gunzipped.
/// - Each `read` returns at most 512 records or about 1 MB, and reads lines incrementally
///   (a line is kept up to [`FileSource::max_line_bytes`]), so memory stays bounded.
/// - A line or frame that does not decode is a dead letter (`error_type` `ReadInput`, raw bytes
///   as payload, `input_file` and `input_line` or `input_offset` as source position); use it
///   with `PipelineBuilder::read_with_failures`.
/// - A file whose content breaks before its end (a truncated or corrupt gzip) yields its
///   records up to the break, then one dead letter for the break (empty payload, the position
///   where reading stopped, [`crate::io::format::FormatError::Unreadable`]); the other files
///   are read. The file counts as read (and acknowledged) whole: a restart does not retry it.
/// - A file that is shorter at its end than when it was listed (it shrank while being read)
///   stops the run with [`FileError::Shrunk`] naming it, never a silent short read; other
///   read errors (a disk error) stop the run too.
/// - `progress()` is (bytes read, total bytes): the bytes of the units this worker read, and
///   the total of its process's units on its first reader; compressed sizes for gzipped
///   files. Acknowledged input is tracked in [`FileSource::checkpoints`].
/// - With [`FileSource::with_state_dir`] what is acknowledged is also persisted, and a run
///   resumes after it: a restart after a crash re-reads at most the epochs that were in
///   flight, never the whole input. Without it a run reads every file from the start.
///
/// Clones share their resolved file list and checkpoints: build the source once outside the
/// pipeline closure and clone it in, so all workers split the same listing.
#[derive(Clone, Debug)]
pub struct FileSource {
    inputs: Vec<String>,
    format: InputFormat,
    max_line_bytes: usize,
    split_bytes: u64,
    resolved: Arc<Mutex<Option<Listing>>>,
    units: Arc<Mutex<Option<Units>>>,
    checkpoints: FileCheckpoints,
    state_dir: Option<PathBuf>,
    /// The files readers of this process were given, and whether each was read to its end.
    read_to_end: ReadToEnd,
}

/// Per input file and start of a split a reader was opened for: whether it was read to its end.
type ReadToEnd = Arc<Mutex<BTreeMap<(PathBuf, u64), bool>>>;

impl FileSource {
    /// Files matching one glob pattern (or one plain path).
    pub fn glob(pattern: impl Into<String>, format: InputFormat) -> Self {
        Self::new([pattern.into()], format)
    }

    /// Files given as paths or glob patterns.
    pub fn new<I, P>(inputs: I, format: InputFormat) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        FileSource {
            inputs: inputs.into_iter().map(Into::into).collect(),
            format,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            split_bytes: DEFAULT_SPLIT_BYTES,
            resolved: Arc::default(),
            units: Arc::default(),
            checkpoints: FileCheckpoints::default(),
            state_dir: None,
            read_to_end: Arc::default(),
        }
    }

    /// Persists what is acknowledged of each input file in `dir` (created if missing) and
    /// resumes from it: a reader skips the lines (`json`, `text`) or decompressed bytes
    /// (`heka`) of a file that are already acknowledged, and skips a file that is whole.
    ///
    /// Checkpoints are keyed by the input's canonical path and name the file's size,
    /// modification time and a CRC of its first KiB: a file that changed is read again from
    /// its start, with a warning. A checkpoint that cannot be parsed stops the run with an
    /// error naming it (delete it to re-read that input). Each checkpoint is one small file,
    /// replaced atomically (temporary file, fsync, rename) whenever the acknowledged position
    /// of its input advances. The save happens in the acknowledgement, on the worker, before
    /// the source reads on: a checkpoint saved later would let a crash re-read more than the
    /// epochs that were in flight. A save that fails stops the run.
    ///
    /// ```
    /// use sluice::{MemorySink, Pipeline};
    /// use sluice_transforms::io::file::FileSource;
    /// use sluice_transforms::io::format::InputFormat;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let input = dir.path().join("a.txt");
    /// std::fs::write(&input, "one\ntwo\n").unwrap();
    /// let state = dir.path().join("state");
    /// let run = |source: FileSource| {
    ///     let out = MemorySink::new();
    ///     let o = out.clone();
    ///     Pipeline::new("resume")
    ///         .run(move |p| {
    ///             let mut dl = p.dead_letters();
    ///             p.read_with_failures("read", source.clone())
    ///                 .failures_to(&mut dl)
    ///                 .write("write", o.clone());
    ///             dl.write("dead_letters", MemorySink::new());
    ///             Ok(())
    ///         })
    ///         .unwrap();
    ///     out.len()
    /// };
    /// let source = || FileSource::glob(input.display().to_string(), InputFormat::Text);
    /// assert_eq!(run(source().with_state_dir(&state)), 2);
    /// // everything was acknowledged: a second run reads nothing
    /// assert_eq!(run(source().with_state_dir(&state)), 0);
    /// ```
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The state directory, if what is acknowledged is persisted.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// What the state directory says of each input file as it is now (where a run would
    /// resume), in listing order, without creating or writing anything; every file is
    /// [`InputState::New`] without a state directory.
    ///
    /// ```
    /// use sluice_transforms::io::file::{FileSource, InputState};
    /// use sluice_transforms::io::format::InputFormat;
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
    /// let source = FileSource::glob(dir.path().join("*.txt").display().to_string(), InputFormat::Text)
    ///     .with_state_dir(dir.path().join("state"));
    /// assert_eq!(source.input_states().unwrap(), vec![(dir.path().join("a.txt"), InputState::New)]);
    /// assert!(!dir.path().join("state").exists());
    /// ```
    pub fn input_states(&self) -> Result<Vec<(PathBuf, InputState)>, FileError> {
        let files = self.resolve()?;
        let Some(dir) = &self.state_dir else {
            return Ok(files.into_iter().map(|f| (f, InputState::New)).collect());
        };
        let store = CheckpointStore::at(dir);
        files
            .into_iter()
            .map(|path| {
                let identity = FileIdentity::of(&path).map_err(|source| FileError::Open {
                    path: path.clone(),
                    source,
                })?;
                let state = store.inspect(&CheckpointStore::key(&path), &identity)?;
                Ok((path, state))
            })
            .collect()
    }

    /// Every checkpoint the state directory holds, by the canonical path of its input (inputs
    /// no longer listed included), sorted; empty without a state directory or when it does not
    /// exist.
    pub fn stored_checkpoints(&self) -> Result<Vec<(PathBuf, FileCheckpoint)>, FileError> {
        match &self.state_dir {
            Some(dir) => CheckpointStore::at(dir).list(),
            None => Ok(Vec::new()),
        }
    }

    /// Forgets what was acknowledged: removes every checkpoint from the state directory (and
    /// nothing else), so the next run reads every input from its start. Returns how many
    /// checkpoints were removed.
    pub fn clear_state(&self) -> Result<usize, FileError> {
        match &self.state_dir {
            Some(dir) => CheckpointStore::at(dir).clear(),
            None => Ok(0),
        }
    }

    /// Sets the longest line kept whole; a longer one is a dead letter holding its first
    /// `max` bytes (default [`DEFAULT_MAX_LINE_BYTES`]).
    pub fn max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Cuts plain `json` and `text` files larger than `bytes` into splits of about that size
    /// (default [`DEFAULT_SPLIT_BYTES`]; 0 reads every file whole). Splits start at line starts
    /// found by the content alone, so checkpoints of splits stay valid across runs with other
    /// numbers of workers, as long as the split size stays the same.
    ///
    /// ```
    /// use sluice::{MemorySink, Pipeline};
    /// use sluice_transforms::io::file::FileSource;
    /// use sluice_transforms::io::format::InputFormat;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let input = dir.path().join("a.txt");
    /// let lines: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
    /// std::fs::write(&input, lines).unwrap();
    /// let source = FileSource::glob(input.display().to_string(), InputFormat::Text).split_bytes(1000);
    /// assert_eq!(source.unit_count().unwrap(), 9);
    /// let out = MemorySink::new();
    /// let o = out.clone();
    /// Pipeline::new("splits")
    ///     .workers(3)
    ///     .run(move |p| {
    ///         let mut dl = p.dead_letters();
    ///         p.read_with_failures("read", source.clone())
    ///             .failures_to(&mut dl)
    ///             .write("write", o.clone());
    ///         dl.write("dead_letters", MemorySink::new());
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// let mut got: Vec<String> = out.records().iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
    /// got.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
    /// assert_eq!(got.len(), 1000);
    /// assert_eq!(got[999], "line 1000");
    /// ```
    pub fn split_bytes(mut self, bytes: u64) -> Self {
        self.split_bytes = bytes;
        self
    }

    /// How many units the workers share: whole files and the splits of large plain files.
    /// A run with more workers than units leaves some without input.
    pub fn unit_count(&self) -> Result<usize, FileError> {
        Ok(self.units()?.len())
    }

    /// The input format.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// The acknowledged input, per file.
    pub fn checkpoints(&self) -> FileCheckpoints {
        self.checkpoints.clone()
    }

    /// The files this process's readers were given that they did not read to their end,
    /// sorted: empty once a run read all of its input, the rest after a stop (shutdown flag)
    /// before the end. Files other processes of a cluster read are not included.
    ///
    /// ```
    /// use sluice::{MemorySink, Pipeline};
    /// use sluice_transforms::io::file::FileSource;
    /// use sluice_transforms::io::format::InputFormat;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("a.txt"), "one\ntwo\n").unwrap();
    /// let source = FileSource::glob(dir.path().join("*.txt").display().to_string(), InputFormat::Text);
    /// let s = source.clone();
    /// let pipeline = Pipeline::new("stopped");
    /// pipeline.shutdown_flag().store(true, std::sync::atomic::Ordering::SeqCst);
    /// pipeline
    ///     .run(move |p| {
    ///         let mut dl = p.dead_letters();
    ///         p.read_with_failures("read", s.clone())
    ///             .failures_to(&mut dl)
    ///             .write("write", MemorySink::new());
    ///         dl.write("dead_letters", MemorySink::new());
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// // stopped before reading anything: the file is not read to its end
    /// assert_eq!(source.unfinished(), vec![dir.path().join("a.txt")]);
    /// ```
    pub fn unfinished(&self) -> Vec<PathBuf> {
        self.read_to_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, done)| !**done)
            .map(|((p, _), _)| p.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// A digest of the input listing (the sorted paths with their sizes), 16 hex digits: the
    /// processes of a cluster must see the same listing, since file `i` is read in the process
    /// of worker `i % peers` of the whole cluster; compare digests to be sure they do.
    ///
    /// ```
    /// use sluice_transforms::io::file::FileSource;
    /// use sluice_transforms::io::format::InputFormat;
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
    /// let glob = dir.path().join("*.txt").display().to_string();
    /// let before = FileSource::glob(&glob, InputFormat::Text).listing_digest().unwrap();
    /// assert_eq!(before.len(), 16);
    /// std::fs::write(dir.path().join("b.txt"), "two\n").unwrap();
    /// assert_ne!(FileSource::glob(&glob, InputFormat::Text).listing_digest().unwrap(), before);
    /// ```
    pub fn listing_digest(&self) -> Result<String, FileError> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for (path, size) in self.listing()?.iter() {
            let path = path.display().to_string();
            hash.update((path.len() as u64).to_le_bytes());
            hash.update(path.as_bytes());
            hash.update(size.to_le_bytes());
        }
        Ok(hash
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Lists the files to read, sorted and without duplicates, with their sizes; checks that
    /// every pattern matches and every path exists. Called by `open`; call it to validate a
    /// configuration before running.
    pub fn resolve(&self) -> Result<Vec<PathBuf>, FileError> {
        Ok(self.listing()?.iter().map(|(p, _)| p.clone()).collect())
    }

    /// The units of the listing, cutting large plain files into splits (once per source).
    fn units(&self) -> Result<Units, FileError> {
        let mut slot = self.units.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(units) = slot.as_ref() {
            return Ok(units.clone());
        }
        let split = match self.format {
            // Heka frames cannot be found from an arbitrary byte without risk: read whole
            InputFormat::Heka => 0,
            InputFormat::Json | InputFormat::Text => self.split_bytes,
        };
        let mut units = Vec::new();
        for (path, size) in self.listing()?.iter() {
            if path.extension().is_some_and(|e| e == "gz") {
                units.push(Unit::whole(path.clone(), *size));
                continue;
            }
            let of = split::units_of(path, *size, split).map_err(|source| FileError::Read {
                path: path.clone(),
                position: "byte 0 (looking for split points)".to_string(),
                source,
            })?;
            units.extend(of);
        }
        let units = Arc::new(units);
        *slot = Some(units.clone());
        Ok(units)
    }

    fn listing(&self) -> Result<Listing, FileError> {
        let mut slot = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(files) = slot.as_ref() {
            return Ok(files.clone());
        }
        let files = Arc::new(list_files(&self.inputs)?);
        *slot = Some(files.clone());
        Ok(files)
    }
}

/// Whether a read error is the content breaking (a truncated or corrupt gzip stream), as
/// opposed to the file or disk failing.
fn is_broken_content(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    )
}

fn is_pattern(input: &str) -> bool {
    input.contains(['*', '?', '['])
}

fn size_of(path: &Path) -> Result<u64, FileError> {
    let open_error = |source| FileError::Open {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(open_error)?;
    if meta.is_dir() {
        return Err(open_error(io::Error::other("is a directory")));
    }
    Ok(meta.len())
}

fn list_files(inputs: &[String]) -> Result<Vec<(PathBuf, u64)>, FileError> {
    if inputs.is_empty() {
        return Err(FileError::NoInput);
    }
    let mut files = BTreeMap::new();
    for input in inputs {
        if !is_pattern(input) {
            let path = PathBuf::from(input);
            let size = size_of(&path)?;
            files.insert(path, size);
            continue;
        }
        let paths = glob::glob(input).map_err(|source| FileError::BadPattern {
            pattern: input.clone(),
            source,
        })?;
        let mut matched = false;
        for entry in paths {
            let path = entry.map_err(|e| FileError::Open {
                path: e.path().to_path_buf(),
                source: io::Error::new(e.error().kind(), e.error().to_string()),
            })?;
            if path.is_dir() {
                continue;
            }
            let size = size_of(&path)?;
            files.insert(path, size);
            matched = true;
        }
        if !matched {
            return Err(FileError::NoMatch {
                pattern: input.clone(),
            });
        }
    }
    Ok(files.into_iter().collect())
}

impl Source for FileSource {
    type Output = ReadResult;

    fn kind(&self) -> &str {
        "file"
    }

    fn describe(&self) -> String {
        self.inputs.join(",")
    }

    /// Lists the input: every pattern must match and every path exist, before any record is
    /// read.
    fn check(&self, _ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        self.resolve().map(drop).map_err(Into::into)
    }

    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<ReadResult>>, BoxError> {
        let units = self.units()?;
        let peers = ctx.peers().max(1);
        let workers = ctx.process_workers();
        let queue = ctx.process_shared(|| {
            let mine: Vec<Unit> = units
                .iter()
                .enumerate()
                .filter(|(i, _)| workers.contains(&(i % peers)))
                .map(|(_, u)| u.clone())
                .collect();
            let mut read_to_end = self
                .read_to_end
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for unit in &mine {
                read_to_end.insert((unit.path.clone(), unit.start), false);
            }
            UnitQueue {
                units: mine,
                next: AtomicUsize::new(0),
                total_reported: AtomicBool::new(false),
            }
        });
        // the process's total is reported once, by its first reader: the runner adds up
        // what every worker reports
        let total = if queue.total_reported.swap(true, Ordering::Relaxed) {
            0
        } else {
            queue.units.iter().map(Unit::len).sum()
        };
        let store = match &self.state_dir {
            Some(dir) => Some(CheckpointStore::open(dir)?),
            None => {
                if ctx.worker_index() == 0 {
                    tracing::info!(
                        input = %self.describe(),
                        "the file source has no state directory: a restart reads the input again from the start"
                    );
                }
                None
            }
        };
        Ok(Box::new(FileReader {
            read_to_end: self.read_to_end.clone(),
            queue,
            format: self.format,
            max_line_bytes: self.max_line_bytes,
            current: None,
            done_bytes: 0,
            total,
            ledger: EpochLedger::new(),
            checkpoints: self.checkpoints.clone(),
            store,
            opened: HashMap::new(),
        }))
    }
}

struct OpenFile {
    index: usize,
    records: RecordReader<Box<dyn BufRead + Send>>,
    /// Bytes of the file read, from its start (compressed bytes for a gzipped file).
    read_bytes: Arc<AtomicU64>,
}

/// The files and splits the workers of one process read (unit `i` of the listing belongs to
/// the process of worker `i % peers`), handed out in listing order to whichever of its workers
/// asks next: a worker that is ahead takes the next split instead of idling at the end while
/// another still has a fixed share left.
struct UnitQueue {
    units: Vec<Unit>,
    next: AtomicUsize,
    /// Whether a reader has reported the units' total size as its progress total.
    total_reported: AtomicBool,
}

impl UnitQueue {
    /// The index of the next unit nobody has taken, if any is left.
    fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.units.len()).then_some(i)
    }

    /// Every unit is taken.
    fn is_empty(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.units.len()
    }
}

/// One worker's reader: the units it takes from its process's queue, one after the other.
struct FileReader {
    queue: Arc<UnitQueue>,
    format: InputFormat,
    max_line_bytes: usize,
    current: Option<OpenFile>,
    /// Compressed bytes of the files finished.
    done_bytes: u64,
    total: u64,
    /// Positions reached by the epochs not yet acknowledged, by unit index.
    ledger: EpochLedger<usize, FileCheckpoint>,
    checkpoints: FileCheckpoints,
    /// Where acknowledged positions persist, with a state directory.
    store: Option<CheckpointStore>,
    /// Per unit this reader opened: its checkpoint key and identity (with a state directory).
    opened: HashMap<usize, (PathBuf, FileIdentity)>,
    read_to_end: ReadToEnd,
}

impl FileReader {
    fn unit(&self, index: usize) -> &Unit {
        &self.queue.units[index]
    }

    fn finished(&self, index: usize) {
        let unit = self.unit(index);
        self.read_to_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((unit.path.clone(), unit.start), true);
    }

    /// Opens the next unit of the queue; false when none is left.
    fn open_next(&mut self) -> Result<bool, FileError> {
        let Some(index) = self.queue.take() else {
            return Ok(false);
        };
        let unit = self.unit(index).clone();
        let path = unit.path.clone();
        let open_error = |source| FileError::Open {
            path: path.clone(),
            source,
        };
        let gzip_name = path.extension().is_some_and(|e| e == "gz");
        let mut resume = FileCheckpoint {
            lines: unit.lines_before,
            offset: unit.start,
            complete: false,
        };
        let fresh = resume;
        // a split is of a plain file by construction
        let mut plain = unit.split;
        if let Some(store) = &self.store {
            let key = unit.name(&CheckpointStore::key(&path));
            let identity = FileIdentity::of(&path).map_err(open_error)?;
            if let Resume::From(c) = store.load(&key, &identity)? {
                resume = c;
            }
            plain = !gzip_name && !identity.gzip_magic;
            self.opened.insert(index, (key, identity));
            if resume != fresh {
                self.publish(vec![(index, resume)]);
            }
            if resume.complete {
                tracing::debug!(input = %path.display(), start = unit.start, "input file (or split) already acknowledged whole: skipped");
                self.done_bytes += unit.len();
                self.finished(index);
                return Ok(true);
            }
        }
        let mut file = File::open(&path).map_err(open_error)?;
        let read_bytes = Arc::new(AtomicU64::new(0));
        let read_error = |position: String| {
            let path = path.clone();
            move |source| FileError::Read {
                path,
                position,
                source,
            }
        };
        let records = if plain && (resume.offset > 0 || unit.split) {
            // a plain file's decompressed offsets are its own: seek instead of reading
            file.seek(SeekFrom::Start(resume.offset))
                .map_err(read_error(format!("byte {}", resume.offset)))?;
            read_bytes.store(resume.offset, Ordering::Relaxed);
            let counted = reader::CountingReader::new(file, read_bytes.clone());
            let input: Box<dyn BufRead + Send> = if unit.split {
                // the split ends where the next one starts, at a line start
                let rest = unit.end.saturating_sub(resume.offset);
                Box::new(BufReader::with_capacity(
                    64 * 1024,
                    io::Read::take(counted, rest),
                ))
            } else {
                Box::new(BufReader::with_capacity(64 * 1024, counted))
            };
            self.record_reader(input, &path)
                .starting_at(resume.lines, resume.offset)
        } else {
            let counted = reader::CountingReader::new(file, read_bytes.clone());
            let input =
                decompressed(counted, gzip_name).map_err(read_error("byte 0".to_string()))?;
            let mut records = self.record_reader(input, &path);
            if resume != fresh {
                let reached = records
                    .skip_to(resume.lines, resume.offset)
                    .map_err(read_error(format!("resuming at {resume:?}")))?;
                if !reached {
                    tracing::warn!(input = %path.display(), checkpoint = ?resume, "input file is shorter than its checkpoint: nothing left to read");
                }
            }
            records
        };
        tracing::debug!(input = %path.display(), lines = resume.lines, offset = resume.offset, "input file opened");
        self.current = Some(OpenFile {
            index,
            records,
            read_bytes,
        });
        Ok(true)
    }

    fn record_reader(
        &self,
        input: Box<dyn BufRead + Send>,
        path: &Path,
    ) -> RecordReader<Box<dyn BufRead + Send>> {
        RecordReader::new(input, self.format)
            .with_file_name(path.display().to_string())
            .with_max_line_bytes(self.max_line_bytes)
    }

    fn publish(&self, reached: Vec<(usize, FileCheckpoint)>) {
        let mut all = self.checkpoints.lock();
        for (i, c) in reached {
            let unit = self.unit(i);
            all.insert(unit.name(&unit.path), c);
        }
    }

    /// Persists acknowledged positions (with a state directory).
    fn persist(&self, reached: &[(usize, FileCheckpoint)]) -> Result<(), FileError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for (i, c) in reached {
            if let Some((key, identity)) = self.opened.get(i) {
                store.save(key, identity, c)?;
            }
        }
        Ok(())
    }
}

impl SourceReader<ReadResult> for FileReader {
    fn read(
        &mut self,
        out: &mut Vec<ReadResult>,
        max_records: usize,
    ) -> Result<ReadStatus, BoxError> {
        let max_records = max_records.clamp(1, RECORDS_PER_READ);
        let mut records = 0;
        let mut bytes = 0;
        while records < max_records && bytes < BYTES_PER_READ {
            if self.current.is_none() && !self.open_next()? {
                return Ok(ReadStatus::new(bytes, ReadState::Exhausted));
            }
            let Some(file) = self.current.as_mut() else {
                continue;
            };
            let before = out.len();
            let batch = match file.records.read_batch(
                out,
                max_records - records,
                BYTES_PER_READ - bytes,
            ) {
                Ok(b) => b,
                Err(source) if is_broken_content(&source) => {
                    let index = file.index;
                    let path = &self.queue.units[index].path;
                    let (lines, offset) = (file.records.lines(), file.records.offset());
                    let name: Arc<str> = path.display().to_string().into();
                    let (position, at) = match self.format {
                        InputFormat::Heka => (
                            SourcePosition::Offset {
                                file: Some(name),
                                offset,
                            },
                            format!("byte {offset}"),
                        ),
                        _ => (
                            SourcePosition::Line {
                                file: Some(name),
                                line: lines + 1,
                            },
                            format!("line {}", lines + 1),
                        ),
                    };
                    tracing::warn!(input = %path.display(), at = %at, error = %source, "input file breaks before its end: the break is a dead letter, the next file is read");
                    let broken = reader::dead_letter(
                        sluice::Bytes::new(),
                        position,
                        &FormatError::Unreadable(source.to_string()),
                    );
                    let added: usize = out[before..].iter().map(record_bytes).sum();
                    out.push(Err(broken));
                    records += out.len() - before;
                    bytes += added;
                    self.ledger.record(
                        index,
                        FileCheckpoint {
                            lines,
                            offset,
                            complete: true,
                        },
                    );
                    self.done_bytes += self.unit(index).len();
                    self.current = None;
                    self.finished(index);
                    continue;
                }
                Err(source) => {
                    let position = match self.format {
                        InputFormat::Heka => format!("byte {}", file.records.offset()),
                        _ => format!("line {}", file.records.lines()),
                    };
                    return Err(FileError::Read {
                        path: self.queue.units[file.index].path.clone(),
                        position,
                        source,
                    }
                    .into());
                }
            };
            if batch.end {
                let unit = &self.queue.units[file.index];
                let read = file.read_bytes.load(Ordering::Relaxed);
                if read < unit.end {
                    return Err(FileError::Shrunk {
                        path: unit.path.clone(),
                        listed: unit.size,
                        read,
                    }
                    .into());
                }
            }
            records += batch.records;
            bytes += batch.bytes;
            self.ledger.record(
                file.index,
                FileCheckpoint {
                    lines: file.records.lines(),
                    offset: file.records.offset(),
                    complete: batch.end,
                },
            );
            if batch.end {
                self.done_bytes += self.queue.units[file.index].len();
                let index = file.index;
                self.current = None;
                self.finished(index);
            }
        }
        let state = if self.current.is_none() && self.queue.is_empty() {
            ReadState::Exhausted
        } else {
            ReadState::More
        };
        Ok(ReadStatus::new(bytes, state))
    }

    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }

    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        // `Epoch::MAX` includes blank lines read after the last epoch
        let reached = self.ledger.ack(done);
        if reached.is_empty() {
            return Ok(());
        }
        self.persist(&reached)?;
        self.publish(reached);
        Ok(())
    }

    fn progress(&self) -> Option<(u64, u64)> {
        let current = self.current.as_ref().map_or(0, |f| {
            let unit = self.unit(f.index);
            f.read_bytes
                .load(Ordering::Relaxed)
                .clamp(unit.start, unit.end)
                - unit.start
        });
        Some((self.done_bytes + current, self.total))
    }
}
