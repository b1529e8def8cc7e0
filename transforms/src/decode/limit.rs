//! `LimitPayloadSize`: reject payloads over a size.

use sluice::{Message, PCollection, PTransform, WithFailures};

use super::DecodeError;

/// Default payload limit: 8 MiB, gcp-ingestion's.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// The step's `error_type`, also used by [`DecompressPayload`](super::DecompressPayload) when it
/// stops at this step's limit.
pub(crate) const LIMIT_PAYLOAD_SIZE: &str = "LimitPayloadSize";

/// Rejects payloads larger than a limit (`error_type` `LimitPayloadSize`, the message names
/// the size and the limit).
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::LimitPayloadSize;
/// let out = sluice::harness::run(vec![Message::new("12345"), Message::new("12")], |input, dead| {
///     input.apply("limit", LimitPayloadSize::new(4)).failures_to(dead)
/// });
/// assert_eq!(out.output, vec![Message::new("12")]);
/// assert_eq!(out.dead_letters[0].error_message, "payload of 5 bytes exceeds the limit of 4 bytes");
/// ```
#[derive(Debug, Clone)]
pub struct LimitPayloadSize {
    max_bytes: usize,
}

impl Default for LimitPayloadSize {
    fn default() -> Self {
        LimitPayloadSize::new(DEFAULT_MAX_PAYLOAD_BYTES)
    }
}

impl LimitPayloadSize {
    /// The step with a limit of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        LimitPayloadSize { max_bytes }
    }

    /// The limit in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Checks one message (what the step does per record).
    pub fn apply_to(&self, message: &Message) -> Result<Message, DecodeError> {
        check(message, self.max_bytes)?;
        Ok(message.clone())
    }

    /// Checks one message it owns; on failure, hands it back with the error.
    pub fn apply_owned(&self, message: Message) -> Result<Message, (Message, DecodeError)> {
        match check(&message, self.max_bytes) {
            Ok(()) => Ok(message),
            Err(e) => Err((message, e)),
        }
    }
}

fn check(message: &Message, limit: usize) -> Result<(), DecodeError> {
    let size = message.payload.len();
    if size > limit {
        return Err(DecodeError::PayloadTooLarge { size, limit });
    }
    Ok(())
}

impl<'s> PTransform<PCollection<'s, Message>> for LimitPayloadSize {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.try_map_owned(LIMIT_PAYLOAD_SIZE, move |m: Message| self.apply_owned(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_passes_over_fails() {
        let step = LimitPayloadSize::new(3);
        assert!(step.apply_to(&Message::new("abc")).is_ok());
        let e = step.apply_to(&Message::new("abcd")).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::PayloadTooLarge { size: 4, limit: 3 }
        ));
    }
}
