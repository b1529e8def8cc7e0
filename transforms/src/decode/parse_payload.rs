//! `ParsePayload`: parse once, lift nested metadata, validate against the schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sluice::{Message, PCollection, PTransform, WithFailures};
use sluice_schemas::{Limits, SchemaRegistry};

use super::json_scan::remove_members;
use super::metadata::{is_metadata_member, lift_metadata};
use super::parse_uri::is_uuid;
use super::{attr, DecodeError};

const TELEMETRY: &str = "telemetry";

/// `crc32(client_id) % 100`: the sample bucket gcp-ingestion derives from a client id.
///
/// ```
/// assert_eq!(sluice_transforms::decode::sample_id("c0ffeec0-ffee-c0ff-eec0-ffeec0ffeec0"), 33);
/// ```
pub fn sample_id(client_id: &str) -> u32 {
    crc32fast::hash(client_id.as_bytes()) % 100
}

/// Parses the payload as a JSON object once, lifts the `metadata` of an already-decoded
/// message back into attributes (and out of the payload), and validates the rest against its
/// schema (gcp-ingestion's `ParsePayload`).
///
/// - Lifting only fills attributes the message lacks ([`lift_metadata`]): a payload's own
///   `metadata` never changes what the edge set (namespace, doctype, version,
///   `submission_timestamp`, `document_id`, ...). A `document_id`, wherever it came from, must
///   be a UUID.
/// - The schema is `document_namespace`/`document_type` at `document_version`; for the
///   `telemetry` namespace the version may come from the payload's `version` or `v` (and is
///   then set as the `document_version` attribute).
/// - Adds `client_id` (from `clientId` or `client_info.client_id`) and `sample_id` (see
///   [`sample_id`]) where the payload has a client id.
/// - `document_namespace`, `document_type` and `document_version` are then set to the names of
///   the schema found ([`Schema::canonical_namespace`](sluice_schemas::Schema::canonical_namespace),
///   its version as a plain integer), so that outputs are partitioned by the repository's
///   spelling: `.test.`, `Test` or version `01` land where `test` and `1` do.
/// - The payload's nesting and array lengths are bounded ([`Limits`]) before validation.
/// - The output payload is the input bytes, minus the lifted members if there were any: the
///   document is never re-serialized.
///
/// Errors (`error_type` `ParsePayload`): not JSON, not an object, over the limits, a
/// `document_id` that is not a UUID, missing namespace or doctype, unknown doctype, missing or non-integer version, schema version not
/// found, invalid (the message names the failing JSON pointers).
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
        add_client_id(&parsed.document, &mut message.attributes);
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
        let canonical = self.validate(&value, attributes)?;
        Ok(Parsed {
            payload,
            document: value,
            attributes: lifted,
            canonical,
        })
    }

    /// Validates `document`; gives the canonical namespace, doctype and version of the schema
    /// it matched.
    fn validate(
        &self,
        document: &Value,
        attributes: &BTreeMap<String, String>,
    ) -> Result<[String; 3], DecodeError> {
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
        let mut from_payload = None;
        if !attributes.contains_key(attr::DOCUMENT_VERSION) && namespace == TELEMETRY {
            from_payload = document
                .get("version")
                .or_else(|| document.get("v"))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
        }
        let Some(version) = from_payload
            .as_ref()
            .or_else(|| attributes.get(attr::DOCUMENT_VERSION))
        else {
            return Err(DecodeError::MissingVersion { namespace, doctype });
        };
        let Ok(version) = version.parse::<u32>() else {
            return Err(DecodeError::InvalidVersion {
                namespace,
                doctype,
                version: version.clone(),
            });
        };
        let Some(schema) = self.registry.get(&namespace, &doctype, version) else {
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
                version,
                failure,
            })?;
        Ok([
            schema.canonical_namespace().to_owned(),
            schema.canonical_doctype().to_owned(),
            version.to_string(),
        ])
    }
}

/// What [`ParsePayload`] changes in a message that passed.
struct Parsed {
    /// The payload to pass on (the input's, minus lifted members).
    payload: Bytes,
    /// The parsed document.
    document: Value,
    /// The attributes with the lifted metadata, for a replay.
    attributes: Option<BTreeMap<String, String>>,
    /// The namespace, doctype and version of the schema the document matched, as the
    /// repository spells them.
    canonical: [String; 3],
}

fn add_client_id(map: &Value, attributes: &mut BTreeMap<String, String>) {
    let client_id = match map.get("clientId") {
        Some(Value::String(s)) => Some(s),
        _ => match map.get("client_info").and_then(|c| c.get("client_id")) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
    };
    if let Some(id) = client_id {
        attributes.insert(attr::SAMPLE_ID.to_string(), sample_id(id).to_string());
        attributes.insert(attr::CLIENT_ID.to_string(), id.clone());
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
        input.try_map_owned("ParsePayload", move |m: Message| self.apply_owned(m))
    }
}
