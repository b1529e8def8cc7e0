//! Sink decorators that inject faults and latency, for at-least-once and backpressure tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::io::{CheckContext, Epoch, Rejection, Sink, SinkContext, SinkWriter, WriteFuture};
use sluice::BoxError;

/// The error a [`FailingSink`] returns for the writes it fails.
#[derive(Debug, thiserror::Error)]
#[error("injected write failure (write #{write})")]
pub struct InjectedFailure {
    /// The number of the failed write, from 1, over all workers.
    pub write: usize,
}

#[derive(Clone, Copy, Debug)]
enum FailurePolicy {
    First(usize),
    Every(usize),
}

/// Wraps a sink and fails some of its writes without passing them on: the first `n`, or every
/// `n`th. Clones share the write count, so the policy holds across workers.
#[derive(Clone)]
pub struct FailingSink<S> {
    inner: S,
    policy: FailurePolicy,
    writes: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl<S: Sink> FailingSink<S> {
    /// Fails the first `n` writes, then passes writes on.
    pub fn first(n: usize, inner: S) -> Self {
        Self::with(FailurePolicy::First(n), inner)
    }

    /// Fails every `n`th write (the `n`th, `2n`th, ...).
    pub fn every(n: usize, inner: S) -> Self {
        Self::with(FailurePolicy::Every(n.max(1)), inner)
    }

    fn with(policy: FailurePolicy, inner: S) -> Self {
        FailingSink {
            inner,
            policy,
            writes: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Writes failed so far.
    pub fn failed_writes(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

impl<S: Sink> Sink for FailingSink<S> {
    type Input = S::Input;
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn can_reject(&self) -> bool {
        self.inner.can_reject()
    }
    fn check(&self, ctx: &CheckContext) -> Result<(), BoxError> {
        self.inner.check(ctx)
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<S::Input>>, BoxError> {
        Ok(Box::new(FailingWriter {
            inner: self.inner.open(ctx)?,
            policy: self.policy,
            writes: self.writes.clone(),
            failed: self.failed.clone(),
        }))
    }
}

struct FailingWriter<T> {
    inner: Box<dyn SinkWriter<T>>,
    policy: FailurePolicy,
    writes: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl<T: Send + 'static> SinkWriter<T> for FailingWriter<T> {
    fn write(&mut self, epoch: Epoch, records: Vec<T>) -> WriteFuture<T> {
        let write = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = match self.policy {
            FailurePolicy::First(n) => write <= n,
            FailurePolicy::Every(n) => write.is_multiple_of(n),
        };
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Box::pin(std::future::ready(Err::<Vec<Rejection<T>>, BoxError>(
                Box::new(InjectedFailure { write }),
            )));
        }
        self.inner.write(epoch, records)
    }
    fn flush(&mut self) {
        self.inner.flush()
    }
}

/// What a [`SlowSink`] observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowSinkStats {
    /// Writes completed.
    pub writes: usize,
    /// The most writes pending at once (handed over, not yet durable), all workers.
    pub max_pending_writes: usize,
    /// The most records pending at once, all workers.
    pub max_pending_records: usize,
}

/// Wraps a sink and makes every write take `delay` before it becomes durable, counting how much
/// is pending at once.
#[derive(Clone)]
pub struct SlowSink<S> {
    inner: S,
    delay: Duration,
    state: Arc<SlowState>,
}

#[derive(Default)]
struct SlowState {
    writes: AtomicUsize,
    pending_writes: AtomicUsize,
    pending_records: AtomicUsize,
    max_pending_writes: AtomicUsize,
    max_pending_records: AtomicUsize,
}

impl<S: Sink> SlowSink<S> {
    /// Delays each write of `inner` by `delay`.
    pub fn new(delay: Duration, inner: S) -> Self {
        SlowSink {
            inner,
            delay,
            state: Arc::default(),
        }
    }

    /// What was observed so far.
    pub fn stats(&self) -> SlowSinkStats {
        SlowSinkStats {
            writes: self.state.writes.load(Ordering::SeqCst),
            max_pending_writes: self.state.max_pending_writes.load(Ordering::SeqCst),
            max_pending_records: self.state.max_pending_records.load(Ordering::SeqCst),
        }
    }
}

impl<S: Sink> Sink for SlowSink<S> {
    type Input = S::Input;
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn can_reject(&self) -> bool {
        self.inner.can_reject()
    }
    fn check(&self, ctx: &CheckContext) -> Result<(), BoxError> {
        self.inner.check(ctx)
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<S::Input>>, BoxError> {
        Ok(Box::new(SlowWriter {
            inner: self.inner.open(ctx)?,
            delay: self.delay,
            state: self.state.clone(),
        }))
    }
}

struct SlowWriter<T> {
    inner: Box<dyn SinkWriter<T>>,
    delay: Duration,
    state: Arc<SlowState>,
}

impl<T: Send + 'static> SinkWriter<T> for SlowWriter<T> {
    fn write(&mut self, epoch: Epoch, records: Vec<T>) -> WriteFuture<T> {
        let n = records.len();
        let state = self.state.clone();
        let writes = state.pending_writes.fetch_add(1, Ordering::SeqCst) + 1;
        let recs = state.pending_records.fetch_add(n, Ordering::SeqCst) + n;
        state.max_pending_writes.fetch_max(writes, Ordering::SeqCst);
        state.max_pending_records.fetch_max(recs, Ordering::SeqCst);
        let inner = self.inner.write(epoch, records);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let result = inner.await;
            state.pending_writes.fetch_sub(1, Ordering::SeqCst);
            state.pending_records.fetch_sub(n, Ordering::SeqCst);
            state.writes.fetch_add(1, Ordering::SeqCst);
            result
        })
    }
    fn flush(&mut self) {
        self.inner.flush()
    }
}

/// Wraps a sink and makes the `n`th write's future panic (counted over all workers, from 1):
/// the runner must end the run with an error naming the sink, not hold the epoch forever.
#[derive(Clone)]
pub struct PanickingSink<S> {
    inner: S,
    nth: usize,
    writes: Arc<AtomicUsize>,
}

impl<S: Sink> PanickingSink<S> {
    /// Panics inside the future of the `nth` write.
    pub fn nth(nth: usize, inner: S) -> Self {
        PanickingSink {
            inner,
            nth: nth.max(1),
            writes: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<S: Sink> Sink for PanickingSink<S> {
    type Input = S::Input;
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn can_reject(&self) -> bool {
        self.inner.can_reject()
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<S::Input>>, BoxError> {
        Ok(Box::new(PanickingWriter {
            inner: self.inner.open(ctx)?,
            nth: self.nth,
            writes: self.writes.clone(),
        }))
    }
}

struct PanickingWriter<T> {
    inner: Box<dyn SinkWriter<T>>,
    nth: usize,
    writes: Arc<AtomicUsize>,
}

impl<T: Send + 'static> SinkWriter<T> for PanickingWriter<T> {
    fn write(&mut self, epoch: Epoch, records: Vec<T>) -> WriteFuture<T> {
        let write = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let inner = self.inner.write(epoch, records);
        let nth = self.nth;
        Box::pin(async move {
            if write == nth {
                panic!("injected panic in write #{write}");
            }
            inner.await
        })
    }
    fn flush(&mut self) {
        self.inner.flush()
    }
}
