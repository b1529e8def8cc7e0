//! Sluice's named jobs, config model and CLI support: the only crate that knows about config
//! files.
//!
//! - [`config`]: the TOML model, overrides and the all-errors-at-once validation.
//! - [`jobs`]: the `decoder` and `sink` jobs, built from a config.
//! - [`generate`]: realistic telemetry-like test submissions, deterministic per seed.
//! - [`preflight`]: `sluice validate`: every problem of a config at once, touching nothing.
//! - [`reference`](mod@reference): the generated config reference and example configs.
//! - [`logging`]: where logs and the summary go, so they never mix with data on stdout or
//!   stderr.
//! - [`check`]: the health checks made before a run reads (and by `sluice check`).
//! - [`config_test`]: `sluice test`, a config's unit tests on memory IO.
//! - [`dead_letters`]: reading, summarising and showing dead-letter files.
//! - [`state`]: where a file job keeps its positions between runs, and what a run resumes.
//! - [`status`]: the metrics address: Prometheus metrics, health, readiness and the status page.

#![warn(missing_docs)]

pub mod check;
pub mod config;
pub mod config_test;
pub mod dead_letters;
pub mod generate;
pub mod jobs;
pub mod logging;
pub mod preflight;
pub mod reference;
pub mod state;
pub mod status;
