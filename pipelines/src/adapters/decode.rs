//! Stand-in for `sluice_transforms::decode::{Decoder, DecompressPayload}` until they land on
//! main: the same steps and `error_type`s (`ParseUri`, `DecompressPayload`,
//! `LimitPayloadSize`, `ParsePayload`), without the real decoder's metadata lifting and
//! single-pass optimisations.

use std::io::Read;
use std::sync::Arc;

use sluice::{DeadLetters, Message, PCollection, PTransform, WithFailures};
use sluice_schemas::SchemaRegistry;

/// Why a step rejects a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No `uri` attribute.
    #[error("missing uri attribute")]
    MissingUri,
    /// A URI of no known form.
    #[error("unknown uri form `{0}`")]
    UnknownUri(String),
    /// A document id that is not a UUID.
    #[error("document id `{0}` is not a uuid")]
    BadDocumentId(String),
    /// A gzip stream that does not inflate.
    #[error("cannot gunzip payload: {0}")]
    Gzip(std::io::Error),
    /// Too large a payload.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON.
    #[error("payload is not json: {0}")]
    Json(serde_json::Error),
    /// No version in a telemetry payload.
    #[error("telemetry payload has no numeric `version` or `v`")]
    NoVersion,
    /// No schema for the document.
    #[error("schema `{0}` not found")]
    NoSchema(String),
    /// The document fails its schema.
    #[error("payload fails schema `{schema}` at `{pointer}`: {reason}")]
    Invalid {
        /// The schema.
        schema: String,
        /// The JSON pointer.
        pointer: String,
        /// What failed.
        reason: String,
    },
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `uri` -> `document_namespace`, `document_type`, `document_version`, `document_id`, app
/// attributes; `submission_timestamp` -> `submission_date`.
pub fn parse_uri(m: &Message) -> Result<Message, DecodeError> {
    let uri = m.attribute("uri").ok_or(DecodeError::MissingUri)?;
    let path = uri.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut out = m.clone();
    let mut set = |k: &str, v: &str| {
        out.attributes.insert(k.to_string(), v.to_string());
    };
    let doc_id = match parts.as_slice() {
        ["submit", "telemetry", id, doctype, app, ver, channel, build] => {
            set("document_namespace", "telemetry");
            set("document_type", doctype);
            set("app_name", app);
            set("app_version", ver);
            set("app_update_channel", channel);
            set("app_build_id", build);
            *id
        }
        ["submit", ns, doctype, version, id] if *ns != "telemetry" => {
            if version.parse::<u32>().is_err() {
                return Err(DecodeError::UnknownUri(uri.to_string()));
            }
            set("document_namespace", ns);
            set("document_type", doctype);
            set("document_version", version);
            *id
        }
        _ => return Err(DecodeError::UnknownUri(uri.to_string())),
    };
    if !is_uuid(doc_id) {
        return Err(DecodeError::BadDocumentId(doc_id.to_string()));
    }
    set("document_id", &doc_id.to_ascii_lowercase());
    if let Some(ts) = m
        .attribute("submission_timestamp")
        .filter(|t| t.len() >= 13)
    {
        let (date, hour) = (ts[..10].to_string(), ts[11..13].to_string());
        set("submission_date", &date);
        set("submission_hour", &hour);
    }
    Ok(out)
}

/// Gunzips a gzip payload, reading at most `limit + 1` bytes.
pub fn decompress(m: &Message, limit: usize) -> Result<Message, DecodeError> {
    if !m.payload.starts_with(&[0x1f, 0x8b]) {
        return Ok(m.clone());
    }
    let mut out = Vec::with_capacity(m.payload.len() * 4);
    flate2::read::GzDecoder::new(&m.payload[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(DecodeError::Gzip)?;
    let mut m = m.clone();
    m.payload = out.into();
    m.attributes
        .insert("client_compression".to_string(), "gzip".to_string());
    Ok(m)
}

/// The decoder: parse uri, decompress, limit size, parse and validate.
pub struct LocalDecoder {
    registry: Arc<SchemaRegistry>,
    max_payload_bytes: usize,
}

impl LocalDecoder {
    /// A decoder validating against `registry`.
    pub fn new(registry: Arc<SchemaRegistry>, max_payload_bytes: usize) -> Self {
        LocalDecoder {
            registry,
            max_payload_bytes,
        }
    }
}

fn parse_payload(registry: &SchemaRegistry, m: &Message) -> Result<Message, DecodeError> {
    let doc: serde_json::Value = serde_json::from_slice(&m.payload).map_err(DecodeError::Json)?;
    let ns = m.attribute("document_namespace").unwrap_or_default();
    let doctype = m.attribute("document_type").unwrap_or_default();
    let version = match m.attribute("document_version") {
        Some(v) => v.parse::<u32>().ok(),
        None => doc
            .get("version")
            .or_else(|| doc.get("v"))
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as u32),
    }
    .ok_or(DecodeError::NoVersion)?;
    let name = format!("{ns}/{doctype}.{version}");
    let schema = registry
        .find(ns, doctype, version)
        .map_err(|_| DecodeError::NoSchema(name.clone()))?;
    schema.validate(&doc).map_err(|f| DecodeError::Invalid {
        schema: name,
        pointer: f.instance_path().to_string(),
        reason: f.first().to_string(),
    })?;
    let mut m = m.clone();
    m.attributes
        .insert("document_version".to_string(), version.to_string());
    Ok(m)
}

impl<'s> PTransform<PCollection<'s, Message>> for LocalDecoder {
    type Output = WithFailures<'s, Message>;
    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let mut dl = DeadLetters::for_pipeline_of(&input);
        let limit = self.max_payload_bytes;
        let registry = self.registry;
        let output = input
            .try_map("ParseUri", parse_uri)
            .failures_to(&mut dl)
            .try_map("DecompressPayload", move |m: &Message| decompress(m, limit))
            .failures_to(&mut dl)
            .try_map("LimitPayloadSize", move |m: &Message| {
                if m.payload.len() > limit {
                    Err(DecodeError::TooLarge {
                        size: m.payload.len(),
                        limit,
                    })
                } else {
                    Ok(m.clone())
                }
            })
            .failures_to(&mut dl)
            .try_map("ParsePayload", move |m: &Message| {
                parse_payload(&registry, m)
            })
            .failures_to(&mut dl);
        WithFailures {
            output,
            failures: dl.into_pcollection(),
        }
    }
}

/// The sink job's optional step: gunzip gzip payloads, keeping others as they are.
pub struct LocalDecompress {
    /// Larger inflated payloads are dead letters.
    pub max_bytes: usize,
}

impl<'s> PTransform<PCollection<'s, Message>> for LocalDecompress {
    type Output = WithFailures<'s, Message>;
    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let limit = self.max_bytes;
        input.try_map("DecompressPayload", move |m: &Message| {
            let out = decompress(m, limit)?;
            if out.payload.len() > limit {
                return Err(DecodeError::TooLarge {
                    size: out.payload.len(),
                    limit,
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_uri_forms() {
        let id = "6c49ec73-4350-45a0-9c8a-6c8f5aff0f76";
        let m = Message::new("{}")
            .with_attribute(
                "uri",
                format!("/submit/telemetry/{id}/main/Firefox/61.0a1/nightly/20180328030202"),
            )
            .with_attribute("submission_timestamp", "2026-11-20T10:00:00Z");
        let out = parse_uri(&m).unwrap();
        assert_eq!(out.attribute("document_type"), Some("main"));
        assert_eq!(out.attribute("submission_date"), Some("2026-11-20"));
        let m = Message::new("{}").with_attribute("uri", format!("/submit/test/test/1/{id}"));
        assert_eq!(
            parse_uri(&m).unwrap().attribute("document_version"),
            Some("1")
        );
        let bad = Message::new("{}").with_attribute("uri", "/submit/test/test/1/nope");
        assert!(matches!(
            parse_uri(&bad),
            Err(DecodeError::BadDocumentId(_))
        ));
    }
}
