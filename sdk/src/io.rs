//! The `Source` and `Sink` traits: how connectors meet the runner's epoch contract.
//!
//! A source reads records in **epochs** (batches bounded by records, bytes and time). A sink is
//! handed the complete records of an epoch and returns a future that resolves once they are
//! durably written; the runner holds the epoch open until then. The source is told which epochs
//! are done on every sink of every worker ([`SourceReader::ack`]) and acknowledges its input
//! (commits offsets, acks messages) for those only: at-least-once delivery by construction.
//!
//! ## Acknowledging sources: the epoch ledger and typed positions
//!
//! A reader remembers, per partition of its input (a Kafka partition, a file, a Pub/Sub ack
//! id), how far each epoch read, and acknowledges only what [`SourceReader::ack`] says is
//! durable, contiguously: [`EpochLedger`](crate::EpochLedger) is that bookkeeping, shared by
//! every acknowledging source (memory, file, Kafka, Pub/Sub). Each record may carry where it
//! was read ([`SourcePosition`](crate::SourcePosition), a small typed value that crosses
//! process exchanges); it becomes dead-letter attributes (`input_file`/`input_line`,
//! `kafka_topic`/`kafka_partition`/`kafka_offset`, ...) only when a dead letter is made.
//!
//! A minimal acknowledging source: it reads numbers from one partition and commits the offset
//! that every sink made durable, as a Kafka reader commits its consumer group's offsets.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use sluice::io::{ReadState, ReadStatus, Source, SourceContext, SourceReader};
//! use sluice::{BoxError, Epoch, EpochLedger, MemorySink, Pipeline};
//!
//! #[derive(Clone)]
//! struct Numbers {
//!     len: u64,
//!     committed: Arc<Mutex<u64>>,
//! }
//!
//! struct NumbersReader {
//!     next: u64,
//!     len: u64,
//!     ledger: EpochLedger<(), u64>,
//!     committed: Arc<Mutex<u64>>,
//! }
//!
//! impl Source for Numbers {
//!     type Output = u64;
//!     fn kind(&self) -> &str { "numbers" }
//!     fn describe(&self) -> String { format!("0..{}", self.len) }
//!     fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<u64>>, BoxError> {
//!         // one partition, read by worker 0, from the committed offset on
//!         let start = *self.committed.lock().unwrap();
//!         let len = if ctx.worker_index() == 0 { self.len } else { start };
//!         Ok(Box::new(NumbersReader {
//!             next: start,
//!             len,
//!             ledger: EpochLedger::new(),
//!             committed: self.committed.clone(),
//!         }))
//!     }
//! }
//!
//! impl SourceReader<u64> for NumbersReader {
//!     fn read(&mut self, out: &mut Vec<u64>, max: usize) -> Result<ReadStatus, BoxError> {
//!         let end = self.len.min(self.next + max as u64);
//!         if end > self.next {
//!             out.extend(self.next..end);
//!             self.next = end;
//!             self.ledger.record((), end); // the next offset to read
//!         }
//!         let state = if end == self.len { ReadState::Exhausted } else { ReadState::More };
//!         Ok(ReadStatus::new(8 * out.len(), state)) // sizes, roughly
//!     }
//!     fn end_epoch(&mut self, epoch: Epoch) {
//!         self.ledger.end_epoch(epoch);
//!     }
//!     fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
//!         for ((), offset) in self.ledger.ack(done) {
//!             *self.committed.lock().unwrap() = offset; // commit
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let source = Numbers { len: 1000, committed: Arc::default() };
//! let out = MemorySink::new();
//! let (s, o) = (source.clone(), out.clone());
//! Pipeline::new("numbers")
//!     .workers(2)
//!     .run(move |p| {
//!         p.read("read", s.clone()).write("write", o.clone());
//!         Ok(())
//!     })
//!     .unwrap();
//! assert_eq!(out.len(), 1000);
//! assert_eq!(*source.committed.lock().unwrap(), 1000);
//! ```
//!
//! ## Rejections: a sink may refuse single records
//!
//! A service can refuse one record and take the rest (a BigQuery row error, a Kafka message over
//! `message.max.bytes`, an object path that cannot exist). A write therefore resolves with the
//! records it refused, each with a reason ([`Rejection`]); the runner turns them into dead
//! letters (the record as the original message, `error_type` the sink step's name unless the
//! failure names one) on the stream [`PCollection::write`](crate::PCollection::write) returns,
//! which must be routed like any failure stream. An epoch is durable when each of its records
//! is written or durably dead-lettered. A failure of the whole write (the service is down)
//! is an `Err`: the pipeline stops without acknowledging, never dead letters.
//!
//! When the dead-letter sink itself refuses a dead letter, it is retried once reduced (payload
//! cut, plus `payload_sha256`, `payload_bytes`, `payload_truncated`); only a refusal of that
//! stops the pipeline.
//!
//! A sink that refuses records says so with [`Sink::can_reject`]; the runner stops the pipeline
//! with an error if one that said it never rejects does, so nothing is dropped silently.
//!
//! ```
//! use sluice::{Epoch, Failure, MemorySink, Pipeline, Rejection, Sink, SinkContext, SinkWriter, WriteFuture, BoxError};
//!
//! /// Keeps even numbers, refuses odd ones.
//! #[derive(Clone)]
//! struct EvenOnly(MemorySink<u64>);
//! impl Sink for EvenOnly {
//!     type Input = u64;
//!     fn kind(&self) -> &str { "even" }
//!     fn can_reject(&self) -> bool { true }
//!     fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<u64>>, BoxError> {
//!         Ok(Box::new(self.clone()))
//!     }
//! }
//! impl SinkWriter<u64> for EvenOnly {
//!     fn write(&mut self, epoch: Epoch, records: Vec<u64>) -> WriteFuture<u64> {
//!         let (even, odd): (Vec<u64>, Vec<u64>) = records.into_iter().partition(|x| x % 2 == 0);
//!         let write = self.0.write(epoch, even);
//!         Box::pin(async move {
//!             write.await?;
//!             Ok(odd.into_iter().map(|x| Rejection::new(x, Failure::new("odd"))).collect())
//!         })
//!     }
//! }
//!
//! let (out, dead) = (MemorySink::new(), MemorySink::new());
//! let (o, d) = (out.clone(), dead.clone());
//! Pipeline::new("even").run(move |p| {
//!     let mut dead_letters = p.dead_letters();
//!     p.read("read", sluice::MemorySource::from(vec![1u64, 2, 3]))
//!         .write("write", EvenOnly(o.clone()))
//!         .failures_to(&mut dead_letters);
//!     dead_letters.write("dead_letters", d.clone());
//!     Ok(())
//! }).unwrap();
//! assert_eq!(out.records(), vec![2]);
//! let refused: Vec<_> = dead.records().iter().map(|d| d.original.payload.clone()).collect();
//! assert_eq!(refused.len(), 2);
//! assert!(dead.records().iter().all(|d| d.error_type == "write" && d.error_message == "odd"));
//! ```

use std::future::Future;
use std::pin::Pin;

use crate::dead_letter::Failure;
use crate::error::BoxError;
use crate::Element;

/// A timely timestamp: epochs are numbered in increasing order.
pub type Epoch = u64;

/// The future a sink returns for a write: resolves when the records are durable, with the
/// records the service refused (empty when it took them all). `Err` means the write as a whole
/// failed: nothing of it may be acknowledged.
pub type WriteFuture<T> =
    Pin<Box<dyn Future<Output = Result<Vec<Rejection<T>>, BoxError>> + Send + 'static>>;

/// A record a sink refused, handed back with the reason; it becomes a dead letter.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection<T> {
    /// The record, as the sink was given it.
    pub record: T,
    /// Why it was refused (`error_type` defaults to the sink step's name).
    pub failure: Failure,
}

impl<T> Rejection<T> {
    /// A refusal of `record` because of `failure`.
    pub fn new(record: T, failure: impl Into<Failure>) -> Self {
        Rejection {
            record,
            failure: failure.into(),
        }
    }
}

/// What [`Source::check`] and [`Sink::check`] may use: the runtime for async clients.
#[derive(Clone)]
pub struct CheckContext {
    runtime: tokio::runtime::Handle,
}

impl CheckContext {
    /// A context on this tokio runtime. It must be a multi-thread runtime: checks call
    /// `Handle::block_on`, which does not drive a current-thread runtime's IO or timers.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        CheckContext { runtime }
    }
    /// The runtime for async clients (use `block_on` from a non-async caller).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

/// A bounded or unbounded input, opened once per worker.
pub trait Source: Send + Sync + 'static {
    /// The records it reads.
    type Output: Element;

    /// The kind of input, reported as a dead letter's `input_type` (`kafka`, `file`, `memory`).
    fn kind(&self) -> &str;

    /// The input itself, reported as a dead letter's `input` (topic names, a path pattern).
    fn describe(&self) -> String;

    /// Verifies, before any record is read, what can be verified without data: that inputs
    /// exist, credentials work, the service is reachable. Health checks and `validate --check`
    /// call it; the default checks nothing.
    fn check(&self, ctx: &CheckContext) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Opens this worker's share of the input (`ctx.worker_index()` of `ctx.peers()`).
    /// Called on the worker thread after the pipeline has built; must not block for long.
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<Self::Output>>, BoxError>;
}

/// One worker's reader of a [`Source`]. Lives on the worker thread; never blocks.
pub trait SourceReader<T>: 'static {
    /// Appends at most `max_records` records that are available now to `out`, without blocking.
    fn read(&mut self, out: &mut Vec<T>, max_records: usize) -> Result<ReadStatus, BoxError>;

    /// The records returned since the previous call form epoch `epoch`. Readers that
    /// acknowledge input remember the input positions reached by this epoch, in an
    /// [`EpochLedger`](crate::EpochLedger).
    fn end_epoch(&mut self, epoch: Epoch) {
        let _ = epoch;
    }

    /// Every epoch lower than `done` is durably written by every sink: acknowledge its input
    /// (what [`EpochLedger::ack`](crate::EpochLedger::ack) returns). `Epoch::MAX` means
    /// everything read so far.
    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        let _ = done;
        Ok(())
    }

    /// Processing stopped (end of input, shutdown or a failure). What was acknowledged stays
    /// acknowledged; nothing else may be.
    fn close(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Progress of a bounded input: `(done, total)` in the reader's own unit (bytes, records).
    fn progress(&self) -> Option<(u64, u64)> {
        None
    }

    /// Where an unbounded input stands now, per partition this reader reads (a Kafka
    /// partition's offsets and lag, a Pub/Sub subscription's outstanding messages): what the
    /// metrics endpoint and the status page show. The runner asks a few times a second; the
    /// answer must be cheap (no request to the service). The default reports nothing.
    fn positions(&self) -> Vec<PartitionPosition> {
        Vec::new()
    }
}

/// One figure of where a source stands in one partition of its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The partition: `topic/3` for Kafka, the subscription for Pub/Sub.
    pub partition: String,
    /// What the figure is.
    pub kind: PositionKind,
    /// The figure. Figures of one partition from several workers (each worker's share of a
    /// Pub/Sub subscription) are added up.
    pub value: i64,
}

impl PartitionPosition {
    /// A figure of `partition`.
    pub fn new(partition: impl Into<String>, kind: PositionKind, value: i64) -> Self {
        PartitionPosition {
            partition: partition.into(),
            kind,
            value,
        }
    }
}

/// What a [`PartitionPosition`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PositionKind {
    /// The next offset the pipeline reads (Kafka's consumed position).
    Offset,
    /// The offset the service confirmed committed: where a restart resumes.
    Committed,
    /// Records in the partition beyond [`PositionKind::Offset`] (Kafka: the high watermark
    /// minus the position).
    Lag,
    /// Messages delivered to the pipeline and not yet acknowledged (Pub/Sub).
    Outstanding,
    /// Messages acknowledged since the start (Pub/Sub).
    Acked,
}

impl PositionKind {
    /// The Prometheus-style name of the figure (prefixed `sluice_source_`).
    pub fn name(self) -> &'static str {
        match self {
            PositionKind::Offset => "offset",
            PositionKind::Committed => "committed_offset",
            PositionKind::Lag => "lag",
            PositionKind::Outstanding => "outstanding",
            PositionKind::Acked => "acked",
        }
    }
}

/// What a [`SourceReader::read`] call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStatus {
    /// Bytes of the records returned by this call, for the epoch and backpressure byte bounds.
    pub bytes: usize,
    /// What the reader expects next.
    pub state: ReadState,
}

impl ReadStatus {
    /// A status with this many bytes and this state.
    pub fn new(bytes: usize, state: ReadState) -> Self {
        ReadStatus { bytes, state }
    }
}

/// The state of a reader after a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadState {
    /// More records may be available right away.
    More,
    /// Nothing is available now: the reader calls [`SourceWaker::wake`] when there is, or is
    /// polled again within the epoch's age bound.
    Idle,
    /// Nothing more comes until earlier records are acknowledged: the service's own bound
    /// on unacknowledged input is reached (Pub/Sub flow control, a broker's window). The
    /// runner closes the open epoch and asks every sink, streaming ones included, to make
    /// what it holds durable, instead of waiting for objects to close by their age.
    AwaitingAcks,
    /// Close the epoch after these records (sources with explicit epochs).
    EndOfEpoch,
    /// A bounded input is finished.
    Exhausted,
}

/// What a source learns about the worker that opens it.
#[derive(Clone)]
pub struct SourceContext {
    pub(crate) worker_index: usize,
    pub(crate) peers: usize,
    pub(crate) process_index: usize,
    pub(crate) local_workers: usize,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) waker: SourceWaker,
    pub(crate) job_name: String,
    pub(crate) step: String,
    pub(crate) process_state: ProcessState,
}

/// State the readers of one run's source step share within a process, by step and type.
pub(crate) type ProcessState = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<
            (String, std::any::TypeId),
            std::sync::Arc<dyn std::any::Any + Send + Sync>,
        >,
    >,
>;

impl SourceContext {
    /// Contexts for the `workers` workers of one process, for opening readers outside a
    /// pipeline (tools, tests): they share [`SourceContext::process_shared`] state as the
    /// workers of one run do, and their wakers do nothing.
    ///
    /// ```
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let workers = sluice::SourceContext::standalone_workers(runtime.handle().clone(), "tool", 2);
    /// assert_eq!(workers[1].worker_index(), 1);
    /// assert_eq!(workers[0].process_workers(), 0..2);
    /// let a = workers[0].process_shared(|| 7u32);
    /// assert!(std::sync::Arc::ptr_eq(&a, &workers[1].process_shared(|| 8u32)));
    /// ```
    pub fn standalone_workers(
        runtime: tokio::runtime::Handle,
        job_name: impl Into<String>,
        workers: usize,
    ) -> Vec<SourceContext> {
        let job_name = job_name.into();
        let process_state = ProcessState::default();
        let workers = workers.max(1);
        (0..workers)
            .map(|worker_index| SourceContext {
                worker_index,
                peers: workers,
                process_index: 0,
                local_workers: workers,
                runtime: runtime.clone(),
                waker: SourceWaker(std::sync::Arc::new(|| {})),
                job_name: job_name.clone(),
                step: "read".to_string(),
                process_state: process_state.clone(),
            })
            .collect()
    }

    /// This worker's global index, in `0..peers()`.
    pub fn worker_index(&self) -> usize {
        self.worker_index
    }
    /// The number of workers in the whole pipeline (all processes).
    pub fn peers(&self) -> usize {
        self.peers
    }
    /// The global indexes of this process's workers (all of `0..peers()` in one process):
    /// timely numbers a cluster's workers process by process.
    pub fn process_workers(&self) -> std::ops::Range<usize> {
        let first = self.process_index * self.local_workers;
        first..first + self.local_workers
    }
    /// A value shared by the readers this source step opens in this process during this run:
    /// the first caller builds it with `init`, the others get the same one. A source uses it
    /// to hand out work among the workers of a process (the file source's splits), where a
    /// fixed assignment would leave a worker idle while another still has a backlog. A later
    /// run, or another step reading the same source, gets a value of its own.
    pub fn process_shared<T: Send + Sync + 'static>(
        &self,
        init: impl FnOnce() -> T,
    ) -> std::sync::Arc<T> {
        let mut state = self
            .process_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (self.step.clone(), std::any::TypeId::of::<T>());
        if let Some(value) = state.get(&key) {
            if let Ok(value) = value.clone().downcast::<T>() {
                return value;
            }
        }
        let value = std::sync::Arc::new(init());
        state.insert(key, value.clone());
        value
    }
    /// The runner's tokio runtime, for async clients.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
    /// Wakes this source's operator from any thread (e.g. when an async client has data).
    pub fn waker(&self) -> SourceWaker {
        self.waker.clone()
    }
    /// The job's name.
    pub fn job_name(&self) -> &str {
        &self.job_name
    }
}

/// Schedules a source operator from any thread.
#[derive(Clone)]
pub struct SourceWaker(pub(crate) std::sync::Arc<dyn Fn() + Send + Sync>);

impl SourceWaker {
    /// Asks the worker to run the source again soon.
    pub fn wake(&self) {
        (self.0)()
    }
}

/// A durable output, opened once per worker.
pub trait Sink: Send + Sync + 'static {
    /// The records it writes.
    type Input: Element;

    /// The kind of output (`file`, `s3`, `memory`).
    fn kind(&self) -> &str;

    /// Whether writes may refuse single records ([`Rejection`]). The stream of refusals that
    /// [`PCollection::write`](crate::PCollection::write) returns must then be routed, or the
    /// pipeline does not build; a sink that says `false` and refuses a record stops the run.
    fn can_reject(&self) -> bool {
        false
    }

    /// Verifies, before any record is written, what can be verified without data: credentials,
    /// reachability, fixed (non-templated) destinations. The default checks nothing.
    fn check(&self, ctx: &CheckContext) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Opens this worker's writer. Called on the worker thread after the pipeline has built.
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Self::Input>>, BoxError>;
}

/// One worker's writer of a [`Sink`].
pub trait SinkWriter<T>: 'static {
    /// Takes the complete records of `epoch` (called once per epoch that has records here) and
    /// returns a future that resolves when they are durable. The future runs on the runner's
    /// tokio runtime. A batching writer may resolve it only when the batch holding these records
    /// is written, so it must honour [`SinkWriter::flush`]. Records the service refused come
    /// back as [`Rejection`]s: each record is either durable or handed back, never both.
    fn write(&mut self, epoch: Epoch, records: Vec<T>) -> WriteFuture<T>;

    /// Start making everything accepted so far durable without waiting for more input: called
    /// at the end of input, on shutdown, and (for writers that do not stream) when sources wait
    /// on unacknowledged epochs.
    fn flush(&mut self) {}

    /// This writer's streaming side, if it has one: the runner then hands it records as they
    /// arrive instead of stashing whole epochs for [`SinkWriter::write`].
    fn streaming(&mut self) -> Option<&mut dyn StreamingWriter<T>> {
        None
    }
}

/// The future of [`StreamingWriter::durable`]: resolves when every record appended for the
/// epoch is durable. `Err` means the writer failed: nothing of it may be acknowledged.
pub type DurableFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

/// A writer that takes an epoch's records as they arrive and holds none of them once
/// [`StreamingWriter::append`] returns (an object writer encodes them into an open object
/// whose memory it bounds itself): so records waiting in an open object hold no memory of the
/// pipeline, and do not count against the in-flight bounds until their object is written (see
/// [`InFlightBounds`](crate::InFlightBounds)). The runner never asks such a writer to flush
/// because a source waits: its objects close by their own bounds (size, age, memory budget),
/// at the end of input or on shutdown.
///
/// The contract, per epoch: any number of `append` calls, then one `durable` call once the
/// epoch's input is complete. Refusals are decided in `append` (no record is refused later),
/// so the epoch's refusals reach the dead-letter sink without waiting for its objects.
pub trait StreamingWriter<T> {
    /// Takes `records` of `epoch`; returns those refused, each with its reason. `Err` means the
    /// writer failed (an earlier upload failed): the pipeline stops.
    fn append(&mut self, epoch: Epoch, records: Vec<T>) -> Result<Vec<Rejection<T>>, BoxError>;

    /// Called once after the last `append` of `epoch`: resolves when all of its records are
    /// durable (at once if they already are).
    fn durable(&mut self, epoch: Epoch) -> DurableFuture;

    /// A gauge of the bytes this writer holds beyond its own bounded buffers: handed to the
    /// service and not yet taken (queued upload parts). The runner counts them against the
    /// in-flight byte bound, so a slow service slows the sources instead of growing memory.
    fn backlog(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
        None
    }
}

/// What a sink learns about the worker that opens it.
#[derive(Clone)]
pub struct SinkContext {
    pub(crate) worker_index: usize,
    pub(crate) peers: usize,
    pub(crate) process_index: usize,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) job_name: String,
    pub(crate) run_id: String,
}

impl SinkContext {
    /// A context for opening a writer outside a pipeline (tools, conformance tests): worker
    /// `worker_index` of `peers`, process 0, the IO futures on `runtime`.
    pub fn standalone(
        runtime: tokio::runtime::Handle,
        job_name: impl Into<String>,
        worker_index: usize,
        peers: usize,
    ) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        SinkContext {
            worker_index,
            peers: peers.max(1),
            process_index: 0,
            runtime,
            job_name: job_name.into(),
            run_id: format!("{}{:09}", now.as_secs(), now.subsec_nanos()),
        }
    }

    /// This worker's global index, in `0..peers()`.
    pub fn worker_index(&self) -> usize {
        self.worker_index
    }
    /// The number of workers in the whole pipeline.
    pub fn peers(&self) -> usize {
        self.peers
    }
    /// This process's index in a cluster (0 otherwise).
    pub fn process_index(&self) -> usize {
        self.process_index
    }
    /// The runner's tokio runtime, for async clients.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
    /// The job's name.
    pub fn job_name(&self) -> &str {
        &self.job_name
    }
    /// A string unique to this run of the pipeline (time-based, no `:`), so names built from it
    /// and the worker index never collide across workers, processes or restarts.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
}
