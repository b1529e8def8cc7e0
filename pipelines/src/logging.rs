//! Where logs, the progress log and the run's summary go, so that they never mix with data a
//! job writes on stdout or stderr.
//!
//! Logs go to stderr, unless `--log-file` names a file. When a data sink (the sink, the
//! dead-letter sink or a route) writes to stderr, they move to stdout if no sink writes there,
//! and are dropped otherwise (`--log-file` keeps them). A fatal error is still printed on
//! stderr when there is nowhere else: a failure is never silent.
//!
//! Until [`route`] is called, lines are held in memory (the config, read first, says which
//! streams carry data); [`route`] writes them where logs go.
//!
//! ```
//! use sluice_pipelines::logging::{choose, Destination};
//! // a dead-letter sink on stderr: logs move to stdout
//! assert_eq!(choose(false, true, false), Destination::Stdout);
//! // both streams carry data: logs are dropped unless --log-file
//! assert_eq!(choose(true, true, false), Destination::Off);
//! assert_eq!(choose(true, true, true), Destination::File);
//! ```

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::config::{JobConfig, SinkConfig};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

/// Where logs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard error (nothing else writes data there).
    Stderr,
    /// Standard output (stderr carries data, stdout does not).
    Stdout,
    /// The `--log-file`.
    File,
    /// Nowhere: both streams carry data and there is no `--log-file`.
    Off,
}

/// Where logs go when stdout and stderr carry data or not, and a `--log-file` is given or not.
pub fn choose(stdout_data: bool, stderr_data: bool, log_file: bool) -> Destination {
    match (log_file, stderr_data, stdout_data) {
        (true, _, _) => Destination::File,
        (false, false, _) => Destination::Stderr,
        (false, true, false) => Destination::Stdout,
        (false, true, true) => Destination::Off,
    }
}

/// Which standard streams a job writes data to: (stdout, stderr).
pub fn data_streams(config: &JobConfig) -> (bool, bool) {
    let sinks = [&config.sink, &config.dead_letter.sink]
        .into_iter()
        .chain(config.routes.iter().map(|r| &r.sink));
    let (mut stdout, mut stderr) = (false, false);
    for s in sinks {
        match s {
            SinkConfig::Stdout(_) => stdout = true,
            SinkConfig::Stderr(_) => stderr = true,
            _ => {}
        }
    }
    (stdout, stderr)
}

enum Target {
    /// Not routed yet: lines wait here.
    Held(Vec<u8>),
    Stderr,
    Stdout,
    File(File),
    Off,
}

struct State {
    target: Target,
    log_file: Option<File>,
    quiet: bool,
    json: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    target: Target::Stderr,
    log_file: None,
    quiet: false,
    json: false,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logging options of the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Only errors are logged, and no summary or progress is printed.
    pub quiet: bool,
    /// Logs go to this file (appended).
    pub log_file: Option<PathBuf>,
    /// Hold lines until [`route`] says where they go (a job that may write data on stdout or
    /// stderr); otherwise they go to stderr (or the log file) at once.
    pub hold: bool,
}

/// Installs the logger. `RUST_LOG` sets the levels (`info` by default, `error` with `quiet`).
pub fn init(options: &Options) -> std::io::Result<()> {
    {
        let mut s = state();
        s.quiet = options.quiet;
        s.json = options.format == LogFormat::Json;
        if let Some(path) = &options.log_file {
            s.log_file = Some(open_log_file(path)?);
        }
        s.target = if options.hold {
            Target::Held(Vec::new())
        } else {
            match s.log_file.as_ref().map(File::try_clone) {
                Some(f) => Target::File(f?),
                None => Target::Stderr,
            }
        };
    }
    let filter = if options.quiet {
        tracing_subscriber::EnvFilter::new("error")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let builder = tracing_subscriber::fmt()
        // A log line that cannot be written is dropped: the default would report it with
        // `eprintln!`, which panics on a closed stderr.
        .log_internal_errors(false)
        .with_writer(|| Writer)
        .with_env_filter(filter);
    let result = match options.format {
        LogFormat::Text => builder
            .with_ansi(
                options.log_file.is_none()
                    && std::io::stderr().is_terminal()
                    && std::io::stdout().is_terminal(),
            )
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(std::io::Error::other)
}

fn open_log_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open log file `{}`: {e}", path.display()),
            )
        })
}

/// Sends logs (and what was held) where [`choose`] says, given the streams the job writes
/// data to; returns the destination.
pub fn route(stdout_data: bool, stderr_data: bool) -> Destination {
    let mut s = state();
    let destination = choose(stdout_data, stderr_data, s.log_file.is_some());
    let target = match destination {
        Destination::Stderr => Target::Stderr,
        Destination::Stdout => Target::Stdout,
        Destination::File => match s.log_file.as_ref().map(File::try_clone) {
            Some(Ok(f)) => Target::File(f),
            _ => Target::Off,
        },
        Destination::Off => Target::Off,
    };
    let held = std::mem::replace(&mut s.target, target);
    if let Target::Held(bytes) = held {
        write_to(&mut s.target, &bytes);
    }
    destination
}

/// Where logs go now ([`Destination::Stderr`] while lines are held).
pub fn destination() -> Destination {
    match state().target {
        Target::Held(_) | Target::Stderr => Destination::Stderr,
        Target::Stdout => Destination::Stdout,
        Target::File(_) => Destination::File,
        Target::Off => Destination::Off,
    }
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    state().quiet
}

/// Writes `text` (a summary, a message) where logs go, unless `--quiet`; with `--log-format
/// json`, as one JSON line. Never fails: a closed stream must not stop the process.
pub fn say(text: std::fmt::Arguments<'_>) {
    let mut s = state();
    if s.quiet {
        return;
    }
    let text = formatted(s.json, "INFO", &text.to_string());
    write_to(&mut s.target, text.as_bytes());
}

/// Writes a fatal error where logs go, or on stderr when logs go nowhere (also with
/// `--quiet`): a failure is never silent.
pub fn error(text: std::fmt::Arguments<'_>) {
    let mut s = state();
    let text = formatted(s.json, "ERROR", &text.to_string());
    match &mut s.target {
        Target::Off => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        target => write_to(target, text.as_bytes()),
    }
}

/// `text` as is, or as one JSON line in the shape of tracing-subscriber's (`level`,
/// `fields.message`, `target`).
fn formatted(json: bool, level: &str, text: &str) -> String {
    if !json {
        return text.to_string();
    }
    let line = serde_json::json!({
        "level": level,
        "fields": { "message": text.trim_matches('\n') },
        "target": "sluice",
    });
    format!("{line}\n")
}

fn write_to(target: &mut Target, bytes: &[u8]) {
    let _ = match target {
        Target::Held(held) => {
            held.extend_from_slice(bytes);
            Ok(())
        }
        Target::Stderr => std::io::stderr().lock().write_all(bytes),
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Target::File(f) => f.write_all(bytes),
        Target::Off => Ok(()),
    };
}

/// The log writer: each write goes where logs go at that moment.
struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_to(&mut state().target, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
