//! Standard input as a source, standard output and error (or any writer) as sinks.
//!
//! - [`StdinSource`] frames stdin (or any reader) like a file ([`RecordReader`]): worker 0
//!   reads it on a dedicated thread into a bounded channel and the worker is woken when
//!   records arrive, so a slow or idle stdin never blocks a worker. Records are handed over
//!   before every read of stdin, so none waits for more input. End of input ends the source;
//!   so does its end flag ([`StdinSource::end_flag`]), after the records already read.
//! - [`StdoutSink`], [`StderrSink`] and [`WriterSink`] write one record per line in an
//!   [`OutputFormat`] on a writer thread per worker; an epoch is durable once its lines are
//!   written and flushed to the file descriptor.
//! - [`StdinSourceConfig`] and [`StdioSinkConfig`] are their config-file form.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};

use sluice::{
    BoxError, Epoch, EpochLedger, Message, ReadState, ReadStatus, Sink, SinkContext, SinkWriter,
    Source, SourceContext, SourceReader, SourceWaker, WriteFuture,
};

use crate::io::file::{
    decompressed, record_bytes, ReadResult, RecordReader, DEFAULT_MAX_LINE_BYTES,
};
use crate::io::format::{InputFormat, OutputFormat};

mod config;

pub use config::{StdinSourceConfig, StdioSinkConfig};

/// Records the stdin thread sends per chunk, and chunks it may have in flight.
const CHUNK_RECORDS: usize = 256;
const CHUNK_BYTES: usize = 1024 * 1024;
const CHUNKS_IN_FLIGHT: usize = 8;
/// Formatted bytes written per `write_all` (whole lines), so a big epoch needs no big buffer.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Why standard IO failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdioError {
    /// The input was already handed to a reader (a source is opened once per worker and only
    /// worker 0 reads; a second run of the same source finds it taken).
    #[error("{0} was already read by an earlier run of this source")]
    InputTaken(String),
    /// The reading or writing thread could not start.
    #[error("cannot start the {name} thread")]
    Thread {
        /// stdin, stdout, ...
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading the input failed (a closed descriptor, corrupt gzip).
    #[error("cannot read {name} after line {line}")]
    Read {
        /// The input's name.
        name: String,
        /// Lines read before the failure.
        line: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing or flushing failed (a closed pipe).
    #[error("cannot write to {name}")]
    Write {
        /// The output's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The writer thread stopped before confirming a write.
    #[error("the {0} writer stopped before the write was confirmed")]
    WriterGone(String),
}

type BoxedRead = Box<dyn Read + Send>;

/// Reads standard input (or an injected reader) in an [`InputFormat`]; gzipped input is
/// detected by its magic bytes. Only worker 0 reads; dead letters as for files
/// ([`crate::io::file::FileSource`]), with `input_line` or `input_offset` as position.
///
/// Clones share the input: build an injected reader's source once, outside the pipeline
/// closure, and clone it in (a source built per worker gives worker 0 its own reader).
///
/// A pipe cannot be re-read, so nothing is acknowledged to the input itself; the source
/// counts the records whose epochs every sink made durable
/// ([`StdinSource::acknowledged_records`]), and logs it when it closes: after a failure, the
/// records after that many are the ones to feed again.
///
/// ```
/// use sluice::{MemorySink, Pipeline};
/// use sluice_transforms::io::format::InputFormat;
/// use sluice_transforms::io::stdio::StdinSource;
///
/// let out = MemorySink::new();
/// let dead = MemorySink::new();
/// let (o, d) = (out.clone(), dead.clone());
/// Pipeline::new("stdin")
///     .workers(2)
///     .run(move |p| {
///         let mut dl = p.dead_letters();
///         let input = &b"one\n\ntwo\n"[..];
///         p.read_with_failures("read", StdinSource::from_reader(InputFormat::Text, input))
///             .failures_to(&mut dl)
///             .write("write", o.clone());
///         dl.write("dead_letters", d.clone());
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(out.sorted().len(), 2);
/// ```
#[derive(Clone)]
pub struct StdinSource {
    format: InputFormat,
    name: String,
    max_line_bytes: usize,
    /// Shared by clones: build the source once and clone it into the pipeline closure, and
    /// worker 0 takes the input.
    input: Arc<Mutex<Option<BoxedRead>>>,
    acknowledged: Arc<AtomicU64>,
    end: Arc<AtomicBool>,
}

impl StdinSource {
    /// Reads the process's standard input.
    pub fn new(format: InputFormat) -> Self {
        Self::with_input(format, "stdin", Box::new(io::stdin()))
    }

    /// Reads `input` instead of standard input (tests, pipes set up by the caller).
    pub fn from_reader(format: InputFormat, input: impl Read + Send + 'static) -> Self {
        Self::with_input(format, "reader", Box::new(input))
    }

    fn with_input(format: InputFormat, name: &str, input: BoxedRead) -> Self {
        StdinSource {
            format,
            name: name.to_string(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            input: Arc::new(Mutex::new(Some(input))),
            acknowledged: Arc::default(),
            end: Arc::default(),
        }
    }

    /// A flag that, once set, ends the input as if it had closed, after the records already
    /// read from it: they are handed out and written like any others, and the pipeline ends
    /// at the end of input. How a signal stops a job on stdin without dropping what it
    /// buffered (the pipeline's shutdown flag stops reading at once and drops them). Shared
    /// by clones. Bytes not yet read from the input (a line still incomplete, or sent while
    /// the flag is set) are left unread. The reader notices the flag within the epoch age.
    ///
    /// ```
    /// use sluice::{MemorySink, Pipeline};
    /// use sluice_transforms::io::format::InputFormat;
    /// use sluice_transforms::io::stdio::StdinSource;
    ///
    /// // an input that sends two lines, then never ends (like a pipe whose writer waits)
    /// let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
    /// std::io::Write::write_all(&mut tx, b"one\ntwo\n").unwrap();
    /// let source = StdinSource::from_reader(InputFormat::Text, rx);
    /// let end = source.end_flag();
    /// std::thread::spawn(move || {
    ///     std::thread::sleep(std::time::Duration::from_millis(300));
    ///     end.store(true, std::sync::atomic::Ordering::SeqCst);
    /// });
    /// let out = MemorySink::new();
    /// let o = out.clone();
    /// Pipeline::new("stdin")
    ///     .run(move |p| {
    ///         let mut dl = p.dead_letters();
    ///         p.read_with_failures("read", source.clone())
    ///             .failures_to(&mut dl)
    ///             .write("write", o.clone());
    ///         dl.write("dead_letters", MemorySink::new());
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(out.len(), 2);
    /// drop(tx);
    /// ```
    pub fn end_flag(&self) -> Arc<AtomicBool> {
        self.end.clone()
    }

    /// How many records, from the input's start (messages and dead letters; blank lines are
    /// not records), are in epochs that every sink made durable: after a failure, the input
    /// from the next record on is what was not acknowledged.
    pub fn acknowledged_records(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Sets the longest line kept whole (see [`crate::io::file::FileSource::max_line_bytes`]).
    pub fn max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }
}

impl Source for StdinSource {
    type Output = ReadResult;

    fn kind(&self) -> &str {
        "stdin"
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<ReadResult>>, BoxError> {
        if ctx.worker_index() != 0 {
            return Ok(Box::new(StdinReader::new(None, self)));
        }
        let input = self
            .input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| StdioError::InputTaken(self.name.clone()))?;
        let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let (format, name, max_line) = (self.format, self.name.clone(), self.max_line_bytes);
        let waker = ctx.waker();
        std::thread::Builder::new()
            .name(format!("sluice-{}", self.name))
            .spawn(move || read_input(input, format, name, max_line, tx, waker))
            .map_err(|source| StdioError::Thread {
                name: self.name.clone(),
                source,
            })?;
        Ok(Box::new(StdinReader::new(Some(rx), self)))
    }
}

type Chunk = Result<Vec<ReadResult>, StdioError>;

/// Records the stdin thread framed but has not sent yet, and their bytes.
type Framed = Arc<Mutex<(Vec<ReadResult>, usize)>>;

/// The stdin thread's input: sends the records framed so far before each read of the input,
/// since a read may block for as long as the writer of a pipe waits, and records already
/// read must not wait with it (nor be lost if the job is stopped meanwhile).
struct SendBeforeRead {
    inner: BoxedRead,
    framed: Framed,
    tx: SyncSender<Chunk>,
    waker: SourceWaker,
}

impl SendBeforeRead {
    /// Sends what is framed; false if the worker hung up.
    fn send_framed(&self) -> bool {
        let chunk = {
            let mut framed = self.framed.lock().unwrap_or_else(PoisonError::into_inner);
            framed.1 = 0;
            std::mem::take(&mut framed.0)
        };
        if chunk.is_empty() {
            return true;
        }
        let sent = self.tx.send(Ok(chunk)).is_ok();
        self.waker.wake();
        sent
    }
}

impl Read for SendBeforeRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.send_framed() {
            return Err(io::Error::other("the reader hung up"));
        }
        self.inner.read(buf)
    }
}

/// The reading thread: frames the input and sends chunks until the end, a failure, or the
/// worker hangs up.
fn read_input(
    input: BoxedRead,
    format: InputFormat,
    name: String,
    max_line_bytes: usize,
    tx: SyncSender<Chunk>,
    waker: SourceWaker,
) {
    let framed: Framed = Arc::default();
    let input = SendBeforeRead {
        inner: input,
        framed: framed.clone(),
        tx: tx.clone(),
        waker: waker.clone(),
    };
    let send = |chunk: Chunk| {
        let sent = tx.send(chunk).is_ok();
        waker.wake();
        sent
    };
    let input = match decompressed(input, false) {
        Ok(i) => i,
        Err(source) => {
            send(Err(StdioError::Read {
                name,
                line: 0,
                source,
            }));
            return;
        }
    };
    let mut reader = RecordReader::new(input, format).with_max_line_bytes(max_line_bytes);
    let mut one = Vec::with_capacity(1);
    loop {
        // One record at a time, so that a read of the input finds every record before it
        // framed and sends it first.
        match reader.read_batch(&mut one, 1, usize::MAX) {
            Ok(batch) => {
                let full = {
                    let mut f = framed.lock().unwrap_or_else(PoisonError::into_inner);
                    f.1 += batch.bytes;
                    f.0.append(&mut one);
                    (f.0.len() >= CHUNK_RECORDS || f.1 >= CHUNK_BYTES).then(|| {
                        f.1 = 0;
                        std::mem::take(&mut f.0)
                    })
                };
                if let Some(chunk) = full {
                    if !send(Ok(chunk)) {
                        return;
                    }
                }
                if batch.end {
                    break;
                }
            }
            Err(source) => {
                let rest =
                    std::mem::take(&mut framed.lock().unwrap_or_else(PoisonError::into_inner).0);
                if !rest.is_empty() && !send(Ok(rest)) {
                    return;
                }
                send(Err(StdioError::Read {
                    name,
                    line: reader.lines(),
                    source,
                }));
                return;
            }
        }
    }
    let rest = std::mem::take(&mut framed.lock().unwrap_or_else(PoisonError::into_inner).0);
    if !rest.is_empty() && !send(Ok(rest)) {
        return;
    }
    // hang up before the last wake, so the worker finds the input ended
    drop(reader);
    drop(tx);
    waker.wake();
}

struct StdinReader {
    /// `None` on workers other than 0, and once the input ended.
    chunks: Option<Receiver<Chunk>>,
    pending: VecDeque<ReadResult>,
    name: String,
    /// One partition, the input, positioned by records handed out.
    ledger: EpochLedger<(), u64>,
    read: u64,
    acknowledged: Arc<AtomicU64>,
    end: Arc<AtomicBool>,
}

impl StdinReader {
    fn new(chunks: Option<Receiver<Chunk>>, source: &StdinSource) -> Self {
        StdinReader {
            chunks,
            pending: VecDeque::new(),
            name: source.name.clone(),
            ledger: EpochLedger::new(),
            read: 0,
            acknowledged: source.acknowledged.clone(),
            end: source.end.clone(),
        }
    }

    /// Takes what the reading thread already sent, then hangs up: the input ends there (the
    /// thread stops at its next send).
    fn end_after_buffered(&mut self) -> Result<(), StdioError> {
        let Some(rx) = self.chunks.take() else {
            return Ok(());
        };
        loop {
            match rx.try_recv() {
                Ok(Ok(chunk)) => self.pending.extend(chunk),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
        }
    }

    fn took(&mut self, n: usize) {
        if n > 0 {
            self.read += n as u64;
            self.ledger.record((), self.read);
        }
    }
}

impl SourceReader<ReadResult> for StdinReader {
    fn read(
        &mut self,
        out: &mut Vec<ReadResult>,
        max_records: usize,
    ) -> Result<ReadStatus, BoxError> {
        let max_records = max_records.max(1);
        if self.end.load(Ordering::SeqCst) {
            self.end_after_buffered()?;
        }
        let mut bytes = 0;
        let mut taken = 0;
        loop {
            while taken < max_records {
                let Some(r) = self.pending.pop_front() else {
                    break;
                };
                bytes += record_bytes(&r);
                out.push(r);
                taken += 1;
            }
            if taken >= max_records {
                self.took(taken);
                return Ok(ReadStatus::new(bytes, ReadState::More));
            }
            let Some(rx) = &self.chunks else {
                self.took(taken);
                return Ok(ReadStatus::new(bytes, ReadState::Exhausted));
            };
            match rx.try_recv() {
                Ok(Ok(chunk)) => self.pending.extend(chunk),
                Ok(Err(e)) => return Err(e.into()),
                Err(TryRecvError::Empty) => {
                    self.took(taken);
                    return Ok(ReadStatus::new(bytes, ReadState::Idle));
                }
                Err(TryRecvError::Disconnected) => self.chunks = None,
            }
        }
    }

    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }

    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        if let Some(((), n)) = self.ledger.ack(done).pop() {
            self.acknowledged.fetch_max(n, Ordering::SeqCst);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), BoxError> {
        if self.read > 0 {
            tracing::info!(
                input = %self.name,
                read = self.read,
                acknowledged = self.acknowledged.load(Ordering::SeqCst),
                "input closed"
            );
        }
        // the reading thread stops at its next send (a blocked stdin read cannot be undone)
        self.chunks = None;
        self.pending.clear();
        Ok(())
    }
}

/// Makes the writer a [`WriterSink`] writes to, once per worker.
pub type MakeWriter = Arc<dyn Fn() -> io::Result<Box<dyn Write + Send>> + Send + Sync>;

/// Writes messages one per line in an [`OutputFormat`] to writers made per worker.
///
/// Each worker has a writer thread: formatting and the blocking writes happen there, never on
/// the worker. An epoch's future resolves once its lines are written and flushed. Lines of one
/// `write_all` (up to about 1 MB of whole lines) are not interleaved with other workers' lines
/// when the writers share a locked handle such as `io::stdout()`.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use sluice::{MemorySource, Message, Pipeline};
/// use sluice_transforms::io::format::OutputFormat;
/// use sluice_transforms::io::stdio::WriterSink;
///
/// #[derive(Clone, Default)]
/// struct Shared(Arc<Mutex<Vec<u8>>>);
/// impl std::io::Write for Shared {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
///         self.0.lock().unwrap().extend_from_slice(b);
///         Ok(b.len())
///     }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
///
/// let buf = Shared::default();
/// let out = buf.clone();
/// let sink = WriterSink::new("memory", OutputFormat::Text, Arc::new(move || {
///     Ok(Box::new(out.clone()) as Box<dyn std::io::Write + Send>)
/// }));
/// Pipeline::new("write")
///     .run(move |p| {
///         p.read("read", MemorySource::from(vec![Message::new("a"), Message::new("b")]))
///             .write("write", sink.clone());
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(&*buf.0.lock().unwrap(), b"a\nb\n");
/// ```
#[derive(Clone)]
pub struct WriterSink {
    name: String,
    format: OutputFormat,
    make: MakeWriter,
}

impl WriterSink {
    /// A sink called `name` (its `kind`, and the name in errors) writing to what `make` returns.
    pub fn new(name: impl Into<String>, format: OutputFormat, make: MakeWriter) -> Self {
        WriterSink {
            name: name.into(),
            format,
            make,
        }
    }
}

impl Sink for WriterSink {
    type Input = Message;

    fn kind(&self) -> &str {
        &self.name
    }

    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        let output = (self.make)().map_err(|source| StdioError::Write {
            name: self.name.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (format, name) = (self.format, self.name.clone());
        std::thread::Builder::new()
            .name(format!("sluice-{}", self.name))
            .spawn(move || write_output(output, format, name, rx))
            .map_err(|source| StdioError::Thread {
                name: self.name.clone(),
                source,
            })?;
        Ok(Box::new(LineWriter {
            name: self.name.clone(),
            jobs: tx,
        }))
    }
}

struct Job {
    records: Vec<Message>,
    done: tokio::sync::oneshot::Sender<Result<(), StdioError>>,
}

fn write_output(
    mut output: Box<dyn Write + Send>,
    format: OutputFormat,
    name: String,
    jobs: mpsc::Receiver<Job>,
) {
    let mut buf = Vec::with_capacity(WRITE_CHUNK_BYTES + 64 * 1024);
    for job in jobs {
        let result = (|| {
            for m in &job.records {
                format.write_record(m, &mut buf);
                if buf.len() >= WRITE_CHUNK_BYTES {
                    output.write_all(&buf)?;
                    buf.clear();
                }
            }
            output.write_all(&buf)?;
            output.flush()
        })();
        buf.clear();
        if buf.capacity() > 4 * WRITE_CHUNK_BYTES {
            buf.shrink_to(WRITE_CHUNK_BYTES);
        }
        let result = result.map_err(|source| StdioError::Write {
            name: name.clone(),
            source,
        });
        let _ = job.done.send(result);
    }
}

struct LineWriter {
    name: String,
    jobs: mpsc::Sender<Job>,
}

impl SinkWriter<Message> for LineWriter {
    fn write(&mut self, _epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let (done, confirmed) = tokio::sync::oneshot::channel();
        let gone = StdioError::WriterGone(self.name.clone());
        if self.jobs.send(Job { records, done }).is_err() {
            return Box::pin(async move { Err(gone.into()) });
        }
        Box::pin(async move {
            match confirmed.await {
                Ok(result) => result.map(|()| Vec::new()).map_err(Into::into),
                Err(_) => Err(gone.into()),
            }
        })
    }
}

/// Writes messages to standard output, one per line in an [`OutputFormat`] (see
/// [`WriterSink`]).
#[derive(Clone)]
pub struct StdoutSink(WriterSink);

impl StdoutSink {
    /// A sink writing `format` lines to stdout.
    pub fn new(format: OutputFormat) -> Self {
        StdoutSink(WriterSink::new(
            "stdout",
            format,
            Arc::new(|| Ok(Box::new(io::stdout()) as Box<dyn Write + Send>)),
        ))
    }
}

impl Sink for StdoutSink {
    type Input = Message;
    fn kind(&self) -> &str {
        self.0.kind()
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        self.0.open(ctx)
    }
}

/// Writes messages to standard error, one per line in an [`OutputFormat`] (see
/// [`WriterSink`]); the usual place for dead letters of a command-line run.
#[derive(Clone)]
pub struct StderrSink(WriterSink);

impl StderrSink {
    /// A sink writing `format` lines to stderr.
    pub fn new(format: OutputFormat) -> Self {
        StderrSink(WriterSink::new(
            "stderr",
            format,
            Arc::new(|| Ok(Box::new(io::stderr()) as Box<dyn Write + Send>)),
        ))
    }
}

impl Sink for StderrSink {
    type Input = Message;
    fn kind(&self) -> &str {
        self.0.kind()
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        self.0.open(ctx)
    }
}
