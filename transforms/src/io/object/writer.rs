//! One worker's writer: open batches per rendered prefix, each compressing into a part buffer
//! that goes to the store one part at a time; the memory budget; per-epoch completion
//! tracking; uploads and the age timer on the runner's tokio runtime.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice::io::{DurableFuture, Epoch, Rejection, SinkWriter, StreamingWriter, WriteFuture};
use sluice::{BoxError, Failure, Message};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use super::format::Encoder;
use super::staging::staging_name;
use super::{ObjectSink, ObjectSinkError};

/// Builds object names that never collide: `<prefix><job>-<run_id>-w<worker>-<seq>.<ext>`.
/// The run id is unique per run, the worker index per worker of a run (across processes), and
/// the sequence number per object of a writer. Names contain no `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNames {
    stem: String,
    job: String,
    run: String,
}

impl ObjectNames {
    /// Names for worker `worker` of run `run_id` of job `job`. Characters other than ASCII
    /// letters, digits, `_`, `-` and `.` are replaced by `_`.
    pub fn new(job: &str, run_id: &str, worker: usize) -> Self {
        let (job, run) = (clean(job), clean(run_id));
        ObjectNames {
            stem: format!("{job}-{run}-w{worker:04}"),
            job,
            run,
        }
    }

    /// The job's name as it appears in object names.
    pub(crate) fn job(&self) -> &str {
        &self.job
    }

    /// The run id as it appears in object names.
    pub(crate) fn run(&self) -> &str {
        &self.run
    }

    /// The object name (without prefix) of sequence number `seq` with extension `ext`
    /// (e.g. `ndjson.gz`).
    pub fn name(&self, seq: u64, ext: &str) -> String {
        format!("{}-{seq:06}.{ext}", self.stem)
    }
}

/// Prefixes remembered as valid per writer; past this the set starts over (a template with
/// a high-cardinality attribute must not grow memory without bound).
const MAX_CHECKED_PREFIXES: usize = 4096;

/// The longest path segment local file systems take.
const MAX_SEGMENT_BYTES: usize = 255;
/// The longest key S3 takes.
const MAX_KEY_BYTES: usize = 1024;

/// Whether `name` can be an object's name on every store the sink writes to: at most 1024
/// bytes, no path segment over 255 bytes, and a path `object_store` takes as it is. The sink
/// refuses a record whose rendered prefix fails this (with the reason returned here).
///
/// ```
/// use sluice_transforms::io::object::check_object_name;
/// assert!(check_object_name("telemetry/main/v4/a.ndjson.gz").is_ok());
/// assert!(check_object_name(&"x".repeat(300)).is_err());
/// assert!(check_object_name("a//b").is_err());
/// ```
pub fn check_object_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the object name is {} bytes, over the limit of {MAX_KEY_BYTES}",
            name.len()
        ));
    }
    if let Some(long) = name.split('/').find(|s| s.len() > MAX_SEGMENT_BYTES) {
        return Err(format!(
            "a path segment is {} bytes, over the limit of {MAX_SEGMENT_BYTES}",
            long.len()
        ));
    }
    Path::parse(name).map(|_| ()).map_err(|e| e.to_string())
}

fn clean(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if c.is_empty() {
        "_".to_string()
    } else {
        c
    }
}

/// Parts of one object uploading at once; later parts wait in the object's queue (counted in
/// [`ObjectWriter::held_bytes`]).
const PARTS_IN_FLIGHT: usize = 4;

/// Room made for a batch's list of epochs to grow on an append.
const EPOCHS_SLACK: usize = 64;

/// One worker's writer of an [`ObjectSink`]; see the module docs for the contract.
pub struct ObjectWriter {
    shared: Arc<Shared>,
    /// Rendered prefixes already checked to make valid object names.
    valid_prefixes: HashSet<String>,
    prefix: String,
    line: Vec<u8>,
    scratch: String,
}

/// What one writer has done so far; see [`ObjectWriter::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Objects written whole (visible in the store).
    pub objects: u64,
    /// Bytes of those objects as stored (after compression).
    pub object_bytes: u64,
    /// Records in those objects.
    pub records: u64,
    /// Batches closed before any of their bounds to stay within the memory budget or the cap
    /// on open batches.
    pub closed_early: u64,
    /// The most bytes open batches held at once (see [`ObjectWriter::open_bytes`]).
    pub peak_open_bytes: usize,
}

struct Shared {
    sink: ObjectSink,
    runtime: tokio::runtime::Handle,
    names: ObjectNames,
    extension: String,
    /// The length of an object name without its prefix (a little more, for long sequence
    /// numbers).
    stem_len: usize,
    /// Bytes handed to uploads (queued or uploading parts, last parts, whole small objects)
    /// and not yet taken by the store.
    uploading: Arc<AtomicUsize>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    batches: HashMap<String, Batch>,
    epochs: HashMap<Epoch, EpochWait>,
    next_seq: u64,
    /// Records appended so far: the clock of "least recently written".
    tick: u64,
    /// The sum of [`Batch::held`] over `batches`.
    open_bytes: usize,
    stats: WriterStats,
    failed: Option<ObjectSinkError>,
}

struct Batch {
    /// The object's full name; fixed when the batch opens, as its first part may go early.
    name: String,
    encoder: Encoder,
    /// The multipart upload, once a part was full.
    stream: Option<PartStream>,
    records: usize,
    /// Encoded bytes before compression.
    bytes: usize,
    opened: Instant,
    last_write: u64,
    /// Memory held, as last counted into [`State::open_bytes`].
    held: usize,
    epochs: Vec<Epoch>,
}

impl Batch {
    /// What the batch holds besides its encoder: its map entry (twice: the table keeps
    /// free slots), key and name.
    fn fixed_bytes(prefix: &str, name: &str) -> usize {
        2 * std::mem::size_of::<(String, Batch)>() + prefix.len() + name.len()
    }

    fn held_bytes(&self, prefix: &str) -> usize {
        Self::fixed_bytes(prefix, &self.name)
            + self.encoder.held_bytes()
            + self.epochs.capacity() * std::mem::size_of::<Epoch>()
    }
}

/// Why a batch closes, for logs and [`WriterStats::closed_early`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// `max_records` or `max_bytes`.
    Full,
    Age,
    Flush,
    /// To keep open batches within `max_open_bytes`.
    Budget,
    /// To keep open batches within `max_open_batches`.
    Cap,
}

#[derive(Default)]
struct EpochWait {
    /// Batches (open or uploading) holding records of this epoch.
    pending: usize,
    waiters: Vec<oneshot::Sender<Result<(), ObjectSinkError>>>,
}

/// Bytes handed to the store, counted in [`Shared::uploading`] until dropped (after the store
/// took them, or when the upload is abandoned).
struct HeldPart {
    data: Bytes,
    counted: usize,
    counter: Arc<AtomicUsize>,
}

impl HeldPart {
    fn new(buf: Vec<u8>, counter: &Arc<AtomicUsize>) -> Self {
        let counted = buf.capacity();
        counter.fetch_add(counted, Ordering::SeqCst);
        HeldPart {
            data: Bytes::from(buf),
            counted,
            counter: counter.clone(),
        }
    }

    fn payload(&self) -> PutPayload {
        PutPayload::from(self.data.clone())
    }
}

impl Drop for HeldPart {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.counted, Ordering::SeqCst);
    }
}

enum Part {
    Data(HeldPart),
    /// Upload what is queued, then complete the object.
    Finish,
}

/// An object going up in parts: the queue to its upload task. Dropping it without
/// [`PartStream::finish`] aborts the upload (nothing becomes visible).
struct PartStream {
    parts: mpsc::UnboundedSender<Part>,
    task: JoinHandle<Option<Result<usize, ObjectSinkError>>>,
}

impl PartStream {
    /// Sends the last bytes and completes the object; its size in bytes.
    async fn finish(self, name: &str, last: HeldPart) -> Result<usize, ObjectSinkError> {
        // A send fails only if the upload already ended with an error, returned below.
        if !last.data.is_empty() {
            let _ = self.parts.send(Part::Data(last));
        }
        let _ = self.parts.send(Part::Finish);
        match self.task.await {
            Ok(Some(result)) => result,
            Ok(None) => Err(task_error(name, "the upload was abandoned")),
            Err(e) => Err(task_error(name, &e.to_string())),
        }
    }
}

fn task_error(name: &str, why: &str) -> ObjectSinkError {
    ObjectSinkError::Upload {
        path: name.to_string(),
        source: Arc::new(object_store::Error::Generic {
            store: "sluice",
            source: why.to_string().into(),
        }),
    }
}

impl ObjectWriter {
    pub(crate) fn new(
        sink: ObjectSink,
        runtime: tokio::runtime::Handle,
        names: ObjectNames,
    ) -> Self {
        let extension = format!(
            "{}{}",
            sink.format.extension(),
            sink.compression.extension()
        );
        let max_age = sink.bounds.max_age;
        let stem_len = names.name(0, &extension).len() + 4;
        let shared = Arc::new(Shared {
            sink,
            runtime: runtime.clone(),
            names,
            extension,
            stem_len,
            uploading: Arc::new(AtomicUsize::new(0)),
            state: Mutex::new(State::default()),
        });
        runtime.spawn(age_timer(Arc::downgrade(&shared), max_age));
        ObjectWriter {
            shared,
            valid_prefixes: Default::default(),
            prefix: String::new(),
            line: Vec::new(),
            scratch: String::new(),
        }
    }

    /// Number of open (not yet closed) batches.
    pub fn open_batches(&self) -> usize {
        self.shared.lock().batches.len()
    }

    /// Bytes the open batches hold: compressor state, part buffers, bookkeeping. Kept within
    /// [`MemoryBudget::max_open_bytes`](super::MemoryBudget::max_open_bytes) (unless one batch
    /// alone needs more).
    pub fn open_bytes(&self) -> usize {
        self.shared.lock().open_bytes
    }

    /// All the memory this writer holds for objects: [`ObjectWriter::open_bytes`] plus the
    /// bytes handed to uploads that the store has not taken yet (parts queued or in flight,
    /// last parts and small objects being put).
    pub fn held_bytes(&self) -> usize {
        self.open_bytes() + self.shared.uploading.load(Ordering::SeqCst)
    }

    /// What this writer has done so far.
    pub fn stats(&self) -> WriterStats {
        self.shared.lock().stats
    }

    /// Appends `records` of `epoch`; see [`SinkWriter::write`].
    /// Records whose rendered prefix cannot make an object name (a segment over 255 bytes, a
    /// key over 1024 bytes, characters the store refuses) are refused, each on its own: one
    /// poison record never fails a batch.
    pub fn write_records(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let refused = match self.append_records(epoch, records) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        };
        let durable = self.durable_epoch(epoch);
        Box::pin(async move {
            durable.await?;
            Ok(refused)
        })
    }

    /// Encodes `records` of `epoch` into their open batches (see [`StreamingWriter::append`]):
    /// the records themselves are not kept. Returns those refused for their path.
    pub fn append_records(
        &mut self,
        epoch: Epoch,
        records: Vec<Message>,
    ) -> Result<Vec<Rejection<Message>>, ObjectSinkError> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if let Some(e) = &st.failed {
            return Err(ObjectSinkError::Stopped(Box::new(e.clone())));
        }
        let mut refused = Vec::new();
        for m in records {
            shared.sink.template.render_into(&m, &mut self.prefix);
            if !self.valid_prefixes.contains(self.prefix.as_str()) {
                let sample = format!("{}{}", self.prefix, shared.names.name(0, &shared.extension));
                match check_object_name(&sample) {
                    Ok(()) => {
                        if self.valid_prefixes.len() >= MAX_CHECKED_PREFIXES {
                            self.valid_prefixes.clear();
                        }
                        self.valid_prefixes.insert(self.prefix.clone());
                    }
                    Err(why) => {
                        refused.push(Rejection::new(
                            m,
                            Failure::new(format!("cannot write to `{}`: {why}", self.prefix))
                                .with_exception_class(
                                    "sluice_transforms::io::object::InvalidObjectName",
                                ),
                        ));
                        continue;
                    }
                }
            }
            self.line.clear();
            shared
                .sink
                .format
                .write_record_with(&m, &mut self.scratch, &mut self.line);
            shared.append(&mut st, &self.prefix, &self.line, epoch);
        }
        Ok(refused)
    }

    /// A future that resolves when every record appended for `epoch` so far is in a written
    /// object (at once when none waits); see [`StreamingWriter::durable`].
    pub fn durable_epoch(
        &mut self,
        epoch: Epoch,
    ) -> impl std::future::Future<Output = Result<(), ObjectSinkError>> + Send + 'static {
        let mut st = self.shared.lock();
        let failed = st.failed.clone();
        let rx = match (failed, st.epochs.get_mut(&epoch)) {
            (Some(e), _) => Err(ObjectSinkError::Stopped(Box::new(e))),
            (None, None) => Ok(None),
            (None, Some(wait)) => {
                let (tx, rx) = oneshot::channel();
                wait.waiters.push(tx);
                Ok(Some(rx))
            }
        };
        drop(st);
        async move {
            match rx? {
                None => Ok(()),
                Some(rx) => match rx.await {
                    Ok(r) => r,
                    // The writer went away with the batch unwritten: the epoch is not durable.
                    Err(_) => Err(ObjectSinkError::Closed(epoch)),
                },
            }
        }
    }

    /// Closes every open batch and starts its upload; see [`SinkWriter::flush`].
    pub fn flush_all(&mut self) {
        self.shared.close_all(|_| true, Closing::Flush);
    }
}

impl SinkWriter<Message> for ObjectWriter {
    fn write(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        self.write_records(epoch, records)
    }

    fn flush(&mut self) {
        self.flush_all();
    }

    /// Records are encoded into open batches as they arrive; what the batches hold is bounded
    /// by the [`MemoryBudget`](super::MemoryBudget), so the runner need not stash epochs nor
    /// close objects early when a source waits.
    fn streaming(&mut self) -> Option<&mut dyn StreamingWriter<Message>> {
        Some(self)
    }
}

impl StreamingWriter<Message> for ObjectWriter {
    fn append(
        &mut self,
        epoch: Epoch,
        records: Vec<Message>,
    ) -> Result<Vec<Rejection<Message>>, BoxError> {
        Ok(self.append_records(epoch, records)?)
    }

    fn durable(&mut self, epoch: Epoch) -> DurableFuture {
        let durable = self.durable_epoch(epoch);
        Box::pin(async move { Ok(durable.await?) })
    }

    /// Parts and small objects handed to the store and not yet taken.
    fn backlog(&self) -> Option<Arc<AtomicUsize>> {
        Some(self.shared.uploading.clone())
    }
}

impl Drop for ObjectWriter {
    /// Open batches are abandoned: their multipart uploads abort, and the futures of their
    /// epochs fail with [`ObjectSinkError::Closed`]. Objects already closed finish uploading.
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.batches.clear();
        st.open_bytes = 0;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the maps half-updated in a way that matters more than
        // stopping the pipeline would; keep going with what is there.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one encoded record to the batch of `prefix`, opening, shipping a part, closing
    /// and making room as needed.
    fn append(self: &Arc<Self>, st: &mut State, prefix: &str, line: &[u8], epoch: Epoch) {
        let sink = &self.sink;
        let bounds = sink.bounds;
        let budget = sink.budget;
        // A record that would take its batch past `max_bytes` starts the next batch.
        if st
            .batches
            .get(prefix)
            .is_some_and(|b| b.bytes + line.len() > bounds.max_bytes)
        {
            self.close(st, prefix, Closing::Full);
        }
        // Make room first, so open batches never hold more than the budget, even for a moment:
        // what this batch will hold after the append is bounded before it happens.
        let (held_now, held_next) = match st.batches.get(prefix) {
            Some(b) => (
                b.held,
                b.held - b.encoder.held_bytes() + b.encoder.held_after(line.len()) + EPOCHS_SLACK,
            ),
            None => {
                while st.batches.len() >= budget.max_open_batches {
                    if !self.close_least_recent(st, None, Closing::Cap) {
                        break;
                    }
                }
                let fixed = 2 * std::mem::size_of::<(String, Batch)>()
                    + 2 * prefix.len()
                    + self.stem_len
                    + EPOCHS_SLACK;
                let fresh = Encoder::new_held_after(sink.compression, sink.part_size, line.len());
                (0, fixed + fresh)
            }
        };
        while st.open_bytes - held_now + held_next > budget.max_open_bytes {
            if !self.close_least_recent(st, Some(prefix), Closing::Budget) {
                break;
            }
        }

        st.tick += 1;
        let State {
            batches,
            epochs,
            next_seq,
            tick,
            open_bytes,
            stats,
            ..
        } = st;
        let batch = match batches.get_mut(prefix) {
            Some(b) => b,
            None => {
                let name = format!("{prefix}{}", self.names.name(*next_seq, &self.extension));
                *next_seq += 1;
                batches.entry(prefix.to_string()).or_insert(Batch {
                    name,
                    encoder: Encoder::new(sink.compression, sink.part_size),
                    stream: None,
                    records: 0,
                    bytes: 0,
                    opened: Instant::now(),
                    last_write: 0,
                    held: 0,
                    epochs: Vec::new(),
                })
            }
        };
        batch.encoder.append(line);
        batch.records += 1;
        batch.bytes += line.len();
        batch.last_write = *tick;
        if batch.epochs.last() != Some(&epoch) && !batch.epochs.contains(&epoch) {
            batch.epochs.push(epoch);
            epochs.entry(epoch).or_default().pending += 1;
        }
        let held = batch.held_bytes(prefix);
        *open_bytes = *open_bytes - batch.held + held;
        batch.held = held;
        stats.peak_open_bytes = stats.peak_open_bytes.max(*open_bytes);
        if batch.encoder.buffered() >= sink.part_size {
            let part = HeldPart::new(batch.encoder.take_part(), &self.uploading);
            let stream = batch
                .stream
                .get_or_insert_with(|| self.start_stream(&batch.name));
            // A send fails only when the upload already failed, which failed the writer.
            let _ = stream.parts.send(Part::Data(part));
            let held = batch.held_bytes(prefix);
            *open_bytes = *open_bytes - batch.held + held;
            batch.held = held;
        }
        if batch.records >= bounds.max_records || batch.bytes >= bounds.max_bytes {
            self.close(st, prefix, Closing::Full);
        }
    }

    /// Closes the least recently written batch other than `except`; false when there is none.
    fn close_least_recent(
        self: &Arc<Self>,
        st: &mut State,
        except: Option<&str>,
        why: Closing,
    ) -> bool {
        let victim = st
            .batches
            .iter()
            .filter(|(p, _)| Some(p.as_str()) != except)
            .min_by_key(|(_, b)| b.last_write)
            .map(|(p, _)| p.clone());
        match victim {
            Some(p) => {
                self.close(st, &p, why);
                true
            }
            None => false,
        }
    }

    fn close_all(self: &Arc<Self>, pick: impl Fn(&Batch) -> bool, why: Closing) {
        let mut st = self.lock();
        let prefixes: Vec<String> = st
            .batches
            .iter()
            .filter(|(_, b)| pick(b))
            .map(|(p, _)| p.clone())
            .collect();
        for p in prefixes {
            self.close(&mut st, &p, why);
        }
    }

    /// Starts the multipart upload of `name`, fed part by part.
    fn start_stream(self: &Arc<Self>, name: &str) -> PartStream {
        let (parts, rx) = mpsc::unbounded_channel();
        let task = self.runtime.spawn(stream_object(
            self.sink.store.clone(),
            name.to_string(),
            self.sink.leftovers.is_some(),
            rx,
            Arc::downgrade(self),
        ));
        PartStream { parts, task }
    }

    /// Takes the batch of `prefix` out of the open set, ends its encoding and completes its
    /// object on the runtime: one put when it never filled a part, else the last part and the
    /// multipart completion.
    fn close(self: &Arc<Self>, st: &mut State, prefix: &str, why: Closing) {
        let Some(batch) = st.batches.remove(prefix) else {
            return;
        };
        st.open_bytes -= batch.held;
        if matches!(why, Closing::Budget | Closing::Cap) {
            st.stats.closed_early += 1;
        }
        let Batch {
            name,
            encoder,
            stream,
            records,
            epochs,
            ..
        } = batch;
        let last = encoder
            .finish()
            .map(|bytes| HeldPart::new(bytes, &self.uploading));
        let shared = self.clone();
        self.runtime.spawn(async move {
            let result = match last {
                Err(e) => Err(ObjectSinkError::Encode {
                    path: name.clone(),
                    source: Arc::new(e),
                }),
                Ok(last) => match stream {
                    None => shared.put_whole(&name, last).await,
                    Some(stream) => stream.finish(&name, last).await,
                },
            };
            match &result {
                Ok(bytes) => {
                    tracing::debug!(object = %name, records, bytes, reason = ?why, "object written")
                }
                Err(e) => {
                    tracing::warn!(object = %name, error = %sluice::chain(e), "object not written")
                }
            }
            shared.complete(&epochs, records, result);
        });
    }

    /// Uploads an object that fits in one part with a single put.
    async fn put_whole(&self, name: &str, body: HeldPart) -> Result<usize, ObjectSinkError> {
        let path = parse_path(name)?;
        let len = body.data.len();
        let staged = self.staged(name)?;
        self.sink
            .store
            .put(staged.as_ref().unwrap_or(&path), body.payload())
            .await
            .map_err(|e| upload_error(name, e))?;
        if let Some(staged) = staged {
            publish(self.sink.store.as_ref(), &staged, &path, name).await?;
        }
        Ok(len)
    }

    /// Where object `name` is written before it is whole, if not under its own name (a local
    /// directory: a hidden staging name, renamed into place).
    fn staged(&self, name: &str) -> Result<Option<Path>, ObjectSinkError> {
        match self.sink.leftovers {
            Some(_) => parse_path(&staging_name(name)).map(Some),
            None => Ok(None),
        }
    }

    /// An object ended: resolve the epochs it was the last pending batch of, or fail the
    /// writer.
    fn complete(&self, epochs: &[Epoch], records: usize, result: Result<usize, ObjectSinkError>) {
        let mut st = self.lock();
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(e) => return fail(&mut st, e),
        };
        st.stats.objects += 1;
        st.stats.object_bytes += bytes as u64;
        st.stats.records += records as u64;
        for epoch in epochs {
            let Some(wait) = st.epochs.get_mut(epoch) else {
                continue;
            };
            wait.pending = wait.pending.saturating_sub(1);
            if wait.pending == 0 {
                if let Some(wait) = st.epochs.remove(epoch) {
                    for tx in wait.waiters {
                        let _ = tx.send(Ok(()));
                    }
                }
            }
        }
    }
}

/// An object failed: the writer stops. Every epoch still waiting fails now (none of them will
/// be acknowledged), and open batches are abandoned (their uploads abort), so nothing more is
/// written after an error.
fn fail(st: &mut State, e: ObjectSinkError) {
    for (_, wait) in st.epochs.drain() {
        for tx in wait.waiters {
            let _ = tx.send(Err(e.clone()));
        }
    }
    st.batches.clear();
    st.open_bytes = 0;
    st.failed.get_or_insert(e);
}

fn parse_path(name: &str) -> Result<Path, ObjectSinkError> {
    Path::parse(name).map_err(|e| ObjectSinkError::Path {
        path: name.to_string(),
        source: Arc::new(e),
    })
}

fn upload_error(name: &str, e: object_store::Error) -> ObjectSinkError {
    ObjectSinkError::Upload {
        path: name.to_string(),
        source: Arc::new(e),
    }
}

/// The upload task of one object sent in parts. Ends with `None` when the writer abandoned
/// the object (the upload is aborted); a failure also stops the writer at once.
async fn stream_object(
    store: Arc<dyn ObjectStore>,
    name: String,
    staged: bool,
    mut parts: mpsc::UnboundedReceiver<Part>,
    shared: Weak<Shared>,
) -> Option<Result<usize, ObjectSinkError>> {
    let result = upload_parts(store.as_ref(), &name, staged, &mut parts).await;
    if let Some(Err(e)) = &result {
        tracing::warn!(object = %name, error = %sluice::chain(e), "object not written");
        if let Some(shared) = shared.upgrade() {
            fail(&mut shared.lock(), e.clone());
        }
    }
    result
}

async fn upload_parts(
    store: &dyn ObjectStore,
    name: &str,
    staged: bool,
    parts: &mut mpsc::UnboundedReceiver<Part>,
) -> Option<Result<usize, ObjectSinkError>> {
    let path = match parse_path(name) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let staging = match staged.then(|| parse_path(&staging_name(name))).transpose() {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    let mut upload = match store.put_multipart(staging.as_ref().unwrap_or(&path)).await {
        Ok(u) => u,
        Err(e) => return Some(Err(upload_error(name, e))),
    };
    let part_result = |done: Result<object_store::Result<()>, JoinError>| match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(upload_error(name, e)),
        Err(e) => Err(task_error(name, &e.to_string())),
    };
    let mut uploading = JoinSet::new();
    let mut size = 0;
    let outcome: Option<Result<(), ObjectSinkError>> = loop {
        tokio::select! {
            // Reap finished parts first, so a failure stops the object while parts still come.
            biased;
            Some(done) = uploading.join_next(), if !uploading.is_empty() => {
                if let Err(e) = part_result(done) {
                    break Some(Err(e));
                }
            }
            part = parts.recv(), if uploading.len() < PARTS_IN_FLIGHT => match part {
                Some(Part::Data(part)) => {
                    size += part.data.len();
                    let put = upload.put_part(part.payload());
                    uploading.spawn(async move {
                        let result = put.await;
                        drop(part);
                        result
                    });
                }
                Some(Part::Finish) => break Some(Ok(())),
                None => break None,
            },
        }
    };
    let outcome = match outcome {
        Some(Ok(())) => {
            let mut all = Ok(());
            while let Some(done) = uploading.join_next().await {
                if let Err(e) = part_result(done) {
                    all = Err(e);
                    break;
                }
            }
            match all {
                Ok(()) => match upload.complete().await {
                    Ok(_) => {
                        if let Some(staging) = &staging {
                            if let Err(e) = publish(store, staging, &path, name).await {
                                return Some(Err(e));
                            }
                        }
                        return Some(Ok(size));
                    }
                    Err(e) => Some(Err(upload_error(name, e))),
                },
                Err(e) => Some(Err(e)),
            }
        }
        other => other,
    };
    uploading.shutdown().await;
    // Whatever went wrong, leave nothing behind: the staging file or the S3 upload's parts.
    if let Err(e) = upload.abort().await {
        tracing::debug!(object = %name, error = %e, "aborting an upload failed");
    }
    outcome.map(|r| r.map(|()| size))
}

/// Renames a whole object from its staging name to its final one (atomic on a local
/// directory); on failure, removes the staging file.
async fn publish(
    store: &dyn ObjectStore,
    staging: &Path,
    path: &Path,
    name: &str,
) -> Result<(), ObjectSinkError> {
    if let Err(e) = store.rename(staging, path).await {
        if let Err(e) = store.delete(staging).await {
            tracing::debug!(object = %name, error = %e, "removing a staging file failed");
        }
        return Err(upload_error(name, e));
    }
    Ok(())
}

/// Closes batches older than `max_age`, until the writer is gone.
async fn age_timer(shared: Weak<Shared>, max_age: Duration) {
    let tick = (max_age / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.close_all(|b| b.opened.elapsed() >= max_age, Closing::Age);
    }
}
