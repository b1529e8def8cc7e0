//! An in-memory BigQuery: tables with schemas, `insertAll` that checks every row against its
//! table as BigQuery does, and faults on demand. Clones share state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use sluice_schemas::bigquery::{check_row, TableSchema};

use super::api::{ApiError, BigQueryApi, Row, RowFailure};
use super::table::TableRef;

#[derive(Default)]
struct State {
    tables: BTreeMap<(String, String), Table>,
    /// Calls of `insert_all` that fail before doing anything, with this error.
    faults: Vec<ApiError>,
    /// Requests larger than this many rows are refused whole (`payloadTooLarge`).
    max_request_rows: Option<usize>,
    /// Rows refused on top of what [`check_row`] refuses, with the message.
    refuse: Option<Refusal>,
    insert_calls: usize,
}

type Refusal = Arc<dyn Fn(&Row) -> Option<String> + Send + Sync>;

struct Table {
    schema: TableSchema,
    rows: Vec<Row>,
}

/// A BigQuery double for tests: `insertAll` refuses a request with any invalid row
/// ([`check_row`]: unknown field, wrong type, null in an array), naming the invalid rows
/// `invalid` and the others `stopped`, as BigQuery does without `skipInvalidRows`.
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
            });
        Ok(())
    }

    async fn insert_all(
        &self,
        table: &TableRef,
        rows: &[Row],
    ) -> Result<Vec<RowFailure>, ApiError> {
        let mut state = self.state();
        state.insert_calls += 1;
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
                let refused = match check_row(r, &t.schema) {
                    Err(e) => Some(e.to_string()),
                    Ok(()) => refuse.as_ref().and_then(|f| f(r)),
                };
                refused.map(|m| (i, m))
            })
            .collect();
        if invalid.is_empty() {
            t.rows.extend(rows.iter().cloned());
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
