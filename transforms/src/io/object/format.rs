//! How batches are compressed. Records become lines with the shared
//! [`OutputFormat`](crate::io::format::OutputFormat).

use std::io::Write;

use serde::{Deserialize, Serialize};

/// Compression of whole objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// gzip (one member per object), extension `.gz`.
    #[default]
    Gzip,
    /// Plain bytes.
    None,
}

impl Compression {
    /// The extra file extension, with its dot (`".gz"` or `""`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::None => "",
        }
    }
}

/// What one gzip encoder holds besides its output: zlib-rs's deflate state (window, hash
/// chains, pending buffer: about 400 KB at every level, allocated when the encoder is made)
/// and flate2's 32 KiB staging buffer. Checked against a counting allocator in
/// `tests/object_memory.rs`, so a new flate2 or zlib-rs that needs more fails a test.
pub(crate) const GZIP_STATE_BYTES: usize = 416 * 1024;

/// The smallest capacity a part buffer grows from.
const MIN_GROWTH: usize = 4096;

/// How many bytes more than its input one gzip append may pass to the part buffer: flate2
/// moves up to 32 KiB of compressed output per write, and deflate expands incompressible
/// input by a few bytes per block.
const GZIP_APPEND_SLACK: usize = 64 * 1024;

/// The capacity of a part buffer of `part_size` holding `len` bytes in `cap` after `growth`
/// more bytes, at most: it doubles (from [`MIN_GROWTH`]) up to a part, then grows exactly.
fn capacity_after(part_size: usize, len: usize, cap: usize, growth: usize) -> usize {
    let need = len + growth;
    if need <= cap {
        cap
    } else {
        need.max((2 * need).max(MIN_GROWTH).min(part_size))
    }
}

/// The compressed bytes of an object not yet handed to the store: at most about one part.
///
/// It grows by doubling up to `part_size` and no further (the writer takes the part as soon as
/// it is full), so its capacity, which is what the writer counts, stays near what it holds.
#[derive(Debug, Default)]
pub(crate) struct PartBuffer {
    buf: Vec<u8>,
    part_size: usize,
}

impl PartBuffer {
    fn new(part_size: usize) -> Self {
        debug_assert!(part_size > 0);
        PartBuffer {
            buf: Vec::new(),
            part_size,
        }
    }
}

impl Write for PartBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let doubled = (self.buf.capacity() * 2).max(MIN_GROWTH);
            let target = need.max(doubled.min(self.part_size));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The encoder of one object being written: records go in, compressed bytes collect in a
/// [`PartBuffer`] that the writer empties one part at a time.
pub(crate) enum Encoder {
    Plain(PartBuffer),
    // boxed: the encoder is large, and there is one per open batch
    Gzip(Box<flate2::write::GzEncoder<PartBuffer>>),
}

impl Encoder {
    /// An encoder whose part buffer grows up to `part_size` bytes.
    pub(crate) fn new(compression: Compression, part_size: usize) -> Self {
        let out = PartBuffer::new(part_size);
        match compression {
            Compression::Gzip => Encoder::Gzip(Box::new(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            ))),
            Compression::None => Encoder::Plain(out),
        }
    }

    /// Appends bytes. Writing into memory cannot fail, so neither can this.
    pub(crate) fn append(&mut self, bytes: &[u8]) {
        match self {
            // Neither a PartBuffer nor a GzEncoder over one can fail: both write to memory.
            Encoder::Plain(out) => {
                let _ = out.write_all(bytes);
            }
            Encoder::Gzip(gz) => {
                let _ = gz.write_all(bytes);
            }
        }
    }

    fn out(&self) -> &PartBuffer {
        match self {
            Encoder::Plain(out) => out,
            Encoder::Gzip(gz) => gz.get_ref(),
        }
    }

    fn out_mut(&mut self) -> &mut PartBuffer {
        match self {
            Encoder::Plain(out) => out,
            Encoder::Gzip(gz) => gz.get_mut(),
        }
    }

    /// Compressed bytes waiting in the part buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.out().buf.len()
    }

    /// Memory this encoder holds: compressor state and the part buffer's capacity.
    pub(crate) fn held_bytes(&self) -> usize {
        let state = match self {
            Encoder::Plain(_) => 0,
            Encoder::Gzip(_) => GZIP_STATE_BYTES,
        };
        state + self.out().buf.capacity()
    }

    /// The most memory this encoder can hold after appending `more` bytes (before a part is
    /// taken), so the writer can make room before the memory is used.
    pub(crate) fn held_after(&self, more: usize) -> usize {
        let out = self.out();
        let (state, growth) = match self {
            Encoder::Plain(_) => (0, more),
            Encoder::Gzip(_) => (GZIP_STATE_BYTES, more + GZIP_APPEND_SLACK),
        };
        state + capacity_after(out.part_size, out.buf.len(), out.buf.capacity(), growth)
    }

    /// [`Encoder::held_after`] of a new encoder.
    pub(crate) fn new_held_after(compression: Compression, part_size: usize, more: usize) -> usize {
        match compression {
            Compression::Gzip => {
                GZIP_STATE_BYTES + capacity_after(part_size, 0, 0, more + GZIP_APPEND_SLACK)
            }
            Compression::None => capacity_after(part_size, 0, 0, more),
        }
    }

    /// Takes the compressed bytes buffered so far (a part), leaving the buffer empty.
    pub(crate) fn take_part(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out_mut().buf)
    }

    /// Ends the object and returns its last bytes (what the part buffer still held plus the
    /// compressor's trailer).
    pub(crate) fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Plain(out) => Ok(out.buf),
            Encoder::Gzip(gz) => gz.finish().map(|out| out.buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use crate::io::format::OutputFormat;
    use sluice::Message;

    #[test]
    fn formats_write_one_line_per_record() {
        let m = Message::new("{\"a\":\n1}\r\n").with_attribute("k", "v");
        let mut scratch = String::new();
        let mut out = Vec::new();
        OutputFormat::Decoded.write_record_with(&m, &mut scratch, &mut out);
        OutputFormat::Json.write_record_with(&m, &mut scratch, &mut out);
        OutputFormat::Text.write_record_with(&Message::new("plain"), &mut scratch, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "{\"a\":1}");
        assert_eq!(Message::from_json_line(lines[1].as_bytes()).unwrap(), m);
        assert_eq!(lines[2], "plain");
    }

    #[test]
    fn gzip_round_trips() {
        let mut body = Encoder::new(Compression::Gzip, 1 << 20);
        body.append(b"hello\n");
        body.append(b"world\n");
        let bytes = body.finish().unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello\nworld\n");
        let mut plain = Encoder::new(Compression::None, 1 << 20);
        plain.append(b"x");
        assert_eq!(plain.finish().unwrap(), b"x");
    }

    /// Pseudo-random lowercase text: gzip shrinks it by a third or so, not to nothing.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            })
            .collect()
    }

    #[test]
    fn gzip_parts_taken_along_the_way_concatenate_to_one_member() {
        let part = 4096;
        let mut enc = Encoder::new(Compression::Gzip, part);
        let mut object = Vec::new();
        let mut input = Vec::new();
        for i in 0..1000 {
            let line = [noise(500, i), b"\n".to_vec()].concat();
            enc.append(&line);
            input.extend_from_slice(&line);
            if enc.buffered() >= part {
                let taken = enc.take_part();
                assert!(taken.len() >= part);
                object.extend_from_slice(&taken);
            }
            // The buffer never grows much past a part, so what is counted is what is held.
            assert!(enc.held_bytes() <= GZIP_STATE_BYTES + 2 * part);
        }
        assert!(object.len() > 20 * part, "{} bytes in parts", object.len());
        object.extend_from_slice(&enc.finish().unwrap());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&object[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, input);
    }

    #[test]
    fn the_part_buffer_grows_to_a_part_and_no_further() {
        let mut enc = Encoder::new(Compression::None, 10_000);
        assert_eq!(enc.held_bytes(), 0);
        for _ in 0..10_000 {
            enc.append(b"x");
        }
        // Doubling from 4 KiB would give 16 KiB; the buffer stops at the part size.
        assert_eq!(enc.held_bytes(), 10_000);
        assert_eq!(enc.take_part().len(), 10_000);
        assert_eq!(enc.held_bytes(), 0);
        // One record larger than a part is kept whole.
        enc.append(&[b'y'; 30_000]);
        assert_eq!(enc.buffered(), 30_000);
        assert_eq!(enc.held_bytes(), 30_000);
        assert_eq!(enc.finish().unwrap().len(), 30_000);
    }
}
