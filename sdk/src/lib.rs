//! Sluice SDK: typed pipelines in the style of Apache Beam, executed on timely dataflow.

mod message;

pub use message::{EnvelopeError, Message, SourcePosition};
