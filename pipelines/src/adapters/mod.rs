//! Connectors and transforms that other crates of the workspace are building: each module here
//! stands in for one of them with the same shape, so wiring the real one is a few lines.

pub mod decode;
pub mod io;
pub mod template;
