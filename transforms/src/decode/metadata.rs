//! `AddMetadata`, and the nesting of attributes into a payload's `metadata` that
//! `ParsePayload` undoes (gcp-ingestion's `NestedMetadata`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};
use sluice::{Message, PCollection, PTransform, WithFailures};

use super::json_scan::prepend_members;
use super::{attr, DecodeError};

const METADATA: &str = "metadata";
const TELEMETRY: &str = "telemetry";
/// Nested objects filled from attributes with a prefix: `geo_country` -> `metadata.geo.country`.
const PREFIXED: [(&str, &str); 3] = [
    ("geo", "geo_"),
    ("isp", "isp_"),
    ("user_agent", "user_agent_"),
];
/// HTTP headers, nested as `metadata.header.<name>` (gcp-ingestion's list, plus `x_lb_tags`,
/// which Sluice nested from the start and keeps so that its earlier outputs replay alike).
const HEADER_ATTRIBUTES: [&str; 8] = [
    "date",
    "dnt",
    "x_debug_id",
    "x_foxsec_ip_reputation",
    "x_lb_tags",
    "x_pingsender_version",
    "x_source_tags",
    "x_telemetry_agent",
];
/// Telemetry uri parts, nested as `metadata.uri.<name>` (telemetry namespace only).
const URI_ATTRIBUTES: [&str; 5] = [
    attr::URI,
    attr::APP_NAME,
    attr::APP_VERSION,
    attr::APP_UPDATE_CHANNEL,
    attr::APP_BUILD_ID,
];
/// Scalars in `metadata` itself, so that a payload names its own schema.
const IDENTIFYING_FIELDS: [&str; 3] = [
    attr::DOCUMENT_NAMESPACE,
    attr::DOCUMENT_TYPE,
    attr::DOCUMENT_VERSION,
];
/// Strings at the payload's top level.
const TOP_LEVEL_STRING_FIELDS: [&str; 7] = [
    attr::SUBMISSION_TIMESTAMP,
    attr::DOCUMENT_ID,
    "normalized_app_name",
    "normalized_channel",
    "normalized_os",
    "normalized_os_version",
    "normalized_country_code",
];
/// Integers at the payload's top level.
const TOP_LEVEL_INT_FIELDS: [&str; 1] = [attr::SAMPLE_ID];

/// Whether `key` is a top-level payload member that [`nest_metadata`] writes and
/// [`lift_metadata`] takes out.
pub(crate) fn is_metadata_member(key: &str) -> bool {
    key == METADATA || TOP_LEVEL_STRING_FIELDS.contains(&key) || TOP_LEVEL_INT_FIELDS.contains(&key)
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing a str to a Vec cannot fail");
}

fn push_object<'a>(
    out: &mut Vec<u8>,
    name: &str,
    entries: impl Iterator<Item = (&'a str, &'a str)>,
) {
    push_str(out, name);
    out.extend_from_slice(b":{");
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, k);
        out.push(b':');
        push_str(out, v);
    }
    out.push(b'}');
}

/// The top-level payload members that carry `attributes`, as JSON without braces, in
/// gcp-ingestion's layout and order:
///
/// ```text
/// "metadata":{"geo":{..geo_*},"isp":{..isp_*},"user_agent":{..user_agent_*},
///             "header":{date, dnt, x_debug_id, x_foxsec_ip_reputation, x_lb_tags, x_pingsender_version, x_source_tags, x_telemetry_agent},
///             "uri":{uri, app_name, app_version, app_update_channel, app_build_id},   (telemetry only)
///             "document_namespace":..,"document_type":..,"document_version":..},
/// "submission_timestamp":..,"document_id":..,"normalized_*":..,"sample_id":<int>
/// ```
///
/// Absent attributes are left out; nested objects are always written (possibly empty);
/// `sample_id` only if it is an integer. Other attributes (`client_id`, `client_compression`,
/// ...) stay attributes only.
///
/// ```
/// use std::collections::BTreeMap;
/// use sluice_transforms::decode::nest_metadata;
/// let attrs = BTreeMap::from([
///     ("document_namespace".to_string(), "test".to_string()),
///     ("geo_country".to_string(), "FR".to_string()),
///     ("sample_id".to_string(), "7".to_string()),
/// ]);
/// assert_eq!(
///     String::from_utf8(nest_metadata(&attrs)).unwrap(),
///     r#""metadata":{"geo":{"country":"FR"},"isp":{},"user_agent":{},"header":{},"document_namespace":"test"},"sample_id":7"#
/// );
/// ```
pub fn nest_metadata(attributes: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    push_str(&mut out, METADATA);
    out.extend_from_slice(b":{");
    for (name, prefix) in PREFIXED {
        push_object(
            &mut out,
            name,
            attributes
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (&k[prefix.len()..], v.as_str())),
        );
        out.push(b',');
    }
    let pick = |names: &'static [&'static str]| {
        names
            .iter()
            .filter_map(|n| attributes.get(*n).map(|v| (*n, v.as_str())))
    };
    push_object(&mut out, "header", pick(&HEADER_ATTRIBUTES));
    if attributes.get(attr::DOCUMENT_NAMESPACE).map(String::as_str) == Some(TELEMETRY) {
        out.push(b',');
        push_object(&mut out, "uri", pick(&URI_ATTRIBUTES));
    }
    for (k, v) in pick(&IDENTIFYING_FIELDS) {
        out.push(b',');
        push_str(&mut out, k);
        out.push(b':');
        push_str(&mut out, v);
    }
    out.push(b'}');
    for (k, v) in pick(&TOP_LEVEL_STRING_FIELDS) {
        out.push(b',');
        push_str(&mut out, k);
        out.push(b':');
        push_str(&mut out, v);
    }
    for (k, v) in pick(&TOP_LEVEL_INT_FIELDS) {
        // only canonical integers, so that lifting gives back the same string
        if v.parse::<i32>().is_ok_and(|n| n.to_string() == v) {
            out.push(b',');
            push_str(&mut out, k);
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
    }
    out
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Takes the members [`nest_metadata`] writes out of a parsed payload and puts them back into
/// `attributes` where they are absent: the inverse of `nest_metadata` for a payload alone, and
/// never a way for a payload to change what the edge (or an earlier step) set. Returns whether
/// the payload had any such member (then its bytes need the same members cut).
///
/// Only the names `nest_metadata` writes are read back: the `geo`, `isp` and `user_agent`
/// objects, the known `header` and `uri` names, the identifying fields in `metadata` and the
/// top-level fields. As in gcp-ingestion, the members are removed whatever their type; only
/// scalar values become attributes.
///
/// ```
/// use std::collections::BTreeMap;
/// use sluice_transforms::decode::{lift_metadata, nest_metadata};
/// let attrs = BTreeMap::from([
///     ("document_namespace".to_string(), "telemetry".to_string()),
///     ("app_name".to_string(), "Firefox".to_string()),
///     ("x_debug_id".to_string(), "dbg".to_string()),
/// ]);
/// let payload = format!("{{{}}}", String::from_utf8(nest_metadata(&attrs)).unwrap());
/// let mut value: serde_json::Value = serde_json::from_str(&payload).unwrap();
/// let mut lifted = BTreeMap::new();
/// assert!(lift_metadata(value.as_object_mut().unwrap(), &mut lifted));
/// assert_eq!(lifted, attrs);
/// assert_eq!(value, serde_json::json!({}));
///
/// // what is already set stays
/// let mut value = serde_json::json!({"metadata": {"document_namespace": "other"}});
/// let mut set = BTreeMap::from([("document_namespace".to_string(), "telemetry".to_string())]);
/// lift_metadata(value.as_object_mut().unwrap(), &mut set);
/// assert_eq!(set["document_namespace"], "telemetry");
/// ```
pub fn lift_metadata(
    payload: &mut Map<String, Value>,
    attributes: &mut BTreeMap<String, String>,
) -> bool {
    if !payload.keys().any(|k| is_metadata_member(k)) {
        return false;
    }
    let mut fill = |name: String, v: String| {
        attributes.entry(name).or_insert(v);
    };
    if let Some(Value::Object(metadata)) = payload.remove(METADATA) {
        for (name, prefix) in PREFIXED {
            if let Some(Value::Object(o)) = metadata.get(name) {
                for (k, v) in o {
                    if let Some(v) = scalar_text(v) {
                        fill(format!("{prefix}{k}"), v);
                    }
                }
            }
        }
        for (name, known) in [
            ("header", &HEADER_ATTRIBUTES[..]),
            ("uri", &URI_ATTRIBUTES[..]),
        ] {
            if let Some(Value::Object(o)) = metadata.get(name) {
                for k in known {
                    if let Some(v) = o.get(*k).and_then(scalar_text) {
                        fill(k.to_string(), v);
                    }
                }
            }
        }
        // a number too, as gcp-ingestion reads it (`"document_version":1`, ParsePayloadTest's
        // testMetadataInPayload)
        for name in IDENTIFYING_FIELDS {
            if let Some(v) = metadata.get(name).and_then(scalar_text) {
                fill(name.to_string(), v);
            }
        }
    }
    for name in TOP_LEVEL_STRING_FIELDS {
        if let Some(Value::String(v)) = payload.remove(name) {
            fill(name.to_string(), v);
        }
    }
    for name in TOP_LEVEL_INT_FIELDS {
        if let Some(v) = payload.remove(name).as_ref().and_then(scalar_text) {
            fill(name.to_string(), v);
        }
    }
    true
}

/// Nests the attributes into the payload's top-level `metadata` object and top-level fields
/// (see [`nest_metadata`] for the layout), splicing them into the payload bytes rather than
/// re-serializing the document. The attributes stay on the message.
///
/// Must follow [`ParsePayload`](super::ParsePayload), which removes an existing `metadata`
/// (else the result would have duplicate keys). A payload that is not a JSON object (first and
/// last non-whitespace bytes `{` and `}`) is a dead letter with `error_type` `AddMetadata`.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::AddMetadata;
/// let input = Message::new(r#"{"a":1}"#).with_attribute("document_id", "x");
/// let out = sluice::harness::run(vec![input], |input, dead| {
///     input.apply("add_metadata", AddMetadata::new()).failures_to(dead)
/// });
/// assert_eq!(
///     out.output[0].payload,
///     r#"{"metadata":{"geo":{},"isp":{},"user_agent":{},"header":{}},"document_id":"x","a":1}"#
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct AddMetadata {
    _private: (),
}

impl AddMetadata {
    /// The step.
    pub fn new() -> Self {
        AddMetadata::default()
    }

    /// Adds the metadata to one message (what the step does per record).
    pub fn apply_to(message: &Message) -> Result<Message, DecodeError> {
        AddMetadata::apply_owned(message.clone()).map_err(|(_, e)| e)
    }

    /// Adds the metadata to a message it owns; on failure, hands it back unchanged with the
    /// error.
    pub fn apply_owned(mut message: Message) -> Result<Message, (Message, DecodeError)> {
        match with_metadata(&message.payload, &message.attributes) {
            Ok(payload) => {
                message.payload = payload;
                Ok(message)
            }
            Err(e) => Err((message, e)),
        }
    }
}

pub(crate) fn with_metadata(
    payload: &[u8],
    attributes: &BTreeMap<String, String>,
) -> Result<Bytes, DecodeError> {
    prepend_members(payload, &nest_metadata(attributes))
        .map(Bytes::from)
        .ok_or(DecodeError::MetadataTarget)
}

impl<'s> PTransform<PCollection<'s, Message>> for AddMetadata {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.try_map_owned("AddMetadata", AddMetadata::apply_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn full_layout() {
        let a = attrs(&[
            ("document_namespace", "telemetry"),
            ("document_type", "main"),
            ("document_id", "id"),
            ("uri", "/submit/telemetry/id/main/Firefox/1/release/2"),
            ("app_name", "Firefox"),
            ("geo_city", "Paris"),
            ("geo_country", "FR"),
            ("user_agent_os", "Linux"),
            ("dnt", "1"),
            ("submission_timestamp", "2024-01-01T00:00:00Z"),
            ("sample_id", "42"),
            ("client_id", "c"),
            ("client_compression", "gzip"),
        ]);
        let got = String::from_utf8(nest_metadata(&a)).unwrap();
        assert_eq!(
            got,
            concat!(
                r#""metadata":{"geo":{"city":"Paris","country":"FR"},"isp":{},"user_agent":{"os":"Linux"},"#,
                r#""header":{"dnt":"1"},"uri":{"uri":"/submit/telemetry/id/main/Firefox/1/release/2","app_name":"Firefox"},"#,
                r#""document_namespace":"telemetry","document_type":"main"},"#,
                r#""submission_timestamp":"2024-01-01T00:00:00Z","document_id":"id","sample_id":42"#
            )
        );
        let mut v: Value = serde_json::from_str(&format!("{{{got}}}")).unwrap();
        let mut lifted = BTreeMap::new();
        lift_metadata(v.as_object_mut().unwrap(), &mut lifted);
        let mut want = a.clone();
        want.remove("client_id");
        want.remove("client_compression");
        assert_eq!(lifted, want);
    }

    #[test]
    fn lifting_fills_only_what_is_absent() {
        let mut v: Value = serde_json::from_str(
            r#"{"metadata":{"document_namespace":"other","document_type":"x","document_version":"9",
                "geo":{"country":"FR"},"header":{"dnt":"1","document_id":"h","remote_addr":"1.2.3.4"},
                "uri":{"app_name":"Evil","submission_timestamp":"u"}},
                "submission_timestamp":"1999-01-01T00:00:00Z","document_id":"evil","sample_id":3}"#,
        )
        .unwrap();
        let mut a = attrs(&[
            ("document_namespace", "test"),
            ("document_type", "test"),
            ("document_version", "1"),
            ("document_id", "id"),
            ("submission_timestamp", "2024-01-01T00:00:00Z"),
            ("geo_country", "DE"),
        ]);
        assert!(lift_metadata(v.as_object_mut().unwrap(), &mut a));
        assert_eq!(
            a,
            attrs(&[
                ("document_namespace", "test"),
                ("document_type", "test"),
                ("document_version", "1"),
                ("document_id", "id"),
                ("submission_timestamp", "2024-01-01T00:00:00Z"),
                ("geo_country", "DE"),
                // absent, so filled; unknown header and uri names are not read
                ("dnt", "1"),
                ("app_name", "Evil"),
                ("sample_id", "3"),
            ])
        );
        assert_eq!(v, serde_json::json!({}));
    }

    #[test]
    fn non_objects_are_rejected() {
        for p in ["[]", "", "x", "{", "\"{}\""] {
            let e = AddMetadata::apply_to(&Message::new(p)).unwrap_err();
            assert!(matches!(e, DecodeError::MetadataTarget), "{p}");
        }
        let ok = AddMetadata::apply_to(&Message::new(" {}\n")).unwrap();
        assert_eq!(
            ok.payload,
            " {\"metadata\":{\"geo\":{},\"isp\":{},\"user_agent\":{},\"header\":{}}}\n"
        );
    }

    #[test]
    fn escapes_attribute_values() {
        let a = attrs(&[("document_id", "a\"b\\c\n"), ("geo_\"k", "v")]);
        let p = with_metadata(b"{}", &a).unwrap();
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["document_id"], "a\"b\\c\n");
        assert_eq!(v["metadata"]["geo"]["\"k"], "v");
    }

    proptest::proptest! {
        #[test]
        fn lift_inverts_nest(
            a in proptest::collection::btree_map(
                "(geo_|isp_|user_agent_|)[a-z_]{1,8}|document_(namespace|type|version|id)|sample_id|x_debug_id|uri|app_name",
                ".{0,12}",
                0..8,
            )
        ) {
            let p = with_metadata(b"{\"k\":1}", &a).unwrap();
            let mut v: Value = serde_json::from_slice(&p).unwrap();
            let mut lifted = BTreeMap::new();
            lift_metadata(v.as_object_mut().unwrap(), &mut lifted);
            let telemetry = a.get("document_namespace").map(String::as_str) == Some("telemetry");
            let expected: BTreeMap<String, String> = a.iter().filter(|(k, v)| {
                let k = k.as_str();
                PREFIXED.iter().any(|(_, p)| k.starts_with(p))
                    || HEADER_ATTRIBUTES.contains(&k)
                    || (telemetry && URI_ATTRIBUTES.contains(&k))
                    || IDENTIFYING_FIELDS.contains(&k)
                    || TOP_LEVEL_STRING_FIELDS.contains(&k)
                    || (k == "sample_id" && v.parse::<i32>().map(|n| n.to_string() == **v).unwrap_or(false))
            }).map(|(k, v)| (k.clone(), v.clone())).collect();
            proptest::prop_assert_eq!(lifted, expected);
            proptest::prop_assert_eq!(v, serde_json::json!({"k": 1}));
        }
    }
}
