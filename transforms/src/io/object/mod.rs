//! The object sink: batches of records written as whole objects to a local directory, S3 (or an
//! S3-compatible server) or memory, through the `object_store` crate.
//!
//! ```text
//! records ──render path template──▶ one open batch per prefix ──bound hit / age / flush──▶
//!   finished buffer (gzip or plain) ──one put (multipart when big)──▶ <prefix><job>-<run>-w<worker>-<seq>.ndjson.gz
//! ```
//!
//! # The epoch contract
//! [`SinkWriter::write`] appends an epoch's records to the open
//! batches and returns a future that resolves only when every object holding any of them is
//! uploaded. A batch closes when it reaches [`BatchBounds::max_bytes`] or
//! [`BatchBounds::max_records`], when it is [`BatchBounds::max_age`] old (a timer on the runner's
//! tokio runtime), or when the runner calls `flush`. A failed upload (after `object_store`'s own
//! retries) resolves the futures of all its epochs with an error, so the pipeline stops without
//! acknowledging them; later writes fail at once.
//!
//! # Nothing partial is ever visible
//! Each object is uploaded once, whole, from a finished in-memory buffer:
//! - S3 and S3-compatible servers: a single `PUT` is atomic; objects above
//!   [`ObjectSink::with_multipart_threshold`] use a multipart upload, which becomes visible only
//!   when it completes (and is aborted on error).
//! - Local directory: `LocalFileSystem` writes a staging file `<name>#<n>` beside the target,
//!   fsyncs it and renames it into place (atomic on POSIX). A process killed mid-write can leave
//!   a staging file behind: its name ends in `#<digits>`, never in `.ndjson`/`.gz`/`.txt`, and
//!   `object_store` listings skip it; readers of the directory must ignore such names.
//! - Names are never reused: job name, run id (unique per run), worker index and a per-writer
//!   sequence number. A re-run after a crash writes new objects, so a record whose epoch was not
//!   acknowledged may appear twice (at-least-once), but never half.

mod config;
pub mod fault;
mod format;
#[cfg(feature = "s3")]
mod s3;
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
pub use writer::ObjectNames;

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
    #[error("object path `{path}`: {source}")]
    Path {
        /// The path.
        path: String,
        /// Why it is invalid.
        #[source]
        source: Arc<object_store::path::Error>,
    },
    /// Building an object's bytes failed.
    #[error("encoding object `{path}`: {source}")]
    Encode {
        /// The object path.
        path: String,
        /// The io error of the encoder.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The store did not take an object (after its own retries).
    #[error("uploading object `{path}`: {source}")]
    Upload {
        /// The object path.
        path: String,
        /// The store's error.
        #[source]
        source: Arc<object_store::Error>,
    },
    /// A local output directory that cannot be created or used.
    #[error("output directory `{path}`: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// The io error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The destination cannot be listed before the run (missing bucket, bad credentials,
    /// unreachable endpoint).
    #[error("cannot reach the destination `{prefix}`: {source}")]
    Check {
        /// The fixed prefix of the path template.
        prefix: String,
        /// The store's error.
        source: Arc<object_store::Error>,
    },
    /// The writer was dropped before the batch holding an epoch's records was written.
    #[error("object writer closed before epoch {0} was written")]
    Closed(u64),
    /// An earlier upload of this writer failed, so nothing more is accepted.
    #[error("object sink stopped after an earlier failure: {0}")]
    Stopped(Box<ObjectSinkError>),
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
    pub(crate) multipart_threshold: usize,
    pub(crate) multipart_part_size: usize,
}

/// Objects larger than this are uploaded in parts by default.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
/// Part size of multipart uploads by default (S3's minimum is 5 MiB).
pub const DEFAULT_MULTIPART_PART_SIZE: usize = 16 * 1024 * 1024;

impl ObjectSink {
    /// A sink on any store, format [`OutputFormat::Json`], gzip, [`BatchBounds::default`].
    pub fn new(store: Arc<dyn ObjectStore>, template: PathTemplate) -> Self {
        ObjectSink {
            store,
            template,
            format: OutputFormat::default(),
            compression: Compression::default(),
            bounds: BatchBounds::default(),
            kind: "object".to_string(),
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            multipart_part_size: DEFAULT_MULTIPART_PART_SIZE,
        }
    }

    /// A sink writing under the local directory `dir` (created if missing). Files are fsynced
    /// and renamed into place, so an object is durable and whole once its epoch resolves.
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
        Ok(ObjectSink::new(Arc::new(store), template).with_kind("file"))
    }

    /// A sink on an in-memory store (tests); clones of `store` see what was written.
    pub fn memory(store: object_store::memory::InMemory, template: PathTemplate) -> Self {
        ObjectSink::new(Arc::new(store), template).with_kind("memory")
    }

    /// A sink on S3 or an S3-compatible server.
    #[cfg(feature = "s3")]
    pub fn s3(options: &S3Options, template: PathTemplate) -> Result<Self, ObjectSinkError> {
        Ok(ObjectSink::new(Arc::new(options.build()?), template).with_kind("s3"))
    }

    /// A sink from its config on `store` (the caller builds the store: directory, bucket).
    pub fn from_config(
        store: Arc<dyn ObjectStore>,
        config: &ObjectSinkConfig,
    ) -> Result<Self, ObjectSinkError> {
        Ok(ObjectSink::new(store, config.path.clone())
            .with_format(config.format)
            .with_compression(config.compression)
            .with_batch(config.batch.bounds()?))
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

    /// Objects above `bytes` are uploaded as multipart uploads of `part_size` bytes (at least
    /// 5 MiB on S3).
    pub fn with_multipart_threshold(mut self, bytes: usize, part_size: usize) -> Self {
        self.multipart_threshold = bytes;
        self.multipart_part_size = part_size.max(1);
        self
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

    /// Lists the template's fixed prefix once: a missing bucket, wrong credentials or an
    /// unreachable endpoint fail here, before any record is read, with the store's reason.
    fn check(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
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

    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        let names = ObjectNames::new(ctx.job_name(), ctx.run_id(), ctx.worker_index());
        Ok(Box::new(self.open_writer(ctx.runtime().clone(), names)))
    }
}

pub use writer::ObjectWriter;

#[cfg(test)]
mod tests;
