//! The Storage Write API as the sink's write method (`write_method = "storage_write"`),
//! through `gcloud-bigquery`'s default-stream writer: each request's rows are encoded as
//! protocol buffers whose descriptor is built at run time from the table's schema (nested
//! `RECORD`s as nested messages, `REPEATED` as repeated fields), so derived tables of any
//! shape can be written without generated code.
//!
//! The rejection contract is `insertAll`'s: BigQuery appends nothing of a request with an
//! invalid row and names the invalid rows (`row_errors`); the sink resends the others. Tables
//! are read, created and checked through the REST API ([`RestApi`]). The default stream is
//! at-least-once and has no insert ids: a request retried after an unanswered attempt may land
//! twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};
use serde_json::Value;
use sluice_schemas::bigquery::{Field, FieldType, Mode, TableSchema};

use super::api::{
    within, ApiError, Auth, BigQueryApi, InsertRow, RestApi, RowFailure, DEFAULT_TIMEOUT,
};
use super::table::TableRef;

/// The descriptor of rows of `schema`: a message `Row` with one field per column, numbered
/// from 1 in column order; each `RECORD` a nested message type declared inside its parent.
///
/// ```
/// use sluice_schemas::bigquery::{Field, FieldType, Mode, TableSchema};
/// use sluice_transforms::io::bigquery::row_descriptor;
/// let schema = TableSchema { fields: vec![
///     Field::new("n", FieldType::Int64),
///     Field::record("r", vec![Field::new("s", FieldType::String)]).with_mode(Mode::Repeated),
/// ]};
/// let d = row_descriptor(&schema);
/// assert_eq!(d.field[1].type_name(), ".Row.R2");
/// assert_eq!(d.nested_type[0].field[0].name(), "s");
/// ```
pub fn row_descriptor(schema: &TableSchema) -> DescriptorProto {
    message("Row", ".Row", &schema.fields)
}

fn message(name: &str, path: &str, fields: &[Field]) -> DescriptorProto {
    let mut d = DescriptorProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    for (i, f) in fields.iter().enumerate() {
        let number = i as i32 + 1;
        let mut fd = FieldDescriptorProto {
            name: Some(f.name.clone()),
            number: Some(number),
            ..Default::default()
        };
        fd.set_label(if f.mode == Mode::Repeated {
            Label::Repeated
        } else {
            Label::Optional
        });
        let kind = match f.field_type {
            FieldType::Int64 | FieldType::Timestamp => Type::Int64,
            FieldType::Float64 => Type::Double,
            FieldType::Bool => Type::Bool,
            FieldType::Bytes => Type::Bytes,
            FieldType::Date => Type::Int32,
            FieldType::Record => {
                let nested = format!("R{number}");
                fd.type_name = Some(format!("{path}.{nested}"));
                d.nested_type
                    .push(message(&nested, &format!("{path}.{nested}"), &f.fields));
                Type::Message
            }
            // STRING, JSON, and types passed through as text (NUMERIC, DATETIME, ...)
            _ => Type::String,
        };
        fd.set_type(kind);
        d.field.push(fd);
    }
    d
}

/// The protocol-buffer encoding of `row` as a message of [`row_descriptor`]`(schema)`; an
/// error names the first value that does not fit its column.
///
/// ```
/// use sluice_schemas::bigquery::{Field, FieldType, TableSchema};
/// use sluice_transforms::io::bigquery::encode_row;
/// let schema = TableSchema { fields: vec![Field::new("n", FieldType::Int64)] };
/// let row = serde_json::json!({"n": 150}).as_object().unwrap().clone();
/// assert_eq!(encode_row(&row, &schema).unwrap(), [0x08, 0x96, 0x01]);
/// let bad = serde_json::json!({"m": 1}).as_object().unwrap().clone();
/// assert!(encode_row(&bad, &schema).is_err());
/// ```
pub fn encode_row(
    row: &serde_json::Map<String, Value>,
    schema: &TableSchema,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_message(row, &schema.fields, "", &mut out)?;
    Ok(out)
}

fn encode_message(
    row: &serde_json::Map<String, Value>,
    fields: &[Field],
    at: &str,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if let Some(k) = row.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
        return Err(format!("`{at}{k}`: no such column"));
    }
    for (i, f) in fields.iter().enumerate() {
        let number = i as u64 + 1;
        let path = format!("{at}{}", f.name);
        match row.get(&f.name) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if f.mode == Mode::Repeated => {
                for item in items {
                    if item.is_null() {
                        return Err(format!("`{path}`: null in an array"));
                    }
                    encode_value(item, f, number, &path, out)?;
                }
            }
            Some(_) if f.mode == Mode::Repeated => {
                return Err(format!("`{path}`: not an array"));
            }
            Some(v) => encode_value(v, f, number, &path, out)?,
        }
    }
    Ok(())
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn key(number: u64, wire: u64, out: &mut Vec<u8>) {
    varint((number << 3) | wire, out);
}

fn delimited(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    key(number, 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn encode_value(
    v: &Value,
    f: &Field,
    number: u64,
    path: &str,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let wrong = || format!("`{path}`: {v} is not a {}", f.field_type.as_str());
    match f.field_type {
        FieldType::Int64 => {
            let i = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(wrong)?;
            key(number, 0, out);
            varint(i as u64, out);
        }
        FieldType::Float64 => {
            let x = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(wrong)?;
            key(number, 1, out);
            out.extend_from_slice(&x.to_le_bytes());
        }
        FieldType::Bool => {
            let b = match v {
                Value::Bool(b) => Some(*b),
                Value::String(s) if s == "true" || s == "false" => Some(s == "true"),
                _ => None,
            }
            .ok_or_else(wrong)?;
            key(number, 0, out);
            varint(u64::from(b), out);
        }
        FieldType::Timestamp => {
            let micros = v.as_str().and_then(timestamp_micros).ok_or_else(wrong)?;
            key(number, 0, out);
            varint(micros as u64, out);
        }
        FieldType::Date => {
            let days = v
                .as_str()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .map(|d| (d - chrono::NaiveDate::default()).num_days())
                .ok_or_else(wrong)?;
            key(number, 0, out);
            // an int32 field: negative values are sign-extended to 64 bits
            varint(days as u64, out);
        }
        FieldType::Bytes => {
            let bytes = v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(wrong)?;
            delimited(number, &bytes, out);
        }
        FieldType::Record => {
            let o = v.as_object().ok_or_else(wrong)?;
            let mut nested = Vec::new();
            encode_message(o, &f.fields, &format!("{path}."), &mut nested)?;
            delimited(number, &nested, out);
        }
        // text: a string as it is; a JSON column, or a type passed through, takes any
        // scalar as its text
        FieldType::String => delimited(number, v.as_str().ok_or_else(wrong)?.as_bytes(), out),
        _ => match v {
            Value::String(s) => delimited(number, s.as_bytes(), out),
            other => delimited(number, other.to_string().as_bytes(), out),
        },
    }
    Ok(())
}

/// Microseconds since the epoch of an RFC 3339 timestamp, or of BigQuery's
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
fn timestamp_micros(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let trimmed = s.trim_end_matches(" UTC").trim_end_matches('Z');
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(trimmed, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// BigQuery through the Storage Write API (rows) and the REST API (tables).
///
/// Every call has a deadline ([`StorageWriteApi::with_timeout`]): the stream lookup, and the
/// append with its answer, each count as unanswered (a transient error, retried by the sink)
/// when they take longer, so a server that stops answering fails the write instead of holding
/// it forever. The gRPC client is built per tokio runtime: its channel lives on the runtime it
/// was built on, and a pipeline run that ends takes its runtime with it.
pub struct StorageWriteApi {
    rest: RestApi,
    project: String,
    /// The emulator's gRPC `host:port` and REST root; `None` for Google.
    emulator: Option<(String, String)>,
    timeout: Duration,
    /// The client and the runtime it was built on.
    client: Mutex<Option<(tokio::runtime::Id, Arc<gcloud_bigquery::client::Client>)>>,
    /// The schemas of the tables written, as read or created (the descriptor is built from
    /// them).
    schemas: Mutex<HashMap<TableRef, Arc<TableSchema>>>,
}

impl StorageWriteApi {
    /// A client of `project`. With `emulator` (`Some((grpc "host:port", REST root))`) it
    /// talks to an emulator without credentials; otherwise to Google with application
    /// default credentials.
    pub fn new(project: impl Into<String>, emulator: Option<(String, String)>) -> Self {
        let project = project.into();
        let rest = match &emulator {
            Some((_, rest)) => RestApi::new(&project, Some(rest), Auth::None),
            None => RestApi::new(&project, None, Auth::ApplicationDefault),
        };
        StorageWriteApi {
            rest,
            project,
            emulator,
            timeout: DEFAULT_TIMEOUT,
            client: Mutex::new(None),
            schemas: Mutex::new(HashMap::new()),
        }
    }

    /// How long one call may take before it is a transient error ([`DEFAULT_TIMEOUT`] unless
    /// set): building the client (connecting), a stream lookup, an append and its answer, and
    /// each REST call for tables.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.rest = self.rest.with_timeout(timeout);
        self
    }

    /// The client of the current runtime, built (connected) if it has none.
    async fn client(&self) -> Result<Arc<gcloud_bigquery::client::Client>, ApiError> {
        use gcloud_bigquery::client::{ChannelConfig, Client, ClientConfig, StreamingWriteConfig};
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ApiError::Fatal("the Storage Write API needs a tokio runtime".into()))?
            .id();
        if let Some((id, client)) = &*self.client.lock().unwrap_or_else(|p| p.into_inner()) {
            if *id == runtime {
                return Ok(client.clone());
            }
        }
        let channel = || {
            ChannelConfig::default()
                .with_num_channels(1)
                .with_connect_timeout(self.timeout)
        };
        let build = async {
            let config = match &self.emulator {
                Some((grpc, rest)) => ClientConfig::new_with_emulator(grpc, rest.clone()),
                None => {
                    ClientConfig::new_with_auth()
                        .await
                        .map_err(|e| {
                            ApiError::Fatal(format!("no application default credentials: {e}"))
                        })?
                        .0
                }
            }
            .with_streaming_read_config(channel())
            .with_streaming_write_config(
                StreamingWriteConfig::default().with_channel_config(channel()),
            );
            Client::new(config).await.map_err(|e| {
                ApiError::Transient(format!("cannot connect to the BigQuery Storage API: {e}"))
            })
        };
        let what = || "connecting to the BigQuery Storage API".to_string();
        let client = Arc::new(within(self.timeout, what, build).await?);
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some((runtime, client.clone()));
        Ok(client)
    }

    fn remember(&self, table: &TableRef, schema: &TableSchema) {
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.clone(), Arc::new(schema.clone()));
    }

    async fn schema(&self, table: &TableRef) -> Result<Arc<TableSchema>, ApiError> {
        let known = self
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
            .cloned();
        match known {
            Some(s) => Ok(s),
            None => match self.table_schema(table).await? {
                Some(s) => Ok(Arc::new(s)),
                None => Err(ApiError::NotFound(format!("table `{table}`"))),
            },
        }
    }
}

/// Sorts a gRPC status into what the sink does with it.
fn classify(status: &tonic::Status) -> ApiError {
    use tonic::Code;
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::NotFound => ApiError::NotFound(message),
        Code::InvalidArgument | Code::OutOfRange => ApiError::Invalid {
            reason: "invalid".into(),
            message: status.message().to_string(),
        },
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => ApiError::Transient(message),
        _ => ApiError::Fatal(message),
    }
}

#[async_trait]
impl BigQueryApi for StorageWriteApi {
    async fn table_schema(&self, table: &TableRef) -> Result<Option<TableSchema>, ApiError> {
        let found = self.rest.table_schema(table).await?;
        if let Some(s) = &found {
            self.remember(table, s);
        }
        Ok(found)
    }

    async fn create_table(&self, table: &TableRef, schema: &TableSchema) -> Result<(), ApiError> {
        self.rest.create_table(table, schema).await?;
        // an existing table keeps its own schema: read it back
        self.table_schema(table).await.map(|_| ())
    }

    async fn insert_all(
        &self,
        table: &TableRef,
        rows: &[InsertRow],
    ) -> Result<Vec<RowFailure>, ApiError> {
        use futures::StreamExt;
        use gcloud_bigquery::storage_write::AppendRowsRequestBuilder;
        let schema = self.schema(table).await?;
        // rows that cannot be encoded are refused before sending, the others `stopped`
        let mut encoded = Vec::with_capacity(rows.len());
        let mut refused = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            match encode_row(&r.json, &schema) {
                Ok(bytes) => encoded.push(bytes),
                Err(message) => refused.push(RowFailure {
                    index: i,
                    reason: "invalid".into(),
                    message,
                }),
            }
        }
        if !refused.is_empty() {
            return Ok(with_stopped(refused, rows.len()));
        }
        let client = self.client().await?;
        let name = format!(
            "projects/{}/datasets/{}/tables/{}",
            table.project.as_deref().unwrap_or(&self.project),
            table.dataset,
            table.table
        );
        let writer = client.default_storage_writer();
        let what = || format!("the write stream lookup of `{table}`");
        let stream = within(self.timeout, what, async {
            writer
                .create_write_stream(&name)
                .await
                .map_err(|s| classify(&s))
        })
        .await?;
        let request = AppendRowsRequestBuilder::new(row_descriptor(&schema), encoded);
        // the append and its answer under one deadline: the request stream ends after this
        // one request, so the server answers it and closes
        let what = || format!("the append of {} rows to `{table}`", rows.len());
        let answer = within(self.timeout, what, async {
            let mut responses = stream
                .append_rows(vec![request])
                .await
                .map_err(|s| classify(&s))?;
            match responses.next().await {
                Some(answer) => answer.map_err(|s| classify(&s)),
                None => Err(ApiError::Transient(
                    "the append stream closed without an answer".into(),
                )),
            }
        })
        .await?;
        let failures: Vec<RowFailure> = answer
            .row_errors
            .iter()
            .filter_map(|e| {
                Some(RowFailure {
                    index: usize::try_from(e.index).ok().filter(|i| *i < rows.len())?,
                    reason: "invalid".into(),
                    message: e.message.clone(),
                })
            })
            .collect();
        use gcloud_googleapis::cloud::bigquery::storage::v1::append_rows_response::Response;
        match answer.response {
            Some(Response::Error(status)) if failures.is_empty() => Err(classify(
                &tonic::Status::new(tonic::Code::from(status.code), status.message),
            )),
            Some(Response::Error(_)) => Ok(with_stopped(failures, rows.len())),
            _ if failures.is_empty() => Ok(Vec::new()),
            // rows named but the request not refused: BigQuery appended nothing of it
            _ => Ok(with_stopped(failures, rows.len())),
        }
    }

    async fn check(&self) -> Result<(), ApiError> {
        self.rest.check().await?;
        self.client().await.map(|_| ())
    }
}

/// `failures` plus a `stopped` failure for every other row of a request of `len` rows.
fn with_stopped(failures: Vec<RowFailure>, len: usize) -> Vec<RowFailure> {
    let named: std::collections::BTreeSet<usize> = failures.iter().map(|f| f.index).collect();
    let mut all = failures;
    all.extend(
        (0..len)
            .filter(|i| !named.contains(i))
            .map(|index| RowFailure {
                index,
                reason: RowFailure::STOPPED.into(),
                message: String::new(),
            }),
    );
    all.sort_by_key(|f| f.index);
    all
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_schemas::bigquery::{Field, FieldType, Mode, TableSchema};

    use super::*;

    fn row(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn table(fields: Vec<Field>) -> TableSchema {
        TableSchema { fields }
    }

    #[test]
    fn scalars_encode_as_their_wire_types() {
        let t = table(vec![
            Field::new("i", FieldType::Int64),
            Field::new("f", FieldType::Float64),
            Field::new("b", FieldType::Bool),
            Field::new("s", FieldType::String),
            Field::new("y", FieldType::Bytes),
            Field::new("d", FieldType::Date),
            Field::new("t", FieldType::Timestamp),
            Field::new("j", FieldType::Json),
        ]);
        let bytes = encode_row(
            &row(json!({
                "i": -1, "f": 0.5, "b": true, "s": "hé", "y": "/wA=",
                "d": "1969-12-31", "t": "1970-01-01T00:00:01.5+00:00", "j": {"k": 1}
            })),
            &t,
        )
        .unwrap();
        let mut expected = vec![0x08];
        expected.extend([0xff; 9]);
        expected.push(0x01); // -1 as a 64-bit varint
        expected.push(0x11);
        expected.extend(0.5f64.to_le_bytes());
        expected.extend([0x18, 0x01]);
        expected.extend([0x22, 0x03, b'h', 0xc3, 0xa9]);
        expected.extend([0x2a, 0x02, 0xff, 0x00]);
        expected.push(0x30);
        expected.extend([0xff; 9]);
        expected.push(0x01); // day -1, sign-extended
        expected.extend([0x38, 0xe0, 0xc6, 0x5b]); // 1,500,000 µs
        expected.extend([0x42, 0x07]);
        expected.extend(b"{\"k\":1}");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn records_nest_and_repeated_fields_repeat() {
        let t = table(vec![
            Field::record("r", vec![Field::new("s", FieldType::String)]).with_mode(Mode::Repeated),
            Field::new("v", FieldType::Int64).with_mode(Mode::Repeated),
            Field::record(
                "m",
                vec![Field::record("n", vec![Field::new("x", FieldType::Bool)])],
            ),
        ]);
        let bytes = encode_row(
            &row(json!({"r": [{"s": "a"}, {}], "v": [1, 2], "m": {"n": {"x": false}}})),
            &t,
        )
        .unwrap();
        assert_eq!(
            bytes,
            [
                0x0a, 0x03, 0x0a, 0x01, b'a', // r[0]
                0x0a, 0x00, // r[1], empty
                0x10, 0x01, 0x10, 0x02, // v
                0x1a, 0x04, 0x0a, 0x02, 0x08, 0x00, // m.n.x
            ]
        );
        let d = row_descriptor(&t);
        assert_eq!(d.name(), "Row");
        assert_eq!(d.field[0].label(), Label::Repeated);
        assert_eq!(d.field[0].r#type(), Type::Message);
        assert_eq!(d.field[0].type_name(), ".Row.R1");
        assert_eq!(d.field[1].r#type(), Type::Int64);
        assert_eq!(d.field[2].type_name(), ".Row.R3");
        let m = &d.nested_type[1];
        assert_eq!(m.name(), "R3");
        assert_eq!(m.field[0].type_name(), ".Row.R3.R1");
        assert_eq!(m.nested_type[0].field[0].r#type(), Type::Bool);
    }

    #[test]
    fn values_that_do_not_fit_are_errors_naming_them() {
        let t = table(vec![
            Field::new("i", FieldType::Int64),
            Field::new("a", FieldType::String).with_mode(Mode::Repeated),
            Field::record("r", vec![Field::new("d", FieldType::Date)]),
        ]);
        for (bad, needle) in [
            (json!({"i": "x"}), "`i`"),
            (json!({"i": 1.5}), "`i`"),
            (json!({"a": ["x", null]}), "`a`: null"),
            (json!({"a": "x"}), "`a`: not an array"),
            (json!({"r": {"d": "2024-13-01"}}), "`r.d`"),
            (json!({"r": {"e": 1}}), "`r.e`: no such column"),
            (json!({"z": 1}), "`z`: no such column"),
        ] {
            let e = encode_row(&row(bad.clone()), &t).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(encode_row(&row(json!({"i": null, "a": []})), &t)
            .unwrap()
            .is_empty());
    }

    /// A server that takes connections and never answers (the listener accepts none: the
    /// kernel completes the handshakes and keeps what is sent).
    fn silent_server() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    #[test]
    fn a_server_that_does_not_answer_is_a_transient_error_not_a_hang() {
        let (_silent, addr) = silent_server();
        let limit = std::time::Duration::from_millis(300);
        let api = StorageWriteApi::new("p", Some((addr.clone(), format!("http://{addr}"))))
            .with_timeout(limit);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // the schema known, the append goes straight to the Storage Write API
        let t = TableRef::parse("d.t").unwrap();
        api.remember(&t, &table(vec![Field::new("n", FieldType::Int64)]));
        let rows = [InsertRow {
            insert_id: "1".into(),
            json: row(json!({"n": 1})),
        }];
        let e = runtime.block_on(api.insert_all(&t, &rows)).unwrap_err();
        assert!(
            matches!(&e, ApiError::Transient(m) if m.ends_with("got no answer within 300ms")),
            "{e}"
        );
        // the tables' REST calls have the same deadline
        let e = runtime
            .block_on(api.table_schema(&TableRef::parse("d.u").unwrap()))
            .unwrap_err();
        assert_eq!(
            e,
            ApiError::Transient("the lookup of table `d.u` got no answer within 300ms".into())
        );
        let e = runtime.block_on(api.check()).unwrap_err();
        assert!(matches!(&e, ApiError::Transient(_)), "{e}");
    }

    #[test]
    fn refusals_name_the_bad_rows_and_stop_the_others() {
        let f = with_stopped(
            vec![RowFailure {
                index: 2,
                reason: "invalid".into(),
                message: "m".into(),
            }],
            4,
        );
        let reasons: Vec<&str> = f.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons, ["stopped", "stopped", "invalid", "stopped"]);
    }
}
