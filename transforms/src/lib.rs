//! Sluice transforms: the decoder's element transforms and the IO connectors.
//!
//! - [`decode`]: `ParseUri`, `DecompressPayload`, `LimitPayloadSize`, `ParsePayload`,
//!   `AddMetadata` and the composite `Decoder`, each a `PTransform` returning `WithFailures`.
//! - [`scrub`]: `ScrubAttributes`, removing client IPs and other attributes that must not be
//!   written.
//! - [`io`]: connectors (`memory`, `file`, `stdio`, the object sink; `kafka`, `s3`, `pubsub`,
//!   `bigquery` behind cargo features).

pub mod config_doc;
pub mod decode;
pub mod io;
pub mod scrub;
