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
//! | [`ParseProxy`] | never fails | undoes the pipeline proxy's changes (`x_pipeline_proxy`) |
//! | [`GeoLookup`] | never fails | `geo_*`, `isp_*` of the client IP (optional MaxMind databases) |
//! | [`ParseUserAgent`] | never fails | `user_agent` -> `user_agent_browser`, `_version`, `_os` |
//! | [`ParsePayload`] | `ParsePayload` (`ScrubPayload` for a rule's drop) | parses once, lifts nested `metadata`, applies the payload rules ([`ScrubPayload`]'s, before validation, as gcp-ingestion's MessageScrubber), validates, derives `client_id`, `sample_id`, `os`, ...; splits a document whose schema has a `split_config` |
//! | [`NormalizeAttributes`] | never fails | `normalized_channel`, `_os`, `_os_version`, `_app_name`, `_country_code` |
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
mod geo;
mod json_scan;
mod limit;
mod metadata;
mod normalize;
mod parse_payload;
mod parse_uri;
mod proxy;
mod scrub_payload;
mod split;
mod stub;
mod user_agent;

pub use decoder::{Decoder, REPLAY_STRIPPED_ATTRIBUTES};
pub use decompress::{DecompressPayload, DEFAULT_MAX_DECOMPRESSED_BYTES};
pub use error::DecodeError;
pub use geo::{GeoError, GeoLookup, GEO_CITY_FIELDS, GEO_ISP_FIELDS};
pub use limit::{LimitPayloadSize, DEFAULT_MAX_PAYLOAD_BYTES};
pub use metadata::{lift_metadata, nest_metadata, AddMetadata};
pub use normalize::{
    normalize_app_name, normalize_channel, normalize_country_code, normalize_os,
    normalize_os_version, NormalizeAttributes,
};
pub use parse_payload::{normalize_uuid, sample_id, ParsePayload, Payloads};
pub use parse_uri::{ParseUri, MAX_ATTRIBUTES};
pub use proxy::{client_ip, ParseProxy};
pub use scrub_payload::{
    DocumentRule, DropAction, FieldRule, JsonPointer, ScrubPayload, ScrubPayloadConfig, Scrubbed,
};
pub use user_agent::{parse_user_agent, ParseUserAgent};

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
    /// The client's operating system, from the payload.
    pub const OS: &str = "os";
    /// The client's operating system version, from the payload.
    pub const OS_VERSION: &str = "os_version";
    /// ISO country code of the client IP (geo lookup).
    pub const GEO_COUNTRY: &str = "geo_country";
    /// When the edge received the submission.
    pub const SUBMISSION_TIMESTAMP: &str = "submission_timestamp";
    /// `namespace/doctype/version` of the document a message was split from (set on every
    /// part, and on the preserved original); a message with it is never split again.
    pub const SPLIT_FROM: &str = "split_from";
}
