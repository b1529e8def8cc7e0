//! The message that flows between IO and the decode stage, and its ndjson envelope.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where a record came from, kept beside a message so that a dead letter can name it.
///
/// A small typed value, cheap to clone (names are shared `Arc<str>`s, so a reader allocates a
/// file name or topic once, not per record), that crosses process exchanges with the message.
/// It becomes dead-letter attributes only when a dead letter is made
/// ([`SourcePosition::to_attributes`]).
///
/// ```
/// use std::sync::Arc;
/// use sluice::SourcePosition;
/// let file: Arc<str> = Arc::from("in/a.ndjson");
/// let p = SourcePosition::Line { file: Some(file.clone()), line: 3 };
/// let attrs = p.to_attributes();
/// assert_eq!(attrs["input_file"], "in/a.ndjson");
/// assert_eq!(attrs["input_line"], "3");
/// ```
// Externally tagged (serde's default) and without skipped fields: timely's bincode encoding
// needs that (shared/TIMELY-NOTES.md, section 6).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SourcePosition {
    /// A line (1-based) of a file or stream: `input_file` (when named) and `input_line`.
    Line {
        /// The file's name, `None` for standard input or an unnamed reader.
        file: Option<Arc<str>>,
        /// The line number, 1-based.
        line: u64,
    },
    /// A byte offset in a (decompressed) file or stream: `input_file` and `input_offset`.
    Offset {
        /// The file's name, `None` for standard input or an unnamed reader.
        file: Option<Arc<str>>,
        /// The byte offset of the record's start.
        offset: u64,
    },
    /// A Kafka record: `kafka_topic`, `kafka_partition`, `kafka_offset`.
    Kafka {
        /// The topic.
        topic: Arc<str>,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
    },
    /// A Pub/Sub message: `pubsub_subscription`, `pubsub_message_id`, and when known
    /// `pubsub_publish_time` and `pubsub_delivery_attempt`. Boxed, so that the common
    /// positions keep `Message` small.
    PubSub(Box<PubSubPosition>),
    /// The index of a record in an in-memory input: `memory_index`.
    Memory {
        /// 0-based index.
        index: u64,
    },
    /// Any other source: these attributes, as given.
    Other(Vec<(String, String)>),
}

/// Where a Pub/Sub message was pulled from (see [`SourcePosition::PubSub`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PubSubPosition {
    /// The subscription it was pulled from.
    pub subscription: Arc<str>,
    /// The message id the service assigned.
    pub message_id: Arc<str>,
    /// The publish time as the service reported it (RFC 3339).
    pub publish_time: Option<Arc<str>>,
    /// The delivery attempt (1 for the first delivery), when the subscription has a
    /// dead-letter policy.
    pub delivery_attempt: Option<u32>,
}

impl SourcePosition {
    /// The dead-letter attributes that name this position (the names gcp-ingestion and
    /// Sluice's decoder know: see `REPLAY_STRIPPED_ATTRIBUTES` in `sluice-transforms`).
    pub fn to_attributes(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            a.insert(k.to_string(), v);
        };
        match self {
            SourcePosition::Line { file, line } => {
                if let Some(f) = file {
                    put("input_file", f.to_string());
                }
                put("input_line", line.to_string());
            }
            SourcePosition::Offset { file, offset } => {
                if let Some(f) = file {
                    put("input_file", f.to_string());
                }
                put("input_offset", offset.to_string());
            }
            SourcePosition::Kafka {
                topic,
                partition,
                offset,
            } => {
                put("kafka_topic", topic.to_string());
                put("kafka_partition", partition.to_string());
                put("kafka_offset", offset.to_string());
            }
            SourcePosition::PubSub(p) => {
                put("pubsub_subscription", p.subscription.to_string());
                put("pubsub_message_id", p.message_id.to_string());
                if let Some(t) = &p.publish_time {
                    put("pubsub_publish_time", t.to_string());
                }
                if let Some(n) = p.delivery_attempt {
                    put("pubsub_delivery_attempt", n.to_string());
                }
            }
            SourcePosition::Memory { index } => put("memory_index", index.to_string()),
            SourcePosition::Other(pairs) => {
                for (k, v) in pairs {
                    put(k, v.clone());
                }
            }
        }
        a
    }
}

/// A payload and its string attributes: the Pub/Sub message model, which maps 1:1 to a Kafka
/// record (value and headers) and to gcp-ingestion's ndjson envelope.
///
/// Equality, ordering and hashing look at payload and attributes only: where a record was read
/// from is not part of what it is.
///
/// ```
/// use sluice::Message;
/// let m = Message::new("test").with_attribute("meta", "data");
/// let line = m.to_json_line();
/// assert_eq!(line, r#"{"attributeMap":{"meta":"data"},"payload":"dGVzdA=="}"#);
/// assert_eq!(Message::from_json_line(line.as_bytes()).unwrap(), m);
/// ```
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Message {
    /// The raw bytes of the record.
    pub payload: Bytes,
    /// String attributes (Pub/Sub attributes, Kafka headers, decoded metadata).
    pub attributes: BTreeMap<String, String>,
    /// Where the source read it, if the source records that. Serialized with the message, so it
    /// survives an exchange between processes.
    pub position: Option<SourcePosition>,
}

impl Message {
    /// A message with this payload and no attributes.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            payload: payload.into(),
            attributes: BTreeMap::new(),
            position: None,
        }
    }

    /// Adds (or replaces) an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Replaces all attributes.
    pub fn with_attributes(mut self, attributes: BTreeMap<String, String>) -> Self {
        self.attributes = attributes;
        self
    }

    /// Records where this message was read from.
    pub fn with_position(mut self, position: SourcePosition) -> Self {
        self.position = Some(position);
        self
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Approximate size in bytes (payload plus attribute keys and values), used for batch and
    /// backpressure bounds.
    pub fn byte_size(&self) -> usize {
        self.payload.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Encodes the gcp-ingestion envelope, one JSON object with sorted keys and no newline:
    /// `{"attributeMap":{...}|null,"payload":"<base64>"}`. Empty attributes are written as `null`.
    pub fn to_json_line(&self) -> String {
        let mut out = String::with_capacity(self.byte_size() * 4 / 3 + 64);
        self.write_json_line(&mut out);
        out
    }

    /// Appends the envelope (see [`Message::to_json_line`]) to `out`.
    pub fn write_json_line(&self, out: &mut String) {
        out.push_str("{\"attributeMap\":");
        if self.attributes.is_empty() {
            out.push_str("null");
        } else {
            out.push('{');
            for (i, (k, v)) in self.attributes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, k);
                out.push(':');
                push_json_string(out, v);
            }
            out.push('}');
        }
        out.push_str(",\"payload\":\"");
        base64::engine::general_purpose::STANDARD.encode_string(&self.payload, out);
        out.push_str("\"}");
    }

    /// Decodes one envelope line. `attributeMap` may be an object, `null` or absent; `payload` may
    /// be base64, `null` or absent (empty payload). Unknown keys are ignored, as gcp-ingestion does.
    pub fn from_json_line(line: &[u8]) -> Result<Message, EnvelopeError> {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(rename = "attributeMap", default)]
            attribute_map: Option<BTreeMap<String, String>>,
            #[serde(default)]
            payload: Option<String>,
        }
        let env: Envelope =
            serde_json::from_slice(line).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        let payload = match env.payload {
            None => Bytes::new(),
            Some(b64) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    // the base64 crate ends its messages with a period; ours never do
                    .map_err(|e| {
                        EnvelopeError::Base64(e.to_string().trim_end_matches('.').into())
                    })?,
            ),
        };
        Ok(Message {
            payload,
            attributes: env.attribute_map.unwrap_or_default(),
            position: None,
        })
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json's escaping, without building a Value
    out.push_str(&serde_json::to_string(s).expect("a str always serializes"));
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload && self.attributes == other.attributes
    }
}
impl Eq for Message {}
impl PartialOrd for Message {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Message {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.payload, &self.attributes).cmp(&(&other.payload, &other.attributes))
    }
}
impl std::hash::Hash for Message {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.payload.hash(state);
        self.attributes.hash(state);
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        match std::str::from_utf8(&self.payload) {
            Ok(s) => d.field("payload", &s),
            Err(_) => d.field("payload", &self.payload),
        };
        d.field("attributes", &self.attributes);
        if let Some(p) = &self.position {
            d.field("position", p);
        }
        d.finish()
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::new(Bytes::copy_from_slice(s.as_bytes()))
    }
}
impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::new(v)
    }
}
impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::new(b)
    }
}

/// A line that is not a valid gcp-ingestion envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a JSON object of the envelope's shape.
    #[error("invalid envelope json: {0}")]
    Json(String),
    /// `payload` is not valid standard base64.
    #[error("invalid base64 payload: {0}")]
    Base64(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_gcp_ingestion_forms() {
        let a =
            Message::from_json_line(br#"{"payload":"dGVzdA==","attributeMap":{"meta":"data"}}"#)
                .unwrap();
        assert_eq!(a, Message::new("test").with_attribute("meta", "data"));
        let b = Message::from_json_line(br#"{"payload":"dGVzdAo=","attributeMap":null}"#).unwrap();
        assert_eq!(b, Message::new("test\n"));
        let c = Message::from_json_line(br#"{"payload":"dGVzdA=="}"#).unwrap();
        assert_eq!(c, Message::new("test"));
        let d = Message::from_json_line(br#"{"attributeMap":{"a":"b"},"payload":null}"#).unwrap();
        assert_eq!(d, Message::new("").with_attribute("a", "b"));
    }

    #[test]
    fn writes_sorted_keys_and_null_for_no_attributes() {
        assert_eq!(
            Message::new("test").to_json_line(),
            r#"{"attributeMap":null,"payload":"dGVzdA=="}"#
        );
        let m = Message::new("x")
            .with_attribute("z", "1")
            .with_attribute("a", "q\"uote\n");
        assert_eq!(
            m.to_json_line(),
            r#"{"attributeMap":{"a":"q\"uote\n","z":"1"},"payload":"eA=="}"#
        );
    }

    #[test]
    fn rejects_bad_lines_with_a_reason() {
        assert!(matches!(
            Message::from_json_line(b"not json"),
            Err(EnvelopeError::Json(_))
        ));
        assert!(matches!(
            Message::from_json_line(br#"{"payload":"***"}"#),
            Err(EnvelopeError::Base64(_))
        ));
        assert!(matches!(
            Message::from_json_line(br#"{"attributeMap":{"a":1}}"#),
            Err(EnvelopeError::Json(_))
        ));
    }

    #[test]
    fn position_is_not_part_of_identity() {
        let p = SourcePosition::Line {
            file: None,
            line: 3,
        };
        let with = Message::new("a").with_position(p);
        assert_eq!(with, Message::new("a"));
        let hash = |m: &Message| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&with), hash(&Message::new("a")));
    }

    #[test]
    fn a_position_keeps_messages_small() {
        // the common positions (file, Kafka) fit in 32 bytes; Pub/Sub's is boxed
        assert!(std::mem::size_of::<Option<SourcePosition>>() <= 32);
    }

    #[test]
    fn positions_name_their_attributes() {
        let kafka = SourcePosition::Kafka {
            topic: Arc::from("raw"),
            partition: 2,
            offset: 41,
        };
        let a = kafka.to_attributes();
        assert_eq!(
            a.into_iter().collect::<Vec<_>>(),
            [
                ("kafka_offset".to_string(), "41".to_string()),
                ("kafka_partition".to_string(), "2".to_string()),
                ("kafka_topic".to_string(), "raw".to_string()),
            ]
        );
        let pubsub = SourcePosition::PubSub(Box::new(PubSubPosition {
            subscription: Arc::from("projects/p/subscriptions/s"),
            message_id: Arc::from("17"),
            publish_time: None,
            delivery_attempt: Some(2),
        }));
        let a = pubsub.to_attributes();
        assert_eq!(a["pubsub_message_id"], "17");
        assert_eq!(a["pubsub_delivery_attempt"], "2");
        assert!(!a.contains_key("pubsub_publish_time"));
        let stdin = SourcePosition::Offset {
            file: None,
            offset: 9,
        };
        assert_eq!(
            stdin.to_attributes().into_iter().collect::<Vec<_>>(),
            [("input_offset".to_string(), "9".to_string())]
        );
        let other = SourcePosition::Other(vec![("row".into(), "4".into())]);
        assert_eq!(other.to_attributes()["row"], "4");
    }

    proptest::proptest! {
        #[test]
        fn envelope_round_trips(payload: Vec<u8>, attrs: BTreeMap<String, String>) {
            let m = Message::new(payload).with_attributes(attrs);
            let back = Message::from_json_line(m.to_json_line().as_bytes()).unwrap();
            proptest::prop_assert_eq!(back, m);
        }
    }
}
