//! The `sluice` command: run, validate, generate and bench the named jobs.

// The decoder allocates a JSON tree per message; mimalloc measured faster than the system
// allocator on it (DESIGN §7; figures in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sluice::{Counter, Metrics};
use sluice_pipelines::config::{self, ConfigErrors, Overrides};
use sluice_pipelines::generate::{Generator, Workload};
use sluice_pipelines::jobs::{self, JobError, Prepared};
use sluice_pipelines::logging::{self, LogFormat};
use sluice_pipelines::reference;
use sluice_pipelines::{check, config_test, dead_letters, state};

const AFTER_HELP: &str = "\
Examples:
  sluice run examples/configs/decoder-local.toml
  sluice run job.toml --set sink.dir=/tmp/out --set workers=4
  SLUICE_SINK__BUCKET=telemetry sluice run examples/configs/decoder-s3.toml
  sluice validate job.toml
  sluice validate --print job.toml --set pipeline.epoch.max_age=1
  sluice check examples/configs/decoder-s3.toml
  sluice state show examples/configs/decoder-local.toml
  sluice run examples/configs/decoder-local.toml --from-start
  sluice test examples/configs/decoder-dedup.toml examples/tests/decoder-dedup.test.toml
  sluice dead-letters summary out/errors
  sluice dead-letters replay out/errors --error-type ParsePayload --config job.toml
  sluice generate --count 2000 --seed 1 --error-rate 0.1 --output data.ndjson
  sluice bench --count 100000 --workers 2

Overrides: `--set section.key=value` (value read as TOML, else as a string) and
environment variables SLUICE_SECTION__KEY=value (double underscore nests); --set wins.

Exit codes:
  0    success; also a job on stdin stopped by SIGINT/SIGTERM (it drains and ends cleanly)
  1    runtime failure (a service failing, the metrics address taken, ...)
  2    config error (also bad command-line arguments)
  3    a job on files stopped by a signal before the end of its input (what was read is
       written and acknowledged; the summary names the files not read to the end)
  130  aborted by a second signal

Logs and the summary go to stderr; when a sink or the dead-letter sink writes to stderr they
go to stdout, and when both streams carry data they are dropped unless --log-file is given
(a fatal error is still printed on stderr). RUST_LOG sets levels (e.g. RUST_LOG=sluice=debug).";

const RUN_HELP: &str = "\
Examples:
  sluice run examples/configs/decoder-local.toml
  sluice run job.toml --set sink.dir=/tmp/out --workers 4 --metrics-addr 127.0.0.1:9898
  sluice run sink.toml --quiet < input.ndjson > output.ndjson
  sluice run job.toml --log-format json --log-file sluice.log

Relative paths in the config file are relative to its folder; --set values to the working
directory. Exit codes: see `sluice --help`.";

const VALIDATE_HELP: &str = "\
Examples:
  sluice validate examples/configs/decoder-local.toml
  sluice validate job.toml --set sink.dir=/tmp/out
  sluice validate --print job.toml --set pipeline.epoch.max_age=1
  sluice validate --check examples/configs/decoder-s3.toml

Lists every problem (unknown or bad keys, missing sections, input patterns that match no file,
schemas that do not load, ...) as `key`: message, then exits 2. Creates nothing, opens no
connection (unless --check), reads no record.";

const GENERATE_HELP: &str = "\
Examples:
  sluice generate --count 2000 --seed 1 --error-rate 0.1 --output data.ndjson
  sluice generate --count 100 --format heka --workload telemetry > data.heka";

const SCHEMAS_HELP: &str = "\
Examples:
  sluice schemas bigquery telemetry/main.4
  sluice schemas bigquery --format raw";

const BENCH_HELP: &str = "\
Examples:
  sluice bench --count 100000 --workers 2
  sluice bench --count 50000 --duplicates 0.05 --dedup";

const CONFIG_HELP: &str = "\
Examples:
  sluice config reference > docs/config.md
  sluice config example decoder > job.toml
  sluice config example sink --source stdin --sink stdout
  sluice config example republisher --source pubsub --sink pubsub";

/// The version and the commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SLUICE_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(name = "sluice", version = VERSION, about = "Decode, validate and move telemetry safely", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log only errors, and print no summary nor progress: only the job's data is written.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// How log lines are written.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Write logs and the summary to this file (appended) instead of stderr.
    #[arg(long, value_name = "PATH", global = true)]
    log_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job a config file describes.
    #[command(after_help = RUN_HELP)]
    Run {
        /// The job's TOML config.
        config: PathBuf,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Worker threads (overrides `workers`).
        #[arg(long)]
        workers: Option<usize>,
        /// Processes in the cluster (with --process and --hostfile).
        #[arg(long, requires_all = ["process", "hostfile"])]
        processes: Option<usize>,
        /// This process's index in the cluster.
        #[arg(long, requires = "processes")]
        process: Option<usize>,
        /// The cluster's host file: one host:port per process.
        #[arg(long, requires = "processes")]
        hostfile: Option<PathBuf>,
        /// Serve Prometheus metrics (`/metrics`), `/health`, `/ready` and the live status page
        /// (`/`) on this address (e.g. 127.0.0.1:9898).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
        /// Never draw a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Refuse to run unless the input files listed here have this digest (what `sluice
        /// validate` prints): give every process of a cluster the same digest, so that a host
        /// that sees other files fails at start instead of leaving files unread.
        #[arg(long, value_name = "DIGEST")]
        expect_listing: Option<String>,
        /// Skip the health checks made before reading (bucket, broker, topic, subscription,
        /// table reachable and present): the first write then finds a problem instead.
        #[arg(long)]
        no_healthcheck: bool,
        /// A file job: forget what earlier runs acknowledged (`sluice state reset`) and read
        /// every input from its start.
        #[arg(long)]
        from_start: bool,
    },
    /// Run the health checks alone: each source and sink reaches its service (bucket exists
    /// and is writable, broker reachable, fixed topic, subscription or table exists); one
    /// line per section; exit 2 if any fails.
    Check {
        /// The job's TOML config.
        config: PathBuf,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// A file job's saved positions: where a run resumes.
    State {
        #[command(subcommand)]
        what: StateCommand,
    },
    /// Run a config's unit tests: input messages through the job's real steps on memory IO,
    /// compared with the exact outputs and dead letters a test file expects (see
    /// examples/tests/); exit 1 if any test fails.
    Test {
        /// The job's TOML config.
        config: PathBuf,
        /// The test file (TOML).
        tests: PathBuf,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Inspect and replay dead letters written by a job (ndjson envelopes, gzipped or not,
    /// in files or directories).
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        what: DeadLettersCommand,
    },
    /// Check a config file, reporting every problem; exit 2 if there is any.
    #[command(after_help = VALIDATE_HELP)]
    Validate {
        /// The job's TOML config.
        config: PathBuf,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print the config as it will run (overrides and defaults applied) as TOML.
        #[arg(long)]
        print: bool,
        /// Also connect to the services the job uses (list the S3 bucket), as a health check;
        /// still reads and writes no record.
        #[arg(long)]
        check: bool,
    },
    /// Write realistic telemetry-like test submissions.
    #[command(after_help = GENERATE_HELP)]
    Generate {
        /// Records to write.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seed: the same seed gives the same records.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of broken records (every kind of error, evenly).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Share of records that are resends of a recent one (same uri and payload).
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GenFormat::Json)]
        format: GenFormat,
        /// Which documents: `small` (4 doctypes, ~1.9 KB documents) or `telemetry` (the 9
        /// bundled doctypes, ~3.6 KB documents: the benchmark's workload).
        #[arg(long, default_value = "small")]
        workload: Workload,
        /// Output file (stdout if absent).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Derived schemas.
    #[command(after_help = SCHEMAS_HELP)]
    Schemas {
        #[command(subcommand)]
        what: SchemasCommand,
    },
    /// Decode generated messages memory -> memory and report throughput.
    #[command(after_help = BENCH_HELP)]
    Bench {
        /// Messages to generate.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Seed of the generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of broken records.
        #[arg(long, default_value_t = 0.02)]
        error_rate: f64,
        /// Share of records that are resends of a recent one.
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
        /// Deduplicate after decoding (by uri, 24 h; duplicates become dead letters).
        #[arg(long)]
        dedup: bool,
        /// The schema registry.
        #[arg(long, default_value = "schemas/json")]
        schemas: PathBuf,
    },
    /// The config reference and example configs.
    #[command(after_help = CONFIG_HELP)]
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every section and key with its type, default and description (markdown: what
    /// docs/config.md holds).
    #[command(after_help = CONFIG_HELP)]
    Reference,
    /// Print a commented starting config of a job, which `sluice validate` accepts when run
    /// from the repository's root (its example paths are the repository's).
    #[command(after_help = CONFIG_HELP)]
    Example {
        /// The job.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(reference::JOBS.iter().copied()))]
        job: String,
        /// The source's `type`.
        #[arg(long, default_value = "file", value_parser = clap::builder::PossibleValuesParser::new(config::SourceConfig::kinds().iter().copied()))]
        source: String,
        /// The sink's `type`.
        #[arg(long, default_value = "file", value_parser = clap::builder::PossibleValuesParser::new(config::SinkConfig::kinds().iter().copied()))]
        sink: String,
    },
}

/// Which dead letters a `dead-letters` command takes.
#[derive(clap::Args)]
struct DeadLetterSelection {
    /// Dead-letter files, directories (searched recursively) or s3://bucket/prefix URLs.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Only dead letters of this error_type (repeatable).
    #[arg(long = "error-type", value_name = "TYPE")]
    error_types: Vec<String>,
    /// Only dead letters whose error_message contains this.
    #[arg(long)]
    message: Option<String>,
    /// The S3 endpoint of s3:// paths (e.g. http://127.0.0.1:5000); else `AWS_ENDPOINT`, else
    /// AWS. Credentials and region come from the `AWS_*` variables.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

impl DeadLetterSelection {
    fn read(&self) -> Result<dead_letters::DeadLetters, Exit> {
        let filter = dead_letters::Filter {
            error_types: self.error_types.clone(),
            message: self.message.clone(),
        };
        dead_letters::read(&self.paths, &filter, self.endpoint.as_deref())
            .map_err(|e| Exit(2, anyhow::Error::new(e)))
    }
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Count dead letters by error_type and error_message.
    Summary {
        #[command(flatten)]
        select: DeadLetterSelection,
    },
    /// Print dead letters with their attributes and decoded payload.
    Show {
        #[command(flatten)]
        select: DeadLetterSelection,
        /// Print at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Feed the selected dead letters through a job as its input (the config's source is
    /// replaced; its sinks are written as in a run).
    Replay {
        #[command(flatten)]
        select: DeadLetterSelection,
        /// The job's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Override a key of the job: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Skip the job's health checks.
        #[arg(long)]
        no_healthcheck: bool,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Print the state directory and, per input file, where a run resumes.
    Show {
        /// The job's TOML config.
        config: PathBuf,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Forget what earlier runs acknowledged: the next run reads every input from its start.
    Reset {
        /// The job's TOML config.
        config: PathBuf,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Print the BigQuery table schema (JSON, as `bq show --schema` prints it) that
    /// `create_tables` makes: for NAMESPACE/DOCTYPE.VERSION in the `payload` format, or the
    /// fixed table of the `decoded` or `raw` (error table) format.
    Bigquery {
        /// The JSON schema, e.g. `telemetry/main.4` (the `payload` format only).
        name: Option<String>,
        /// The schema registry: a directory or a .tar.gz.
        #[arg(long, default_value = "schemas/json")]
        schemas: PathBuf,
        /// The row format of the table.
        #[arg(long, value_enum, default_value_t = TableFormat::Payload)]
        format: TableFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TableFormat {
    /// The decoded document: derived from its JSON schema.
    Payload,
    /// The decoder's metadata and the payload bytes.
    Decoded,
    /// Every attribute a column and the payload bytes (an error table).
    Raw,
}

#[derive(Clone, Copy, ValueEnum)]
enum GenFormat {
    /// gcp-ingestion ndjson envelopes.
    Json,
    /// Heka stream frames.
    Heka,
}

/// A failure with the exit code it maps to.
struct Exit(u8, anyhow::Error);

/// A job on files stopped by a signal before the end of its input (documented in `--help`).
const EXIT_STOPPED_BEFORE_END: u8 = 3;
/// A second signal aborted the run.
const EXIT_ABORTED: u8 = 130;

/// Writes where logs go (stderr, unless a data sink uses it; nowhere with `--quiet`),
/// ignoring failures: a closed stream (`sluice run | head`, a terminal gone) must never turn
/// into a panic or stop what the process is doing.
fn say(text: std::fmt::Arguments<'_>) {
    logging::say(text);
}

/// `eprintln!` that never panics and never mixes with data (see [`say`]).
macro_rules! say {
    ($($arg:tt)*) => { say(format_args!("{}\n", format_args!($($arg)*))) };
}

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Self {
        Exit(1, e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = logging::Options {
        format: cli.log_format,
        quiet: cli.quiet,
        log_file: cli.log_file.clone(),
        // a job's config says whether its data uses stdout or stderr: hold logs until then
        hold: matches!(cli.command, Command::Run { .. }),
    };
    if let Err(e) = logging::init(&options) {
        let _ = writeln!(std::io::stderr().lock(), "error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run {
            config,
            set,
            workers,
            processes,
            process,
            hostfile,
            metrics_addr,
            no_progress,
            expect_listing,
            no_healthcheck,
            from_start,
        } => run(RunArgs {
            config,
            set,
            workers,
            cluster: processes.zip(process).zip(hostfile),
            metrics_addr,
            no_progress,
            expect_listing,
            no_healthcheck,
            from_start,
            replay_input: None,
        }),
        Command::Check { config, set } => health_check(&config, &set),
        Command::State { what } => state(what),
        Command::Test { config, tests, set } => config_tests(&config, &tests, &set),
        Command::DeadLetters { what } => dead_letters_command(what),
        Command::Validate {
            config,
            set,
            print,
            check,
        } => validate(&config, &set, print, check),
        Command::Generate {
            count,
            seed,
            error_rate,
            duplicates,
            format,
            workload,
            output,
        } => generate(
            count, seed, error_rate, duplicates, format, workload, output,
        )
        .map_err(Exit::from),
        Command::Schemas {
            what:
                SchemasCommand::Bigquery {
                    name,
                    schemas,
                    format,
                },
        } => bigquery_schema(name.as_deref(), &schemas, format).map_err(|e| Exit(2, e)),
        Command::Bench {
            count,
            workers,
            seed,
            error_rate,
            duplicates,
            dedup,
            schemas,
        } => bench(
            count, workers, seed, error_rate, duplicates, dedup, &schemas,
        )
        .map_err(Exit::from),
        Command::Config { what } => config_command(what),
    };
    if logging::destination() == logging::Destination::Stderr {
        // lines held for a run that failed before its config said where logs go
        logging::route(false, false);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, e)) => {
            if !e.to_string().is_empty() {
                // the chain, each cause once (a cause some crate also prints in its own
                // message is not repeated)
                logging::error(format_args!("error: {}\n", sluice::chain(e.as_ref())));
            }
            ExitCode::from(code)
        }
    }
}

/// `sluice config reference|example`.
fn config_command(what: ConfigCommand) -> Result<(), Exit> {
    let text = match what {
        ConfigCommand::Reference => reference::markdown(),
        ConfigCommand::Example { job, source, sink } => {
            reference::example(&job, &source, &sink).map_err(|e| Exit(2, anyhow::anyhow!(e)))?
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(())
}

/// `sluice schemas bigquery`: prints a derived table schema.
fn bigquery_schema(
    name: Option<&str>,
    schemas: &std::path::Path,
    format: TableFormat,
) -> anyhow::Result<()> {
    use sluice_schemas::bigquery;
    let table = match (format, name) {
        (TableFormat::Decoded, None) => bigquery::decoded_table_schema(),
        (TableFormat::Raw, None) => bigquery::raw_table_schema(),
        (TableFormat::Decoded | TableFormat::Raw, Some(_)) => {
            anyhow::bail!("the decoded and raw tables are the same for every schema: give no name")
        }
        (TableFormat::Payload, None) => {
            anyhow::bail!("give the schema as NAMESPACE/DOCTYPE.VERSION, e.g. telemetry/main.4")
        }
        (TableFormat::Payload, Some(name)) => {
            let parsed = name.split_once('/').and_then(|(ns, rest)| {
                let (dt, v) = rest.rsplit_once('.')?;
                Some((ns, dt, v.parse::<u32>().ok()?))
            });
            let Some((ns, dt, version)) = parsed else {
                anyhow::bail!("`{name}` is not NAMESPACE/DOCTYPE.VERSION (e.g. telemetry/main.4)")
            };
            let registry = sluice_schemas::SchemaRegistry::load(schemas)
                .with_context(|| format!("cannot load schemas `{}`", schemas.display()))?;
            let schema = registry.find(ns, dt, version)?;
            bigquery::derive_table_schema(schema.as_json())
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{table}");
    Ok(())
}

fn overrides(set: &[String]) -> Overrides {
    let overrides = set
        .iter()
        .fold(Overrides::new().env(std::env::vars()), |o, s| o.set(s));
    for name in overrides.ignored_env() {
        tracing::warn!(
            variable = %name,
            "ignoring environment variable: its first part names no config section or key"
        );
    }
    overrides
}

fn config_exit(errors: ConfigErrors, path: &std::path::Path) -> Exit {
    for e in &errors.0 {
        logging::error(format_args!("config error: {e}\n"));
    }
    Exit(
        2,
        anyhow::anyhow!("{} problem(s) in `{}`", errors.0.len(), path.display()),
    )
}

fn validate(path: &std::path::Path, set: &[String], print: bool, check: bool) -> Result<(), Exit> {
    let cfg = sluice_pipelines::preflight::validate(path, &overrides(set))
        .map_err(|e| config_exit(e, path))?;
    if check {
        jobs::check_services(&cfg).map_err(job_exit)?;
    }
    if print {
        let text = toml::to_string(&cfg).context("cannot print the config as TOML")?;
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to stdout")?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}: ok", path.display()).context("cannot write to stdout")?;
        if let Some(listing) = jobs::listing(&cfg) {
            let (digest, files) = listing.map_err(job_exit)?;
            writeln!(
                out,
                "input listing digest {digest} ({files} files): run every process of a cluster with --expect-listing {digest}"
            )
            .context("cannot write to stdout")?;
        }
    }
    Ok(())
}

/// `sluice check`: every health check, one line each.
fn health_check(path: &std::path::Path, set: &[String]) -> Result<(), Exit> {
    let cfg = config::load(path, &overrides(set)).map_err(|e| config_exit(e, path))?;
    let outcomes = check::run_all(&cfg).map_err(job_exit)?;
    let mut out = std::io::stdout().lock();
    for o in &outcomes {
        writeln!(out, "{o}").context("cannot write to stdout")?;
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    if failed > 0 {
        return Err(Exit(
            2,
            anyhow::anyhow!("{failed} of {} health check(s) failed", outcomes.len()),
        ));
    }
    Ok(())
}

/// The health checks `run` makes before reading: each failure is one `error:` line naming
/// the section and the cause.
fn health_checks_pass(cfg: &config::JobConfig) -> Result<(), Exit> {
    let failed: Vec<String> = check::run_all(cfg)
        .map_err(job_exit)?
        .into_iter()
        .filter(|o| o.error.is_some())
        .map(|o| o.to_string())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    // one `error:` line per failed check (main prints the first prefix)
    Err(Exit(2, anyhow::anyhow!("{}", failed.join("\nerror: "))))
}

/// `sluice test`.
fn config_tests(
    path: &std::path::Path,
    tests: &std::path::Path,
    set: &[String],
) -> Result<(), Exit> {
    let cfg = config::load(path, &overrides(set)).map_err(|e| config_exit(e, path))?;
    let file = config_test::load(tests).map_err(|e| Exit(2, anyhow::Error::new(e)))?;
    let results = config_test::run(&cfg, &file).map_err(|e| Exit(2, anyhow::Error::new(e)))?;
    let mut out = std::io::stdout().lock();
    let failed = results.iter().filter(|r| !r.passed()).count();
    for r in &results {
        if r.passed() {
            writeln!(out, "test {} ... ok", r.name).context("cannot write to stdout")?;
        } else {
            writeln!(out, "test {} ... FAILED\n{}", r.name, r.diff)
                .context("cannot write to stdout")?;
        }
    }
    writeln!(
        out,
        "{} test(s): {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    )
    .context("cannot write to stdout")?;
    if failed > 0 {
        return Err(Exit(
            1,
            anyhow::anyhow!("{failed} test(s) of `{}` failed", tests.display()),
        ));
    }
    Ok(())
}

/// `sluice dead-letters summary|show|replay`.
fn dead_letters_command(what: DeadLettersCommand) -> Result<(), Exit> {
    let text = match what {
        DeadLettersCommand::Summary { select } => dead_letters::summary(&select.read()?),
        DeadLettersCommand::Show { select, limit } => dead_letters::show(&select.read()?, limit),
        DeadLettersCommand::Replay {
            select,
            config,
            set,
            no_healthcheck,
        } => {
            let selected = select.read()?;
            let input = std::env::temp_dir().join(format!(
                "sluice-replay-{}-{}.ndjson",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ));
            let (written, truncated) = dead_letters::write_replay_input(&selected, &input)
                .with_context(|| format!("cannot write `{}`", input.display()))?;
            if truncated > 0 {
                tracing::warn!(
                    truncated,
                    "dead letters whose payload the dead-letter sink cut (payload_truncated) are not replayed: the original payload is gone"
                );
            }
            say!(
                "replaying {written} dead letter(s) from {} file(s) through `{}`",
                selected.files,
                config.display()
            );
            let result = run(RunArgs {
                config,
                set,
                workers: None,
                cluster: None,
                metrics_addr: None,
                no_progress: true,
                expect_listing: None,
                no_healthcheck,
                from_start: false,
                replay_input: Some(input.clone()),
            });
            let _ = std::fs::remove_file(&input);
            return result;
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(())
}

fn state_exit(e: state::StateError) -> Exit {
    Exit(1, anyhow::Error::new(e))
}

/// `sluice state show|reset`.
fn state(what: StateCommand) -> Result<(), Exit> {
    let (path, set, reset) = match &what {
        StateCommand::Show { config, set } => (config, set, false),
        StateCommand::Reset { config, set } => (config, set, true),
    };
    let mut cfg = config::load(path, &overrides(set)).map_err(|e| config_exit(e, path))?;
    let dir = state::apply(&mut cfg, path);
    let text = match (&dir, reset) {
        (Some(dir), true) if !dir.exists() => format!(
            "nothing to reset: {} does not exist (no run has saved anything)\n",
            dir.display()
        ),
        (Some(dir), true) => {
            // not while a run uses it
            let _lock = state::lock(dir, None).map_err(state_exit)?;
            let n = state::reset(&cfg).map_err(state_exit)?;
            format!(
                "removed {n} checkpoint(s) from {}: the next run reads every input from its start\n",
                dir.display()
            )
        }
        _ => state::show(&cfg).map_err(state_exit)?,
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(())
}

fn job_exit(e: JobError) -> Exit {
    match e {
        JobError::Pipeline(e) => Exit(1, anyhow::Error::new(e).context("the pipeline failed")),
        other => Exit(2, anyhow::Error::new(other)),
    }
}

struct RunArgs {
    config: PathBuf,
    set: Vec<String>,
    workers: Option<usize>,
    cluster: Option<((usize, usize), PathBuf)>,
    metrics_addr: Option<String>,
    no_progress: bool,
    expect_listing: Option<String>,
    no_healthcheck: bool,
    from_start: bool,
    /// `dead-letters replay`: read this ndjson file instead of the config's source.
    replay_input: Option<PathBuf>,
}

fn run(args: RunArgs) -> Result<(), Exit> {
    let mut set = args.set.clone();
    if let Some(w) = args.workers {
        set.push(format!("workers={w}"));
    }
    let loaded = config::load(&args.config, &overrides(&set));
    // Logs go where no data goes (held until now: the config says which streams carry data).
    let (stdout_data, stderr_data) = loaded
        .as_ref()
        .map_or((false, false), logging::data_streams);
    logging::route(stdout_data, stderr_data);
    let mut cfg = loaded.map_err(|e| config_exit(e, &args.config))?;
    let state_dir = match &args.replay_input {
        // a replay reads its input once, whatever earlier replays did
        Some(input) => {
            cfg.source = config::SourceConfig::File(config::FileSourceConfig {
                path: input.display().to_string(),
                format: config::InputFormat::Json,
                state_dir: None,
            });
            None
        }
        None => state::apply(&mut cfg, &args.config),
    };
    let bounded = matches!(cfg.source, config::SourceConfig::File(_));
    // before anything is created or read
    if args.no_healthcheck {
        tracing::info!("health checks skipped (--no-healthcheck)");
    } else {
        health_checks_pass(&cfg)?;
    }
    let prepared = Prepared::new(cfg).map_err(job_exit)?;
    let inputs = prepared.input_status();
    check_listing(
        &inputs,
        args.expect_listing.as_deref(),
        args.cluster.is_some(),
    )?;
    // A file job: hold its state directory, and say what it resumes.
    let process = args.cluster.as_ref().map(|((_, process), _)| *process);
    let (_lock, resumption) = match &state_dir {
        Some(dir) => {
            let lock = state::lock(dir, process).map_err(state_exit)?;
            let forgotten = if args.from_start {
                Some(state::reset(prepared.config()).map_err(state_exit)?)
            } else {
                None
            };
            // A checkpoint that cannot be read stops the run when the source opens it, with
            // the source's error naming it; the report is then left out.
            let resumption = match state::Resumption::of(prepared.config()) {
                Some(Ok(mut r)) => {
                    r.forgotten = forgotten;
                    r.log();
                    Some(r)
                }
                _ => None,
            };
            (Some(lock), resumption)
        }
        None => {
            if args.from_start {
                tracing::warn!(
                    "--from-start is for a job on files: this job keeps no file positions"
                );
            }
            (None, None)
        }
    };
    let mut pipeline = prepared.pipeline();
    if let Some(((processes, process), hostfile)) = &args.cluster {
        pipeline = pipeline
            .hostfile(*process, hostfile)
            .map_err(|e| Exit(2, anyhow::Error::new(e)))?;
        let listed = pipeline.processes();
        if listed != *processes {
            return Err(Exit(
                2,
                anyhow::anyhow!(
                    "--processes {processes} but hostfile `{}` lists {listed} process address(es)",
                    hostfile.display()
                ),
            ));
        }
        tracing::info!(processes, process, "running as part of a cluster");
    }
    let metrics = pipeline.metrics();
    // An unbounded input (stdin) is stopped by ending it after what it buffered, so that
    // nothing already read is dropped; a bounded one stops reading at once.
    let stop = prepared
        .drain_flag()
        .unwrap_or_else(|| pipeline.shutdown_flag());
    let signalled = Arc::new(AtomicBool::new(false));
    install_signals(stop, signalled.clone()).map_err(|e| Exit(1, e))?;
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = &args.metrics_addr {
        sluice_pipelines::status::serve(addr, pipeline.job_name(), metrics.clone(), ready.clone())
            // the address taken is a failure of this run, not of its config
            .map_err(|e| Exit(1, anyhow::Error::new(e)))?;
    }
    let done = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress(
        metrics.clone(),
        done.clone(),
        bounded
            && !args.no_progress
            && !logging::quiet()
            && !stderr_data
            && std::io::stderr().is_terminal(),
    );
    tracing::info!(config = %args.config.display(), "starting");
    ready.store(true, Ordering::SeqCst);
    let result = prepared.run(pipeline);
    ready.store(false, Ordering::SeqCst);
    done.store(true, Ordering::SeqCst);
    let _ = progress.join();
    let summary = result.map_err(job_exit)?;
    // Which files were not read to their end: only a stop can leave any.
    let unfinished = inputs.unfinished();
    print_summary(&summary, &metrics, &unfinished);
    if let Some(r) = &resumption {
        say(format_args!("{}", r.summary()));
    }
    if !unfinished.is_empty() && signalled.load(Ordering::SeqCst) {
        return Err(Exit(
            EXIT_STOPPED_BEFORE_END,
            anyhow::anyhow!(
                "stopped by a signal before the end of the input: {} file(s) not read to the end (what was read is written{})",
                unfinished.len(),
                if inputs.resumes() {
                    "; a re-run resumes there"
                } else {
                    "; without a state directory a run reads everything again"
                }
            ),
        ));
    }
    Ok(())
}

/// Compares the input listing with `--expect-listing`; in a cluster without it, logs the
/// digest so that the processes' logs can be compared.
fn check_listing(
    inputs: &jobs::InputStatus,
    expected: Option<&str>,
    cluster: bool,
) -> Result<(), Exit> {
    let Some(listing) = inputs.listing() else {
        if expected.is_some() {
            return Err(Exit(
                2,
                anyhow::anyhow!("--expect-listing is for a file source, and this job reads none"),
            ));
        }
        return Ok(());
    };
    let (digest, files) = listing.map_err(job_exit)?;
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(&digest) => Err(Exit(
            2,
            anyhow::anyhow!(
                "the input files listed here ({files} files, digest {digest}) differ from the expected listing {e}: this host sees other files than the one the digest was taken on, and a cluster would leave files unread"
            ),
        )),
        Some(_) => {
            tracing::info!(digest, files, "input listing matches --expect-listing");
            Ok(())
        }
        None if cluster => {
            tracing::warn!(
                digest,
                files,
                "input listing of this process; pass --expect-listing to every process so that a host seeing other files fails at start"
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// Sets `stop` on the first SIGINT/SIGTERM (and `signalled`), exits 130 on the second. The
/// flags are set before anything is logged, and logging cannot fail: a closed stderr never
/// keeps a job from stopping.
fn install_signals(stop: Arc<AtomicBool>, signalled: Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    signalled.store(true, Ordering::SeqCst);
                    stop.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        signal = sig,
                        "stopping: flushing sinks (signal again to abort)"
                    );
                } else {
                    logging::error(format_args!("aborted\n"));
                    std::process::exit(i32::from(EXIT_ABORTED));
                }
            }
        })?;
    Ok(())
}

fn spawn_progress(
    metrics: Metrics,
    done: Arc<AtomicBool>,
    bar: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let pb = bar.then(|| {
            let pb = indicatif::ProgressBar::new(0);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {msg} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb
        });
        let mut last_log = Instant::now();
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            let s = metrics.snapshot();
            let read = s.total(Counter::Read);
            if let Some(pb) = &pb {
                pb.set_length(s.total(Counter::ProgressTotal));
                pb.set_position(s.total(Counter::ProgressDone));
                pb.set_message(format!("{read} records"));
            } else if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                tracing::info!(
                    records = read,
                    dead_letters = s.total(Counter::DeadLettered),
                    rate = format!("{:.0}/s", read as f64 / secs),
                    "progress"
                );
            }
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
    })
}

fn print_summary(summary: &sluice::RunSummary, metrics: &Metrics, unfinished: &[PathBuf]) {
    let snapshot = metrics.snapshot();
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    let read = summary.total_read();
    let mut out = String::new();
    // Records without namespace/doctype (a sink job's raw messages) count under `-/-`.
    out.push_str("\n  written by namespace/doctype\n");
    for (k, v) in jobs::outputs_by_doctype(&snapshot) {
        let k = if k == "-/-" {
            "(not decoded)".to_string()
        } else {
            k
        };
        out.push_str(&format!("    {k:<40} {v:>10}\n"));
    }
    out.push_str("  dead letters by error_type\n");
    if summary.dead_lettered.is_empty() {
        out.push_str("    (none)\n");
    }
    for (k, v) in &summary.dead_lettered {
        out.push_str(&format!("    {k:<40} {v:>10}\n"));
    }
    // Records a configured rule dropped without a dead letter: counted, never silent.
    let dropped = snapshot.family(Counter::Dropped);
    if !dropped.is_empty() {
        out.push_str("  dropped by payload rules (counted, not written)\n");
        for (k, v) in &dropped {
            out.push_str(&format!("    {k:<40} {v:>10}\n"));
        }
    }
    // Bytes in the progress bar's units (indicatif's binary KiB/MiB/GiB): input files read, then
    // payloads (after framing, before decompression).
    let files = snapshot.total(Counter::ProgressDone);
    let files = if files > 0 {
        format!("{} of input files, ", indicatif::HumanBytes(files))
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  read {read} records ({files}{} of payloads) in {:.2}s: {:.0} records/s, {}/s of payloads; {} dead letters{}\n",
        indicatif::HumanBytes(summary.bytes_read),
        secs,
        read as f64 / secs,
        indicatif::HumanBytes((summary.bytes_read as f64 / secs) as u64),
        summary.total_dead_lettered(),
        match dropped.values().sum::<u64>() {
            0 => String::new(),
            n => format!("; {n} dropped by rules"),
        },
    ));
    if !unfinished.is_empty() {
        out.push_str(&format!(
            "  STOPPED before the end of the input: {} file(s) not read to the end\n",
            unfinished.len()
        ));
        for f in unfinished.iter().take(20) {
            out.push_str(&format!("    {}\n", f.display()));
        }
        if unfinished.len() > 20 {
            out.push_str(&format!("    ... and {} more\n", unfinished.len() - 20));
        }
    }
    say(format_args!("{out}"));
}

fn generate(
    count: usize,
    seed: u64,
    error_rate: f64,
    duplicates: f64,
    format: GenFormat,
    workload: Workload,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create `{}`", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut buf = Vec::new();
    for record in Generator::new(seed, error_rate)
        .with_workload(workload)
        .with_duplicates(duplicates)
        .take(count)
    {
        buf.clear();
        match format {
            GenFormat::Json => record.write_json_line(&mut buf),
            GenFormat::Heka => record
                .write_heka_frame(&mut buf)
                .context("cannot encode a generated record as heka")?,
        }
        out.write_all(&buf)
            .context("cannot write generated records")?;
    }
    out.flush().context("cannot write generated records")?;
    Ok(())
}

fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn bench(
    count: usize,
    workers: usize,
    seed: u64,
    error_rate: f64,
    duplicates: f64,
    dedup: bool,
    schemas: &std::path::Path,
) -> anyhow::Result<()> {
    let registry = Arc::new(
        sluice_schemas::SchemaRegistry::load(schemas)
            .with_context(|| format!("cannot load schemas `{}`", schemas.display()))?,
    );
    say!("generating {count} messages...");
    let input =
        sluice_pipelines::generate::messages_with_duplicates(count, seed, error_rate, duplicates);
    let bytes: usize = input.iter().map(|m| m.payload.len()).sum();
    let started = Instant::now();
    let (summary, ok, dead) = jobs::decode_in_memory(input, registry, workers, dedup)?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    writeln!(
        std::io::stdout().lock(),
        "decoder{} memory->memory, {workers} worker(s): {} messages in {secs:.2}s = {:.0} msgs/s, {:.1} MB/s of payload; {ok} decoded, {dead} dead letters; peak RSS {} MB",
        if dedup { " + dedup" } else { "" },
        summary.total_read(),
        summary.total_read() as f64 / secs,
        bytes as f64 / 1e6 / secs,
        peak_rss_kb().map_or("?".to_string(), |kb| (kb / 1024).to_string()),
    )
    .context("cannot write to stdout")?;
    Ok(())
}
