//! The timely operators behind `read`, `write` and the fallible maps. Private: users see
//! `PCollection` methods only.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline as Local;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{source, OutputBuilder};
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use crate::dead_letter::{DeadLetter, Failure};
use crate::error::{BoxError, Error, Result};
use crate::io::{
    Epoch, ReadState, Rejection, Sink, SinkContext, SinkWriter, Source, SourceContext,
    SourceReader, SourceWaker, WriteFuture,
};
use crate::metrics::Counter;
use crate::pcollection::Provenance;
use crate::pipeline::{BuildCtx, Finisher};
use crate::{Element, Message, Original};

/// Don't hold a worker longer than this in one source activation: other operators need it.
const READ_SLICE: Duration = Duration::from_millis(2);
/// How often a source held back by the in-flight bound checks the shutdown flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How often a source's reader is asked where it stands (see `SourceReader::positions`).
const POSITIONS_EVERY: Duration = Duration::from_millis(250);

struct SourceDriver<T: 'static> {
    step: String,
    reader: RefCell<Option<Box<dyn SourceReader<T>>>>,
    acked: Cell<Epoch>,
    closed: Cell<bool>,
    /// Where the reader's positions go, as this worker's.
    metrics: crate::Metrics,
    worker: usize,
    /// Whether the reader reported positions: then an empty report replaces them.
    reported: Cell<bool>,
}

impl<T: 'static> SourceDriver<T> {
    fn error(&self, e: BoxError) -> Error {
        Error::Source {
            step: self.step.clone(),
            source: e,
        }
    }

    /// Tells the reader that every epoch below `done` is durable.
    fn ack(&self, done: Epoch) -> Result<()> {
        if done <= self.acked.get() || self.closed.get() {
            return Ok(());
        }
        if let Some(r) = self.reader.borrow_mut().as_mut() {
            r.ack(done).map_err(|e| self.error(e))?;
        }
        self.acked.set(done);
        Ok(())
    }

    /// Puts what the reader says of its positions into the metrics.
    fn report_positions(&self) {
        if self.closed.get() {
            return;
        }
        if let Some(r) = self.reader.borrow().as_ref() {
            let positions = r.positions();
            if !positions.is_empty() || self.reported.get() {
                self.metrics
                    .set_source_positions(&self.step, self.worker, positions);
                self.reported.set(true);
            }
        }
    }

    fn close(&self) -> Result<()> {
        if self.closed.replace(true) {
            return Ok(());
        }
        match self.reader.borrow_mut().as_mut() {
            Some(r) => r.close().map_err(|e| self.error(e)),
            None => Ok(()),
        }
    }
}

impl<T: 'static> Finisher for SourceDriver<T> {
    fn finish(&self, completed: bool) -> Result<()> {
        if completed {
            self.ack(Epoch::MAX)?;
        }
        // The last word on where the source stands, after its final acknowledgement.
        self.report_positions();
        self.close()
    }
}

/// One source's open epoch and the epochs it read that are not yet durable.
struct EpochBook {
    records: usize,
    bytes: usize,
    opened: Instant,
    /// Epochs read and not yet durable (acknowledged as they become durable).
    in_flight: VecDeque<(Epoch, usize)>,
    /// The epochs of `in_flight` not yet accepted by every sink: still somewhere in the
    /// dataflow, or held by a sink that does not stream. What the in-flight bound counts.
    unaccepted: VecDeque<(Epoch, usize)>,
    unaccepted_bytes: usize,
}

impl EpochBook {
    /// Closes the open epoch (telling the reader, if it has records) and opens the next one.
    fn close<T: 'static>(
        &mut self,
        c: &mut Capability<Epoch>,
        reader: &mut dyn SourceReader<T>,
        now: Epoch,
    ) {
        let t = *c.time();
        if self.records > 0 {
            reader.end_epoch(t);
            self.in_flight.push_back((t, self.bytes));
            self.unaccepted.push_back((t, self.bytes));
            self.unaccepted_bytes += self.bytes;
        }
        self.records = 0;
        self.bytes = 0;
        c.downgrade(&(t + 1).max(now));
    }

    /// Forgets the epochs below `done` (durable), and counts those below `accepted` (taken by
    /// every sink) out of the in-flight bound.
    fn advance(&mut self, done: Epoch, accepted: Epoch) {
        while self.in_flight.front().is_some_and(|(t, _)| *t < done) {
            self.in_flight.pop_front();
        }
        let accepted = accepted.max(done);
        while self.unaccepted.front().is_some_and(|(t, _)| *t < accepted) {
            if let Some((_, b)) = self.unaccepted.pop_front() {
                self.unaccepted_bytes -= b;
            }
        }
    }
}

pub(crate) fn read<'s, S: Source>(
    ctx: &Rc<BuildCtx<'s>>,
    step: &str,
    source_def: Arc<S>,
) -> StreamVec<'s, Epoch, S::Output> {
    let scope = ctx.scope;
    let shared = ctx.shared.clone();
    let probe = ctx.probe.clone();
    let accept_probe = ctx.accept_probe.clone();
    let activators = ctx.source_activators.clone();
    let driver = Rc::new(SourceDriver::<S::Output> {
        step: step.to_string(),
        reader: RefCell::new(None),
        acked: Cell::new(0),
        closed: Cell::new(false),
        metrics: shared.metrics.clone(),
        worker: scope.index(),
        reported: Cell::new(false),
    });
    ctx.finishers.borrow_mut().push(driver.clone());
    let metrics = &shared.metrics;
    let read_count = metrics.counter(Counter::Read, step);
    let read_bytes = metrics.counter(Counter::ReadBytes, step);
    let progress_done = metrics.counter(Counter::ProgressDone, step);
    let progress_total = metrics.counter(Counter::ProgressTotal, step);
    let bounds = shared.epoch;
    let limits = shared.in_flight;

    let step_name = step.to_string();
    source::<_, CapacityContainerBuilder<Vec<S::Output>>, _, _>(scope, step, move |cap, info| {
        let activator = scope.activator_for(info.address.clone());
        activators.borrow_mut().push(activator.clone());
        let sync = scope.worker().sync_activator_for(info.address.to_vec());
        let open_ctx = SourceContext {
            worker_index: scope.index(),
            peers: scope.peers(),
            runtime: shared.runtime.clone(),
            waker: SourceWaker(Arc::new(move || {
                let _ = sync.activate();
            })),
            job_name: shared.job_name.clone(),
            step: step_name.clone(),
            process_index: shared.process_index,
            local_workers: shared.local_workers,
            process_state: shared.source_state.clone(),
        };
        let mut cap: Option<Capability<Epoch>> = Some(cap);
        let mut book = EpochBook {
            records: 0,
            bytes: 0,
            opened: Instant::now(),
            in_flight: VecDeque::new(),
            unaccepted: VecDeque::new(),
            unaccepted_bytes: 0,
        };
        let mut last_progress = (0u64, 0u64);
        let mut last_positions: Option<Instant> = None;
        let mut buf: Vec<S::Output> = Vec::new();

        move |output| {
            if driver.reader.borrow().is_none() && !driver.closed.get() {
                match source_def.open(&open_ctx) {
                    Ok(r) => *driver.reader.borrow_mut() = Some(r),
                    Err(e) => {
                        shared.fail(driver.error(e));
                        cap = None;
                        return;
                    }
                }
            }

            // Acknowledge what every sink has made durable. Read the frontier before the abort
            // flag: a failing pipeline releases held epochs only after setting the flag, so an
            // epoch released that way is never acknowledged.
            let done = probe
                .with_frontier(|f| f.as_option().copied())
                .unwrap_or(Epoch::MAX);
            let accepted = accept_probe
                .with_frontier(|f| f.as_option().copied())
                .unwrap_or(Epoch::MAX);
            if shared.aborted() {
                cap = None;
                return;
            }
            if let Err(e) = driver.ack(done) {
                shared.fail(e);
                cap = None;
                return;
            }
            book.advance(done, accepted);
            shared
                .metrics
                .set_in_flight_epochs(book.in_flight.len() as u64);

            if last_positions.is_none_or(|t| t.elapsed() >= POSITIONS_EVERY) {
                driver.report_positions();
                last_positions = Some(Instant::now());
            }

            let Some(c) = cap.as_mut() else { return };
            let mut reader_slot = driver.reader.borrow_mut();
            let Some(reader) = reader_slot.as_mut() else {
                return;
            };

            if shared.stop.load(Ordering::SeqCst) {
                book.close(c, reader.as_mut(), shared.clock_epoch());
                cap = None;
                return;
            }
            // Bytes are bounded twice: as read, per worker, and as the sinks hold them after every
            // step (a gzipped payload counts decompressed), for the workers of this process.
            // Epochs whose records wait in a streaming writer's open objects count in neither:
            // they hold no memory here, and their objects close by their own bounds.
            // Unacknowledged epochs are bounded too: records in open objects hold no memory
            // here, but a crash would re-read them.
            let held_by_sinks = shared.held_by_sinks();
            let unacknowledged_full = book.in_flight.len() >= limits.max_unacknowledged_epochs;
            if unacknowledged_full
                || book.unaccepted.len() >= limits.max_epochs
                || book.unaccepted_bytes >= limits.max_bytes
                || held_by_sinks >= limits.max_bytes.saturating_mul(shared.local_workers)
            {
                // The watcher behind the probes wakes us when an epoch is accepted or done;
                // meanwhile ask batching sinks that do not stream to write what they hold, or
                // nothing would ever be done, and on unacknowledged epochs streaming ones too.
                shared.request_flush(unacknowledged_full);
                // Look at the stop flag now and then: a shutdown must not wait for an epoch.
                activator.activate_after(STOP_POLL);
                return;
            }

            let slice_start = Instant::now();
            loop {
                let room = bounds.max_records.saturating_sub(book.records).max(1);
                let status = match reader.read(&mut buf, room) {
                    Ok(s) => s,
                    Err(e) => {
                        drop(reader_slot);
                        shared.fail(driver.error(e));
                        cap = None;
                        return;
                    }
                };
                if !buf.is_empty() {
                    if book.records == 0 {
                        book.opened = Instant::now();
                    }
                    book.records += buf.len();
                    book.bytes += status.bytes;
                    read_count.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    read_bytes.fetch_add(status.bytes as u64, Ordering::Relaxed);
                    output.session(&*c).give_iterator(buf.drain(..));
                }
                if let Some((d, t)) = reader.progress() {
                    progress_done.fetch_add(d.saturating_sub(last_progress.0), Ordering::Relaxed);
                    progress_total.fetch_add(t.saturating_sub(last_progress.1), Ordering::Relaxed);
                    last_progress = (d.max(last_progress.0), t.max(last_progress.1));
                }
                let full = book.records >= bounds.max_records
                    || book.bytes >= bounds.max_bytes
                    || (book.records > 0 && book.opened.elapsed() >= bounds.max_age);
                match status.state {
                    ReadState::Exhausted => {
                        book.close(c, reader.as_mut(), shared.clock_epoch());
                        cap = None;
                        return;
                    }
                    ReadState::EndOfEpoch => {
                        book.close(c, reader.as_mut(), shared.clock_epoch());
                        activator.activate();
                        return;
                    }
                    ReadState::AwaitingAcks => {
                        // The service sends nothing more until earlier input is acknowledged:
                        // close what was read, and have every sink make what it holds durable
                        // rather than wait for its objects' own bounds.
                        if book.records > 0 {
                            book.close(c, reader.as_mut(), shared.clock_epoch());
                        }
                        if !book.in_flight.is_empty() {
                            shared.request_flush(true);
                        }
                        activator.activate_after(STOP_POLL);
                        return;
                    }
                    ReadState::Idle => {
                        if full {
                            book.close(c, reader.as_mut(), shared.clock_epoch());
                        } else if book.records == 0 {
                            // Keep time moving so the other workers' epochs can complete.
                            let now = shared.clock_epoch();
                            if now > *c.time() {
                                c.downgrade(&now);
                            }
                        }
                        let wait = if book.records > 0 {
                            bounds.max_age.saturating_sub(book.opened.elapsed())
                        } else {
                            bounds.max_age
                        };
                        activator.activate_after(wait.max(Duration::from_millis(1)));
                        return;
                    }
                    _ => {
                        if full {
                            book.close(c, reader.as_mut(), shared.clock_epoch());
                            activator.activate();
                            return;
                        }
                        if slice_start.elapsed() >= READ_SLICE {
                            activator.activate();
                            return;
                        }
                    }
                }
            }
        }
    })
}

/// What the runner does with the records a sink refused.
pub(crate) enum OnReject<T> {
    /// They become dead letters on the stream the write returns.
    DeadLetter(Box<dyn Fn(T, Failure) -> DeadLetter>),
    /// The dead-letter sink's own refusals: retried once reduced; a second refusal stops the
    /// pipeline without acknowledging.
    RetryReduced(Box<dyn Fn(T) -> T>),
}

/// An epoch a sink is receiving: its capability, its records and the bytes they hold.
struct Stashed<T> {
    held: Capability<Epoch>,
    records: Vec<T>,
    bytes: u64,
}

/// An epoch a streaming writer is receiving (see [`StreamingWriter`](crate::io::StreamingWriter)).
struct Receiving {
    /// On the refusals output: released once the epoch's input is complete and appended, so
    /// the dead-letter sink and the sources' in-flight bound need not wait for its objects.
    accepted: Capability<Epoch>,
    /// On the durable output: kept until the epoch's records are durable.
    durable: Capability<Epoch>,
    /// Records appended and not refused.
    records: usize,
}

/// One write in flight: the epoch's capability, held until the write is durable.
struct Writing {
    held: Capability<Epoch>,
    records: usize,
    /// Bytes of the records, counted in `Metrics::held_bytes` until the write resolves.
    bytes: u64,
    retry: bool,
}

type Done<T> = (u64, std::result::Result<Vec<Rejection<T>>, BoxError>);

/// A sink operator's writes in flight, by id.
struct Writes<T> {
    writing: HashMap<u64, Writing>,
    next: u64,
    done: std::sync::mpsc::Sender<Done<T>>,
    wake: SyncActivator,
    runtime: tokio::runtime::Handle,
}

impl<T: Send + 'static> Writes<T> {
    /// Hands `records` of the epoch `held` stands for to the writer; `held` is kept until the
    /// write resolves.
    fn start(
        &mut self,
        w: &mut dyn SinkWriter<T>,
        held: Capability<Epoch>,
        records: Vec<T>,
        bytes: u64,
        retry: bool,
    ) {
        let t = *held.time();
        let n = records.len();
        self.track(w.write(t, records), held, n, bytes, retry);
    }

    /// Runs `future` on the IO runtime; `held` is kept until it resolves.
    fn track(
        &mut self,
        future: WriteFuture<T>,
        held: Capability<Epoch>,
        records: usize,
        bytes: u64,
        retry: bool,
    ) {
        let id = self.next;
        self.next += 1;
        spawn_write(
            &self.runtime,
            future,
            id,
            self.done.clone(),
            self.wake.clone(),
        );
        self.writing.insert(
            id,
            Writing {
                held,
                records,
                bytes,
                retry,
            },
        );
    }
}

/// Runs a sink's writer and keeps each epoch's capability until what it received for the
/// epoch is durable. Returns the refused records as dead letters, emitted at their epoch
/// before it is released, so the epoch is not done until they are durable too.
///
/// Two outputs: the refusals, and a data-less "durable" output. A writer that does not stream
/// gets each epoch whole once its input is complete (stashed until then), and both outputs
/// hold the epoch until its write resolves. A [`StreamingWriter`](crate::io::StreamingWriter) gets records as they
/// arrive; the refusals output holds an epoch only until its input is complete (the writer
/// refuses in `append`), the durable output until its objects are written. The pipeline's
/// probe of durable epochs watches both outputs; the probe of accepted epochs (what the
/// sources' in-flight bound counts) only the refusals.
pub(crate) fn write<'s, S: Sink>(
    ctx: &Rc<BuildCtx<'s>>,
    step: &str,
    stream: StreamVec<'s, Epoch, S::Input>,
    sink: Arc<S>,
    on_reject: OnReject<S::Input>,
) -> StreamVec<'s, Epoch, DeadLetter> {
    let scope = ctx.scope;
    let shared = ctx.shared.clone();
    let mut builder = OperatorBuilder::new(step.to_string(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(stream, Local);
    let (output, out_stream) = builder.new_output::<Vec<DeadLetter>>();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(output);
    // Never given data: only its capabilities say which epochs are durable.
    let (durable_output, durable_stream) = builder.new_output::<Vec<()>>();
    let sync = scope.worker().sync_activator_for(info.address.to_vec());
    shared
        .sink_wakers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(sync.clone());
    let written = shared.metrics.counter(Counter::Written, step);
    let rejected = shared.metrics.counter(Counter::Rejected, step);
    let step = step.to_string();
    let can_reject = sink.can_reject();
    let open_ctx = SinkContext {
        worker_index: scope.index(),
        peers: scope.peers(),
        process_index: shared.process_index,
        runtime: shared.runtime.clone(),
        job_name: shared.job_name.clone(),
        run_id: shared.run_id.clone(),
    };

    builder.build(move |initial_caps| {
        // Holding these would keep the probe at epoch 0 forever.
        drop(initial_caps);
        let _durable_output = durable_output;
        let mut writer: Option<Box<dyn SinkWriter<S::Input>>> = None;
        // Per epoch: its capability, its records and the bytes they hold.
        let mut stash: BTreeMap<Epoch, Stashed<S::Input>> = BTreeMap::new();
        // Per epoch a streaming writer is receiving.
        let mut receiving: BTreeMap<Epoch, Receiving> = BTreeMap::new();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done<S::Input>>();
        let mut writes = Writes {
            writing: HashMap::new(),
            next: 0,
            done: done_tx,
            wake: sync,
            runtime: shared.runtime.clone(),
        };
        let mut flushed_at_end = false;
        let mut seen_flush = 0u64;
        let mut seen_ack_flush = 0u64;
        let mut flush_pending = false;
        let sink_error = {
            let step = step.clone();
            move |e: BoxError| Error::Sink {
                step: step.clone(),
                source: e,
            }
        };

        move |frontiers| {
            if shared.aborted() {
                input.for_each(|_, _| {});
                stash.clear();
                // Never release an epoch of a failed run: a peer process must not see it done.
                // The abort broadcast (see `pipeline`) tells the peers to stop instead.
                for (_, w) in writes.writing.drain() {
                    std::mem::forget(w.held);
                }
                for (_, r) in std::mem::take(&mut receiving) {
                    std::mem::forget(r.accepted);
                    std::mem::forget(r.durable);
                }
                return;
            }
            if writer.is_none() {
                match sink.open(&open_ctx) {
                    Ok(mut w) => {
                        if let Some(backlog) = w.streaming().and_then(|s| s.backlog()) {
                            shared
                                .backlogs
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(backlog);
                        }
                        writer = Some(w)
                    }
                    Err(e) => {
                        shared.fail(sink_error(e));
                        input.for_each(|_, _| {});
                        return;
                    }
                }
            }
            let Some(w) = writer.as_mut() else { return };
            let frontier = &frontiers[0];
            if w.streaming().is_some() {
                let mut failure: Option<String> = None;
                input.for_each(|cap, data| {
                    let (Some(t), None) = (cap.least().copied(), failure.as_ref()) else {
                        return;
                    };
                    let Some(sw) = w.streaming() else { return };
                    let entry = match receiving.entry(t) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            let (Some(accepted), Some(durable)) =
                                (cap.retain_least(0), cap.retain_least(1))
                            else {
                                return;
                            };
                            v.insert(Receiving {
                                accepted,
                                durable,
                                records: 0,
                            })
                        }
                    };
                    let records = std::mem::take(data);
                    let n = records.len();
                    let refused = match sw.append(t, records) {
                        Ok(r) => r,
                        Err(e) => {
                            failure = Some(sink_error(e).to_string());
                            return;
                        }
                    };
                    entry.records += n - refused.len().min(n);
                    if refused.is_empty() {
                        return;
                    }
                    rejected.fetch_add(refused.len() as u64, Ordering::Relaxed);
                    match &on_reject {
                        _ if !can_reject => {
                            failure = Some(format!(
                                "refused {} records ({}) but does not declare rejections",
                                refused.len(),
                                refused[0].failure.message
                            ));
                        }
                        OnReject::DeadLetter(to_dead_letter) => {
                            let mut out = output.activate();
                            let mut session = out.session(&entry.accepted);
                            for r in refused {
                                session.give(to_dead_letter(r.record, r.failure));
                            }
                        }
                        OnReject::RetryReduced(reduce) => {
                            tracing::warn!(
                                step = %step,
                                records = refused.len(),
                                reason = %refused[0].failure.message,
                                "the dead-letter sink refused dead letters: retrying them reduced"
                            );
                            let reduced: Vec<_> =
                                refused.into_iter().map(|r| reduce(r.record)).collect();
                            let n = reduced.len();
                            match sw.append(t, reduced) {
                                Ok(again) if again.is_empty() => entry.records += n,
                                Ok(again) => {
                                    failure = Some(format!(
                                        "refused a reduced dead letter: {}",
                                        again[0].failure.message
                                    ))
                                }
                                Err(e) => failure = Some(sink_error(e).to_string()),
                            }
                        }
                    }
                });
                if let Some(why) = failure {
                    for (_, r) in std::mem::take(&mut receiving) {
                        std::mem::forget(r.accepted);
                        std::mem::forget(r.durable);
                    }
                    shared.fail(Error::Sink {
                        step: step.clone(),
                        source: why.into(),
                    });
                    return;
                }
                while let Some(entry) = receiving.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, r) = entry.remove_entry();
                    let Some(sw) = w.streaming() else { break };
                    let durable = sw.durable(t);
                    // Its refusals are out: the epoch holds no memory here any more.
                    drop(r.accepted);
                    let future: WriteFuture<S::Input> =
                        Box::pin(async move { durable.await.map(|()| Vec::new()) });
                    writes.track(future, r.durable, r.records, 0, false);
                }
            } else {
                input.for_each(|cap, data| {
                    if let (Some(t), Some(held)) = (cap.least().copied(), cap.retain_least(0)) {
                        let bytes: u64 = data.iter().map(|r| held_bytes(r) as u64).sum();
                        shared.metrics.add_held_bytes(bytes);
                        let entry = stash.entry(t).or_insert_with(|| Stashed {
                            held,
                            records: Vec::new(),
                            bytes: 0,
                        });
                        entry.records.append(data);
                        entry.bytes += bytes;
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let e = entry.remove();
                    writes.start(w.as_mut(), e.held, e.records, e.bytes, false);
                }
            }
            while let Ok((id, result)) = done_rx.try_recv() {
                let Some(done) = writes.writing.remove(&id) else {
                    continue;
                };
                shared.metrics.sub_held_bytes(done.bytes);
                let refused = match result {
                    Ok(refused) => refused,
                    Err(e) => {
                        std::mem::forget(done.held);
                        shared.fail(sink_error(e));
                        return;
                    }
                };
                written.fetch_add(
                    (done.records - refused.len().min(done.records)) as u64,
                    Ordering::Relaxed,
                );
                if refused.is_empty() {
                    drop(done.held);
                    continue;
                }
                rejected.fetch_add(refused.len() as u64, Ordering::Relaxed);
                let give_up = |why: String| {
                    shared.fail(sink_error(why.into()));
                };
                match &on_reject {
                    _ if !can_reject => {
                        std::mem::forget(done.held);
                        give_up(format!(
                            "refused {} records ({}) but does not declare rejections",
                            refused.len(),
                            refused[0].failure.message
                        ));
                        return;
                    }
                    OnReject::DeadLetter(to_dead_letter) => {
                        let mut out = output.activate();
                        let mut session = out.session(&done.held);
                        for r in refused {
                            session.give(to_dead_letter(r.record, r.failure));
                        }
                        drop(session);
                        drop(out);
                        drop(done.held);
                    }
                    OnReject::RetryReduced(_) if done.retry => {
                        std::mem::forget(done.held);
                        give_up(format!(
                            "refused a reduced dead letter: {}",
                            refused[0].failure.message
                        ));
                        return;
                    }
                    OnReject::RetryReduced(reduce) => {
                        tracing::warn!(
                            step = %step,
                            records = refused.len(),
                            reason = %refused[0].failure.message,
                            "the dead-letter sink refused dead letters: retrying them reduced"
                        );
                        let reduced: Vec<_> =
                            refused.into_iter().map(|r| reduce(r.record)).collect();
                        let bytes = reduced.iter().map(|r| held_bytes(r) as u64).sum();
                        shared.metrics.add_held_bytes(bytes);
                        writes.start(w.as_mut(), done.held, reduced, bytes, true);
                    }
                }
            }
            let generation = shared.flush_generation.load(Ordering::SeqCst);
            let ack_generation = shared.ack_flush_generation.load(Ordering::SeqCst);
            if frontier.frontier().is_empty() && !flushed_at_end {
                flushed_at_end = true;
                w.flush();
            } else if w.streaming().is_some() {
                // Records in a streaming writer's open objects hold no memory of the pipeline
                // and do not count against the memory bounds: a source waiting on memory is
                // never this writer's reason to close an object early. One waiting on
                // unacknowledged epochs is: only closing its objects acknowledges them.
                seen_flush = generation;
                if ack_generation != seen_ack_flush {
                    seen_ack_flush = ack_generation;
                    if !receiving.is_empty() || !writes.writing.is_empty() {
                        w.flush();
                    }
                }
            } else {
                // A request is kept until this sink holds a write it can flush: one that comes
                // while the epoch is still being received must not be lost.
                if generation != seen_flush {
                    seen_flush = generation;
                    flush_pending = true;
                }
                if flush_pending && !writes.writing.is_empty() {
                    flush_pending = false;
                    w.flush();
                } else if flush_pending && stash.is_empty() {
                    flush_pending = false;
                }
            }
        }
    });
    ctx.sink_outputs
        .borrow_mut()
        .push((out_stream.clone(), durable_stream));
    out_stream
}

/// The bytes a record holds, for the in-flight byte bound: payload and attributes for the
/// message types the SDK knows (after every step, so decompressed payloads count as such), the
/// inline size for other types.
fn held_bytes<T: 'static>(record: &T) -> usize {
    let any = record as &dyn std::any::Any;
    if let Some(m) = any.downcast_ref::<Message>() {
        m.byte_size()
    } else if let Some(d) = any.downcast_ref::<DeadLetter>() {
        d.original.byte_size()
            + d.error_message.len()
            + d.stack_trace.as_ref().map_or(0, String::len)
    } else if let Some(r) = any.downcast_ref::<std::result::Result<Message, DeadLetter>>() {
        match r {
            Ok(m) => m.byte_size(),
            Err(d) => d.original.byte_size(),
        }
    } else if let Some(b) = any.downcast_ref::<bytes::Bytes>() {
        b.len()
    } else if let Some(s) = any.downcast_ref::<String>() {
        s.len()
    } else if let Some(v) = any.downcast_ref::<Vec<u8>>() {
        v.len()
    } else {
        std::mem::size_of::<T>()
    }
}

/// Runs a write on the IO runtime and reports its outcome, a panic included (a panicking write
/// future must end the run with an error, not hold its epoch forever).
fn spawn_write<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    future: WriteFuture<T>,
    id: u64,
    done: std::sync::mpsc::Sender<Done<T>>,
    wake: SyncActivator,
) {
    let task = runtime.spawn(future);
    runtime.spawn(async move {
        let result = match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(format!(
                "the write panicked: {}",
                crate::pipeline::panic_message(&e.into_panic())
            )
            .into()),
            Err(e) => Err(format!("the write was cancelled: {e}").into()),
        };
        let _ = done.send((id, result));
        let _ = wake.activate();
    });
}

/// What a fallible step needs to make dead letters.
pub(crate) struct FailureContext {
    pub(crate) error_type: String,
    pub(crate) job_name: String,
    pub(crate) provenance: Option<Rc<Provenance>>,
    pub(crate) stack_traces: bool,
}

impl FailureContext {
    pub(crate) fn dead_letter(&self, original: Message, failure: Failure) -> DeadLetter {
        let mut dl = DeadLetter::new(original, self.error_type.clone(), failure);
        dl.job_name = Some(self.job_name.clone());
        if let Some(p) = &self.provenance {
            dl.input = Some(p.input.clone());
            dl.input_type = Some(p.input_type.clone());
        }
        if !self.stack_traces {
            dl.stack_trace = None;
        }
        dl
    }
}

type Split<'s, U> = (StreamVec<'s, Epoch, U>, StreamVec<'s, Epoch, DeadLetter>);

/// Runs `f` on every record, owning it: `Ok` values go to the first output; a failure hands the
/// record back untouched and becomes a dead letter holding it, on the second output.
///
/// One operator with two outputs, so a record is moved once and never cloned; the borrowed
/// `try_map` runs through here too.
pub(crate) fn try_flat_map<'s, T, U, I, E, F>(
    stream: StreamVec<'s, Epoch, T>,
    step: &str,
    failures: FailureContext,
    ok_count: Arc<std::sync::atomic::AtomicU64>,
    failed_count: Arc<std::sync::atomic::AtomicU64>,
    mut f: F,
) -> Split<'s, U>
where
    T: Element + Original,
    U: Element,
    I: IntoIterator<Item = U>,
    E: Into<Failure>,
    F: FnMut(T) -> std::result::Result<I, (T, E)> + 'static,
{
    use timely::dataflow::operators::generic::OutputBuilder;
    use timely::progress::operate::FrontierInterest;

    let mut builder = OperatorBuilder::new(step.to_string(), stream.scope());
    let mut input = builder.new_input(stream, Local);
    // Like `map`: records in, records out, nothing to do when the frontier moves.
    builder.set_notify_for(0, FrontierInterest::Never);
    let (ok_output, ok_stream) = builder.new_output::<Vec<U>>();
    let (failed_output, failed_stream) = builder.new_output::<Vec<DeadLetter>>();
    let mut ok_output = OutputBuilder::<_, CapacityContainerBuilder<Vec<U>>>::from(ok_output);
    let mut failed_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(failed_output);
    // The initial capabilities are dropped: holding them would keep every epoch open.
    builder.build(move |_initial_caps| {
        move |_frontiers| {
            let mut ok_handle = ok_output.activate();
            let mut failed_handle = failed_output.activate();
            input.for_each(|cap, data| {
                let mut ok_session = ok_handle.session(&cap);
                let mut failed_session = failed_handle.session(&cap);
                let (mut ok, mut failed) = (0u64, 0u64);
                for record in data.drain(..) {
                    match f(record) {
                        Ok(outputs) => {
                            ok += 1;
                            ok_session.give_iterator(outputs.into_iter());
                        }
                        Err((record, e)) => {
                            failed += 1;
                            failed_session
                                .give(failures.dead_letter(record.into_original(), e.into()));
                        }
                    }
                }
                ok_count.fetch_add(ok, Ordering::Relaxed);
                failed_count.fetch_add(failed, Ordering::Relaxed);
            });
        }
    });
    (ok_stream, failed_stream)
}
