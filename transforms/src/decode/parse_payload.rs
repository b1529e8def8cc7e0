//! `ParsePayload`: parse once, lift nested metadata, validate against the schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sluice::{Message, PCollection, PTransform, WithFailures};
use sluice_schemas::{Limits, SchemaRegistry};

use super::json_scan::{remove_members, replace_string};
use super::metadata::{is_metadata_member, lift_metadata};
use super::parse_uri::is_uuid;
use super::{attr, DecodeError};

/// `crc32(client_id) % 100`: the sample bucket gcp-ingestion derives from a client id. The
/// [`ParsePayload`] step hashes the id as [`normalize_uuid`] spells it (lower case, no braces).
///
/// ```
/// assert_eq!(sluice_transforms::decode::sample_id("c0ffeec0-ffee-c0ff-eec0-ffeec0ffeec0"), 33);
/// ```
pub fn sample_id(client_id: &str) -> u32 {
    crc32fast::hash(client_id.as_bytes()) % 100
}

/// A client id (or another sample-id source) as gcp-ingestion keeps it: braces removed (the
/// activity-stream `impression_id` comes as `{uuid}`), then lower-cased, if what remains is a
/// UUID; `None` otherwise.
///
/// Stricter than gcp-ingestion, deliberately: a UUID here is 8-4-4-4-12 hex digits, where
/// Java's `UUID.fromString` also takes shortened groups such as `1-2-3-4-5`.
///
/// ```
/// use sluice_transforms::decode::normalize_uuid;
/// assert_eq!(
///     normalize_uuid("{2907648D-1A3B-4C5D-8E9F-0A1B2C3D4E5F}").as_deref(),
///     Some("2907648d-1a3b-4c5d-8e9f-0a1b2c3d4e5f")
/// );
/// assert_eq!(normalize_uuid("n/a"), None);
/// ```
pub fn normalize_uuid(id: &str) -> Option<String> {
    let id: String = id.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    is_uuid(&id).then(|| id.to_ascii_lowercase())
}

/// Parses the payload as a JSON object once, lifts the `metadata` of an already-decoded
/// message back into attributes (and out of the payload), validates the rest against its
/// schema, and derives attributes from it (gcp-ingestion's `ParsePayload`).
///
/// - Lifting only fills attributes the message lacks ([`lift_metadata`]): a payload's own
///   `metadata` never changes what the edge set (namespace, doctype, version,
///   `submission_timestamp`, `document_id`, ...). A `document_id`, wherever it came from, must
///   be a UUID.
/// - The schema is `document_namespace`/`document_type` at `document_version`. Without a
///   `document_version` attribute (the telemetry uri has none), the version is the payload's
///   `version`, else its `v`, whichever is first a scalar (`{"version":{"major":4},"v":4}` is
///   version 4); it is then set as the `document_version` attribute. The version must be
///   spelled as the schema file is: `01` or `+1` is no schema, as in gcp-ingestion.
/// - A schema whose `mozPipelineMetadata.expiration_policy.collect_through_date` is before the
///   day (UTC) of `submission_timestamp` rejects the document (gcp-ingestion's deprecation
///   check); an unparsable date or timestamp disables the check, as there.
/// - From the payload: `app_update_channel`, `os`, `os_version` (from a Glean `client_info`,
///   else a telemetry `environment.system.os`, else top-level `release_channel`, `os`,
///   `osversion`); `client_id` from `client_info.client_id`, else `client_id`, else `clientId`,
///   the first that is a UUID ([`normalize_uuid`]), rewritten in lower case in the payload as
///   well; `sample_id` ([`sample_id`]) from the schema's
///   `mozPipelineMetadata.sample_id_source_uuid_attribute` or
///   `sample_id_source_uuid_payload_path` (the attribute first), by default from `client_id`.
///   A client id that is not a UUID (`"n/a"`) sets neither `client_id` nor `sample_id`.
/// - `document_namespace`, `document_type` and `document_version` are then set to the names of
///   the schema found ([`Schema::canonical_namespace`](sluice_schemas::Schema::canonical_namespace),
///   its version as a plain integer), so that outputs are partitioned by the repository's
///   spelling: `.test.` or `Test` land where `test` does.
/// - The payload's nesting and array lengths are bounded ([`Limits`]) before validation.
/// - The output payload is the input bytes, minus the lifted members if there were any and
///   with a client id rewritten in lower case: the document is never re-serialized.
///
/// Errors (`error_type` `ParsePayload`): not JSON, not an object, over the limits, a
/// `document_id` that is not a UUID, missing namespace or doctype, unknown doctype, missing
/// version, schema version not found, invalid (the message names the failing JSON pointers),
/// no longer collected.
#[derive(Debug, Clone)]
pub struct ParsePayload {
    registry: Arc<SchemaRegistry>,
    limits: Limits,
}

impl ParsePayload {
    /// The step, validating against `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        ParsePayload {
            registry,
            limits: Limits::default(),
        }
    }

    /// Sets the bounds checked before validation.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Parses and validates one message (what the step does per record).
    pub fn apply_to(&self, message: &Message) -> Result<Message, DecodeError> {
        self.apply_owned(message.clone()).map_err(|(_, e)| e)
    }

    /// Parses and validates a message it owns; on failure, hands it back unchanged with the
    /// error.
    pub fn apply_owned(&self, mut message: Message) -> Result<Message, (Message, DecodeError)> {
        let parsed = match self.parse_and_validate(&message.payload, &message.attributes) {
            Ok(parsed) => parsed,
            Err(e) => return Err((message, e)),
        };
        // nothing can fail from here: the message changes only now
        if let Some(lifted) = parsed.attributes {
            message.attributes = lifted;
        }
        let [namespace, doctype, version] = parsed.canonical;
        for (name, value) in [
            (attr::DOCUMENT_NAMESPACE, namespace),
            (attr::DOCUMENT_TYPE, doctype),
            (attr::DOCUMENT_VERSION, version),
        ] {
            message.attributes.insert(name.to_string(), value);
        }
        for (name, value) in parsed.derived {
            message.attributes.insert(name.to_string(), value);
        }
        message.payload = parsed.payload;
        Ok(message)
    }

    /// The work of the step, leaving the message alone: what to change once it passed.
    fn parse_and_validate(
        &self,
        payload: &Bytes,
        attributes: &BTreeMap<String, String>,
    ) -> Result<Parsed, DecodeError> {
        let mut value: Value = serde_json::from_slice(payload)
            .map_err(|source| DecodeError::InvalidJson { source })?;
        let Value::Object(map) = &mut value else {
            return Err(DecodeError::NotAnObject {
                found: kind(&value),
            });
        };
        let (payload, lifted) = if map.keys().any(|k| is_metadata_member(k)) {
            // a replay: lift into a copy of the attributes (rare, and the original must stay
            // intact for a dead letter), and cut the lifted members out of the bytes, keeping
            // everything else
            let mut lifted = attributes.clone();
            lift_metadata(map, &mut lifted);
            let cut = match remove_members(payload, is_metadata_member) {
                Some(cut) => Bytes::from(cut),
                // unreachable for parsed JSON; stay correct anyway
                None => Bytes::from(
                    serde_json::to_vec(&value)
                        .map_err(|source| DecodeError::InvalidJson { source })?,
                ),
            };
            (cut, Some(lifted))
        } else {
            (payload.clone(), None)
        };
        let attributes = lifted.as_ref().unwrap_or(attributes);
        if let Some(id) = attributes.get(attr::DOCUMENT_ID) {
            if !is_uuid(id) {
                return Err(DecodeError::InvalidDocumentIdAttribute {
                    document_id: id.clone(),
                });
            }
        }
        self.limits.check(&value).map_err(DecodeError::Limits)?;
        let schema = self.validate(&value, attributes)?;
        let pipeline = schema.as_json().get("mozPipelineMetadata");
        check_expiration(pipeline, attributes, schema)?;
        let derived = attributes_from_payload(&value, attributes, pipeline);
        let payload = match &derived.client_id_edit {
            Some((path, id)) => replace_string(&payload, path, id).map_or(payload, Bytes::from),
            None => payload,
        };
        Ok(Parsed {
            payload,
            attributes: lifted,
            canonical: [
                schema.canonical_namespace().to_owned(),
                schema.canonical_doctype().to_owned(),
                schema.version().to_string(),
            ],
            derived: derived.attributes,
        })
    }

    /// Validates `document`; gives the schema it matched.
    fn validate(
        &self,
        document: &Value,
        attributes: &BTreeMap<String, String>,
    ) -> Result<&sluice_schemas::Schema, DecodeError> {
        let namespace =
            attributes
                .get(attr::DOCUMENT_NAMESPACE)
                .ok_or(DecodeError::MissingAttribute {
                    name: attr::DOCUMENT_NAMESPACE,
                })?;
        let doctype = attributes
            .get(attr::DOCUMENT_TYPE)
            .ok_or(DecodeError::MissingAttribute {
                name: attr::DOCUMENT_TYPE,
            })?;
        if !self.registry.doctype_exists(namespace, doctype) {
            return Err(DecodeError::UnknownDoctype {
                namespace: namespace.clone(),
                doctype: doctype.clone(),
            });
        }
        let (namespace, doctype) = (namespace.clone(), doctype.clone());
        let version = match attributes.get(attr::DOCUMENT_VERSION) {
            Some(v) => v.clone(),
            None => match version_from_payload(document) {
                Some(v) => v,
                None => return Err(DecodeError::MissingVersion { namespace, doctype }),
            },
        };
        // the version names a schema file: `01` or `+1` is not `1`
        let number = match version.parse::<u32>() {
            Ok(n) if n.to_string() == version => n,
            _ => {
                return Err(DecodeError::SchemaNotFound {
                    namespace,
                    doctype,
                    version,
                })
            }
        };
        let Some(schema) = self.registry.get(&namespace, &doctype, number) else {
            return Err(DecodeError::SchemaNotFound {
                namespace,
                doctype,
                version,
            });
        };
        schema
            .validate(document)
            .map_err(|failure| DecodeError::Invalid {
                namespace,
                doctype,
                version: number,
                failure,
            })?;
        Ok(schema)
    }
}

/// The payload's `version`, else its `v`: the first present that is not an object or array,
/// as text (gcp-ingestion takes the first "value node", `null` included, as `asText` gives it).
fn version_from_payload(document: &Value) -> Option<String> {
    ["version", "v"]
        .iter()
        .filter_map(|k| document.get(*k))
        .find(|v| !v.is_object() && !v.is_array())
        .map(as_text)
}

/// A JSON value as Jackson's `asText` gives it: strings unquoted, scalars as written, `""` for
/// containers.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

/// gcp-ingestion's deprecation check: a document submitted (UTC day of `submission_timestamp`)
/// after its schema's `collect_through_date` is rejected.
fn check_expiration(
    pipeline: Option<&Value>,
    attributes: &BTreeMap<String, String>,
    schema: &sluice_schemas::Schema,
) -> Result<(), DecodeError> {
    let Some(through) = pipeline
        .and_then(|p| p.pointer("/expiration_policy/collect_through_date"))
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    // ISO_LOCAL_DATE: exactly yyyy-mm-dd
    let Some(through_date) = (through.len() == 10)
        .then(|| chrono::NaiveDate::parse_from_str(through, "%Y-%m-%d").ok())
        .flatten()
    else {
        return Ok(());
    };
    let Some(submitted) = attributes
        .get(attr::SUBMISSION_TIMESTAMP)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc).date_naive())
    else {
        return Ok(());
    };
    if submitted > through_date {
        return Err(DecodeError::Expired {
            namespace: schema.canonical_namespace().to_owned(),
            doctype: schema.canonical_doctype().to_owned(),
            version: schema.version(),
            collect_through_date: through.to_string(),
            submission_date: submitted.to_string(),
        });
    }
    Ok(())
}

/// What [`attributes_from_payload`] found.
struct Derived {
    /// Attributes to set (overwriting).
    attributes: Vec<(&'static str, String)>,
    /// The client id to write back into the payload, in lower case, and where.
    client_id_edit: Option<(&'static [&'static str], String)>,
}

/// A non-empty string at `v`.
fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// gcp-ingestion's `addAttributesFromPayload`: channel, os and client id from the payload, and
/// the sample id from the schema's sources.
fn attributes_from_payload(
    document: &Value,
    attributes: &BTreeMap<String, String>,
    pipeline: Option<&Value>,
) -> Derived {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let put = |out: &mut Vec<(&'static str, String)>, name, v: Option<&str>| {
        if let Some(v) = v {
            out.push((name, v.to_string()));
        }
    };
    let client_info = document.get("client_info").filter(|c| c.is_object());
    let common_os = document
        .pointer("/environment/system/os")
        .filter(|o| o.is_object());
    if let Some(ci) = client_info {
        put(
            &mut out,
            attr::APP_UPDATE_CHANNEL,
            text(ci.get("app_channel")),
        );
        put(&mut out, attr::OS, text(ci.get("os")));
        put(&mut out, attr::OS_VERSION, text(ci.get("os_version")));
    } else if let Some(os) = common_os {
        put(&mut out, attr::OS, text(os.get("name")));
        put(&mut out, attr::OS_VERSION, text(os.get("version")));
    } else {
        put(
            &mut out,
            attr::APP_UPDATE_CHANNEL,
            text(document.get("release_channel")),
        );
        put(&mut out, attr::OS, text(document.get("os")));
        put(&mut out, attr::OS_VERSION, text(document.get("osversion")));
    }

    // the client id: Glean's first (it wins over an attribute), then the common ping's, then
    // the legacy `clientId`, each only if it is a UUID
    const GLEAN: &[&str] = &["client_info", "client_id"];
    const COMMON: &[&str] = &["client_id"];
    const LEGACY: &[&str] = &["clientId"];
    let mut client_id = attributes.get(attr::CLIENT_ID).cloned();
    let mut client_id_edit = None;
    for (path, overrides) in [(GLEAN, true), (COMMON, false), (LEGACY, false)] {
        if client_id.is_some() && !overrides {
            continue;
        }
        let raw = path
            .iter()
            .try_fold(document, |v, k| v.get(*k))
            .and_then(Value::as_str);
        if let Some((raw, id)) = raw.and_then(|r| normalize_uuid(r).map(|id| (r, id))) {
            if raw != id {
                client_id_edit = Some((path, id.clone()));
            }
            out.push((attr::CLIENT_ID, id.clone()));
            client_id = Some(id);
            if overrides {
                break;
            }
        }
    }

    // the sample id: from the schema's sources, the attribute first; by default the client id
    let source_attribute = pipeline
        .and_then(|p| p.get("sample_id_source_uuid_attribute"))
        .and_then(Value::as_str);
    let source_path: Option<Vec<&str>> = pipeline
        .and_then(|p| p.get("sample_id_source_uuid_payload_path"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let source_attribute = match (source_attribute, &source_path) {
        (None, None) => Some(attr::CLIENT_ID),
        (a, _) => a,
    };
    let from_attribute = source_attribute.and_then(|name| {
        if name == attr::CLIENT_ID {
            client_id.clone()
        } else {
            out.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| attributes.get(name).cloned())
        }
    });
    let from_path = source_path.map(|path| {
        path.iter()
            .try_fold(document, |v, k| v.get(*k))
            .map_or_else(String::new, as_text)
    });
    if let Some(id) = [from_attribute, from_path]
        .into_iter()
        .flatten()
        .find_map(|v| normalize_uuid(&v))
    {
        out.push((attr::SAMPLE_ID, sample_id(&id).to_string()));
    }
    Derived {
        attributes: out,
        client_id_edit,
    }
}

/// What [`ParsePayload`] changes in a message that passed.
struct Parsed {
    /// The payload to pass on (the input's, minus lifted members).
    payload: Bytes,
    /// The attributes with the lifted metadata, for a replay.
    attributes: Option<BTreeMap<String, String>>,
    /// The namespace, doctype and version of the schema the document matched, as the
    /// repository spells them.
    canonical: [String; 3],
    /// Attributes derived from the payload, set last.
    derived: Vec<(&'static str, String)>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for ParsePayload {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.try_map_owned("ParsePayload", move |m: Message| self.apply_owned(m))
    }
}
