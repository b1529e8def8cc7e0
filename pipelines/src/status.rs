//! The metrics address: Prometheus metrics (`/metrics`), liveness (`/health`), readiness
//! (`/ready`), the live status page (`/`) and the JSON it polls (`/api/status`).
//!
//! The server is axum on its own small tokio runtime in its own thread, so a slow scrape never
//! takes time from the workers. Metrics are built from a [`Metrics`] snapshot at each scrape
//! into a fresh `prometheus-client` registry: the counters live in the SDK, lock-free on the
//! hot path, and the Prometheus names, `# HELP` and `# TYPE` lines come from the client crate.
//! The page is one static HTML file with its script, embedded in the binary: no CDN, no npm.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::registry::Registry;
use sluice::{Counter, Gauge, Metrics, MetricsSnapshot, PositionKind};

/// The status page: HTML, CSS and script in one file.
const PAGE: &str = include_str!("status.html");
/// Throughput samples kept for the page: one a second, an hour.
const HISTORY: usize = 3600;

/// Why the metrics address could not be served.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The address could not be bound.
    #[error("cannot listen on metrics address `{addr}`")]
    Bind {
        /// The address given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server's thread or runtime could not start.
    #[error("cannot start the metrics server")]
    Start(#[source] std::io::Error),
}

/// One throughput sample.
#[derive(Clone, Copy, serde::Serialize)]
struct Sample {
    t_ms: u64,
    read: u64,
    written: u64,
    dead_lettered: u64,
}

struct AppState {
    metrics: Metrics,
    job: String,
    ready: Arc<AtomicBool>,
    started: Instant,
    history: Mutex<VecDeque<Sample>>,
}

/// A running metrics server; it serves until the process exits.
pub struct StatusServer {
    addr: SocketAddr,
}

impl StatusServer {
    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves `metrics` on `addr`: `/metrics`, `/health`, `/ready` (200 while `ready` is set, else
/// 503), `/api/status` and the page at `/`. Binding happens before this returns, so a taken
/// port is an error at start.
pub fn serve(
    addr: &str,
    job: &str,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> Result<StatusServer, StatusError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| StatusError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let local = listener.local_addr().map_err(StatusError::Start)?;
    listener.set_nonblocking(true).map_err(StatusError::Start)?;
    let state = Arc::new(AppState {
        metrics,
        job: job.to_string(),
        ready,
        started: Instant::now(),
        history: Mutex::new(VecDeque::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StatusError::Start)?;
    std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let sampler = state.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        sample(&sampler);
                    }
                });
                let app = Router::new()
                    .route("/", get(page))
                    .route("/metrics", get(prometheus))
                    .route("/health", get(|| async { "ok\n" }))
                    .route("/ready", get(ready_handler))
                    .route("/api/status", get(status_json))
                    .with_state(state);
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("metrics server stopped: {e}");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("metrics server stopped: {e}");
                }
            });
        })
        .map_err(StatusError::Start)?;
    tracing::info!(addr = %local, "serving metrics at /metrics and the status page at /");
    Ok(StatusServer { addr: local })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sample(state: &AppState) {
    let s = state.metrics.snapshot();
    let mut h = state.history.lock().unwrap_or_else(|e| e.into_inner());
    h.push_back(Sample {
        t_ms: now_ms(),
        read: s.total(Counter::Read),
        written: s.total(Counter::Written),
        dead_lettered: s.total(Counter::DeadLettered),
    });
    while h.len() > HISTORY {
        h.pop_front();
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn ready_handler(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.metrics.snapshot();
    let outcomes = state.metrics.outcomes().snapshot();
    match prometheus_text(&snapshot, &outcomes) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

type Labels = Vec<(String, String)>;

/// What each counter family means, for `# HELP`, and its label's name.
fn counter_help(c: Counter) -> (&'static str, &'static str) {
    match c {
        Counter::Read => ("Records read, by source step", "step"),
        Counter::ReadBytes => ("Bytes read, by source step", "step"),
        Counter::Written => ("Records durably written, by sink step", "step"),
        Counter::Rejected => ("Records a sink refused, by sink step", "step"),
        Counter::StepOk => ("Records a step passed on, by step", "step"),
        Counter::StepFailed => ("Records a step turned into dead letters, by step", "step"),
        Counter::DeadLettered => ("Dead letters written, by error type", "error_type"),
        Counter::ProgressDone => ("Progress of bounded sources (reader units)", "step"),
        Counter::ProgressTotal => ("Size of bounded sources (reader units)", "step"),
        Counter::Dropped => ("Records dropped on purpose by a configured rule", "rule"),
        Counter::Duplicates => ("Duplicates a dedup step found, by step", "step"),
        _ => ("Sluice counter", "step"),
    }
}

/// The Prometheus (OpenMetrics) text of a snapshot: counters get `_total`, each family its
/// `# HELP` and `# TYPE`.
pub fn prometheus_text(
    s: &MetricsSnapshot,
    outcomes: &sluice::OutcomeSnapshot,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("sluice");
    let mut families: BTreeMap<Counter, Family<Labels, PromCounter>> = BTreeMap::new();
    let mut progress: BTreeMap<Counter, Family<Labels, PromGauge>> = BTreeMap::new();
    for ((family, label), value) in &s.counters {
        if matches!(family, Counter::ProgressDone | Counter::ProgressTotal) {
            // a position and a size: gauges (and `_total` is for counters only)
            progress
                .entry(*family)
                .or_default()
                .get_or_create(&vec![("step".to_string(), label.clone())])
                .set(i64::try_from(*value).unwrap_or(i64::MAX));
            continue;
        }
        let (_, key) = counter_help(*family);
        families
            .entry(*family)
            .or_default()
            .get_or_create(&vec![(key.to_string(), label.clone())])
            .inc_by(*value);
    }
    for (family, metric) in families {
        let (help, _) = counter_help(family);
        registry.register(family.name(), help, metric);
    }
    for (family, metric) in progress {
        let (name, help) = if family == Counter::ProgressDone {
            (
                "source_position",
                "How far bounded sources have read (reader units, e.g. bytes)",
            )
        } else {
            (
                "source_size",
                "Size of bounded sources (reader units, e.g. bytes)",
            )
        };
        registry.register(name, help, metric);
    }
    let mut gauges: BTreeMap<Gauge, Family<Labels, PromGauge>> = BTreeMap::new();
    for ((family, label), value) in &s.gauges {
        gauges
            .entry(*family)
            .or_default()
            .get_or_create(&vec![("step".to_string(), label.clone())])
            .set(*value);
    }
    for (family, metric) in gauges {
        let help = match family {
            Gauge::DedupEntries => {
                "Updates in a dedup step's arrangement now (its memory), by step"
            }
            Gauge::OutcomeEntries => {
                "Updates in a count step's arrangement now (its memory), by step"
            }
            _ => "The most updates a dedup step's arrangement held at once, by step",
        };
        registry.register(family.name(), help, metric);
    }
    if !outcomes.totals.is_empty() {
        let family: Family<Labels, PromCounter> = Family::default();
        for (k, v) in &outcomes.totals {
            family
                .get_or_create(&vec![
                    ("namespace".to_string(), k.namespace.clone()),
                    ("doctype".to_string(), k.doctype.clone()),
                    ("version".to_string(), k.version.clone()),
                    ("outcome".to_string(), k.outcome.clone()),
                ])
                .inc_by(*v);
        }
        registry.register(
            "outcomes",
            "Documents by namespace, doctype, version and outcome (decoded or error type)",
            family,
        );
    }
    let mut positions: BTreeMap<PositionKind, Family<Labels, PromGauge>> = BTreeMap::new();
    let acked: Family<Labels, PromCounter> = Family::default();
    for ((step, partition, kind), value) in &s.positions {
        let labels = vec![
            ("step".to_string(), step.clone()),
            ("partition".to_string(), partition.clone()),
        ];
        if *kind == PositionKind::Acked {
            acked
                .get_or_create(&labels)
                .inc_by(u64::try_from(*value).unwrap_or(0));
        } else {
            positions
                .entry(*kind)
                .or_default()
                .get_or_create(&labels)
                .set(*value);
        }
    }
    for (kind, metric) in positions {
        let help = match kind {
            PositionKind::Offset => {
                "The next offset an unbounded source reads, by source step and partition"
            }
            PositionKind::Committed => {
                "The offset an unbounded source's service confirmed committed, by source step and partition"
            }
            PositionKind::Lag => {
                "Records beyond an unbounded source's position (high watermark minus position), by source step and partition"
            }
            _ => "Messages delivered to the pipeline and not yet acknowledged, by source step and subscription",
        };
        registry.register(format!("source_{}", kind.name()), help, metric);
    }
    if s.positions
        .keys()
        .any(|(_, _, k)| *k == PositionKind::Acked)
    {
        registry.register(
            "source_acked",
            "Messages a source acknowledged, by source step and subscription",
            acked,
        );
    }
    let epochs: PromGauge = PromGauge::default();
    epochs.set(s.in_flight_epochs as i64);
    registry.register(
        "in_flight_epochs",
        "Epochs read but not yet durably written",
        epochs,
    );
    let held: PromGauge = PromGauge::default();
    held.set(i64::try_from(s.held_bytes).unwrap_or(i64::MAX));
    registry.register(
        "held_bytes",
        "Bytes the sinks of this process hold, not yet durable",
        held,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Each source step: records and bytes read; for a bounded source (files) how far it read of
/// its size and what is left (its lag); for an unbounded one what its reader says of each
/// partition (Kafka: offset, committed offset and lag; Pub/Sub: outstanding and acked).
fn sources_json(s: &MetricsSnapshot) -> Vec<serde_json::Value> {
    let read = s.family(Counter::Read);
    let done = s.family(Counter::ProgressDone);
    let total = s.family(Counter::ProgressTotal);
    let bytes = s.family(Counter::ReadBytes);
    read.iter()
        .map(|(step, n)| {
            let (d, t) = (
                done.get(step).copied().unwrap_or(0),
                total.get(step).copied().unwrap_or(0),
            );
            let mut partitions: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
                BTreeMap::new();
            let (mut lag, mut outstanding) = (None::<i64>, None::<i64>);
            for ((_, partition, kind), value) in
                s.positions.iter().filter(|((st, _, _), _)| st == step)
            {
                let row = partitions.entry(partition.as_str()).or_default();
                row.insert("partition".into(), partition.as_str().into());
                row.insert(kind.name().into(), (*value).into());
                match kind {
                    PositionKind::Lag => *lag.get_or_insert(0) += value,
                    PositionKind::Outstanding => *outstanding.get_or_insert(0) += value,
                    _ => {}
                }
            }
            let bounded = t > 0;
            let lag = if bounded {
                Some(i64::try_from(t.saturating_sub(d)).unwrap_or(i64::MAX))
            } else {
                lag
            };
            serde_json::json!({
                "step": step,
                "records": n,
                "bytes": bytes.get(step).copied().unwrap_or(0),
                "progress_done": d,
                "progress_total": t,
                "bounded": bounded,
                "lag": lag,
                "outstanding": outstanding,
                "partitions": partitions.into_values().collect::<Vec<_>>(),
            })
        })
        .collect()
}

async fn status_json(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let s = state.metrics.snapshot();
    let outcomes = state.metrics.outcomes().snapshot();
    let history: Vec<Sample> = state
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let sources = sources_json(&s);
    // The last hour per namespace/doctype/outcome (versions summed), and per minute.
    let mut hour: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut minutes = Vec::new();
    for (minute, counts) in &outcomes.minutes {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in counts {
            *hour
                .entry((k.namespace.clone(), k.doctype.clone(), k.outcome.clone()))
                .or_default() += v;
            *m.entry(k.outcome.clone()).or_default() += v;
        }
        minutes.push(serde_json::json!({ "minute": minute, "by_outcome": m }));
    }
    let last_hour: Vec<serde_json::Value> = hour
        .into_iter()
        .map(|((namespace, doctype, outcome), count)| {
            serde_json::json!({
                "namespace": namespace, "doctype": doctype, "outcome": outcome, "count": count
            })
        })
        .collect();
    let totals: Vec<serde_json::Value> = outcomes
        .totals
        .iter()
        .map(|(k, v)| {
            serde_json::json!({
                "namespace": k.namespace, "doctype": k.doctype, "version": k.version,
                "outcome": k.outcome, "count": v
            })
        })
        .collect();
    let gauge = |g: Gauge| -> i64 {
        s.gauges
            .iter()
            .filter(|((f, _), _)| *f == g)
            .map(|(_, v)| v)
            .sum()
    };
    Json(serde_json::json!({
        "job": state.job,
        "ready": state.ready.load(Ordering::SeqCst),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "now_ms": now_ms(),
        "totals": {
            "read": s.total(Counter::Read),
            "written": s.total(Counter::Written),
            "dead_lettered": s.total(Counter::DeadLettered),
            "bytes_read": s.total(Counter::ReadBytes),
            "duplicates": s.total(Counter::Duplicates),
        },
        "history": history,
        "dead_letters": s.family(Counter::DeadLettered),
        "in_flight_epochs": s.in_flight_epochs,
        "held_bytes": s.held_bytes,
        "sources": sources,
        "outcomes_last_hour": last_hour,
        "outcomes_minutes": minutes,
        "outcomes_total": totals,
        "dedup_entries": gauge(Gauge::DedupEntries),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_show_their_positions_and_what_is_left() {
        let m = Metrics::new();
        m.add(Counter::Read, "read", 3);
        m.add(Counter::ProgressDone, "read", 250);
        m.add(Counter::ProgressTotal, "read", 1000);
        m.add(Counter::Read, "stream", 9);
        m.add(Counter::Read, "topic", 4);
        m.add(Counter::Read, "sub", 2);
        let kafka =
            |partition: &str, kind, value| sluice::PartitionPosition::new(partition, kind, value);
        m.set_source_positions(
            "topic",
            0,
            vec![
                kafka("t/0", PositionKind::Offset, 40),
                kafka("t/0", PositionKind::Committed, 30),
                kafka("t/0", PositionKind::Lag, 5),
            ],
        );
        m.set_source_positions("topic", 1, vec![kafka("t/1", PositionKind::Lag, 2)]);
        // a subscription's figures from two workers are added up
        for worker in [0, 1] {
            m.set_source_positions(
                "sub",
                worker,
                vec![
                    kafka("projects/p/subscriptions/s", PositionKind::Outstanding, 3),
                    kafka("projects/p/subscriptions/s", PositionKind::Acked, 10),
                ],
            );
        }
        let rows = sources_json(&m.snapshot());
        let row = |step: &str| rows.iter().find(|r| r["step"] == step).unwrap().clone();
        assert_eq!(row("read")["bounded"], true);
        assert_eq!(row("read")["lag"], 750);
        assert_eq!(row("stream")["bounded"], false);
        assert!(row("stream")["lag"].is_null());
        assert_eq!(row("topic")["lag"], 7, "the partitions' lags added up");
        assert_eq!(
            row("topic")["partitions"][0],
            serde_json::json!({"partition": "t/0", "offset": 40, "committed_offset": 30, "lag": 5})
        );
        assert_eq!(row("sub")["outstanding"], 6);
        assert_eq!(row("sub")["partitions"][0]["acked"], 20);
        let text = prometheus_text(&m.snapshot(), &m.outcomes().snapshot()).unwrap();
        for line in [
            "sluice_source_lag{step=\"topic\",partition=\"t/0\"} 5",
            "sluice_source_offset{step=\"topic\",partition=\"t/0\"} 40",
            "sluice_source_committed_offset{step=\"topic\",partition=\"t/0\"} 30",
            "sluice_source_outstanding{step=\"sub\",partition=\"projects/p/subscriptions/s\"} 6",
            "sluice_source_acked_total{step=\"sub\",partition=\"projects/p/subscriptions/s\"} 20",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn prometheus_names_end_in_total_and_carry_help() {
        let m = Metrics::new();
        m.add(Counter::Read, "read", 3);
        m.add(Counter::DeadLettered, "ParseUri", 2);
        m.add(Counter::ProgressDone, "read", 10);
        m.add(Counter::ProgressTotal, "read", 20);
        m.gauge(Gauge::DedupEntries, "dedup/Duplicate")
            .store(7, Ordering::Relaxed);
        m.outcomes().add(
            1,
            [(
                sluice::OutcomeKey::of(
                    &sluice::Message::new("").with_attribute("uri", "/submit/a/b/1/x"),
                    "decoded",
                ),
                5,
            )],
        );
        let text = prometheus_text(&m.snapshot(), &m.outcomes().snapshot()).unwrap();
        for line in [
            "# HELP sluice_records_read Records read, by source step.",
            "# TYPE sluice_records_read counter",
            "sluice_records_read_total{step=\"read\"} 3",
            "sluice_records_dead_lettered_total{error_type=\"ParseUri\"} 2",
            "# TYPE sluice_dedup_entries gauge",
            "sluice_dedup_entries{step=\"dedup/Duplicate\"} 7",
            "sluice_outcomes_total{namespace=\"a\",doctype=\"b\",version=\"1\",outcome=\"decoded\"} 5",
            "sluice_in_flight_epochs 0",
            "sluice_source_position{step=\"read\"} 10",
            "sluice_source_size{step=\"read\"} 20",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }
}
