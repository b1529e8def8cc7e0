//! Sluice's named jobs, config model and CLI support: the only crate that knows about config
//! files.
//!
//! - [`config`]: the TOML model, overrides and the all-errors-at-once validation.
//! - [`jobs`]: the `decoder` and `sink` jobs, built from a config.
//! - [`generate`]: realistic telemetry-like test submissions, deterministic per seed.
//! - [`preflight`]: `sluice validate`: every problem of a config at once, touching nothing.
//! - [`reference`]: the generated config reference and example configs.
//! - [`logging`]: where logs and the summary go, so they never mix with data on stdout or
//!   stderr.
//! - [`status`]: the metrics address: Prometheus metrics, health, readiness and the status page.

#![warn(missing_docs)]

pub mod config;
pub mod generate;
pub mod jobs;
pub mod logging;
pub mod preflight;
pub mod reference;
pub mod status;
