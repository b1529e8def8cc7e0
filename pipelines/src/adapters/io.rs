//! Stand-ins for `sluice_transforms::io::{file, stdio, object}` until they land on main: a
//! file/stdin source of ndjson envelopes or text lines, stdout/stderr line sinks, and an object
//! sink on a local directory that writes whole batches atomically (temp file + rename).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use flate2::write::GzEncoder;
use sluice::{
    BoxError, DeadLetter, Epoch, Failure, Message, ReadState, ReadStatus, Sink, SinkContext,
    SinkWriter, Source, SourceContext, SourceReader, WriteFuture,
};
use tokio::sync::oneshot;

use super::template::PathTemplate;
use crate::config::{BatchConfig, Compression, InputFormat, OutputFormat};

/// The `error_type` of input that does not frame as a message.
pub const READ_INPUT_ERROR_TYPE: &str = "ReadInput";

/// Why a line does not frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Not a gcp-ingestion envelope.
    #[error("line {line} of `{file}` is not a message envelope: {source}")]
    Envelope {
        /// The file.
        file: String,
        /// The 1-based line.
        line: u64,
        /// The envelope error.
        source: sluice::EnvelopeError,
    },
}

// The SDK contract for unframable input is `Result<Message, DeadLetter>`.
#[allow(clippy::result_large_err)]
fn frame(format: InputFormat, line: &[u8], file: &str, n: u64) -> Result<Message, DeadLetter> {
    let mut position = BTreeMap::new();
    position.insert("input_file".to_string(), file.to_string());
    position.insert("input_line".to_string(), n.to_string());
    let position = Arc::new(position);
    let framed = match format {
        InputFormat::Json => Message::from_json_line(line),
        _ => Ok(Message::new(line.to_vec())),
    };
    framed
        .map(|m| m.with_position(position.clone()))
        .map_err(|source| {
            let err = InputError::Envelope {
                file: file.to_string(),
                line: n,
                source,
            };
            DeadLetter::new(
                Message::new(line.to_vec()).with_position(position),
                READ_INPUT_ERROR_TYPE,
                Failure::from(err),
            )
        })
}

fn trim_line(buf: &mut Vec<u8>) {
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
}

/// Files matching a glob, split between workers by file.
pub struct LocalFileSource {
    pattern: String,
    format: InputFormat,
}

impl LocalFileSource {
    /// Reads the files matching `pattern`.
    pub fn new(pattern: &str, format: InputFormat) -> Self {
        LocalFileSource {
            pattern: pattern.to_string(),
            format,
        }
    }

    /// The matching files, sorted.
    pub fn resolve(&self) -> Result<Vec<PathBuf>, BoxError> {
        let mut files: Vec<PathBuf> = glob::glob(&self.pattern)
            .map_err(|e| format!("bad input pattern `{}`: {e}", self.pattern))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("no input file matches `{}`", self.pattern).into());
        }
        Ok(files)
    }
}

impl Source for LocalFileSource {
    type Output = Result<Message, DeadLetter>;
    fn kind(&self) -> &str {
        "file"
    }
    fn describe(&self) -> String {
        self.pattern.clone()
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<Self::Output>>, BoxError> {
        let files: Vec<PathBuf> = self
            .resolve()?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % ctx.peers() == ctx.worker_index())
            .map(|(_, p)| p)
            .collect();
        let total = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(Box::new(FileReader {
            files: files.into_iter().rev().collect(),
            current: None,
            format: self.format,
            done: 0,
            total,
        }))
    }
}

struct FileReader {
    files: Vec<PathBuf>,
    current: Option<(BufReader<File>, String, u64)>,
    format: InputFormat,
    done: u64,
    total: u64,
}

impl SourceReader<Result<Message, DeadLetter>> for FileReader {
    fn read(
        &mut self,
        out: &mut Vec<Result<Message, DeadLetter>>,
        max_records: usize,
    ) -> Result<ReadStatus, BoxError> {
        let mut bytes = 0;
        let mut buf = Vec::new();
        while out.len() < max_records {
            if self.current.is_none() {
                let Some(path) = self.files.pop() else {
                    return Ok(ReadStatus::new(bytes, ReadState::Exhausted));
                };
                let f = File::open(&path)
                    .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
                self.current = Some((
                    BufReader::with_capacity(1 << 20, f),
                    path.display().to_string(),
                    0,
                ));
            }
            let Some((reader, name, line)) = self.current.as_mut() else {
                continue;
            };
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("cannot read `{name}`: {e}"))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            *line += 1;
            self.done += n as u64;
            bytes += n;
            trim_line(&mut buf);
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(frame(self.format, &buf, name, *line));
        }
        Ok(ReadStatus::new(bytes, ReadState::More))
    }

    fn progress(&self) -> Option<(u64, u64)> {
        Some((self.done, self.total))
    }
}

/// Standard input, read by worker 0 on a helper thread.
pub struct LocalStdinSource {
    format: InputFormat,
}

impl LocalStdinSource {
    /// Reads standard input in `format`.
    pub fn new(format: InputFormat) -> Self {
        LocalStdinSource { format }
    }
}

impl Source for LocalStdinSource {
    type Output = Result<Message, DeadLetter>;
    fn kind(&self) -> &str {
        "stdin"
    }
    fn describe(&self) -> String {
        "stdin".to_string()
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<Self::Output>>, BoxError> {
        let (tx, rx) = mpsc::sync_channel::<Option<Vec<u8>>>(10_000);
        if ctx.worker_index() == 0 {
            let waker = ctx.waker();
            std::thread::Builder::new()
                .name("sluice-stdin".into())
                .spawn(move || {
                    let mut input = BufReader::new(std::io::stdin().lock());
                    loop {
                        let mut buf = Vec::new();
                        match input.read_until(b'\n', &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                if tx.send(Some(buf)).is_err() {
                                    return;
                                }
                                waker.wake();
                            }
                        }
                    }
                    let _ = tx.send(None);
                    waker.wake();
                })?;
        } else {
            let _ = tx.send(None);
        }
        Ok(Box::new(StdinReader {
            rx,
            format: self.format,
            line: 0,
        }))
    }
}

struct StdinReader {
    rx: mpsc::Receiver<Option<Vec<u8>>>,
    format: InputFormat,
    line: u64,
}

impl SourceReader<Result<Message, DeadLetter>> for StdinReader {
    fn read(
        &mut self,
        out: &mut Vec<Result<Message, DeadLetter>>,
        max_records: usize,
    ) -> Result<ReadStatus, BoxError> {
        let mut bytes = 0;
        while out.len() < max_records {
            match self.rx.try_recv() {
                Ok(Some(mut buf)) => {
                    self.line += 1;
                    bytes += buf.len();
                    trim_line(&mut buf);
                    if !buf.iter().all(u8::is_ascii_whitespace) {
                        out.push(frame(self.format, &buf, "stdin", self.line));
                    }
                }
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => {
                    return Ok(ReadStatus::new(bytes, ReadState::Exhausted))
                }
                Err(mpsc::TryRecvError::Empty) => {
                    return Ok(ReadStatus::new(bytes, ReadState::Idle))
                }
            }
        }
        Ok(ReadStatus::new(bytes, ReadState::More))
    }
}

/// Appends `m` in `format` and a newline.
pub fn write_record(format: OutputFormat, m: &Message, scratch: &mut String, out: &mut Vec<u8>) {
    match format {
        OutputFormat::Json => {
            scratch.clear();
            m.write_json_line(scratch);
            out.extend_from_slice(scratch.as_bytes());
        }
        OutputFormat::Decoded | OutputFormat::Text => out.extend_from_slice(&m.payload),
    }
    out.push(b'\n');
}

/// One record per line on stdout or stderr.
pub struct LineSink {
    stderr: bool,
    format: OutputFormat,
}

impl LineSink {
    /// Writes to stdout.
    pub fn stdout(format: OutputFormat) -> Self {
        LineSink {
            stderr: false,
            format,
        }
    }
    /// Writes to stderr.
    pub fn stderr(format: OutputFormat) -> Self {
        LineSink {
            stderr: true,
            format,
        }
    }
}

impl Sink for LineSink {
    type Input = Message;
    fn kind(&self) -> &str {
        if self.stderr {
            "stderr"
        } else {
            "stdout"
        }
    }
    fn open(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        Ok(Box::new(LineWriter {
            stderr: self.stderr,
            format: self.format,
        }))
    }
}

struct LineWriter {
    stderr: bool,
    format: OutputFormat,
}

impl SinkWriter<Message> for LineWriter {
    fn write(&mut self, _epoch: Epoch, records: Vec<Message>) -> WriteFuture {
        let mut out = Vec::new();
        let mut scratch = String::new();
        for m in &records {
            write_record(self.format, m, &mut scratch, &mut out);
        }
        // One write per epoch under the lock, so lines of workers never interleave.
        let result = if self.stderr {
            std::io::stderr().lock().write_all(&out)
        } else {
            let mut s = std::io::stdout().lock();
            s.write_all(&out).and_then(|_| s.flush())
        };
        Box::pin(
            async move { result.map_err(|e| -> BoxError { format!("cannot write: {e}").into() }) },
        )
    }
}

/// Whole objects under a local directory, one per batch and key prefix.
pub struct LocalObjectSink {
    dir: PathBuf,
    template: PathTemplate,
    format: OutputFormat,
    compression: Compression,
    batch: BatchConfig,
}

impl LocalObjectSink {
    /// Objects under `dir`, keyed by `template`.
    pub fn new(
        dir: PathBuf,
        template: PathTemplate,
        format: OutputFormat,
        compression: Compression,
        batch: BatchConfig,
    ) -> Self {
        LocalObjectSink {
            dir,
            template,
            format,
            compression,
            batch,
        }
    }
}

impl Sink for LocalObjectSink {
    type Input = Message;
    fn kind(&self) -> &str {
        "file"
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<Message>>, BoxError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create `{}`: {e}", self.dir.display()))?;
        Ok(Box::new(ObjectWriter {
            dir: self.dir.clone(),
            template: self.template.clone(),
            format: self.format,
            compression: self.compression,
            batch: self.batch,
            name: format!("{}-{}", ctx.run_id(), ctx.worker_index()),
            runtime: ctx.runtime().clone(),
            buffers: HashMap::new(),
            seq: 0,
            scratch: String::new(),
        }))
    }
}

type Waiter = oneshot::Sender<Result<(), String>>;

struct Batch {
    bytes: Vec<u8>,
    records: u64,
    started: Instant,
    waiters: Vec<Waiter>,
}

struct ObjectWriter {
    dir: PathBuf,
    template: PathTemplate,
    format: OutputFormat,
    compression: Compression,
    batch: BatchConfig,
    name: String,
    runtime: tokio::runtime::Handle,
    buffers: HashMap<String, Batch>,
    seq: u64,
    scratch: String,
}

impl ObjectWriter {
    fn seal(&mut self, prefix: String, batch: Batch) {
        self.seq += 1;
        let ext = match self.compression {
            Compression::Gzip => "ndjson.gz",
            Compression::None => "ndjson",
        };
        let dir = self.dir.join(&prefix);
        let file = format!("{}-{:06}.{ext}", self.name, self.seq);
        let compression = self.compression;
        self.runtime.spawn_blocking(move || {
            let result = write_object(&dir, &file, compression, &batch.bytes)
                .map_err(|e| format!("cannot write object `{}`: {e}", dir.join(&file).display()));
            for w in batch.waiters {
                let _ = w.send(result.clone());
            }
        });
    }

    fn seal_full(&mut self, all: bool) {
        let max_bytes = self.batch.max_bytes.0 as usize;
        let max_age = self.batch.max_age.0;
        let full: Vec<String> = self
            .buffers
            .iter()
            .filter(|(_, b)| {
                all || b.bytes.len() >= max_bytes
                    || b.records >= self.batch.max_records
                    || b.started.elapsed() >= max_age
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in full {
            if let Some(b) = self.buffers.remove(&k) {
                self.seal(k, b);
            }
        }
    }
}

fn write_object(
    dir: &std::path::Path,
    file: &str,
    compression: Compression,
    bytes: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // A reader sees the whole object or none: write a hidden temp file, sync, rename.
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut f = File::create(&tmp)?;
    match compression {
        Compression::Gzip => {
            let mut gz = GzEncoder::new(&mut f, flate2::Compression::fast());
            gz.write_all(bytes)?;
            gz.finish()?;
        }
        Compression::None => f.write_all(bytes)?,
    }
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(file))?;
    Ok(())
}

/// The prefix records go to when the template needs an attribute they lack.
pub const UNROUTABLE_PREFIX: &str = "_unroutable/";

impl SinkWriter<Message> for ObjectWriter {
    fn write(&mut self, _epoch: Epoch, records: Vec<Message>) -> WriteFuture {
        let mut touched: Vec<String> = Vec::new();
        for m in &records {
            let prefix = self.template.render(&m.attributes).unwrap_or_else(|missing| {
                tracing::warn!(attribute = %missing, "record lacks a path attribute; written under {UNROUTABLE_PREFIX}");
                UNROUTABLE_PREFIX.to_string()
            });
            let b = self.buffers.entry(prefix.clone()).or_insert_with(|| Batch {
                bytes: Vec::new(),
                records: 0,
                started: Instant::now(),
                waiters: Vec::new(),
            });
            write_record(self.format, m, &mut self.scratch, &mut b.bytes);
            b.records += 1;
            if !touched.contains(&prefix) {
                touched.push(prefix);
            }
        }
        let mut receivers = Vec::new();
        for p in touched {
            let (tx, rx) = oneshot::channel();
            if let Some(b) = self.buffers.get_mut(&p) {
                b.waiters.push(tx);
            }
            receivers.push(rx);
        }
        self.seal_full(false);
        Box::pin(async move {
            for rx in receivers {
                rx.await
                    .map_err(|_| -> BoxError { "object writer stopped".into() })?
                    .map_err(BoxError::from)?;
            }
            Ok(())
        })
    }

    fn flush(&mut self) {
        self.seal_full(true);
    }
}

/// Reads a whole object written by [`LocalObjectSink`] (gzip or not) as lines, for tests.
pub fn read_object_lines(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut raw = Vec::new();
    File::open(path)?.read_to_end(&mut raw)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut s)?;
        s
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    Ok(text.lines().map(String::from).collect())
}
