//! Stub installer pings: `/stub/<ping_version>/<field>/...`, where the uri is the whole ping
//! (gcp-ingestion's `ParseUri.StubUri`, itself a port of the Heka `nginx_redshift` filter).

use serde_json::Value;

use super::parse_uri::split_path;
use super::{attr, DecodeError};

pub(crate) const PREFIX: &str = "/stub/";

/// What a path element becomes in the payload.
#[derive(Clone, Copy)]
enum Field {
    /// Not kept (the ping version, read separately; a retired timing).
    Ignore,
    /// The text as a string.
    Str(&'static str),
    /// Joined to what the field holds with `.` (the os version comes in three elements).
    Append(&'static str),
    /// `true` if the text is `1`, else `false`.
    Bool(&'static str),
    /// The text as an integer.
    Int(&'static str),
    /// The text as an integer, written back as a string (`"+01"` -> `"1"`).
    IntString(&'static str),
    /// An integer code: each field is `true` if the code equals its value.
    Codes(&'static [(&'static str, i32)]),
}

/// The elements in order; v6 pings have the first 36, v7 the first 37, v8 all 39.
const FIELDS: [Field; 39] = [
    Field::Ignore,
    Field::Str("build_channel"),
    Field::Str("update_channel"),
    Field::Str("locale"),
    Field::Codes(&[("64bit_build", 1)]),
    Field::Codes(&[("64bit_os", 1)]),
    Field::Append("os_version"),
    Field::Append("os_version"),
    Field::Append("os_version"),
    Field::Str("service_pack"),
    Field::Bool("server_os"),
    // the exit code; 23 sets both signature fields, hence the two entries for it
    Field::Codes(&[
        ("succeeded", 0),
        ("user_cancelled", 10),
        ("out_of_retries", 11),
        ("file_error", 20),
        ("sig_not_trusted", 21),
        ("sig_not_trusted", 23),
        ("sig_unexpected", 22),
        ("sig_unexpected", 23),
        ("install_timeout", 30),
    ]),
    Field::Codes(&[("old_running", 1), ("new_launched", 2)]),
    Field::Int("download_retries"),
    Field::Int("bytes_downloaded"),
    Field::Int("download_size"),
    Field::Int("intro_time"),
    Field::Int("options_time"),
    Field::Int("download_time"),
    Field::Ignore,
    Field::Int("download_latency"),
    Field::Int("preinstall_time"),
    Field::Int("install_time"),
    Field::Int("finish_time"),
    Field::Codes(&[("disk_space_error", 1), ("no_write_access", 2)]),
    Field::Bool("manual_download"),
    Field::Bool("had_old_install"),
    Field::Str("old_version"),
    Field::Str("old_build_id"),
    Field::Str("version"),
    Field::Str("build_id"),
    Field::Bool("default_path"),
    Field::Bool("admin_user"),
    Field::Codes(&[("new_default", 1), ("old_default", 2)]),
    Field::Codes(&[("set_default", 2)]),
    Field::Str("download_ip"),
    Field::Str("attribution"),
    Field::IntString("profile_cleanup_prompt"),
    Field::Bool("profile_cleanup_requested"),
];

/// A JSON object that keeps its members in insertion order (as gcp-ingestion's `ObjectNode`).
#[derive(Default)]
struct Object(Vec<(&'static str, Value)>);

impl Object {
    fn put(&mut self, key: &'static str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"{".to_vec();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k).expect("writing to a Vec cannot fail");
            out.push(b':');
            serde_json::to_writer(&mut out, v).expect("writing to a Vec cannot fail");
        }
        out.push(b'}');
        out
    }
}

/// `v6`..`v8`, optionally `-<digits>`: the ping version's digit and the funnelcake id.
fn ping_version(element: &str) -> Option<(u8, Option<&str>)> {
    let rest = element.strip_prefix('v')?;
    let (version, funnelcake) = match rest.split_once('-') {
        Some((v, f)) => (v, Some(f)),
        None => (rest, None),
    };
    let version = match version {
        "6" => 6,
        "7" => 7,
        "8" => 8,
        _ => return None,
    };
    match funnelcake {
        Some(f) if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) => None,
        f => Some((version, f)),
    }
}

/// Attributes a uri sets.
pub(crate) type UriAttributes = Vec<(&'static str, String)>;

/// The attributes and the payload of a stub installer ping; `rest` is the uri after `/stub/`.
pub(crate) fn parse(uri: &str, rest: &str) -> Result<(UriAttributes, Vec<u8>), DecodeError> {
    let elements = split_path(rest);
    let first = elements.first().copied().unwrap_or("");
    let Some((version, funnelcake)) = ping_version(first) else {
        return Err(DecodeError::UnknownStubVersion {
            uri: uri.to_string(),
            version: first.to_string(),
        });
    };
    let expected = match version {
        6 => 36,
        7 => 37,
        _ => 39,
    };
    if elements.len() != expected {
        return Err(DecodeError::StubElementCount {
            uri: uri.to_string(),
            expected,
            found: elements.len(),
        });
    }
    let mut payload = Object::default();
    payload.put("installer_type", Value::from("stub"));
    // required by the schema, and stub pings do not have it
    payload.put("installer_version", Value::from(""));
    payload.put("ping_version", Value::from(first));
    if let Some(f) = funnelcake {
        payload.put("funnelcake", Value::from(f));
    }
    for (i, (text, field)) in elements.iter().zip(FIELDS).enumerate() {
        let int = || {
            text.parse::<i32>()
                .map_err(|_| DecodeError::StubNotAnInteger {
                    uri: uri.to_string(),
                    // after `stub`, 1-based
                    position: i + 2,
                    value: text.to_string(),
                })
        };
        match field {
            Field::Ignore => {}
            Field::Str(key) => payload.put(key, Value::from(*text)),
            Field::Append(key) => {
                let joined = match payload.0.iter().find(|(k, _)| *k == key) {
                    Some((_, Value::String(s))) => format!("{s}.{text}"),
                    _ => text.to_string(),
                };
                payload.put(key, Value::from(joined));
            }
            Field::Bool(key) => payload.put(key, Value::from(*text == "1")),
            Field::Int(key) => payload.put(key, Value::from(int()?)),
            Field::IntString(key) => payload.put(key, Value::from(int()?.to_string())),
            Field::Codes(codes) => {
                let code = int()?;
                for (key, _) in codes {
                    let hit = codes.iter().any(|(k, c)| k == key && *c == code);
                    payload.put(key, Value::from(hit));
                }
            }
        }
    }
    let attributes = vec![
        (attr::DOCUMENT_NAMESPACE, "firefox-installer".to_string()),
        (attr::DOCUMENT_TYPE, "install".to_string()),
        (attr::DOCUMENT_VERSION, "1".to_string()),
    ];
    Ok((attributes, payload.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(fields: &[&str]) -> String {
        format!("/stub/{}", fields.join("/"))
    }

    /// A v6 ping with every element valid (from gcp-ingestion's `ParseUriTest.testStubUri`).
    fn valid_v6() -> Vec<&'static str> {
        let mut f = vec![
            "v6-1", "release", "release", "en-US", "1", "0", "10", "0", "19045",
        ];
        f.extend([
            "sp", "0", "23", "2", "1", "100", "200", "3", "4", "5", "", "6", "7", "8", "9",
        ]);
        f.extend([
            "2", "1", "0", "95.0", "2022", "96.0", "2023", "1", "x", "1", "2", "1.2.3.4",
        ]);
        f
    }

    #[test]
    fn v6_ping_becomes_a_payload() {
        let uri = v6(&valid_v6());
        let (attrs, payload) = parse(&uri, &uri[PREFIX.len()..]).unwrap();
        assert_eq!(
            attrs[0],
            ("document_namespace", "firefox-installer".to_string())
        );
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["ping_version"], "v6-1");
        assert_eq!(v["funnelcake"], "1");
        assert_eq!(v["installer_version"], "");
        assert_eq!(v["64bit_build"], true);
        assert_eq!(v["64bit_os"], false);
        assert_eq!(v["os_version"], "10.0.19045");
        assert_eq!(v["succeeded"], false);
        assert_eq!(v["sig_not_trusted"], true);
        assert_eq!(v["sig_unexpected"], true);
        assert_eq!(v["old_running"], false);
        assert_eq!(v["new_launched"], true);
        assert_eq!(v["download_retries"], 1);
        assert_eq!(v["download_time"], 5);
        assert_eq!(v["disk_space_error"], false);
        assert_eq!(v["no_write_access"], true);
        assert_eq!(v["default_path"], true);
        assert_eq!(v["admin_user"], false);
        assert_eq!(v["set_default"], true);
        assert_eq!(v["download_ip"], "1.2.3.4");
        assert!(v.get("attribution").is_none());
        // insertion order, as gcp-ingestion writes it
        assert!(String::from_utf8(payload)
            .unwrap()
            .starts_with(r#"{"installer_type":"stub","installer_version":"","ping_version":"v6-1","funnelcake":"1","build_channel":"release""#));
    }

    #[test]
    fn v8_adds_attribution_and_profile_cleanup() {
        let mut f = valid_v6();
        f[0] = "v8";
        f.extend(["campaign", "+01", "1"]);
        let uri = v6(&f);
        let (_, payload) = parse(&uri, &uri[PREFIX.len()..]).unwrap();
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["attribution"], "campaign");
        assert_eq!(v["profile_cleanup_prompt"], "1");
        assert_eq!(v["profile_cleanup_requested"], true);
        assert!(v.get("funnelcake").is_none());
    }

    #[test]
    fn errors_match_gcp_ingestion() {
        // gcp-ingestion: UnknownPingVersionException, UnexpectedPathElementsException,
        // InvalidIntegerException (position counts `stub` as 1)
        for uri in ["/stub/", "/stub/v5", "/stub/v6-", "/stub/v6-x"] {
            let e = parse(uri, &uri[PREFIX.len()..]).unwrap_err();
            assert!(
                matches!(e, DecodeError::UnknownStubVersion { .. }),
                "{uri}: {e}"
            );
        }
        for uri in ["/stub/v6", "/stub/v7", "/stub/v8"] {
            let e = parse(uri, &uri[PREFIX.len()..]).unwrap_err();
            assert!(
                matches!(e, DecodeError::StubElementCount { found: 1, .. }),
                "{uri}: {e}"
            );
        }
        let spaces = format!("/stub/v6/{}", vec![" "; 35].join("/"));
        let e = parse(&spaces, &spaces[PREFIX.len()..]).unwrap_err();
        assert!(
            matches!(e, DecodeError::StubNotAnInteger { position: 6, .. }),
            "{e}"
        );
    }
}
