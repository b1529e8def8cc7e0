//! `Decoder`: the decoder's steps in gcp-ingestion's order.

use std::sync::Arc;

use sluice::{Message, PCollection, PTransform, WithFailures};
use sluice_schemas::{Limits, SchemaRegistry};

use crate::scrub::ScrubAttributes;

use super::{
    AddMetadata, DecompressPayload, GeoLookup, LimitPayloadSize, NormalizeAttributes, ParsePayload,
    ParseProxy, ParseUri, ParseUserAgent, ScrubPayloadConfig, DEFAULT_MAX_PAYLOAD_BYTES,
};

/// Attributes a dead letter carries besides the original's (gcp-ingestion's error attributes
/// and the source-position keys of Sluice's sources); the [`Decoder`] removes them first, so
/// that a dead letter fed back in decodes like the original once the cause is fixed.
pub const REPLAY_STRIPPED_ATTRIBUTES: &[&str] = &[
    "error_type",
    "error_message",
    "exception_class",
    "stack_trace",
    "job_name",
    "input",
    "input_type",
    "input_file",
    "input_line",
    "input_offset",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "pubsub_subscription",
    "pubsub_message_id",
    "pubsub_publish_time",
    "pubsub_delivery_attempt",
    "memory_index",
];

/// gcp-ingestion's Decoder: strips the error attributes of replayed dead letters, then
/// [`ParseUri`] -> [`DecompressPayload`] -> [`LimitPayloadSize`] -> [`ParseProxy`] ->
/// [`GeoLookup`] (with [`Decoder::with_geo`]) -> [`ParseUserAgent`] -> [`ParsePayload`]
/// (which applies the payload rules of [`Decoder::with_scrub_payload`] before validation, and
/// splits documents whose schema has a `split_config`) -> [`NormalizeAttributes`] ->
/// [`AddMetadata`](super::AddMetadata), returning the decoded messages and every step's dead
/// letters. The steps that never fail run inside their neighbours' operators (one map for
/// proxy and user agent, normalization with the metadata), so that they add no operator.
///
/// Each step owns the message it works on and passes it on without a copy; a step that
/// rejects a message hands it back untouched, so its dead letter holds the message as that step
/// received it. Decompression stops at the payload limit
/// ([`DecompressPayload::limited_by`]): a gzip bomb is rejected after inflating limit + 1
/// bytes, as a `LimitPayloadSize` dead letter holding the compressed payload. Decoding is
/// idempotent: the decoder's output, decoded again, is unchanged.
///
/// Before the metadata is nested, the attributes of [`Decoder::with_scrub`] are removed (by
/// default the client IPs, [`CLIENT_IP_ATTRIBUTES`](crate::scrub::CLIENT_IP_ATTRIBUTES)), so
/// that neither the output's attributes nor its payload hold them.
///
/// ```
/// use std::sync::Arc;
/// use sluice::Message;
/// use sluice_schemas::SchemaRegistry;
/// use sluice_transforms::decode::Decoder;
///
/// let registry = Arc::new(SchemaRegistry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/json")).unwrap());
/// let uri = "/submit/test/test/1/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c11";
/// let input = vec![
///     Message::new(r#"{"field":"x"}"#).with_attribute("uri", uri),
///     Message::new(r#"{"bad":1}"#).with_attribute("uri", uri),
/// ];
/// let out = sluice::harness::run(input, move |input, dead| {
///     input.apply("decoder", Decoder::new(registry.clone())).failures_to(dead)
/// });
/// assert_eq!(out.output.len(), 1);
/// assert_eq!(out.dead_letters[0].error_type, "ParsePayload");
/// assert!(out.dead_letters[0].error_message.contains("/bad"));
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    registry: Arc<SchemaRegistry>,
    max_payload_bytes: usize,
    limits: Limits,
    stripped: Vec<String>,
    scrub: ScrubAttributes,
    geo: GeoLookup,
    scrub_payload: ScrubPayloadConfig,
}

impl Decoder {
    /// The decoder, validating against `registry`, with the default limits.
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        Decoder {
            registry,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            limits: Limits::default(),
            stripped: REPLAY_STRIPPED_ATTRIBUTES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            scrub: ScrubAttributes::client_ip(),
            geo: GeoLookup::none(),
            scrub_payload: ScrubPayloadConfig::default(),
        }
    }

    /// Looks up the client IP in these geo and ISP databases (default: none, and the `geo_*`
    /// and `isp_*` attributes are left as they came). The lookup runs before the client IP is
    /// scrubbed.
    pub fn with_geo(mut self, geo: GeoLookup) -> Self {
        self.geo = geo;
        self
    }

    /// Sets the payload rules (see [`ScrubPayload`](super::ScrubPayload)), applied in [`ParsePayload`] right after
    /// the payload is parsed, before validation; none by default.
    pub fn with_scrub_payload(mut self, rules: &ScrubPayloadConfig) -> Self {
        self.scrub_payload = rules.clone();
        self
    }

    /// Sets the attributes removed from decoded messages before the metadata is nested
    /// (default: [`ScrubAttributes::client_ip`]; [`ScrubAttributes::none`] keeps everything).
    pub fn with_scrub(mut self, scrub: ScrubAttributes) -> Self {
        self.scrub = scrub;
        self
    }

    /// Sets the largest (decompressed) payload accepted; default 8 MiB. Gunzip stops one byte
    /// past it.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the nesting and array bounds checked before validation.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Also strips these attributes on input (for example the position keys of a custom
    /// source), besides [`REPLAY_STRIPPED_ATTRIBUTES`].
    pub fn with_stripped_attributes<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        names: I,
    ) -> Self {
        self.stripped.extend(names.into_iter().map(Into::into));
        self
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for Decoder {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let stripped = self.stripped;
        let limit = LimitPayloadSize::new(self.max_payload_bytes);
        let received = input
            .map(move |mut m: Message| {
                for k in &stripped {
                    m.attributes.remove(k);
                }
                m
            })
            .apply("parse_uri", ParseUri::new())
            .and_then(
                "decompress_payload",
                DecompressPayload::new().limited_by(&limit),
            )
            .and_then("limit_payload_size", limit);
        let geo = self.geo;
        let enriched = WithFailures {
            output: received.output.map(move |mut m: Message| {
                ParseProxy::apply(&mut m);
                geo.apply(&mut m);
                ParseUserAgent::apply(&mut m);
                m
            }),
            failures: received.failures,
        };
        let parsed = enriched.and_then(
            "parse_payload",
            ParsePayload::new(self.registry)
                .with_limits(self.limits)
                .with_scrub_payload(&self.scrub_payload),
        );
        parsed.and_then("add_metadata", NormalizedMetadata(self.scrub))
    }
}

/// [`NormalizeAttributes`], then [`AddMetadata`] on a message whose scrubbed attributes are
/// gone first.
struct NormalizedMetadata(ScrubAttributes);

impl<'s> PTransform<PCollection<'s, Message>> for NormalizedMetadata {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let scrub = self.0;
        input.try_map_owned("AddMetadata", move |mut m: Message| {
            NormalizeAttributes::apply(&mut m);
            scrub.scrub(&mut m.attributes);
            AddMetadata::apply_owned(m)
        })
    }
}
