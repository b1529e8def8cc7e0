//! Property: for a fallible step with a random failure predicate, every input appears exactly
//! once, in the output or in the dead letters.

use proptest::prelude::*;
use sluice::{Failure, Message};
use sluice_testing::strategies::arb_message;
use sluice_testing::{MemorySink, MemorySource, TestPipeline};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_input_exactly_once_in_output_or_dead_letters(
        messages in proptest::collection::vec(arb_message(), 0..300),
        modulus in 1u8..5,
        workers in 1usize..3,
    ) {
        let out = MemorySink::new();
        let dead = MemorySink::new();
        let (o, d) = (out.clone(), dead.clone());
        let source = MemorySource::from(messages.clone());
        TestPipeline::new().workers(workers).run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", source.clone())
                .try_map("Predicate", move |m: &Message| {
                    if m.payload.len().is_multiple_of(modulus as usize) {
                        Err(Failure::new("rejected"))
                    } else {
                        Ok(m.clone())
                    }
                })
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        }).unwrap();
        let mut seen: Vec<Message> = out.records();
        seen.extend(dead.records().into_iter().map(|dl| dl.original));
        seen.sort();
        let mut expected = messages;
        expected.sort();
        prop_assert_eq!(seen, expected);
    }
}
