//! IO connectors.

pub mod memory;
pub mod object;
