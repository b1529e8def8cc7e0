//! IO connectors, one folder each: `<name>/mod.rs` holds the runtime (source, sink) and
//! `<name>/config.rs` the config struct a job's config file deserialises into (documented
//! fields, named `default_*` functions, unknown keys refused). [`units`] is the one grammar of
//! sizes and durations they share.

pub mod bigquery;
pub mod file;
pub mod format;
pub mod kafka;
pub mod memory;
pub mod object;
pub mod pubsub;
pub mod stdio;
pub mod units;
