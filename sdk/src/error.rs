//! The SDK's error type.

/// Any error a source, sink or user step may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a pipeline did not build or did not finish.
///
/// Expected failures of single records never show up here: they are [`DeadLetter`](crate::DeadLetter)s.
/// These are the failures that stop a pipeline without acknowledging its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Failure streams were created but never written to a sink.
    #[error("failures of step(s) {} are not routed to a dead-letter sink: pass them to `failures_to` and write the dead letters", .steps.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))]
    UnroutedFailures {
        /// The steps whose failures would be lost.
        steps: Vec<String>,
    },
    /// The pipeline is not well formed (no sink, a bad option, ...).
    #[error("invalid pipeline: {0}")]
    InvalidPipeline(String),
    /// A source could not be opened, read or acknowledged.
    #[error("source `{step}` failed: {source}")]
    Source {
        /// The step name given to `read`.
        step: String,
        /// The source's error.
        source: BoxError,
    },
    /// A sink could not be opened or a write did not become durable.
    #[error("sink `{step}` failed: {source}")]
    Sink {
        /// The step name given to `write`.
        step: String,
        /// The sink's error.
        source: BoxError,
    },
    /// A worker panicked; the message is the panic's.
    #[error("worker {worker} panicked: {message}")]
    WorkerPanic {
        /// Global index of the worker.
        worker: usize,
        /// The panic message.
        message: String,
    },
    /// Another process of the cluster failed; this one stopped without acknowledging.
    #[error("process {process} of the cluster failed: {message}")]
    Peer {
        /// The failed process's index.
        process: usize,
        /// Its error.
        message: String,
    },
    /// Timely could not start (bad cluster configuration, address in use, ...).
    #[error("could not start the dataflow: {0}")]
    Startup(String),
    /// An error from the code that builds the pipeline.
    #[error("{0}")]
    Build(BoxError),
}

impl Error {
    /// An error raised while building a pipeline, with this message.
    pub fn build(message: impl Into<String>) -> Self {
        Error::Build(message.into().into())
    }
}
