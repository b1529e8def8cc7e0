//! The `Source` and `Sink` traits: how connectors meet the runner's epoch contract.
//!
//! A source reads records in **epochs** (batches bounded by records, bytes and time). A sink is
//! handed the complete records of an epoch and returns a future that resolves once they are
//! durably written; the runner holds the epoch open until then. The source is told which epochs
//! are done on every sink of every worker ([`SourceReader::ack`]) and acknowledges its input
//! (commits offsets, acks messages) for those only: at-least-once delivery by construction.

use std::future::Future;
use std::pin::Pin;

use crate::error::BoxError;
use crate::Element;

/// A timely timestamp: epochs are numbered in increasing order.
pub type Epoch = u64;

/// The future a sink returns for a write: resolves when the records are durable.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

/// A bounded or unbounded input, opened once per worker.
pub trait Source: Send + Sync + 'static {
    /// The records it reads.
    type Output: Element;

    /// The kind of input, reported as a dead letter's `input_type` (`kafka`, `file`, `memory`).
    fn kind(&self) -> &str;

    /// The input itself, reported as a dead letter's `input` (topic names, a path pattern).
    fn describe(&self) -> String;

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
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) waker: SourceWaker,
    pub(crate) job_name: String,
}

impl SourceContext {
    /// This worker's global index, in `0..peers()`.
    pub fn worker_index(&self) -> usize {
        self.worker_index
    }
    /// The number of workers in the whole pipeline (all processes).
    pub fn peers(&self) -> usize {
        self.peers
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

    /// Opens this worker's writer. Called on the worker thread after the pipeline has built.
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Self::Input>>, BoxError>;
}

/// One worker's writer of a [`Sink`].
pub trait SinkWriter<T>: 'static {
    /// Takes the complete records of `epoch` (called once per epoch that has records here) and
    /// returns a future that resolves when they are durable. The future runs on the runner's
    /// tokio runtime. A batching writer may resolve it only when the batch holding these records
    /// is written, so it must honour [`SinkWriter::flush`].
    fn write(&mut self, epoch: Epoch, records: Vec<T>) -> WriteFuture;

    /// Start making everything accepted so far durable without waiting for more input: called
    /// at the end of input, on shutdown, and when sources wait on unacknowledged epochs.
    fn flush(&mut self) {}
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
