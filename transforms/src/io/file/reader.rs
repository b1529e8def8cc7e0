//! Framing a byte stream into messages: lines (`json`, `text`) or Heka frames, with bounded
//! memory and a dead letter for every record that does not decode.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_schemas::heka::{
    heka_to_message, FrameDecoder, FrameErrorKind, DEFAULT_MAX_MESSAGE_LEN, RECORD_SEPARATOR,
};

use sluice::{Bytes, DeadLetter, Failure, Message, SourcePosition};

use crate::io::format::{FormatError, InputFormat, READ_INPUT_ERROR_TYPE};

/// The default longest line a reader keeps: a gcp-ingestion envelope of an 8 MB payload
/// (base64) with generous attributes fits well below it.
pub const DEFAULT_MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// Bytes read from the stream at a time when framing Heka.
const FILL_BYTES: usize = 64 * 1024;
/// The longest a valid frame can be (separator, header length, header, separator, message):
/// a broken stretch is cut into dead letters of at most about this size.
const MAX_FRAME_SPAN: usize = DEFAULT_MAX_MESSAGE_LEN + 3 + 255;

/// The record a reader yields: a message, or the dead letter of input it could not decode.
pub type ReadResult = Result<Message, DeadLetter>;

/// What one [`RecordReader::read_batch`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records appended (messages and dead letters).
    pub records: usize,
    /// Their size: [`Message::byte_size`] of messages and dead letters' originals.
    pub bytes: usize,
    /// The stream is finished: no record follows.
    pub end: bool,
}

/// Frames a byte stream into messages in an [`InputFormat`].
///
/// - `json`: one gcp-ingestion envelope per line; `text`: each line is a payload. Lines end at
///   `\n` (a `\r` before it is dropped too); lines of ASCII whitespace only are skipped; a
///   line over the length limit becomes a dead letter holding its first bytes.
/// - `heka`: Heka stream framing; a broken stretch becomes one dead letter with its raw bytes,
///   and reading resumes at the next frame.
///
/// Every message carries [`Message::position`] (`input_file` if named, and `input_line`
/// (1-based) or `input_offset` (byte offset of the frame in the decompressed stream)); a dead
/// letter has the same position, error type [`READ_INPUT_ERROR_TYPE`] and the raw bytes as
/// payload.
///
/// ```
/// use sluice_transforms::io::file::RecordReader;
/// use sluice_transforms::io::format::InputFormat;
/// let input = &b"{\"payload\":\"aGk=\"}\n\nnot json\n"[..];
/// let mut reader = RecordReader::new(input, InputFormat::Json).with_file_name("a.ndjson");
/// let mut out = Vec::new();
/// let batch = reader.read_batch(&mut out, 100, 1 << 20).unwrap();
/// assert!(batch.end);
/// assert_eq!(out[0].as_ref().unwrap().payload, "hi");
/// let dead = out[1].as_ref().unwrap_err();
/// assert_eq!(dead.original.payload, "not json");
/// assert_eq!(dead.source_position["input_line"], "3");
/// assert_eq!(dead.source_position["input_file"], "a.ndjson");
/// ```
pub struct RecordReader<R> {
    inner: R,
    format: InputFormat,
    /// Shared by every position this reader makes: one allocation per file, not per record.
    file: Option<Arc<str>>,
    max_line_bytes: usize,
    /// Lines consumed (json, text).
    lines: u64,
    /// Decompressed bytes consumed.
    offset: u64,
    eof: bool,
    line: Vec<u8>,
    /// Heka: bytes read but not yet framed, from `pending_pos`.
    pending: Vec<u8>,
    pending_pos: usize,
}

impl<R: BufRead> RecordReader<R> {
    /// A reader of `inner` in `format`.
    pub fn new(inner: R, format: InputFormat) -> Self {
        RecordReader {
            inner,
            format,
            file: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            lines: 0,
            offset: 0,
            eof: false,
            line: Vec::new(),
            pending: Vec::new(),
            pending_pos: 0,
        }
    }

    /// Names the input in positions (`input_file`).
    pub fn with_file_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.file = Some(name.into());
        self
    }

    /// Sets the longest line kept (default [`DEFAULT_MAX_LINE_BYTES`]).
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Lines consumed so far (`json`, `text`), blank ones included.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Decompressed bytes framed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Starts counting at a position already passed (the stream was opened there, e.g. by
    /// seeking a plain file to a checkpoint's offset): `lines` lines and `offset` bytes.
    pub fn starting_at(mut self, lines: u64, offset: u64) -> Self {
        self.lines = lines;
        self.offset = offset;
        self
    }

    /// Consumes the stream up to `lines` lines (`json`, `text`) or `offset` bytes (`heka`)
    /// from its start, without framing records: how a reader resumes at a checkpoint of a
    /// stream it cannot seek (gzip). Returns false if the stream ended first. Call it before
    /// the first `read_batch`.
    pub fn skip_to(&mut self, lines: u64, offset: u64) -> io::Result<bool> {
        match self.format {
            InputFormat::Json | InputFormat::Text => {
                // bytes consumed since the last newline: a last line without one still counts
                let mut partial = false;
                while self.lines < lines {
                    let buf = match self.inner.fill_buf() {
                        Ok(b) => b,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if buf.is_empty() {
                        self.eof = true;
                        if partial {
                            self.lines += 1;
                        }
                        break;
                    }
                    let wanted = (lines - self.lines) as usize;
                    let (used, found) = match memchr::memchr_iter(b'\n', buf).nth(wanted - 1) {
                        Some(i) => (i + 1, wanted),
                        None => (buf.len(), memchr::memchr_iter(b'\n', buf).count()),
                    };
                    partial = buf[used - 1] != b'\n';
                    self.inner.consume(used);
                    self.offset += used as u64;
                    self.lines += found as u64;
                }
                Ok(self.lines >= lines)
            }
            InputFormat::Heka => {
                while self.offset < offset {
                    let buf = match self.inner.fill_buf() {
                        Ok(b) => b,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if buf.is_empty() {
                        self.eof = true;
                        break;
                    }
                    let used = buf.len().min((offset - self.offset) as usize);
                    self.inner.consume(used);
                    self.offset += used as u64;
                }
                Ok(self.offset >= offset)
            }
        }
    }

    /// Appends records to `out` until `max_records` records or `max_bytes` bytes were added or
    /// the stream ends. An `Err` is an IO error of the stream itself (a read failure, corrupt
    /// gzip), after which the reader should not be used.
    pub fn read_batch(
        &mut self,
        out: &mut Vec<ReadResult>,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<Batch> {
        match self.format {
            InputFormat::Json | InputFormat::Text => self.read_lines(out, max_records, max_bytes),
            InputFormat::Heka => self.read_frames(out, max_records, max_bytes),
        }
    }

    /// Reads the next line into `self.line` (without its newline, at most `max_line_bytes`);
    /// returns its full length, or `None` at the end of the stream.
    fn next_line(&mut self) -> io::Result<Option<u64>> {
        self.line.clear();
        let mut length: u64 = 0;
        let mut any = false;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                self.eof = true;
                return Ok(any.then_some(length));
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = self.max_line_bytes.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            length += chunk.len() as u64;
            self.inner.consume(used);
            self.offset += used as u64;
            if done {
                return Ok(Some(length));
            }
        }
    }

    fn read_lines(
        &mut self,
        out: &mut Vec<ReadResult>,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<Batch> {
        let mut batch = Batch::default();
        while batch.records < max_records && batch.bytes < max_bytes {
            let Some(mut length) = self.next_line()? else {
                batch.end = true;
                return Ok(batch);
            };
            self.lines += 1;
            if length as usize == self.line.len() && self.line.last() == Some(&b'\r') {
                self.line.pop();
                length -= 1;
            }
            if self.line.iter().all(u8::is_ascii_whitespace) && length as usize == self.line.len() {
                continue;
            }
            let position = SourcePosition::Line {
                file: self.file.clone(),
                line: self.lines,
            };
            let too_long = length as usize > self.line.len();
            // An over-long line is kept as its head only: it cannot be replayed whole anyway,
            // and a copy of tens of MB (then its base64 in the dead letter's envelope) would
            // multiply the memory one bad line takes.
            let kept = if too_long {
                self.line.len().min(LONG_LINE_HEAD_BYTES)
            } else {
                self.line.len()
            };
            let raw = Bytes::copy_from_slice(&self.line[..kept]);
            if too_long || self.line.capacity() > LARGE_LINE_BYTES {
                // the next lines need no buffer of this size
                self.line = Vec::new();
            }
            let record = if too_long {
                Err(FormatError::LineTooLong {
                    length,
                    max: self.max_line_bytes,
                })
            } else {
                match self.format {
                    InputFormat::Json => {
                        Message::from_json_line(&raw).map_err(FormatError::InvalidEnvelope)
                    }
                    _ => Ok(Message::new(raw.clone())),
                }
            };
            let record = match record {
                Ok(m) => Ok(m.with_position(position)),
                Err(e) => Err(dead_letter(raw, position, &e)),
            };
            batch.records += 1;
            batch.bytes += record_bytes(&record);
            out.push(record);
        }
        batch.end = self.eof && self.at_end()?;
        Ok(batch)
    }

    /// True when nothing is left to read (without consuming anything).
    fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.pending_pos >= self.pending.len() && self.inner.fill_buf()?.is_empty())
    }

    /// Appends at least `min` more bytes of the stream to `pending` (fewer at its end).
    fn fill(&mut self, min: usize) -> io::Result<()> {
        if self.pending_pos > 0 {
            self.pending.drain(..self.pending_pos);
            self.pending_pos = 0;
        }
        let target = self.pending.len() + min;
        while self.pending.len() < target {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                self.eof = true;
                break;
            }
            let n = buf.len();
            self.pending.extend_from_slice(buf);
            self.inner.consume(n);
        }
        Ok(())
    }

    /// Makes the broken stretch read so far, if any, one dead letter.
    fn flush_stretch(
        &self,
        stretch: &mut Option<Stretch>,
        out: &mut Vec<ReadResult>,
        batch: &mut Batch,
    ) {
        let Some(s) = stretch.take() else { return };
        let Some(first) = s.first else { return };
        let position = SourcePosition::Offset {
            file: self.file.clone(),
            offset: s.offset,
        };
        let error = if s.frames == 1 {
            FormatError::BrokenFrame(first)
        } else {
            FormatError::BrokenStretch {
                length: s.raw.len(),
                frames: s.frames,
                first: first.kind().to_string(),
            }
        };
        let record = Err(dead_letter(Bytes::from(s.raw), position, &error));
        batch.records += 1;
        batch.bytes += record_bytes(&record);
        out.push(record);
    }

    fn read_frames(
        &mut self,
        out: &mut Vec<ReadResult>,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<Batch> {
        let mut batch = Batch::default();
        let mut stretch: Option<Stretch> = None;
        while batch.records < max_records && batch.bytes < max_bytes {
            let avail = &self.pending[self.pending_pos..];
            if avail.is_empty() {
                if self.eof {
                    break;
                }
                self.fill(FILL_BYTES)?;
                continue;
            }
            let mut frames = FrameDecoder::new(avail);
            let Some(item) = frames.next() else {
                break;
            };
            let used = frames.position();
            let can_grow = !self.eof && avail.len() < MAX_FRAME_SPAN;
            // A frame cut by the end of the buffer looks truncated, and a broken stretch that
            // runs to the end of the buffer may go on; a good frame needs the next byte to be
            // checked. Read more (doubling, so a big frame costs O(n log n)) before deciding,
            // up to the largest span a frame can have.
            let cut = match &item {
                Ok(_) => used == avail.len() && !self.eof,
                Err(e) => matches!(e.kind(), FrameErrorKind::Truncated) || used == avail.len(),
            };
            if cut && can_grow {
                let more = avail.len().max(FILL_BYTES);
                self.fill(more)?;
                continue;
            }
            // A frame followed by neither a frame start nor the end may have swallowed the
            // start of a frame that this buffer cuts short; the decoder can only tell once that
            // frame is whole, so read more first.
            if can_grow
                && item.is_ok()
                && used < avail.len()
                && avail[used] != RECORD_SEPARATOR
                && holds_truncated_frame(avail, used)
            {
                let more = avail.len().max(FILL_BYTES);
                self.fill(more)?;
                continue;
            }
            match item {
                Ok(heka) => {
                    self.flush_stretch(&mut stretch, out, &mut batch);
                    let position = SourcePosition::Offset {
                        file: self.file.clone(),
                        offset: self.offset,
                    };
                    let record = match heka_to_message(&heka) {
                        Ok(m) => Ok(m.with_position(position)),
                        Err(e) => Err(dead_letter(
                            Bytes::copy_from_slice(&avail[..used]),
                            position,
                            &FormatError::InvalidHeka(e),
                        )),
                    };
                    batch.records += 1;
                    batch.bytes += record_bytes(&record);
                    out.push(record);
                }
                Err(e) => {
                    // A broken stretch is one dead letter, however many frames the decoder
                    // finds broken in it (2 MB of separators would be 2 million), cut at the
                    // longest span a frame can have.
                    let s = stretch.get_or_insert_with(|| Stretch {
                        offset: self.offset,
                        raw: Vec::new(),
                        frames: 0,
                        first: None,
                    });
                    s.raw.extend_from_slice(&avail[..used]);
                    s.frames += 1;
                    s.first.get_or_insert(e);
                    if s.raw.len() >= MAX_FRAME_SPAN {
                        self.pending_pos += used;
                        self.offset += used as u64;
                        self.flush_stretch(&mut stretch, out, &mut batch);
                        continue;
                    }
                }
            }
            self.pending_pos += used;
            self.offset += used as u64;
        }
        self.flush_stretch(&mut stretch, out, &mut batch);
        batch.end = self.eof && self.pending_pos >= self.pending.len();
        Ok(batch)
    }
}

/// Consecutive broken frames being gathered into one dead letter.
struct Stretch {
    /// Where it starts in the decompressed stream.
    offset: u64,
    raw: Vec<u8>,
    frames: usize,
    first: Option<sluice_schemas::heka::FrameError>,
}

/// Whether a frame starting inside `input[..end]` runs past the end of `input`.
fn holds_truncated_frame(input: &[u8], end: usize) -> bool {
    memchr::memchr_iter(RECORD_SEPARATOR, &input[1..end]).any(|i| {
        matches!(
            FrameDecoder::new(&input[i + 1..]).next(),
            Some(Err(e)) if matches!(e.kind(), FrameErrorKind::Truncated)
        )
    })
}

/// What the dead letter of a line longer than the limit keeps of it: its first 64 KiB.
pub const LONG_LINE_HEAD_BYTES: usize = 64 << 10;

/// A line buffer grown past this is freed once its line is copied out (the next line starts a
/// new one), so a single large line does not keep its buffer for the rest of the file.
const LARGE_LINE_BYTES: usize = 1 << 20;

/// The dead letter of a record that does not decode.
pub(crate) fn dead_letter(raw: Bytes, position: SourcePosition, error: &FormatError) -> DeadLetter {
    DeadLetter::new(
        Message::new(raw).with_position(position),
        READ_INPUT_ERROR_TYPE,
        Failure::from_error(error),
    )
}

pub(crate) fn record_bytes(record: &ReadResult) -> usize {
    match record {
        Ok(m) => m.byte_size(),
        Err(d) => d.original.byte_size(),
    }
}

/// Counts the bytes read from the underlying (compressed) input, for progress.
pub(crate) struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> CountingReader<R> {
    pub(crate) fn new(inner: R, count: Arc<AtomicU64>) -> Self {
        CountingReader { inner, count }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Wraps `input` in a gunzip decoder when it starts with the gzip magic or `gzip` is set (a
/// `.gz` name); an empty input stays empty either way. Several gzip members are read as one
/// stream, as `gzip -d` does.
pub(crate) fn decompressed<R: Read + Send + 'static>(
    input: R,
    gzip: bool,
) -> io::Result<Box<dyn BufRead + Send>> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let head = input.fill_buf()?;
    if head.is_empty() {
        return Ok(Box::new(input));
    }
    if gzip || head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            64 * 1024,
            flate2::bufread::MultiGzDecoder::new(input),
        )))
    } else {
        Ok(Box::new(input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], format: InputFormat, max_line: usize) -> Vec<ReadResult> {
        let mut r = RecordReader::new(input, format).with_max_line_bytes(max_line);
        let mut out = Vec::new();
        loop {
            let b = r.read_batch(&mut out, 2, usize::MAX).unwrap();
            assert!(b.records <= 2);
            if b.end {
                return out;
            }
        }
    }

    #[test]
    fn text_lines_keep_bytes_and_skip_blank_lines() {
        let out = read_all(b"a\r\n\n  \n\xffb\nlast", InputFormat::Text, 100);
        let payloads: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().unwrap().payload.clone())
            .collect();
        assert_eq!(payloads, vec![&b"a"[..], &b"\xffb"[..], &b"last"[..]]);
        let lines: Vec<_> = out
            .iter()
            .map(|r| match r.as_ref().unwrap().position {
                Some(SourcePosition::Line { line, .. }) => line,
                ref p => panic!("not a line position: {p:?}"),
            })
            .collect();
        assert_eq!(lines, [1, 4, 5]);
    }

    #[test]
    fn skip_to_resumes_lines_where_a_full_read_would_be() {
        let input = b"a\n\nb\r\nc\nlast";
        for skip in 0..=5u64 {
            // a reader that skipped `skip` lines yields what a full read yields after them
            let mut full = RecordReader::new(&input[..], InputFormat::Text);
            let mut all = Vec::new();
            while !full.read_batch(&mut all, 1, usize::MAX).unwrap().end {}
            let mut r = RecordReader::new(
                io::BufReader::with_capacity(2, &input[..]),
                InputFormat::Text,
            );
            assert!(r.skip_to(skip, 0).unwrap());
            assert_eq!(r.lines(), skip);
            let mut rest = Vec::new();
            while !r.read_batch(&mut rest, 1, usize::MAX).unwrap().end {}
            let after: Vec<_> = all
                .into_iter()
                .filter(|m| match m.as_ref().unwrap().position {
                    Some(SourcePosition::Line { line, .. }) => line > skip,
                    _ => false,
                })
                .collect();
            assert_eq!(rest, after, "skip {skip}");
        }
        let mut r = RecordReader::new(&input[..], InputFormat::Text);
        assert!(!r.skip_to(6, 0).unwrap(), "the stream has 5 lines");
        assert_eq!(r.lines(), 5);
        assert_eq!(r.offset(), input.len() as u64);
    }

    #[test]
    fn long_lines_are_dead_letters_with_their_head() {
        let out = read_all(b"short\n0123456789abc\nok\n", InputFormat::Text, 10);
        assert_eq!(out.len(), 3);
        let dl = out[1].as_ref().unwrap_err();
        assert_eq!(dl.original.payload, "0123456789");
        assert_eq!(dl.error_type, READ_INPUT_ERROR_TYPE);
        assert_eq!(
            dl.error_message,
            "line of 13 bytes exceeds the limit of 10 bytes"
        );
        assert!(dl.exception_class.ends_with("FormatError::LineTooLong"));
        assert_eq!(out[2].as_ref().unwrap().payload, "ok");
    }

    #[test]
    fn a_long_line_keeps_only_its_head_and_frees_its_buffer() {
        let max = 4 * LONG_LINE_HEAD_BYTES;
        let mut input = vec![b'x'; 3 * max];
        input.extend_from_slice(
            b"
ok
",
        );
        let mut r = RecordReader::new(&input[..], InputFormat::Text).with_max_line_bytes(max);
        let mut out = Vec::new();
        r.read_batch(&mut out, 10, usize::MAX).unwrap();
        assert_eq!(out.len(), 2);
        let dl = out[0].as_ref().unwrap_err();
        assert_eq!(dl.original.payload.len(), LONG_LINE_HEAD_BYTES);
        assert_eq!(
            dl.error_message,
            format!("line of {} bytes exceeds the limit of {max} bytes", 3 * max)
        );
        assert_eq!(out[1].as_ref().unwrap().payload, "ok");
        assert!(r.line.capacity() < max, "{}", r.line.capacity());
    }

    #[test]
    fn large_lines_leave_the_next_lines_whole() {
        let big = |c: u8| vec![c; 2 * LARGE_LINE_BYTES];
        let input = [
            big(b'a'),
            b"\nshort\n".to_vec(),
            big(b'b'),
            b"\nlast".to_vec(),
        ]
        .concat();
        let out = read_all(&input, InputFormat::Text, 4 * LARGE_LINE_BYTES);
        let payloads: Vec<Vec<u8>> = out
            .into_iter()
            .map(|r| r.unwrap().payload.to_vec())
            .collect();
        assert_eq!(
            payloads,
            [big(b'a'), b"short".to_vec(), big(b'b'), b"last".to_vec()]
        );
    }

    #[test]
    fn json_bad_line_keeps_raw_bytes_and_line() {
        let out = read_all(
            b"{\"payload\":\"eA==\",\"attributeMap\":{\"a\":\"b\"}}\n{\"payload\":\"***\"}\r\n",
            InputFormat::Json,
            1000,
        );
        assert_eq!(
            out[0].as_ref().unwrap(),
            &Message::new("x").with_attribute("a", "b")
        );
        let dl = out[1].as_ref().unwrap_err();
        assert_eq!(dl.original.payload, "{\"payload\":\"***\"}");
        assert_eq!(dl.source_position["input_line"], "2");
        assert!(dl.exception_class.ends_with("FormatError::InvalidEnvelope"));
    }

    #[test]
    fn gzip_is_detected_by_magic() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"one\ntwo\n").unwrap();
        let bytes = gz.finish().unwrap();
        let r = decompressed(io::Cursor::new(bytes), false).unwrap();
        let mut reader = RecordReader::new(r, InputFormat::Text);
        let mut out = Vec::new();
        let b = reader.read_batch(&mut out, 10, usize::MAX).unwrap();
        assert_eq!(b.records, 2);
        assert!(b.end);
        let empty = decompressed(io::Cursor::new(Vec::new()), true).unwrap();
        let b = RecordReader::new(empty, InputFormat::Text)
            .read_batch(&mut out, 10, usize::MAX)
            .unwrap();
        assert_eq!((b.records, b.end), (0, true));
    }

    fn heka(payload: &str) -> sluice_schemas::heka::HekaMessage {
        use sluice_schemas::heka::{Field, HekaMessage};
        HekaMessage {
            uuid: vec![3; 16],
            timestamp: 0,
            // 0x1e inside a message must not be taken for a frame start
            fields: vec![
                Field::bytes("content", payload.as_bytes().to_vec()),
                Field::string("uri", "/submit/\u{1e}x"),
            ],
            ..Default::default()
        }
    }

    /// A reader that returns at most 7 bytes per read, so frames are cut by the buffer.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn heka_frames_cut_by_the_buffer_and_garbage_between_them() {
        use sluice_schemas::heka::encode_frame;
        let big = "x".repeat(200_000);
        let mut stream = encode_frame(&heka("a"));
        stream.extend_from_slice(b"garbage\x1e\x05");
        stream.extend(encode_frame(&heka(&big)));
        let good = encode_frame(&heka("c"));
        stream.extend_from_slice(&good[..good.len() - 4]);
        stream.extend(encode_frame(&heka("d")));
        let out = read_all_from(
            io::BufReader::with_capacity(5, Trickle(&stream)),
            InputFormat::Heka,
        );
        let ok: Vec<_> = out
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|m| m.payload.len())
            .collect();
        assert_eq!(ok, vec![1, 200_000, 1]);
        let dead: Vec<_> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        let raw: usize = dead.iter().map(|d| d.original.payload.len()).sum();
        let good_bytes: usize = [heka("a"), heka(&big), heka("d")]
            .iter()
            .map(|h| encode_frame(h).len())
            .sum();
        assert_eq!(
            raw + good_bytes,
            stream.len(),
            "every byte is accounted for"
        );
        assert!(dead.iter().all(|d| d.error_type == READ_INPUT_ERROR_TYPE));
        // the garbage and the broken frame after it are one stretch, so one dead letter
        assert_eq!(dead[0].original.payload, &b"garbage\x1e\x05"[..]);
        assert_eq!(
            dead[0].source_position["input_offset"],
            encode_frame(&heka("a")).len().to_string()
        );
        let m = out[0].as_ref().unwrap();
        assert_eq!(m.attribute("uri"), Some("/submit/\u{1e}x"));
    }

    #[test]
    fn a_broken_stretch_is_one_dead_letter_with_its_offset_and_length() {
        use sluice_schemas::heka::encode_frame;
        let good = encode_frame(&heka("a"));
        let flood = vec![RECORD_SEPARATOR; 2_000_000];
        let mut stream = good.clone();
        stream.extend_from_slice(&flood);
        stream.extend_from_slice(&good);
        let out = read_all_from(
            io::BufReader::with_capacity(64 * 1024, &stream[..]),
            InputFormat::Heka,
        );
        assert_eq!(out.len(), 3, "good, one dead letter, good");
        assert!(out[0].is_ok() && out[2].is_ok());
        let dl = out[1].as_ref().unwrap_err();
        assert_eq!(dl.original.payload.len(), flood.len());
        assert_eq!(dl.source_position["input_offset"], good.len().to_string());
        assert!(dl.exception_class.ends_with("FormatError::BrokenStretch"));
        assert!(
            dl.error_message.contains("2000000 bytes"),
            "{}",
            dl.error_message
        );

        // a stretch longer than a frame can be is cut, each piece at its own offset
        let huge = vec![RECORD_SEPARATOR; MAX_FRAME_SPAN + 10];
        let out = read_all_from(
            io::BufReader::with_capacity(64 * 1024, &huge[..]),
            InputFormat::Heka,
        );
        let dead: Vec<_> = out.iter().map(|r| r.as_ref().unwrap_err()).collect();
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].original.payload.len(), MAX_FRAME_SPAN);
        assert_eq!(dead[1].original.payload.len(), 10);
        assert_eq!(
            dead[1].source_position["input_offset"],
            MAX_FRAME_SPAN.to_string()
        );
    }

    fn read_all_from<R: BufRead>(input: R, format: InputFormat) -> Vec<ReadResult> {
        let mut r = RecordReader::new(input, format);
        let mut out = Vec::new();
        while !r.read_batch(&mut out, 3, usize::MAX).unwrap().end {}
        out
    }
}
