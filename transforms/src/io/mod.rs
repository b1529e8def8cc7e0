//! IO connectors.

pub mod memory;
