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

/// The growing body of one object.
pub(crate) enum Body {
    Plain(Vec<u8>),
    // boxed: zlib-rs's encoder state is large, and there is one body per open batch
    Gzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
}

impl Body {
    pub(crate) fn new(compression: Compression) -> Self {
        match compression {
            Compression::Gzip => Body::Gzip(Box::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            ))),
            Compression::None => Body::Plain(Vec::new()),
        }
    }

    /// Appends bytes. Writing into a `Vec` cannot fail, so neither can this.
    pub(crate) fn append(&mut self, bytes: &[u8]) {
        match self {
            Body::Plain(v) => v.extend_from_slice(bytes),
            Body::Gzip(gz) => {
                // A GzEncoder over a Vec only fails if the Vec does, which it does not.
                let _ = gz.write_all(bytes);
            }
        }
    }

    /// The finished object bytes.
    pub(crate) fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Body::Plain(v) => Ok(v),
            Body::Gzip(gz) => gz.finish(),
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
        let mut body = Body::new(Compression::Gzip);
        body.append(b"hello\n");
        body.append(b"world\n");
        let bytes = body.finish().unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello\nworld\n");
        let mut plain = Body::new(Compression::None);
        plain.append(b"x");
        assert_eq!(plain.finish().unwrap(), b"x");
    }
}
