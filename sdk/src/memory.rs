//! In-memory sources and sinks that honour the epoch contract like real connectors: the doubles
//! for tests and examples. Clones share state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::dead_letter::Failure;
use crate::error::BoxError;
use crate::io::{
    Epoch, ReadState, ReadStatus, Rejection, Sink, SinkContext, SinkWriter, Source, SourceContext,
    SourceReader, SourceWaker, WriteFuture,
};
use crate::{Element, EpochLedger};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bounded source of records held in memory.
///
/// Records are shared out to workers round-robin. With [`MemorySource::from_epochs`] each inner
/// vector is read as one epoch (never merged with another; split only by the epoch bounds).
/// The source remembers which records were acknowledged, like committed offsets: a later run of
/// a clone reads only what was not acknowledged.
#[derive(Clone)]
pub struct MemorySource<T> {
    state: Arc<Mutex<BoundedState<T>>>,
}

struct BoundedState<T> {
    batches: Vec<Vec<T>>,
    explicit_epochs: bool,
    acked: Vec<bool>,
    opened: usize,
}

impl<T: Element> From<Vec<T>> for MemorySource<T> {
    fn from(records: Vec<T>) -> Self {
        let batches: Vec<Vec<T>> = records.into_iter().map(|r| vec![r]).collect();
        MemorySource::new(batches, false)
    }
}

impl<T: Element> MemorySource<T> {
    /// A source whose epochs are exactly these batches (batch `i` is read by worker
    /// `i % peers`).
    pub fn from_epochs(epochs: Vec<Vec<T>>) -> Self {
        MemorySource::new(epochs, true)
    }

    fn new(batches: Vec<Vec<T>>, explicit_epochs: bool) -> Self {
        let acked = vec![false; batches.len()];
        MemorySource {
            state: Arc::new(Mutex::new(BoundedState {
                batches,
                explicit_epochs,
                acked,
                opened: 0,
            })),
        }
    }

    /// Records whose epoch every sink made durable, in input order.
    pub fn acked(&self) -> Vec<T> {
        let s = lock(&self.state);
        s.batches
            .iter()
            .zip(&s.acked)
            .filter(|(_, a)| **a)
            .flat_map(|(b, _)| b.iter().cloned())
            .collect()
    }

    /// Indexes of the batches (records, for [`MemorySource::from`]) acknowledged so far.
    pub fn acked_batches(&self) -> Vec<usize> {
        let s = lock(&self.state);
        (0..s.acked.len()).filter(|i| s.acked[*i]).collect()
    }

    /// Whether every record was acknowledged.
    pub fn all_acked(&self) -> bool {
        lock(&self.state).acked.iter().all(|a| *a)
    }

    /// How many times a reader was opened (once per worker per run).
    pub fn times_opened(&self) -> usize {
        lock(&self.state).opened
    }
}

impl<T: Element> Source for MemorySource<T> {
    type Output = T;

    fn kind(&self) -> &str {
        "memory"
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<T>>, BoxError> {
        let mut s = lock(&self.state);
        s.opened += 1;
        let mine: VecDeque<usize> = (0..s.batches.len())
            .filter(|i| i % ctx.peers() == ctx.worker_index() && !s.acked[*i])
            .collect();
        Ok(Box::new(BoundedReader {
            state: self.state.clone(),
            explicit: s.explicit_epochs,
            mine,
            offset: 0,
            ledger: EpochLedger::new(),
        }))
    }
}

struct BoundedReader<T> {
    state: Arc<Mutex<BoundedState<T>>>,
    explicit: bool,
    mine: VecDeque<usize>,
    offset: usize,
    /// Batches read whole, by index, and the epoch that read their last record: a batch is
    /// acknowledged once every epoch that read part of it is durable.
    ledger: EpochLedger<usize, ()>,
}

impl<T: Element> SourceReader<T> for BoundedReader<T> {
    fn read(&mut self, out: &mut Vec<T>, max_records: usize) -> Result<ReadStatus, BoxError> {
        let state = lock(&self.state);
        let mut n = 0;
        while let Some(&b) = self.mine.front() {
            let batch = &state.batches[b];
            let take = (batch.len() - self.offset).min(max_records - n);
            out.extend_from_slice(&batch[self.offset..self.offset + take]);
            n += take;
            self.offset += take;
            if self.offset < batch.len() {
                return Ok(ReadStatus::new(
                    n * std::mem::size_of::<T>(),
                    ReadState::More,
                ));
            }
            self.mine.pop_front();
            self.offset = 0;
            self.ledger.record(b, ());
            if self.explicit {
                return Ok(ReadStatus::new(
                    n * std::mem::size_of::<T>(),
                    ReadState::EndOfEpoch,
                ));
            }
            if n == max_records {
                break;
            }
        }
        let state_after = if self.mine.is_empty() {
            ReadState::Exhausted
        } else {
            ReadState::More
        };
        Ok(ReadStatus::new(n * std::mem::size_of::<T>(), state_after))
    }

    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }

    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        let acked = self.ledger.ack(done);
        let mut state = lock(&self.state);
        for (b, ()) in acked {
            state.acked[b] = true;
        }
        Ok(())
    }
}

/// An unbounded in-memory source fed from another thread through a [`MemoryFeeder`]; it ends
/// when the feeder is closed (or the pipeline is shut down). Workers share the queue.
#[derive(Clone)]
pub struct UnboundedMemorySource<T> {
    state: Arc<Mutex<QueueState<T>>>,
}

/// Pushes records into an [`UnboundedMemorySource`].
#[derive(Clone)]
pub struct MemoryFeeder<T> {
    state: Arc<Mutex<QueueState<T>>>,
}

struct QueueState<T> {
    queue: VecDeque<T>,
    closed: bool,
    wakers: Vec<SourceWaker>,
    acked: u64,
}

impl<T: Element> UnboundedMemorySource<T> {
    /// A source and the feeder that fills it.
    pub fn new() -> (Self, MemoryFeeder<T>) {
        let state = Arc::new(Mutex::new(QueueState {
            queue: VecDeque::new(),
            closed: false,
            wakers: Vec::new(),
            acked: 0,
        }));
        (
            UnboundedMemorySource {
                state: state.clone(),
            },
            MemoryFeeder { state },
        )
    }

    /// Records acknowledged so far, all workers.
    pub fn acked_count(&self) -> u64 {
        lock(&self.state).acked
    }
}

impl<T: Element> MemoryFeeder<T> {
    /// Adds records.
    pub fn push(&self, records: impl IntoIterator<Item = T>) {
        let wakers = {
            let mut s = lock(&self.state);
            s.queue.extend(records);
            s.wakers.clone()
        };
        wakers.iter().for_each(SourceWaker::wake);
    }

    /// Ends the input once the queue is drained.
    pub fn close(&self) {
        let wakers = {
            let mut s = lock(&self.state);
            s.closed = true;
            s.wakers.clone()
        };
        wakers.iter().for_each(SourceWaker::wake);
    }

    /// Records not yet read.
    pub fn queued(&self) -> usize {
        lock(&self.state).queue.len()
    }
}

impl<T: Element> Source for UnboundedMemorySource<T> {
    type Output = T;
    fn kind(&self) -> &str {
        "memory"
    }
    fn describe(&self) -> String {
        "memory-queue".to_string()
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<T>>, BoxError> {
        lock(&self.state).wakers.push(ctx.waker());
        Ok(Box::new(QueueReader {
            state: self.state.clone(),
            ledger: EpochLedger::new(),
            read: 0,
            acked: 0,
        }))
    }
}

struct QueueReader<T> {
    state: Arc<Mutex<QueueState<T>>>,
    /// One partition (this reader's share of the queue), positioned by records read.
    ledger: EpochLedger<(), u64>,
    read: u64,
    acked: u64,
}

impl<T: Element> SourceReader<T> for QueueReader<T> {
    fn read(&mut self, out: &mut Vec<T>, max_records: usize) -> Result<ReadStatus, BoxError> {
        let mut s = lock(&self.state);
        let n = max_records.min(s.queue.len());
        out.extend(s.queue.drain(..n));
        if n > 0 {
            self.read += n as u64;
            self.ledger.record((), self.read);
        }
        let state = if !s.queue.is_empty() {
            ReadState::More
        } else if s.closed {
            ReadState::Exhausted
        } else {
            ReadState::Idle
        };
        Ok(ReadStatus::new(n * std::mem::size_of::<T>(), state))
    }
    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }
    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        if let Some(((), reached)) = self.ledger.ack(done).pop() {
            lock(&self.state).acked += reached - self.acked;
            self.acked = reached;
        }
        Ok(())
    }
}

/// Decides which records a [`MemorySink`] refuses, and why.
type RejectRule<T> = Arc<dyn Fn(&T) -> Option<String> + Send + Sync + std::panic::RefUnwindSafe>;

/// A sink that keeps what it is given in memory; writes are durable at once.
///
/// [`MemorySink::rejecting`] makes it refuse records like a service would (a row error, a
/// message over a size limit): they come back as [`Rejection`]s and become dead letters.
#[derive(Clone)]
pub struct MemorySink<T> {
    state: Arc<Mutex<SinkState<T>>>,
    reject: Option<RejectRule<T>>,
}

struct SinkState<T> {
    records: Vec<T>,
    writes: Vec<(Epoch, usize)>,
    rejected: usize,
    opened: usize,
}

impl<T: Element> Default for MemorySink<T> {
    fn default() -> Self {
        MemorySink {
            state: Arc::new(Mutex::new(SinkState {
                records: Vec::new(),
                writes: Vec::new(),
                rejected: 0,
                opened: 0,
            })),
            reject: None,
        }
    }
}

impl<T: Element> MemorySink<T> {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sink that refuses the records for which `rule` gives a reason.
    ///
    /// ```
    /// use sluice::{MemorySink, MemorySource, Pipeline};
    /// let out = MemorySink::rejecting(|x: &u64| (*x > 9).then(|| "too big".to_string()));
    /// let dead = MemorySink::new();
    /// let (o, d) = (out.clone(), dead.clone());
    /// Pipeline::new("limits").run(move |p| {
    ///     let mut dead_letters = p.dead_letters();
    ///     p.read("read", MemorySource::from(vec![1u64, 20]))
    ///         .write("write", o.clone())
    ///         .failures_to(&mut dead_letters);
    ///     dead_letters.write("dead_letters", d.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(out.records(), vec![1]);
    /// assert_eq!(dead.records()[0].error_message, "too big");
    /// assert_eq!(dead.records()[0].original.payload, "20");
    /// ```
    pub fn rejecting(
        rule: impl Fn(&T) -> Option<String> + Send + Sync + std::panic::RefUnwindSafe + 'static,
    ) -> Self {
        MemorySink {
            reject: Some(Arc::new(rule)),
            ..Self::default()
        }
    }

    /// Everything written, in write order.
    pub fn records(&self) -> Vec<T> {
        lock(&self.state).records.clone()
    }

    /// Everything written, sorted.
    pub fn sorted(&self) -> Vec<T>
    where
        T: Ord,
    {
        let mut v = self.records();
        v.sort();
        v
    }

    /// Records written so far.
    pub fn len(&self) -> usize {
        lock(&self.state).records.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records refused so far.
    pub fn rejected(&self) -> usize {
        lock(&self.state).rejected
    }

    /// Each write as `(epoch, records)`, in order.
    pub fn writes(&self) -> Vec<(Epoch, usize)> {
        lock(&self.state).writes.clone()
    }

    /// How many workers opened this sink (0: the pipeline never ran).
    pub fn times_opened(&self) -> usize {
        lock(&self.state).opened
    }
}

impl<T: Element> Sink for MemorySink<T> {
    type Input = T;
    fn kind(&self) -> &str {
        "memory"
    }
    fn can_reject(&self) -> bool {
        self.reject.is_some()
    }
    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, BoxError> {
        lock(&self.state).opened += 1;
        Ok(Box::new(self.clone()))
    }
}

impl<T: Element> SinkWriter<T> for MemorySink<T> {
    fn write(&mut self, epoch: Epoch, mut records: Vec<T>) -> WriteFuture<T> {
        let mut refused = Vec::new();
        if let Some(rule) = &self.reject {
            let mut kept = Vec::with_capacity(records.len());
            for r in records {
                match rule(&r) {
                    Some(reason) => refused.push(Rejection::new(r, Failure::new(reason))),
                    None => kept.push(r),
                }
            }
            records = kept;
        }
        let mut s = lock(&self.state);
        s.writes.push((epoch, records.len()));
        s.records.append(&mut records);
        s.rejected += refused.len();
        Box::pin(std::future::ready(Ok(refused)))
    }
}
