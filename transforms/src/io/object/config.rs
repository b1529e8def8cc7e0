//! The serde form of the object sink's settings, for the CLI's config file.
//!
//! Sizes and durations accept plain numbers (bytes, milliseconds) or humane strings
//! (`"100MB"`, `"64MiB"`, `"60s"`, `"500ms"`, `"5m"`); the Rust API itself takes `usize` and
//! [`Duration`].

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{BatchBounds, Compression, ObjectSinkError, OutputFormat};

/// Settings of an object sink, whatever the store (the store's own keys — directory, bucket —
/// live beside these in the caller's config).
///
/// ```
/// use sluice_transforms::io::object::ObjectSinkConfig;
/// let c: ObjectSinkConfig = serde_json::from_str(
///     r#"{"path": "${document_type:-unknown}/", "compression": "none",
///         "batch": {"max_bytes": "1MB", "max_age": "5s"}}"#,
/// ).unwrap();
/// assert_eq!(c.batch.max_bytes, 1_000_000);
/// assert_eq!(c.batch.max_age.as_secs(), 5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSinkConfig {
    /// Path template of object prefixes, e.g.
    /// `${document_namespace}/${document_type}/v${document_version}/${submission_date:-unknown}/`;
    /// every placeholder needs a default (`${attr:-default}`).
    pub path: String,
    /// How records become lines: `decoded` (payload JSON), `json` (gcp-ingestion envelope,
    /// replayable) or `text` (raw payload).
    #[serde(default)]
    pub format: OutputFormat,
    /// `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// When a batch becomes an object.
    #[serde(default)]
    pub batch: BatchConfig,
}

/// Batch bounds in config form; see [`BatchBounds`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Uncompressed bytes per object: a number of bytes or `"100MB"`, `"64MiB"`, ...
    #[serde(default = "default_max_bytes", deserialize_with = "de_bytes")]
    pub max_bytes: usize,
    /// Records per object.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Age of an open batch: milliseconds or `"60s"`, `"500ms"`, `"5m"`, `"1h"`.
    #[serde(default = "default_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
}

/// 100 MB.
pub fn default_max_bytes() -> usize {
    BatchBounds::default().max_bytes
}

/// 1 000 000 records.
pub fn default_max_records() -> usize {
    BatchBounds::default().max_records
}

/// 60 s.
pub fn default_max_age() -> Duration {
    BatchBounds::default().max_age
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_bytes: default_max_bytes(),
            max_records: default_max_records(),
            max_age: default_max_age(),
        }
    }
}

impl BatchConfig {
    /// The bounds, or an error naming the key that is zero.
    pub fn bounds(&self) -> Result<BatchBounds, ObjectSinkError> {
        for (key, zero) in [
            ("batch.max_bytes", self.max_bytes == 0),
            ("batch.max_records", self.max_records == 0),
            ("batch.max_age", self.max_age.is_zero()),
        ] {
            if zero {
                return Err(ObjectSinkError::Config(format!(
                    "`{key}` must be above zero"
                )));
            }
        }
        Ok(BatchBounds {
            max_bytes: self.max_bytes,
            max_records: self.max_records,
            max_age: self.max_age,
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => usize::try_from(n).map_err(serde::de::Error::custom),
        NumOrText::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(Duration::from_millis(n)),
        NumOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn split_unit(text: &str) -> (&str, &str) {
    let t = text.trim();
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    (t[..at].trim(), t[at..].trim())
}

/// Parses `"100MB"`, `"64 MiB"`, `"512k"`, `"1000"` (bytes). Decimal units are powers of 1000,
/// `KiB`/`MiB`/`GiB` powers of 1024.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let (num, unit) = split_unit(text);
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "size `{text}`: unknown unit `{unit}` (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("size `{text}`: expected a number with an optional unit"))?;
    let bytes = (n * factor).round();
    if !(0.0..=usize::MAX as f64).contains(&bytes) {
        return Err(format!("size `{text}` is out of range"));
    }
    Ok(bytes as usize)
}

/// Parses `"60s"`, `"500ms"`, `"5m"`, `"1h"`, `"1.5s"`; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = split_unit(text);
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => 0.001,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "duration `{text}`: unknown unit `{unit}` (ms, s, m, h)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration `{text}`: expected a number with an optional unit"))?;
    Duration::try_from_secs_f64(n * factor).map_err(|e| format!("duration `{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let c: ObjectSinkConfig = serde_json::from_str(r#"{"path": "x/"}"#).unwrap();
        assert_eq!(c.format, OutputFormat::Json);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.batch.bounds().unwrap(), BatchBounds::default());
    }

    #[test]
    fn accepts_numbers_and_humane_strings() {
        let c: ObjectSinkConfig = serde_json::from_str(
            r#"{"path": "x/", "format": "decoded", "batch": {"max_bytes": 1024, "max_records": 5, "max_age": 1500}}"#,
        )
        .unwrap();
        assert_eq!(c.format, OutputFormat::Decoded);
        assert_eq!(c.batch.max_bytes, 1024);
        assert_eq!(c.batch.max_age, Duration::from_millis(1500));
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5 KB").unwrap(), 1500);
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_bytes("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_keys_and_zero_bounds_are_errors() {
        let e = serde_json::from_str::<ObjectSinkConfig>(r#"{"path": "x/", "bucket": "b"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `bucket`"), "{e}");
        let e =
            serde_json::from_str::<ObjectSinkConfig>(r#"{"path": "x/", "batch": {"max_size": 1}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `max_size`"), "{e}");
        let e = serde_json::from_str::<ObjectSinkConfig>(r#"{"path": "x/", "format": "csv"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown variant `csv`"), "{e}");
        let c: ObjectSinkConfig =
            serde_json::from_str(r#"{"path": "x/", "batch": {"max_records": 0}}"#).unwrap();
        assert!(c
            .batch
            .bounds()
            .unwrap_err()
            .to_string()
            .contains("batch.max_records"));
    }
}
