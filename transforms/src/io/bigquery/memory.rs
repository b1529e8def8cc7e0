//! An in-memory BigQuery: tables with schemas, `insertAll` that checks every row against its
//! table as BigQuery does and drops rows whose insert id the table has seen, and faults on
//! demand. Clones share state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use sluice_schemas::bigquery::{check_row, TableSchema};

use super::api::{ApiError, BigQueryApi, InsertRow, Row, RowFailure};
use super::table::TableRef;

#[derive(Default)]
struct State {
    tables: BTreeMap<(String, String), Table>,
    /// Calls of `insert_all` that fail before doing anything, with this error.
    faults: Vec<ApiError>,
    /// Calls of `insert_all` that insert, then fail as an unanswered request does.
    lost_answers: usize,
    /// Requests larger than this many rows are refused whole (`payloadTooLarge`).
    max_request_rows: Option<usize>,
    /// Rows refused on top of what [`check_row`] refuses, with the message.
    refuse: Option<Refusal>,
    insert_calls: usize,
    /// The insert ids of every `insert_all` call, in order, by table.
    requests: BTreeMap<(String, String), Vec<Vec<String>>>,
}

type Refusal = Arc<dyn Fn(&Row) -> Option<String> + Send + Sync>;

struct Table {
    schema: TableSchema,
    rows: Vec<Row>,
    /// The insert ids of the rows inserted (BigQuery remembers them about a minute; the
    /// double for its life).
    seen: BTreeSet<String>,
    /// Rows dropped as repeats of an insert id.
    repeats: usize,
}

/// A BigQuery double for tests: `insertAll` refuses a request with any invalid row
/// ([`check_row`]: unknown field, wrong type, null in an array), naming the invalid rows
/// `invalid` and the others `stopped`, as BigQuery does without `skipInvalidRows`. A row
/// whose insert id the table has seen is dropped, as BigQuery's best-effort dedup would.
///
/// ```
/// use sluice_schemas::bigquery::{Field, FieldType, TableSchema};
/// use sluice_transforms::io::bigquery::MemoryBigQuery;
/// let bq = MemoryBigQuery::new();
/// bq.add_table("ds", "t", TableSchema { fields: vec![Field::new("a", FieldType::Int64)] });
/// assert!(bq.rows("ds", "t").unwrap().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct MemoryBigQuery {
    state: Arc<Mutex<State>>,
}

impl MemoryBigQuery {
    /// An empty BigQuery.
    pub fn new() -> Self {
        MemoryBigQuery::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates (or replaces) a table.
    pub fn add_table(&self, dataset: &str, table: &str, schema: TableSchema) {
        self.state().tables.insert(
            (dataset.to_string(), table.to_string()),
            Table {
                schema,
                rows: Vec::new(),
                seen: BTreeSet::new(),
                repeats: 0,
            },
        );
    }

    /// The rows of a table, `None` when it does not exist.
    pub fn rows(&self, dataset: &str, table: &str) -> Option<Vec<Row>> {
        self.state()
            .tables
            .get(&(dataset.to_string(), table.to_string()))
            .map(|t| t.rows.clone())
    }

    /// The schema of a table, `None` when it does not exist.
    pub fn schema(&self, dataset: &str, table: &str) -> Option<TableSchema> {
        self.state()
            .tables
            .get(&(dataset.to_string(), table.to_string()))
            .map(|t| t.schema.clone())
    }

    /// Every table, as `dataset.table`.
    pub fn tables(&self) -> Vec<String> {
        self.state()
            .tables
            .keys()
            .map(|(d, t)| format!("{d}.{t}"))
            .collect()
    }

    /// The next `insert_all` calls fail with these errors, in order, before inserting.
    pub fn fail_inserts(&self, errors: impl IntoIterator<Item = ApiError>) {
        self.state().faults.extend(errors);
    }

    /// The next `n` `insert_all` calls insert their rows, then fail as a request whose
    /// answer never came (`Transient`): the sender cannot know the rows landed.
    pub fn lose_answers(&self, n: usize) {
        self.state().lost_answers += n;
    }

    /// The insert ids sent to a table, one list per `insert_all` call (faulty ones included).
    pub fn requests(&self, dataset: &str, table: &str) -> Vec<Vec<String>> {
        self.state()
            .requests
            .get(&(dataset.to_string(), table.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// How many rows a table dropped because their insert id was already inserted.
    pub fn repeated_rows(&self, dataset: &str, table: &str) -> usize {
        self.state()
            .tables
            .get(&(dataset.to_string(), table.to_string()))
            .map_or(0, |t| t.repeats)
    }

    /// Requests of more rows are refused whole with `payloadTooLarge`.
    pub fn with_max_request_rows(self, rows: usize) -> Self {
        self.state().max_request_rows = Some(rows);
        self
    }

    /// Refuses (`invalid`) the rows for which `f` gives a message, as the service may refuse
    /// rows that fit the table (a row too large, say).
    pub fn refuse_rows(&self, f: impl Fn(&Row) -> Option<String> + Send + Sync + 'static) {
        self.state().refuse = Some(Arc::new(f));
    }

    /// How many `insert_all` calls were made (faulty ones included).
    pub fn insert_calls(&self) -> usize {
        self.state().insert_calls
    }
}

#[async_trait]
impl BigQueryApi for MemoryBigQuery {
    async fn table_schema(&self, table: &TableRef) -> Result<Option<TableSchema>, ApiError> {
        Ok(self.schema(&table.dataset, &table.table))
    }

    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<(), ApiError> {
        let mut state = self.state();
        state
            .tables
            .entry((table.dataset.clone(), table.table.clone()))
            .or_insert_with(|| Table {
                schema: schema.clone(),
                rows: Vec::new(),
                seen: BTreeSet::new(),
                repeats: 0,
            });
        Ok(())
    }

    async fn insert_all(
        &self,
        table: &TableRef,
        rows: &[InsertRow],
    ) -> Result<Vec<RowFailure>, ApiError> {
        let mut state = self.state();
        state.insert_calls += 1;
        state
            .requests
            .entry((table.dataset.clone(), table.table.clone()))
            .or_default()
            .push(rows.iter().map(|r| r.insert_id.clone()).collect());
        if !state.faults.is_empty() {
            return Err(state.faults.remove(0));
        }
        if state.max_request_rows.is_some_and(|max| rows.len() > max) {
            return Err(ApiError::Invalid {
                reason: "payloadTooLarge".into(),
                message: format!("request of {} rows is too large", rows.len()),
            });
        }
        let refuse = state.refuse.clone();
        let Some(t) = state
            .tables
            .get_mut(&(table.dataset.clone(), table.table.clone()))
        else {
            return Err(ApiError::NotFound(format!("table {table}")));
        };
        let invalid: Vec<(usize, String)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let refused = match check_row(&r.json, &t.schema) {
                    Err(e) => Some(e.to_string()),
                    Ok(()) => refuse.as_ref().and_then(|f| f(&r.json)),
                };
                refused.map(|m| (i, m))
            })
            .collect();
        if invalid.is_empty() {
            for r in rows {
                if t.seen.insert(r.insert_id.clone()) {
                    t.rows.push(r.json.clone());
                } else {
                    t.repeats += 1;
                }
            }
            if state.lost_answers > 0 {
                state.lost_answers -= 1;
                return Err(ApiError::Transient(
                    "the request timed out (its rows were inserted)".into(),
                ));
            }
            return Ok(Vec::new());
        }
        Ok((0..rows.len())
            .map(|i| match invalid.iter().find(|(j, _)| *j == i) {
                Some((_, message)) => RowFailure {
                    index: i,
                    reason: "invalid".into(),
                    message: message.clone(),
                },
                None => RowFailure {
                    index: i,
                    reason: RowFailure::STOPPED.into(),
                    message: String::new(),
                },
            })
            .collect())
    }

    async fn check(&self) -> Result<(), ApiError> {
        Ok(())
    }
}
