//! Runnable examples of Sluice for pipeline authors, and the example data and configs ops use.
//!
//! - `cargo run -p sluice-examples --example orders` — a typed pipeline on memory IO: a fallible
//!   parse step whose failures are routed to a dead-letter sink.
//! - `cargo run -p sluice-examples --example decode_file` — the decoder written in code: read the
//!   bundled `examples/data/*.ndjson`, decode against `schemas/json`, count outputs per document
//!   type and dead letters per error type.
//! - `examples/configs/*.toml` — the same jobs for ops, run with `sluice run CONFIG`.
