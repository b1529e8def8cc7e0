//! The decoder's transforms (gcp-ingestion's Decoder, step by step).
//!
//! Each step is a [`PTransform`](sluice::PTransform) on a `PCollection<Message>` whose output is
//! [`WithFailures`](sluice::WithFailures): a record a step rejects becomes a dead letter that
//! keeps the message exactly as the step received it, with `error_type` set to the step's name.
//!
//! | step | `error_type` | does |
//! |---|---|---|
//! | [`ParseUri`] | `ParseUri` | `uri` attribute -> `document_namespace`, `document_type`, ... |
//! | [`DecompressPayload`] | `DecompressPayload` | gunzips gzip payloads, bounded |
//! | [`LimitPayloadSize`] | `LimitPayloadSize` | rejects payloads over a size |
//! | [`ParsePayload`] | `ParsePayload` | parses once, lifts nested `metadata`, validates |
//! | [`ScrubPayload`] | `ScrubPayload` | payload field rules: drops fields, drops documents |
//! | [`AddMetadata`] | `AddMetadata` | nests the attributes into the payload's `metadata` |
//!
//! [`Decoder`] chains them in gcp-ingestion's order after stripping the error attributes of
//! replayed dead letters, and is idempotent: decoding its own output gives the same output.

// A step that rejects a message hands it back whole with the error (the SDK's owned fallible
// map), so that neither passing it on nor dead-lettering it copies it: the large `Err` is the
// design, and failures are rare.
#![allow(clippy::result_large_err)]

mod decoder;
mod decompress;
mod error;
mod json_scan;
mod limit;
mod metadata;
mod parse_payload;
mod parse_uri;
mod scrub_payload;

pub use decoder::{Decoder, REPLAY_STRIPPED_ATTRIBUTES};
pub use decompress::{DecompressPayload, DEFAULT_MAX_DECOMPRESSED_BYTES};
pub use error::DecodeError;
pub use limit::{LimitPayloadSize, DEFAULT_MAX_PAYLOAD_BYTES};
pub use metadata::{lift_metadata, nest_metadata, AddMetadata};
pub use parse_payload::{sample_id, ParsePayload};
pub use parse_uri::{ParseUri, MAX_ATTRIBUTES};
pub use scrub_payload::{
    DocumentRule, DropAction, FieldRule, JsonPointer, ScrubPayload, ScrubPayloadConfig, Scrubbed,
};

/// Attribute names the decoder reads and writes (gcp-ingestion's).
pub mod attr {
    /// The request path of a submission.
    pub const URI: &str = "uri";
    /// Query string of a submission (ignored for routing).
    pub const ARGS: &str = "args";
    /// `telemetry`, `org-mozilla-fenix`, ...
    pub const DOCUMENT_NAMESPACE: &str = "document_namespace";
    /// `main`, `baseline`, ...
    pub const DOCUMENT_TYPE: &str = "document_type";
    /// The schema version.
    pub const DOCUMENT_VERSION: &str = "document_version";
    /// The submission's UUID.
    pub const DOCUMENT_ID: &str = "document_id";
    /// Telemetry URI: application name.
    pub const APP_NAME: &str = "app_name";
    /// Telemetry URI: application version.
    pub const APP_VERSION: &str = "app_version";
    /// Telemetry URI: update channel.
    pub const APP_UPDATE_CHANNEL: &str = "app_update_channel";
    /// Telemetry URI: build id.
    pub const APP_BUILD_ID: &str = "app_build_id";
    /// `gzip` when the payload arrived gzipped.
    pub const CLIENT_COMPRESSION: &str = "client_compression";
    /// The client id found in the payload.
    pub const CLIENT_ID: &str = "client_id";
    /// crc32 of the client id, mod 100.
    pub const SAMPLE_ID: &str = "sample_id";
    /// When the edge received the submission.
    pub const SUBMISSION_TIMESTAMP: &str = "submission_timestamp";
}
