//! Kafka as a source ([`KafkaSource`], a consumer group) and a sink ([`KafkaSink`]), on
//! rdkafka (bundled librdkafka).
//!
//! **Source.** Every worker is one member of the consumer group, so the brokers spread the
//! partitions over all workers of all processes, and over several deployments sharing a topic.
//! A record becomes a message by its [`KafkaFormat`] (`raw`: value and headers; `json`: the
//! gcp-ingestion envelope; `heka`: one Heka protobuf message); one that does not is a dead
//! letter (`ReadInput`) with the raw value and its position (`kafka_topic`,
//! `kafka_partition`, `kafka_offset`). Offsets are never committed automatically: each worker
//! records in an [`EpochLedger`](sluice::EpochLedger) how far each epoch read each partition,
//! and commits a partition's offset only when every epoch that read it up to there is durable
//! in every sink, contiguously. On revocation the durable offsets are committed before the
//! partitions go, and the records of revoked partitions not yet handed to the pipeline are
//! dropped (the new owner reads them from the committed offset: duplicates are possible, loss
//! is not). A poll thread per worker keeps the consumer in the group: when the pipeline does
//! not take records (backpressure) it pauses the partitions and keeps polling.
//!
//! A bounded read (`stop_at_end`: backfills, replays, tests) looks up the partitions' end
//! offsets when it opens, shares the partitions out to the workers itself (partition `i` to
//! worker `i % workers`, over the workers of every process; no group membership, so no
//! rebalance), resumes at the group's committed offsets, and each worker ends when its
//! partitions are read to their end.
//!
//! **What a crash reads again.** The poll thread commits what is durable synchronously, about
//! 100 ms after it is at most, and the reader hands the pipeline no more
//! records while more than `max_uncommitted_records` durable offsets wait for the broker's
//! confirmation. So at any moment, the records a worker handed out past its committed offsets
//! are at most its epochs in flight plus that:
//!
//! ```text
//! re-read per worker <= in_flight.max_unacknowledged_epochs x epoch.max_records + max_uncommitted_records
//! ```
//!
//! After a SIGKILL each worker of the killed process reads that many again at most, so a run
//! of `W` workers writes at most `W x` that many duplicates per kill. A revocation (a member
//! joined or left the group) costs each worker that loses partitions at most the same: it
//! commits what is durable before the partitions go, and the records it had in flight are
//! read again by the new owner. A clean stop (a signal, or the end of a bounded read) commits
//! everything written and re-reads nothing.
//!
//! **Sink.** value = payload and headers = attributes (or the `json` / `heka` encodings); the
//! topic comes from a template; a write is durable when every record has its delivery
//! report. A record the broker or librdkafka refuses for itself (over the size limit, a topic
//! name that cannot exist, an unknown topic) is refused to the dead letters; other delivery
//! failures are sent again, then fail the pipeline (nothing is acknowledged).
//!
//! Facts this is built on: `shared/CONNECTORS.md` (the at-least-once idiom, pause-and-poll,
//! revocation).

// Records read are `Result<Message, DeadLetter>`, the framing-failure form the file source uses.
#![allow(clippy::result_large_err)]

mod config;
mod sink;
mod source;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use sluice::{DeadLetter, Failure, Message, SourcePosition};
use sluice_schemas::heka::{decode_frame, heka_to_message, HekaMessage, RECORD_SEPARATOR};

use crate::io::format::READ_INPUT_ERROR_TYPE;

pub use config::{KafkaFormat, KafkaSinkConfig, KafkaSourceConfig, OffsetReset, RESERVED_OPTIONS};
pub use sink::{KafkaSink, KafkaWriter};
pub use source::{KafkaReader, KafkaSource};

/// How long `check` and the bounded source's end-offset lookup wait for the brokers.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the Kafka source or sink cannot run.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// librdkafka refused the settings.
    #[error("invalid kafka client settings: {0}")]
    Client(String),
    /// The brokers did not answer a metadata or offset request.
    #[error("cannot reach kafka brokers `{brokers}`: {reason}")]
    Unreachable {
        /// The bootstrap list.
        brokers: String,
        /// What failed.
        reason: String,
    },
    /// A topic the source reads does not exist.
    #[error("kafka topic `{0}` does not exist")]
    NoTopic(String),
    /// The consumer failed for good (librdkafka's fatal errors).
    #[error("kafka consumer failed: {0}")]
    Consumer(String),
    /// Delivery kept failing after every retry: nothing of the write is acknowledged.
    #[error("kafka delivery of {records} record(s) failed after {attempts} attempt(s): {reason}")]
    Delivery {
        /// Records not delivered.
        records: usize,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
}

/// Why one record is a dead letter: it cannot be read as a message, or a sink refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaRecordError {
    /// A header value that is not UTF-8 (attributes are strings).
    #[error("header `{0}` is not UTF-8")]
    HeaderNotUtf8(String),
    /// A header name that is not UTF-8.
    #[error("a header name is not UTF-8")]
    HeaderNameNotUtf8,
    /// A `json` value that is not an envelope.
    #[error("value is not a message envelope: {0}")]
    InvalidEnvelope(String),
    /// A `heka` value that is not a Heka message.
    #[error("value is not a heka message: {0}")]
    InvalidHeka(String),
    /// The rendered topic is not a Kafka topic name.
    #[error("`{topic}` is not a kafka topic name: {reason}")]
    InvalidTopic {
        /// The rendered name.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The record is over the sink's size limit.
    #[error("record of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Value and headers.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The broker or librdkafka refused the record itself.
    #[error("kafka refused the record for topic `{topic}`: {reason}")]
    Refused {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        reason: String,
    },
    /// The message cannot be encoded in the sink's format.
    #[error("message cannot be encoded as heka: {0}")]
    Encode(String),
}

/// Why `name` cannot be a Kafka topic (`None` if it can): 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, not `.` or `..`.
///
/// ```
/// use sluice_transforms::io::kafka::topic_name_error;
/// assert_eq!(topic_name_error("raw-telemetry"), None);
/// assert!(topic_name_error("raw telemetry").is_some());
/// assert!(topic_name_error("..").is_some());
/// ```
pub fn topic_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".to_string());
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not allowed".to_string());
    }
    if name.len() > 249 {
        return Some(format!("{} characters, at most 249", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!("character {c:?} (letters, digits, `.`, `_`, `-`)"));
    }
    None
}

/// A record's headers, as (name, value) pairs.
pub type KafkaHeaders = Vec<(String, Vec<u8>)>;

/// A record read in `format`: its message, or the dead letter of a value that is not one.
/// `headers` are the record's headers as (name, value) pairs.
pub fn decode_record<'h>(
    format: KafkaFormat,
    value: Option<&[u8]>,
    headers: impl IntoIterator<Item = (Option<&'h str>, Option<&'h [u8]>)>,
    position: SourcePosition,
) -> Result<Message, DeadLetter> {
    let value = value.unwrap_or_default();
    let dead = |attributes: std::collections::BTreeMap<String, String>, e: KafkaRecordError| {
        DeadLetter::new(
            Message::new(Bytes::copy_from_slice(value))
                .with_attributes(attributes)
                .with_position(position.clone()),
            READ_INPUT_ERROR_TYPE,
            Failure::from_error(&e),
        )
    };
    match format {
        KafkaFormat::Raw => {
            let mut attributes = std::collections::BTreeMap::new();
            let mut error = None;
            for (name, v) in headers {
                let Some(name) = name else {
                    error.get_or_insert(KafkaRecordError::HeaderNameNotUtf8);
                    continue;
                };
                match std::str::from_utf8(v.unwrap_or_default()) {
                    Ok(v) => {
                        attributes.insert(name.to_string(), v.to_string());
                    }
                    Err(_) => {
                        error.get_or_insert(KafkaRecordError::HeaderNotUtf8(name.to_string()));
                    }
                }
            }
            match error {
                Some(e) => Err(dead(attributes, e)),
                None => Ok(Message::new(Bytes::copy_from_slice(value))
                    .with_attributes(attributes)
                    .with_position(position)),
            }
        }
        KafkaFormat::Json => match Message::from_json_line(value) {
            Ok(m) => Ok(m.with_position(position)),
            Err(e) => Err(dead(
                Default::default(),
                KafkaRecordError::InvalidEnvelope(e.to_string()),
            )),
        },
        KafkaFormat::Heka => {
            let heka = if value.first() == Some(&RECORD_SEPARATOR) {
                decode_frame(value).map_err(|e| e.to_string())
            } else {
                HekaMessage::decode(value).map_err(|e| e.to_string())
            };
            match heka.and_then(|h| heka_to_message(&h).map_err(|e| e.to_string())) {
                Ok(m) => Ok(m.with_position(position)),
                Err(e) => Err(dead(Default::default(), KafkaRecordError::InvalidHeka(e))),
            }
        }
    }
}

/// The value and headers of `message` as a record in `format`.
pub fn encode_record(
    format: KafkaFormat,
    message: &Message,
) -> Result<(Vec<u8>, KafkaHeaders), KafkaRecordError> {
    Ok(match format {
        KafkaFormat::Raw => (
            message.payload.to_vec(),
            message
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect(),
        ),
        KafkaFormat::Json => (message.to_json_line().into_bytes(), Vec::new()),
        KafkaFormat::Heka => {
            let heka = sluice_schemas::heka::message_to_heka(message)
                .map_err(|e| KafkaRecordError::Encode(e.to_string()))?;
            (heka.encode_to_vec(), Vec::new())
        }
    })
}
