//! `ParseUri`: routing attributes from the submission path.

use sluice::{Message, PCollection, PTransform, WithFailures};

use super::DecodeError;
use super::{attr, stub};

const PREFIX: &str = "/submit/";
const TELEMETRY: &str = "telemetry";
const TELEMETRY_FORM: &str =
    "telemetry/<docid>/<doctype>/<app_name>/<app_version>/<app_update_channel>/<app_build_id>";
const GENERIC_FORM: &str = "<namespace>/<doctype>/<version>/<docid>";
const TELEMETRY_KEYS: [&str; 6] = [
    attr::DOCUMENT_ID,
    attr::DOCUMENT_TYPE,
    attr::APP_NAME,
    attr::APP_VERSION,
    attr::APP_UPDATE_CHANNEL,
    attr::APP_BUILD_ID,
];
const GENERIC_KEYS: [&str; 4] = [
    attr::DOCUMENT_NAMESPACE,
    attr::DOCUMENT_TYPE,
    attr::DOCUMENT_VERSION,
    attr::DOCUMENT_ID,
];

/// The most attributes a message may have to be decoded (see [`ParseUri`]).
pub const MAX_ATTRIBUTES: usize = 1000;

/// Sets the routing attributes from the `uri` attribute (gcp-ingestion's `ParseUri`).
///
/// Three forms are understood:
/// - `/submit/<namespace>/<doctype>/<version>/<docid>` sets `document_namespace`,
///   `document_type`, `document_version` and `document_id`;
/// - `/submit/telemetry/<docid>/<doctype>/<app_name>/<app_version>/<app_update_channel>/<app_build_id>`
///   sets `document_namespace` = `telemetry`, `document_id`, `document_type` and the `app_*`
///   attributes (the version comes later from the payload);
/// - `/stub/v6|v7|v8[-<funnelcake>]/...`, the stub installer's pings: the path *is* the ping,
///   turned into a `firefox-installer/install/1` payload that replaces the message's (see
///   gcp-ingestion's `ParseUri.StubUri`).
///
/// The path is split as gcp-ingestion splits it (Java's `String.split("/")`): trailing empty
/// elements are dropped, so a trailing slash is accepted; empty elements inside the path are
/// kept, as empty values that [`ParsePayload`](super::ParsePayload) then rejects (no such
/// doctype, no such schema version). A query string is not stripped: it stays part of the last
/// element, as in gcp-ingestion (the edge passes the query string in `args`, not in `uri`).
///
/// Stricter than gcp-ingestion, deliberately: `document_id` must be a UUID (8-4-4-4-12 hex
/// digits, either case), because it names the submission in dead letters and deduplication;
/// gcp-ingestion takes any text. A message without `uri` passes through untouched: it was parsed
/// before (a replay).
///
/// As the decoder's first step, it also refuses a message with more than [`MAX_ATTRIBUTES`]
/// attributes (the edge sets about 30, Pub/Sub allows 100): a flood of attributes is not a
/// submission, and would otherwise be written with every output.
///
/// Errors (dead letters with `error_type` `ParseUri`): too many attributes, unknown prefix, too
/// few or extra path elements, a document id that is not a UUID, an unknown stub ping version, a
/// stub element that must be an integer and is not.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::ParseUri;
/// let uri = "/submit/test/test/1/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11/";
/// let out = sluice::harness::run(vec![Message::new("{}").with_attribute("uri", uri)], |input, dead| {
///     input.apply("parse_uri", ParseUri::new()).failures_to(dead)
/// });
/// assert_eq!(out.output[0].attribute("document_version"), Some("1"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParseUri {
    _private: (),
}

impl ParseUri {
    /// The step.
    pub fn new() -> Self {
        ParseUri::default()
    }

    /// Parses one message's uri (what the step does per record).
    pub fn apply_to(message: &Message) -> Result<Message, DecodeError> {
        ParseUri::apply_owned(message.clone()).map_err(|(_, e)| e)
    }

    /// Parses the uri of a message it owns; on failure, hands it back unchanged with the error.
    pub fn apply_owned(mut message: Message) -> Result<Message, (Message, DecodeError)> {
        if message.attributes.len() > MAX_ATTRIBUTES {
            let count = message.attributes.len();
            return Err((
                message,
                DecodeError::TooManyAttributes {
                    count,
                    limit: MAX_ATTRIBUTES,
                },
            ));
        }
        let Some(uri) = message.attribute(attr::URI) else {
            return Ok(message);
        };
        // the attributes are set only once the whole uri parsed
        let parsed = match parse(uri) {
            Ok(parsed) => parsed,
            Err(e) => return Err((message, e)),
        };
        // a part of a split document (a replay of decoded output) keeps the names it was
        // decoded as: its uri is the submission's, which named the document it was split from
        let part = message.attributes.contains_key(attr::SPLIT_FROM);
        for (key, value) in parsed.attributes {
            if part && ROUTING.contains(&key) && message.attributes.contains_key(key) {
                continue;
            }
            message.attributes.insert(key.to_string(), value);
        }
        if let Some(payload) = parsed.payload {
            message.payload = payload.into();
        }
        Ok(message)
    }
}

/// The attributes that name a document's schema.
const ROUTING: [&str; 3] = [
    attr::DOCUMENT_NAMESPACE,
    attr::DOCUMENT_TYPE,
    attr::DOCUMENT_VERSION,
];

/// What a uri gives: attributes, and for a stub installer ping the payload.
struct Parsed {
    attributes: Vec<(&'static str, String)>,
    payload: Option<Vec<u8>>,
}

/// The path elements of `rest` as Java's `rest.split("/")` gives them: trailing empty elements
/// are dropped (all of them when every element is empty), except that a string without any
/// `/` is one element, even when empty.
pub(crate) fn split_path(rest: &str) -> Vec<&str> {
    let mut elements: Vec<&str> = rest.split('/').collect();
    if elements.len() > 1 {
        while elements.last() == Some(&"") {
            elements.pop();
        }
    }
    elements
}

/// The attributes a uri gives, or why it is not a submission uri.
fn parse(uri: &str) -> Result<Parsed, DecodeError> {
    if let Some(rest) = uri.strip_prefix(PREFIX) {
        return parse_submit(uri, rest).map(|pairs| Parsed {
            attributes: pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            payload: None,
        });
    }
    if let Some(rest) = uri.strip_prefix(stub::PREFIX) {
        let (attributes, payload) = stub::parse(uri, rest)?;
        return Ok(Parsed {
            attributes,
            payload: Some(payload),
        });
    }
    Err(DecodeError::UnknownUriPrefix {
        uri: uri.to_string(),
    })
}

/// A `/submit/` uri, `rest` what follows the prefix.
fn parse_submit<'u>(uri: &str, rest: &'u str) -> Result<Vec<(&'static str, &'u str)>, DecodeError> {
    let elements = split_path(rest);
    // gcp-ingestion's test is the prefix `/submit/telemetry/`
    let telemetry = rest
        .strip_prefix(TELEMETRY)
        .is_some_and(|r| r.starts_with('/'));
    let (form, keys): (&'static str, &[&'static str]) = if telemetry {
        (TELEMETRY_FORM, &TELEMETRY_KEYS)
    } else {
        (GENERIC_FORM, &GENERIC_KEYS)
    };
    let expected = keys.len() + usize::from(telemetry);
    let found = elements.len();
    if found < expected {
        return Err(DecodeError::TooFewUriElements {
            uri: uri.to_string(),
            form,
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DecodeError::ExtraUriElements {
            uri: uri.to_string(),
            form,
            expected,
            found,
        });
    }
    let values = if telemetry {
        &elements[1..]
    } else {
        &elements[..]
    };
    let mut out: Vec<(&'static str, &str)> =
        keys.iter().copied().zip(values.iter().copied()).collect();
    if telemetry {
        out.push((attr::DOCUMENT_NAMESPACE, TELEMETRY));
    }
    let document_id = out
        .iter()
        .find(|(k, _)| *k == attr::DOCUMENT_ID)
        .map_or("", |(_, v)| *v);
    if !is_uuid(document_id) {
        return Err(DecodeError::InvalidDocumentId {
            uri: uri.to_string(),
            document_id: document_id.to_string(),
        });
    }
    Ok(out)
}

/// `8-4-4-4-12` hex digits, either case (gcp-ingestion's check; the version nibble is not
/// checked, as there).
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl<'s> PTransform<PCollection<'s, Message>> for ParseUri {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.try_map_owned("ParseUri", ParseUri::apply_owned)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_flood_of_attributes_is_refused() {
        let uri = "/submit/test/test/1/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";
        let mut m = sluice::Message::new("{}").with_attribute("uri", uri);
        for i in 0..super::MAX_ATTRIBUTES - 1 {
            m.attributes.insert(format!("a{i}"), "v".into());
        }
        let ok = super::ParseUri::apply_owned(m.clone()).unwrap();
        assert_eq!(ok.attribute("document_type"), Some("test"));
        m.attributes.insert("one_more".into(), "v".into());
        let (back, e) = super::ParseUri::apply_owned(m.clone()).unwrap_err();
        assert_eq!(back, m);
        assert_eq!(
            e.to_string(),
            "message has 1001 attributes, over the limit of 1000"
        );
    }

    use super::*;

    const ID: &str = "8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";

    fn run(uri: &str) -> Result<Message, DecodeError> {
        ParseUri::apply_to(&Message::new("{}").with_attribute("uri", uri))
    }

    #[test]
    fn generic_form() {
        let m = run(&format!("/submit/org-mozilla-fenix/baseline/1/{ID}")).unwrap();
        assert_eq!(m.attribute("document_namespace"), Some("org-mozilla-fenix"));
        assert_eq!(m.attribute("document_type"), Some("baseline"));
        assert_eq!(m.attribute("document_version"), Some("1"));
        assert_eq!(m.attribute("document_id"), Some(ID));
        assert_eq!(m.attribute("app_name"), None);
    }

    #[test]
    fn telemetry_form_and_query_string() {
        let m = run(&format!(
            "/submit/telemetry/{ID}/main/Firefox/61.0a1/nightly/20180328030202?v=4"
        ))
        .unwrap();
        assert_eq!(m.attribute("document_namespace"), Some("telemetry"));
        assert_eq!(m.attribute("document_type"), Some("main"));
        assert_eq!(m.attribute("document_version"), None);
        assert_eq!(m.attribute("app_name"), Some("Firefox"));
        assert_eq!(m.attribute("app_version"), Some("61.0a1"));
        assert_eq!(m.attribute("app_update_channel"), Some("nightly"));
        // the query string stays part of the last element, as in gcp-ingestion
        assert_eq!(m.attribute("app_build_id"), Some("20180328030202?v=4"));
        assert_eq!(m.attribute("uri").map(|u| u.ends_with("?v=4")), Some(true));
    }

    #[test]
    fn no_uri_passes_through() {
        let m = Message::new("x").with_attribute("document_namespace", "test");
        assert_eq!(ParseUri::apply_to(&m).unwrap(), m);
    }

    #[test]
    fn every_error_kind() {
        let e = run("/other/test/test/1/x").unwrap_err();
        assert!(matches!(e, DecodeError::UnknownUriPrefix { .. }), "{e}");
        let e = run("/submit/test/test/1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "uri `/submit/test/test/1` has too few path elements: expected 4 after /submit/ (<namespace>/<doctype>/<version>/<docid>), found 3"
        );
        let e = run(&format!("/submit/test/test/1/{ID}/more")).unwrap_err();
        assert!(
            matches!(e, DecodeError::ExtraUriElements { found: 5, .. }),
            "{e}"
        );
        let e = run(&format!("/submit/telemetry/{ID}/main/Firefox")).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TooFewUriElements {
                    expected: 7,
                    found: 4,
                    ..
                }
            ),
            "{e}"
        );
        let e = run("/submit/test/test/1/not-a-uuid").unwrap_err();
        assert_eq!(
            e.to_string(),
            "document id `not-a-uuid` in uri `/submit/test/test/1/not-a-uuid` is not a uuid"
        );
        let e = run(&format!("/submit/test/test/1/{ID}//more")).unwrap_err();
        assert!(
            matches!(e, DecodeError::ExtraUriElements { found: 6, .. }),
            "{e}"
        );
    }

    #[test]
    fn splits_like_java() {
        assert_eq!(split_path(""), vec![""]);
        assert_eq!(split_path("a"), vec!["a"]);
        assert_eq!(split_path("a/b//"), vec!["a", "b"]);
        assert_eq!(split_path("a//b"), vec!["a", "", "b"]);
        assert_eq!(split_path("//"), Vec::<&str>::new());
        assert_eq!(split_path("/a"), vec!["", "a"]);
    }

    #[test]
    fn uuid_check() {
        assert!(is_uuid(ID));
        assert!(is_uuid(&ID.to_uppercase()));
        assert!(!is_uuid(&ID[1..]));
        assert!(!is_uuid(&ID.replace('-', "x")));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(uri in "(/submit/)?[a-z0-9/?-]{0,60}", args: Option<String>) {
            let mut m = Message::new("{}").with_attribute("uri", uri);
            if let Some(a) = args { m = m.with_attribute("args", a); }
            let _ = ParseUri::apply_to(&m);
        }
    }
}
