//! The object sink: batches of records written as objects to a local directory, S3 (or an
//! S3-compatible server) or memory, through the `object_store` crate, streamed as they fill.
//!
//! ```text
//! records ──render path template──▶ one open batch per prefix ──encode (gzip or plain)──▶
//!   part buffer ──full part──▶ multipart upload ──bound hit / age / flush / budget──▶
//!   last part + complete ──▶ <prefix><job>-<run>-w<worker>-<seq>.ndjson.gz
//! ```
//!
//! # The epoch contract
//! [`SinkWriter::write`] appends an epoch's records to the open batches and returns a future
//! that resolves only when every object holding any of them is complete and visible. A batch
//! closes when it reaches [`BatchBounds::max_bytes`] or [`BatchBounds::max_records`], when it
//! is [`BatchBounds::max_age`] old (a timer on the runner's tokio runtime), when the runner
//! calls `flush`, or early, to keep within the [`MemoryBudget`]. A failed upload (after
//! `object_store`'s own retries) fails the futures of every epoch still waiting, so the
//! pipeline stops without acknowledging them; later writes fail at once.
//!
//! # Memory: a part per open batch, within a budget
//! An object is not built in memory: each open batch compresses into a part buffer, and every
//! time that holds [`ObjectSink::with_part_size`] bytes, it goes to the store as one part of a
//! multipart upload (at most 4 parts of an object upload at once; more wait in its queue). An
//! object that never fills a part is written with one put when it closes. So an open batch
//! holds its compressor state (about 400 KB for gzip) and at most about one part.
//!
//! Per writer (one per worker), open batches hold at most [`MemoryBudget::max_open_bytes`]:
//! before a record would take them past it, the least recently written batches are closed
//! early (a smaller object, sooner), and opening a batch beyond
//! [`MemoryBudget::max_open_batches`] closes the least recently written one, so that
//! attacker-chosen paths cannot exhaust memory. The writer counts what it holds
//! ([`ObjectWriter::open_bytes`], [`ObjectWriter::held_bytes`], [`ObjectWriter::stats`]).
//!
//! Parts handed to uploads are not part of the budget: they are freed as the store takes
//! them .
//!
//! # Backpressure and open objects
//! The writer streams ([`sluice::io::StreamingWriter`]): the runner hands it records as they
//! arrive, and they are encoded into their batches at once, so an epoch is never stashed whole
//! and records waiting in an open object hold no memory beyond the batch's. Such epochs are
//! not durable (not acknowledged) until their objects are written, but they do not count
//! against the runner's in-flight bound, and the runner never closes objects because a source
//! waits: an object closes by its bounds (`max_bytes`, `max_records`, `max_age`), the memory
//! budget, the end of input or shutdown. So a slow stream writes objects of `max_age`, not one
//! per epoch.
//!
//! # Nothing partial is ever visible
//! - S3 and S3-compatible servers: a single `PUT` is atomic; a multipart upload becomes
//!   visible only when it completes, and is aborted on error or when the writer drops it.
//! - Local directory: an object `<dir>/<name>` is written as the hidden staging file
//!   `<dir>/.<name>.staging` (`LocalFileSystem` itself writes `.<name>.staging#<n>` first: a
//!   put, or part by part at their offsets, fsynced), then renamed to `<name>` once whole
//!   (atomic on POSIX, the directory fsynced); an aborted upload deletes it. **Final names**
//!   are exactly `<prefix><job>-<run>-w<worker>-<seq>.<ext>`: they never start with `.` and
//!   never end in `.staging` or `#<digits>`. A process killed mid-write can leave a staging
//!   file behind, under a name readers skip by convention (Spark, Hadoop and Hive ignore names
//!   starting with `.` or `_`); the next run of the same job removes them when its writers
//!   open: each writer the leftovers of its own worker index under the template's fixed prefix
//!   (worker 0 also those of worker indices the run does not have), never a file of the current
//!   run, of another job, or any other name.
//! - S3: a killed run can leave a multipart upload open (its parts are billed, never visible).
//!   `object_store` cannot list multipart uploads, so the sink cannot abort them at start:
//!   give the bucket a lifecycle rule that aborts incomplete multipart uploads (say
//!   `AbortIncompleteMultipartUpload` with `DaysAfterInitiation = 1`).
//! - Names are never reused: job name, run id (unique per run), worker index and a per-writer
//!   sequence number. A re-run after a crash writes new objects, so a record whose epoch was not
//!   acknowledged may appear twice (at-least-once), but never half.

mod config;
pub mod fault;
mod format;
#[cfg(feature = "s3")]
mod s3;
mod staging;
mod template;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use sluice::io::{Sink, SinkContext, SinkWriter};
use sluice::{BoxError, Message};

pub use crate::io::format::OutputFormat;
pub use config::{BatchConfig, Credentials, LocalSinkConfig, ObjectSinkConfig, S3SinkConfig};
pub use format::Compression;
#[cfg(feature = "s3")]
pub use s3::S3Options;
pub use template::PathTemplate;
pub use writer::{check_object_name, ObjectNames, WriterStats};

/// Errors of the object sink.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectSinkError {
    /// A path template that cannot be used.
    #[error("path template `{template}`: {reason}")]
    Template {
        /// The template as written.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting out of range or a store that cannot be built.
    #[error("object sink config: {0}")]
    Config(String),
    /// A rendered object path the store rejects.
    #[error("invalid object path `{path}`")]
    Path {
        /// The path.
        path: String,
        /// Why it is invalid.
        #[source]
        source: Arc<object_store::path::Error>,
    },
    /// Building an object's bytes failed.
    #[error("cannot encode object `{path}`")]
    Encode {
        /// The object path.
        path: String,
        /// The io error of the encoder.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The store did not take an object (after its own retries).
    #[error("cannot upload object `{path}`")]
    Upload {
        /// The object path.
        path: String,
        /// The store's error.
        #[source]
        source: Arc<object_store::Error>,
    },
    /// A local output directory that cannot be created or used.
    #[error("cannot use output directory `{path}`")]
    Directory {
        /// The directory.
        path: String,
        /// The io error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The destination cannot be listed before the run (missing bucket, bad credentials,
    /// unreachable endpoint).
    #[error("cannot reach the destination `{prefix}`")]
    Check {
        /// The fixed prefix of the path template.
        prefix: String,
        /// The store's error.
        source: Arc<object_store::Error>,
    },
    /// The destination cannot be written before the run (no permission, a read-only store).
    #[error("cannot write to the destination `{prefix}`")]
    CheckWrite {
        /// The fixed prefix of the path template.
        prefix: String,
        /// The store's error.
        source: Arc<object_store::Error>,
    },
    /// The writer was dropped before the batch holding an epoch's records was written.
    #[error("object writer closed before epoch {0} was written")]
    Closed(u64),
    /// An earlier upload of this writer failed, so nothing more is accepted.
    #[error("object sink stopped after an earlier failure")]
    Stopped(#[source] Box<ObjectSinkError>),
}

/// When a batch is closed and uploaded; whichever bound is reached first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchBounds {
    /// Bytes of encoded lines before compression. A batch never grows past this, except one
    /// holding a single larger record.
    pub max_bytes: usize,
    /// Records per batch.
    pub max_records: usize,
    /// Age of a batch's first record; checked by a timer at `max_age / 4` (at most every second).
    pub max_age: Duration,
}

impl Default for BatchBounds {
    /// 100 MB, 1 000 000 records, 60 s: Hindsight's S3 output batching.
    fn default() -> Self {
        BatchBounds {
            max_bytes: 100 * 1000 * 1000,
            max_records: 1_000_000,
            max_age: Duration::from_secs(60),
        }
    }
}

/// How much memory one writer's (one worker's) open batches may hold; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes held by open batches: compressor state, part buffers and bookkeeping. A budget
    /// below what one batch needs keeps one batch open at a time.
    pub max_open_bytes: usize,
    /// Open batches; opening one more closes the least recently written.
    pub max_open_batches: usize,
}

impl Default for MemoryBudget {
    /// 64 MiB and 256 batches per worker: room for about 150 gzip batches with their
    /// compressor state, or a few with whole parts.
    fn default() -> Self {
        MemoryBudget {
            max_open_bytes: 64 << 20,
            max_open_batches: 256,
        }
    }
}

/// How long [`Sink::check`] waits for the store.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Writes messages as batched, optionally gzipped, newline-delimited objects to any
/// `object_store` backend. Cheap to clone (the store is shared).
///
/// ```
/// use std::sync::Arc;
/// use object_store::memory::InMemory;
/// use sluice::{DeadLetter, MemorySink, MemorySource, Message, Pipeline};
/// use sluice_transforms::io::object::{Compression, ObjectSink, PathTemplate};
///
/// let store = Arc::new(InMemory::new());
/// let sink = ObjectSink::new(store.clone(), PathTemplate::parse("out/${kind:-none}/").unwrap())
///     .with_compression(Compression::None);
/// let input = vec![
///     Message::new("a").with_attribute("kind", "x"),
///     Message::new("b"),
///     // a 300-byte folder name cannot exist: this record is refused, alone
///     Message::new("c").with_attribute("kind", "k".repeat(300)),
/// ];
/// let refused = MemorySink::<DeadLetter>::new();
/// let dead = refused.clone();
/// Pipeline::new("doc")
///     .run(move |p| {
///         let mut dead_letters = p.dead_letters();
///         p.read("in", MemorySource::from(input.clone()))
///             .write("out", sink.clone())
///             .failures_to(&mut dead_letters);
///         dead_letters.write("dead_letters", dead.clone());
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(refused.records()[0].original.payload, "c");
/// ```
#[derive(Clone, Debug)]
pub struct ObjectSink {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) template: PathTemplate,
    pub(crate) format: OutputFormat,
    pub(crate) compression: Compression,
    pub(crate) bounds: BatchBounds,
    pub(crate) kind: String,
    pub(crate) part_size: usize,
    pub(crate) min_part_size: usize,
    pub(crate) budget: MemoryBudget,
    /// Set on a local directory: objects are written under hidden staging names and renamed,
    /// and a writer removes the staging files earlier runs left (see the module docs).
    pub(crate) leftovers: Option<staging::Leftovers>,
}

/// The part size of a sink on any store (S3 included): 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The part size of a sink on a local directory or in memory: 64 KiB. A local part is one
/// write to the staging file, so its size only sets the write granularity, while every open
/// batch may hold up to a part beside its compressor (416 KiB for gzip): with ~40 open paths
/// per worker (the decoder job), 1 MiB parts held ~35 MB per worker more than 64 KiB parts,
/// and 256 KiB parts ~8 MB more, for no measurable speed.
pub const LOCAL_PART_SIZE: usize = 64 << 10;
/// The smallest part S3 takes (but for an object's last): 5 MiB.
pub const S3_MIN_PART_SIZE: usize = 5 << 20;

impl ObjectSink {
    /// A sink on any store, format [`OutputFormat::Json`], gzip, [`BatchBounds::default`],
    /// [`MemoryBudget::default`], parts of [`DEFAULT_PART_SIZE`].
    pub fn new(store: Arc<dyn ObjectStore>, template: PathTemplate) -> Self {
        ObjectSink {
            store,
            template,
            format: OutputFormat::default(),
            compression: Compression::default(),
            bounds: BatchBounds::default(),
            kind: "object".to_string(),
            part_size: DEFAULT_PART_SIZE,
            min_part_size: 1,
            budget: MemoryBudget::default(),
            leftovers: None,
        }
    }

    /// A sink writing under the local directory `dir` (created if missing), in parts of
    /// [`LOCAL_PART_SIZE`]. Files are fsynced and renamed into place, so an object is durable
    /// and whole once its epoch resolves.
    pub fn local(
        dir: impl AsRef<std::path::Path>,
        template: PathTemplate,
    ) -> Result<Self, ObjectSinkError> {
        let dir = dir.as_ref();
        let dir_err = |e: std::io::Error| ObjectSinkError::Directory {
            path: dir.display().to_string(),
            source: Arc::new(e),
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ObjectSinkError::Config(format!("directory `{}`: {e}", dir.display())))?
            .with_fsync(true);
        let mut sink = ObjectSink::new(Arc::new(store), template)
            .with_kind("file")
            .with_part_size(LOCAL_PART_SIZE);
        sink.leftovers = Some(staging::Leftovers::new(dir));
        Ok(sink)
    }

    /// A sink on an in-memory store (tests), in parts of [`LOCAL_PART_SIZE`]; clones of
    /// `store` see what was written.
    pub fn memory(store: object_store::memory::InMemory, template: PathTemplate) -> Self {
        ObjectSink::new(Arc::new(store), template)
            .with_kind("memory")
            .with_part_size(LOCAL_PART_SIZE)
    }

    /// A sink on S3 or an S3-compatible server, in parts of [`DEFAULT_PART_SIZE`] and never
    /// below [`S3_MIN_PART_SIZE`].
    #[cfg(feature = "s3")]
    pub fn s3(options: &S3Options, template: PathTemplate) -> Result<Self, ObjectSinkError> {
        let mut sink = ObjectSink::new(Arc::new(options.build()?), template).with_kind("s3");
        sink.min_part_size = S3_MIN_PART_SIZE;
        Ok(sink)
    }

    /// A sink from its config on `store` (the caller builds the store: directory, bucket).
    pub fn from_config(
        store: Arc<dyn ObjectStore>,
        config: &ObjectSinkConfig,
    ) -> Result<Self, ObjectSinkError> {
        Ok(ObjectSink::new(store, config.path.clone())
            .with_format(config.format)
            .with_compression(config.compression)
            .with_batch(config.batch.bounds()?)
            .with_budget(config.batch.budget())
            .with_part_size(config.batch.part_size.unwrap_or(DEFAULT_PART_SIZE)))
    }

    /// How records become lines.
    pub fn with_format(mut self, format: OutputFormat) -> Self {
        self.format = format;
        self
    }

    /// Compression of each object.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// When batches close. Zero bounds are raised to 1 (byte and record bounds) and 1 ms (age).
    pub fn with_batch(mut self, bounds: BatchBounds) -> Self {
        self.bounds = BatchBounds {
            max_bytes: bounds.max_bytes.max(1),
            max_records: bounds.max_records.max(1),
            max_age: bounds.max_age.max(Duration::from_millis(1)),
        };
        self
    }

    /// The kind reported to the runner (`file`, `s3`, `memory`, ...).
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Compressed bytes an open batch buffers before they go to the store as one part of a
    /// multipart upload; an object that stays below one part is written with a single put.
    /// Raised to [`S3_MIN_PART_SIZE`] on S3 (which refuses smaller parts) and to 1 elsewhere.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(self.min_part_size).max(1);
        self
    }

    /// How much memory each writer's open batches may hold. Zero limits are raised to 1.
    pub fn with_budget(mut self, budget: MemoryBudget) -> Self {
        self.budget = MemoryBudget {
            max_open_bytes: budget.max_open_bytes.max(1),
            max_open_batches: budget.max_open_batches.max(1),
        };
        self
    }

    /// The part size in effect.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The memory budget in effect.
    pub fn budget(&self) -> MemoryBudget {
        self.budget
    }

    /// The path template.
    pub fn template(&self) -> &PathTemplate {
        &self.template
    }

    /// The batch bounds in effect.
    pub fn bounds(&self) -> BatchBounds {
        self.bounds
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Opens a writer outside a pipeline (tests, tools): `runtime` runs the uploads and the age
    /// timer, `names` makes the object names.
    pub fn open_writer(
        &self,
        runtime: tokio::runtime::Handle,
        names: ObjectNames,
    ) -> writer::ObjectWriter {
        writer::ObjectWriter::new(self.clone(), runtime, names)
    }
}

impl Sink for ObjectSink {
    type Input = Message;

    fn kind(&self) -> &str {
        &self.kind
    }

    /// A record whose rendered path cannot be an object name is refused, not the batch.
    fn can_reject(&self) -> bool {
        true
    }

    /// Lists the template's fixed prefix once, then writes and removes an empty probe object
    /// (`<prefix>/.sluice-healthcheck-<n>`, a hidden name): a missing bucket, wrong or
    /// read-only credentials or an unreachable endpoint fail here, before any record is read,
    /// with the store's reason. A probe that cannot be removed is a warning.
    fn check(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        self.check_list(ctx)?;
        self.check_write(ctx)
    }

    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        let names = ObjectNames::new(ctx.job_name(), ctx.run_id(), ctx.worker_index());
        if let Some(leftovers) = &self.leftovers {
            leftovers.remove_for(
                &names,
                self.template.fixed_prefix(),
                ctx.worker_index(),
                ctx.peers(),
            );
        }
        Ok(Box::new(self.open_writer(ctx.runtime().clone(), names)))
    }
}

impl ObjectSink {
    fn check_write(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        use object_store::ObjectStoreExt;
        let prefix = self.template.fixed_prefix().trim_end_matches('/');
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(".sluice-healthcheck-{}-{nanos}", std::process::id());
        let probe = if prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{prefix}/{name}"))
        };
        let put = ctx.runtime().block_on(async {
            tokio::time::timeout(
                CHECK_TIMEOUT,
                self.store
                    .put(&probe, object_store::PutPayload::from_static(b"")),
            )
            .await
        });
        match put {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Box::new(ObjectSinkError::CheckWrite {
                    prefix: prefix.to_string(),
                    source: Arc::new(e),
                }))
            }
            Err(_) => {
                return Err(format!(
                    "cannot write to `{prefix}` within {}s: the store does not answer",
                    CHECK_TIMEOUT.as_secs()
                )
                .into())
            }
        }
        let deleted = ctx.runtime().block_on(async {
            tokio::time::timeout(CHECK_TIMEOUT, self.store.delete(&probe)).await
        });
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(probe = %probe, "the health check's probe object could not be removed");
        }
        Ok(())
    }

    fn check_list(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        let prefix = self.template.fixed_prefix().trim_end_matches('/');
        let path = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
        let listing = ctx.runtime().block_on(async {
            tokio::time::timeout(CHECK_TIMEOUT, self.store.list_with_delimiter(path.as_ref())).await
        });
        match listing {
            Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(Box::new(ObjectSinkError::Check {
                prefix: prefix.to_string(),
                source: Arc::new(e),
            })),
            Err(_) => Err(format!(
                "cannot list `{prefix}` within {}s: the store does not answer",
                CHECK_TIMEOUT.as_secs()
            )
            .into()),
        }
    }
}

pub use writer::ObjectWriter;

#[cfg(test)]
mod tests;
