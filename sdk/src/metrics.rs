//! Counters shared by the workers of one process: what the run summary and a metrics endpoint read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::io::PositionKind;

/// A family of counters, each labelled by a step name or an error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// Records read, by source step.
    Read,
    /// Bytes read, by source step.
    ReadBytes,
    /// Records durably written, by sink step.
    Written,
    /// Records a sink refused (turned into dead letters or retried reduced), by sink step.
    Rejected,
    /// Records a fallible step passed on, by step.
    StepOk,
    /// Records a fallible step turned into dead letters, by step.
    StepFailed,
    /// Dead letters written, by `error_type`.
    DeadLettered,
    /// Progress of bounded sources (reader units, e.g. bytes), by source step.
    ProgressDone,
    /// Size of bounded sources (reader units), by source step.
    ProgressTotal,
    /// Records dropped on purpose by a configured rule (never silently: this family is in the
    /// job's summary and the metrics endpoint), by rule name.
    Dropped,
    /// Records a `Deduplicate` step found to be duplicates (dead-lettered or dropped), by step.
    Duplicates,
}

impl Counter {
    /// The Prometheus-style name of the family.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Read => "records_read",
            Counter::ReadBytes => "bytes_read",
            Counter::Written => "records_written",
            Counter::Rejected => "records_rejected",
            Counter::StepOk => "step_records_ok",
            Counter::StepFailed => "step_records_failed",
            Counter::DeadLettered => "records_dead_lettered",
            Counter::ProgressDone => "source_progress_done",
            Counter::ProgressTotal => "source_progress_total",
            Counter::Dropped => "records_dropped",
            Counter::Duplicates => "duplicates",
        }
    }
}

/// A family of gauges, each labelled by a step name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Gauge {
    /// Updates a `Deduplicate` step's arrangement holds now (its sightings, and retractions
    /// not yet merged away), by step: what its memory is.
    DedupEntries,
    /// The most [`Gauge::DedupEntries`] held at once during the run, by step.
    DedupEntriesPeak,
    /// Updates a `CountOutcomes` step's arrangement holds now (its counts per retained minute
    /// and in total, and retractions not yet merged away), by step: what its memory is.
    OutcomeEntries,
}

impl Gauge {
    /// The Prometheus-style name of the family.
    pub fn name(self) -> &'static str {
        match self {
            Gauge::DedupEntries => "dedup_entries",
            Gauge::DedupEntriesPeak => "dedup_entries_peak",
            Gauge::OutcomeEntries => "outcome_entries",
        }
    }
}

/// The live counters of a pipeline run. Clones share state; read them from any thread while
/// the pipeline runs (progress bars, a metrics endpoint).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

#[derive(Default)]
struct MetricsInner {
    counters: Mutex<BTreeMap<(Counter, String), Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<(Gauge, String), Arc<AtomicI64>>>,
    outcomes: crate::counts::OutcomeCounts,
    /// Per source step and worker: what its reader last said of its positions.
    positions: Mutex<BTreeMap<(String, usize), Vec<crate::io::PartitionPosition>>>,
    in_flight_epochs: AtomicU64,
    held_bytes: AtomicU64,
    peak_held_bytes: AtomicU64,
}

impl Metrics {
    /// A new, empty set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter for `family` and `label`, created at zero. Operators fetch it once at build
    /// time and bump it without locking.
    pub fn counter(&self, family: Counter, label: &str) -> Arc<AtomicU64> {
        let mut map = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry((family, label.to_string())).or_default().clone()
    }

    /// The gauge for `family` and `label`, created at zero: a value that goes up and down
    /// (state sizes), summed over the workers of this process by adding and subtracting.
    pub fn gauge(&self, family: Gauge, label: &str) -> Arc<AtomicI64> {
        let mut map = self.inner.gauges.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((family, label.to_string())).or_default().clone()
    }

    /// The counts the [`CountOutcomes`](crate::CountOutcomes) steps maintain for the keys this
    /// process's workers own (in a cluster, each process holds the whole cluster's counts of
    /// its own keys).
    pub fn outcomes(&self) -> &crate::counts::OutcomeCounts {
        &self.inner.outcomes
    }

    /// Adds `n` to a counter (slow path: looks the counter up).
    pub fn add(&self, family: Counter, label: &str, n: u64) {
        self.counter(family, label).fetch_add(n, Ordering::Relaxed);
    }

    /// What worker `worker`'s reader of source step `step` says of its positions now (it
    /// replaces what it said before).
    pub fn set_source_positions(
        &self,
        step: &str,
        worker: usize,
        positions: Vec<crate::io::PartitionPosition>,
    ) {
        let mut map = self
            .inner
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.insert((step.to_string(), worker), positions);
    }

    pub(crate) fn set_in_flight_epochs(&self, n: u64) {
        self.inner.in_flight_epochs.store(n, Ordering::Relaxed);
    }

    pub(crate) fn add_held_bytes(&self, n: u64) {
        let now = self.inner.held_bytes.fetch_add(n, Ordering::SeqCst) + n;
        self.inner.peak_held_bytes.fetch_max(now, Ordering::SeqCst);
    }

    pub(crate) fn sub_held_bytes(&self, n: u64) {
        self.inner.held_bytes.fetch_sub(n, Ordering::SeqCst);
    }

    /// Bytes of records the sinks of this process hold now (received, not yet durable): the
    /// records as they are after every step (decompressed payloads, attributes), which the
    /// in-flight byte bound limits.
    pub fn held_bytes(&self) -> u64 {
        self.inner.held_bytes.load(Ordering::SeqCst)
    }

    /// The most [`Metrics::held_bytes`] reached during the run.
    pub fn peak_held_bytes(&self) -> u64 {
        self.inner.peak_held_bytes.load(Ordering::SeqCst)
    }

    /// The values now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let map = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        MetricsSnapshot {
            counters: map
                .iter()
                .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                .collect(),
            gauges: self
                .inner
                .gauges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                .collect(),
            positions: self.positions(),
            in_flight_epochs: self.inner.in_flight_epochs.load(Ordering::Relaxed),
            held_bytes: self.held_bytes(),
        }
    }

    /// The sources' positions by step, partition and figure, the workers' figures added up.
    fn positions(&self) -> BTreeMap<(String, String, PositionKind), i64> {
        let map = self
            .inner
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<(String, String, PositionKind), i64> = BTreeMap::new();
        for ((step, _), positions) in map.iter() {
            for p in positions {
                *out.entry((step.clone(), p.partition.clone(), p.kind))
                    .or_default() += p.value;
            }
        }
        out
    }
}

/// Counter values at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Every counter by family and label.
    pub counters: BTreeMap<(Counter, String), u64>,
    /// Every gauge by family and label.
    pub gauges: BTreeMap<(Gauge, String), i64>,
    /// Where unbounded sources stand, by source step, partition and figure (see
    /// [`SourceReader::positions`](crate::SourceReader::positions)).
    pub positions: BTreeMap<(String, String, PositionKind), i64>,
    /// Epochs read but not yet durably written, on the worker that last reported.
    pub in_flight_epochs: u64,
    /// Bytes the sinks of this process hold, not yet durable (see [`Metrics::held_bytes`]).
    pub held_bytes: u64,
}

impl MetricsSnapshot {
    /// The labels and values of one family.
    pub fn family(&self, family: Counter) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .filter(|((f, _), _)| *f == family)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }

    /// The sum of one family.
    pub fn total(&self, family: Counter) -> u64 {
        self.counters
            .iter()
            .filter(|((f, _), _)| *f == family)
            .map(|(_, v)| v)
            .sum()
    }

    /// Prometheus text exposition format, every family as a counter labelled by `step` (or
    /// `error_type` for dead letters, `rule` for dropped records), prefixed `sluice_`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut last = None;
        for ((family, label), value) in &self.counters {
            let name = family.name();
            if last != Some(*family) {
                out.push_str(&format!("# TYPE sluice_{name} counter\n"));
                last = Some(*family);
            }
            let key = match family {
                Counter::DeadLettered => "error_type",
                Counter::Dropped => "rule",
                _ => "step",
            };
            let label = label.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("sluice_{name}{{{key}=\"{label}\"}} {value}\n"));
        }
        out.push_str("# TYPE sluice_in_flight_epochs gauge\n");
        out.push_str(&format!(
            "sluice_in_flight_epochs {}\n",
            self.in_flight_epochs
        ));
        out.push_str("# TYPE sluice_held_bytes gauge\n");
        out.push_str(&format!("sluice_held_bytes {}\n", self.held_bytes));
        out
    }
}

/// What a finished run did, counted in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read, by source step.
    pub read: BTreeMap<String, u64>,
    /// Records durably written, by sink step (dead-letter sinks included).
    pub written: BTreeMap<String, u64>,
    /// Records passed on by each fallible step.
    pub step_ok: BTreeMap<String, u64>,
    /// Records each fallible step turned into dead letters.
    pub step_failed: BTreeMap<String, u64>,
    /// Dead letters written, by `error_type`.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Bytes read, all sources.
    pub bytes_read: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunSummary {
    pub(crate) fn from_snapshot(s: &MetricsSnapshot, elapsed: Duration) -> Self {
        RunSummary {
            read: s.family(Counter::Read),
            written: s.family(Counter::Written),
            step_ok: s.family(Counter::StepOk),
            step_failed: s.family(Counter::StepFailed),
            dead_lettered: s.family(Counter::DeadLettered),
            bytes_read: s.total(Counter::ReadBytes),
            elapsed,
        }
    }

    /// All records read.
    pub fn total_read(&self) -> u64 {
        self.read.values().sum()
    }

    /// All dead letters written.
    pub fn total_dead_lettered(&self) -> u64 {
        self.dead_lettered.values().sum()
    }
}
