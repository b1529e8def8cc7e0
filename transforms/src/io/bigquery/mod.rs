//! The BigQuery sink: each record becomes a row of the table its attributes name, inserted
//! with `tabledata.insertAll`; rows BigQuery refuses become dead letters, the rest lands.
//!
//! ```text
//! records ──render table template──▶ per table ──table schema (cached; created from the
//!   derived schema when `create_tables`)──▶ rows (payload | decoded | raw) ──batches of
//!   max_rows / max_bytes──▶ insertAll ──refused rows──▶ dead letters
//!                                      └─valid rows of a refused request──▶ resent
//! ```
//!
//! # The epoch contract
//! [`SinkWriter::write`] turns an epoch's records into `insertAll` requests and resolves when
//! every row is inserted or refused. Nothing is held between epochs (the epoch bounds are the
//! batching window; `flush` has nothing to do), so an epoch is acknowledged only after its
//! rows are in BigQuery or in the dead letters.
//!
//! # Per-row dead letters
//! A record becomes a dead letter (a [`Rejection`], `error_type` `WriteBigQuery`, with the
//! attributes `error_table` and `error_reason`) when:
//! - its table cannot be named (a template attribute is missing: `error_reason`
//!   `unresolvedTable`), or does not exist and is not created (`notFound`; `noSchema` when
//!   `create_tables` has no schema for it);
//! - it cannot be a row of its table (the payload is not a JSON object, a value has no
//!   column and the table no `additional_properties`, a required column is missing: checked
//!   before sending, as BigQuery checks rows: `invalid`);
//! - BigQuery refuses its row (`invalid`, or its own reason). `insertAll` inserts nothing of a
//!   request holding an invalid row: the sink resends the request without the refused rows,
//!   so the rest lands. A request refused as a whole (too large, invalid) is split in two and
//!   retried; a single row refused that way is a dead letter.
//!
//! # Failures of the whole write
//! Unavailable, rate-limited or unanswered requests (each call has a deadline,
//! [`DEFAULT_TIMEOUT`] unless the config's `timeout` says otherwise) are retried with
//! exponential backoff ([`RetryPolicy`]); after the last attempt, or on an error retrying cannot cure (credentials,
//! permissions), the write fails: the pipeline stops without acknowledging the epoch.
//!
//! # Insert ids
//! `insertAll` is at-least-once: an unanswered request may have inserted its rows, and a job
//! restarted after a crash re-reads what it had not acknowledged. Every row is therefore sent
//! with an `insertId` derived from the record alone ([`insert_id`]: its table, where its
//! source read it and the row itself), the same in every attempt, every split of a refused
//! request and every run, so that BigQuery's best-effort dedup (rows whose id it saw within
//! about a minute) drops the repeats. Best effort only: a repeat later than that, or one the
//! service misses, lands twice.
//!
//! # As the dead-letter sink
//! With `format = "raw"` and a fixed table (`errors.decoder`), every attribute of a dead letter
//! is a column of the error table ([`raw_table_schema`]) and the payload its `BYTES`.

mod api;
mod config;
mod memory;
mod storage_write;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sluice::io::{Sink, SinkContext, SinkWriter, WriteFuture};
use sluice::{BoxError, Epoch, Failure, Message, Rejection};
use sluice_schemas::bigquery::{
    check_row, decoded_row, decoded_table_schema, derive_table_schema, payload_row, raw_row,
    raw_table_schema, TableSchema,
};
use sluice_schemas::SchemaRegistry;

pub use api::{ApiError, Auth, BigQueryApi, InsertRow, RestApi, Row, RowFailure, DEFAULT_TIMEOUT};
pub use config::{AuthConfig, BigQuerySinkConfig, InsertBatchConfig, RetryConfig, WriteMethod};
pub use memory::MemoryBigQuery;
pub use storage_write::{encode_row, row_descriptor, StorageWriteApi};
pub use table::{TableRef, TableTemplate};

/// The `error_type` of the sink's dead letters (gcp-ingestion's).
pub const ERROR_TYPE: &str = "WriteBigQuery";

/// How long [`Sink::check`] waits for BigQuery.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors that fail a write as a whole (the pipeline stops without acknowledging).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BigQuerySinkError {
    /// A setting that cannot be used.
    #[error("bigquery sink config: {0}")]
    Config(String),
    /// BigQuery failed in a way retrying does not cure, or kept failing.
    #[error("bigquery table `{table}`: {error}")]
    Api {
        /// The table.
        table: String,
        /// The last error.
        error: ApiError,
    },
}

/// How a record becomes a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowFormat {
    /// The payload, a decoded JSON document, is the row ([`payload_row`]).
    #[default]
    Payload,
    /// The decoder's metadata from the attributes, the payload as bytes ([`decoded_row`]).
    Decoded,
    /// Every attribute a column, the payload as bytes ([`raw_row`]).
    Raw,
}

/// Rows per `insertAll` request and bytes of JSON rows per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertBatch {
    /// Rows per request.
    pub max_rows: usize,
    /// Bytes of JSON rows per request (a single larger row is sent alone).
    pub max_bytes: usize,
}

impl Default for InsertBatch {
    /// 500 rows, 8 MB.
    fn default() -> Self {
        InsertBatch {
            max_rows: 500,
            max_bytes: 8_000_000,
        }
    }
}

/// Retries of transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one request, the first included.
    pub max_attempts: usize,
    /// The first delay; each next one doubles.
    pub initial_backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 1 s doubling to 30 s (about 2 minutes in all).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: usize) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Writes messages as rows of BigQuery tables; see the module docs. Cheap to clone (clones
/// share the client and the cache of table schemas).
///
/// ```
/// use std::sync::Arc;
/// use sluice::{DeadLetter, MemorySink, MemorySource, Message, Pipeline};
/// use sluice_schemas::bigquery::{Field, FieldType, TableSchema};
/// use sluice_transforms::io::bigquery::{BigQuerySink, MemoryBigQuery, TableTemplate};
///
/// let bq = MemoryBigQuery::new();
/// bq.add_table("ds", "t", TableSchema { fields: vec![Field::new("n", FieldType::Int64)] });
/// let sink = BigQuerySink::new(Arc::new(bq.clone()), TableTemplate::parse("ds.t").unwrap());
/// let input = vec![Message::new(r#"{"n": 1}"#), Message::new(r#"{"n": "x"}"#)];
/// let dead = MemorySink::<DeadLetter>::new();
/// let d = dead.clone();
/// Pipeline::new("doc").run(move |p| {
///     let mut dead_letters = p.dead_letters();
///     p.read("in", MemorySource::from(input.clone()))
///         .write("out", sink.clone())
///         .failures_to(&mut dead_letters);
///     dead_letters.write("dead_letters", d.clone());
///     Ok(())
/// }).unwrap();
/// assert_eq!(bq.rows("ds", "t").unwrap().len(), 1);
/// let refused = &dead.records()[0];
/// assert_eq!(refused.error_type, "WriteBigQuery");
/// assert_eq!(refused.original.attribute("error_reason"), Some("invalid"));
/// ```
#[derive(Clone)]
pub struct BigQuerySink {
    inner: Arc<Inner>,
}

struct Inner {
    api: Arc<dyn BigQueryApi>,
    template: TableTemplate,
    format: RowFormat,
    create_tables: bool,
    registry: Option<Arc<SchemaRegistry>>,
    batch: InsertBatch,
    retry: RetryPolicy,
    error_attributes: bool,
    kind: String,
    schemas: Mutex<HashMap<TableRef, Arc<TableSchema>>>,
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        Inner {
            api: self.api.clone(),
            template: self.template.clone(),
            format: self.format,
            create_tables: self.create_tables,
            registry: self.registry.clone(),
            batch: self.batch,
            retry: self.retry,
            error_attributes: self.error_attributes,
            kind: self.kind.clone(),
            schemas: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for BigQuerySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQuerySink")
            .field("template", &self.inner.template)
            .field("format", &self.inner.format)
            .field("create_tables", &self.inner.create_tables)
            .finish_non_exhaustive()
    }
}

impl BigQuerySink {
    /// A sink on `api` writing to the tables of `template`: format `payload`, no table
    /// creation, [`InsertBatch::default`], [`RetryPolicy::default`].
    pub fn new(api: Arc<dyn BigQueryApi>, template: TableTemplate) -> Self {
        BigQuerySink {
            inner: Arc::new(Inner {
                api,
                template,
                format: RowFormat::Payload,
                create_tables: false,
                registry: None,
                batch: InsertBatch::default(),
                retry: RetryPolicy::default(),
                error_attributes: true,
                kind: "bigquery".to_string(),
                schemas: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// How records become rows.
    pub fn with_format(self, format: RowFormat) -> Self {
        self.edit(|i| i.format = format)
    }

    /// Create missing tables (see [`BigQuerySinkConfig::create_tables`]).
    pub fn with_create_tables(self, create: bool) -> Self {
        self.edit(|i| i.create_tables = create)
    }

    /// The registry whose schemas tables of the `payload` format are created from.
    pub fn with_registry(self, registry: Arc<SchemaRegistry>) -> Self {
        self.edit(|i| i.registry = Some(registry))
    }

    /// Request bounds; zero bounds are raised to 1.
    pub fn with_batch(self, batch: InsertBatch) -> Self {
        self.edit(|i| {
            i.batch = InsertBatch {
                max_rows: batch.max_rows.max(1),
                max_bytes: batch.max_bytes.max(1),
            }
        })
    }

    /// Retries of transient failures; at least one attempt.
    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        self.edit(|i| {
            i.retry = RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            }
        })
    }

    /// Whether refusals take gcp-ingestion's form (the default): `error_type`
    /// [`ERROR_TYPE`] and the attributes `error_table` and `error_reason` added to the record.
    /// `false` refuses records as every other sink does: untouched, the `error_type` being
    /// the write step's name, table and reason only in the error message.
    pub fn with_error_attributes(self, on: bool) -> Self {
        self.edit(|i| i.error_attributes = on)
    }

    /// The kind reported to the runner (`bigquery`).
    pub fn with_kind(self, kind: impl Into<String>) -> Self {
        let kind = kind.into();
        self.edit(|i| i.kind = kind)
    }

    /// The table template.
    pub fn template(&self) -> &TableTemplate {
        &self.inner.template
    }

    /// The row format.
    pub fn format(&self) -> RowFormat {
        self.inner.format
    }

    /// Whether missing tables are created.
    pub fn creates_tables(&self) -> bool {
        self.inner.create_tables
    }
}

/// The `insertId` of a record's row: 32 hex digits of a SHA-256 over the table, the record's
/// source position (without the Pub/Sub delivery attempt, which grows with each redelivery)
/// and the row's JSON. Deterministic, so a retried request, a split one and a re-run after a
/// crash send the same id for the same record; the position keeps two equal rows read from
/// different places (two identical lines of a file) apart.
///
/// ```
/// use sluice::{Message, SourcePosition};
/// use sluice_transforms::io::bigquery::{insert_id, TableRef};
/// let table = TableRef::parse("ds.t").unwrap();
/// let row = serde_json::json!({"n": 1}).as_object().unwrap().clone();
/// let at = |line| Message::new("").with_position(SourcePosition::Line { file: None, line });
/// assert_eq!(insert_id(&table, &at(1), &row), insert_id(&table, &at(1), &row));
/// assert_ne!(insert_id(&table, &at(1), &row), insert_id(&table, &at(2), &row));
/// assert_eq!(insert_id(&table, &at(1), &row).len(), 32);
/// ```
pub fn insert_id(table: &TableRef, message: &Message, row: &Row) -> String {
    insert_id_of_text(table, message, &serde_json::to_vec(row).unwrap_or_default())
}

/// [`insert_id`] of a row already serialized (the sink serializes each row once).
fn insert_id_of_text(table: &TableRef, message: &Message, row: &[u8]) -> String {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(table.to_string().as_bytes());
    if let Some(p) = &message.position {
        for (k, v) in p.to_attributes() {
            if k != "pubsub_delivery_attempt" {
                part(k.as_bytes());
                part(v.as_bytes());
            }
        }
    }
    part(row);
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A refusal: why, in BigQuery's words.
struct Refusal {
    table: String,
    reason: String,
    message: String,
}

impl Inner {
    fn reject(&self, mut message: Message, refusal: Refusal) -> Rejection<Message> {
        if self.error_attributes {
            message
                .attributes
                .insert("error_table".into(), refusal.table.clone());
            message
                .attributes
                .insert("error_reason".into(), refusal.reason.clone());
        }
        let mut failure = Failure::new(format!(
            "table `{}` refused the row ({}): {}",
            refusal.table, refusal.reason, refusal.message
        ))
        .with_exception_class(format!(
            "sluice_transforms::io::bigquery::RowRefused::{}",
            refusal.reason
        ));
        if self.error_attributes {
            failure = failure.with_error_type(ERROR_TYPE);
        }
        Rejection::new(message, failure)
    }

    fn fail(&self, table: &TableRef, error: ApiError) -> BoxError {
        Box::new(BigQuerySinkError::Api {
            table: table.to_string(),
            error,
        })
    }

    /// Calls `f` until it succeeds, fails for good, or the attempts are spent.
    async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 1;
        loop {
            match f().await {
                Err(ApiError::Transient(m)) if attempt < self.retry.max_attempts => {
                    tracing::warn!(
                        "bigquery: attempt {attempt} of {} failed, retrying: {m}",
                        self.retry.max_attempts
                    );
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(ApiError::Transient(m)) => {
                    return Err(ApiError::Transient(format!(
                        "{m} (after {attempt} attempts)"
                    )))
                }
                other => return other,
            }
        }
    }

    /// The schema of `table`, creating the table when told to; `Ok(Err)` refuses the
    /// table's records.
    async fn schema_for(
        &self,
        table: &TableRef,
        sample: &Message,
    ) -> Result<Result<Arc<TableSchema>, Refusal>, BoxError> {
        if let Some(s) = self
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            return Ok(Ok(s.clone()));
        }
        let found = self
            .retrying(|| self.api.table_schema(table))
            .await
            .map_err(|e| self.fail(table, e))?;
        let schema = match found {
            Some(s) => s,
            None if !self.create_tables => {
                return Ok(Err(Refusal {
                    table: table.to_string(),
                    reason: "notFound".into(),
                    message: "the table does not exist".into(),
                }))
            }
            None => {
                let derived = match self.format {
                    RowFormat::Raw => raw_table_schema(),
                    RowFormat::Decoded => decoded_table_schema(),
                    RowFormat::Payload => match self.payload_schema(sample) {
                        Ok(s) => s,
                        Err(message) => {
                            return Ok(Err(Refusal {
                                table: table.to_string(),
                                reason: "noSchema".into(),
                                message,
                            }))
                        }
                    },
                };
                self.retrying(|| self.api.create_table(table, &derived))
                    .await
                    .map_err(|e| self.fail(table, e))?;
                tracing::info!("bigquery: created table `{table}`");
                derived
            }
        };
        let schema = Arc::new(schema);
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.clone(), schema.clone());
        Ok(Ok(schema))
    }

    /// The table schema derived from the JSON schema of a record's document.
    fn payload_schema(&self, sample: &Message) -> Result<TableSchema, String> {
        let registry = self
            .registry
            .as_ref()
            .ok_or("the table does not exist and the sink has no schemas to create it from")?;
        let ns = sample.attribute("document_namespace").unwrap_or_default();
        let dt = sample.attribute("document_type").unwrap_or_default();
        let version = sample
            .attribute("document_version")
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or("the record has no integer `document_version`")?;
        let schema = registry
            .get(ns, dt, version)
            .ok_or_else(|| format!("no schema `{ns}/{dt}.{version}` to create the table from"))?;
        Ok(derive_table_schema(schema.as_json()))
    }

    /// The row of `message`, checked against the table as BigQuery checks it (so that a row
    /// the table cannot take is refused with a clear reason before any request, whatever
    /// the service would answer).
    fn row(&self, message: &Message, schema: &TableSchema) -> Result<Row, String> {
        let row = self.make_row(message, schema)?;
        check_row(&row, schema).map_err(|e| e.to_string())?;
        Ok(row)
    }

    fn make_row(&self, message: &Message, schema: &TableSchema) -> Result<Row, String> {
        match self.format {
            RowFormat::Payload => {
                let doc: Map<String, Value> = serde_json::from_slice(&message.payload)
                    .map_err(|e| format!("the payload is not a json object: {e}"))?;
                payload_row(&doc, schema).map_err(|e| e.to_string())
            }
            RowFormat::Raw => {
                raw_row(&message.attributes, &message.payload, schema).map_err(|e| e.to_string())
            }
            RowFormat::Decoded => {
                let members = crate::decode::nest_metadata(&message.attributes);
                let mut text = Vec::with_capacity(members.len() + 2);
                text.push(b'{');
                text.extend_from_slice(&members);
                text.push(b'}');
                let metadata: Map<String, Value> = serde_json::from_slice(&text)
                    .map_err(|e| format!("nesting the attributes: {e}"))?;
                let mut placed = BTreeMap::new();
                crate::decode::lift_metadata(&mut metadata.clone(), &mut placed);
                let others: BTreeMap<String, String> = message
                    .attributes
                    .iter()
                    .filter(|(k, _)| !placed.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                decoded_row(&metadata, &others, &message.payload, schema).map_err(|e| e.to_string())
            }
        }
    }

    async fn write(&self, records: Vec<Message>) -> Result<Vec<Rejection<Message>>, BoxError> {
        let mut rejections = Vec::new();
        let mut by_table: BTreeMap<TableRef, Vec<Message>> = BTreeMap::new();
        for m in records {
            match self.template.render(&m) {
                Ok(t) => by_table.entry(t).or_default().push(m),
                Err(message) => {
                    let refusal = Refusal {
                        table: self.template.to_string(),
                        reason: "unresolvedTable".into(),
                        message,
                    };
                    rejections.push(self.reject(m, refusal));
                }
            }
        }
        for (table, messages) in by_table {
            self.write_table(&table, messages, &mut rejections).await?;
        }
        Ok(rejections)
    }

    async fn write_table(
        &self,
        table: &TableRef,
        messages: Vec<Message>,
        rejections: &mut Vec<Rejection<Message>>,
    ) -> Result<(), BoxError> {
        let schema = match self.schema_for(table, &messages[0]).await? {
            Ok(s) => s,
            Err(refusal) => {
                for m in messages {
                    let r = Refusal {
                        table: refusal.table.clone(),
                        reason: refusal.reason.clone(),
                        message: refusal.message.clone(),
                    };
                    rejections.push(self.reject(m, r));
                }
                return Ok(());
            }
        };
        let mut batch: Vec<(Message, InsertRow)> = Vec::new();
        let mut bytes = 0;
        for m in messages {
            let json = match self.row(&m, &schema) {
                Ok(row) => row,
                Err(message) => {
                    let refusal = Refusal {
                        table: table.to_string(),
                        reason: "invalid".into(),
                        message,
                    };
                    rejections.push(self.reject(m, refusal));
                    continue;
                }
            };
            // a map of JSON values always serializes
            let text = serde_json::to_vec(&json).unwrap_or_default();
            let size = text.len();
            let row = InsertRow {
                insert_id: insert_id_of_text(table, &m, &text),
                json,
            };
            if !batch.is_empty()
                && (batch.len() >= self.batch.max_rows || bytes + size > self.batch.max_bytes)
            {
                self.insert(table, std::mem::take(&mut batch), rejections)
                    .await?;
                bytes = 0;
            }
            bytes += size;
            batch.push((m, row));
        }
        if !batch.is_empty() {
            self.insert(table, batch, rejections).await?;
        }
        Ok(())
    }

    /// Inserts `rows`: each is inserted or refused; resends what a refusal stopped and splits
    /// requests refused whole.
    async fn insert(
        &self,
        table: &TableRef,
        rows: Vec<(Message, InsertRow)>,
        rejections: &mut Vec<Rejection<Message>>,
    ) -> Result<(), BoxError> {
        let mut pending = vec![rows];
        while let Some(mut chunk) = pending.pop() {
            if chunk.is_empty() {
                continue;
            }
            let mut stopped_only = 0;
            loop {
                let request: Vec<InsertRow> = chunk.iter().map(|(_, r)| r.clone()).collect();
                let result = self.retrying(|| self.api.insert_all(table, &request)).await;
                match result {
                    Ok(failures) if failures.is_empty() => break,
                    Ok(failures) => {
                        let refused: HashMap<usize, &RowFailure> = failures
                            .iter()
                            .filter(|f| f.reason != RowFailure::STOPPED && f.index < chunk.len())
                            .map(|f| (f.index, f))
                            .collect();
                        if refused.is_empty() {
                            // every row `stopped`, none refused: a service fault; retry it as one
                            stopped_only += 1;
                            if stopped_only >= self.retry.max_attempts {
                                return Err(self.fail(
                                    table,
                                    ApiError::Transient(
                                        "insertAll stopped every row without refusing one".into(),
                                    ),
                                ));
                            }
                            tokio::time::sleep(self.retry.delay(stopped_only)).await;
                            continue;
                        }
                        let mut kept = Vec::with_capacity(chunk.len() - refused.len());
                        for (i, (m, row)) in chunk.into_iter().enumerate() {
                            match refused.get(&i) {
                                Some(f) => rejections.push(self.reject(
                                    m,
                                    Refusal {
                                        table: table.to_string(),
                                        reason: f.reason.clone(),
                                        message: f.message.clone(),
                                    },
                                )),
                                None => kept.push((m, row)),
                            }
                        }
                        chunk = kept;
                        if chunk.is_empty() {
                            break;
                        }
                    }
                    Err(ApiError::Invalid { .. }) if chunk.len() > 1 => {
                        let second = chunk.split_off(chunk.len() / 2);
                        pending.push(second);
                        pending.push(chunk);
                        break;
                    }
                    Err(ApiError::Invalid { reason, message }) => {
                        let (m, _) = chunk.pop().expect("one row");
                        rejections.push(self.reject(
                            m,
                            Refusal {
                                table: table.to_string(),
                                reason,
                                message,
                            },
                        ));
                        break;
                    }
                    Err(ApiError::NotFound(message)) => {
                        // dropped since its schema was read
                        self.schemas
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(table);
                        for (m, _) in chunk.drain(..) {
                            rejections.push(self.reject(
                                m,
                                Refusal {
                                    table: table.to_string(),
                                    reason: "notFound".into(),
                                    message: message.clone(),
                                },
                            ));
                        }
                        break;
                    }
                    Err(e) => return Err(self.fail(table, e)),
                }
            }
        }
        Ok(())
    }
}

/// One worker's writer: each epoch's records are written by their own future.
struct BigQueryWriter {
    inner: Arc<Inner>,
}

impl SinkWriter<Message> for BigQueryWriter {
    fn write(&mut self, _epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.write(records).await })
    }
}

impl Sink for BigQuerySink {
    type Input = Message;

    fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// Rows BigQuery refuses, and records without a table, are refused, not the write.
    fn can_reject(&self) -> bool {
        true
    }

    /// Reaches BigQuery with the sink's credentials (lists a dataset of the project); a fixed
    /// table must exist unless the sink creates tables.
    fn check(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        let inner = self.inner.clone();
        let checked = ctx.runtime().block_on(async move {
            tokio::time::timeout(CHECK_TIMEOUT, async {
                inner.api.check().await?;
                if !inner.template.has_placeholders() && !inner.create_tables {
                    let table = inner
                        .template
                        .render(&Message::new(""))
                        .map_err(ApiError::Fatal)?;
                    if inner.api.table_schema(&table).await?.is_none() {
                        return Err(ApiError::NotFound(format!(
                            "table `{table}` does not exist (set create_tables = true to create it)"
                        )));
                    }
                }
                Ok(())
            })
            .await
        });
        match checked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot use BigQuery: {e}").into()),
            Err(_) => Err(format!(
                "BigQuery does not answer within {}s",
                CHECK_TIMEOUT.as_secs()
            )
            .into()),
        }
    }

    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(BigQueryWriter {
            inner: self.inner.clone(),
        }))
    }
}

#[cfg(test)]
mod tests;
