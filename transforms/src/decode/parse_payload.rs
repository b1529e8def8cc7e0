//! `ParsePayload`: parse once, lift nested metadata, validate against the schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sluice::{Failure, Message, PCollection, PTransform, WithFailures};
use sluice_schemas::{Limits, SchemaRegistry};

use super::json_scan::{remove_members, replace_string};
use super::metadata::{is_metadata_member, lift_metadata};
use super::parse_uri::is_uuid;
use super::scrub_payload::{count_drop, ScrubPayload, ScrubPayloadConfig};
use super::split::split;
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
/// - The payload rules of [`ParsePayload::with_scrub_payload`] run right after the payload is
///   parsed and replayed metadata lifted, before anything else looks at the document
///   (gcp-ingestion's MessageScrubber): a rule's drop is a `ScrubPayload` dead letter or a
///   count, whatever the document's validity; a removed field is not validated.
/// - A document whose schema has a `mozPipelineMetadata.split_config`
///   ([`SplitConfig`](sluice_schemas::SplitConfig)) becomes its parts ([`Payloads::Split`]):
///   each validated against its own schema and named as it, with the submission's other
///   attributes, its source position and `split_from`; if any part fails, the submission is
///   one dead letter. A message with `split_from` is never split again.
/// - The payload's nesting and array lengths are bounded ([`Limits`]) before validation.
/// - The output payload is the input bytes, minus the lifted members if there were any and
///   with a client id rewritten in lower case: the document is never re-serialized.
///
/// Errors (`error_type` `ParsePayload`): not JSON, not an object, over the limits, a
/// `document_id` that is not a UUID, missing namespace or doctype, unknown doctype, missing
/// version, schema version not found, invalid (the message names the failing JSON pointers),
/// no longer collected, a split part that fails any of these (the message names the part);
/// `ScrubPayload` for a `dead_letter` payload rule.
#[derive(Debug, Clone)]
pub struct ParsePayload {
    registry: Arc<SchemaRegistry>,
    limits: Limits,
    scrub: ScrubPayload,
    /// Whether any schema of the registry splits its documents.
    splits: bool,
}

/// What [`ParsePayload::apply`] made of a message that is not a dead letter.
#[derive(Debug)]
pub enum Payloads {
    /// The decoded message.
    One(Message),
    /// The parts of a split document (and the document itself when its split config
    /// preserves the original), in order: original, subsets, remainder.
    Split(Vec<Message>),
    /// Dropped by the `count` rule of this index in `drop_documents`.
    Dropped(usize),
}

impl IntoIterator for Payloads {
    type Item = Message;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Message>, std::vec::IntoIter<Message>>;

    /// The messages to pass on (none for a dropped document).
    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Payloads::One(m) => (Some(m), Vec::new()),
            Payloads::Split(parts) => (None, parts),
            Payloads::Dropped(_) => (None, Vec::new()),
        };
        one.into_iter().chain(many)
    }
}

impl ParsePayload {
    /// The step, validating against `registry`.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        let splits = registry.iter().any(|s| s.split_config().is_some());
        ParsePayload {
            splits,
            registry,
            limits: Limits::default(),
            scrub: ScrubPayload::new(&ScrubPayloadConfig::default()),
        }
    }

    /// Sets the payload rules (`[decoder.scrub_payload]`) applied right after parsing, before
    /// validation, as gcp-ingestion's MessageScrubber is: a document a rule drops is never
    /// validated, a field a rule removes is not validated either.
    pub fn with_scrub_payload(mut self, rules: &ScrubPayloadConfig) -> Self {
        self.scrub = ScrubPayload::new(rules);
        self
    }

    /// Sets the bounds checked before validation.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Parses and validates one message (what the step does per record), for a document
    /// that is neither split nor dropped by a rule.
    pub fn apply_to(&self, message: &Message) -> Result<Message, DecodeError> {
        self.apply_owned(message.clone()).map_err(|(_, e)| e)
    }

    /// Parses and validates a message it owns; on failure, hands it back unchanged with the
    /// error. A document that is split or dropped by a rule is an error here: use
    /// [`ParsePayload::apply`] where those can happen.
    pub fn apply_owned(&self, message: Message) -> Result<Message, (Message, DecodeError)> {
        // a copy to hand back only where a document can become other than one
        let original = (self.splits || !self.scrub.is_empty()).then(|| message.clone());
        match self.apply(message)? {
            Payloads::One(m) => Ok(m),
            Payloads::Split(_) | Payloads::Dropped(_) => Err((
                original.expect("only a split or a rule makes other than one document"),
                DecodeError::NotOneDocument,
            )),
        }
    }

    /// What the step does per record: parses the payload, applies the payload rules, validates
    /// it and derives attributes; splits it when its schema says so. On failure, hands the
    /// message back unchanged with the error (a split document is one dead letter, whichever
    /// part failed: replaying it makes every part again).
    pub fn apply(&self, mut message: Message) -> Result<Payloads, (Message, DecodeError)> {
        let parsed = match self.parse_and_validate(&message.payload, &message.attributes) {
            Ok(Outcome::Parsed(parsed)) => parsed,
            Ok(Outcome::Dropped(i)) => return Ok(Payloads::Dropped(i)),
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
        let Some(split) = parsed.split else {
            return Ok(Payloads::One(message));
        };
        message
            .attributes
            .insert(attr::SPLIT_FROM.to_string(), split.from);
        let mut out = Vec::with_capacity(split.parts.len() + 1);
        for part in split.parts {
            // each part keeps the source position: a sink refusing it names the input record
            let mut m = Message {
                payload: part.payload,
                attributes: message.attributes.clone(),
                position: message.position.clone(),
            };
            let [namespace, doctype, version] = part.canonical;
            for (name, value) in [
                (attr::DOCUMENT_NAMESPACE, namespace),
                (attr::DOCUMENT_TYPE, doctype),
                (attr::DOCUMENT_VERSION, version),
            ] {
                m.attributes.insert(name.to_string(), value);
            }
            out.push(m);
        }
        if split.keep_original {
            out.insert(0, message);
        }
        Ok(Payloads::Split(out))
    }

    /// The work of the step, leaving the message alone: what to change once it passed.
    fn parse_and_validate(
        &self,
        payload: &Bytes,
        attributes: &BTreeMap<String, String>,
    ) -> Result<Outcome, DecodeError> {
        let mut value: Value = serde_json::from_slice(payload)
            .map_err(|source| DecodeError::InvalidJson { source })?;
        let Value::Object(map) = &mut value else {
            return Err(DecodeError::NotAnObject {
                found: kind(&value),
            });
        };
        let (mut payload, lifted) = if map.keys().any(|k| is_metadata_member(k)) {
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
        // gcp-ingestion's MessageScrubber: after parsing, before anything looks at the
        // document's names or validity
        if !self.scrub.is_empty() {
            if let Some(i) = self.scrub.check_document(attributes, &value)? {
                return Ok(Outcome::Dropped(i));
            }
            self.scrub.drop_fields(attributes, &mut value, &mut payload);
        }
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
        // a part of a split (or its preserved original) is never split again
        let split = match schema.split_config() {
            Some(config) if !attributes.contains_key(attr::SPLIT_FROM) => {
                if let Some((path, id)) = &derived.client_id_edit {
                    set_string(&mut value, path, id);
                }
                Some(self.split(value, config, schema, attributes)?)
            }
            _ => None,
        };
        Ok(Outcome::Parsed(Parsed {
            payload,
            attributes: lifted,
            canonical: canonical(schema),
            derived: derived.attributes,
            split,
        }))
    }

    /// The parts of a valid `document` of `schema`, each validated against its own schema.
    fn split(
        &self,
        document: Value,
        config: &sluice_schemas::SplitConfig,
        schema: &sluice_schemas::Schema,
        attributes: &BTreeMap<String, String>,
    ) -> Result<Split, DecodeError> {
        let Value::Object(document) = document else {
            unreachable!("a document that validated as an object")
        };
        let mut parts = Vec::new();
        for part in split(document, config) {
            let t = part.target;
            let failed = |source: DecodeError| DecodeError::SplitPart {
                namespace: t.namespace.clone(),
                doctype: t.doctype.clone(),
                version: t.version,
                source: Box::new(source),
            };
            let Some(target) = self.registry.get(&t.namespace, &t.doctype, t.version) else {
                return Err(failed(DecodeError::SchemaNotFound {
                    namespace: t.namespace.clone(),
                    doctype: t.doctype.clone(),
                    version: t.version.to_string(),
                }));
            };
            let document = Value::Object(part.document);
            target.validate(&document).map_err(|failure| {
                failed(DecodeError::Invalid {
                    namespace: target.canonical_namespace().to_owned(),
                    doctype: target.canonical_doctype().to_owned(),
                    version: target.version(),
                    failure,
                })
            })?;
            check_expiration(
                target.as_json().get("mozPipelineMetadata"),
                attributes,
                target,
            )
            .map_err(failed)?;
            let payload = serde_json::to_vec(&document)
                .map_err(|source| failed(DecodeError::InvalidJson { source }))?;
            parts.push(SplitPart {
                payload: Bytes::from(payload),
                canonical: canonical(target),
            });
        }
        Ok(Split {
            from: format!(
                "{}/{}/{}",
                schema.canonical_namespace(),
                schema.canonical_doctype(),
                schema.version()
            ),
            keep_original: config.preserve_original,
            parts,
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

/// What [`ParsePayload`] makes of a document: changes to the message, or a drop by a rule.
// Returned once per message and moved, never stored: a box would cost an allocation per record
// to save stack space no one holds.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Parsed(Parsed),
    Dropped(usize),
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
    /// The parts, when the schema splits its documents.
    split: Option<Split>,
}

/// The parts of a split document.
struct Split {
    /// `namespace/doctype/version` of the split document (the `split_from` attribute).
    from: String,
    /// Whether the split document is passed on too.
    keep_original: bool,
    parts: Vec<SplitPart>,
}

/// One part: its payload and the names of the schema it matched.
struct SplitPart {
    payload: Bytes,
    canonical: [String; 3],
}

/// The names of `schema` as the repository spells them, its version as a plain integer.
fn canonical(schema: &sluice_schemas::Schema) -> [String; 3] {
    [
        schema.canonical_namespace().to_owned(),
        schema.canonical_doctype().to_owned(),
        schema.version().to_string(),
    ]
}

/// Sets the string at `path` (object keys) in `document`, where there is one.
fn set_string(document: &mut Value, path: &[&str], value: &str) {
    let mut at = document;
    for key in path {
        match at.get_mut(*key) {
            Some(next) => at = next,
            None => return,
        }
    }
    if at.is_string() {
        *at = Value::String(value.to_owned());
    }
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
        let counters = self.scrub.counters(&input.metrics());
        input.try_flat_map_owned("ParsePayload", move |m: Message| match self.apply(m) {
            Ok(Payloads::Dropped(i)) => {
                count_drop(&counters, i);
                Ok(Payloads::Dropped(i))
            }
            Ok(out) => Ok(out),
            Err((m, e)) => Err((m, failure(e))),
        })
    }
}

/// The dead letter's failure for `e`: a payload rule's drop is a `ScrubPayload` dead letter,
/// as it was when the rules ran as a step of their own.
pub(crate) fn failure(e: DecodeError) -> Failure {
    let scrubbed = matches!(e, DecodeError::DroppedByRule { .. });
    let failure = Failure::from(e);
    if scrubbed {
        failure.with_error_type(SCRUB_PAYLOAD)
    } else {
        failure
    }
}

/// The `error_type` of documents a `dead_letter` payload rule drops.
pub(crate) const SCRUB_PAYLOAD: &str = "ScrubPayload";
