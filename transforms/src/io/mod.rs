//! IO connectors.

pub mod file;
pub mod format;
pub mod memory;
pub mod object;
pub mod stdio;
