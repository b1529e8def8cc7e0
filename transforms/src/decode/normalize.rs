//! `NormalizeAttributes`: gcp-ingestion's normalized channel, OS, OS version, app name and
//! country code.

use sluice::{Message, PCollection, PTransform};

use super::attr;

const OTHER: &str = "Other";
const CHANNELS: [&str; 5] = ["release", "esr", "beta", "aurora", "nightly"];
/// Prefixes, more specific ones first.
const APP_NAMES: [&str; 15] = [
    "Zerda_cn",
    "Zerda",
    "Focus-TV",
    "Focus",
    "Klar",
    "FirefoxReality_oculusvr",
    "FirefoxReality_googlevr",
    "FirefoxReality_wavevr",
    "FirefoxForFireTV",
    "FirefoxConnect",
    "Fennec",
    "Scryer",
    "WebXR",
    "Lockbox",
    "Firefox",
];

/// One of the five release channels, `nightly` for the old `nightly-cck-*`, `beta` for any
/// `beta*`, else `Other` (case-sensitive, as historically).
///
/// ```
/// use sluice_transforms::decode::normalize_channel;
/// assert_eq!(normalize_channel("nightly-cck-abc"), "nightly");
/// assert_eq!(normalize_channel("Release"), "Other");
/// ```
pub fn normalize_channel(name: &str) -> &str {
    if CHANNELS.contains(&name) {
        name
    } else if name.starts_with("nightly-cck-") {
        "nightly"
    } else if name.starts_with("beta") {
        "beta"
    } else {
        OTHER
    }
}

/// `Windows`, `Mac`, `Linux`, `iOS`, `Android` or `Other`.
///
/// ```
/// use sluice_transforms::decode::normalize_os;
/// assert_eq!(normalize_os("WINNT"), "Windows");
/// assert_eq!(normalize_os("Darwin"), "Mac");
/// assert_eq!(normalize_os("FreeBSD"), "Linux");
/// ```
pub fn normalize_os(name: &str) -> &'static str {
    if name.starts_with("Windows") || name.starts_with("WINNT") {
        "Windows"
    } else if name.starts_with("Darwin") {
        "Mac"
    } else if name.contains("Linux") || name.contains("BSD") || name.contains("SunOS") {
        "Linux"
    } else if name.starts_with("iOS") || name.contains("iPhone") {
        "iOS"
    } else if name.starts_with("Android") {
        "Android"
    } else {
        OTHER
    }
}

/// At most `MAJOR.MINOR.PATCH` of a version that starts with digits, else `""`
/// (gcp-ingestion's `([0-9]+(?:\.[0-9]+){0,2}).*`, which must match the whole text, so a line
/// break after the version gives `""` too).
///
/// ```
/// use sluice_transforms::decode::normalize_os_version;
/// assert_eq!(normalize_os_version("10.0.19045.3930"), "10.0.19045");
/// assert_eq!(normalize_os_version("6.1-beta"), "6.1");
/// assert_eq!(normalize_os_version("Linux 6"), "");
/// ```
pub fn normalize_os_version(v: &str) -> &str {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut end = digits(v);
    if end == 0 {
        return "";
    }
    for _ in 0..2 {
        let rest = &v[end..];
        let n = rest.strip_prefix('.').map_or(0, digits);
        if n == 0 {
            break;
        }
        end += 1 + n;
    }
    // Java's `.` matches anything but a line terminator
    if v[end..].contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
        return "";
    }
    &v[..end]
}

/// The known app name `name` starts with, or `Other`.
///
/// ```
/// use sluice_transforms::decode::normalize_app_name;
/// assert_eq!(normalize_app_name("Focus-TV-beta"), "Focus-TV");
/// assert_eq!(normalize_app_name("Thunderbird"), "Other");
/// ```
pub fn normalize_app_name(name: &str) -> &'static str {
    APP_NAMES
        .iter()
        .find(|app| name.starts_with(**app))
        .copied()
        .unwrap_or(OTHER)
}

/// Two letters in upper case, or `Other` (any two-letter code is accepted, assigned or not).
///
/// ```
/// use sluice_transforms::decode::normalize_country_code;
/// assert_eq!(normalize_country_code("fr"), "FR");
/// assert_eq!(normalize_country_code("FRA"), "Other");
/// ```
pub fn normalize_country_code(code: &str) -> String {
    let upper = code.to_uppercase();
    let b = upper.as_bytes();
    if b.len() == 2 && b.iter().all(u8::is_ascii_uppercase) {
        upper
    } else {
        OTHER.to_string()
    }
}

/// Sets `normalized_channel` (from `app_update_channel`), `normalized_os` (`os`),
/// `normalized_os_version` (`os_version`), `normalized_app_name` (`app_name`) and
/// `normalized_country_code` (`geo_country`), each where its source attribute is set
/// (gcp-ingestion's `NormalizeAttributes`). Never fails.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::NormalizeAttributes;
/// let mut m = Message::new("{}")
///     .with_attribute("app_update_channel", "beta-test")
///     .with_attribute("geo_country", "de");
/// NormalizeAttributes::apply(&mut m);
/// assert_eq!(m.attribute("normalized_channel"), Some("beta"));
/// assert_eq!(m.attribute("normalized_country_code"), Some("DE"));
/// assert_eq!(m.attribute("normalized_os"), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct NormalizeAttributes {
    _private: (),
}

impl NormalizeAttributes {
    /// The step.
    pub fn new() -> Self {
        NormalizeAttributes::default()
    }

    /// What the step does to one message.
    pub fn apply(message: &mut Message) {
        let a = &message.attributes;
        let get = |k: &str| a.get(k).map(String::as_str);
        let normalized = [
            (
                "normalized_channel",
                get(attr::APP_UPDATE_CHANNEL).map(|v| normalize_channel(v).to_string()),
            ),
            (
                "normalized_os",
                get(attr::OS).map(|v| normalize_os(v).to_string()),
            ),
            (
                "normalized_os_version",
                get(attr::OS_VERSION).map(|v| normalize_os_version(v).to_string()),
            ),
            (
                "normalized_app_name",
                get(attr::APP_NAME).map(|v| normalize_app_name(v).to_string()),
            ),
            (
                "normalized_country_code",
                get(attr::GEO_COUNTRY).map(normalize_country_code),
            ),
        ];
        for (name, value) in normalized {
            if let Some(v) = value {
                message.attributes.insert(name.to_string(), v);
            }
        }
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for NormalizeAttributes {
    type Output = PCollection<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.map(|mut m: Message| {
            NormalizeAttributes::apply(&mut m);
            m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_versions() {
        for (v, want) in [
            ("10", "10"),
            ("1.2.3.4", "1.2.3"),
            ("1.", "1"),
            ("1..2", "1"),
            (".1", ""),
            ("", ""),
            ("5.1 SP3", "5.1"),
            ("5.1\nx", ""),
            ("٣.1", ""),
        ] {
            assert_eq!(normalize_os_version(v), want, "{v:?}");
        }
    }

    #[test]
    fn channels_oses_apps_countries() {
        assert_eq!(normalize_channel("esr"), "esr");
        assert_eq!(normalize_channel("betamax"), "beta");
        assert_eq!(normalize_channel(""), "Other");
        assert_eq!(normalize_os("Windows_NT"), "Windows");
        assert_eq!(normalize_os("iPhone OS"), "iOS");
        assert_eq!(normalize_os("SunOS 5"), "Linux");
        assert_eq!(normalize_os("Android 14"), "Android");
        assert_eq!(normalize_os("Haiku"), "Other");
        assert_eq!(normalize_app_name("Zerda_cn_x"), "Zerda_cn");
        assert_eq!(normalize_app_name("Firefox"), "Firefox");
        assert_eq!(normalize_app_name("firefox"), "Other");
        assert_eq!(normalize_country_code("ß"), "SS");
        assert_eq!(normalize_country_code("F1"), "Other");
        assert_eq!(normalize_country_code(""), "Other");
    }
}
