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

/// The owned step changes the message it passes on (as decoder steps do), and hands a rejected
/// message back untouched.
// The error hands back the whole message by design: that is what the owned form is for.
#[allow(clippy::result_large_err)]
fn tag_owned(modulus: u8) -> impl FnMut(Message) -> Result<Message, (Message, Failure)> {
    move |mut m: Message| {
        if m.payload.len().is_multiple_of(modulus as usize) {
            return Err((m, Failure::new("rejected")));
        }
        m.attributes.insert("tagged".into(), "yes".into());
        Ok(m)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn owned_map_keeps_every_input_exactly_once_and_fails_like_the_borrowed_one(
        messages in proptest::collection::vec(arb_message(), 0..300),
        modulus in 1u8..5,
        workers in 1usize..3,
    ) {
        let (owned_out, owned_dead) = (MemorySink::new(), MemorySink::new());
        let (borrowed_out, borrowed_dead) = (MemorySink::new(), MemorySink::new());
        let (oo, od, bo, bd) = (owned_out.clone(), owned_dead.clone(), borrowed_out.clone(), borrowed_dead.clone());
        let source = MemorySource::from(messages.clone());
        let summary = TestPipeline::new().workers(workers).run(move |p| {
            let mut owned_dead_letters = p.dead_letters();
            let mut borrowed_dead_letters = p.dead_letters();
            let input = p.read("read", source.clone());
            input.clone()
                .try_map_owned("Tag", tag_owned(modulus))
                .failures_to(&mut owned_dead_letters)
                .write("write_owned", oo.clone());
            input
                .try_map("Tag", move |m: &Message| {
                    tag_owned(modulus)(m.clone()).map_err(|(_, e)| e)
                })
                .failures_to(&mut borrowed_dead_letters)
                .write("write_borrowed", bo.clone());
            owned_dead_letters.write("dead_owned", od.clone());
            borrowed_dead_letters.write("dead_borrowed", bd.clone());
            Ok(())
        }).unwrap();
        let rejected = messages.iter().filter(|m| m.payload.len().is_multiple_of(modulus as usize)).count() as u64;
        // both steps are named `Tag`: their counters add up
        prop_assert_eq!(summary.step_failed.get("Tag").copied().unwrap_or(0), 2 * rejected);
        prop_assert_eq!(summary.step_ok.get("Tag").copied().unwrap_or(0), 2 * (messages.len() as u64 - rejected));
        let mut seen: Vec<Message> = owned_out.records().into_iter().map(|mut m| {
            let tag = m.attributes.remove("tagged");
            prop_assert_eq!(tag.as_deref(), Some("yes"));
            Ok(m)
        }).collect::<Result<_, TestCaseError>>()?;
        seen.extend(owned_dead.records().into_iter().map(|dl| dl.original));
        seen.sort();
        let mut expected = messages;
        expected.sort();
        prop_assert_eq!(seen, expected);
        // same dead letters (error type, message, provenance, original) and same output
        prop_assert_eq!(owned_dead.sorted(), borrowed_dead.sorted());
        prop_assert_eq!(owned_out.sorted(), borrowed_out.sorted());
    }

    #[test]
    fn owned_flat_map_keeps_every_input_exactly_once(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..200),
        workers in 1usize..3,
    ) {
        let (out, dead) = (MemorySink::new(), MemorySink::new());
        let (o, d) = (out.clone(), dead.clone());
        let source = MemorySource::from(payloads.clone());
        let summary = TestPipeline::new().workers(workers).run(move |p| {
            let mut dead_letters = p.dead_letters();
            // one record per byte, tagged with its input; inputs holding a zero byte fail
            p.read("read", source.clone())
                .try_flat_map_owned("Explode", |bytes: Vec<u8>| {
                    if bytes.contains(&0) {
                        return Err((bytes, Failure::new("zero byte")));
                    }
                    Ok(bytes.iter().map(|&b| (bytes.clone(), b)).collect::<Vec<_>>())
                })
                .failures_to(&mut dead_letters)
                // a sink's records must be representable as messages (`Original`)
                .map(|(bytes, b): (Vec<u8>, u8)| Message::new(bytes).with_attribute("byte", b.to_string()))
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        }).unwrap();
        let failing = payloads.iter().filter(|p| p.contains(&0)).count() as u64;
        prop_assert_eq!(summary.step_failed.get("Explode").copied().unwrap_or(0), failing);
        prop_assert_eq!(summary.step_ok.get("Explode").copied().unwrap_or(0), payloads.len() as u64 - failing);
        let mut expected_out: Vec<Message> = payloads.iter().filter(|p| !p.contains(&0))
            .flat_map(|p| p.iter().map(|&b| Message::new(p.clone()).with_attribute("byte", b.to_string())).collect::<Vec<_>>()).collect();
        expected_out.sort();
        prop_assert_eq!(out.sorted(), expected_out);
        let mut expected_dead: Vec<Message> = payloads.into_iter().filter(|p| p.contains(&0)).map(Message::new).collect();
        expected_dead.sort();
        let dead_letters = dead.sorted();
        prop_assert!(dead_letters.iter().all(|dl| dl.error_type == "Explode" && dl.error_message == "zero byte"));
        let mut originals: Vec<Message> = dead_letters.into_iter().map(|dl| dl.original).collect();
        originals.sort();
        prop_assert_eq!(originals, expected_dead);
    }
}
