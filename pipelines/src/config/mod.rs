//! The config model: one TOML file per job, overridden by `--set section.key=value` and
//! `SLUICE_SECTION__KEY=value`, checked as a whole before any I/O.
//!
//! ```
//! use sluice_pipelines::config::{self, Overrides, SinkConfig};
//! let text = r#"
//! job = "sink"
//! [source]
//! type = "stdin"
//! [sink]
//! type = "stdout"
//! [dead_letter]
//! type = "stderr"
//! "#;
//! let overrides = Overrides::new().set("sink.format=\"decoded\"");
//! let job = config::parse_str(text, &overrides).unwrap();
//! assert!(matches!(job.sink, SinkConfig::Stdout(s) if s.format == config::OutputFormat::Decoded));
//!
//! let errors = config::parse_str("job = \"decoder\"\nwrkers = 2", &Overrides::new()).unwrap_err();
//! assert!(errors.to_string().contains("`wrkers`: unknown key"));
//! ```

mod model;
mod paths;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::*;
/// The grammar of sizes and durations (a bare number is bytes or seconds).
pub use sluice_transforms::io::units;

/// One problem in a config, at a key path (`sink.batch.max_bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key path; empty for the file as a whole.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a config, in key order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Values that replace keys of the file: `--set` arguments and `SLUICE_*` variables, applied
/// in order (environment first, then `--set`, so the command line wins).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    items: Vec<(String, String, String)>,
    ignored_env: Vec<String>,
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "SLUICE_";

impl Overrides {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `section.key=value` (the value is a TOML scalar or array, else a plain string).
    pub fn set(mut self, assignment: &str) -> Self {
        let (key, value) = assignment.split_once('=').unwrap_or((assignment, ""));
        let origin = if assignment.contains('=') {
            format!("--set {assignment}")
        } else {
            format!("--set {assignment} (missing `=value`)")
        };
        self.items
            .push((key.trim().to_string(), value.trim().to_string(), origin));
        self
    }

    /// Adds the `SLUICE_SECTION__KEY=value` variables among `vars` (double underscore nests).
    ///
    /// Only variables whose first part names a top-level key or section are overrides; other
    /// `SLUICE_*` variables (a test harness's, a deployment's) are left alone and listed by
    /// [`Overrides::ignored_env`], so a misspelt section is reported rather than lost.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut found: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.len() > ENV_PREFIX.len())
            .collect();
        found.sort();
        let top = validate::top_level_keys();
        for (name, value) in found {
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            let first = key.split('.').next().unwrap_or_default();
            if top.contains(&first) {
                self.items.push((key, value, format!("environment {name}")));
            } else {
                self.ignored_env.push(name);
            }
        }
        self
    }

    /// `SLUICE_*` environment variables that are not config overrides (see [`Overrides::env`]).
    pub fn ignored_env(&self) -> &[String] {
        &self.ignored_env
    }

    fn apply(&self, root: &mut toml::Table, errors: &mut Vec<ConfigError>) {
        for (key, raw, origin) in &self.items {
            if origin.ends_with("(missing `=value`)") || key.is_empty() {
                errors.push(ConfigError::new(
                    key.clone(),
                    format!("bad override `{origin}`: expected section.key=value"),
                ));
                continue;
            }
            let value = parse_value(raw);
            let parts: Vec<&str> = key.split('.').collect();
            if let Err(depth) = insert_at(root, &parts, value) {
                errors.push(ConfigError::new(
                    parts[..=depth].join("."),
                    format!("{origin} sets a key inside a value that is not a table"),
                ));
            }
        }
    }
}

/// Inserts `value` at `parts`, creating tables; `Err(i)` when `parts[i]` is not a table.
fn insert_at(table: &mut toml::Table, parts: &[&str], value: toml::Value) -> Result<(), usize> {
    if parts.len() == 1 {
        table.insert(parts[0].to_string(), value);
        return Ok(());
    }
    match table
        .entry(parts[0].to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(t) => insert_at(t, &parts[1..], value).map_err(|i| i + 1),
        _ => Err(0),
    }
}

/// A TOML scalar, array or inline table if `raw` is one, else the string itself.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Reads, overrides, checks and deserialises the config at `path`.
///
/// Relative paths in the file (keys of type `path` in the reference: `source.path`,
/// `decoder.schemas`, `sink.dir`, ...) are relative to the file's folder; values from
/// `overrides` stay relative to the working directory.
pub fn load(path: &Path, overrides: &Overrides) -> Result<JobConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read config file `{}`: {e}", path.display()),
        )])
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse(&text, Some(base), overrides).map_err(|mut errors| {
        for e in &mut errors.0 {
            // a problem of the file as a whole names it; a bad `--set` is not the file's
            if e.key.is_empty() && !e.message.starts_with("bad override") {
                e.message = format!("{}: {}", path.display(), e.message);
            }
        }
        errors
    })
}

/// Parses, overrides, checks and deserialises a config given as text; relative paths are
/// relative to the working directory.
pub fn parse_str(text: &str, overrides: &Overrides) -> Result<JobConfig, ConfigErrors> {
    parse(text, None, overrides)
}

fn parse(
    text: &str,
    base: Option<&Path>,
    overrides: &Overrides,
) -> Result<JobConfig, ConfigErrors> {
    let mut root: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("invalid TOML: {}", e.to_string().trim_end()),
        )])
    })?;
    if let Some(base) = base {
        paths::resolve_relative_paths(&mut root, base);
    }
    let mut errors = Vec::new();
    overrides.apply(&mut root, &mut errors);
    validate::validate(&root, &mut errors);
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.key.cmp(&b.key));
        errors.dedup();
        return Err(ConfigErrors(errors));
    }
    // The walk above accepts exactly what the typed model accepts; serde's own message is a
    // backstop should they ever drift apart.
    toml::Value::Table(root)
        .try_into::<JobConfig>()
        .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string().trim_end())]))
}
