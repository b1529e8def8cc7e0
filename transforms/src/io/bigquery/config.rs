//! The config of the BigQuery sink, as a job's config file spells it: `type = "bigquery"`.
//!
//! Sizes and durations read as in [`crate::io::units`]: a bare number is bytes or seconds.

use crate::config_doc::{ty, Documented, Key};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{Auth, BigQueryApi, RestApi};
use super::storage_write::StorageWriteApi;
use super::{BigQuerySink, BigQuerySinkError, InsertBatch, RetryPolicy, RowFormat, TableTemplate};
use crate::io::units;

/// A BigQuery sink: `[sink] type = "bigquery"` (or the `[dead_letter]` section, with `format
/// = "raw"` and a fixed error table).
///
/// ```
/// use sluice_transforms::io::bigquery::{BigQuerySinkConfig, RowFormat};
/// let c: BigQuerySinkConfig = toml::from_str(r#"
///     project = "test-proj"
///     endpoint = "http://127.0.0.1:9250"
///     auth = "none"
///     create_tables = true
///     batch = { max_rows = 100, max_bytes = "1MB" }
///     retry = { initial_backoff = "100ms" }
/// "#).unwrap();
/// assert_eq!(c.table.as_str(), "${document_namespace}.${document_type}_v${document_version}");
/// assert_eq!(c.format, RowFormat::Payload);
/// assert_eq!(c.batch.max_bytes, 1_000_000);
/// assert_eq!(c.retry.max_attempts, 8);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BigQuerySinkConfig {
    /// The project of the tables (a template may name another: `project.dataset.table`).
    pub project: String,
    /// The table of each record: `dataset.table` with `${attr}` / `${attr:-default}`
    /// placeholders, whose values are snake_cased. A record whose table cannot be named, or
    /// does not exist (unless `create_tables`), becomes a dead letter.
    #[serde(default = "default_table")]
    pub table: TableTemplate,
    /// How a record becomes a row: `payload` (the decoded document; what the table has no
    /// column for goes as JSON into `additional_properties`), `decoded` (the decoder's
    /// metadata, the payload bytes) or `raw` (every attribute a column, the payload bytes: the
    /// error table's format).
    #[serde(default = "default_format")]
    pub format: RowFormat,
    /// Create a missing table (and dataset) from the schema derived from the record's JSON
    /// schema (`payload`, which needs the decoder job's registry) or the fixed table of the
    /// `decoded` and `raw` formats.
    #[serde(default)]
    pub create_tables: bool,
    /// The REST API's root instead of `https://bigquery.googleapis.com`: an emulator's, say
    /// `http://127.0.0.1:9250`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `application_default` (credentials from `GOOGLE_APPLICATION_CREDENTIALS`, gcloud or
    /// the metadata server) or `none` (an emulator; needs `endpoint`).
    #[serde(default = "default_auth")]
    pub auth: AuthConfig,
    /// How rows are written: `insert_all` (`tabledata.insertAll`, with insert ids) or
    /// `storage_write` (the Storage Write API's default stream, rows as protocol buffers;
    /// at-least-once, no insert ids). Both refuse the same rows the same way.
    #[serde(default)]
    pub write_method: WriteMethod,
    /// With `storage_write` and `auth = "none"`: the emulator's gRPC `host:port` (the
    /// bigquery emulator's is `127.0.0.1:9260`); tables still go through `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_endpoint: Option<String>,
    /// How long one call to BigQuery may take (a REST request; a Storage Write stream lookup,
    /// or an append and its answer) before it counts as unanswered: a transient error, retried
    /// per `retry`. Seconds or `"500ms"`.
    #[serde(default = "default_timeout", with = "units::duration")]
    pub timeout: Duration,
    /// How records are grouped into requests.
    #[serde(default)]
    pub batch: InsertBatchConfig,
    /// How transient failures are retried before the pipeline stops without acknowledging.
    #[serde(default)]
    pub retry: RetryConfig,
}

impl Documented for BigQuerySinkConfig {
    const KEYS: &'static [Key] = &[
        Key::required(
            "project",
            ty::STRING,
            "\"my-project\"",
            "the project of the tables (a template may name another: `project.dataset.table`)",
        ),
        Key::default(
            "table",
            ty::TEMPLATE,
            "\"${document_namespace}.${document_type}_v${document_version}\"",
            "`dataset.table` of each record, placeholders snake_cased; a record whose table cannot be named or does not exist is a dead letter",
        ),
        Key::default(
            "format",
            "\"payload\" | \"decoded\" | \"raw\"",
            "\"payload\"",
            "a row is the decoded document, the decoder's metadata and payload bytes, or every attribute a column (the error table's format)",
        ),
        Key::default(
            "create_tables",
            ty::BOOL,
            "false",
            "create a missing table (and dataset) from the derived schema (`payload` needs the decoder job)",
        ),
        Key::optional(
            "endpoint",
            ty::STRING,
            "the REST API's root instead of Google's (an emulator: `http://127.0.0.1:9250`)",
        ),
        Key::default(
            "auth",
            "\"application_default\" | \"none\"",
            "\"application_default\"",
            "credentials from the environment, or none (an emulator; needs `endpoint`)",
        ),
        Key::default(
            "write_method",
            "\"insert_all\" | \"storage_write\"",
            "\"insert_all\"",
            "`tabledata.insertAll` (insert ids: BigQuery drops repeats on a best-effort basis) or the Storage Write API's default stream (rows as protocol buffers, at least once); both refuse the same rows the same way",
        ),
        Key::optional(
            "storage_endpoint",
            ty::STRING,
            "with `storage_write` and `auth = \"none\"`: the emulator's gRPC `host:port` (`127.0.0.1:9260`); tables still go through `endpoint`",
        ),
        Key::default(
            "timeout",
            ty::DURATION,
            "\"60s\"",
            "how long one call may take (a REST request; a Storage Write stream lookup, or an append and its answer) before it counts as unanswered: a transient error, retried per `retry`",
        ),
        Key::default(
            "batch",
            ty::TABLE,
            "{}",
            "how records are grouped into `insertAll` requests",
        )
        .with_table(<InsertBatchConfig as Documented>::keys),
        Key::default(
            "retry",
            ty::TABLE,
            "{}",
            "how transient failures are retried before the pipeline stops without acknowledging",
        )
        .with_table(<RetryConfig as Documented>::keys),
    ];
}

impl Documented for InsertBatchConfig {
    const KEYS: &'static [Key] = &[
        Key::default("max_rows", ty::COUNT, "500", "rows per request"),
        Key::default(
            "max_bytes",
            ty::SIZE,
            "\"8MB\"",
            "bytes of JSON rows per request",
        ),
    ];
}

impl Documented for RetryConfig {
    const KEYS: &'static [Key] = &[
        Key::default(
            "max_attempts",
            ty::COUNT,
            "8",
            "attempts of one request, the first included",
        ),
        Key::default(
            "initial_backoff",
            ty::DURATION,
            "\"1s\"",
            "the first delay; it doubles up to `max_backoff`",
        ),
        Key::default("max_backoff", ty::DURATION, "\"30s\"", "the longest delay"),
    ];
}

/// How the sink writes rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    /// `tabledata.insertAll` (the default).
    #[default]
    InsertAll,
    /// The Storage Write API's default stream.
    StorageWrite,
}

/// Where credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthConfig {
    /// Application default credentials.
    ApplicationDefault,
    /// None (an emulator).
    None,
}

/// Records per `insertAll` request and bytes of JSON rows per request (whichever is reached
/// first); both above zero. BigQuery takes at most 50 000 rows and 10 MB per request and
/// recommends about 500 rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InsertBatchConfig {
    /// Rows per request.
    #[serde(default = "default_max_rows", with = "units::count")]
    pub max_rows: usize,
    /// Bytes of JSON rows per request: bytes or `"8MB"`.
    #[serde(default = "default_max_bytes", with = "units::size")]
    pub max_bytes: usize,
}

/// Retries of transient failures (unavailable, rate limited, no answer): the delay starts at
/// `initial_backoff` and doubles up to `max_backoff`; after `max_attempts` attempts the write
/// fails and the pipeline stops without acknowledging it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts of one request, the first included.
    #[serde(default = "default_max_attempts", with = "units::count")]
    pub max_attempts: usize,
    /// The first delay: seconds or `"500ms"`.
    #[serde(default = "default_initial_backoff", with = "units::duration")]
    pub initial_backoff: Duration,
    /// The longest delay.
    #[serde(default = "default_max_backoff", with = "units::duration")]
    pub max_backoff: Duration,
}

/// gcp-ingestion's layout: `${document_namespace}.${document_type}_v${document_version}`.
pub fn default_table() -> TableTemplate {
    TableTemplate::parse("${document_namespace}.${document_type}_v${document_version}")
        .expect("the default table template parses")
}

/// `payload`.
pub fn default_format() -> RowFormat {
    RowFormat::Payload
}

/// `application_default`.
pub fn default_auth() -> AuthConfig {
    AuthConfig::ApplicationDefault
}

/// 500 rows, BigQuery's recommendation.
pub fn default_max_rows() -> usize {
    InsertBatch::default().max_rows
}

/// 8 MB, below BigQuery's 10 MB request limit.
pub fn default_max_bytes() -> usize {
    InsertBatch::default().max_bytes
}

/// 60 s.
pub fn default_timeout() -> Duration {
    super::api::DEFAULT_TIMEOUT
}

/// 8 attempts.
pub fn default_max_attempts() -> usize {
    RetryPolicy::default().max_attempts
}

/// 1 s.
pub fn default_initial_backoff() -> Duration {
    RetryPolicy::default().initial_backoff
}

/// 30 s.
pub fn default_max_backoff() -> Duration {
    RetryPolicy::default().max_backoff
}

impl Default for InsertBatchConfig {
    fn default() -> Self {
        InsertBatchConfig {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl BigQuerySinkConfig {
    /// The sink this config describes (no connection is made before the first write or
    /// check). `auth = "none"` without an `endpoint` is an error: it would send
    /// unauthenticated requests to Google.
    pub fn sink(&self) -> Result<BigQuerySink, BigQuerySinkError> {
        let auth = match (self.auth, &self.endpoint) {
            (AuthConfig::None, None) => {
                return Err(BigQuerySinkError::Config(
                    "auth = \"none\" needs an `endpoint` (an emulator)".into(),
                ))
            }
            (AuthConfig::None, Some(_)) => Auth::None,
            (AuthConfig::ApplicationDefault, _) => Auth::ApplicationDefault,
        };
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(BigQuerySinkError::Config(format!(
                    "endpoint `{e}` is not an http(s) url"
                )));
            }
        }
        let api: Arc<dyn BigQueryApi> = match (self.write_method, &self.storage_endpoint) {
            (WriteMethod::InsertAll, None) => Arc::new(
                RestApi::new(&self.project, self.endpoint.as_deref(), auth)
                    .with_timeout(self.timeout),
            ),
            (WriteMethod::InsertAll, Some(_)) => {
                return Err(BigQuerySinkError::Config(
                    "`storage_endpoint` is for write_method = \"storage_write\"".into(),
                ))
            }
            (WriteMethod::StorageWrite, grpc) => {
                let emulator = match (auth, &self.endpoint, grpc) {
                    (Auth::None, Some(rest), Some(grpc)) => Some((grpc.clone(), rest.clone())),
                    (Auth::None, _, _) => {
                        return Err(BigQuerySinkError::Config(
                            "write_method = \"storage_write\" with auth = \"none\" needs the \
                             emulator's gRPC `storage_endpoint`"
                                .into(),
                        ))
                    }
                    (Auth::ApplicationDefault, None, None) => None,
                    (Auth::ApplicationDefault, _, _) => {
                        return Err(BigQuerySinkError::Config(
                            "write_method = \"storage_write\" talks to Google, or with auth = \
                             \"none\" to an emulator: `endpoint` and `storage_endpoint` are for \
                             the emulator"
                                .into(),
                        ))
                    }
                };
                Arc::new(StorageWriteApi::new(&self.project, emulator).with_timeout(self.timeout))
            }
        };
        Ok(BigQuerySink::new(api, self.table.clone())
            .with_format(self.format)
            .with_create_tables(self.create_tables)
            .with_batch(InsertBatch {
                max_rows: self.batch.max_rows,
                max_bytes: self.batch.max_bytes,
            })
            .with_retry(RetryPolicy {
                max_attempts: self.retry.max_attempts,
                initial_backoff: self.retry.initial_backoff,
                max_backoff: self.retry.max_backoff,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BigQuerySinkConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults() {
        let c = parse("project = \"p\"").unwrap();
        assert_eq!(c.format, RowFormat::Payload);
        assert_eq!(c.auth, AuthConfig::ApplicationDefault);
        assert!(!c.create_tables);
        assert_eq!(c.batch.max_rows, 500);
        assert_eq!(c.retry.max_backoff, Duration::from_secs(30));
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert!(c.sink().is_ok());
        let round: BigQuerySinkConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn refuses_unknown_keys_bad_values_and_no_auth_without_endpoint() {
        for bad in [
            "project = \"p\"\nnope = 1",
            "table = \"a.b\"",
            "project = \"p\"\nformat = \"csv\"",
            "project = \"p\"\nauth = \"magic\"",
            "project = \"p\"\ntable = \"${x\"",
            "project = \"p\"\ntable = \"no_dataset\"",
            "project = \"p\"\nbatch = { max_rows = 0 }",
            "project = \"p\"\nbatch = { rows = 1 }",
            "project = \"p\"\nretry = { max_attempts = 0 }",
            "project = \"p\"\ntimeout = \"0s\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let c = parse("project = \"p\"\nauth = \"none\"").unwrap();
        assert!(c.sink().unwrap_err().to_string().contains("endpoint"));
        let c = parse("project = \"p\"\nendpoint = \"127.0.0.1:9\"").unwrap();
        assert!(c.sink().is_err());
    }
}
