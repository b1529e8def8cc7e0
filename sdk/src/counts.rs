//! `CountOutcomes`: how many documents of each namespace, doctype and version ended how
//! (written, or dead-lettered and why), per minute and in total, maintained incrementally on
//! differential dataflow.
//!
//! Every record counted is two updates of a differential collection of counts: `+1` for its key
//! in the minute it passed (the wall clock's, minutes since the Unix epoch) and `+1` for its key
//! in total. Each worker sums its batch's updates per key before they move (a batch of many
//! records of a few keys crosses the workers as a few updates); the updates are exchanged by
//! key (namespace, doctype, version, outcome) and arranged, so every count of a key, from
//! every `CountOutcomes` step of every worker and process, meets on one worker. The
//! arrangement is the whole state: per key, its count in each retained minute and its total.
//!
//! **Memory is bounded by the retained hour, not the stream.** Once the clock passes a minute
//! by [`OutcomeCounts::RETAINED_MINUTES`], the operator that reads the arrangement finds the
//! minute's counts in its trace and sends their retractions around a feedback loop, and the
//! arrangement compacts them away; a timer keeps doing so while no record arrives. Totals are
//! never retracted. [`Gauge::OutcomeEntries`](crate::Gauge::OutcomeEntries) reports the
//! arrangement's size as differential holds it.
//!
//! **What reads the counts.** Every change differential makes to a count (consolidated per
//! epoch) is applied to the process's [`OutcomeCounts`], which the metrics endpoint, the status
//! page and [`OutcomeRows`] read. A key's counts live in the process of the worker that owns
//! the key: in a cluster, each process holds the complete counts of its own keys (sum the
//! processes for all of them). An epoch is acknowledged only once its counts are applied, so
//! after a run the counts are complete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
use differential_dataflow::trace::implementations::{KeyBatcher, KeySpine};
use differential_dataflow::trace::{Cursor, TraceReader};
use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Concat, Concatenate, ConnectLoop, Feedback, Operator};
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use crate::dedup::Clock;
use crate::io::{Epoch, Sink};
use crate::metrics::Gauge;
use crate::operators::OnReject;
use crate::pcollection::{Element, PCollection, PTransform};
use crate::{DeadLetter, Message};

/// What one count is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OutcomeKey {
    /// `document_namespace` (or the uri's), `unknown` when neither says.
    pub namespace: String,
    /// `document_type` (or the uri's).
    pub doctype: String,
    /// `document_version` (or the uri's).
    pub version: String,
    /// The outcome: the output's name (`decoded`) or the dead letter's `error_type`.
    pub outcome: String,
}

impl OutcomeKey {
    /// The key of `message` with `outcome`: from the decoded attributes, else from the `uri`
    /// (`/submit/<namespace>/<doctype>/<version>/...`, or the telemetry form, whose version is
    /// in the payload and so `unknown` here).
    pub fn of(message: &Message, outcome: &str) -> Self {
        let attr = |k: &str| message.attribute(k).filter(|v| !v.is_empty());
        let from_uri = message.attribute("uri").map(|u| {
            let parts: Vec<&str> = u.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["submit", "telemetry", _id, doctype, ..] => ("telemetry", *doctype, UNKNOWN),
                ["submit", ns, doctype, version, ..] => (*ns, *doctype, *version),
                _ => (UNKNOWN, UNKNOWN, UNKNOWN),
            }
        });
        let (ns, dt, v) = from_uri.unwrap_or((UNKNOWN, UNKNOWN, UNKNOWN));
        OutcomeKey {
            namespace: attr("document_namespace").unwrap_or(ns).to_string(),
            doctype: attr("document_type").unwrap_or(dt).to_string(),
            version: attr("document_version").unwrap_or(v).to_string(),
            outcome: outcome.to_string(),
        }
    }

    fn overflow(outcome: String) -> Self {
        OutcomeKey {
            namespace: OTHER.to_string(),
            doctype: OTHER.to_string(),
            version: OTHER.to_string(),
            outcome,
        }
    }
}

const UNKNOWN: &str = "unknown";
const OTHER: &str = "other";

/// The outcome counts of a process, as the [`CountOutcomes`] steps maintain them: per minute
/// (the retained hour) and in total, for the keys this process's workers own. Clones share
/// state.
#[derive(Clone)]
pub struct OutcomeCounts {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    totals: BTreeMap<OutcomeKey, u64>,
    minutes: BTreeMap<i64, BTreeMap<OutcomeKey, u64>>,
    /// Whether a worker of this process writes the rows of [`OutcomeRows`] (one does).
    rows_claimed: bool,
}

impl Default for OutcomeCounts {
    fn default() -> Self {
        OutcomeCounts {
            inner: Arc::new(Mutex::new(Counts::default())),
        }
    }
}

/// Counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutcomeSnapshot {
    /// Every key's count since the start.
    pub totals: BTreeMap<OutcomeKey, u64>,
    /// Counts per minute (minutes since the Unix epoch), the last
    /// [`OutcomeCounts::RETAINED_MINUTES`].
    pub minutes: BTreeMap<i64, BTreeMap<OutcomeKey, u64>>,
}

impl OutcomeCounts {
    /// Minutes of per-minute counts kept: a minute is retracted once the clock is this many
    /// minutes past it.
    pub const RETAINED_MINUTES: i64 = 60;
    /// Distinct keys each worker of a [`CountOutcomes`] step counts on their own; more (labels
    /// from hostile uris, say) count under `other`, so the state and the metrics endpoint
    /// stay small.
    pub const MAX_KEYS: usize = 10_000;

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds counts seen in `minute` (minutes since the Unix epoch) to that minute and to the
    /// totals. The [`CountOutcomes`] steps apply what differential maintains instead (and
    /// retract old minutes); this is for counts made outside a pipeline.
    pub fn add(&self, minute: i64, counts: impl IntoIterator<Item = (OutcomeKey, u64)>) {
        let updates = counts.into_iter().flat_map(|(key, n)| {
            let n = isize::try_from(n).unwrap_or(isize::MAX);
            [((Some(minute), key.clone()), n), ((None, key), n)]
        });
        self.apply(updates);
    }

    /// Applies changes of counts: `(bucket, key)` with a difference, `None` the total.
    fn apply(&self, changes: impl IntoIterator<Item = (Counted, isize)>) {
        let mut c = self.lock();
        for ((bucket, key), diff) in changes {
            match bucket {
                None => change(&mut c.totals, key, diff),
                Some(minute) => {
                    let counts = c.minutes.entry(minute).or_default();
                    change(counts, key, diff);
                    if counts.is_empty() {
                        c.minutes.remove(&minute);
                    }
                }
            }
        }
    }

    /// Whether the caller is the first to claim writing this process's rows.
    fn claim_rows(&self) -> bool {
        !std::mem::replace(&mut self.lock().rows_claimed, true)
    }

    /// The counts now.
    pub fn snapshot(&self) -> OutcomeSnapshot {
        let c = self.lock();
        OutcomeSnapshot {
            totals: c.totals.clone(),
            minutes: c.minutes.clone(),
        }
    }
}

/// Adds `diff` to `key`'s count; a count of zero is no entry.
fn change(counts: &mut BTreeMap<OutcomeKey, u64>, key: OutcomeKey, diff: isize) {
    let entry = counts.entry(key.clone()).or_default();
    *entry = entry.saturating_add_signed(diff as i64);
    if *entry == 0 {
        counts.remove(&key);
    }
}

/// A count's bucket: a minute (minutes since the Unix epoch), or `None` for the total.
type Bucket = Option<i64>;
/// What the differential collection counts: a key in a bucket. Ordered by bucket first, so
/// that the expired minutes are the first keys of the arrangement after the totals.
type Counted = (Bucket, OutcomeKey);
/// An update of the counts collection as the arrangement takes it.
type Update = ((Counted, ()), Epoch, isize);
/// The arrangement of the counts.
type CountTrace = TraceAgent<KeySpine<Counted, Epoch, isize>>;

/// The worker that owns `key`: its minutes and its total, from every step, meet there.
fn owner(key: &OutcomeKey) -> u64 {
    key.hashed()
}

/// The minute of `millis` (milliseconds since the Unix epoch).
fn minute_of(millis: i64) -> i64 {
    millis.div_euclid(60_000)
}

/// The keys one worker of a step has counted on their own, at most
/// [`OutcomeCounts::MAX_KEYS`].
#[derive(Default)]
struct KeyCap {
    known: HashSet<OutcomeKey>,
}

impl KeyCap {
    /// `key`, or its `other` key once the cap is reached by other keys.
    fn admit(&mut self, key: OutcomeKey) -> OutcomeKey {
        if self.known.contains(&key) {
            key
        } else if self.known.len() >= OutcomeCounts::MAX_KEYS {
            OutcomeKey::overflow(key.outcome)
        } else {
            self.known.insert(key.clone());
            key
        }
    }
}

/// Counts the records passing by namespace, doctype, version and outcome, per minute and in
/// total, on differential dataflow (how and why: the comments of `sdk/src/counts.rs`); passes them on unchanged.
/// The process's counts are [`Metrics::outcomes`](crate::Metrics::outcomes).
///
/// On a collection of messages the outcome is the transform's name (`decoded` by default); on
/// dead letters it is their `error_type`, and the labels come from the original message.
/// Records are counted where the step stands: put it just before the sinks.
///
/// ```
/// use sluice::{CountOutcomes, Message, OutcomeKey};
/// let input = vec![Message::new("{}").with_attribute("uri", "/submit/ns/doc/1/x")];
/// let out = sluice::harness::run(input, |input, _| input.apply("count", CountOutcomes::new()));
/// assert_eq!(out.output.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct CountOutcomes {
    outcome: String,
    clock: Clock,
}

impl Default for CountOutcomes {
    fn default() -> Self {
        Self::new()
    }
}

impl CountOutcomes {
    /// Counts messages as `decoded`, dead letters by `error_type`, per wall-clock minute.
    pub fn new() -> Self {
        CountOutcomes {
            outcome: "decoded".to_string(),
            clock: Clock::system(),
        }
    }

    /// The outcome messages are counted as.
    pub fn with_outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }

    /// The clock that says which minute it is, for the counts and for their retraction (tests
    /// use their own).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn count<'s, T: Element>(
        self,
        input: PCollection<'s, T>,
        key: impl Fn(&T, &str) -> OutcomeKey + 'static,
    ) -> PCollection<'s, T> {
        let metrics = input.metrics();
        let step = input.applied_name();
        let CountOutcomes { outcome, clock } = self;
        let (records, updates) = stamp(input.stream(), key, outcome, clock.clone());
        let done = maintain(
            updates,
            Maintain {
                store: metrics.outcomes().clone(),
                clock,
                entries: metrics.gauge(Gauge::OutcomeEntries, &step),
            },
        );
        input.add_counted(done);
        input.derive(records)
    }
}

/// Passes the records on and sums each batch's counts per key: two updates per key, its
/// minute's and its total's, at the batch's epoch.
fn stamp<'s, T: Element>(
    stream: StreamVec<'s, Epoch, T>,
    key: impl Fn(&T, &str) -> OutcomeKey + 'static,
    outcome: String,
    clock: Clock,
) -> (StreamVec<'s, Epoch, T>, StreamVec<'s, Epoch, Update>) {
    let scope = stream.scope();
    let mut builder = OperatorBuilder::new("CountOutcomes".to_string(), scope);
    let mut input = builder.new_input(stream, Local);
    // Like `map`: records in, records out, nothing to do when the frontier moves.
    builder.set_notify_for(0, timely::progress::operate::FrontierInterest::Never);
    let (records_output, records) = builder.new_output::<Vec<T>>();
    let mut records_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<T>>>::from(records_output);
    let (updates_output, updates) = builder.new_output::<Vec<Update>>();
    let mut updates_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(updates_output);
    builder.build(move |caps| {
        drop(caps);
        let mut cap_keys = KeyCap::default();
        let mut batch: HashMap<OutcomeKey, isize> = HashMap::new();
        move |_frontiers| {
            let mut records_handle = records_output.activate();
            let mut updates_handle = updates_output.activate();
            input.for_each(|cap, data| {
                let Some(epoch) = cap.least().copied() else {
                    return;
                };
                for r in data.iter() {
                    *batch.entry(cap_keys.admit(key(r, &outcome))).or_default() += 1;
                }
                let minute = minute_of(clock.now());
                updates_handle
                    .session(&cap)
                    .give_iterator(batch.drain().flat_map(|(k, n)| {
                        [
                            (((Some(minute), k.clone()), ()), epoch, n),
                            (((None, k), ()), epoch, n),
                        ]
                    }));
                records_handle.session(&cap).give_container(data);
            });
        }
    });
    (records, updates)
}

/// What the operator that reads the counts' arrangement needs besides its inputs.
struct Maintain {
    store: OutcomeCounts,
    clock: Clock,
    entries: Arc<AtomicI64>,
}

/// Schedules an operator after a delay with at most one wake-up pending: an operator that is
/// scheduled on every frontier change and asked for a timer each time would pile them up (each
/// timer that fires asks for another).
pub(crate) struct Wakeup {
    activator: timely::scheduling::Activator,
    pending: Option<Instant>,
}

impl Wakeup {
    pub(crate) fn new(activator: timely::scheduling::Activator) -> Self {
        Wakeup {
            activator,
            pending: None,
        }
    }

    /// Schedules the operator in `delay`, unless a wake-up is pending no later than that.
    pub(crate) fn after(&mut self, delay: Duration) {
        let now = Instant::now();
        let at = now + delay;
        if self.pending.is_some_and(|p| p > now && p <= at) {
            return;
        }
        self.activator.activate_after(delay);
        self.pending = Some(at);
    }
}

/// How often an idle worker looks whether a minute expired.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// Arranges the counts and keeps the process's [`OutcomeCounts`] equal to what the
/// arrangement holds:
///
/// - the updates, exchanged by key, are arranged by `(bucket, key)`: the arrangement's trace
///   holds every count, its output stream every change of one;
/// - the `Maintain` operator applies each change to the store and, once the clock has passed
///   a minute by the retained hour, finds that minute's counts in the trace and retracts them
///   around a feedback loop, one epoch later, so that the arrangement compacts them away.
///
/// Returns a stream whose frontier passes an epoch once its counts are applied.
fn maintain<'s>(updates: StreamVec<'s, Epoch, Update>, m: Maintain) -> StreamVec<'s, Epoch, ()> {
    let scope = updates.scope();
    let (loop_handle, looped) = scope.feedback::<Vec<Update>>(1);
    let arranged =
        arrange_core::<_, _, KeyBatcher<Counted, Epoch, isize>, KeySpine<Counted, Epoch, isize>>(
            updates.clone().concat(looped),
            Exchange::new(|u: &Update| owner(&((u.0).0).1)),
            "CountOutcomesArrange",
            KeyBatcher::new,
        );
    let trace = arranged.trace.clone();
    let changes = arranged.as_collection(|k: &Counted, _| k.clone()).inner;

    let mut builder = OperatorBuilder::new("CountOutcomesMaintain".to_string(), scope);
    let info = builder.operator_info();
    let mut wakeup = Wakeup::new(scope.activator_for(info.address.clone()));
    // The updates before the loop: only their frontier, which says when the input is done.
    let mut counted_input = builder.new_input(updates, Local);
    let mut changes_input = builder.new_input(changes, Local);
    // Retractions are sent at the updates' frontier, never because of the arrangement's: no
    // progress path from the changes, so the loop is no cycle of progress.
    let (expired_output, expired) = builder
        .new_output_connection::<Vec<Update>, _>([(0, Antichain::from_elem(Default::default()))]);
    let mut expired_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(expired_output);
    // Nothing is sent on it: its frontier follows both inputs.
    let (_applied_output, applied) = builder.new_output::<Vec<()>>();
    builder.build(move |caps| {
        let mut caps = caps.into_iter();
        let mut expire_cap = caps.next();
        // Holding the applied output's initial capability would keep every epoch open.
        drop(caps);
        let mut trace: Option<CountTrace> = Some(trace);
        // The epoch at which the last retractions sent reach the arrangement.
        let mut retracting: Option<Epoch> = None;
        // The horizon of the last sweep: minutes up to it are retracted.
        let mut swept: Option<i64> = None;
        // A count arrived for a minute already past the horizon.
        let mut late = false;
        let mut reported = 0i64;
        let mut changes: Vec<(Counted, isize)> = Vec::new();
        let mut scratch: Vec<Update> = Vec::new();
        move |frontiers| {
            let (counted_frontier, changes_frontier) = (&frontiers[0], &frontiers[1]);
            counted_input.for_each(|_, _| {});
            let horizon = minute_of(m.clock.now()) - OutcomeCounts::RETAINED_MINUTES;
            changes_input.for_each(|_, data| {
                for (counted, _, diff) in data.drain(..) {
                    if counted.0.is_some_and(|minute| minute <= horizon) && diff > 0 {
                        late = true;
                    }
                    changes.push((counted, diff));
                }
            });
            if !changes.is_empty() {
                m.store.apply(changes.drain(..));
            }
            match (counted_frontier.frontier().first(), expire_cap.as_mut()) {
                (Some(t), Some(cap)) if cap.time() < t => cap.downgrade(t),
                (None, _) => expire_cap = None,
                _ => {}
            }
            let Some(tr) = trace.as_mut() else { return };
            // Sweep when the horizon moved or a count came in behind it, and only over a trace
            // that holds the last retractions (else they would be sent twice).
            let caught_up = retracting.is_none_or(|t| !changes_frontier.less_equal(&t));
            let due = late || swept.is_none_or(|h| horizon > h);
            if let (Some(cap), true, true) = (expire_cap.as_ref(), caught_up, due) {
                // Sent at the held time, the loop delivers them one epoch later.
                let at = *cap.time() + 1;
                expired_minutes(tr, horizon, at, &mut scratch);
                if !scratch.is_empty() {
                    retracting = Some(at);
                    expired_output
                        .activate()
                        .session(cap)
                        .give_iterator(scratch.drain(..));
                }
                swept = Some(horizon);
                late = false;
            }
            // Let the arrangement compact up to what is complete.
            tr.set_logical_compaction(changes_frontier.frontier());
            tr.set_physical_compaction(changes_frontier.frontier());
            let mut size = 0usize;
            tr.map_spans(|span| size += span.inner.as_ref().map_or(0, |b| b.len()));
            let size = size as i64;
            m.entries.fetch_add(size - reported, Ordering::Relaxed);
            reported = size;
            if counted_frontier.is_empty() && changes_frontier.is_empty() {
                // Done: give the state (and the gauge's share) back.
                trace = None;
                m.entries.fetch_sub(reported, Ordering::Relaxed);
                reported = 0;
            } else if size > 0 && expire_cap.is_some() {
                // An idle stream must expire too: the clock moves without records.
                wakeup.after(EXPIRY_TICK);
            }
        }
    });
    expired.connect_loop(loop_handle);
    applied
}

/// The retractions, at `at`, of every count in the trace of a minute up to `horizon`.
fn expired_minutes(tr: &mut CountTrace, horizon: i64, at: Epoch, out: &mut Vec<Update>) {
    let mut batches = Vec::new();
    tr.map_spans(|span| batches.extend(span.inner.clone()));
    let (mut cursor, storage) = cursor_list(batches);
    // The totals sort first (`None`); the minutes follow, oldest first.
    cursor.seek_key(&storage, &(Some(i64::MIN), OutcomeKey::default()));
    while let Some(counted) = cursor.get_key(&storage) {
        if counted.0.is_none_or(|minute| minute > horizon) {
            break;
        }
        let counted = counted.clone();
        let mut count = 0isize;
        while cursor.val_valid(&storage) {
            cursor.map_times(&storage, |_, r| count += *r);
            cursor.step_val(&storage);
        }
        if count != 0 {
            out.push(((counted, ()), at, -count));
        }
        cursor.step_key(&storage);
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for CountOutcomes {
    type Output = PCollection<'s, Message>;
    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        self.count(input, OutcomeKey::of)
    }
}

impl<'s> PTransform<PCollection<'s, DeadLetter>> for CountOutcomes {
    type Output = PCollection<'s, DeadLetter>;
    fn expand(self, input: PCollection<'s, DeadLetter>) -> Self::Output {
        self.count(input, |d: &DeadLetter, _| {
            OutcomeKey::of(&d.original, &d.error_type)
        })
    }
}

/// Writes the counts of this process to a sink as periodic snapshot rows: every `every`, one
/// row per namespace, doctype, version, outcome and minute whose count changed since the last
/// rows, with the minute's count so far; a last set when the pipeline's input ends. The newest
/// row of a (key, minute) holds its count (counts only grow), so a reader keeps the newest.
///
/// A row is a [`Message`] whose payload is a JSON object `{"namespace", "doctype", "version",
/// "outcome", "minute" (RFC 3339, e.g. `2026-12-05T21:14:00Z`), "count", "process"}` and whose
/// attributes name the same (`document_namespace`, `document_type`, `document_version`,
/// `outcome`, `minute`) for path templates. One worker of each process writes the counts its
/// process holds: the whole cluster's counts of the keys its workers own (`process` says
/// which), so no two processes write rows of one key. A row the sink refuses is retried once,
/// then the pipeline stops: the rows are the job's own, so a refusal is a configuration to fix.
#[derive(Clone, Debug)]
pub struct OutcomeRows {
    every: Duration,
}

impl OutcomeRows {
    /// Rows every `every` (and at the end).
    pub fn every(every: Duration) -> Self {
        OutcomeRows {
            every: every.max(Duration::from_millis(10)),
        }
    }

    /// Writes the rows to `sink` as step `name`, after the [`CountOutcomes`] steps built so far
    /// in `after`'s pipeline: rows for an epoch are written once their counts are applied.
    pub fn write<'s, T: Element, S: Sink<Input = Message>>(
        self,
        after: &PCollection<'s, T>,
        name: &str,
        sink: S,
    ) {
        let store = after.metrics().outcomes().clone();
        let process = after.process_index();
        let every = self.every;
        let scope = after.stream().scope();
        let counted = after.counted();
        let counted = if counted.is_empty() {
            timely::dataflow::operators::vec::Map::map(after.stream(), |_| ())
        } else {
            scope.concatenate(counted)
        };
        let stream = counted.unary_frontier::<CapacityContainerBuilder<Vec<Message>>, _, _, _>(
            Local,
            "OutcomeRows",
            move |initial, info| {
                let mut wakeup = Wakeup::new(scope.activator_for(info.address.clone()));
                // One worker per process writes the process's counts.
                let mut cap = store.claim_rows().then_some(initial);
                let mut sent: HashMap<(i64, OutcomeKey), u64> = HashMap::new();
                let mut last = std::time::Instant::now();
                move |(input, frontier), output| {
                    input.for_each(|_, _| {});
                    let Some(held) = cap.as_mut() else { return };
                    let done = frontier.is_empty();
                    if done || last.elapsed() >= every {
                        last = std::time::Instant::now();
                        let rows = changed_rows(&store, &mut sent, process);
                        if !rows.is_empty() {
                            output.session(&*held).give_iterator(rows.into_iter());
                        }
                    }
                    match frontier.frontier().first() {
                        Some(t) if held.time() < t => held.downgrade(t),
                        Some(_) => {}
                        None => cap = None,
                    }
                    if cap.is_some() {
                        wakeup.after(every.saturating_sub(last.elapsed()));
                    }
                }
            },
        );
        // No obligations of `after`'s: the rows are a collection of their own.
        let rows = after.empty_like::<Message>().derive(stream);
        let _ = rows.write_with(name, sink, OnReject::RetryReduced(Box::new(|m| m)));
    }
}

/// Rows for the (minute, key) counts that changed since `sent`, which is updated.
fn changed_rows(
    store: &OutcomeCounts,
    sent: &mut HashMap<(i64, OutcomeKey), u64>,
    process: usize,
) -> Vec<Message> {
    let snapshot = store.snapshot();
    let oldest = snapshot.minutes.keys().next().copied().unwrap_or(i64::MIN);
    sent.retain(|(minute, _), _| *minute >= oldest);
    let mut rows = Vec::new();
    for (minute, counts) in snapshot.minutes {
        for (key, count) in counts {
            let entry = sent.entry((minute, key.clone())).or_default();
            if *entry == count {
                continue;
            }
            *entry = count;
            rows.push(outcome_row(&key, minute, count, process));
        }
    }
    rows
}

/// One row: `minute` is minutes since the Unix epoch.
pub(crate) fn outcome_row(key: &OutcomeKey, minute: i64, count: u64, process: usize) -> Message {
    let at = chrono::DateTime::from_timestamp(minute.saturating_mul(60), 0).map_or_else(
        || minute.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    let payload = serde_json::json!({
        "namespace": key.namespace,
        "doctype": key.doctype,
        "version": key.version,
        "outcome": key.outcome,
        "minute": at,
        "count": count,
        "process": process,
    });
    Message::new(payload.to_string())
        .with_attribute("document_namespace", &key.namespace)
        .with_attribute("document_type", &key.doctype)
        .with_attribute("document_version", &key.version)
        .with_attribute("outcome", &key.outcome)
        .with_attribute("minute", at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, dt: &str, v: &str, outcome: &str) -> OutcomeKey {
        OutcomeKey {
            namespace: ns.into(),
            doctype: dt.into(),
            version: v.into(),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn labels_come_from_decoded_attributes_then_the_uri() {
        let decoded = Message::new("")
            .with_attribute("document_namespace", "ns")
            .with_attribute("document_type", "dt")
            .with_attribute("document_version", "4")
            .with_attribute("uri", "/submit/a/b/1/x");
        assert_eq!(OutcomeKey::of(&decoded, "ok"), key("ns", "dt", "4", "ok"));
        let raw = Message::new("").with_attribute("uri", "/submit/a/b/1/x");
        assert_eq!(OutcomeKey::of(&raw, "E"), key("a", "b", "1", "E"));
        let telemetry =
            Message::new("").with_attribute("uri", "/submit/telemetry/id/main/Firefox/1/x/y");
        assert_eq!(
            OutcomeKey::of(&telemetry, "E"),
            key("telemetry", "main", "unknown", "E")
        );
        assert_eq!(
            OutcomeKey::of(&Message::new(""), "E"),
            key("unknown", "unknown", "unknown", "E")
        );
    }

    #[test]
    fn changes_apply_to_minutes_and_totals_and_a_retraction_removes_its_minute() {
        let c = OutcomeCounts::default();
        let k = key("a", "b", "1", "ok");
        for minute in 0..3 {
            c.add(minute, [(k.clone(), 2)]);
        }
        c.apply([((Some(0), k.clone()), -2), ((Some(1), k.clone()), -1)]);
        let s = c.snapshot();
        assert_eq!(s.totals[&k], 6, "totals are not retracted");
        assert_eq!(s.minutes.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.minutes[&1][&k], 1);
    }

    #[test]
    fn rows_say_what_changed_since_the_last_rows() {
        let c = OutcomeCounts::default();
        let mut sent = HashMap::new();
        c.add(
            29_000_000,
            [(key("a", "b", "1", "ok"), 2), (key("a", "b", "1", "E"), 1)],
        );
        let rows = changed_rows(&c, &mut sent, 0);
        assert_eq!(rows.len(), 2);
        c.add(29_000_000, [(key("a", "b", "1", "ok"), 3)]);
        let rows = changed_rows(&c, &mut sent, 1);
        assert_eq!(rows.len(), 1, "only the count that changed");
        let row: serde_json::Value = serde_json::from_slice(&rows[0].payload).unwrap();
        assert_eq!(
            row,
            serde_json::json!({"namespace": "a", "doctype": "b", "version": "1", "outcome": "ok",
                "minute": "2025-02-19T21:20:00Z", "count": 5, "process": 1})
        );
        assert_eq!(rows[0].attribute("document_type"), Some("b"));
        assert!(changed_rows(&c, &mut sent, 0).is_empty());
    }

    #[test]
    fn too_many_keys_count_as_other() {
        let mut cap = KeyCap::default();
        for i in 0..OutcomeCounts::MAX_KEYS {
            assert_eq!(
                cap.admit(key(&i.to_string(), "b", "1", "ok")).namespace,
                i.to_string()
            );
        }
        assert_eq!(
            cap.admit(key("new", "b", "1", "E")),
            key("other", "other", "other", "E")
        );
        assert_eq!(
            cap.admit(key("0", "b", "1", "ok")).namespace,
            "0",
            "a known key stays"
        );
    }
}
