//! Health checks: before a run reads any record (and alone, `sluice check`), each source and
//! sink of a job reaches its service with the configured settings, through the connector
//! kit's `check()` hook: the bucket exists and takes a write, the brokers answer and a fixed
//! topic exists, the subscription or a fixed Pub/Sub topic exists, BigQuery answers and a fixed
//! table exists (templated destinations are known per record: a record whose destination
//! does not exist is a dead letter). Input files are listed. A local output directory is
//! checked without being created: it is a directory or does not exist yet, and takes a file
//! when it exists.
//!
//! Each outcome is one line naming the config section and, on failure, a cause a user can act
//! on ([`short_cause`]): libraries' error chains (an HTTP client inside an object store inside
//! a sink) are cut to what matters, an S3 error to its code and message.

use std::fmt;

use sluice::{CheckContext, Sink, Source};

use crate::config::{JobConfig, SinkConfig, SourceConfig};
use crate::jobs::{self, JobError};

/// The outcome of one section's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The config section: `source`, `sink`, `dead_letter`, `routes.<name>.sink`.
    pub section: String,
    /// What was checked: `s3 bucket `telemetry``.
    pub target: String,
    /// Why it failed, shortened (`None`: it passed).
    pub error: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            None => write!(f, "{} ({}): ok", self.section, self.target),
            Some(e) => write!(f, "{} ({}): {e}", self.section, self.target),
        }
    }
}

/// Runs every check of the job, each even when an earlier one failed. `Err` only when a check
/// cannot be made at all (no runtime, a sink that cannot be built from its config).
pub fn run_all(config: &JobConfig) -> Result<Vec<Outcome>, JobError> {
    // Multi-threaded: checks call `Handle::block_on`, which drives no IO or timers on a
    // current-thread runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| JobError::Setup(format!("cannot start a runtime for checks: {e}")))?;
    let ctx = CheckContext::new(runtime.handle().clone());
    let mut outcomes = vec![check_source(&config.source, &ctx)];
    let mut sinks = vec![
        ("sink".to_string(), &config.sink),
        ("dead_letter".to_string(), &config.dead_letter.sink),
    ];
    for r in &config.routes {
        sinks.push((format!("routes.{}.sink", r.name), &r.sink));
    }
    for (section, cfg) in sinks {
        outcomes.push(check_sink(section, cfg, &ctx)?);
    }
    Ok(outcomes)
}

fn outcome(section: &str, target: String, result: Result<(), sluice::BoxError>) -> Outcome {
    Outcome {
        section: section.to_string(),
        target,
        error: result.err().map(|e| short_cause(e.as_ref())),
    }
}

fn check_source(cfg: &SourceConfig, ctx: &CheckContext) -> Outcome {
    let (target, result) = match cfg {
        SourceConfig::File(c) => (format!("files `{}`", c.path), c.source().check(ctx)),
        SourceConfig::Stdin(_) => ("stdin".to_string(), Ok(())),
        SourceConfig::Kafka(c) => (
            format!("kafka topics {} at {}", c.topics.join(","), c.brokers),
            c.source().check(ctx),
        ),
        SourceConfig::Pubsub(c) => (
            format!("pubsub subscription `{}`", c.subscription),
            c.source().check(ctx),
        ),
    };
    outcome("source", target, result)
}

fn check_sink(section: String, cfg: &SinkConfig, ctx: &CheckContext) -> Result<Outcome, JobError> {
    let target = match cfg {
        SinkConfig::Stdout(_) => "stdout".to_string(),
        SinkConfig::Stderr(_) => "stderr".to_string(),
        SinkConfig::File(c) => format!("directory `{}`", c.dir.display()),
        SinkConfig::S3(c) => format!("s3 bucket `{}`", c.bucket),
        SinkConfig::BigQuery(c) => format!("bigquery project `{}`", c.project),
        SinkConfig::Kafka(c) => format!("kafka topic `{}` at {}", c.topic.as_str(), c.brokers),
        SinkConfig::Pubsub(c) => format!("pubsub topic `{}`", c.topic.as_str()),
    };
    let result: Result<(), sluice::BoxError> = match cfg {
        SinkConfig::File(c) => local_dir_check(c),
        _ => match jobs::sink_for(cfg) {
            Ok(sink) => sink.check(ctx),
            Err(e) => Err(Box::new(e)),
        },
    };
    Ok(outcome(&section, target, result))
}

/// A local output directory, without creating it: it is a directory or does not exist yet,
/// and when it exists a file can be created in it.
fn local_dir_check(c: &crate::config::LocalSinkConfig) -> Result<(), sluice::BoxError> {
    c.check()?;
    if c.dir.is_dir() {
        let probe = c
            .dir
            .join(format!(".sluice-healthcheck-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| format!("cannot create a file in `{}`: {e}", c.dir.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// An error's chain cut to what a user can act on, on one line:
///
/// - an S3 (or S3-compatible) error body anywhere in the chain gives its `<Code>` and
///   `<Message>`: ``NoSuchBucket: The specified bucket does not exist``;
/// - known transport failures are named plainly (connection refused, a host that does not
///   resolve, an `http://` endpoint without `allow_http`, a timeout);
/// - otherwise the first message (what failed) and the last (the root cause), each once.
///
/// ```
/// use sluice_pipelines::check::short_cause;
/// #[derive(Debug)]
/// struct E(&'static str, Option<Box<E>>);
/// impl std::fmt::Display for E {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.0) }
/// }
/// impl std::error::Error for E {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         self.1.as_deref().map(|e| e as _)
///     }
/// }
/// let xml = E("cannot reach the destination `out`", Some(Box::new(E(
///     "Error performing list request: Client error with status 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>",
///     None,
/// ))));
/// assert_eq!(
///     short_cause(&xml),
///     "cannot reach the destination `out`: NoSuchBucket: The specified bucket does not exist"
/// );
/// let deep = E("a", Some(Box::new(E("b", Some(Box::new(E("permission denied", None)))))));
/// assert_eq!(short_cause(&deep), "a: permission denied");
/// let refused = E("a", Some(Box::new(E("error sending request", Some(Box::new(E("Connection refused (os error 111)", None)))))));
/// assert_eq!(
///     short_cause(&refused),
///     "a: connection refused: is the service running at the configured endpoint?"
/// );
/// ```
pub fn short_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = vec![one_line(&error.to_string())];
    let mut cause = error.source();
    while let Some(c) = cause {
        messages.push(one_line(&c.to_string()));
        cause = c.source();
    }
    let first = messages[0].clone();
    let all = messages.join(" | ");
    let lower = all.to_ascii_lowercase();
    let plain = if let Some(s3) = s3_error(&all) {
        Some(s3)
    } else if lower.contains("url scheme is not allowed")
        || (lower.contains("builder error") && lower.contains("http://"))
    {
        Some("an `http://` endpoint needs `allow_http = true`".to_string())
    } else if lower.contains("connection refused") {
        Some("connection refused: is the service running at the configured endpoint?".to_string())
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        Some("the endpoint's host name does not resolve".to_string())
    } else {
        None
    };
    let text = match plain {
        Some(p) if first.contains(&p) => first,
        Some(p) => format!("{first}: {p}"),
        None => {
            let last = messages.last().cloned().unwrap_or_default();
            if messages.len() == 1 || first.ends_with(&last) {
                first
            } else {
                format!("{first}: {last}")
            }
        }
    };
    truncate(&text, 400)
}

/// `Code: Message` of an S3 error document in `text`.
fn s3_error(text: &str) -> Option<String> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim().to_string())
    };
    let code = tag("Code")?;
    Some(match tag("Message") {
        Some(m) if !m.is_empty() => format!("{code}: {m}"),
        _ => code,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_endpoint_without_allow_http_is_named() {
        let e = std::io::Error::other(
            "Generic S3 error: Error performing list request: builder error for url (http://127.0.0.1:1/b): URL scheme is not allowed",
        );
        assert_eq!(
            short_cause(&e),
            "Generic S3 error: Error performing list request: builder error for url (http://127.0.0.1:1/b): URL scheme is not allowed: an `http://` endpoint needs `allow_http = true`"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let e = std::io::Error::other("é".repeat(500));
        let s = short_cause(&e);
        assert!(s.len() <= 403 && s.ends_with("..."), "{s}");
    }
}
