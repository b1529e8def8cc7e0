//! The named jobs, built from a [`JobConfig`]:
//!
//! - `decoder`: source -> `Decoder` (parse uri, decompress, limit size, parse and validate, add
//!   metadata) -> sink; every dead letter, from reading or decoding, -> the dead-letter sink.
//! - `sink`: source -> optional decompression -> sink (the Hindsight loader).
//!
//! This is the one place that maps config sections to connectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::{
    BoxError, Counter, EpochBounds, InFlightBounds, Message, Metrics, Pipeline, PipelineBuilder,
    Sink, SinkContext, SinkWriter,
};
use sluice_schemas::SchemaRegistry;
use sluice_transforms::decode::{Decoder, DecompressPayload};
use sluice_transforms::io::file::FileSource;
use sluice_transforms::io::object::{BatchBounds, ObjectSink, PathTemplate, S3Options};
use sluice_transforms::io::stdio::{StderrSink, StdinSource, StdoutSink};

use crate::config::{BatchConfig, JobConfig, JobKind, PipelineTuning, SinkConfig, SourceConfig};

/// The step name prefix of the per-document-type output counters (`Counter::StepOk`).
pub const OUTPUT_COUNTER_PREFIX: &str = "output/";

/// Why a job cannot start or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A connector cannot be set up from the config (found before any record is read).
    #[error("{0}")]
    Setup(String),
    /// The schema registry does not load.
    #[error("cannot load schemas `{path}`: {source}")]
    Schemas {
        /// The configured path.
        path: String,
        /// Why.
        source: sluice_schemas::Error,
    },
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] sluice::Error),
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
    /// An in-memory sink (bench, tests).
    Memory(sluice::MemorySink<Message>),
}

impl Sink for AnySink {
    type Input = Message;
    fn kind(&self) -> &str {
        match self {
            AnySink::Stdout(s) => s.kind(),
            AnySink::Stderr(s) => s.kind(),
            AnySink::Objects(s) => s.kind(),
            AnySink::Memory(s) => s.kind(),
        }
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        match self {
            AnySink::Stdout(s) => s.open(ctx),
            AnySink::Stderr(s) => s.open(ctx),
            AnySink::Objects(s) => s.open(ctx),
            AnySink::Memory(s) => s.open(ctx),
        }
    }
}

fn batch_bounds(b: &BatchConfig) -> BatchBounds {
    BatchBounds {
        max_bytes: b.max_bytes.0 as usize,
        max_records: b.max_records as usize,
        max_age: b.max_age.0,
    }
}

/// Builds the sink a config section describes (cheap: connections open later, per worker).
pub fn sink_for(cfg: &SinkConfig) -> Result<AnySink, JobError> {
    let setup = |e: &dyn std::fmt::Display| JobError::Setup(format!("{} sink: {e}", cfg.kind()));
    Ok(match cfg {
        SinkConfig::Stdout { format } => AnySink::Stdout(StdoutSink::new(*format)),
        SinkConfig::Stderr { format } => AnySink::Stderr(StderrSink::new(*format)),
        SinkConfig::File {
            dir,
            path,
            format,
            compression,
            batch,
        } => {
            let template = PathTemplate::parse(path).map_err(|e| setup(&e))?;
            let sink = ObjectSink::local(dir, template).map_err(|e| setup(&e))?;
            AnySink::Objects(
                sink.with_format(*format)
                    .with_compression(*compression)
                    .with_batch(batch_bounds(batch)),
            )
        }
        SinkConfig::S3 {
            bucket,
            path,
            endpoint,
            region,
            credentials: _,
            allow_http,
            format,
            compression,
            batch,
        } => {
            let template = PathTemplate::parse(path).map_err(|e| setup(&e))?;
            let mut options = S3Options::new(bucket.clone());
            options.endpoint = endpoint.clone();
            options.region = region.clone();
            options.allow_http = *allow_http;
            let sink = ObjectSink::s3(&options, template).map_err(|e| setup(&e))?;
            AnySink::Objects(
                sink.with_format(*format)
                    .with_compression(*compression)
                    .with_batch(batch_bounds(batch)),
            )
        }
    })
}

/// The source a config section describes.
fn file_or_stdin(cfg: &SourceConfig) -> Source {
    match cfg {
        SourceConfig::File {
            path,
            format,
            state_dir,
        } => {
            let source = FileSource::glob(path.clone(), *format);
            Source::File(match state_dir {
                Some(dir) => source.with_state_dir(dir),
                None => source,
            })
        }
        SourceConfig::Stdin { format } => Source::Stdin(StdinSource::new(*format)),
    }
}

#[derive(Clone)]
enum Source {
    File(FileSource),
    Stdin(StdinSource),
}

/// What a job needs before it runs: loaded once, shared by the workers.
pub struct Prepared {
    config: JobConfig,
    registry: Option<Arc<SchemaRegistry>>,
    // Built and checked once here; clones share the resolved file list, stdin and sink clients.
    source: Source,
    sink: AnySink,
    dead_letter_sink: AnySink,
}

impl Prepared {
    /// Loads the schemas and checks that every connector the config names is in this build.
    pub fn new(config: JobConfig) -> Result<Self, JobError> {
        let source = file_or_stdin(&config.source);
        if let Source::File(files) = &source {
            files
                .resolve()
                .map_err(|e| JobError::Setup(format!("source.path: {e}")))?;
        }
        let sink = sink_for(&config.sink)?;
        let dead_letter_sink = sink_for(&config.dead_letter)?;
        let registry = match (&config.job, &config.decoder) {
            (JobKind::Decoder, Some(d)) => Some(Arc::new(
                SchemaRegistry::load(&d.schemas).map_err(|source| JobError::Schemas {
                    path: d.schemas.display().to_string(),
                    source,
                })?,
            )),
            _ => None,
        };
        Ok(Prepared {
            config,
            registry,
            source,
            sink,
            dead_letter_sink,
        })
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
            source,
            sink,
            dead_letter_sink,
        } = self;
        let summary = pipeline.run(move |p| {
            let parts = JobParts {
                config: &config,
                registry: registry.clone(),
                source: source.clone(),
                sink: sink.clone(),
                dead_letter_sink: dead_letter_sink.clone(),
            };
            build(p, parts, &metrics)
        })?;
        Ok(summary)
    }
}

fn tuned(mut pipeline: Pipeline, t: &PipelineTuning) -> Pipeline {
    let mut epoch = EpochBounds::default();
    if let Some(n) = t.epoch.max_records {
        epoch.max_records = n as usize;
    }
    if let Some(b) = t.epoch.max_bytes {
        epoch.max_bytes = b.0 as usize;
    }
    if let Some(d) = t.epoch.max_age {
        epoch.max_age = d.0.max(Duration::from_millis(1));
    }
    let mut in_flight = InFlightBounds::default();
    if let Some(n) = t.in_flight.max_epochs {
        in_flight.max_epochs = n as usize;
    }
    if let Some(b) = t.in_flight.max_bytes {
        in_flight.max_bytes = b.0 as usize;
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
    source: Source,
    sink: AnySink,
    dead_letter_sink: AnySink,
}

fn build(
    p: &mut PipelineBuilder<'_>,
    parts: JobParts<'_>,
    metrics: &Metrics,
) -> sluice::Result<()> {
    let config = parts.config;
    let mut dead_letters = p.dead_letters();
    // Files are shared out whole and stdin is read by one worker: when that leaves workers
    // without input, spread the records so that decoding and writing use every worker.
    let readers = match &parts.source {
        Source::File(s) => s.resolve().map_or(0, |files| files.len()),
        Source::Stdin(_) => 1,
    };
    let input = match parts.source {
        Source::File(s) => p.read_with_failures("read", s),
        Source::Stdin(s) => p.read_with_failures("read", s),
    }
    .failures_to(&mut dead_letters);
    let input = if readers < p.peers() {
        input.rebalance()
    } else {
        input
    };
    let output = match (config.job, parts.registry) {
        (JobKind::Decoder, Some(registry)) => {
            let mut decoder = Decoder::new(registry);
            if let Some(d) = &config.decoder {
                decoder = decoder.with_max_payload_bytes(d.max_payload_bytes.0 as usize);
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
    };
    count_outputs(output, metrics).write("write", parts.sink);
    dead_letters.write_messages("write_dead_letters", parts.dead_letter_sink);
    Ok(())
}

/// The decoder job memory -> memory, for `sluice bench` and tests: returns the summary, the
/// decoded outputs and the dead letters (message form).
pub fn decode_in_memory(
    input: Vec<Message>,
    registry: Arc<SchemaRegistry>,
    workers: usize,
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
        count_outputs(decoded, &metrics).write("write", o.clone());
        dl.write_messages("write_dead_letters", d.clone());
        Ok(())
    })?;
    Ok((summary, out.len(), dead.len()))
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
