//! `DecompressPayload`: opportunistic, bounded gunzip.

use std::io::Read;

use bytes::Bytes;
// the bufread decoder reads the payload in place, without a copy into a BufReader
use flate2::bufread::GzDecoder;
use sluice::{Failure, Message, PCollection, PTransform, WithFailures};

use super::attr;
use super::limit::{DEFAULT_MAX_PAYLOAD_BYTES, LIMIT_PAYLOAD_SIZE};
use super::DecodeError;

/// Default cap on a decompressed payload: ten times [`DEFAULT_MAX_PAYLOAD_BYTES`] (80 MiB).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 10 * DEFAULT_MAX_PAYLOAD_BYTES;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Gunzips payloads that start with the gzip magic bytes and sets `client_compression` =
/// `gzip`; other payloads pass through unchanged (gcp-ingestion's `DecompressPayload`).
///
/// Decompression stops at a cap (default [`DEFAULT_MAX_DECOMPRESSED_BYTES`]): it inflates at
/// most cap + 1 bytes, so a gzip bomb becomes a dead letter after a bounded amount of work and
/// memory, never an out-of-memory. Concatenated gzip members are read as one stream, and bytes
/// after a complete member that do not start another one are ignored, as
/// `java.util.zip.GZIPInputStream` (gcp-ingestion's) does. Errors (`error_type`
/// `DecompressPayload`): a corrupt or truncated gzip stream, a decompressed size over the cap.
/// The dead letter holds the message as the step received it (compressed).
///
/// Deliberately different from gcp-ingestion: there a payload that starts like gzip but does
/// not gunzip is passed on as it is, and fails `ParsePayload` as invalid JSON; here it is a
/// `DecompressPayload` dead letter whose message says what the gzip decoder found, which is the
/// clearer cause (the record is a dead letter either way).
///
/// The backend is flate2's `zlib-rs` (pure Rust, the fastest inflate flate2 offers).
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::DecompressPayload;
/// let out = sluice::harness::run(vec![Message::new("plain")], |input, dead| {
///     input.apply("decompress", DecompressPayload::new()).failures_to(dead)
/// });
/// assert_eq!(out.output, vec![Message::new("plain")]);
/// ```
#[derive(Debug, Clone)]
pub struct DecompressPayload {
    max_decompressed_bytes: usize,
    /// Whether a payload over the cap is a `LimitPayloadSize` failure (the cap is the payload
    /// limit) rather than a `DecompressPayload` one.
    cap_is_payload_limit: bool,
}

impl Default for DecompressPayload {
    fn default() -> Self {
        DecompressPayload {
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            cap_is_payload_limit: false,
        }
    }
}

impl DecompressPayload {
    /// The step with the default cap.
    pub fn new() -> Self {
        DecompressPayload::default()
    }

    /// Sets the largest decompressed payload accepted, in bytes.
    pub fn with_max_decompressed_bytes(mut self, bytes: usize) -> Self {
        self.max_decompressed_bytes = bytes;
        self.cap_is_payload_limit = false;
        self
    }

    /// Stops decompression at the payload limit of `limit`, the step that follows this one: a
    /// payload that would decompress past it is rejected after inflating limit + 1 bytes, as
    /// [`LimitPayloadSize`](super::LimitPayloadSize) rejects one (`error_type`
    /// `LimitPayloadSize`), with the compressed message in the dead letter. The
    /// [`Decoder`](super::Decoder) decompresses so.
    ///
    /// ```
    /// use sluice::Message;
    /// use sluice_transforms::decode::{DecompressPayload, LimitPayloadSize};
    /// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    /// std::io::Write::write_all(&mut gz, &[b' '; 10_000]).unwrap();
    /// let bomb = Message::new(gz.finish().unwrap());
    /// let out = sluice::harness::run(vec![bomb.clone()], |input, dead| {
    ///     let limit = LimitPayloadSize::new(100);
    ///     input
    ///         .apply("decompress", DecompressPayload::new().limited_by(&limit))
    ///         .and_then("limit", limit)
    ///         .failures_to(dead)
    /// });
    /// assert_eq!(out.dead_letters[0].error_type, "LimitPayloadSize");
    /// assert_eq!(out.dead_letters[0].original, bomb);
    /// ```
    pub fn limited_by(mut self, limit: &super::LimitPayloadSize) -> Self {
        self.max_decompressed_bytes = limit.max_bytes();
        self.cap_is_payload_limit = true;
        self
    }

    /// Decompresses one message (what the step does per record).
    pub fn apply_to(&self, message: &Message) -> Result<Message, DecodeError> {
        self.apply_owned(message.clone()).map_err(|(_, e)| e)
    }

    /// Decompresses one message it owns; on failure, hands it back unchanged with the error.
    pub fn apply_owned(&self, mut message: Message) -> Result<Message, (Message, DecodeError)> {
        match gunzip(&message.payload, self.max_decompressed_bytes) {
            Ok(None) => Ok(message),
            Ok(Some(payload)) => {
                message.payload = payload;
                message
                    .attributes
                    .insert(attr::CLIENT_COMPRESSION.to_string(), "gzip".to_string());
                Ok(message)
            }
            Err(e) => Err((message, e)),
        }
    }
}

/// `None` if `payload` is not gzip, else its decompressed bytes (at most `limit`).
pub(crate) fn gunzip(payload: &[u8], limit: usize) -> Result<Option<Bytes>, DecodeError> {
    if !payload.starts_with(&GZIP_MAGIC) {
        return Ok(None);
    }
    let out = inflate_at_most(payload, limit.saturating_add(1)).map_err(|source| {
        DecodeError::CorruptGzip {
            size: payload.len(),
            source,
        }
    })?;
    match out {
        Some(out) => Ok(Some(Bytes::from(out))),
        None => Err(DecodeError::DecompressedTooLarge {
            size: payload.len(),
            limit,
        }),
    }
}

/// The largest inflate buffer a worker thread keeps between payloads (see `inflate_at_most`):
/// enough for the default payload limit (8 MB), so payloads at the limit, such as
/// decompression bombs, do not allocate and free that much each.
const KEPT_SCRATCH: usize = 16 << 20;

thread_local! {
    /// Per worker thread: the buffer payloads are inflated into. Its length is what is
    /// initialized: it is zeroed once where it grows, never again.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inflates the gzip members of `payload` until they end or `cap` bytes are out, whichever
/// comes first: never more than `cap` bytes produced, nor held (the buffer grows to `cap` at
/// most). `None` when `cap` bytes came out (a payload over its limit when `cap` is the limit
/// plus one): those are not copied.
///
/// Inflates into the thread's scratch buffer and returns an exact-size copy: a payload costs
/// one allocation of its own size, and the scratch is zeroed only where it grows. (A buffer per
/// payload, grown by doubling and zeroed before every read, showed in the profile as page
/// faults and memset, and a decompression bomb allocated and freed 8 MB+ each time, which the
/// allocator kept as resident memory.) The scratch keeps at most [`KEPT_SCRATCH`].
fn inflate_at_most(payload: &[u8], cap: usize) -> std::io::Result<Option<Vec<u8>>> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let result = inflate_into(payload, cap, &mut scratch);
            if scratch.capacity() > KEPT_SCRATCH {
                *scratch = Vec::new();
            }
            result
        }
        // Not reentrant in practice; stay correct if it ever is.
        Err(_) => inflate_into(payload, cap, &mut Vec::new()),
    })
}

fn inflate_into(payload: &[u8], cap: usize, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    // telemetry compresses ~4-8x: start there, grow by doubling, never beyond cap
    let want = payload.len().saturating_mul(6).min(cap);
    if buf.len() < want {
        buf.reserve_exact(want - buf.len());
        buf.resize(want, 0);
    }
    let mut decoder = Members::new(payload);
    let mut len = 0;
    while len < cap {
        if len == buf.len() {
            let grow = buf.len().max(4096).min(cap - len);
            buf.reserve_exact(grow);
            buf.resize(len + grow, 0);
        }
        let end = buf.len().min(cap);
        match decoder.read(&mut buf[len..end]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((len < cap).then(|| buf[..len].to_vec()))
}

/// The gzip members of a payload as one stream: after a member ends, the next one is read if
/// the rest starts with a gzip header (magic and deflate method), and otherwise the rest is
/// ignored (`GZIPInputStream` ignores trailing garbage the same way).
struct Members<'a> {
    member: GzDecoder<&'a [u8]>,
}

impl<'a> Members<'a> {
    fn new(payload: &'a [u8]) -> Self {
        Members {
            member: GzDecoder::new(payload),
        }
    }
}

impl Read for Members<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let rest: &[u8] = self.member.get_ref();
            if rest.len() < 10 || !rest.starts_with(&[GZIP_MAGIC[0], GZIP_MAGIC[1], 8]) {
                return Ok(0);
            }
            self.member = GzDecoder::new(rest);
        }
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for DecompressPayload {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.try_map_owned("DecompressPayload", move |m: Message| {
            self.apply_owned(m).map_err(|(m, e)| {
                let too_large = matches!(e, DecodeError::DecompressedTooLarge { .. });
                let failure = Failure::from(e);
                if too_large && self.cap_is_payload_limit {
                    (m, failure.with_error_type(LIMIT_PAYLOAD_SIZE))
                } else {
                    (m, failure)
                }
            })
        })
    }
}

#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunzips_and_marks() {
        let m = Message::new(gzip(b"{\"a\":1}")).with_attribute("x", "y");
        let out = DecompressPayload::new().apply_to(&m).unwrap();
        assert_eq!(out.payload, "{\"a\":1}");
        assert_eq!(out.attribute("client_compression"), Some("gzip"));
        assert_eq!(out.attribute("x"), Some("y"));
    }

    #[test]
    fn plain_payload_unchanged() {
        let m = Message::new("{\"a\":1}");
        assert_eq!(DecompressPayload::new().apply_to(&m).unwrap(), m);
        let m = Message::new(vec![0x1f]);
        assert_eq!(DecompressPayload::new().apply_to(&m).unwrap(), m);
    }

    #[test]
    fn concatenated_members() {
        let mut both = gzip(b"{\"a\":");
        both.extend(gzip(b"1}"));
        let out = DecompressPayload::new()
            .apply_to(&Message::new(both))
            .unwrap();
        assert_eq!(out.payload, "{\"a\":1}");
    }

    #[test]
    fn trailing_garbage_after_a_member_is_ignored() {
        // GZIPInputStream reads a member and ignores what follows unless it is another member
        for garbage in [&b"garbage"[..], &[0x1f, 0x8b], &[0u8; 64], b"\x1f\x8b\x08"] {
            let mut payload = gzip(b"{\"a\":1}");
            payload.extend_from_slice(garbage);
            let out = DecompressPayload::new()
                .apply_to(&Message::new(payload))
                .unwrap();
            assert_eq!(out.payload, "{\"a\":1}", "{garbage:?}");
        }
        // a second member with a valid header but corrupt data is still an error
        let mut two = gzip(b"{\"a\":");
        let mut second = gzip(b"1}");
        let n = second.len();
        second[n - 6] ^= 0x55;
        two.extend(second);
        assert!(DecompressPayload::new()
            .apply_to(&Message::new(two))
            .is_err());
    }

    #[test]
    fn corrupt_and_truncated_gzip() {
        let mut bad = gzip(b"hello world hello world");
        let n = bad.len();
        bad[n / 2] ^= 0xff;
        bad[n - 5] ^= 0xff;
        let e = DecompressPayload::new()
            .apply_to(&Message::new(bad))
            .unwrap_err();
        assert!(matches!(e, DecodeError::CorruptGzip { .. }), "{e}");
        let truncated = gzip(b"hello world hello world")[..12].to_vec();
        let e = DecompressPayload::new()
            .apply_to(&Message::new(truncated))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("corrupt gzip payload of 12 bytes"),
            "{e}"
        );
    }

    #[test]
    fn bomb_is_capped() {
        let bomb = gzip(&vec![b'a'; 1 << 20]);
        let step = DecompressPayload::new().with_max_decompressed_bytes(1000);
        let e = step.apply_to(&Message::new(bomb.clone())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "gzip payload of {} bytes decompresses to more than the limit of 1000 bytes",
                bomb.len()
            )
        );
        let ok = DecompressPayload::new().with_max_decompressed_bytes(1 << 20);
        assert_eq!(
            ok.apply_to(&Message::new(bomb)).unwrap().payload.len(),
            1 << 20
        );
    }

    #[test]
    fn a_bomb_is_inflated_to_the_limit_plus_one_byte_only() {
        // 16 MiB of zeros gzip to ~16 KiB: a 1000x bomb
        let bomb = gzip(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        for limit in [0, 1, 1000, 100_000] {
            assert_eq!(inflate_at_most(&bomb, limit + 1).unwrap(), None);
            let held = SCRATCH.with(|s| s.borrow().capacity());
            assert!(held <= limit + 1, "held {held} bytes at limit {limit}");
            assert!(matches!(
                gunzip(&bomb, limit),
                Err(DecodeError::DecompressedTooLarge { .. })
            ));
        }
        // a payload just at the limit passes, one byte more does not
        let exact = gzip(&[b'x'; 5000]);
        assert_eq!(gunzip(&exact, 5000).unwrap().unwrap().len(), 5000);
        assert!(gunzip(&exact, 4999).is_err());
    }

    #[test]
    fn owned_failure_hands_back_the_message_unchanged() {
        let bomb = Message::new(gzip(&[b' '; 10_000])).with_attribute("x", "y");
        let step = DecompressPayload::new().with_max_decompressed_bytes(100);
        let (back, e) = step.apply_owned(bomb.clone()).unwrap_err();
        assert_eq!(back, bomb);
        assert!(matches!(e, DecodeError::DecompressedTooLarge { .. }));
        let mut corrupt = gzip(b"hello hello hello");
        let n = corrupt.len();
        corrupt[n - 6] ^= 0x55;
        let corrupt = Message::new(corrupt).with_attribute("x", "y");
        let (back, _) = step.apply_owned(corrupt.clone()).unwrap_err();
        assert_eq!(back, corrupt);
    }

    #[test]
    fn over_the_payload_limit_is_a_limit_failure_with_the_compressed_original() {
        let big = Message::new(gzip(&[b' '; 1000])).with_attribute("x", "y");
        let small = Message::new(gzip(b"{}"));
        let input = vec![big.clone(), small];
        let out = sluice::harness::run(input, |input, dead| {
            let limit = crate::decode::LimitPayloadSize::new(999);
            input
                .apply("decompress", DecompressPayload::new().limited_by(&limit))
                .and_then("limit", limit)
                .failures_to(dead)
        });
        assert_eq!(out.output.len(), 1);
        assert_eq!(out.output[0].payload, "{}");
        assert_eq!(out.dead_letters.len(), 1);
        let d = &out.dead_letters[0];
        assert_eq!(d.error_type, "LimitPayloadSize");
        assert_eq!(d.original, big);
        assert_eq!(
            d.error_message,
            format!(
                "gzip payload of {} bytes decompresses to more than the limit of 999 bytes",
                big.payload.len()
            )
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(mut bytes: Vec<u8>, gz: bool) {
            if gz { bytes.splice(0..0, GZIP_MAGIC); }
            let _ = DecompressPayload::new().with_max_decompressed_bytes(4096).apply_to(&Message::new(bytes));
        }
    }
}
