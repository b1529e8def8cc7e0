//! IO connectors.

pub mod format;
pub mod memory;
