//! The named jobs, built from a [`JobConfig`]:
//!
//! - `decoder`: source -> `Decoder` (parse uri, decompress, limit size, parse and validate, add
//!   metadata) -> sink; every dead letter, from reading or decoding, -> the dead-letter sink.
//! - `sink`: source -> optional decompression -> sink (the Hindsight loader).
//! - `republisher`: decoded messages -> every route they match (a copy each), the rest ->
//!   sink; route refusals -> the dead-letter sink.
//!
//! This is the one place that maps config sections to connectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice::{
    BoxError, CountOutcomes, Counter, DeadLetters, DedupKey, DedupTime, Deduplicate, EpochBounds,
    InFlightBounds, Message, Metrics, OnDuplicate, OutcomeRows, Pipeline, PipelineBuilder, Sink,
    SinkContext, SinkWriter,
};
use sluice_schemas::SchemaRegistry;
use sluice_transforms::decode::{attr, Decoder, DecompressPayload, GeoError, GeoLookup};
use sluice_transforms::io::bigquery::BigQuerySink;
use sluice_transforms::io::file::FileSource;
use sluice_transforms::io::kafka::{KafkaSink, KafkaSource};
use sluice_transforms::io::object::ObjectSink;
use sluice_transforms::io::pubsub::{PubsubSink, PubsubSource};
use sluice_transforms::io::stdio::{StderrSink, StdinSource, StdoutSink};
use sluice_transforms::scrub::ScrubAttributes;

use crate::config::{JobConfig, JobKind, PipelineTuning, SinkConfig, SourceConfig};

mod republisher;

pub use republisher::RouteFilter;

/// The republisher's routes, built: name, filter, sink.
type Routes = Vec<(String, RouteFilter, AnySink)>;

/// Builds the republisher's route sinks (empty for the other jobs).
fn routes_for(config: &JobConfig) -> Result<Routes, JobError> {
    config
        .routes
        .iter()
        .map(|r| {
            let sink = sink_for(&r.sink)
                .map_err(|e| JobError::Setup(format!("route `{}`: {e}", r.name)))?;
            Ok((r.name.clone(), RouteFilter::from(r), sink))
        })
        .collect()
}

/// The step name prefix of the per-document-type output counters (`Counter::StepOk`).
pub const OUTPUT_COUNTER_PREFIX: &str = "output/";

/// Why a job cannot start or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A connector cannot be set up from the config (found before any record is read).
    #[error("{0}")]
    Setup(String),
    /// A connector cannot be set up or reached: `what` says which (a config key or section),
    /// the source says why (printed once by the chain).
    #[error("{what}")]
    Connector {
        /// The connector or key, e.g. `source.path`, `s3 sink`.
        what: String,
        /// Why.
        source: sluice::BoxError,
    },
    /// The schema registry does not load (the cause is the error's source, printed once by
    /// the chain).
    #[error("cannot load schemas `{path}`")]
    Schemas {
        /// The configured path.
        path: String,
        /// Why.
        source: sluice_schemas::Error,
    },
    /// A geo database or the city filter does not load.
    #[error("decoder: {0}")]
    Geo(#[from] GeoError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] sluice::Error),
}

/// A [`JobError::Connector`]: `what` failed because of `source`.
fn connector(
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> JobError {
    JobError::Connector {
        what: what.into(),
        source: Box::new(source),
    }
}

/// A sink of messages chosen at run time.
#[derive(Clone)]
pub enum AnySink {
    /// Standard output.
    Stdout(StdoutSink),
    /// Standard error.
    Stderr(StderrSink),
    /// Whole objects on a local directory or S3.
    Objects(ObjectSink),
    /// Rows of BigQuery tables.
    BigQuery(BigQuerySink),
    /// An in-memory sink (bench, tests).
    Memory(sluice::MemorySink<Message>),
    /// A Kafka topic (a template).
    Kafka(KafkaSink),
    /// A Pub/Sub topic.
    Pubsub(PubsubSink),
}

impl Sink for AnySink {
    type Input = Message;
    fn kind(&self) -> &str {
        match self {
            AnySink::Stdout(s) => s.kind(),
            AnySink::Stderr(s) => s.kind(),
            AnySink::Objects(s) => s.kind(),
            AnySink::BigQuery(s) => s.kind(),
            AnySink::Memory(s) => s.kind(),
            AnySink::Kafka(s) => s.kind(),
            AnySink::Pubsub(s) => s.kind(),
        }
    }
    fn can_reject(&self) -> bool {
        match self {
            AnySink::Stdout(s) => s.can_reject(),
            AnySink::Stderr(s) => s.can_reject(),
            AnySink::Objects(s) => s.can_reject(),
            AnySink::BigQuery(s) => s.can_reject(),
            AnySink::Memory(s) => s.can_reject(),
            AnySink::Kafka(s) => s.can_reject(),
            AnySink::Pubsub(s) => s.can_reject(),
        }
    }
    fn check(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        match self {
            AnySink::Stdout(s) => s.check(ctx),
            AnySink::Stderr(s) => s.check(ctx),
            AnySink::Objects(s) => s.check(ctx),
            AnySink::BigQuery(s) => s.check(ctx),
            AnySink::Memory(s) => s.check(ctx),
            AnySink::Kafka(s) => s.check(ctx),
            AnySink::Pubsub(s) => s.check(ctx),
        }
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        match self {
            AnySink::Stdout(s) => s.open(ctx),
            AnySink::Stderr(s) => s.open(ctx),
            AnySink::Objects(s) => s.open(ctx),
            AnySink::BigQuery(s) => s.open(ctx),
            AnySink::Memory(s) => s.open(ctx),
            AnySink::Kafka(s) => s.open(ctx),
            AnySink::Pubsub(s) => s.open(ctx),
        }
    }
}

/// Builds the sink a config section describes (cheap: connections open later, per worker; a
/// local directory is created here).
pub fn sink_for(cfg: &SinkConfig) -> Result<AnySink, JobError> {
    let setup = |e| connector(format!("{} sink", cfg.kind()), e);
    Ok(match cfg {
        SinkConfig::Stdout(c) => AnySink::Stdout(c.stdout()),
        SinkConfig::Stderr(c) => AnySink::Stderr(c.stderr()),
        SinkConfig::File(c) => AnySink::Objects(c.sink().map_err(setup)?),
        SinkConfig::S3(c) => AnySink::Objects(c.sink().map_err(setup)?),
        SinkConfig::BigQuery(c) => AnySink::BigQuery(
            c.sink()
                .map_err(|e| connector(format!("{} sink", cfg.kind()), e))?,
        ),
        SinkConfig::Kafka(c) => AnySink::Kafka(c.sink()),
        SinkConfig::Pubsub(c) => AnySink::Pubsub(c.sink()),
    })
}

/// A BigQuery sink creates `payload` tables from the decoder's schemas.
fn with_registry(sink: AnySink, registry: &Option<Arc<SchemaRegistry>>) -> AnySink {
    match (sink, registry) {
        (AnySink::BigQuery(s), Some(r)) => AnySink::BigQuery(s.with_registry(r.clone())),
        (sink, _) => sink,
    }
}

/// Checks what [`sink_for`] would build, without creating or writing anything.
fn check_sink(cfg: &SinkConfig) -> Result<(), JobError> {
    match cfg {
        SinkConfig::File(c) => c
            .check()
            .map_err(|e| connector(format!("{} sink", cfg.kind()), e)),
        _ => sink_for(cfg).map(drop),
    }
}

/// The source a config section describes.
fn source_for(cfg: &SourceConfig, tuning: &PipelineTuning) -> Source {
    match cfg {
        SourceConfig::File(c) => Source::File(c.source()),
        SourceConfig::Stdin(c) => Source::Stdin(c.source()),
        SourceConfig::Kafka(c) => {
            // What the consumer prefetches is part of what the pipeline holds for a worker:
            // at most half its in-flight bytes, the other half for the records being processed.
            let bytes = tuning
                .in_flight
                .max_bytes
                .unwrap_or(InFlightBounds::default().max_bytes);
            let mut c = c.clone();
            c.max_buffered_bytes = c.max_buffered_bytes.min((bytes / 2).max(1));
            Source::Kafka(c.source())
        }
        SourceConfig::Pubsub(c) => {
            // Flow control is tied to the in-flight bound: the service never sends a worker
            // more than the pipeline would hold for it.
            let epoch_records = tuning
                .epoch
                .max_records
                .unwrap_or(EpochBounds::default().max_records);
            let epochs = tuning
                .in_flight
                .max_epochs
                .unwrap_or(InFlightBounds::default().max_epochs);
            let bytes = tuning
                .in_flight
                .max_bytes
                .unwrap_or(InFlightBounds::default().max_bytes);
            Source::Pubsub(
                c.source().flow_control(
                    c.max_outstanding_messages
                        .unwrap_or(epoch_records.saturating_mul(epochs)),
                    c.max_outstanding_bytes.unwrap_or(bytes),
                ),
            )
        }
    }
}

/// The input listing digest and file count of a config's file source (`None` for other
/// sources): what `sluice validate` prints and `run --expect-listing` compares.
pub fn listing(config: &JobConfig) -> Option<Result<(String, usize), JobError>> {
    match source_for(&config.source, &config.pipeline) {
        Source::File(s) => InputStatus(Some(s)).listing(),
        Source::Stdin(_) | Source::Kafka(_) | Source::Pubsub(_) | Source::Memory(_) => None,
    }
}

/// Checks, before any record is read and without creating or writing anything, what a
/// config needs that a config file cannot say: input files match, sinks can be built (an
/// output directory may not exist yet), schemas load. What `sluice validate` runs.
pub fn check(config: &JobConfig) -> Result<(), JobError> {
    match problems(config).into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Every problem [`check`] finds (it stops at the first), each with the config key it is
/// about: what `sluice validate` lists with the config's own problems.
pub fn problems(config: &JobConfig) -> Vec<(String, JobError)> {
    let mut found = Vec::new();
    if let Err(e) = resolve(&source_for(&config.source, &config.pipeline)) {
        found.push(("source.path".to_string(), e));
    }
    for (key, sink) in [
        ("sink", &config.sink),
        ("dead_letter", &config.dead_letter.sink),
    ] {
        if let Err(e) = check_sink(sink) {
            found.push((key.to_string(), e));
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Err(e) = check_sink(&r.sink) {
            found.push((format!("routes[{i}].sink"), e));
        }
    }
    let (dedup, counts) = extra_sink_configs(config);
    for (key, sink) in dedup
        .map(|s| ("dedup.sink", s))
        .into_iter()
        .chain(counts.map(|s| ("counts.sink", s)))
    {
        if let Err(e) = check_sink(sink) {
            found.push((key.to_string(), e));
        }
    }
    if let Err(e) = registry_for(config) {
        found.push(("decoder.schemas".to_string(), e));
    }
    if let Err(e) = geo_for(config) {
        found.push(("decoder".to_string(), e));
    }
    found
}

/// Connects to what the job's services are, without reading or writing a record: the S3
/// bucket is listed, input files are listed. What `sluice validate --check` adds to [`check`];
/// `run` does the same (see [`Prepared::check_services`]) before reading.
pub fn check_services(config: &JobConfig) -> Result<(), JobError> {
    let ctx = CheckRuntime::new()?;
    check_source_service(&source_for(&config.source, &config.pipeline), &ctx)?;
    for (section, cfg) in [
        ("sink", &config.sink),
        ("dead_letter", &config.dead_letter.sink),
    ] {
        // A local directory is checked by `check` without being created; remote stores are
        // built (no connection yet) and then listed.
        if let SinkConfig::S3(_)
        | SinkConfig::BigQuery(_)
        | SinkConfig::Kafka(_)
        | SinkConfig::Pubsub(_) = cfg
        {
            check_sink_service(section, &sink_for(cfg)?, &ctx)?;
        }
    }
    for (name, _, sink) in routes_for(config)? {
        check_sink_service(&format!("route `{name}`"), &sink, &ctx)?;
    }
    Ok(())
}

/// A small runtime for the checks, outside the pipeline's.
struct CheckRuntime {
    runtime: tokio::runtime::Runtime,
}

impl CheckRuntime {
    fn new() -> Result<Self, JobError> {
        // Multi-threaded: checks call `Handle::block_on`, which drives no IO or timers on a
        // current-thread runtime.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| connector("cannot start a runtime for checks", e))?;
        Ok(CheckRuntime { runtime })
    }

    fn context(&self) -> sluice::CheckContext {
        sluice::CheckContext::new(self.runtime.handle().clone())
    }
}

fn check_source_service(source: &Source, ctx: &CheckRuntime) -> Result<(), JobError> {
    let result = match source {
        Source::File(s) => sluice::Source::check(s, &ctx.context()),
        Source::Stdin(s) => sluice::Source::check(s, &ctx.context()),
        Source::Kafka(s) => sluice::Source::check(s, &ctx.context()),
        Source::Pubsub(s) => sluice::Source::check(s, &ctx.context()),
        Source::Memory(s) => sluice::Source::check(s, &ctx.context()),
    };
    result.map_err(|e| JobError::Connector {
        what: "source".to_string(),
        source: e,
    })
}

fn check_sink_service(section: &str, sink: &AnySink, ctx: &CheckRuntime) -> Result<(), JobError> {
    sink.check(&ctx.context()).map_err(|e| JobError::Connector {
        what: section.to_string(),
        source: e,
    })
}

fn resolve(source: &Source) -> Result<(), JobError> {
    if let Source::File(files) = source {
        files.resolve().map_err(|e| connector("source.path", e))?;
    }
    Ok(())
}

fn registry_for(config: &JobConfig) -> Result<Option<Arc<SchemaRegistry>>, JobError> {
    Ok(match (&config.job, &config.decoder) {
        (JobKind::Decoder, Some(d)) => {
            let loaded = if d.strict_schemas {
                SchemaRegistry::load_strict(&d.schemas)
            } else {
                SchemaRegistry::load(&d.schemas)
            };
            let registry = loaded.map_err(|source| JobError::Schemas {
                path: d.schemas.display().to_string(),
                source,
            })?;
            if !registry.skipped().is_empty() {
                let files: String = registry
                    .skipped()
                    .iter()
                    .map(|e| format!("\n  {}", e.describe()))
                    .collect();
                tracing::warn!(
                    "skipped {} schema file(s) in `{}` that cannot be indexed (set decoder.strict_schemas = true to make this an error):{files}",
                    registry.skipped().len(),
                    d.schemas.display(),
                );
            }
            Some(Arc::new(registry))
        }
        _ => None,
    })
}

/// The geo and ISP databases of a decoder job, loaded once; a warning names the fields no
/// database fills.
fn geo_for(config: &JobConfig) -> Result<GeoLookup, JobError> {
    let (JobKind::Decoder, Some(d)) = (&config.job, &config.decoder) else {
        return Ok(GeoLookup::none());
    };
    let mut geo = GeoLookup::none();
    if let Some(path) = &d.geo_city_database {
        geo = geo.with_city_database(path)?;
    }
    if let Some(path) = &d.geo_city_filter {
        geo = geo.with_city_filter(path)?;
    }
    if let Some(path) = &d.geo_isp_database {
        geo = geo.with_isp_database(path)?;
    }
    let unfilled = geo.unfilled_fields();
    if !unfilled.is_empty() {
        tracing::warn!(
            "decoder: no {} configured: the decoder does not fill {} (they pass through as received)",
            match (d.geo_city_database.is_none(), d.geo_isp_database.is_none()) {
                (true, true) => "decoder.geo_city_database nor decoder.geo_isp_database",
                (true, false) => "decoder.geo_city_database",
                _ => "decoder.geo_isp_database",
            },
            unfilled.join(", ")
        );
    }
    Ok(geo)
}

#[derive(Clone)]
enum Source {
    File(FileSource),
    Stdin(StdinSource),
    Kafka(KafkaSource),
    Pubsub(PubsubSource),
    /// Messages given in memory (`sluice test`).
    Memory(sluice::MemorySource<Message>),
}

/// What a job needs before it runs: loaded once, shared by the workers.
pub struct Prepared {
    config: JobConfig,
    registry: Option<Arc<SchemaRegistry>>,
    geo: GeoLookup,
    // Built and checked once here; clones share the resolved file list, stdin and sink clients.
    source: Source,
    sink: AnySink,
    dead_letter_sink: AnySink,
    routes: Routes,
    extra: ExtraSinks,
}

/// The sinks of `[dedup]` and `[counts]`, when they have one.
#[derive(Clone, Default)]
struct ExtraSinks {
    duplicates: Option<AnySink>,
    counts: Option<AnySink>,
}

impl ExtraSinks {
    fn for_config(config: &JobConfig) -> Result<Self, JobError> {
        let (dedup, counts) = extra_sink_configs(config);
        Ok(ExtraSinks {
            duplicates: dedup.map(sink_for).transpose()?,
            counts: counts.map(sink_for).transpose()?,
        })
    }
}

/// The `[dedup]` and `[counts]` sinks a config gives (for the sections that are on).
fn extra_sink_configs(config: &JobConfig) -> (Option<&SinkConfig>, Option<&SinkConfig>) {
    let decoder = config.job == JobKind::Decoder;
    let dedup = config
        .dedup
        .as_ref()
        .filter(|d| d.enabled && decoder)
        .and_then(|d| d.sink.as_ref());
    let counts = config
        .counts
        .as_ref()
        .filter(|c| c.enabled && decoder)
        .and_then(|c| c.sink.as_ref());
    (dedup, counts)
}

impl Prepared {
    /// Loads the schemas, lists the input files and builds the sinks (creating local output
    /// directories); [`check`] does the same without touching anything.
    pub fn new(config: JobConfig) -> Result<Self, JobError> {
        let source = source_for(&config.source, &config.pipeline);
        resolve(&source)?;
        let registry = registry_for(&config)?;
        let sink = with_registry(sink_for(&config.sink)?, &registry);
        let dead_letter_sink = sink_for(&config.dead_letter.sink)?;
        let routes = routes_for(&config)?;
        let geo = geo_for(&config)?;
        let extra = ExtraSinks::for_config(&config)?;
        Ok(Prepared {
            config,
            registry,
            geo,
            source,
            sink,
            dead_letter_sink,
            routes,
            extra,
        })
    }

    /// What the job's input will say about how far it was read, once the run ended (take it
    /// before [`Prepared::run`]).
    pub fn input_status(&self) -> InputStatus {
        match &self.source {
            Source::File(s) => InputStatus(Some(s.clone())),
            Source::Stdin(_) | Source::Kafka(_) | Source::Pubsub(_) | Source::Memory(_) => {
                InputStatus(None)
            }
        }
    }

    /// For an unbounded input that buffers (stdin): a flag that, once set, ends the input
    /// after the records it already read, which are then written as at a normal end. What a
    /// signal should set instead of the pipeline's shutdown flag, which drops them. `None` for
    /// a bounded input.
    pub fn drain_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        match &self.source {
            Source::Stdin(s) => Some(s.end_flag()),
            Source::File(_) | Source::Kafka(_) | Source::Pubsub(_) | Source::Memory(_) => None,
        }
    }

    /// Asks every source and sink to verify what it can before any record is read (a
    /// missing bucket, bad credentials): a job fails here, not after decoding has started.
    pub fn check_services(&self) -> Result<(), JobError> {
        let ctx = CheckRuntime::new()?;
        check_source_service(&self.source, &ctx)?;
        check_sink_service("sink", &self.sink, &ctx)?;
        for (name, _, sink) in &self.routes {
            check_sink_service(&format!("route `{name}`"), sink, &ctx)?;
        }
        check_sink_service("dead_letter", &self.dead_letter_sink, &ctx)
    }

    /// The config.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// A pipeline with the config's name, workers and tuning.
    pub fn pipeline(&self) -> Pipeline {
        tuned(
            Pipeline::new(self.config.job.name()).workers(self.config.workers),
            &self.config.pipeline,
        )
    }

    /// Runs the job on `pipeline` (from [`Prepared::pipeline`], maybe adjusted) until its input
    /// ends or its shutdown flag is set.
    pub fn run(self, pipeline: Pipeline) -> Result<sluice::RunSummary, JobError> {
        let metrics = pipeline.metrics();
        let Prepared {
            config,
            registry,
            geo,
            source,
            sink,
            dead_letter_sink,
            routes,
            extra,
        } = self;
        let summary = pipeline.run(move |p| {
            let parts = JobParts {
                config: &config,
                registry: registry.clone(),
                geo: geo.clone(),
                source: source.clone(),
                sink: sink.clone(),
                dead_letter_sink: dead_letter_sink.clone(),
                routes: routes.clone(),
                extra: extra.clone(),
            };
            build(p, parts, &metrics)
        })?;
        Ok(summary)
    }
}

/// How far a job's bounded input was read (see [`Prepared::input_status`]).
#[derive(Clone)]
pub struct InputStatus(Option<FileSource>);

impl InputStatus {
    /// The input files this process opened readers for that were not read to their end (a
    /// stop before the end of input): empty after a complete run, and for unbounded inputs.
    pub fn unfinished(&self) -> Vec<std::path::PathBuf> {
        self.0
            .as_ref()
            .map_or_else(Vec::new, FileSource::unfinished)
    }

    /// The digest of the input file listing and the number of files (see
    /// `FileSource::listing_digest`), for a file input.
    pub fn listing(&self) -> Option<Result<(String, usize), JobError>> {
        let s = self.0.as_ref()?;
        let setup = |e| connector("source.path", e);
        Some(
            s.listing_digest()
                .and_then(|d| s.resolve().map(|f| (d, f.len())))
                .map_err(setup),
        )
    }

    /// Whether a later run resumes where this one stopped (a file source with a state
    /// directory).
    pub fn resumes(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.state_dir().is_some())
    }
}

fn tuned(mut pipeline: Pipeline, t: &PipelineTuning) -> Pipeline {
    // A config read through serde has no zero bounds (they are config errors).
    let mut epoch = EpochBounds::default();
    if let Some(n) = t.epoch.max_records {
        epoch.max_records = n;
    }
    if let Some(b) = t.epoch.max_bytes {
        epoch.max_bytes = b;
    }
    if let Some(d) = t.epoch.max_age {
        epoch.max_age = d;
    }
    let mut in_flight = InFlightBounds::default();
    if let Some(n) = t.in_flight.max_epochs {
        in_flight.max_epochs = n;
    }
    if let Some(b) = t.in_flight.max_bytes {
        in_flight.max_bytes = b;
    }
    if let Some(n) = t.in_flight.max_unacknowledged_epochs {
        in_flight.max_unacknowledged_epochs = n;
    }
    pipeline = pipeline
        .epoch_bounds(epoch)
        .in_flight_bounds(in_flight)
        .stack_traces(t.stack_traces);
    pipeline
}

/// Counts outputs per `document_namespace/document_type` in per-worker counter caches.
fn count_outputs<'s>(
    pcoll: sluice::PCollection<'s, Message>,
    metrics: &Metrics,
) -> sluice::PCollection<'s, Message> {
    let metrics = metrics.clone();
    let mut cache: HashMap<(String, String), Arc<AtomicU64>> = HashMap::new();
    pcoll.inspect(move |m| {
        let ns = m.attribute("document_namespace").unwrap_or("-");
        let dt = m.attribute("document_type").unwrap_or("-");
        // Look up without allocating on the hot path; allocate once per new pair.
        let counter = match cache.iter().find(|((a, b), _)| a == ns && b == dt) {
            Some((_, c)) => c.clone(),
            None => {
                let c = metrics.counter(
                    Counter::StepOk,
                    &format!("{OUTPUT_COUNTER_PREFIX}{ns}/{dt}"),
                );
                cache.insert((ns.to_string(), dt.to_string()), c.clone());
                c
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    })
}

struct JobParts<'a> {
    config: &'a JobConfig,
    registry: Option<Arc<SchemaRegistry>>,
    geo: GeoLookup,
    source: Source,
    sink: AnySink,
    dead_letter_sink: AnySink,
    routes: Routes,
    extra: ExtraSinks,
}

fn build(
    p: &mut PipelineBuilder<'_>,
    parts: JobParts<'_>,
    metrics: &Metrics,
) -> sluice::Result<()> {
    let config = parts.config;
    let mut dead_letters = p.dead_letters();
    // Files are shared out whole (large plain ones in splits) and stdin is read by one worker:
    // when that leaves workers without input, spread the records so that decoding and writing
    // use every worker.
    let readers = match &parts.source {
        Source::File(s) => s.unit_count().unwrap_or(0),
        Source::Stdin(_) => 1,
        // every worker is a member of the consumer group
        Source::Kafka(_) => p.peers(),
        // every worker streams from the subscription
        Source::Pubsub(_) => p.peers(),
        // one batch, shared out by the memory source
        Source::Memory(_) => p.peers(),
    };
    let input = match parts.source {
        Source::File(s) => p
            .read_with_failures("read", s)
            .failures_to(&mut dead_letters),
        Source::Stdin(s) => p
            .read_with_failures("read", s)
            .failures_to(&mut dead_letters),
        Source::Kafka(s) => p
            .read_with_failures("read", s)
            .failures_to(&mut dead_letters),
        Source::Pubsub(s) => p.read("read", s),
        Source::Memory(s) => p.read("read", s),
    };
    let input = if readers < p.peers() {
        input.rebalance()
    } else {
        input
    };
    let output = match (config.job, parts.registry) {
        (JobKind::Decoder, Some(registry)) => {
            let mut decoder = Decoder::new(registry)
                .with_scrub(output_scrub(config))
                .with_geo(parts.geo);
            if let Some(d) = &config.decoder {
                decoder = decoder
                    .with_max_payload_bytes(d.max_payload_bytes)
                    .with_scrub_payload(&d.scrub_payload);
            }
            input
                .apply("decode", decoder)
                .failures_to(&mut dead_letters)
        }
        (JobKind::Decoder, None) => {
            return Err(sluice::Error::build(
                "the decoder job has no schema registry",
            ))
        }
        (JobKind::Sink, _) if config.decompress => input
            .apply("decompress", DecompressPayload::new())
            .failures_to(&mut dead_letters),
        (JobKind::Sink, _) => input,
        (JobKind::Republisher, _) => {
            // one copy per matching route, tagged with its index; the last index is unrouted
            let unrouted = parts.routes.len();
            let filters: Vec<RouteFilter> = parts.routes.iter().map(|r| r.1.clone()).collect();
            let tagged = input.flat_map(move |m: Message| {
                republisher::route_indices(&filters, &m, unrouted)
                    .into_iter()
                    .map(|i| (i, m.clone()))
                    .collect::<Vec<_>>()
            });
            let mut split = tagged.partition(unrouted + 1, |(i, _)| *i);
            let rest = split.pop().map(|c| c.map(|(_, m)| m));
            for ((name, _, sink), part) in parts.routes.into_iter().zip(split) {
                part.map(|(_, m)| m)
                    .write(&format!("route/{name}"), sink)
                    .failures_to(&mut dead_letters);
            }
            match rest {
                Some(rest) => rest,
                None => {
                    return Err(sluice::Error::build(
                        "the republisher has no unrouted output",
                    ))
                }
            }
        }
    };
    let counting =
        config.job == JobKind::Decoder && config.counts.as_ref().is_some_and(|c| c.enabled);
    // Duplicates written to `[dedup.sink]` (scrubbed and counted as dead letters would be).
    let mut duplicates = None;
    let output = match &config.dedup {
        Some(d) if d.enabled && config.job == JobKind::Decoder => {
            let result = output.apply("dedup", deduplicate_for(d));
            match parts.extra.duplicates {
                Some(sink) => {
                    let dups = if counting {
                        result
                            .failures
                            .apply("count_duplicates", CountOutcomes::new())
                    } else {
                        result.failures
                    };
                    duplicates = Some(dups.clone());
                    let scrub = dead_letter_scrub(config);
                    let mut collector = DeadLetters::for_pipeline_of(&dups);
                    collector.push(dups.map(move |d| scrub.scrub_dead_letter(d)));
                    collector.write_messages("write_duplicates", sink);
                    result.output
                }
                None => result.failures_to(&mut dead_letters),
            }
        }
        _ => output,
    };
    // Counted as they are handed to the sinks: a record the sink then refuses is counted
    // once as decoded and once under its refusal's error_type.
    let output = if counting {
        output.apply("count", CountOutcomes::new())
    } else {
        output
    };
    count_outputs(output, metrics)
        .write("write", parts.sink)
        .failures_to(&mut dead_letters);
    let scrub = dead_letter_scrub(config);
    let all = dead_letters.into_pcollection();
    let all = if counting {
        all.apply("count_dead_letters", CountOutcomes::new())
    } else {
        all
    };
    if let (Some(sink), Some(c)) = (parts.extra.counts, &config.counts) {
        // Rows follow the last counting steps: the final rows hold every count.
        let counted = match duplicates {
            Some(d) => all.clone().concat(d),
            None => all.clone(),
        };
        OutcomeRows::every(c.every).write(&counted, "write_counts", sink);
    }
    let scrubbed = if scrub.is_empty() {
        all
    } else {
        all.map(move |d| scrub.scrub_dead_letter(d))
    };
    let mut dead_letters = DeadLetters::for_pipeline_of(&scrubbed);
    dead_letters.push(scrubbed);
    dead_letters.write_messages("write_dead_letters", parts.dead_letter_sink);
    Ok(())
}

/// The `Deduplicate` step of a `[dedup]` section.
fn deduplicate_for(d: &crate::config::DedupConfig) -> Deduplicate {
    use crate::config::{DedupTimeConfig, OnDuplicateConfig};
    let key = match &d.payload_field {
        Some(pointer) => DedupKey::PayloadField(pointer.clone()),
        // The parts of a split submission share its uri and document_id: each part's own
        // doctype and version keep them apart (for a whole submission they add nothing, as the
        // uri names them), while a resend of the submission still meets its first copy.
        None => DedupKey::Attributes(vec![
            d.key.clone(),
            attr::DOCUMENT_TYPE.to_string(),
            attr::DOCUMENT_VERSION.to_string(),
        ]),
    };
    Deduplicate::new()
        .with_key(key)
        .with_window(d.window)
        .with_lateness(d.lateness)
        .with_time(match d.time {
            DedupTimeConfig::SubmissionTimestamp => DedupTime::SubmissionTimestamp,
            DedupTimeConfig::Processing => DedupTime::ProcessingTime,
        })
        .on_duplicate(match d.on_duplicate {
            OnDuplicateConfig::DeadLetter => OnDuplicate::DeadLetter,
            OnDuplicateConfig::Drop => OnDuplicate::Drop,
        })
}

/// What decoded outputs lose before their metadata is nested: the client IPs unless
/// `decoder.keep_client_ip`, and `decoder.scrub_attributes`.
fn output_scrub(config: &JobConfig) -> ScrubAttributes {
    match &config.decoder {
        Some(d) => scrub_for(d.keep_client_ip, &d.scrub_attributes),
        None => ScrubAttributes::client_ip(),
    }
}

/// What dead letters lose before they are written: the client IPs unless
/// `dead_letter.keep_client_ip`, and the decoder's `scrub_attributes` (names a job never
/// writes, whichever the sink).
fn dead_letter_scrub(config: &JobConfig) -> ScrubAttributes {
    let configured = config
        .decoder
        .as_ref()
        .map_or(&[][..], |d| &d.scrub_attributes[..]);
    scrub_for(config.dead_letter.keep_client_ip, configured)
}

fn scrub_for(keep_client_ip: bool, names: &[String]) -> ScrubAttributes {
    let base = if keep_client_ip {
        ScrubAttributes::none()
    } else {
        ScrubAttributes::client_ip()
    };
    base.with_attributes(names.iter().cloned())
}

/// The decoder job memory -> memory (with `Deduplicate` after decoding if `dedup`), for
/// `sluice bench` and tests: returns the summary, the decoded outputs and the dead letters
/// (message form).
pub fn decode_in_memory(
    input: Vec<Message>,
    registry: Arc<SchemaRegistry>,
    workers: usize,
    dedup: bool,
) -> Result<(sluice::RunSummary, usize, usize), JobError> {
    let out = sluice::MemorySink::<Message>::new();
    let dead = sluice::MemorySink::<Message>::new();
    let (o, d) = (out.clone(), dead.clone());
    // Batches are split between workers by the memory source.
    let chunks: Vec<Vec<Message>> = input.chunks(2000).map(<[Message]>::to_vec).collect();
    let source = sluice::MemorySource::from_epochs(chunks);
    let pipeline = Pipeline::new("decoder")
        .workers(workers)
        .stack_traces(false);
    let metrics = pipeline.metrics();
    let summary = pipeline.run(move |p| {
        let mut dl = p.dead_letters();
        let decoded = p
            .read("read", source.clone())
            .apply("decode", Decoder::new(registry.clone()))
            .failures_to(&mut dl);
        let decoded = if dedup {
            decoded
                .apply("dedup", Deduplicate::new())
                .failures_to(&mut dl)
        } else {
            decoded
        };
        count_outputs(decoded, &metrics)
            .write("write", o.clone())
            .failures_to(&mut dl);
        dl.write_messages("write_dead_letters", d.clone());
        Ok(())
    })?;
    Ok((summary, out.len(), dead.len()))
}

/// What [`run_in_memory`] returns: the records written to each sink, in message form.
#[derive(Clone, Debug, Default)]
pub struct MemoryRun {
    /// Written to `[sink]`.
    pub outputs: Vec<Message>,
    /// Written to `[dead_letter]` (dead-letter message form).
    pub dead_letters: Vec<Message>,
    /// Written to each route's sink (the republisher), by route name.
    pub routes: BTreeMap<String, Vec<Message>>,
}

/// Runs the job a config describes with its real steps (schemas, payload rules, dedup,
/// routes, scrubbing) on memory IO: `input` is read as one batch by one worker, without stack
/// traces in dead letters; the config's source and sinks are not used (`sluice test`).
pub fn run_in_memory(config: &JobConfig, input: Vec<Message>) -> Result<MemoryRun, JobError> {
    let registry = registry_for(config)?;
    let geo = geo_for(config)?;
    let out = sluice::MemorySink::<Message>::new();
    let dead = sluice::MemorySink::<Message>::new();
    let route_sinks: Vec<(String, sluice::MemorySink<Message>)> = config
        .routes
        .iter()
        .map(|r| (r.name.clone(), sluice::MemorySink::new()))
        .collect();
    let routes: Routes = config
        .routes
        .iter()
        .zip(&route_sinks)
        .map(|(r, (_, sink))| {
            (
                r.name.clone(),
                RouteFilter::from(r),
                AnySink::Memory(sink.clone()),
            )
        })
        .collect();
    let source = Source::Memory(sluice::MemorySource::from_epochs(vec![input]));
    let pipeline = tuned(
        Pipeline::new(config.job.name()).workers(1),
        &config.pipeline,
    )
    .stack_traces(false);
    let metrics = pipeline.metrics();
    let (o, d) = (out.clone(), dead.clone());
    let config = config.clone();
    pipeline.run(move |p| {
        let parts = JobParts {
            config: &config,
            registry: registry.clone(),
            geo: geo.clone(),
            source: source.clone(),
            sink: AnySink::Memory(o.clone()),
            dead_letter_sink: AnySink::Memory(d.clone()),
            routes: routes.clone(),
            // on memory IO duplicates are dead letters even with a `[dedup.sink]`, and
            // counts are not written: a config test compares outputs and dead letters
            extra: ExtraSinks::default(),
        };
        build(p, parts, &metrics)
    })?;
    Ok(MemoryRun {
        outputs: out.records(),
        dead_letters: dead.records(),
        routes: route_sinks
            .into_iter()
            .map(|(name, sink)| (name, sink.records()))
            .collect(),
    })
}

/// Outputs per `namespace/doctype` from a metrics snapshot.
pub fn outputs_by_doctype(s: &sluice::MetricsSnapshot) -> BTreeMap<String, u64> {
    s.family(Counter::StepOk)
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(OUTPUT_COUNTER_PREFIX)
                .map(|k| (k.to_string(), v))
        })
        .collect()
}
