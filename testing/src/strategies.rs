//! proptest strategies for Sluice's data.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sluice::Message;

/// Arbitrary bytes up to `max_len` long.
pub fn arb_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max_len)
}

/// Attribute maps with identifier-like keys and arbitrary string values.
pub fn arb_attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-z_]{1,16}", any::<String>(), 0..6)
}

/// Arbitrary messages: random payload bytes and attributes.
pub fn arb_message() -> impl Strategy<Value = Message> {
    (arb_bytes(512), arb_attributes())
        .prop_map(|(payload, attributes)| Message::new(payload).with_attributes(attributes))
}
