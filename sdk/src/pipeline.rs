//! `Pipeline`: options, the timely runner, and the builder a pipeline's closure receives.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Concatenate, Operator, Probe};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::scheduling::{Activator, SyncActivator};

use crate::error::{Error, Result};
use crate::io::{Epoch, Sink, Source};
use crate::metrics::Counter;
use crate::metrics::{Metrics, RunSummary};
use crate::pcollection::{DeadLetters, PCollection, Provenance, WithFailures, WriteResult};
use crate::DeadLetter;
use crate::Element;

/// How sources cut their input into epochs: an epoch closes when any bound is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochBounds {
    /// Records per epoch, per worker.
    pub max_records: usize,
    /// Bytes per epoch, per worker.
    pub max_bytes: usize,
    /// Age of a non-empty epoch; also how often an idle source advances time.
    pub max_age: Duration,
}

impl Default for EpochBounds {
    fn default() -> Self {
        EpochBounds {
            max_records: 10_000,
            max_bytes: 16 << 20,
            max_age: Duration::from_millis(200),
        }
    }
}

/// How much a source may read ahead: the backpressure bounds, per worker. Two things are
/// bounded: memory (epochs and bytes the pipeline holds) and unacknowledged input (what a
/// crash may re-read).
///
/// For memory, an epoch counts from when it is read until every sink has taken it: a sink that
/// does not stream takes an epoch when its write is durable (until then it holds the records);
/// a streaming sink ([`StreamingWriter`](crate::io::StreamingWriter), e.g. the object sink)
/// when the records are appended to its open objects, which it bounds itself. So records
/// waiting in an open object for its `max_age` count against `max_epochs` and `max_bytes` no
/// more, and a source waiting on memory never makes such a sink close objects early.
///
/// Records in open objects are not acknowledged either, though: their epochs count against
/// `max_unacknowledged_epochs` until every sink has made them durable. When that bound is
/// reached the source waits and asks every sink, streaming ones included, to close what it
/// holds, so a crash re-reads at most `max_unacknowledged_epochs` epochs per worker
/// (`max_unacknowledged_epochs x EpochBounds::max_records` records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlightBounds {
    /// Epochs read and not yet taken by every sink.
    pub max_epochs: usize,
    /// Bytes, counted twice: as read and not yet taken by every sink (per worker), and as
    /// the sinks hold them (for this process, `max_bytes` per local worker): the records of
    /// writes not yet durable after every step (payloads decompressed, attributes included),
    /// plus the bytes streaming writers handed to the store and it has not taken yet
    /// ([`StreamingWriter::backlog`](crate::io::StreamingWriter::backlog)). A source stops
    /// reading while either is reached.
    pub max_bytes: usize,
    /// Epochs read and not yet durable in every sink (not yet acknowledged to the source's
    /// service): what one crash may re-read, at most.
    pub max_unacknowledged_epochs: usize,
}

impl Default for InFlightBounds {
    /// 16 epochs and 32 MiB per worker. 32 MiB is two epochs at the default epoch byte bound
    /// ([`EpochBounds::default`]): a source reads the next epoch while the last is processed,
    /// which is all a worker can use (it runs its operators one at a time), and a slow store
    /// or a sink that holds records until they are durable stops the sources at 32 MiB per
    /// worker instead of growing memory. (It was 256 MiB: records of streamed objects then
    /// counted until their object closed, and the memory it allowed was the largest share of
    /// the decoder job's peak RSS.)
    ///
    /// 4,096 unacknowledged epochs: at the default epoch age (200 ms) a slow stream fills it in
    /// about 13 minutes, longer than objects usually stay open (`max_age`), so objects close by
    /// their own bounds; a fast stream fills objects by size long before.
    fn default() -> Self {
        InFlightBounds {
            max_epochs: 16,
            max_bytes: 32 << 20,
            max_unacknowledged_epochs: 4096,
        }
    }
}

#[derive(Clone, Debug)]
enum Engine {
    Threads(usize),
    /// Threads that serialize every exchange like a cluster does (tests).
    ThreadsSerializing(usize),
    Cluster {
        workers: usize,
        process: usize,
        addresses: Vec<String>,
    },
}

/// A pipeline's options and its runner.
///
/// The graph is built by a closure that runs once on every worker (timely's model): it reads
/// sources, applies transforms and writes sinks through the [`PipelineBuilder`] it is given.
///
/// ```
/// use sluice::{MemorySink, MemorySource, Pipeline};
/// let out = MemorySink::new();
/// let sink = out.clone();
/// let summary = Pipeline::new("double")
///     .workers(2)
///     .run(move |p| {
///         p.read("read", MemorySource::from(vec![1u64, 2, 3]))
///             .map(|x| x * 2)
///             .write("write", sink.clone());
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(out.sorted(), vec![2, 4, 6]);
/// assert_eq!(summary.total_read(), 3);
/// ```
#[derive(Clone)]
pub struct Pipeline {
    job_name: String,
    engine: Engine,
    stack_traces: bool,
    epoch: EpochBounds,
    in_flight: InFlightBounds,
    dead_letter_payload_limit: usize,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
}

/// The payload a dead letter keeps when the dead-letter sink refused it whole.
pub const DEFAULT_DEAD_LETTER_PAYLOAD_LIMIT: usize = 64 << 10;

impl Pipeline {
    /// A pipeline named `job_name` (reported in dead letters), one worker thread.
    pub fn new(job_name: impl Into<String>) -> Self {
        Pipeline {
            job_name: job_name.into(),
            engine: Engine::Threads(1),
            stack_traces: true,
            epoch: EpochBounds::default(),
            in_flight: InFlightBounds::default(),
            dead_letter_payload_limit: DEFAULT_DEAD_LETTER_PAYLOAD_LIMIT,
            stop: Arc::new(AtomicBool::new(false)),
            metrics: Metrics::new(),
        }
    }

    /// Worker threads in this process.
    pub fn workers(mut self, n: usize) -> Self {
        let n = n.max(1);
        self.engine = match self.engine {
            Engine::Threads(_) => Engine::Threads(n),
            Engine::ThreadsSerializing(_) => Engine::ThreadsSerializing(n),
            Engine::Cluster {
                process, addresses, ..
            } => Engine::Cluster {
                workers: n,
                process,
                addresses,
            },
        };
        self
    }

    /// Serialize records between threads as a cluster would, to catch data that cannot cross
    /// processes in a single-process test.
    pub fn serialize_exchanges(mut self) -> Self {
        if let Engine::Threads(n) = self.engine {
            self.engine = Engine::ThreadsSerializing(n);
        }
        self
    }

    /// Runs as process `process` of a timely cluster whose processes listen on `addresses`
    /// (`host:port`, one per process, the same list in every process).
    pub fn cluster(mut self, process: usize, addresses: Vec<String>) -> Self {
        let workers = match self.engine {
            Engine::Threads(n) | Engine::ThreadsSerializing(n) => n,
            Engine::Cluster { workers, .. } => workers,
        };
        self.engine = Engine::Cluster {
            workers,
            process,
            addresses,
        };
        self
    }

    /// Like [`Pipeline::cluster`], with the addresses read from a host file (one `host:port`
    /// per line, timely's format).
    pub fn hostfile(self, process: usize, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidPipeline(format!("cannot read hostfile `{}`: {e}", path.display()))
        })?;
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        Ok(self.cluster(process, addresses))
    }

    /// Whether dead letters carry the error's source chain (on by default; off gives
    /// deterministic dead letters for golden tests).
    pub fn stack_traces(mut self, on: bool) -> Self {
        self.stack_traces = on;
        self
    }

    /// How sources cut epochs.
    pub fn epoch_bounds(mut self, bounds: EpochBounds) -> Self {
        self.epoch = bounds;
        self
    }

    /// The backpressure bound.
    pub fn in_flight_bounds(mut self, bounds: InFlightBounds) -> Self {
        self.in_flight = bounds;
        self
    }

    /// How many payload bytes a dead letter keeps when the dead-letter sink refused it whole
    /// and it is retried reduced (default 64 KiB; see [`DeadLetter::reduced`]).
    pub fn dead_letter_payload_limit(mut self, bytes: usize) -> Self {
        self.dead_letter_payload_limit = bytes;
        self
    }

    /// A flag that, once set, stops the sources, flushes the sinks, acknowledges what is
    /// written and ends the run with `Ok` (wire it to SIGINT/SIGTERM).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The run's live counters.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The number of processes the pipeline runs in: 1, or the cluster's address count.
    pub fn processes(&self) -> usize {
        match &self.engine {
            Engine::Cluster { addresses, .. } => addresses.len(),
            _ => 1,
        }
    }

    /// The job's name.
    pub fn job_name(&self) -> &str {
        &self.job_name
    }

    /// Builds the pipeline on every worker with `build` and runs it until its inputs end (or
    /// the shutdown flag is set), then returns what it did.
    ///
    /// Fails before reading anything if the graph is invalid (a failure stream that reaches no
    /// sink, no sink at all); fails without acknowledging unwritten input if a source or sink
    /// fails or a worker panics.
    pub fn run<F>(self, build: F) -> Result<RunSummary>
    where
        F: for<'s> Fn(&mut PipelineBuilder<'s>) -> Result<()> + Send + Sync + 'static,
    {
        let started = Instant::now();
        self.check_bounds()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Blocking calls are file writes, fsyncs and renames (local object stores, state
            // files): a few threads keep the disk busy, and each extra one keeps an allocator
            // heap of its own (tokio's default of 512 let a burst of closing objects start 50).
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("sluice-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Startup(format!("cannot start the io runtime: {e}")))?;
        let (config, process_index) = self.timely_config()?;
        let shared = Arc::new(Shared {
            job_name: self.job_name.clone(),
            run_id: run_id(),
            process_index,
            stack_traces: self.stack_traces,
            epoch: self.epoch,
            in_flight: self.in_flight,
            dead_letter_payload_limit: self.dead_letter_payload_limit,
            local_workers: self.local_workers(),
            source_state: Default::default(),
            metrics: self.metrics.clone(),
            runtime: runtime.handle().clone(),
            abort: AtomicBool::new(false),
            error: Mutex::new(None),
            stop: self.stop.clone(),
            flush_generation: AtomicU64::new(0),
            ack_flush_generation: AtomicU64::new(0),
            sink_wakers: Mutex::new(Vec::new()),
            backlogs: Mutex::new(Vec::new()),
            abort_wakers: Mutex::new(Vec::new()),
            abort_sent: AtomicBool::new(false),
            started,
        });
        let worker_shared = shared.clone();
        let guards = timely::execute(config, move |worker| {
            let shared = worker_shared.clone();
            let index = worker.index();
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| run_worker(worker, &shared, &build)));
            // Whatever happened, leave no dataflow behind: timely would keep stepping it.
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
            match outcome {
                Ok(result) => result,
                Err(panic) => {
                    let message = panic_message(&panic);
                    shared.fail(Error::WorkerPanic {
                        worker: index,
                        message,
                    });
                    Err(())
                }
            }
        })
        .map_err(Error::Startup)?;
        let joined = std::panic::catch_unwind(AssertUnwindSafe(|| guards.join()));
        runtime.shutdown_timeout(Duration::from_secs(5));
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        match joined {
            Ok(results) => {
                for r in results {
                    if let Err(e) = r {
                        return Err(Error::Startup(format!("a worker failed: {e}")));
                    }
                }
            }
            Err(panic) => {
                return Err(Error::Startup(format!(
                    "the cluster failed: {}",
                    panic_message(&panic)
                )))
            }
        }
        Ok(RunSummary::from_snapshot(
            &self.metrics.snapshot(),
            started.elapsed(),
        ))
    }

    fn local_workers(&self) -> usize {
        match self.engine {
            Engine::Threads(n) | Engine::ThreadsSerializing(n) => n,
            Engine::Cluster { workers, .. } => workers,
        }
    }

    /// Zero bounds would never close an epoch or never let one be in flight.
    fn check_bounds(&self) -> Result<()> {
        let mut bad = Vec::new();
        let e = &self.epoch;
        let f = &self.in_flight;
        for (name, zero) in [
            ("epoch max_records", e.max_records == 0),
            ("epoch max_bytes", e.max_bytes == 0),
            ("epoch max_age", e.max_age.is_zero()),
            ("in-flight max_epochs", f.max_epochs == 0),
            ("in-flight max_bytes", f.max_bytes == 0),
            (
                "in-flight max_unacknowledged_epochs",
                f.max_unacknowledged_epochs == 0,
            ),
            (
                "dead-letter payload limit",
                self.dead_letter_payload_limit == 0,
            ),
        ] {
            if zero {
                bad.push(name);
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidPipeline(format!(
                "{} must be greater than zero",
                bad.join(", ")
            )))
        }
    }

    fn timely_config(&self) -> Result<(timely::Config, usize)> {
        let communication = match &self.engine {
            Engine::Threads(1) => timely::CommunicationConfig::Thread,
            Engine::Threads(n) => timely::CommunicationConfig::Process(*n),
            Engine::ThreadsSerializing(n) => timely::CommunicationConfig::ProcessBinary(*n),
            Engine::Cluster {
                workers,
                process,
                addresses,
            } => {
                if *process >= addresses.len() {
                    return Err(Error::InvalidPipeline(format!(
                        "process index {process} is out of range for {} cluster addresses",
                        addresses.len()
                    )));
                }
                timely::CommunicationConfig::Cluster {
                    threads: *workers,
                    process: *process,
                    addresses: addresses.clone(),
                    report: false,
                    zerocopy: false,
                }
            }
        };
        let process = match &self.engine {
            Engine::Cluster { process, .. } => *process,
            _ => 0,
        };
        Ok((
            timely::Config {
                communication,
                worker: timely::WorkerConfig::default(),
            },
            process,
        ))
    }
}

fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}{:09}", now.as_secs(), now.subsec_nanos())
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

fn run_worker<F>(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    build: &F,
) -> std::result::Result<(), ()>
where
    F: for<'s> Fn(&mut PipelineBuilder<'s>) -> Result<()>,
{
    let probe = ProbeHandle::<Epoch>::new();
    let built = worker.dataflow::<Epoch, _, _>(|scope| {
        let ctx = Rc::new(BuildCtx::new(scope, shared.clone(), probe.clone()));
        let mut builder = PipelineBuilder { ctx: ctx.clone() };
        build(&mut builder)?;
        builder.finish()?;
        let finishers = std::mem::take(&mut *ctx.finishers.borrow_mut());
        Ok::<_, Error>(finishers)
    });
    let finishers = match built {
        Ok(f) => f,
        Err(e) => {
            shared.fail(e);
            return Err(());
        }
    };
    while !probe.done() && !shared.aborted() {
        worker.step_or_park(Some(Duration::from_millis(50)));
    }
    let aborted = shared.aborted();
    if aborted {
        // Let this worker's abort guard tell the other processes before the dataflow goes.
        let deadline = Instant::now() + ABORT_BROADCAST_GRACE;
        while !shared.abort_sent.load(Ordering::SeqCst) && Instant::now() < deadline {
            worker.step_or_park(Some(Duration::from_millis(5)));
        }
        for _ in 0..8 {
            worker.step();
        }
    }
    for f in finishers {
        if let Err(e) = f.finish(!aborted) {
            shared.fail(e);
        }
    }
    if shared.aborted() {
        Err(())
    } else {
        Ok(())
    }
}

/// Threads of the io runtime's blocking pool (see [`Pipeline::run`]).
const BLOCKING_THREADS: usize = 8;

/// How long a failing worker keeps stepping so the abort reaches the other processes.
const ABORT_BROADCAST_GRACE: Duration = Duration::from_millis(500);

/// Process-wide state of one run, shared by its workers and IO tasks.
pub(crate) struct Shared {
    pub(crate) job_name: String,
    pub(crate) run_id: String,
    pub(crate) process_index: usize,
    pub(crate) stack_traces: bool,
    pub(crate) epoch: EpochBounds,
    pub(crate) in_flight: InFlightBounds,
    pub(crate) dead_letter_payload_limit: usize,
    /// Worker threads of this process.
    pub(crate) local_workers: usize,
    /// What the readers of a source step share within this process (`SourceContext::process_shared`).
    pub(crate) source_state: crate::io::ProcessState,
    pub(crate) metrics: Metrics,
    pub(crate) runtime: tokio::runtime::Handle,
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Bumped by a source that waits on the memory bounds: sinks that hold records until they
    /// are durable then flush their batches.
    pub(crate) flush_generation: AtomicU64,
    /// Bumped by a source that waits on unacknowledged epochs: every sink, streaming ones
    /// included, then closes what it holds.
    pub(crate) ack_flush_generation: AtomicU64,
    pub(crate) sink_wakers: Mutex<Vec<SyncActivator>>,
    /// The backlogs of this process's streaming writers (see `StreamingWriter::backlog`).
    pub(crate) backlogs: Mutex<Vec<Arc<std::sync::atomic::AtomicUsize>>>,
    /// The abort guards of this process's workers: woken by `fail`.
    pub(crate) abort_wakers: Mutex<Vec<SyncActivator>>,
    pub(crate) abort_sent: AtomicBool,
    pub(crate) started: Instant,
}

impl Shared {
    /// Records the first error and stops every worker.
    pub(crate) fn fail(&self, error: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(error);
        }
        drop(slot);
        self.abort.store(true, Ordering::SeqCst);
        for waker in self
            .abort_wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = waker.activate();
        }
    }

    /// The message another process's abort guard sends: its first error.
    fn abort_message(&self) -> String {
        match self
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(e) => crate::chain(e),
            None => "stopped".to_string(),
        }
    }

    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Bytes the sinks of this process hold and the in-flight byte bound counts: records of
    /// writes not yet durable, plus the backlogs of streaming writers.
    pub(crate) fn held_by_sinks(&self) -> usize {
        let backlogs: usize = self
            .backlogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.load(Ordering::SeqCst))
            .sum();
        self.metrics.held_bytes() as usize + backlogs
    }

    /// Asks the sinks in this process to flush what they hold: those that do not stream, or
    /// with `streaming_too` every sink (a source waits on unacknowledged epochs, which only
    /// closing open objects makes durable).
    pub(crate) fn request_flush(&self, streaming_too: bool) {
        self.flush_generation.fetch_add(1, Ordering::SeqCst);
        if streaming_too {
            self.ack_flush_generation.fetch_add(1, Ordering::SeqCst);
        }
        for waker in self
            .sink_wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = waker.activate();
        }
    }

    /// The epoch a source opens now: milliseconds since the run started, so that workers that
    /// read at different rates (or not at all) keep their epochs close together.
    pub(crate) fn clock_epoch(&self) -> Epoch {
        self.started.elapsed().as_millis() as Epoch
    }
}

/// Finishes a source after the dataflow ends: final acknowledgement and close.
pub(crate) trait Finisher {
    fn finish(&self, completed: bool) -> Result<()>;
}

struct Obligation {
    step: String,
    routed: Cell<bool>,
}

/// A failure stream that must reach a sink before the pipeline builds.
#[derive(Clone)]
pub(crate) struct FailureObligation(Rc<Obligation>);

impl FailureObligation {
    pub(crate) fn discharge(&self) {
        self.0.routed.set(true);
    }
}

/// What the operators of one worker's dataflow share while it is built.
pub(crate) struct BuildCtx<'s> {
    pub(crate) scope: Scope<'s, Epoch>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) probe: ProbeHandle<Epoch>,
    /// Epochs every sink has taken (see [`crate::io::StreamingWriter`]); at most `probe`.
    pub(crate) accept_probe: ProbeHandle<Epoch>,
    obligations: RefCell<Vec<FailureObligation>>,
    /// Per sink: its refusals and its durable marker (see `operators::write`).
    #[allow(clippy::type_complexity)]
    pub(crate) sink_outputs:
        RefCell<Vec<(StreamVec<'s, Epoch, DeadLetter>, StreamVec<'s, Epoch, ()>)>>,
    /// Per `CountOutcomes` step: its stream of applied counts (see `counts`).
    pub(crate) counted: RefCell<Vec<StreamVec<'s, Epoch, ()>>>,
    pub(crate) source_activators: Rc<RefCell<Vec<Activator>>>,
    pub(crate) finishers: RefCell<Vec<Rc<dyn Finisher>>>,
    pub(crate) step_prefix: RefCell<Vec<String>>,
}

impl<'s> BuildCtx<'s> {
    fn new(scope: Scope<'s, Epoch>, shared: Arc<Shared>, probe: ProbeHandle<Epoch>) -> Self {
        BuildCtx {
            scope,
            shared,
            probe,
            accept_probe: ProbeHandle::new(),
            obligations: RefCell::new(Vec::new()),
            sink_outputs: RefCell::new(Vec::new()),
            counted: RefCell::new(Vec::new()),
            source_activators: Rc::new(RefCell::new(Vec::new())),
            finishers: RefCell::new(Vec::new()),
            step_prefix: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn obligation(&self, step: &str) -> FailureObligation {
        let o = FailureObligation(Rc::new(Obligation {
            step: step.to_string(),
            routed: Cell::new(false),
        }));
        self.obligations.borrow_mut().push(o.clone());
        o
    }

    /// The full name of a step: names of enclosing `apply` calls, then its own.
    pub(crate) fn step_name(&self, name: &str) -> String {
        let prefix = self.step_prefix.borrow();
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", prefix.join("/"))
        }
    }
}

/// What the closure given to [`Pipeline::run`] builds the graph with, once per worker.
pub struct PipelineBuilder<'s> {
    pub(crate) ctx: Rc<BuildCtx<'s>>,
}

impl<'s> PipelineBuilder<'s> {
    /// Reads `source` as step `name`.
    pub fn read<S: Source>(&mut self, name: &str, source: S) -> PCollection<'s, S::Output> {
        let provenance = Provenance {
            input: source.describe(),
            input_type: source.kind().to_string(),
        };
        let step = self.ctx.step_name(name);
        let stream = crate::operators::read(&self.ctx, &step, Arc::new(source));
        PCollection::from_parts(
            stream,
            self.ctx.clone(),
            Vec::new(),
            Some(Rc::new(provenance)),
        )
    }

    /// Reads a source whose records may fail before they are even framed (a line that is not
    /// JSON, a broken Heka frame): its `Err` records are dead letters the source built with the
    /// raw bytes, and they must be routed like any step's failures.
    pub fn read_with_failures<T, S>(&mut self, name: &str, source: S) -> WithFailures<'s, T>
    where
        T: Element,
        S: Source<Output = std::result::Result<T, DeadLetter>>,
    {
        let step = self.ctx.step_name(name);
        let shared = self.ctx.shared.clone();
        let job_name = shared.job_name.clone();
        let (input, input_type) = (source.describe(), source.kind().to_string());
        let ok = shared.metrics.counter(Counter::StepOk, &step);
        let failed = shared.metrics.counter(Counter::StepFailed, &step);
        let stack_traces = shared.stack_traces;
        #[allow(clippy::result_large_err)]
        let (output, failures) = self.read(name, source).branch(move |r| {
            match &r {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
            r
        });
        let failures = failures
            .map(move |mut d: DeadLetter| {
                d.job_name.get_or_insert_with(|| job_name.clone());
                d.input.get_or_insert_with(|| input.clone());
                d.input_type.get_or_insert_with(|| input_type.clone());
                if !stack_traces {
                    d.stack_trace = None;
                }
                d
            })
            .with_obligation(self.ctx.obligation(&step));
        WithFailures { output, failures }
    }

    /// A place to collect the failure streams of every step; write it to the one dead-letter
    /// sink of the pipeline.
    pub fn dead_letters(&self) -> DeadLetters<'s> {
        DeadLetters::new(self.ctx.clone())
    }

    /// An empty collection (a starting point for `concat`).
    pub fn empty<T: Element>(&self) -> PCollection<'s, T> {
        PCollection::empty(self.ctx.clone())
    }

    /// This worker's global index.
    pub fn worker_index(&self) -> usize {
        self.ctx.scope.index()
    }

    /// The number of workers in the whole pipeline.
    pub fn peers(&self) -> usize {
        self.ctx.scope.peers()
    }

    /// The job's name.
    pub fn job_name(&self) -> &str {
        &self.ctx.shared.job_name
    }

    /// Writes `collection` to `sink` (same as [`PCollection::write`]).
    pub fn write<S: Sink>(
        &mut self,
        name: &str,
        collection: PCollection<'s, S::Input>,
        sink: S,
    ) -> WriteResult<'s>
    where
        S::Input: crate::Original,
    {
        collection.write(name, sink)
    }

    fn finish(self) -> Result<()> {
        let unrouted: Vec<String> = self
            .ctx
            .obligations
            .borrow()
            .iter()
            .filter(|o| !o.0.routed.get())
            .map(|o| o.0.step.clone())
            .collect();
        if !unrouted.is_empty() {
            return Err(Error::UnroutedFailures { steps: unrouted });
        }
        let outputs = std::mem::take(&mut *self.ctx.sink_outputs.borrow_mut());
        if outputs.is_empty() {
            return Err(Error::InvalidPipeline(
                "the pipeline writes to no sink: nothing would be read durably".to_string(),
            ));
        }
        // One probe after every sink tells which epochs are durably done everywhere; the
        // watcher behind it wakes the sources so they acknowledge and read on. The abort guard
        // sits in front of the probe so that no process sees a failed epoch done.
        // A second probe, after the refusals only, tells which epochs every sink has taken:
        // what the sources' in-flight bound counts (see `StreamingWriter`).
        let activators = self.ctx.source_activators.clone();
        // Counts are part of what makes an epoch done: acknowledged input is counted.
        let (refusals, mut durable): (Vec<_>, Vec<_>) = outputs.into_iter().unzip();
        durable.extend(std::mem::take(&mut *self.ctx.counted.borrow_mut()));
        let accepted = self
            .ctx
            .scope
            .concatenate(refusals)
            .map(|_| ())
            .probe_with(&self.ctx.accept_probe);
        let written = self.ctx.scope.concatenate(durable).concat(accepted.clone());
        abort_guard(&self.ctx, written.clone())
            .concat(written)
            .probe_with(&self.ctx.probe)
            .concat(accepted)
            .sink(
                timely::dataflow::channels::pact::Pipeline,
                "WakeSources",
                move |(input, _frontier)| {
                    input.for_each(|_, _| {});
                    for a in activators.borrow().iter() {
                        a.activate();
                    }
                },
            );
        Ok(())
    }
}

/// Makes a failure anywhere stop every process before any of them acknowledges a failed epoch.
///
/// The guard holds a capability at the frontier of what the sinks made durable. When this
/// process fails, it broadcasts its error at that time, which is no later than any epoch a
/// failed write still holds (a failed write never releases its epoch). Every worker's
/// receiver sets its process's abort flag on that message before the probe may pass it, and
/// sources read the probe before the abort flag: so no source anywhere acknowledges the
/// failed epoch, and every process stops with the first error.
fn abort_guard<'s>(
    ctx: &Rc<BuildCtx<'s>>,
    written: StreamVec<'s, Epoch, ()>,
) -> StreamVec<'s, Epoch, ()> {
    use timely::dataflow::operators::vec::Broadcast;
    let shared = ctx.shared.clone();
    let process = shared.process_index;
    let scope = ctx.scope;
    let alarms = written.unary_frontier::<CapacityContainerBuilder<Vec<(usize, String)>>, _, _, _>(
        timely::dataflow::channels::pact::Pipeline,
        "AbortGuard",
        move |cap, info| {
            let waker = scope.worker().sync_activator_for(info.address.to_vec());
            shared
                .abort_wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(waker);
            let mut cap = Some(cap);
            move |(input, frontier), output| {
                input.for_each(|_, _| {});
                let Some(c) = cap.as_mut() else { return };
                if shared.aborted() {
                    output.session(&*c).give((process, shared.abort_message()));
                    shared.abort_sent.store(true, Ordering::SeqCst);
                    // Keep the capability: nothing after a failure may look done.
                    if let Some(c) = cap.take() {
                        std::mem::forget(c);
                    }
                    return;
                }
                match frontier.frontier().iter().min() {
                    Some(t) if t > c.time() => c.downgrade(t),
                    Some(_) => {}
                    None => cap = None,
                }
            }
        },
    );
    let shared = ctx.shared.clone();
    alarms.broadcast().unary(
        timely::dataflow::channels::pact::Pipeline,
        "AbortReceiver",
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for (from, message) in data.drain(..) {
                        if from != shared.process_index || !shared.aborted() {
                            shared.fail(Error::Peer {
                                process: from,
                                message,
                            });
                        }
                    }
                    output.session(&cap).give(());
                });
            }
        },
    )
}
