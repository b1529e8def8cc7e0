//! `CountOutcomes`: how many documents of each namespace, doctype and version ended how
//! (written, or dead-lettered and why), per minute and in total, maintained as records pass.
//!
//! Each worker counts a batch of records locally and adds the batch's counts to the process's
//! [`OutcomeCounts`] (one lock per batch, not per record), which the metrics endpoint and the
//! status page read. Minutes are the wall clock's when the records pass; the last
//! [`OutcomeCounts::RETAINED_MINUTES`] minutes are kept, totals for the whole run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline as Local;
use timely::dataflow::operators::Operator;

use crate::dedup::Clock;
use crate::io::Sink;
use crate::operators::OnReject;
use crate::pcollection::{Element, PCollection, PTransform};
use crate::{DeadLetter, Message};

/// What one count is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// The outcome counts of a process: per minute (the last hour) and in total. Clones share
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
    /// Minutes of per-minute counts kept.
    pub const RETAINED_MINUTES: i64 = 60;
    /// Distinct keys counted on their own; more (labels from hostile uris, say) count under
    /// `other`, so the metrics endpoint stays small.
    pub const MAX_KEYS: usize = 10_000;

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds counts seen in `minute` (minutes since the Unix epoch).
    pub fn add(&self, minute: i64, counts: impl IntoIterator<Item = (OutcomeKey, u64)>) {
        let mut c = self.lock();
        for (key, n) in counts {
            let key = if c.totals.len() >= Self::MAX_KEYS && !c.totals.contains_key(&key) {
                OutcomeKey::overflow(key.outcome)
            } else {
                key
            };
            *c.minutes
                .entry(minute)
                .or_default()
                .entry(key.clone())
                .or_default() += n;
            *c.totals.entry(key).or_default() += n;
        }
        let newest = c.minutes.keys().next_back().copied().unwrap_or(minute);
        c.minutes = c.minutes.split_off(&(newest - Self::RETAINED_MINUTES + 1));
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

/// Counts the records passing by namespace, doctype, version and outcome into the pipeline's
/// [`OutcomeCounts`] ([`Metrics::outcomes`](crate::Metrics::outcomes)); passes them on
/// unchanged.
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

    /// The clock that says which minute it is (tests use their own).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn count<'s, T: Element>(
        self,
        input: PCollection<'s, T>,
        key: impl Fn(&T, &str) -> OutcomeKey + 'static,
    ) -> PCollection<'s, T> {
        let store = input.metrics().outcomes().clone();
        let CountOutcomes { outcome, clock } = self;
        let mut batch: HashMap<OutcomeKey, u64> = HashMap::new();
        let stream = input
            .stream()
            .unary::<CapacityContainerBuilder<Vec<T>>, _, _, _>(
                Local,
                "CountOutcomes",
                move |_, _| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            for r in data.iter() {
                                *batch.entry(key(r, &outcome)).or_default() += 1;
                            }
                            let minute = clock.now().div_euclid(60_000);
                            store.add(minute, batch.drain());
                            output.session(&cap).give_container(data);
                        });
                    }
                },
            );
        input.derive(stream)
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
/// `outcome`, `minute`) for path templates. One worker of each process writes its process's
/// counts (`process` says which). A row the sink refuses is retried once, then the pipeline
/// stops: the rows are the job's own, so a refusal is a configuration to fix.
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

    /// Writes the rows to `sink` as step `name`. `after` is the collection whose progress says
    /// that counting is complete: the last [`CountOutcomes`] step's output (the counted dead
    /// letters in the decoder job); rows for an epoch are written once it passed there.
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
        let stream = after
            .stream()
            .unary_frontier::<CapacityContainerBuilder<Vec<Message>>, _, _, _>(
                Local,
                "OutcomeRows",
                move |initial, info| {
                    let activator = scope.activator_for(info.address.clone());
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
                            activator.activate_after(every.saturating_sub(last.elapsed()));
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
    fn keeps_an_hour_of_minutes_and_every_total() {
        let c = OutcomeCounts::default();
        for minute in 0..100 {
            c.add(minute, [(key("a", "b", "1", "ok"), 2)]);
        }
        let s = c.snapshot();
        assert_eq!(s.totals[&key("a", "b", "1", "ok")], 200);
        assert_eq!(s.minutes.len(), 60);
        assert_eq!(s.minutes.keys().next(), Some(&40));
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
        let c = OutcomeCounts::default();
        for i in 0..OutcomeCounts::MAX_KEYS + 5 {
            c.add(0, [(key(&i.to_string(), "b", "1", "ok"), 1)]);
        }
        let s = c.snapshot();
        assert_eq!(s.totals.len(), OutcomeCounts::MAX_KEYS + 1);
        assert_eq!(s.totals[&key("other", "other", "other", "ok")], 5);
        assert_eq!(
            s.totals.values().sum::<u64>(),
            OutcomeCounts::MAX_KEYS as u64 + 5
        );
    }
}
