//! `sluice validate`: every problem of a job's config in one list, one format, touching
//! nothing (no directory created, no connection opened, no record read).
//!
//! The config's own problems (keys, types, rules across keys, paths that must exist, input
//! patterns that must match) come from [`config::load`]; when there is none, what only the
//! built job can say (schemas load, geo databases open, sinks can be built) comes from
//! [`jobs::problems`]. Both are [`ConfigError`]s: a key path and a message.

use std::path::Path;

use crate::config::{self, ConfigError, ConfigErrors, JobConfig, Overrides};
use crate::jobs;

/// The config at `path`, or every problem found in it.
pub fn validate(path: &Path, overrides: &Overrides) -> Result<JobConfig, ConfigErrors> {
    let config = config::load(path, overrides)?;
    let mut errors: Vec<ConfigError> = jobs::problems(&config)
        .into_iter()
        .map(|(key, e)| {
            let chain = sluice::chain(&e);
            // `what` often is the key itself: say it once
            let message = chain
                .strip_prefix(&format!("{key}: "))
                .map(str::to_string)
                .unwrap_or(chain);
            ConfigError::new(key, message)
        })
        .collect();
    if errors.is_empty() {
        return Ok(config);
    }
    errors.sort_by(|a, b| a.key.cmp(&b.key));
    Err(ConfigErrors(errors))
}
