//! `Deduplicate`: keeps the first message per key within a retention window, on any number of
//! workers and processes.
//!
//! Clients resend a document after a network error, so the same document arrives more than once
//! (at Mozilla, duplicates were nearly half of all error records). The step exchanges messages by
//! their key, so that every copy of a key meets on one worker, and each worker keeps, per key,
//! the event times of the copies it kept. A message is a duplicate when a kept copy of its key
//! lies less than the window away from it in event time; otherwise it is kept.
//!
//! **Memory is bounded by the window, not the stream.** A kept time `t` is forgotten once the
//! worker's clock (the newest event time it saw, or the wall clock for processing time) reaches
//! `t + window + lateness`: the state holds the keys of the last `window + lateness` only, which
//! [`Gauge::DedupEntries`](crate::Gauge::DedupEntries) reports. With processing time a timer
//! keeps forgetting while no record arrives, so an idle stream shrinks too; with event time an
//! idle stream holds what it held (the clock is the data's, and it does not move).
//!
//! Keeping every kept time of a key (not only the newest) makes the result independent of the
//! order in which copies arrive, as long as their times are no further out of order than the
//! lateness: that is what lets a run on 4 workers give exactly a run on 1.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;

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

/// A message with its key and event time, as it crosses workers.
#[derive(Clone, Serialize, Deserialize)]
struct Keyed {
    /// The key's digest; `None` for a message without a key.
    key: Option<(u64, u64)>,
    /// Event time, milliseconds since the Unix epoch.
    time: i64,
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

/// The kept times of one key: almost always one.
enum Kept {
    One(i64),
    Many(Vec<i64>),
}

impl Kept {
    fn any(&self, f: impl Fn(i64) -> bool) -> bool {
        match self {
            Kept::One(t) => f(*t),
            Kept::Many(ts) => ts.iter().any(|t| f(*t)),
        }
    }

    fn push(&mut self, t: i64) {
        match self {
            Kept::One(first) => *self = Kept::Many(vec![*first, t]),
            Kept::Many(ts) => ts.push(t),
        }
    }

    /// Removes one `t`; whether none is left.
    fn remove(&mut self, t: i64) -> bool {
        match self {
            Kept::One(_) => true,
            Kept::Many(ts) => {
                if let Some(i) = ts.iter().position(|x| *x == t) {
                    ts.swap_remove(i);
                }
                match ts[..] {
                    [] => true,
                    [one] => {
                        *self = Kept::One(one);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// One worker's keys: the kept times of each, and the order in which they expire.
pub(crate) struct DedupState {
    window: i64,
    retain: i64,
    clock: i64,
    kept: HashMap<(u64, u64), Kept>,
    expiry: BinaryHeap<Reverse<(i64, (u64, u64))>>,
    entries: Arc<AtomicI64>,
    peak: Arc<AtomicI64>,
}

impl DedupState {
    pub(crate) fn new(
        window: i64,
        lateness: i64,
        entries: Arc<AtomicI64>,
        peak: Arc<AtomicI64>,
    ) -> Self {
        DedupState {
            window,
            retain: window.saturating_add(lateness),
            clock: i64::MIN,
            kept: HashMap::new(),
            expiry: BinaryHeap::new(),
            entries,
            peak,
        }
    }

    /// Kept times held now.
    pub(crate) fn len(&self) -> usize {
        self.expiry.len()
    }

    /// Moves the clock to `now` (never back) and forgets the kept times it leaves behind.
    pub(crate) fn advance(&mut self, now: i64) {
        if now <= self.clock {
            return;
        }
        self.clock = now;
        let mut forgotten = 0;
        while let Some(Reverse((t, key))) = self.expiry.peek().copied() {
            if t.saturating_add(self.retain) > now {
                break;
            }
            self.expiry.pop();
            forgotten += 1;
            if let Some(kept) = self.kept.get_mut(&key) {
                if kept.remove(t) {
                    self.kept.remove(&key);
                }
            }
        }
        if forgotten > 0 {
            self.entries.fetch_sub(forgotten, Ordering::Relaxed);
        }
    }

    /// Whether a message with `key` at `time` is kept (and remembered) or a duplicate.
    pub(crate) fn observe(&mut self, key: (u64, u64), time: i64) -> bool {
        self.advance(time);
        let window = self.window;
        let near = |t: i64| time.abs_diff(t) < window.unsigned_abs();
        match self.kept.get_mut(&key) {
            Some(kept) if kept.any(near) => return false,
            Some(kept) => kept.push(time),
            None => {
                self.kept.insert(key, Kept::One(time));
            }
        }
        self.expiry.push(Reverse((time, key)));
        let now = self.entries.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        true
    }
}

impl Drop for DedupState {
    fn drop(&mut self) {
        // The gauge sums the workers of this process: take this worker's share out.
        self.entries
            .fetch_sub(self.expiry.len() as i64, Ordering::Relaxed);
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for Deduplicate {
    type Output = WithFailures<'s, Message>;

    // The record goes back whole with its failure: that is how a dead letter keeps it untouched.
    #[allow(clippy::result_large_err)]
    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let metrics = input.metrics();
        let label = input.step_name(DUPLICATE_ERROR_TYPE);
        let entries = metrics.gauge(Gauge::DedupEntries, &label);
        let peak = metrics.gauge(Gauge::DedupEntriesPeak, &label);
        let duplicates = metrics.counter(Counter::Duplicates, &label);
        let state = Rc::new(RefCell::new(DedupState::new(
            millis(self.window),
            millis(self.lateness),
            entries,
            peak,
        )));
        let tick = self.tick();
        let lateness = millis(self.lateness);
        let Deduplicate {
            key,
            window,
            time,
            on_duplicate,
            clock,
            ..
        } = self;

        let stamp_clock = clock.clone();
        let key_for_stamp = key.clone();
        let keyed = input.map(move |message: Message| {
            let now = stamp_clock.now();
            let time = match time {
                DedupTime::ProcessingTime => now,
                DedupTime::SubmissionTimestamp => {
                    submission_time(&message).map_or(now, |t| t.min(now.saturating_add(lateness)))
                }
            };
            Keyed {
                key: key_for_stamp.value(&message).map(|v| digest(&v)),
                time,
                message,
            }
        });

        // Every copy of a key meets on one worker; keyless messages are spread round robin.
        let stream = keyed.stream();
        let scope = stream.scope();
        let mut next = scope.index() as u64;
        let route = move |k: &Keyed| match k.key {
            Some((a, _)) => a,
            None => {
                next = next.wrapping_add(1);
                next
            }
        };
        let timer_state = state.clone();
        let processing = time == DedupTime::ProcessingTime;
        let exchanged = stream.unary_frontier::<CapacityContainerBuilder<Vec<Keyed>>, _, _, _>(
            Exchange::new(route),
            "DeduplicateExchange",
            move |initial, info| {
                // Holding the initial capability would keep every epoch open.
                drop(initial);
                let activator = scope.activator_for(info.address.clone());
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        output.session(&cap).give_container(data);
                    });
                    if processing {
                        // Forget on a timer too: an idle stream's state must shrink.
                        let mut state = timer_state.borrow_mut();
                        state.advance(clock.now());
                        if !frontier.is_empty() && state.len() > 0 {
                            activator.activate_after(tick);
                        }
                    }
                }
            },
        );
        let exchanged: PCollection<'s, Keyed> = keyed.derive(exchanged);

        let message = format!(
            "duplicate: a message with the same {} was kept less than {} s apart",
            key.describe(),
            window.as_secs()
        );
        let decide = move |k: &Keyed| match k.key {
            Some(key) => state.borrow_mut().observe(key, k.time),
            None => true,
        };
        match on_duplicate {
            OnDuplicate::DeadLetter => {
                exchanged.try_map_owned(DUPLICATE_ERROR_TYPE, move |k: Keyed| {
                    if decide(&k) {
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
                let output = exchanged.flat_map(move |k: Keyed| {
                    if decide(&k) {
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

    fn state(window: i64, lateness: i64) -> DedupState {
        DedupState::new(window, lateness, Arc::default(), Arc::default())
    }

    #[test]
    fn keeps_the_first_copy_and_one_after_the_window() {
        let mut s = state(10, 0);
        assert!(s.observe((1, 1), 0));
        assert!(!s.observe((1, 1), 9), "within the window");
        assert!(s.observe((2, 2), 9), "another key");
        assert!(s.observe((1, 1), 10), "after the window");
        assert!(!s.observe((1, 1), 15));
    }

    #[test]
    fn a_late_copy_meets_every_kept_time_within_the_lateness() {
        let mut s = state(10, 100);
        assert!(s.observe((1, 1), 50));
        assert!(
            s.observe((1, 1), 20),
            "30 earlier: outside the window, kept"
        );
        assert!(!s.observe((1, 1), 25), "near the late copy");
        assert!(!s.observe((1, 1), 55), "near the first copy");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn forgets_what_the_clock_leaves_behind_and_counts_it() {
        let entries = Arc::new(AtomicI64::new(0));
        let peak = Arc::new(AtomicI64::new(0));
        let mut s = DedupState::new(10, 5, entries.clone(), peak.clone());
        for k in 0..100 {
            assert!(s.observe((k, k), k as i64));
        }
        // at time 99 only keys kept at times > 99 - 15 remain
        assert_eq!(s.len(), 15);
        assert_eq!(entries.load(Ordering::Relaxed), 15);
        assert_eq!(peak.load(Ordering::Relaxed), 15);
        s.advance(1_000);
        assert_eq!(s.len(), 0);
        assert_eq!(entries.load(Ordering::Relaxed), 0);
        drop(s);
        assert_eq!(entries.load(Ordering::Relaxed), 0);
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
