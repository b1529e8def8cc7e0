//! Schemas for Sluice: the JSON-schema registry the decoder validates payloads against, and the
//! Heka protobuf message that Mozilla's edge servers wrote to Kafka.
//!
//! - [`SchemaRegistry`] loads a directory or a `.tar.gz` laid out
//!   `<namespace>/<doctype>/<doctype>.<version>.schema.json`, compiles every schema once and
//!   looks schemas up by (snake_cased) namespace, doctype and version.
//! - [`Schema::validate`] reports the JSON pointer and reason of a failure;
//!   [`check_depth_and_size`] bounds a document before it is validated.
//! - [`bigquery`] derives BigQuery table schemas from the JSON schemas and fits documents
//!   into rows of them.
//! - [`heka`] holds the Heka message, its stream framing and the conversion to and from
//!   [`sluice::Message`].
//!
//! This crate never imports timely: everything here is plain data and functions.

#![warn(missing_docs)]

pub mod bigquery;
mod error;
pub mod heka;
mod limits;
mod names;
mod registry;
mod split;
mod validation;

pub use error::{Error, Result};
pub use limits::{check_depth_and_size, LimitExceeded, Limits};
pub use names::snake_case;
pub use registry::{Schema, SchemaRegistry};
pub use split::{SplitConfig, SplitSubset, SplitTarget};
pub use validation::{ValidationFailure, ValidationIssue};
