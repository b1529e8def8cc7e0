//! `Deduplicate`: keeps the first message per key within a retention window, on any number of
//! workers and processes, on differential dataflow.
//!
//! Clients resend a document after a network error, so the same document arrives more than once
//! (at Mozilla, duplicates were nearly half of all error records). Every keyed message is a
//! *sighting* of its key, `(event time, epoch, digest)`; the sightings are a differential
//! collection arranged by key (exchanged by key, so every copy of a key meets on one worker),
//! and a `reduce` keeps, per key, each sighting that has no other sighting less than the window
//! before it. A message is kept when its own sighting is kept in the epoch it arrives in; every
//! other copy is a duplicate.
//!
//! **What "first" means.** Sightings are ordered by event time, then by the epoch they arrived
//! in, then by a digest of the whole message: of copies with one time in one epoch (which
//! differential sees at once, in no order) the smallest digest is kept. A key seen again stays
//! suppressed for a window after its *last* sighting, duplicates included (the windowed-dedup
//! recipe of differential #479): a client resending every half hour stays deduplicated. A copy
//! arriving late (in a later epoch, with an earlier time than a kept one) is kept when nothing
//! lies less than the window before it, even if a kept copy lies after it: what was written is
//! never taken back.
//!
//! **Memory is bounded by the window, not the stream.** A sighting is retracted once the
//! worker's clock (the newest event time it saw, or the wall clock for processing time)
//! passes `time + window + lateness`: the deciding operator finds expired sightings in the
//! arrangement and sends their retractions around a feedback loop, and the arrangement
//! compacts them away. [`Gauge::DedupEntries`](crate::Gauge::DedupEntries) reports the
//! arrangement's size as differential holds it (the updates in its trace's batches, retractions
//! not yet merged away included). With processing time a timer keeps expiring while no record
//! arrives; sources keep closing epochs while idle, so the arrangement keeps compacting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::trace::{Cursor, TraceReader};
use differential_dataflow::{AsCollection, Hashable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, Concat, ConnectLoop, Feedback, Operator};
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use crate::io::Epoch;
use crate::metrics::{Counter, Gauge};
use crate::pcollection::{Original, PCollection, PTransform, WithFailures};
use crate::{Failure, Message};

/// The `error_type` of a duplicate's dead letter (gcp-ingestion's name).
pub const DUPLICATE_ERROR_TYPE: &str = "Duplicate";

/// What identifies copies of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DedupKey {
    /// An attribute's value (`uri`, `document_id`, ...). Messages without it are passed on.
    Attribute(String),
    /// Several attributes together (`uri`, then `document_type`): messages without the first
    /// are passed on; a missing later one counts as empty.
    Attributes(Vec<String>),
    /// A field of the JSON payload, as a JSON pointer (`/client_id`): its string value, or its
    /// JSON text for other values. Messages whose payload is not JSON or lacks the field are
    /// passed on. Costs a parse of the payload.
    PayloadField(String),
}

impl DedupKey {
    /// The whole `uri` (the default): dedup by `document_id` alone marked distinct pings that
    /// reused an id across doctypes as duplicates (gcp-ingestion #455).
    pub fn uri() -> Self {
        DedupKey::Attribute("uri".to_string())
    }

    /// The `document_id` attribute.
    pub fn document_id() -> Self {
        DedupKey::Attribute("document_id".to_string())
    }

    fn describe(&self) -> String {
        match self {
            DedupKey::Attribute(a) => format!("attribute `{a}`"),
            DedupKey::Attributes(names) => format!("attributes `{}`", names.join("`, `")),
            DedupKey::PayloadField(p) => format!("payload field `{p}`"),
        }
    }

    /// The key's value in `m`, if it has one.
    fn value(&self, m: &Message) -> Option<Vec<u8>> {
        match self {
            DedupKey::Attribute(a) => m.attribute(a).map(|v| v.as_bytes().to_vec()),
            DedupKey::Attributes(names) => {
                let (first, rest) = names.split_first()?;
                let mut key = m.attribute(first)?.as_bytes().to_vec();
                for name in rest {
                    // NUL cannot occur in an attribute's text, so parts cannot run together.
                    key.push(0);
                    key.extend_from_slice(m.attribute(name).unwrap_or("").as_bytes());
                }
                Some(key)
            }
            DedupKey::PayloadField(pointer) => {
                let doc: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
                match doc.pointer(pointer)? {
                    serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string().into_bytes()),
                }
            }
        }
    }
}

/// Which clock the window runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DedupTime {
    /// The `submission_timestamp` attribute (RFC 3339, set by the edge): the default, so that a
    /// replay of old data deduplicates as the live run did. A message without a readable one is
    /// timed by the wall clock; a time more than the lateness ahead of the wall clock counts as
    /// that bound (a broken clock must not flush the state).
    SubmissionTimestamp,
    /// The wall clock when the message reaches the step.
    ProcessingTime,
}

/// What happens to a duplicate. Either way it is counted under
/// [`Counter::Duplicates`](crate::Counter::Duplicates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDuplicate {
    /// A dead letter with `error_type` [`DUPLICATE_ERROR_TYPE`] (the default).
    DeadLetter,
    /// Dropped, only counted.
    Drop,
}

/// Milliseconds since the Unix epoch, from a function: the wall clock, or a test's own.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }))
    }

    /// A clock that reads `f` (milliseconds since the Unix epoch).
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    pub(crate) fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Keeps the first message per key within a retention window; the later copies are
/// duplicates: dead letters with `error_type` `Duplicate` by default, always counted.
///
/// The step name in metrics is the name given to `apply`; messages are exchanged by key, so the
/// step is correct on any number of workers and processes.
///
/// ```
/// use std::time::Duration;
/// use sluice::{Deduplicate, Message};
/// let at = |uri: &str, ts: &str| {
///     Message::new("{}").with_attribute("uri", uri).with_attribute("submission_timestamp", ts)
/// };
/// let input = vec![
///     at("/submit/a/b/1/x", "2020-01-01T00:00:00Z"),
///     at("/submit/a/b/1/x", "2020-01-01T00:30:00Z"), // within the hour: a duplicate
///     at("/submit/a/b/1/y", "2020-01-01T00:30:00Z"),
///     at("/submit/a/b/1/x", "2020-01-01T02:00:00Z"), // after the window: kept
/// ];
/// let out = sluice::harness::run(input, |input, dead| {
///     input
///         .apply("dedup", Deduplicate::new().with_window(Duration::from_secs(3600)))
///         .failures_to(dead)
/// });
/// assert_eq!(out.output.len(), 3);
/// assert_eq!(out.dead_letters.len(), 1);
/// assert_eq!(out.dead_letters[0].error_type, "Duplicate");
/// ```
#[derive(Clone, Debug)]
pub struct Deduplicate {
    key: DedupKey,
    window: Duration,
    lateness: Duration,
    time: DedupTime,
    on_duplicate: OnDuplicate,
    clock: Clock,
}

impl Default for Deduplicate {
    fn default() -> Self {
        Self::new()
    }
}

impl Deduplicate {
    /// By `uri`, within 24 hours of `submission_timestamp`, one hour of lateness, duplicates to
    /// dead letters.
    pub fn new() -> Self {
        Deduplicate {
            key: DedupKey::uri(),
            window: Duration::from_secs(24 * 3600),
            lateness: Duration::from_secs(3600),
            time: DedupTime::SubmissionTimestamp,
            on_duplicate: OnDuplicate::DeadLetter,
            clock: Clock::system(),
        }
    }

    /// What identifies copies.
    pub fn with_key(mut self, key: DedupKey) -> Self {
        self.key = key;
        self
    }

    /// How far apart in time two copies may be for the later one to be a duplicate.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How much older than the newest time seen a message may be and still find the copies it
    /// duplicates: the state keeps `window + lateness` of keys.
    pub fn with_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness;
        self
    }

    /// Which clock the window runs on.
    pub fn with_time(mut self, time: DedupTime) -> Self {
        self.time = time;
        self
    }

    /// What happens to a duplicate.
    pub fn on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.on_duplicate = on_duplicate;
        self
    }

    /// The wall clock to use (tests use their own).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How often an idle step on processing time forgets expired keys.
    fn tick(&self) -> Duration {
        (self.window / 100).clamp(Duration::from_millis(5), Duration::from_secs(10))
    }
}

/// A message with its key, event time and tiebreak, as it crosses workers.
#[derive(Clone, Serialize, Deserialize)]
struct Keyed {
    /// The key's digest; `None` for a message without a key.
    key: Option<(u64, u64)>,
    /// Event time, milliseconds since the Unix epoch.
    time: i64,
    /// A digest of the whole message: orders distinct copies of one time and epoch.
    tiebreak: u64,
    /// The decision: whether this copy is the one kept.
    kept: bool,
    message: Message,
}

impl Original for Keyed {
    fn to_original(&self) -> Message {
        self.message.clone()
    }
    fn into_original(self) -> Message {
        self.message
    }
}

/// One sighting of a key: its event time, the epoch it arrived in and the message's digest.
/// Sightings sort in that order, which is what "first" means.
type Sighting = (i64, Epoch, u64);

/// A sighting with its key.
type KeyedSighting = ((u64, u64), Sighting);

/// A differential update of the sightings collection.
type Update = (KeyedSighting, Epoch, isize);

/// The sightings of one key (sorted, each present at least once) that are kept: a sighting is
/// kept unless an earlier one lies less than `window` before it in event time. This is the
/// whole decision, and the `reduce` runs it on every key whose sightings changed.
fn kept_sightings<'a>(
    sorted: impl IntoIterator<Item = &'a Sighting>,
    window: i64,
    mut keep: impl FnMut(&'a Sighting),
) {
    let mut last: Option<i64> = None;
    for s in sorted {
        if last.is_none_or(|l| s.0.saturating_sub(l) >= window) {
            keep(s);
        }
        last = Some(s.0);
    }
}

/// 128 bits of SHA-256 of the key: the same in every process (the exchange needs that), and
/// a few bytes of state per key whatever its length.
fn digest(value: &[u8]) -> (u64, u64) {
    let d = Sha256::digest(value);
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&d[..8]);
    b.copy_from_slice(&d[8..16]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

fn submission_time(m: &Message) -> Option<i64> {
    let ts = m.attribute("submission_timestamp")?;
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// What the deciding operator needs besides its inputs.
struct Settings {
    window: i64,
    /// How long a sighting is remembered: window + lateness.
    retain: i64,
    /// Processing time: the clock is `wall`, and a timer keeps expiring while idle.
    processing: bool,
    wall: Clock,
    tick: Duration,
    entries: Arc<AtomicI64>,
    peak: Arc<AtomicI64>,
}

/// The worker (of `peers`) that owns a key: every sighting of it, its messages and its kept
/// decisions meet there.
fn owner(key: (u64, u64)) -> u64 {
    key.0
}

/// Decides, per epoch, which keyed messages are kept, on differential dataflow:
///
/// - every keyed message is a sighting `((key, (time, epoch, digest)), epoch, +1)`;
/// - the sightings, arranged by key (the step's whole state), feed a `reduce` that keeps, per
///   key, the sightings [`kept_sightings`] keeps; a message is kept when its own sighting
///   appears among them in its own epoch;
/// - a sighting is retracted once this worker's clock passes `time + retain`: the deciding
///   operator finds expired sightings in the arrangement's trace and sends their retractions
///   around a feedback loop, one epoch later, so that the arrangement compacts them away.
fn decide<'s>(stream: StreamVec<'s, Epoch, Keyed>, s: Settings) -> StreamVec<'s, Epoch, Keyed> {
    let scope = stream.scope();
    let sightings = stream
        .clone()
        .unary::<CapacityContainerBuilder<Vec<Update>>, _, _, _>(
            Local,
            "DedupSightings",
            |_, _| {
                |input, output| {
                    input.for_each(|cap, data| {
                        let Some(epoch) = cap.least().copied() else {
                            return;
                        };
                        output
                            .session(&cap)
                            .give_iterator(data.iter().filter_map(|k| {
                                k.key
                                    .map(|key| ((key, (k.time, epoch, k.tiebreak)), epoch, 1isize))
                            }));
                    });
                }
            },
        );
    let (loop_handle, looped) = scope.feedback::<Vec<Update>>(1);
    let arranged = sightings.concat(looped).as_collection().arrange_by_key();
    let trace = arranged.trace.clone();
    let window = s.window;
    let kept = arranged
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<(u64, u64), Sighting, _, _>, _, _>(
            "DedupKeep",
            move |_key, input, output| {
                kept_sightings(input.iter().map(|(s, _)| *s), window, |s| {
                    output.push((*s, 1isize))
                });
            },
            |vec, key, updates| {
                vec.clear();
                vec.extend(updates.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
            },
        )
        .as_collection(|k, v| (*k, *v))
        .inner;

    let mut builder = OperatorBuilder::new("Deduplicate".to_string(), scope);
    let info = builder.operator_info();
    let mut wakeup = crate::counts::Wakeup::new(scope.activator_for(info.address.clone()));
    // Keyless messages are spread round robin.
    let mut next = scope.index() as u64;
    let route = move |k: &Keyed| match k.key {
        Some(key) => owner(key),
        None => {
            next = next.wrapping_add(1);
            next
        }
    };
    let mut messages = builder.new_input(stream, Exchange::new(route));
    let mut kept_input = builder.new_input(kept, Exchange::new(|u: &Update| owner((u.0).0)));
    let (decided_output, decided) = builder.new_output::<Vec<Keyed>>();
    let mut decided_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Keyed>>>::from(decided_output);
    // Retractions are sent at the messages' frontier, never because of what the `reduce`
    // says: no progress path from the kept input, so the loop is no cycle of progress.
    let (expired_output, expired) = builder
        .new_output_connection::<Vec<Update>, _>([(0, Antichain::from_elem(Default::default()))]);
    let mut expired_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(expired_output);
    builder.build(move |mut caps| {
        let mut expire_cap = caps.pop();
        // Holding the decisions' initial capability would keep every epoch open.
        drop(caps);
        let mut trace = Some(trace);
        let mut stash: BTreeMap<Epoch, (Capability<Epoch>, Vec<Keyed>)> = BTreeMap::new();
        let mut kept: HashMap<Epoch, HashSet<KeyedSighting>> = HashMap::new();
        let mut clock = i64::MIN;
        let mut next_sweep: Option<i64> = None;
        // The epoch at which the last retractions sent reach the arrangement.
        let mut retracting: Option<Epoch> = None;
        let mut reported = 0i64;
        let mut scratch: Vec<Update> = Vec::new();
        move |frontiers| {
            let (messages_frontier, kept_frontier) = (&frontiers[0], &frontiers[1]);
            messages.for_each(|cap, data| {
                let Some(epoch) = cap.least().copied() else {
                    return;
                };
                match stash.entry(epoch) {
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        e.get_mut().1.append(data)
                    }
                    std::collections::btree_map::Entry::Vacant(v) => {
                        if let Some(held) = cap.retain_least(0) {
                            v.insert((held, std::mem::take(data)));
                        }
                    }
                }
            });
            kept_input.for_each(|_, data| {
                for ((key, sighting), time, diff) in data.drain(..) {
                    if sighting.1 == time && diff > 0 {
                        kept.entry(time).or_default().insert((key, sighting));
                    }
                }
            });
            // An epoch is decided once its messages and the `reduce`'s output for it are in.
            while let Some(epoch) = stash.keys().next().copied() {
                if messages_frontier.less_equal(&epoch) || kept_frontier.less_equal(&epoch) {
                    break;
                }
                let Some((held, batch)) = stash.remove(&epoch) else {
                    break;
                };
                let mut first = kept.remove(&epoch).unwrap_or_default();
                let mut out = decided_output.activate();
                let mut session = out.session(&held);
                session.give_iterator(batch.into_iter().map(|mut k| {
                    // The clock moves with the epochs decided, not with those still arriving:
                    // what a later epoch needs stays until it is decided.
                    clock = clock.max(k.time);
                    k.kept = match k.key {
                        Some(key) => first.remove(&(key, (k.time, epoch, k.tiebreak))),
                        None => true,
                    };
                    k
                }));
            }
            kept.retain(|t, _| kept_frontier.less_equal(t) || messages_frontier.less_equal(t));

            if s.processing {
                clock = clock.max(s.wall.now());
            }
            // Retractions go out at the messages' frontier; none once the input is done.
            match (messages_frontier.frontier().first(), expire_cap.as_mut()) {
                (Some(t), Some(cap)) if cap.time() < t => cap.downgrade(t),
                (None, _) => expire_cap = None,
                _ => {}
            }
            let Some(tr) = trace.as_mut() else { return };
            // Sweep when the clock has moved enough, and only over a trace that holds the
            // last retractions (else they would be sent twice).
            let caught_up = retracting.is_none_or(|t| !kept_frontier.less_equal(&t));
            let due = next_sweep.is_none_or(|at| clock >= at);
            if let (Some(cap), true, true) = (expire_cap.as_ref(), caught_up, due) {
                if clock > i64::MIN {
                    // Sent at the held time, the loop delivers them one epoch later: the
                    // updates must say so (differential wants no update before its message).
                    let at = *cap.time() + 1;
                    let horizon = clock.saturating_sub(s.retain);
                    let mut batches = Vec::new();
                    tr.map_spans(|span| batches.extend(span.inner.clone()));
                    let (mut cursor, storage) = cursor_list(batches);
                    while cursor.key_valid(&storage) {
                        let key = *cursor.key(&storage);
                        while cursor.val_valid(&storage) {
                            let sighting = *cursor.val(&storage);
                            if sighting.0 <= horizon {
                                let mut count = 0isize;
                                cursor.map_times(&storage, |_, r| count += *r);
                                if count > 0 {
                                    scratch.push(((key, sighting), at, -count));
                                }
                            }
                            cursor.step_val(&storage);
                        }
                        cursor.step_key(&storage);
                    }
                    if !scratch.is_empty() {
                        retracting = Some(at);
                        expired_output
                            .activate()
                            .session(cap)
                            .give_iterator(scratch.drain(..));
                    }
                    next_sweep = Some(clock.saturating_add((s.retain / 8).max(1)));
                }
            }
            // Let the arrangement compact up to what is complete.
            tr.set_logical_compaction(kept_frontier.frontier());
            tr.set_physical_compaction(kept_frontier.frontier());
            let mut size = 0usize;
            tr.map_spans(|span| size += span.inner.as_ref().map_or(0, |b| b.len()));
            let size = size as i64;
            let now = s.entries.fetch_add(size - reported, Ordering::Relaxed) + size - reported;
            reported = size;
            s.peak.fetch_max(now, Ordering::Relaxed);
            if messages_frontier.is_empty() && kept_frontier.is_empty() {
                // Done: give the state (and the gauge's share) back.
                trace = None;
                s.entries.fetch_sub(reported, Ordering::Relaxed);
                reported = 0;
            } else if s.processing && size > 0 && expire_cap.is_some() {
                // An idle stream must expire too: the clock moves without records.
                wakeup.after(s.tick);
            }
        }
    });
    expired.connect_loop(loop_handle);
    decided
}

impl<'s> PTransform<PCollection<'s, Message>> for Deduplicate {
    type Output = WithFailures<'s, Message>;

    // The record goes back whole with its failure: that is how a dead letter keeps it untouched.
    #[allow(clippy::result_large_err)]
    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let metrics = input.metrics();
        let label = input.step_name(DUPLICATE_ERROR_TYPE);
        let settings = Settings {
            window: millis(self.window),
            retain: millis(self.window).saturating_add(millis(self.lateness)),
            processing: self.time == DedupTime::ProcessingTime,
            wall: self.clock.clone(),
            tick: self.tick(),
            entries: metrics.gauge(Gauge::DedupEntries, &label),
            peak: metrics.gauge(Gauge::DedupEntriesPeak, &label),
        };
        let duplicates = metrics.counter(Counter::Duplicates, &label);
        let lateness = millis(self.lateness);
        let Deduplicate {
            key,
            window,
            time,
            on_duplicate,
            clock,
            ..
        } = self;

        let key_for_stamp = key.clone();
        let keyed = input.map(move |message: Message| {
            let now = clock.now();
            let time = match time {
                DedupTime::ProcessingTime => now,
                DedupTime::SubmissionTimestamp => {
                    submission_time(&message).map_or(now, |t| t.min(now.saturating_add(lateness)))
                }
            };
            Keyed {
                key: key_for_stamp.value(&message).map(|v| digest(&v)),
                time,
                tiebreak: message.hashed(),
                kept: false,
                message,
            }
        });
        let decided: PCollection<'s, Keyed> = keyed.derive(decide(keyed.stream(), settings));

        let message = format!(
            "duplicate: a message with the same {} was seen less than {} s before",
            key.describe(),
            window.as_secs()
        );
        match on_duplicate {
            OnDuplicate::DeadLetter => {
                decided.try_map_owned(DUPLICATE_ERROR_TYPE, move |k: Keyed| {
                    if k.kept {
                        Ok(k.message)
                    } else {
                        duplicates.fetch_add(1, Ordering::Relaxed);
                        let failure = Failure::new(message.clone())
                            .with_exception_class("sluice::dedup::Duplicate");
                        Err((k, failure))
                    }
                })
            }
            OnDuplicate::Drop => {
                let output = decided.flat_map(move |k: Keyed| {
                    if k.kept {
                        Some(k.message)
                    } else {
                        duplicates.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                });
                let failures = output.empty_like();
                WithFailures { output, failures }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(sightings: &[Sighting], window: i64) -> Vec<Sighting> {
        let mut sorted = sightings.to_vec();
        sorted.sort();
        let mut out = Vec::new();
        kept_sightings(&sorted, window, |s| out.push(*s));
        out
    }

    #[test]
    fn keeps_the_first_sighting_and_one_after_a_gap_of_a_window() {
        let out = kept(&[(0, 0, 1), (9, 0, 1), (10, 1, 1), (25, 1, 1)], 10);
        assert_eq!(
            out,
            vec![(0, 0, 1), (25, 1, 1)],
            "9 suppresses 10 (a window after the last sighting)"
        );
        let out = kept(&[(0, 0, 1), (10, 1, 1), (20, 2, 1)], 10);
        assert_eq!(out.len(), 3, "a window apart: all kept");
    }

    #[test]
    fn of_copies_at_one_time_the_earlier_epoch_then_the_smaller_digest_wins() {
        assert_eq!(kept(&[(5, 2, 1), (5, 1, 9)], 10), vec![(5, 1, 9)]);
        assert_eq!(kept(&[(5, 1, 9), (5, 1, 3)], 10), vec![(5, 1, 3)]);
    }

    #[test]
    fn a_late_copy_before_the_others_is_first() {
        // arrived last (epoch 7), earliest in time: it is first, the later ones follow it
        assert_eq!(kept(&[(50, 1, 1), (45, 7, 1)], 10), vec![(45, 7, 1)]);
    }

    #[test]
    fn keys_come_from_attributes_or_payload_fields() {
        let m = Message::new(r#"{"client_id": "c1", "n": 3}"#).with_attribute("uri", "/u");
        assert_eq!(DedupKey::uri().value(&m), Some(b"/u".to_vec()));
        let both = DedupKey::Attributes(vec!["uri".into(), "document_type".into()]);
        assert_eq!(both.value(&m), Some(b"/u\0".to_vec()));
        let part = m.clone().with_attribute("document_type", "split-subset");
        assert_eq!(both.value(&part), Some(b"/u\0split-subset".to_vec()));
        assert_eq!(
            DedupKey::Attributes(vec!["missing".into(), "uri".into()]).value(&m),
            None
        );
        assert_eq!(DedupKey::document_id().value(&m), None);
        let field = |p: &str| DedupKey::PayloadField(p.to_string()).value(&m);
        assert_eq!(field("/client_id"), Some(b"c1".to_vec()));
        assert_eq!(field("/n"), Some(b"3".to_vec()));
        assert_eq!(field("/missing"), None);
        let not_json = Message::new("\x1f\u{8b}");
        assert_eq!(DedupKey::PayloadField("/a".into()).value(&not_json), None);
    }

    #[test]
    fn submission_timestamps_are_read_as_rfc_3339() {
        let m = Message::new("").with_attribute("submission_timestamp", "2020-01-01T00:00:01.5Z");
        assert_eq!(submission_time(&m), Some(1_577_836_801_500));
        let bad = Message::new("").with_attribute("submission_timestamp", "yesterday");
        assert_eq!(submission_time(&bad), None);
    }
}
