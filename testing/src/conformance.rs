//! The conformance suites every connector's tests call: one contract, checked the same way
//! against a connector's memory double and against its real service.
//!
//! - [`sink_conformance`]: every record is written exactly once or refused to the dead letters
//!   with the original record; a source acknowledges only what the sink made durable, and a
//!   rerun after a failed write completes the output; `flush` is idempotent; an empty input
//!   writes nothing.
//! - [`source_conformance`]: every record is read exactly once on 1 and 2 workers; the reader
//!   is told to acknowledge an epoch only when its records are durable; a restart after a
//!   failed run loses nothing (and, for a source that resumes, does not re-read what was
//!   acknowledged).
//!
//! ```
//! use std::sync::Arc;
//! use sluice::{MemorySink, MemorySource, Message};
//! use sluice_testing::conformance::{sink_conformance, source_conformance, SinkUnderTest, SourceUnderTest};
//!
//! sink_conformance("memory", || {
//!     let sink = MemorySink::<Message>::new();
//!     let read = sink.clone();
//!     SinkUnderTest::new(sink, move || read.records())
//! });
//! source_conformance("memory", |records: &[Message]| {
//!     let source = MemorySource::from(records.to_vec());
//!     SourceUnderTest::resuming(move || source.clone())
//! });
//! ```

// Readers yield `Result<Message, DeadLetter>` (the framing-failure form of the SDK): the suite
// passes that shape through as it is.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sluice::io::{Epoch, ReadStatus, Sink, SinkContext, Source, SourceContext, SourceReader};
use sluice::{BoxError, DeadLetter, Element, EpochBounds, MemorySink, MemorySource, Message};

use crate::{FailingSink, TestPipeline};

/// What [`sink_conformance`] needs: a sink writing to a fresh, empty destination, and a way to
/// read back everything durably written there.
pub struct SinkUnderTest<S> {
    sink: S,
    read_back: Arc<dyn Fn() -> Vec<Message> + Send + Sync>,
    refused: Option<Message>,
    padding: usize,
}

impl<S: Sink<Input = Message> + Clone> SinkUnderTest<S> {
    /// `sink` writes to a fresh destination; `read_back` lists what is durably there, read
    /// with an independent client where there is one.
    pub fn new(sink: S, read_back: impl Fn() -> Vec<Message> + Send + Sync + 'static) -> Self {
        SinkUnderTest {
            sink,
            read_back: Arc::new(read_back),
            refused: None,
            padding: 0,
        }
    }

    /// Makes every record about `bytes` longer (text that compression shrinks only by about
    /// a third), to run the suite with records and objects larger than a sink's buffers or
    /// upload parts.
    pub fn with_padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    fn records(&self, n: usize) -> Vec<Message> {
        padded_messages(n, self.padding)
    }

    /// A record this sink refuses (a path that cannot exist, a message over a size limit), to
    /// check that refusals reach the dead letters with the original record.
    pub fn refusing(mut self, record: Message) -> Self {
        self.refused = Some(record);
        self
    }
}

/// Records with attributes of the kind templates use, payloads of varied size.
pub fn sample_messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(format!(
                "{{\"id\":{i},\"pad\":\"{}\"}}",
                "x".repeat(i * 7 % 61)
            ))
            .with_attribute("document_namespace", ["telemetry", "glean"][i % 2])
            .with_attribute("document_type", ["main", "event", "crash"][i % 3])
            .with_attribute("document_version", "4")
            .with_attribute("submission_timestamp", "2024-03-01T10:11:12Z")
            .with_attribute("n", i.to_string())
        })
        .collect()
}

/// [`sample_messages`] with about `padding` more bytes of pseudo-random lowercase text in each
/// payload (the same text for the same `n` and `padding`).
pub fn padded_messages(n: usize, padding: usize) -> Vec<Message> {
    if padding == 0 {
        return sample_messages(n);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            let noise: String = (0..padding)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            Message::new(format!("{{\"id\":{i},\"noise\":\"{noise}\"}}"))
                .with_attribute("document_namespace", ["telemetry", "glean"][i % 2])
                .with_attribute("document_type", ["main", "event", "crash"][i % 3])
                .with_attribute("document_version", "4")
                .with_attribute("submission_timestamp", "2024-03-01T10:11:12Z")
                .with_attribute("n", i.to_string())
        })
        .collect()
}

fn multiset(records: impl IntoIterator<Item = Message>) -> BTreeMap<Message, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

fn small_epochs() -> EpochBounds {
    EpochBounds {
        max_records: 7,
        ..EpochBounds::default()
    }
}

/// Runs the sink conformance suite; `make` gives a sink on a fresh destination each call.
///
/// # Panics
/// On the first broken rule, naming the connector and the rule.
pub fn sink_conformance<S, F>(name: &str, make: F)
where
    S: Sink<Input = Message> + Clone,
    F: Fn() -> SinkUnderTest<S>,
{
    for workers in [1, 2] {
        writes_every_record_once_or_refuses_it(name, make(), workers);
    }
    acknowledges_only_durable_epochs_and_a_rerun_completes(name, make());
    flush_is_idempotent(name, make());
    an_empty_input_writes_nothing(name, make());
}

fn writes_every_record_once_or_refuses_it<S: Sink<Input = Message> + Clone>(
    name: &str,
    under: SinkUnderTest<S>,
    workers: usize,
) {
    let mut input = under.records(60);
    if let Some(r) = &under.refused {
        input.insert(17, r.clone());
    }
    let source = MemorySource::from(input.clone());
    let dead = MemorySink::<DeadLetter>::new();
    let (s, k, d) = (source.clone(), under.sink.clone(), dead.clone());
    TestPipeline::new()
        .workers(workers)
        .epoch_bounds(small_epochs())
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", s.clone())
                .write("write", k.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: a healthy run failed: {e}"));
    assert!(
        source.all_acked(),
        "{name}: a finished run must acknowledge everything"
    );
    let refused: Vec<Message> = dead.records().into_iter().map(|d| d.original).collect();
    let expected_refused: Vec<Message> = under.refused.iter().cloned().collect();
    assert_eq!(
        refused, expected_refused,
        "{name}: refused records must reach the dead letters untouched, and only they"
    );
    if let Some(d) = dead.records().first() {
        assert_eq!(
            d.error_type, "write",
            "{name}: a refusal's error_type is the sink step"
        );
        assert!(!d.error_message.is_empty(), "{name}: a refusal says why");
    }
    let written = multiset((under.read_back)());
    let expected = multiset(
        input
            .into_iter()
            .filter(|m| Some(m) != under.refused.as_ref()),
    );
    assert!(
        written == expected,
        "{name}, {workers} worker(s): written records differ from the input: {} written, {} expected; missing {:?}; unexpected {:?}",
        written.values().sum::<usize>(),
        expected.values().sum::<usize>(),
        expected.keys().filter(|k| written.get(*k) != expected.get(*k)).take(3).collect::<Vec<_>>(),
        written.keys().filter(|k| written.get(*k) != expected.get(*k)).take(3).collect::<Vec<_>>(),
    );
}

fn acknowledges_only_durable_epochs_and_a_rerun_completes<S: Sink<Input = Message> + Clone>(
    name: &str,
    under: SinkUnderTest<S>,
) {
    let input = under.records(100);
    let epochs: Vec<Vec<Message>> = input.chunks(5).map(<[Message]>::to_vec).collect();
    let source = MemorySource::from_epochs(epochs);
    let failing = FailingSink::every(3, under.sink.clone());
    let (s, f) = (source.clone(), failing.clone());
    let first = TestPipeline::new().run(move |p| {
        let mut dead_letters = p.dead_letters();
        p.read("read", s.clone())
            .write("write", f.clone())
            .failures_to(&mut dead_letters);
        dead_letters.write("dead_letters", MemorySink::<DeadLetter>::new());
        Ok(())
    });
    assert!(
        first.is_err(),
        "{name}: a failed write must fail the run, not be skipped"
    );
    let written = multiset((under.read_back)());
    for record in source.acked() {
        assert!(
            written.contains_key(&record),
            "{name}: acknowledged but not durably written: {record:?}"
        );
    }
    assert!(
        !source.all_acked(),
        "{name}: the epoch of a failed write must not be acknowledged"
    );

    let (s, k) = (source.clone(), under.sink.clone());
    TestPipeline::new()
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", s.clone())
                .write("write", k.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", MemorySink::<DeadLetter>::new());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: the rerun failed: {e}"));
    assert!(
        source.all_acked(),
        "{name}: the rerun acknowledges the rest"
    );
    let written = multiset((under.read_back)());
    for record in &input {
        assert!(
            written.contains_key(record),
            "{name}: lost across a failure and a rerun: {record:?}"
        );
    }
}

fn flush_is_idempotent<S: Sink<Input = Message> + Clone>(name: &str, under: SinkUnderTest<S>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a test runtime");
    let ctx = SinkContext::standalone(runtime.handle().clone(), "conformance", 0, 1);
    let mut writer = under
        .sink
        .open(&ctx)
        .unwrap_or_else(|e| panic!("{name}: open failed: {e}"));
    let records = under.records(12);
    let write = writer.write(1, records.clone());
    writer.flush();
    writer.flush();
    let refused = runtime
        .block_on(write)
        .unwrap_or_else(|e| panic!("{name}: a flushed write failed: {e}"));
    assert!(refused.is_empty(), "{name}: refused valid records");
    writer.flush();
    let empty = writer.write(2, Vec::new());
    writer.flush();
    runtime
        .block_on(empty)
        .unwrap_or_else(|e| panic!("{name}: an empty write failed: {e}"));
    writer.flush();
    drop(writer);
    assert_eq!(
        multiset((under.read_back)()),
        multiset(records),
        "{name}: flushing again must not write anything twice"
    );
}

fn an_empty_input_writes_nothing<S: Sink<Input = Message> + Clone>(
    name: &str,
    under: SinkUnderTest<S>,
) {
    let k = under.sink.clone();
    TestPipeline::new()
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", MemorySource::<Message>::from(Vec::new()))
                .write("write", k.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", MemorySink::<DeadLetter>::new());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: an empty run failed: {e}"));
    assert!(
        (under.read_back)().is_empty(),
        "{name}: an empty input wrote records"
    );
}

/// A record a source reads: a message, or the dead letter of input it could not frame.
pub trait SourceRecord: Element {
    /// The message, or the framing failure.
    fn into_record(self) -> Result<Message, DeadLetter>;
}

impl SourceRecord for Message {
    fn into_record(self) -> Result<Message, DeadLetter> {
        Ok(self)
    }
}

impl SourceRecord for Result<Message, DeadLetter> {
    fn into_record(self) -> Result<Message, DeadLetter> {
        self
    }
}

/// What [`source_conformance`] needs: a way to open the source over one input, again and
/// again (a restart), and whether a restart resumes after what was acknowledged.
pub struct SourceUnderTest<S> {
    open: Box<dyn Fn() -> S>,
    resumes: bool,
}

impl<S: Source> SourceUnderTest<S> {
    /// A source whose restart (`open` called again) resumes after what was acknowledged.
    pub fn resuming(open: impl Fn() -> S + 'static) -> Self {
        SourceUnderTest {
            open: Box::new(open),
            resumes: true,
        }
    }

    /// A source whose restart reads its input from the start again (at-least-once by
    /// re-reading, as stdin or a file source without a state directory).
    pub fn rereading(open: impl Fn() -> S + 'static) -> Self {
        SourceUnderTest {
            open: Box::new(open),
            resumes: false,
        }
    }
}

/// Runs the source conformance suite; `make` writes `records` to a fresh input (a file, a
/// topic, a reader) and returns how to open a source over it.
///
/// # Panics
/// On the first broken rule, naming the connector and the rule.
pub fn source_conformance<S, F>(name: &str, make: F)
where
    S: Source + Clone,
    S::Output: SourceRecord,
    F: Fn(&[Message]) -> SourceUnderTest<S>,
{
    let input = sample_messages(80);
    for workers in [1, 2] {
        let under = make(&input);
        let (written, dead, violations, _) = run_source(&under, workers, None);
        assert!(
            dead.is_empty(),
            "{name}: valid input became dead letters: {:?}",
            dead.first()
        );
        assert!(violations.is_empty(), "{name}: {}", violations.join("; "));
        assert_eq!(
            multiset(written),
            multiset(input.clone()),
            "{name}, {workers} worker(s): every record must be read exactly once"
        );
    }

    let under = make(&input);
    let (first, _, violations, acked) = run_source(&under, 1, Some(4));
    assert!(violations.is_empty(), "{name}: {}", violations.join("; "));
    let (second, _, violations, _) = run_source(&under, 1, None);
    assert!(violations.is_empty(), "{name}: {}", violations.join("; "));
    let all = multiset(first.iter().cloned().chain(second.iter().cloned()));
    for record in &input {
        assert!(
            all.contains_key(record),
            "{name}: lost across a failed run and a restart: {record:?}"
        );
    }
    if under.resumes {
        let reread = multiset(second);
        if let Some(r) = acked.iter().find(|r| reread.contains_key(*r)) {
            panic!(
                "{name}: a resuming source re-read an acknowledged record after a restart: {r:?}"
            );
        }
    }
}

/// Durably written records, dead letters, contract violations, acknowledged records.
type SourceRun = (Vec<Message>, Vec<DeadLetter>, Vec<String>, Vec<Message>);

/// One run reading the source into a sink that fails every `fail_every`th write (if given);
/// returns what was durably written, the dead letters and the contract violations the reader
/// saw (acknowledgements of epochs whose records were not durable).
fn run_source<S>(under: &SourceUnderTest<S>, workers: usize, fail_every: Option<usize>) -> SourceRun
where
    S: Source + Clone,
    S::Output: SourceRecord,
{
    let durable = MemorySink::<Message>::new();
    let dead = MemorySink::<DeadLetter>::new();
    let violations = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let checked = Checked {
        inner: (under.open)(),
        durable: durable.clone(),
        violations: violations.clone(),
        acked: acked.clone(),
    };
    let (d, k) = (dead.clone(), durable.clone());
    let result = TestPipeline::new()
        .workers(workers)
        .epoch_bounds(small_epochs())
        .run(move |p| {
            let (ok, failed) = p
                .read("read", checked.clone())
                .map(SourceRecord::into_record)
                .branch(|r| r);
            match fail_every {
                Some(n) => {
                    ok.write("write", FailingSink::every(n, k.clone()));
                }
                None => {
                    ok.write("write", k.clone());
                }
            }
            failed.write("dead_letters", d.clone());
            Ok(())
        });
    match (fail_every, result) {
        (None, Err(e)) => panic!("a healthy run failed: {e}"),
        (Some(_), Ok(_)) => panic!("a run with failing writes succeeded"),
        _ => {}
    }
    let v = violations.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let a = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (durable.records(), dead.records(), v, a)
}

/// Wraps a source and checks, at each acknowledgement, that the acknowledged epochs' records
/// are durable in the sink.
#[derive(Clone)]
struct Checked<S> {
    inner: S,
    durable: MemorySink<Message>,
    violations: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<Message>>>,
}

impl<S> Source for Checked<S>
where
    S: Source,
    S::Output: SourceRecord,
{
    type Output = S::Output;
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<S::Output>>, BoxError> {
        Ok(Box::new(CheckedReader {
            inner: self.inner.open(ctx)?,
            durable: self.durable.clone(),
            violations: self.violations.clone(),
            acked: self.acked.clone(),
            open: Vec::new(),
            epochs: Vec::new(),
        }))
    }
}

struct CheckedReader<T> {
    inner: Box<dyn SourceReader<T>>,
    durable: MemorySink<Message>,
    violations: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<Message>>>,
    /// Records of the open epoch.
    open: Vec<Message>,
    /// Closed epochs not yet acknowledged, with their records.
    epochs: Vec<(Epoch, Vec<Message>)>,
}

impl<T: SourceRecord> SourceReader<T> for CheckedReader<T> {
    fn read(&mut self, out: &mut Vec<T>, max_records: usize) -> Result<ReadStatus, BoxError> {
        let before = out.len();
        let status = self.inner.read(out, max_records)?;
        for r in &out[before..] {
            if let Ok(m) = r.clone().into_record() {
                self.open.push(m);
            }
        }
        Ok(status)
    }
    fn end_epoch(&mut self, epoch: Epoch) {
        self.epochs.push((epoch, std::mem::take(&mut self.open)));
        self.inner.end_epoch(epoch)
    }
    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        let written = multiset(self.durable.records());
        let (acked, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.epochs)
            .into_iter()
            .partition(|(e, _)| *e < done);
        self.epochs = kept;
        for (epoch, records) in acked {
            if let Some(r) = records.iter().find(|r| !written.contains_key(*r)) {
                self.violations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "epoch {epoch} acknowledged before {r:?} was durable"
                    ));
            }
            self.acked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(records);
        }
        self.inner.ack(done)
    }
    fn close(&mut self) -> Result<(), BoxError> {
        self.inner.close()
    }
    fn progress(&self) -> Option<(u64, u64)> {
        self.inner.progress()
    }
}
