//! Failures as data: the dead letter and how an error becomes one.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Message;

/// Dead-letter attribute values are cut to this many bytes (UTF-8 safe), as gcp-ingestion does.
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// A record that a step could not process: the original record, untouched, and why.
///
/// The field names are gcp-ingestion's error attributes, so its tooling carries over;
/// [`DeadLetter::to_message`] gives the form written to a dead-letter sink, which is a valid
/// input of the same job (replay).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The original message, payload and attributes as they were read.
    pub original: Message,
    /// The step that failed, e.g. `ParseUri`.
    pub error_type: String,
    /// The error's message.
    pub error_message: String,
    /// The Rust error type and variant, e.g. `my_crate::ParseError::BadUri`.
    pub exception_class: String,
    /// The error's source chain, one cause per line; `None` when stack traces are turned off.
    pub stack_trace: Option<String>,
    /// The input the record came from (topic, path, ...).
    pub input: Option<String>,
    /// The kind of input (`kafka`, `file`, ...).
    pub input_type: Option<String>,
    /// The job's name.
    pub job_name: Option<String>,
    /// Where in the input the record was (Kafka partition and offset, file line, ...).
    pub source_position: BTreeMap<String, String>,
}

impl DeadLetter {
    /// A dead letter for `original` that failed in `error_type` with `failure`, without
    /// provenance (the runner adds it for dead letters made inside a pipeline).
    pub fn new(original: Message, error_type: impl Into<String>, failure: Failure) -> Self {
        let source_position = original
            .position
            .as_ref()
            .map(crate::SourcePosition::to_attributes)
            .unwrap_or_default();
        DeadLetter {
            original,
            error_type: failure.error_type.unwrap_or_else(|| error_type.into()),
            error_message: failure.message,
            exception_class: failure.exception_class,
            stack_trace: failure.stack_trace,
            input: None,
            input_type: None,
            job_name: None,
            source_position,
        }
    }

    /// The message written to a dead-letter sink: the original payload, the original attributes,
    /// and the error attributes (`error_type`, `error_message`, `exception_class`, `stack_trace`,
    /// `job_name`, `input`, `input_type`, and the source position), each value cut to
    /// [`MAX_ATTRIBUTE_BYTES`].
    ///
    /// ```
    /// use sluice::{DeadLetter, Failure, Message};
    /// let dl = DeadLetter::new(Message::new("x"), "ParseUri", Failure::new("unknown uri"));
    /// let m = dl.to_message();
    /// assert_eq!(m.payload, "x");
    /// assert_eq!(m.attribute("error_type"), Some("ParseUri"));
    /// assert_eq!(m.attribute("error_message"), Some("unknown uri"));
    /// ```
    pub fn to_message(&self) -> Message {
        let mut attributes = self.original.attributes.clone();
        let mut put = |k: &str, v: &str| {
            attributes.insert(
                k.to_string(),
                truncate_utf8(v, MAX_ATTRIBUTE_BYTES).to_string(),
            );
        };
        put("error_type", &self.error_type);
        put("error_message", &self.error_message);
        put("exception_class", &self.exception_class);
        if let Some(t) = &self.stack_trace {
            put("stack_trace", t);
        }
        for (k, v) in [
            ("job_name", &self.job_name),
            ("input", &self.input),
            ("input_type", &self.input_type),
        ] {
            if let Some(v) = v {
                put(k, v);
            }
        }
        for (k, v) in &self.source_position {
            put(k, v);
        }
        Message {
            payload: self.original.payload.clone(),
            attributes,
            position: self.original.position.clone(),
        }
    }

    /// The original payload.
    pub fn payload(&self) -> &Bytes {
        &self.original.payload
    }

    /// This dead letter with its payload cut to `max_payload_bytes`, for a dead-letter sink
    /// that refused it whole (see [`reduce_message`]). Error attributes are kept.
    pub fn reduced(mut self, max_payload_bytes: usize) -> DeadLetter {
        self.original = reduce_message(self.original, max_payload_bytes);
        self
    }
}

/// `message` with its payload cut to at most `max_payload_bytes` and attributes that say what
/// was cut: `payload_sha256` (hex, of the whole payload), `payload_bytes` (its length) and
/// `payload_truncated = "true"`. Attribute values are cut to [`MAX_ATTRIBUTE_BYTES`]. This is
/// how a dead letter too large for its sink is still written, identifiable and replayable up
/// to the cut.
///
/// ```
/// use sluice::{reduce_message, Message};
/// let m = reduce_message(Message::new(vec![b'x'; 100]), 10);
/// assert_eq!(m.payload.len(), 10);
/// assert_eq!(m.attribute("payload_bytes"), Some("100"));
/// assert_eq!(m.attribute("payload_truncated"), Some("true"));
/// assert_eq!(m.attribute("payload_sha256").unwrap().len(), 64);
/// ```
pub fn reduce_message(mut message: Message, max_payload_bytes: usize) -> Message {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&message.payload);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    let total = message.payload.len();
    message.payload = message.payload.slice(..total.min(max_payload_bytes));
    for v in message.attributes.values_mut() {
        if v.len() > MAX_ATTRIBUTE_BYTES {
            let cut = truncate_utf8(v, MAX_ATTRIBUTE_BYTES).len();
            v.truncate(cut);
        }
    }
    message.attributes.insert("payload_sha256".to_string(), hex);
    message
        .attributes
        .insert("payload_bytes".to_string(), total.to_string());
    message
        .attributes
        .insert("payload_truncated".to_string(), "true".to_string());
    message
}

impl crate::Original for DeadLetter {
    fn to_original(&self) -> Message {
        self.to_message()
    }
}

impl From<DeadLetter> for Message {
    fn from(dl: DeadLetter) -> Message {
        dl.to_message()
    }
}

/// Why one record failed: what a fallible step returns for a record it rejects.
///
/// Any `std::error::Error` converts into a `Failure`, keeping its message, its type and variant
/// as `exception_class`, and its source chain as the stack trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error message.
    pub message: String,
    /// The error's type path and variant.
    pub exception_class: String,
    /// The source chain, one cause per line.
    pub stack_trace: Option<String>,
    /// Overrides the step's name as the dead letter's `error_type`.
    pub error_type: Option<String>,
}

impl Failure {
    /// A failure with just a message.
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        Failure {
            stack_trace: Some(message.clone()),
            message,
            exception_class: "sluice::Failure".to_string(),
            error_type: None,
        }
    }

    /// Sets the `exception_class` (a type path naming the kind of error).
    pub fn with_exception_class(mut self, class: impl Into<String>) -> Self {
        self.exception_class = class.into();
        self
    }

    /// Sets the `error_type` the dead letter gets instead of the step's name.
    pub fn with_error_type(mut self, error_type: impl Into<String>) -> Self {
        self.error_type = Some(error_type.into());
        self
    }

    /// Builds a failure from any error: the message is the error and its causes, each once
    /// ([`chain`](crate::chain)); the stack trace has one cause per line; type and variant.
    pub fn from_error<E: std::error::Error + 'static>(error: &E) -> Self {
        let mut trace = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            trace.push_str("\ncaused by: ");
            trace.push_str(&c.to_string());
            cause = c.source();
        }
        Failure {
            message: crate::chain(error),
            exception_class: exception_class(error),
            stack_trace: Some(trace),
            error_type: None,
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::from_error(&error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `path::to::Type::Variant` for enums (the variant read from `Debug`), `path::to::Type` otherwise.
fn exception_class<E: std::error::Error>(error: &E) -> String {
    let type_path = std::any::type_name::<E>();
    let type_name = type_path.rsplit("::").next().unwrap_or(type_path);
    let debug = format!("{error:?}");
    let head: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !head.is_empty() && head != type_name && head.starts_with(|c: char| c.is_uppercase()) {
        format!("{type_path}::{head}")
    } else {
        type_path.to_string()
    }
}

/// `s` cut to at most `max` bytes without splitting a character.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum ParseError {
        #[error("bad uri `{0}`")]
        BadUri(String),
        #[error("io")]
        Io(#[source] std::io::Error),
    }

    #[test]
    fn failure_keeps_variant_and_chain() {
        let f = Failure::from(ParseError::BadUri("/x".into()));
        assert_eq!(f.message, "bad uri `/x`");
        assert!(
            f.exception_class.ends_with("tests::ParseError::BadUri"),
            "{}",
            f.exception_class
        );
        let io = ParseError::Io(std::io::Error::other("disk gone"));
        let f = Failure::from(io);
        assert_eq!(f.stack_trace.as_deref(), Some("io\ncaused by: disk gone"));
        // the message carries the cause too, once
        assert_eq!(f.message, "io: disk gone");
    }

    #[test]
    fn to_message_keeps_original_and_truncates() {
        let original = Message::new(vec![0xff, 0x00]).with_attribute("uri", "/submit");
        let mut dl = DeadLetter::new(original.clone(), "Step", Failure::new("é".repeat(600)));
        dl.job_name = Some("decoder".into());
        let m = dl.to_message();
        assert_eq!(m.payload, original.payload);
        assert_eq!(m.attribute("uri"), Some("/submit"));
        assert_eq!(m.attribute("job_name"), Some("decoder"));
        let msg = m.attribute("error_message").unwrap();
        assert_eq!(msg.len(), 1024);
        assert_eq!(dl.original, original);
    }

    proptest::proptest! {
        #[test]
        fn truncation_is_utf8_safe_and_bounded(s: String, max in 0usize..64) {
            let t = truncate_utf8(&s, max);
            proptest::prop_assert!(t.len() <= max);
            proptest::prop_assert!(s.starts_with(t));
            proptest::prop_assert!(s.len() <= max || t.len() + 4 > max);
        }
    }
}
