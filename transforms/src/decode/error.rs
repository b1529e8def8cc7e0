//! Why a decoder step rejected a record.

use sluice_schemas::{LimitExceeded, ValidationFailure};

/// Why a decoder step rejected a record; becomes the dead letter's `error_message` and
/// `exception_class` (`sluice_transforms::decode::error::DecodeError::<Variant>`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More attributes than a submission can have ([`MAX_ATTRIBUTES`](super::MAX_ATTRIBUTES)).
    #[error("message has {count} attributes, over the limit of {limit}")]
    TooManyAttributes {
        /// How many it has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The `uri` does not start with `/submit/`.
    #[error("unknown uri prefix in `{uri}`: expected /submit/<namespace>/...")]
    UnknownUriPrefix {
        /// The uri.
        uri: String,
    },
    /// The `uri` has fewer path elements than its form needs.
    #[error("uri `{uri}` has too few path elements: expected {expected} after /submit/ ({form}), found {found}")]
    TooFewUriElements {
        /// The uri.
        uri: String,
        /// The elements of the expected form.
        form: &'static str,
        /// How many elements that form has.
        expected: usize,
        /// How many elements the uri has.
        found: usize,
    },
    /// The `uri` has more path elements than its form allows.
    #[error("uri `{uri}` has extra path elements: expected {expected} after /submit/ ({form}), found {found}")]
    ExtraUriElements {
        /// The uri.
        uri: String,
        /// The elements of the expected form.
        form: &'static str,
        /// How many elements that form has.
        expected: usize,
        /// How many elements the uri has.
        found: usize,
    },
    /// A stub installer uri (`/stub/...`) starts with an unknown ping version.
    #[error("unknown stub installer ping version `{version}` in uri `{uri}`: expected v6, v7 or v8, optionally -<funnelcake>")]
    UnknownStubVersion {
        /// The uri.
        uri: String,
        /// The first path element.
        version: String,
    },
    /// A stub installer uri has the wrong number of path elements for its ping version.
    #[error("stub installer uri `{uri}` has {found} path elements after /stub/, expected {expected} for its ping version")]
    StubElementCount {
        /// The uri.
        uri: String,
        /// How many that ping version has.
        expected: usize,
        /// How many the uri has.
        found: usize,
    },
    /// A path element of a stub installer uri that must be an integer is not.
    #[error("stub installer uri `{uri}`: path element #{position} `{value}` is not an integer")]
    StubNotAnInteger {
        /// The uri.
        uri: String,
        /// 1-based position, counting `stub` as 1 (gcp-ingestion's numbering).
        position: usize,
        /// The element.
        value: String,
    },
    /// The document id of the `uri` is not a UUID.
    #[error("document id `{document_id}` in uri `{uri}` is not a uuid")]
    InvalidDocumentId {
        /// The uri.
        uri: String,
        /// The offending id.
        document_id: String,
    },
    /// The `document_id` attribute (from the payload's metadata on a replay, or set by the
    /// source) is not a UUID.
    #[error("document id `{document_id}` is not a uuid")]
    InvalidDocumentIdAttribute {
        /// The offending id.
        document_id: String,
    },
    /// The payload starts like gzip but does not gunzip.
    #[error("corrupt gzip payload of {size} bytes")]
    CorruptGzip {
        /// The compressed size.
        size: usize,
        /// What the gzip decoder said.
        #[source]
        source: std::io::Error,
    },
    /// The payload gunzips to more than the allowed size (a gzip bomb, or just too big).
    #[error("gzip payload of {size} bytes decompresses to more than the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The compressed size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is larger than allowed.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not JSON.
    #[error("payload is not valid json")]
    InvalidJson {
        /// What the parser said (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The payload is JSON but not an object.
    #[error("payload is a json {found}, expected an object")]
    NotAnObject {
        /// `array`, `string`, ...
        found: &'static str,
    },
    /// The payload nests too deep or has too long an array.
    #[error("payload exceeds document limits")]
    Limits(#[source] LimitExceeded),
    /// A routing attribute is missing.
    #[error("missing required attribute `{name}`")]
    MissingAttribute {
        /// The attribute.
        name: &'static str,
    },
    /// No schema exists for this namespace and doctype.
    #[error("no such doctype `{namespace}/{doctype}`")]
    UnknownDoctype {
        /// The namespace.
        namespace: String,
        /// The doctype.
        doctype: String,
    },
    /// The version is neither in the uri nor in the payload's `version` or `v`.
    #[error("missing document version for `{namespace}/{doctype}`: not in the uri, nor at /version or /v")]
    MissingVersion {
        /// The namespace.
        namespace: String,
        /// The doctype.
        doctype: String,
    },
    /// No schema for this version.
    #[error("schema `{namespace}/{doctype}.{version}` not found")]
    SchemaNotFound {
        /// The namespace.
        namespace: String,
        /// The doctype.
        doctype: String,
        /// The version as given (`01` is no schema, as in gcp-ingestion).
        version: String,
    },
    /// The schema's `collect_through_date` is before the day the document was submitted.
    #[error("`{namespace}/{doctype}.{version}` is no longer collected: submitted {submission_date}, collected through {collect_through_date}")]
    Expired {
        /// The namespace.
        namespace: String,
        /// The doctype.
        doctype: String,
        /// The version.
        version: u32,
        /// The schema's `mozPipelineMetadata.expiration_policy.collect_through_date`.
        collect_through_date: String,
        /// The UTC day of `submission_timestamp`.
        submission_date: String,
    },
    /// The payload does not match its schema; the message names the JSON pointer.
    #[error("payload does not match schema `{namespace}/{doctype}.{version}`")]
    Invalid {
        /// The namespace.
        namespace: String,
        /// The doctype.
        doctype: String,
        /// The version.
        version: u32,
        /// The issues, each with its JSON pointer.
        #[source]
        failure: ValidationFailure,
    },
    /// `AddMetadata` got a payload that is not a JSON object (it must follow `ParsePayload`).
    #[error("payload is not a json object (must start with `{{` and end with `}}`): cannot add metadata")]
    MetadataTarget,
    /// A part of a split document (its schema's `split_config`) failed; the whole document is
    /// one dead letter.
    #[error("split part `{namespace}/{doctype}.{version}` failed")]
    SplitPart {
        /// The part's namespace.
        namespace: String,
        /// The part's doctype.
        doctype: String,
        /// The part's version.
        version: u32,
        /// Why it failed.
        #[source]
        source: Box<DecodeError>,
    },
    /// [`ParsePayload::apply_owned`](super::ParsePayload::apply_owned) got a document that is
    /// split or dropped by a payload rule (use `ParsePayload::apply`).
    #[error("the document became other than one document (split, or dropped by a payload rule)")]
    NotOneDocument,
    /// A `drop_documents` rule of `[decoder.scrub_payload]` matched (`ScrubPayload`).
    #[error("document dropped by payload rule `{rule}`: {field} matched")]
    DroppedByRule {
        /// The rule's name.
        rule: String,
        /// What it tests, as the message says it: `` `/a/b` `` (a field) or
        /// ``attribute `app_version` ``.
        field: String,
    },
}
