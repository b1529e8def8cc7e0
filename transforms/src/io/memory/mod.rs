//! In-memory connectors: the SDK's doubles, which honour the epoch contract like real ones.
//!
//! They have no config struct on purpose: a config file cannot hold records, so jobs build
//! them in code (tests, `sluice bench`), never from `[source]` / `[sink]`.

pub use sluice::{MemoryFeeder, MemorySink, MemorySource, UnboundedMemorySource};
