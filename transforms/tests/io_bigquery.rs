//! The BigQuery sink: the shared sink conformance suite against the memory double and the
//! BigQuery emulator, and the emulator's answers to refused rows and missing tables, read
//! back with an independent client (SQL queries over REST, from Python).
//!
//! The emulator tests need `SLUICE_TEST_BIGQUERY_URL` (e.g. `http://127.0.0.1:9250` from
//! `scripts/services/bigquery.sh start`) and `python3`; they are skipped, saying so, when the
//! variable is unset. Each test creates its own datasets. The Storage Write tests start a
//! bqemulator of their own (from the venv of `SLUICE_TEST_BIGQUERY_PYTHON`): bqemulator
//! 1.4.0 deadlocks when a REST request meets a Storage Write append (see below).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sluice::io::{CheckContext, Sink, SinkContext, SinkWriter, WriteFuture};
use sluice::{BoxError, DeadLetter, Epoch, MemorySink, MemorySource, Message, Pipeline};
use sluice_schemas::bigquery::{raw_table_schema, Field, FieldType, Mode, TableSchema};
use sluice_testing::conformance::{self, sink_conformance, SinkUnderTest};
use sluice_transforms::io::bigquery::{
    Auth, BigQueryApi, BigQuerySink, InsertBatch, InsertRow, MemoryBigQuery, RestApi, RetryPolicy,
    RowFormat, StorageWriteApi, TableRef, TableTemplate,
};

/// A raw row (every attribute a column, `additional_properties` JSON, base64 payload) back
/// into the message it was made from.
fn message_from_raw_row(row: &serde_json::Map<String, Value>) -> Message {
    let mut attributes = BTreeMap::new();
    let mut payload = Vec::new();
    for (k, v) in row {
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("payload", Value::String(b64)) => {
                payload = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64 payload");
            }
            ("additional_properties", Value::String(text)) => {
                let extra: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
                for (k, v) in extra {
                    attributes.insert(k, v.as_str().unwrap().to_string());
                }
            }
            (k, Value::String(s)) => {
                attributes.insert(k.to_string(), s.clone());
            }
            (k, other) => panic!("unexpected column {k}: {other}"),
        }
    }
    Message::new(payload).with_attributes(attributes)
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

#[test]
fn conformance_memory_double() {
    sink_conformance("bigquery memory double", || {
        let bq = MemoryBigQuery::new();
        let sink = BigQuerySink::new(
            Arc::new(bq.clone()),
            TableTemplate::parse("conf.rows").unwrap(),
        )
        .with_format(RowFormat::Raw)
        .with_create_tables(true)
        .with_batch(InsertBatch {
            max_rows: 4,
            max_bytes: 1 << 20,
        })
        .with_retry(quick_retry());
        SinkUnderTest::new(sink, move || {
            bq.rows("conf", "rows")
                .unwrap_or_default()
                .iter()
                .map(message_from_raw_row)
                .collect()
        })
    });
}

/// A sample record whose table does not exist: refused by the sink (`notFound`).
fn refused_record() -> Message {
    conformance::sample_messages(1)
        .remove(0)
        .with_attribute("table", "missing")
}

#[test]
fn conformance_memory_double_refusing_rows() {
    sink_conformance("bigquery memory double, refusing", || {
        let bq = MemoryBigQuery::new();
        bq.add_table("conf", "rows", raw_table_schema());
        // the suite wants refusals untouched and named after the write step
        let sink = BigQuerySink::new(
            Arc::new(bq.clone()),
            TableTemplate::parse("conf.${table:-rows}").unwrap(),
        )
        .with_format(RowFormat::Raw)
        .with_error_attributes(false)
        .with_retry(quick_retry());
        SinkUnderTest::new(sink, move || {
            bq.rows("conf", "rows")
                .unwrap_or_default()
                .iter()
                .map(message_from_raw_row)
                .collect()
        })
        .refusing(refused_record())
    });
}

#[test]
fn refusals_name_the_table_and_reason_and_the_rest_of_the_epoch_lands() {
    let bq = MemoryBigQuery::new();
    bq.add_table(
        "ds",
        "t",
        TableSchema {
            fields: vec![Field::new("n", FieldType::Int64).with_mode(Mode::Nullable)],
        },
    );
    let sink = BigQuerySink::new(
        Arc::new(bq.clone()),
        TableTemplate::parse("ds.${t:-t}").unwrap(),
    )
    .with_retry(quick_retry());
    let input: Vec<Message> = (0..30)
        .map(|i| match i % 10 {
            3 => Message::new(format!("{{\"n\":\"x{i}\"}}")),
            7 => Message::new(format!("{{\"n\":{i}}}")).with_attribute("t", "missing"),
            _ => Message::new(format!("{{\"n\":{i}}}")),
        })
        .collect();
    let dead = MemorySink::<DeadLetter>::new();
    let (d, s) = (dead.clone(), sink.clone());
    Pipeline::new("t")
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", MemorySource::from(input.clone()))
                .write("write", s.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(bq.rows("ds", "t").unwrap().len(), 24);
    let dead = dead.records();
    assert_eq!(dead.len(), 6);
    for d in &dead {
        assert_eq!(d.error_type, "WriteBigQuery");
        let reason = d.original.attribute("error_reason").unwrap();
        let table = d.original.attribute("error_table").unwrap();
        if d.original.attribute("t") == Some("missing") {
            assert_eq!((reason, table), ("notFound", "ds.missing"));
        } else {
            assert_eq!((reason, table), ("invalid", "ds.t"));
            assert!(
                d.error_message.contains("no column for n"),
                "{}",
                d.error_message
            );
        }
    }
}

// ---- against the emulator ----

fn emulator() -> Option<(String, String)> {
    match std::env::var("SLUICE_TEST_BIGQUERY_URL") {
        Ok(u) if !u.is_empty() => Some((
            u,
            std::env::var("SLUICE_TEST_BIGQUERY_PROJECT").unwrap_or_else(|_| "test-proj".into()),
        )),
        _ => {
            println!(
                "skipped: set SLUICE_TEST_BIGQUERY_URL (e.g. http://127.0.0.1:9250 after \
                 scripts/services/bigquery.sh start) to run the BigQuery emulator tests"
            );
            None
        }
    }
}

/// A dataset name no other test run uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sluice_{name}_{}_{nanos}", std::process::id())
}

/// Every row of `dataset.table` as JSON objects (scalars as BigQuery's REST API returns them:
/// strings), read with a SQL query from Python's standard library: an independent client.
fn query_rows(
    url: &str,
    project: &str,
    dataset: &str,
    table: &str,
) -> Vec<serde_json::Map<String, Value>> {
    const SCRIPT: &str = r#"
import sys, json, urllib.request
base, project, dataset, table = sys.argv[1:5]
def call(path, body):
    req = urllib.request.Request(base + '/bigquery/v2/projects/' + project + path,
        data=json.dumps(body).encode(), method='POST', headers={'Content-Type': 'application/json'})
    return json.load(urllib.request.urlopen(req, timeout=60))
def val(field, v):
    if v is None:
        return None
    if field.get('mode') == 'REPEATED':
        return [val(dict(field, mode='NULLABLE'), x['v']) for x in v]
    if field['type'] in ('RECORD', 'STRUCT'):
        return row(field['fields'], v['f'])
    return v
def row(fields, cells):
    return {f['name']: val(f, c['v']) for f, c in zip(fields, cells)}
res = call('/queries', {'query': 'SELECT * FROM `%s.%s.%s`' % (project, dataset, table),
                        'useLegacySql': False, 'maxResults': 1000000, 'timeoutMs': 60000})
assert res.get('jobComplete', True), res
for r in res.get('rows', []):
    print(json.dumps(row(res['schema']['fields'], r['f'])))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args([url, project, dataset, table])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "query of {dataset}.{table} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rest(url: &str, project: &str) -> Arc<RestApi> {
    Arc::new(RestApi::new(project, Some(url), Auth::None))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn conformance_emulator() {
    let Some((url, project)) = emulator() else {
        return;
    };
    conformance_on_emulator("bigquery emulator", &url, &project, rest);
}

fn conformance_on_emulator<A: BigQueryApi>(
    name: &str,
    url: &str,
    project: &str,
    api: impl Fn(&str, &str) -> Arc<A> + Clone + 'static,
) {
    let (url, project) = (url.to_string(), project.to_string());
    sink_conformance(name, || {
        let dataset = unique("conf");
        let sink = BigQuerySink::new(
            api(&url, &project),
            TableTemplate::parse(&format!("{dataset}.rows")).unwrap(),
        )
        .with_format(RowFormat::Raw)
        .with_create_tables(true)
        .with_batch(InsertBatch {
            max_rows: 16,
            max_bytes: 1 << 20,
        })
        .with_retry(quick_retry());
        let (url, project) = (url.clone(), project.clone());
        let api = rest(&url, &project);
        SinkUnderTest::new(sink, move || {
            let table = TableRef::parse(&format!("{dataset}.rows")).unwrap();
            if block_on(api.table_schema(&table)).unwrap().is_none() {
                return Vec::new();
            }
            query_rows(&url, &project, &dataset, "rows")
                .iter()
                .map(message_from_raw_row)
                .collect()
        })
    });
}

#[test]
fn emulator_refused_rows_and_missing_tables_are_dead_letters_and_the_rest_lands() {
    let Some((url, project)) = emulator() else {
        return;
    };
    refusals_on_emulator(&url, &project, rest(&url, &project));
}

fn refusals_on_emulator<A: BigQueryApi>(url: &str, project: &str, api: Arc<A>) {
    let (url, project) = (url.to_string(), project.to_string());
    let dataset = unique("refuse");
    let table = TableRef::parse(&format!("{dataset}.t")).unwrap();
    let schema = TableSchema {
        fields: vec![
            Field::new("id", FieldType::Int64),
            Field::new("n", FieldType::Int64),
            Field::new("tags", FieldType::String).with_mode(Mode::Repeated),
        ],
    };
    block_on(api.create_table(&table, &schema)).unwrap();
    let sink = BigQuerySink::new(
        api.clone(),
        TableTemplate::parse(&format!("{dataset}.${{t:-t}}")).unwrap(),
    )
    .with_retry(quick_retry());
    let input: Vec<Message> = (0..40)
        .map(|i| match i % 8 {
            1 => Message::new(format!("{{\"id\":{i},\"n\":\"not a number\"}}")),
            5 => Message::new(format!("{{\"id\":{i},\"n\":1}}")).with_attribute("t", "absent"),
            _ => Message::new(format!("{{\"id\":{i},\"n\":{i},\"tags\":[\"a\",\"b\"]}}")),
        })
        .collect();
    let dead = MemorySink::<DeadLetter>::new();
    let (d, s) = (dead.clone(), sink.clone());
    Pipeline::new("t")
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", MemorySource::from(input.clone()))
                .write("write", s.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    let rows = query_rows(&url, &project, &dataset, "t");
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    let expected: Vec<i64> = (0..40).filter(|i| i % 8 != 1 && i % 8 != 5).collect();
    assert_eq!(ids, expected);
    assert!(rows.iter().all(|r| r["tags"] == json!(["a", "b"])));
    let dead = dead.records();
    assert_eq!(dead.len(), 10);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in &dead {
        assert_eq!(d.error_type, "WriteBigQuery");
        *reasons
            .entry(d.original.attribute("error_reason").unwrap().to_string())
            .or_default() += 1;
    }
    // a string that is not a number has no INT64 column to go to, and this table has no
    // `additional_properties`: refused before sending (the emulator would answer 500)
    assert_eq!(reasons.get("invalid"), Some(&5), "{reasons:?}");
    assert_eq!(reasons.get("notFound"), Some(&5), "{reasons:?}");
}

#[test]
fn emulator_rows_missing_a_required_column_are_dead_letters_and_the_rest_lands() {
    let Some((url, project)) = emulator() else {
        return;
    };
    let dataset = unique("required");
    let api = rest(&url, &project);
    let table = TableRef::parse(&format!("{dataset}.t")).unwrap();
    let mut fields = raw_table_schema().fields;
    fields.push(Field::new("must", FieldType::String).with_mode(Mode::Required));
    block_on(api.create_table(&table, &TableSchema { fields })).unwrap();
    let sink = BigQuerySink::new(
        api.clone(),
        TableTemplate::parse(&format!("{dataset}.t")).unwrap(),
    )
    .with_format(RowFormat::Raw)
    .with_retry(quick_retry());
    let input: Vec<Message> = (0..12)
        .map(|i| {
            let m = Message::new(format!("p{i}")).with_attribute("i", i.to_string());
            if i % 4 == 0 {
                m
            } else {
                m.with_attribute("must", "x")
            }
        })
        .collect();
    let dead = MemorySink::<DeadLetter>::new();
    let (d, s) = (dead.clone(), sink.clone());
    Pipeline::new("t")
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", MemorySource::from(input.clone()))
                .write("write", s.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    let rows = query_rows(&url, &project, &dataset, "t");
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r["must"] == "x"));
    let dead = dead.records();
    assert_eq!(dead.len(), 3);
    for d in &dead {
        assert_eq!(
            d.original.attribute("error_table"),
            Some(table.to_string().as_str())
        );
        assert_eq!(d.original.attribute("error_reason"), Some("invalid"));
        assert!(d.error_message.contains("must"), "{}", d.error_message);
    }
}

// ---- the Storage Write API, on an emulator of the test's own ----
//
// bqemulator 1.4.0 answers REST on its asyncio loop and the Storage Write API on worker
// threads, both on one DuckDB connection. A REST request that touches DuckDB (a query,
// insertAll, a table's creation) while an append is being stored deadlocks the process: the
// loop holds Python's GIL and waits for DuckDB's connection lock, the append's thread holds
// that lock and waits for the GIL; from then on the emulator answers nothing, REST or gRPC.
// So these tests never share an emulator (the one of `scripts/services/bigquery.sh` serves the
// REST tests, in parallel): each starts its own, creates its tables before writing, and reads
// back only when no append is in flight.

/// A bqemulator of this test alone, on free ports, stopped when dropped (or when the test
/// process ends: its keeper waits on a pipe from this process).
struct OwnEmulator {
    keeper: Child,
    url: String,
    grpc: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the emulator (argv[2:]) with its output in argv[1]; kills it when stdin closes.
const KEEPER: &str = r#"
import subprocess, sys
log = open(sys.argv[1], "wb")
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
sys.stdin.read()
p.kill()
p.wait()
"#;

impl OwnEmulator {
    fn start(project: &str) -> OwnEmulator {
        let python = std::env::var("SLUICE_TEST_BIGQUERY_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/sluice/bqemulator-venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let exe = Path::new(&python).with_file_name("bqemulator");
        assert!(
            exe.exists(),
            "the Storage Write tests start their own bqemulator and found none at {} \
             (scripts/services/bigquery.sh install; SLUICE_TEST_BIGQUERY_PYTHON names its venv)",
            exe.display()
        );
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (rest_port, grpc_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("bqemulator.log");
        let keeper = Command::new(&python)
            .arg("-c")
            .arg(KEEPER)
            .arg(&log)
            .arg(&exe)
            .args(["start", "--ephemeral", "--project", project])
            .args([
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                &rest_port.to_string(),
            ])
            .args([
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                &grpc_port.to_string(),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut own = OwnEmulator {
            keeper,
            url: format!("http://127.0.0.1:{rest_port}"),
            grpc: format!("127.0.0.1:{grpc_port}"),
            log,
            _dir: dir,
        };
        // the gRPC port is bound last, after the REST server is up
        for _ in 0..1200 {
            if std::net::TcpStream::connect(&own.grpc).is_ok() {
                return own;
            }
            if let Some(status) = own.keeper.try_wait().unwrap() {
                panic!("bqemulator exited ({status}): {}", own.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("bqemulator did not listen within 60 s: {}", own.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its Storage Write API, with its REST API for tables.
    fn storage(&self, project: &str) -> Arc<StorageWriteApi> {
        Arc::new(
            StorageWriteApi::new(project, Some((self.grpc.clone(), self.url.clone())))
                .with_timeout(Duration::from_secs(15)),
        )
    }
}

impl Drop for OwnEmulator {
    fn drop(&mut self) {
        // the keeper kills the emulator when its stdin closes
        drop(self.keeper.stdin.take());
        let _ = self.keeper.wait();
    }
}

/// `inner` with each write run to its end on a runtime of the test's (not the pipeline's), so
/// that a write the pipeline gives up (a run failing on another write) still waits for its
/// append's answer, and with the writes in flight counted: [`Settled::wait`] returns when none
/// is, i.e. when the emulator stores no append and may be queried.
#[derive(Clone)]
struct Settled<S> {
    inner: S,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<(Mutex<usize>, Condvar)>,
}

impl<S> Settled<S> {
    fn new(inner: S, runtime: tokio::runtime::Handle) -> Self {
        Settled {
            inner,
            runtime,
            in_flight: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    fn wait(&self) {
        let (count, changed) = &*self.in_flight;
        let mut n = count.lock().unwrap();
        while *n > 0 {
            n = changed.wait(n).unwrap();
        }
    }
}

impl<S: Sink<Input = Message>> Sink for Settled<S> {
    type Input = Message;

    fn kind(&self) -> &str {
        self.inner.kind()
    }

    fn can_reject(&self) -> bool {
        self.inner.can_reject()
    }

    fn check(&self, ctx: &CheckContext) -> Result<(), BoxError> {
        self.inner.check(ctx)
    }

    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(SettledWriter {
            inner: self.inner.open(ctx)?,
            runtime: self.runtime.clone(),
            in_flight: self.in_flight.clone(),
        }))
    }
}

struct SettledWriter {
    inner: Box<dyn SinkWriter<Message>>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<(Mutex<usize>, Condvar)>,
}

/// Counts a write out of flight when dropped (done, failed or panicked).
struct InFlight(Arc<(Mutex<usize>, Condvar)>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let (count, changed) = &*self.0;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        changed.notify_all();
    }
}

impl SinkWriter<Message> for SettledWriter {
    fn write(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let write = self.inner.write(epoch, records);
        *self.in_flight.0.lock().unwrap() += 1;
        let guard = InFlight(self.in_flight.clone());
        let task = self.runtime.spawn(async move {
            let result = write.await;
            drop(guard);
            result
        });
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the write task failed: {e}").into()))
        })
    }

    fn flush(&mut self) {
        self.inner.flush()
    }
}

#[test]
fn conformance_emulator_storage_write() {
    if emulator().is_none() {
        return;
    }
    let project = "test-proj";
    let own = OwnEmulator::start(project);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tables = rest(&own.url, project);
    sink_conformance("bigquery emulator, storage write", || {
        let dataset = unique("conf");
        let table = TableRef::parse(&format!("{dataset}.rows")).unwrap();
        // created before any write: a table's creation must not meet an append
        block_on(tables.create_table(&table, &raw_table_schema())).unwrap();
        let sink = Settled::new(
            BigQuerySink::new(
                own.storage(project),
                TableTemplate::parse(&format!("{dataset}.rows")).unwrap(),
            )
            .with_format(RowFormat::Raw)
            .with_batch(InsertBatch {
                max_rows: 16,
                max_bytes: 1 << 20,
            })
            .with_retry(quick_retry()),
            runtime.handle().clone(),
        );
        let settled = sink.clone();
        let url = own.url.clone();
        SinkUnderTest::new(sink, move || {
            settled.wait();
            query_rows(&url, project, &dataset, "rows")
                .iter()
                .map(message_from_raw_row)
                .collect()
        })
    });
}

#[test]
fn emulator_storage_write_refused_rows_and_missing_tables_are_dead_letters_and_the_rest_lands() {
    if emulator().is_none() {
        return;
    }
    let project = "test-proj";
    let own = OwnEmulator::start(project);
    // the table is created before the run, the rows read back after it
    refusals_on_emulator(&own.url, project, own.storage(project));
}

/// The gRPC client's channel lives on the runtime it was built on: a second pipeline run (a
/// new runtime) with the same sink must get a client of its own, not wait on a dead channel.
#[test]
fn emulator_storage_write_serves_a_runtime_after_the_one_it_first_used_ends() {
    if emulator().is_none() {
        return;
    }
    let project = "test-proj";
    let own = OwnEmulator::start(project);
    let api = own.storage(project);
    let dataset = unique("runtimes");
    let table = TableRef::parse(&format!("{dataset}.t")).unwrap();
    let schema = TableSchema {
        fields: vec![Field::new("n", FieldType::Int64)],
    };
    block_on(api.create_table(&table, &schema)).unwrap();
    for n in 0..2 {
        let row = InsertRow {
            insert_id: n.to_string(),
            json: json!({ "n": n }).as_object().unwrap().clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let failures = runtime
            .block_on(api.insert_all(&table, &[row]))
            .unwrap_or_else(|e| panic!("append on runtime {n}: {e}"));
        assert!(failures.is_empty(), "{failures:?}");
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
    let mut got: Vec<String> = query_rows(&own.url, project, &dataset, "t")
        .iter()
        .map(|r| r["n"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["0", "1"]);
}
