//! Sluice SDK: typed pipelines in the style of Apache Beam, executed on timely dataflow, made
//! for moving data safely.
//!
//! - [`Pipeline`] runs a graph built per worker by a closure on a [`PipelineBuilder`].
//! - [`PCollection`] is a typed collection: `map`, `filter`, `flat_map`, `concat`, `partition`,
//!   `apply` a [`PTransform`], and the fallible `try_map`, which returns [`WithFailures`].
//! - Failures are data: [`DeadLetter`]s keep the original record and say why; every failure
//!   stream must reach a sink through [`DeadLetters`] or the pipeline does not build.
//! - [`Source`] and [`Sink`] connectors meet an epoch contract that gives at-least-once
//!   delivery and bounded memory (see [`io`]); [`EpochLedger`] tells an acknowledging source
//!   what it may acknowledge, and [`SourcePosition`] where each record was read.
//!
//! Only this crate imports timely: its scopes, timestamps and containers do not leak.
//!
//! ```
//! use sluice::{MemorySink, MemorySource, Pipeline};
//! let out = MemorySink::new();
//! let dead = MemorySink::new();
//! let (o, d) = (out.clone(), dead.clone());
//! Pipeline::new("parse")
//!     .stack_traces(false)
//!     .run(move |p| {
//!         let mut dead_letters = p.dead_letters();
//!         p.read("read", MemorySource::from(vec!["1".to_string(), "x".to_string()]))
//!             .try_map("ParseNumber", |s: &String| s.parse::<u64>())
//!             .failures_to(&mut dead_letters)
//!             .write("write", o.clone());
//!         dead_letters.write("dead_letters", d.clone());
//!         Ok(())
//!     })
//!     .unwrap();
//! assert_eq!(out.records(), vec![1]);
//! assert_eq!(dead.records()[0].error_message, "invalid digit found in string");
//! ```

mod counts;
mod dead_letter;
mod dedup;
mod error;
pub mod harness;
pub mod io;
mod ledger;
mod memory;
mod message;
mod metrics;
mod operators;
mod pcollection;
mod pipeline;

pub use counts::{CountOutcomes, OutcomeCounts, OutcomeKey, OutcomeRows, OutcomeSnapshot};
pub use dead_letter::{reduce_message, truncate_utf8, DeadLetter, Failure, MAX_ATTRIBUTE_BYTES};
pub use dedup::{Clock, DedupKey, DedupTime, Deduplicate, OnDuplicate, DUPLICATE_ERROR_TYPE};
pub use error::{chain, BoxError, Error, Result};
pub use io::{
    CheckContext, DurableFuture, Epoch, PartitionPosition, PositionKind, ReadState, ReadStatus,
    Rejection, Sink, SinkContext, SinkWriter, Source, SourceContext, SourceReader, SourceWaker,
    StreamingWriter, WriteFuture,
};
pub use ledger::EpochLedger;
pub use memory::{MemoryFeeder, MemorySink, MemorySource, UnboundedMemorySource};
pub use message::{EnvelopeError, Message, PubSubPosition, SourcePosition};
pub use metrics::{Counter, Gauge, Metrics, MetricsSnapshot, RunSummary};
pub use pcollection::{
    DeadLetters, Element, Original, PCollection, PTransform, WithFailures, WriteResult,
};
pub use pipeline::{EpochBounds, InFlightBounds, Pipeline, PipelineBuilder};

/// Re-exported so connectors can name the bytes type of [`Message::payload`].
pub use bytes::Bytes;
