//! In-memory connectors: the SDK's doubles, which honour the epoch contract like real ones.

pub use sluice::{MemoryFeeder, MemorySink, MemorySource, UnboundedMemorySource};
