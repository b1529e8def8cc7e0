//! Human-friendly sizes (`100MB`, `8 MiB`, `1024`) and durations (`60s`, `10m`, `250ms`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use sluice_transforms::io::object::{parse_bytes, parse_duration};

/// A number of bytes, written `1024`, `"512KB"`, `"100MB"`, `"8 MiB"` or `"1GB"` in a config.
///
/// Decimal units are powers of 1000, binary units (`KiB`, `MiB`, `GiB`) powers of 1024.
///
/// ```
/// use sluice_pipelines::config::ByteSize;
/// assert_eq!("100MB".parse::<ByteSize>().unwrap().0, 100_000_000);
/// assert_eq!("8 MiB".parse::<ByteSize>().unwrap().0, 8 << 20);
/// assert!("lots".parse::<ByteSize>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration, written `"60s"`, `"10m"`, `"250ms"`, `"1h"` or a number of seconds in a config.
///
/// ```
/// use std::time::Duration;
/// use sluice_pipelines::config::HumanDuration;
/// assert_eq!("250ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(250));
/// assert_eq!("10m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// What a size or a duration should look like, for error messages.
pub const SIZE_EXPECTED: &str = "a size like \"100MB\", \"8 MiB\" or 1024";
/// What a duration should look like, for error messages.
pub const DURATION_EXPECTED: &str = "a duration like \"60s\", \"10m\" or \"250ms\"";

// The grammar (numbers, units) is the object sink's; a config adds its own messages, and reads
// a bare number as seconds, as ops write durations.
impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_bytes(s)
            .map(|b| ByteSize(b as u64))
            .map_err(|_| format!("expected {SIZE_EXPECTED}, found {s:?}"))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected {DURATION_EXPECTED}, found {s:?}");
        let t = s.trim();
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            let secs: f64 = t.parse().map_err(|_| bad())?;
            return Duration::try_from_secs_f64(secs)
                .map(HumanDuration)
                .map_err(|_| bad());
        }
        parse_duration(t).map(HumanDuration).map_err(|_| bad())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

macro_rules! string_or_int {
    ($t:ty, $expected:expr, $from_int:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expected)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$t, E> {
                        s.parse().map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$t, E> {
                        u64::try_from(n)
                            .map($from_int)
                            .map_err(|_| E::custom(format!("expected {}, found {n}", $expected)))
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$t, E> {
                        Ok($from_int(n))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_or_int!(ByteSize, SIZE_EXPECTED, ByteSize);
string_or_int!(HumanDuration, DURATION_EXPECTED, |n| HumanDuration(
    Duration::from_secs(n)
));

/// Checks a TOML value as a size: `Err` says what was expected.
pub fn check_size(v: &toml::Value) -> Result<ByteSize, String> {
    match v {
        toml::Value::String(s) => s.parse(),
        toml::Value::Integer(n) if *n >= 0 => Ok(ByteSize(*n as u64)),
        other => Err(format!("expected {SIZE_EXPECTED}, found {other}")),
    }
}

/// Checks a TOML value as a duration: `Err` says what was expected.
pub fn check_duration(v: &toml::Value) -> Result<HumanDuration, String> {
    match v {
        toml::Value::String(s) => s.parse(),
        toml::Value::Integer(n) if *n >= 0 => Ok(HumanDuration(Duration::from_secs(*n as u64))),
        other => Err(format!("expected {DURATION_EXPECTED}, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, n) in [
            ("1024", 1024),
            ("100MB", 100_000_000),
            ("8 MiB", 8 << 20),
            ("1.5KB", 1500),
            ("2gib", 2 << 30),
        ] {
            assert_eq!(s.parse::<ByteSize>().unwrap().0, n, "{s}");
        }
        for s in ["", "MB", "10 parsecs", "-1"] {
            assert!(s.parse::<ByteSize>().is_err(), "{s}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!("60s".parse::<HumanDuration>().unwrap().0.as_secs(), 60);
        assert_eq!("1h".parse::<HumanDuration>().unwrap().0.as_secs(), 3600);
        assert_eq!("5".parse::<HumanDuration>().unwrap().0.as_secs(), 5);
        assert!("soon".parse::<HumanDuration>().is_err());
        assert!("10y".parse::<HumanDuration>().is_err());
    }
}
