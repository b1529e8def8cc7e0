//! `DecompressPayload`: opportunistic, bounded gunzip.

use std::io::Read;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use sluice::{Message, PCollection, PTransform, WithFailures};

use super::attr;
use super::limit::DEFAULT_MAX_PAYLOAD_BYTES;
use super::DecodeError;

/// Default cap on a decompressed payload: ten times [`DEFAULT_MAX_PAYLOAD_BYTES`] (80 MiB).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 10 * DEFAULT_MAX_PAYLOAD_BYTES;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Gunzips payloads that start with the gzip magic bytes and sets `client_compression` =
/// `gzip`; other payloads pass through unchanged (gcp-ingestion's `DecompressPayload`).
///
/// Decompression stops at a cap (default [`DEFAULT_MAX_DECOMPRESSED_BYTES`]), so a gzip bomb
/// becomes a dead letter, never an out-of-memory. Concatenated gzip members are read as one
/// stream, as `java.util.zip.GZIPInputStream` does. Errors (`error_type` `DecompressPayload`):
/// a corrupt or truncated gzip stream, a decompressed size over the cap.
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
}

impl Default for DecompressPayload {
    fn default() -> Self {
        DecompressPayload {
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
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
        self
    }

    /// Decompresses one message (what the step does per record).
    pub fn apply_to(&self, message: &Message) -> Result<Message, DecodeError> {
        match gunzip(&message.payload, self.max_decompressed_bytes)? {
            None => Ok(message.clone()),
            Some(payload) => {
                let mut out = Message {
                    payload,
                    attributes: message.attributes.clone(),
                    position: message.position.clone(),
                };
                out.attributes
                    .insert(attr::CLIENT_COMPRESSION.to_string(), "gzip".to_string());
                Ok(out)
            }
        }
    }
}

/// `None` if `payload` is not gzip, else its decompressed bytes (at most `limit`).
pub(crate) fn gunzip(payload: &[u8], limit: usize) -> Result<Option<Bytes>, DecodeError> {
    if !payload.starts_with(&GZIP_MAGIC) {
        return Ok(None);
    }
    // telemetry compresses ~4-8x; start there and let the Vec grow, never beyond limit + 1
    let mut out = Vec::with_capacity(payload.len().saturating_mul(6).min(limit.saturating_add(1)));
    let mut decoder = MultiGzDecoder::new(payload).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|source| DecodeError::CorruptGzip {
            size: payload.len(),
            source,
        })?;
    if out.len() > limit {
        return Err(DecodeError::DecompressedTooLarge {
            size: payload.len(),
            limit,
        });
    }
    Ok(Some(Bytes::from(out)))
}

impl<'s> PTransform<PCollection<'s, Message>> for DecompressPayload {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.try_map("DecompressPayload", move |m: &Message| self.apply_to(m))
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

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(mut bytes: Vec<u8>, gz: bool) {
            if gz { bytes.splice(0..0, GZIP_MAGIC); }
            let _ = DecompressPayload::new().with_max_decompressed_bytes(4096).apply_to(&Message::new(bytes));
        }
    }
}
