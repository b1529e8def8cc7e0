//! What the sink needs of BigQuery, as a small trait: the REST client (`tabledata.insertAll`
//! through `gcp-bigquery-client`) and the memory double implement it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sluice_schemas::bigquery::TableSchema;

use super::table::TableRef;

/// A JSON row as `insertAll` takes it.
pub type Row = Map<String, Value>;

/// A row and the `insertId` it is sent with. BigQuery drops a row whose insert id it has
/// seen in the same table within about a minute (best effort), so a request resent after an
/// unanswered attempt, or a record re-read after a crash, does not usually land twice.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertRow {
    /// Derived from the record alone (see the module docs), so every attempt sends the same.
    pub insert_id: String,
    /// The row.
    pub json: Row,
}

/// Why a request failed as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The table (or its dataset) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was refused as it is (invalid, too large): a smaller one may pass.
    #[error("{reason}: {message}")]
    Invalid {
        /// BigQuery's reason (`invalid`, `payloadTooLarge`, ...).
        reason: String,
        /// Its message.
        message: String,
    },
    /// Worth retrying: the service is unavailable, rate limited, or did not answer.
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help: credentials, permissions, a bad endpoint.
    #[error("{0}")]
    Fatal(String),
}

/// One row `insertAll` did not insert: its index in the request, BigQuery's reason and
/// message. A row whose reason is `stopped` was valid and was not inserted only because
/// another row of its request was not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowFailure {
    /// Index of the row in the request.
    pub index: usize,
    /// BigQuery's reason (`invalid`, `stopped`, ...).
    pub reason: String,
    /// BigQuery's message.
    pub message: String,
}

impl RowFailure {
    /// The reason BigQuery gives a valid row that was not inserted because of another.
    pub const STOPPED: &'static str = "stopped";
}

/// The BigQuery calls of the sink. `insert_all` inserts rows only when all are valid (no
/// `skipInvalidRows`): the sink resends the valid ones itself, so that each row is either
/// inserted or refused with its reason.
#[async_trait]
pub trait BigQueryApi: Send + Sync + 'static {
    /// The table's schema; `None` when the table does not exist.
    async fn table_schema(&self, table: &TableRef) -> Result<Option<TableSchema>, ApiError>;
    /// Creates the table (and its dataset when missing); a table that already exists is no
    /// error.
    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<(), ApiError>;
    /// `tabledata.insertAll` of the rows with their insert ids: the rows not inserted (none
    /// when all were).
    async fn insert_all(
        &self,
        table: &TableRef,
        rows: &[InsertRow],
    ) -> Result<Vec<RowFailure>, ApiError>;
    /// Verifies credentials and reachability without writing.
    async fn check(&self) -> Result<(), ApiError>;
}

/// How long one call to BigQuery may take (a REST request; a Storage Write stream lookup, or
/// an append and its answer) before it counts as unanswered: 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `call`'s result, or a transient error naming `what` when `call` has not finished within
/// `limit`: a service that stops answering must be an error the sink retries, never a write
/// that waits forever. (An unanswered append or insert may still land: the sink is
/// at-least-once.)
pub(crate) async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Transient(format!(
            "{} got no answer within {limit:?}",
            what()
        ))),
    }
}

/// The dataset [`BigQueryApi::check`] asks for.
const CHECK_DATASET: &str = "sluice_connectivity_check";

/// How the REST client authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
    /// credentials, the metadata server).
    ApplicationDefault,
    /// No credentials: an emulator.
    None,
}

/// A token for emulators, which check none.
#[derive(Clone)]
struct NoAuth;

#[async_trait]
impl gcp_bigquery_client::auth::Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, gcp_bigquery_client::error::BQError> {
        Ok("emulator".to_string())
    }
}

/// BigQuery's REST API through `gcp-bigquery-client` (the client is built on first use, on
/// the runtime of the call). Every request has a deadline ([`RestApi::with_timeout`]).
pub struct RestApi {
    project: String,
    base_url: Option<String>,
    auth: Auth,
    timeout: Duration,
    client: tokio::sync::OnceCell<gcp_bigquery_client::Client>,
}

impl RestApi {
    /// A client of `project`; `endpoint` replaces `https://bigquery.googleapis.com` (an
    /// emulator: `http://127.0.0.1:9250`).
    pub fn new(project: impl Into<String>, endpoint: Option<&str>, auth: Auth) -> Self {
        RestApi {
            project: project.into(),
            base_url: endpoint.map(|e| format!("{}/bigquery/v2", e.trim_end_matches('/'))),
            auth,
            timeout: DEFAULT_TIMEOUT,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// How long one request may take before it is a transient error ([`DEFAULT_TIMEOUT`]
    /// unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn client(&self) -> Result<&gcp_bigquery_client::Client, ApiError> {
        self.client
            .get_or_try_init(|| async {
                let mut builder = gcp_bigquery_client::client_builder::ClientBuilder::new();
                if let Some(url) = &self.base_url {
                    builder.with_v2_base_url(url.clone());
                }
                let built = match self.auth {
                    Auth::None => builder.build_from_authenticator(Arc::new(NoAuth)).await,
                    Auth::ApplicationDefault => {
                        builder.build_from_application_default_credentials().await
                    }
                };
                built.map_err(|e| ApiError::Fatal(format!("cannot build a BigQuery client: {e}")))
            })
            .await
    }

    fn project<'a>(&'a self, table: &'a TableRef) -> &'a str {
        table.project.as_deref().unwrap_or(&self.project)
    }
}

/// Whether the answer is 409: it already exists.
fn is_conflict(e: &gcp_bigquery_client::error::BQError) -> bool {
    matches!(e, gcp_bigquery_client::error::BQError::ResponseError { error } if error.error.code == 409)
}

/// Sorts the client's errors into what the sink does with them.
fn classify(e: gcp_bigquery_client::error::BQError) -> ApiError {
    use gcp_bigquery_client::error::BQError;
    match e {
        BQError::ResponseError { error } => {
            let e = error.error;
            let reason = e
                .errors
                .first()
                .and_then(|m| m.get("reason"))
                .cloned()
                .unwrap_or_default();
            let message = format!(
                "{} ({}{})",
                e.message,
                e.code,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(", {reason}")
                }
            );
            match (e.code, reason.as_str()) {
                (404, _) => ApiError::NotFound(message),
                (400, _) | (413, _) => ApiError::Invalid {
                    reason: if reason.is_empty() {
                        "invalid".into()
                    } else {
                        reason
                    },
                    message: e.message,
                },
                (403, "rateLimitExceeded" | "quotaExceeded" | "backendError") => {
                    ApiError::Transient(message)
                }
                (408 | 429 | 500 | 502 | 503 | 504, _) => ApiError::Transient(message),
                _ => ApiError::Fatal(message),
            }
        }
        // connection refused, timeouts, an error answer that is not JSON
        BQError::RequestError(e) => ApiError::Transient(format!("request failed: {e}")),
        other => ApiError::Fatal(other.to_string()),
    }
}

impl RestApi {
    async fn get_schema(&self, table: &TableRef) -> Result<Option<TableSchema>, ApiError> {
        let client = self.client().await?;
        match client
            .table()
            .get(self.project(table), &table.dataset, &table.table, None)
            .await
        {
            Ok(t) => {
                let json = serde_json::to_value(&t.schema)
                    .map_err(|e| ApiError::Fatal(format!("table `{table}`: {e}")))?;
                TableSchema::from_json(&json)
                    .map(Some)
                    .map_err(|e| ApiError::Fatal(format!("table `{table}`: {e}")))
            }
            Err(e) => match classify(e) {
                ApiError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn create(&self, table: &TableRef, schema: &TableSchema) -> Result<(), ApiError> {
        use gcp_bigquery_client::model::{dataset::Dataset, table::Table};
        let client = self.client().await?;
        let project = self.project(table);
        let fields: gcp_bigquery_client::model::table_schema::TableSchema =
            serde_json::from_value(schema.to_json())
                .map_err(|e| ApiError::Fatal(format!("table `{table}`: {e}")))?;
        match client
            .dataset()
            .create(Dataset::new(project, &table.dataset))
            .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(classify(e)),
        }
        match client
            .table()
            .create(Table::new(project, &table.dataset, &table.table, fields))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn insert(
        &self,
        table: &TableRef,
        rows: &[InsertRow],
    ) -> Result<Vec<RowFailure>, ApiError> {
        use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
        let client = self.client().await?;
        let mut request = TableDataInsertAllRequest::new();
        for row in rows {
            request
                .add_row(Some(row.insert_id.clone()), &row.json)
                .map_err(|e| ApiError::Fatal(e.to_string()))?;
        }
        let response = client
            .tabledata()
            .insert_all(self.project(table), &table.dataset, &table.table, request)
            .await
            .map_err(classify)?;
        let mut failures = Vec::new();
        for e in response.insert_errors.unwrap_or_default() {
            let Some(index) = e.index.and_then(|i| usize::try_from(i).ok()) else {
                return Err(ApiError::Transient(
                    "insertAll reported a row error without a row index".into(),
                ));
            };
            let errors = e.errors.unwrap_or_default();
            // a row refused for its own sake names that reason; `stopped` only when it was not
            let own = errors
                .iter()
                .find(|p| p.reason.as_deref() != Some(RowFailure::STOPPED))
                .or(errors.first());
            failures.push(RowFailure {
                index,
                reason: own
                    .and_then(|p| p.reason.clone())
                    .unwrap_or_else(|| "invalid".into()),
                message: own
                    .map(|p| {
                        let mut m = p.message.clone().unwrap_or_default();
                        if let Some(l) = p.location.as_deref().filter(|l| !l.is_empty()) {
                            m = format!("{l}: {m}");
                        }
                        m
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(failures)
    }

    async fn probe(&self) -> Result<(), ApiError> {
        // asks for a dataset that should not exist: `not found` proves the endpoint answers
        // and takes the credentials, without listing anything (the emulator's dataset list
        // does not decode into the client's model)
        let client = self.client().await?;
        match client.dataset().get(&self.project, CHECK_DATASET).await {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                ApiError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[async_trait]
impl BigQueryApi for RestApi {
    async fn table_schema(&self, table: &TableRef) -> Result<Option<TableSchema>, ApiError> {
        let what = || format!("the lookup of table `{table}`");
        within(self.timeout, what, self.get_schema(table)).await
    }

    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<(), ApiError> {
        let what = || format!("the creation of table `{table}`");
        within(self.timeout, what, self.create(table, schema)).await
    }

    async fn insert_all(
        &self,
        table: &TableRef,
        rows: &[InsertRow],
    ) -> Result<Vec<RowFailure>, ApiError> {
        let what = || format!("insertAll of {} rows into `{table}`", rows.len());
        within(self.timeout, what, self.insert(table, rows)).await
    }

    async fn check(&self) -> Result<(), ApiError> {
        let what = || "the connectivity check".to_string();
        within(self.timeout, what, self.probe()).await
    }
}
