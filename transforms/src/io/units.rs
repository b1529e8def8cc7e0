//! Sizes and durations as ops write them in config files, in one grammar for every connector
//! and for the job config.
//!
//! - A size is a number of bytes with an optional unit: `1024`, `"1024"`, `"512KB"`,
//!   `"100MB"`, `"8 MiB"`, `"1.5GB"`. Decimal units (`KB`, `MB`, `GB`, also `k`, `m`, `g`) are
//!   powers of 1000, binary units (`KiB`, `MiB`, `GiB`) powers of 1024. **A bare number is
//!   bytes.**
//! - A duration is a number with an optional unit: `60`, `"60s"`, `"250ms"`, `"10m"`, `"1h"`,
//!   `"1.5s"`, `"500us"`, `"20ns"`. **A bare number is seconds**, whether written `60` or
//!   `"60"`.
//!
//! Units are case-insensitive and may be separated from the number by spaces. The serde
//! helpers ([`size`], [`duration`], [`count`] and their `option_*` forms) are for config
//! fields: they also refuse zero, because every size, duration and count a config sets is a
//! bound, and a zero bound is nonsense (an epoch of no records, a batch of no bytes).
//!
//! ```
//! use std::time::Duration;
//! use sluice_transforms::io::units::{parse_duration, parse_size};
//!
//! assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
//! assert_eq!(parse_size("8 MiB").unwrap(), 8 << 20);
//! assert_eq!(parse_size("1024").unwrap(), 1024);
//! assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
//! assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
//! assert!(parse_size("lots").is_err());
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// What a size looks like, for error messages.
pub const SIZE_EXPECTED: &str = "a size like \"100MB\", \"8 MiB\" or 1024 (bytes)";
/// What a duration looks like, for error messages.
pub const DURATION_EXPECTED: &str = "a duration like \"60s\", \"10m\", \"250ms\" or 60 (seconds)";
/// What a count looks like, for error messages.
pub const COUNT_EXPECTED: &str = "an integer >= 1";

/// A size or duration that does not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found}")]
pub struct UnitError {
    /// What was expected ([`SIZE_EXPECTED`], [`DURATION_EXPECTED`], ...).
    pub expected: String,
    /// What was found, as written (strings quoted).
    pub found: String,
}

impl UnitError {
    fn new(expected: &str, found: impl fmt::Display) -> Self {
        UnitError {
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

/// Splits `"1.5 KB"` into `("1.5", "KB")`.
fn split_unit(text: &str) -> (&str, &str) {
    let t = text.trim();
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    (t[..at].trim(), t[at..].trim())
}

/// Reads a size; a bare number is bytes. Fractions round to the nearest byte.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::new(SIZE_EXPECTED, format_args!("{text:?}"));
    let (num, unit) = split_unit(text);
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if unit.is_empty() || factor == 1.0 {
        // whole bytes: exact, no float rounding of large values
        if let Ok(n) = num.parse::<u64>() {
            return Ok(n);
        }
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let bytes = (n * factor).round();
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Reads a duration; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::new(DURATION_EXPECTED, format_args!("{text:?}"));
    let (num, unit) = split_unit(text);
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * factor).map_err(|_| bad())
}

/// Writes a duration in the largest unit that keeps it exact (`"60s"`, `"250ms"`, `"3ns"`),
/// so that [`parse_duration`] reads back the same value.
///
/// ```
/// use std::time::Duration;
/// use sluice_transforms::io::units::{format_duration, parse_duration};
/// for d in [Duration::from_secs(60), Duration::from_millis(1500), Duration::from_nanos(7)] {
///     assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
/// }
/// ```
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", d.as_secs())
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// A size, duration or count as written in a config, before its meaning is applied.
enum Raw {
    Int(i128),
    Float(f64),
    Text(String),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Int(n) => write!(f, "{n}"),
            Raw::Float(x) => write!(f, "{x}"),
            Raw::Text(s) => write!(f, "{s:?}"),
        }
    }
}

struct RawVisitor(&'static str);

impl Visitor<'_> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Raw, E> {
        Ok(Raw::Int(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Raw, E> {
        Ok(Raw::Int(n.into()))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Raw, E> {
        Ok(Raw::Float(x))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Raw, E> {
        Ok(Raw::Text(s.to_string()))
    }
}

fn raw<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<Raw, D::Error> {
    d.deserialize_any(RawVisitor(expected))
}

/// `v`, unless it is zero: `what` above zero was expected (`"a size"`).
fn positive<T: PartialEq + Default, E: de::Error>(v: T, what: &str, found: &Raw) -> Result<T, E> {
    if v == T::default() {
        Err(E::custom(UnitError::new(
            &format!("{what} above zero"),
            found,
        )))
    } else {
        Ok(v)
    }
}

fn size_from<E: de::Error>(r: Raw) -> Result<usize, E> {
    let bad = |r: &Raw| E::custom(UnitError::new(SIZE_EXPECTED, r));
    let bytes = match &r {
        Raw::Int(n) => u64::try_from(*n).map_err(|_| bad(&r))?,
        Raw::Float(_) => return Err(bad(&r)),
        Raw::Text(s) => parse_size(s).map_err(E::custom)?,
    };
    let bytes = usize::try_from(bytes).map_err(|_| bad(&r))?;
    positive(bytes, "a size", &r)
}

fn duration_from<E: de::Error>(r: Raw) -> Result<Duration, E> {
    let bad = |r: &Raw| E::custom(UnitError::new(DURATION_EXPECTED, r));
    let d = match &r {
        Raw::Int(n) => Duration::from_secs(u64::try_from(*n).map_err(|_| bad(&r))?),
        Raw::Float(x) => Duration::try_from_secs_f64(*x).map_err(|_| bad(&r))?,
        Raw::Text(s) => parse_duration(s).map_err(E::custom)?,
    };
    positive(d, "a duration", &r)
}

fn count_from<E: de::Error>(r: Raw) -> Result<usize, E> {
    match &r {
        Raw::Int(n) if *n >= 1 => {
            usize::try_from(*n).map_err(|_| E::custom(UnitError::new(COUNT_EXPECTED, &r)))
        }
        _ => Err(E::custom(UnitError::new(COUNT_EXPECTED, &r))),
    }
}

/// Serde helpers for an `Option` of `$inner`'s type: absent or a value.
macro_rules! option_of {
    ($name:ident, $ty:ty, $inner:ident, $doc:literal) => {
        #[doc = $doc]
        pub mod $name {
            use super::*;

            /// Writes the value, if any (pair with `skip_serializing_if = "Option::is_none"`).
            pub fn serialize<S: Serializer>(v: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                match v {
                    Some(v) => super::$inner::serialize(v, s),
                    None => s.serialize_none(),
                }
            }

            /// Reads a value (pair with `default` for an absent key).
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                super::$inner::deserialize(d).map(Some)
            }
        }
    };
}

/// Serde helpers for a size field (`usize` bytes, above zero): `#[serde(with = "units::size")]`.
pub mod size {
    use super::*;

    /// Writes the number of bytes.
    pub fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v as u64)
    }

    /// Reads a number of bytes or a size string; zero is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        size_from(raw(d, SIZE_EXPECTED)?)
    }
}

/// Serde helpers for a duration field (above zero): `#[serde(with = "units::duration")]`.
pub mod duration {
    use super::*;

    /// Writes the duration as [`format_duration`] does.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }

    /// Reads seconds or a duration string; zero is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        duration_from(raw(d, DURATION_EXPECTED)?)
    }
}

/// Serde helpers for a count field (`usize`, at least 1): `#[serde(with = "units::count")]`.
pub mod count {
    use super::*;

    /// Writes the count.
    pub fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v as u64)
    }

    /// Reads an integer of at least 1.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        count_from(raw(d, COUNT_EXPECTED)?)
    }
}

option_of!(
    option_size,
    usize,
    size,
    "Serde helpers for an optional size field (see [`size`])."
);
option_of!(
    option_duration,
    Duration,
    duration,
    "Serde helpers for an optional duration field (see [`duration`])."
);
option_of!(
    option_count,
    usize,
    count,
    "Serde helpers for an optional count field (see [`count`])."
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Bounds {
        #[serde(with = "size")]
        bytes: usize,
        #[serde(with = "duration")]
        age: Duration,
        #[serde(with = "count")]
        records: usize,
        #[serde(
            default,
            with = "option_duration",
            skip_serializing_if = "Option::is_none"
        )]
        idle: Option<Duration>,
    }

    fn bounds(text: &str) -> Result<Bounds, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn sizes() {
        for (s, n) in [
            ("1024", 1024),
            ("100MB", 100_000_000),
            ("8 MiB", 8 << 20),
            ("1.5KB", 1500),
            ("2gib", 2 << 30),
            ("512k", 512_000),
            ("7 B", 7),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
        for s in ["", "MB", "10 parsecs", "-1", "1.2.3KB", "lots"] {
            let e = parse_size(s).unwrap_err();
            assert!(e.to_string().starts_with("expected a size"), "{s}: {e}");
        }
    }

    #[test]
    fn durations() {
        for (s, d) in [
            ("60s", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("10m", Duration::from_secs(600)),
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("500us", Duration::from_micros(500)),
            ("20ns", Duration::from_nanos(20)),
            // the one meaning of a bare number: seconds
            ("5", Duration::from_secs(5)),
            ("0.25", Duration::from_millis(250)),
        ] {
            assert_eq!(parse_duration(s).unwrap(), d, "{s}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{s}");
        }
        for s in ["", "soon", "10y", "-5s", "s"] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.to_string().starts_with("expected a duration"), "{s}: {e}");
        }
    }

    #[test]
    fn bare_numbers_in_fields_are_bytes_seconds_and_counts() {
        let b = bounds(r#"{"bytes": 1000, "age": 60, "records": 3, "idle": 2}"#).unwrap();
        assert_eq!(b.bytes, 1000);
        assert_eq!(b.age, Duration::from_secs(60));
        assert_eq!(b.records, 3);
        assert_eq!(b.idle, Some(Duration::from_secs(2)));
        let b = bounds(r#"{"bytes": "1000", "age": "60", "records": 3, "idle": 0.5}"#).unwrap();
        assert_eq!(b.bytes, 1000);
        assert_eq!(b.age, Duration::from_secs(60));
        assert_eq!(b.idle, Some(Duration::from_millis(500)));
    }

    #[test]
    fn fields_round_trip() {
        let b = bounds(r#"{"bytes": "8 MiB", "age": "1.5s", "records": 7}"#).unwrap();
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(text, r#"{"bytes":8388608,"age":"1500ms","records":7}"#);
        assert_eq!(bounds(&text).unwrap(), b);
    }

    #[test]
    fn zero_negative_and_malformed_fields_are_errors() {
        let ok = r#""bytes": 1, "age": 1, "records": 1"#;
        for (bad, needle) in [
            (r#""bytes": 0"#, "expected a size above zero, found 0"),
            (r#""bytes": "0MB""#, "above zero"),
            (r#""bytes": -1"#, "expected a size"),
            (r#""bytes": 1.5"#, "expected a size"),
            (r#""bytes": true"#, "expected a size"),
            (r#""age": 0"#, "above zero"),
            (r#""age": "0s""#, "expected a duration"),
            (r#""age": -3"#, "expected a duration"),
            (r#""age": "soon""#, "expected a duration"),
            (r#""records": 0"#, "expected an integer >= 1, found 0"),
            (r#""records": -2"#, "expected an integer >= 1"),
            (r#""records": "3""#, "expected an integer >= 1"),
            (r#""idle": 0"#, "above zero"),
        ] {
            let key = bad.split(':').next().unwrap();
            let text = format!(
                "{{{bad}, {}}}",
                ok.split(", ")
                    .filter(|f| !f.starts_with(key))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let e = bounds(&text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
