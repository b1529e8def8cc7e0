//! The named jobs, built from a [`JobConfig`]:
//!
//! - `decoder`: source -> decode (parse uri, decompress, limit size, parse and validate) ->
//!   sink; every dead letter, from reading or decoding, -> the dead-letter sink.
//! - `sink`: source -> optional decompression -> sink (the Hindsight loader).
//!
//! Connectors are picked here from the config; the ones other crates are still building come
//! from [`crate::adapters`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::{
    BoxError, Counter, EpochBounds, InFlightBounds, Message, Metrics, Pipeline, PipelineBuilder,
    Sink, SinkContext, SinkWriter,
};
use sluice_schemas::SchemaRegistry;

use crate::adapters::decode::{LocalDecoder, LocalDecompress};
use crate::adapters::io::{LineSink, LocalFileSource, LocalObjectSink, LocalStdinSource};
use crate::adapters::template::PathTemplate;
use crate::config::{InputFormat, JobConfig, JobKind, PipelineTuning, SinkConfig, SourceConfig};

/// The step name prefix of the per-document-type output counters (`Counter::StepOk`).
pub const OUTPUT_COUNTER_PREFIX: &str = "output/";

/// Why a job cannot start or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The config asks for something this build cannot do (found before any record is read).
    #[error("{0}")]
    Unsupported(String),
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
pub enum AnySink {
    /// stdout / stderr.
    Line(LineSink),
    /// Objects on a local directory.
    Objects(LocalObjectSink),
    /// An in-memory sink (bench, tests).
    Memory(sluice::MemorySink<Message>),
}

impl Sink for AnySink {
    type Input = Message;
    fn kind(&self) -> &str {
        match self {
            AnySink::Line(s) => s.kind(),
            AnySink::Objects(s) => s.kind(),
            AnySink::Memory(s) => s.kind(),
        }
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        match self {
            AnySink::Line(s) => s.open(ctx),
            AnySink::Objects(s) => s.open(ctx),
            AnySink::Memory(s) => s.open(ctx),
        }
    }
}

/// Builds the sink a config section describes (cheap: opened later, per worker).
pub fn sink_for(cfg: &SinkConfig) -> Result<AnySink, JobError> {
    Ok(match cfg {
        SinkConfig::Stdout { format } => AnySink::Line(LineSink::stdout(*format)),
        SinkConfig::Stderr { format } => AnySink::Line(LineSink::stderr(*format)),
        SinkConfig::File {
            dir,
            path,
            format,
            compression,
            batch,
        } => {
            let template = PathTemplate::parse(path)
                .map_err(|e| JobError::Unsupported(format!("bad path template: {e}")))?;
            AnySink::Objects(LocalObjectSink::new(
                dir.clone(),
                template,
                *format,
                *compression,
                *batch,
            ))
        }
        SinkConfig::S3 { .. } => {
            return Err(JobError::Unsupported(
                "the s3 sink is not integrated in this build yet (the object sink crate has not landed); use type = \"file\"".into(),
            ))
        }
    })
}

/// What a job needs before it runs: loaded once, shared by the workers.
pub struct Prepared {
    config: JobConfig,
    registry: Option<Arc<SchemaRegistry>>,
}

impl Prepared {
    /// Loads the schemas and checks that every connector the config names is in this build.
    pub fn new(config: JobConfig) -> Result<Self, JobError> {
        let format = match &config.source {
            SourceConfig::File { format, .. } | SourceConfig::Stdin { format } => *format,
        };
        if format == InputFormat::Heka {
            return Err(JobError::Unsupported(
                "source format \"heka\" is not integrated in this build yet (the file source crate has not landed)".into(),
            ));
        }
        sink_for(&config.sink)?;
        sink_for(&config.dead_letter)?;
        let registry = match (&config.job, &config.decoder) {
            (JobKind::Decoder, Some(d)) => Some(Arc::new(
                SchemaRegistry::load(&d.schemas).map_err(|source| JobError::Schemas {
                    path: d.schemas.display().to_string(),
                    source,
                })?,
            )),
            _ => None,
        };
        Ok(Prepared { config, registry })
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
        let Prepared { config, registry } = self;
        let summary = pipeline.run(move |p| build(p, &config, registry.clone(), &metrics))?;
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

fn build(
    p: &mut PipelineBuilder<'_>,
    config: &JobConfig,
    registry: Option<Arc<SchemaRegistry>>,
    metrics: &Metrics,
) -> sluice::Result<()> {
    let mut dead_letters = p.dead_letters();
    let input = match &config.source {
        SourceConfig::File { path, format } => {
            p.read_with_failures("read", LocalFileSource::new(path, *format))
        }
        SourceConfig::Stdin { format } => {
            p.read_with_failures("read", LocalStdinSource::new(*format))
        }
    }
    .failures_to(&mut dead_letters);
    let output = match (config.job, registry) {
        (JobKind::Decoder, Some(registry)) => {
            let max = config
                .decoder
                .as_ref()
                .map_or(8_000_000, |d| d.max_payload_bytes.0 as usize);
            input
                .apply("decode", LocalDecoder::new(registry, max))
                .failures_to(&mut dead_letters)
        }
        (JobKind::Decoder, None) => {
            return Err(sluice::Error::build(
                "the decoder job has no schema registry",
            ))
        }
        (JobKind::Sink, _) if config.decompress => input
            .apply(
                "decompress",
                LocalDecompress {
                    max_bytes: 100 << 20,
                },
            )
            .failures_to(&mut dead_letters),
        (JobKind::Sink, _) => input,
    };
    let sink = sink_for(&config.sink).map_err(|e| sluice::Error::build(e.to_string()))?;
    let dl_sink = sink_for(&config.dead_letter).map_err(|e| sluice::Error::build(e.to_string()))?;
    count_outputs(output, metrics).write("write", sink);
    dead_letters.write_messages("write_dead_letters", dl_sink);
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
            .apply("decode", LocalDecoder::new(registry.clone(), 8_000_000))
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
