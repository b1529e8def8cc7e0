//! Sluice's test harness: run whole pipelines on in-memory sources and sinks and assert on
//! their outputs *and* their dead letters.
//!
//! ```
//! use sluice_testing::{assert_that, MemorySink, MemorySource, TestPipeline};
//! let out = MemorySink::new();
//! let dead = MemorySink::new();
//! let (o, d) = (out.clone(), dead.clone());
//! TestPipeline::new()
//!     .run(move |p| {
//!         let mut dead_letters = p.dead_letters();
//!         p.read("read", MemorySource::from(vec!["7".to_string(), "seven".to_string()]))
//!             .try_map("ParseNumber", |s: &String| s.parse::<u32>())
//!             .failures_to(&mut dead_letters)
//!             .write("write", o.clone());
//!         dead_letters.write("dead_letters", d.clone());
//!         Ok(())
//!     })
//!     .unwrap();
//! assert_that(&out).contains_in_any_order([7]);
//! assert_that(&dead).has_len(1);
//! ```

mod assertions;
pub mod cluster;
pub mod conformance;
mod sinks;
pub mod strategies;

pub use assertions::{assert_that, SinkAssert};
pub use sinks::{FailingSink, InjectedFailure, PanickingSink, SlowSink, SlowSinkStats};
pub use sluice::{MemoryFeeder, MemorySink, MemorySource, UnboundedMemorySource};

use std::time::Duration;

use sluice::{EpochBounds, InFlightBounds, Pipeline, PipelineBuilder, RunSummary};

/// A [`Pipeline`] set up for tests: one worker, no stack traces in dead letters (so they compare
/// exactly), small epochs (so several epochs happen on small inputs).
#[derive(Clone)]
pub struct TestPipeline {
    pipeline: Pipeline,
}

impl Default for TestPipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPipeline {
    /// A test pipeline named `test`.
    pub fn new() -> Self {
        TestPipeline {
            pipeline: Pipeline::new("test")
                .stack_traces(false)
                .epoch_bounds(EpochBounds {
                    max_records: 100,
                    max_bytes: 1 << 20,
                    max_age: Duration::from_millis(20),
                }),
        }
    }

    /// Worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.pipeline = self.pipeline.workers(n);
        self
    }

    /// Serialize exchanged records as a cluster would (catches types that cannot cross processes).
    pub fn serialize_exchanges(mut self) -> Self {
        self.pipeline = self.pipeline.serialize_exchanges();
        self
    }

    /// Epoch bounds.
    pub fn epoch_bounds(mut self, bounds: EpochBounds) -> Self {
        self.pipeline = self.pipeline.epoch_bounds(bounds);
        self
    }

    /// Backpressure bounds.
    pub fn in_flight_bounds(mut self, bounds: InFlightBounds) -> Self {
        self.pipeline = self.pipeline.in_flight_bounds(bounds);
        self
    }

    /// Any other option of the underlying pipeline.
    pub fn with_pipeline(mut self, f: impl FnOnce(Pipeline) -> Pipeline) -> Self {
        self.pipeline = f(self.pipeline);
        self
    }

    /// The underlying pipeline (for its shutdown flag or metrics).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Builds and runs the pipeline (see [`Pipeline::run`]).
    pub fn run<F>(self, build: F) -> sluice::Result<RunSummary>
    where
        F: for<'s> Fn(&mut PipelineBuilder<'s>) -> sluice::Result<()> + Send + Sync + 'static,
    {
        self.pipeline.run(build)
    }
}
