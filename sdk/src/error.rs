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
    /// A source could not be opened, read or acknowledged (the cause is the error's source:
    /// print the chain, e.g. with [`chain`]).
    #[error("source `{step}` failed")]
    Source {
        /// The step name given to `read`.
        step: String,
        /// The source's error.
        source: BoxError,
    },
    /// A sink could not be opened or a write did not become durable (the cause is the
    /// error's source: print the chain, e.g. with [`chain`]).
    #[error("sink `{step}` failed")]
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

/// An error and its causes on one line, each said once: `what failed: why: why deeper`.
///
/// Errors of this workspace say what failed in their message and carry the cause as their
/// [`source`](std::error::Error::source), never both, so that a chain printer (this function,
/// anyhow's `{:#}`) prints each cause once.
///
/// ```
/// let io = std::io::Error::other("connection refused");
/// let e = sluice::Error::Sink { step: "store".into(), source: Box::new(io) };
/// assert_eq!(e.to_string(), "sink `store` failed");
/// assert_eq!(sluice::chain(&e), "sink `store` failed: connection refused");
/// ```
///
/// Errors of other crates do not all keep to that (some print their source in their message
/// too), so a cause whose message the level above already ends with is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut above = out.clone();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !above.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        above = text;
        cause = c.source();
    }
    out
}

impl Error {
    /// An error raised while building a pipeline, with this message.
    pub fn build(message: impl Into<String>) -> Self {
        Error::Build(message.into().into())
    }
}
