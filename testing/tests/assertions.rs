//! The assertions fail loudly when misused.

use sluice_testing::{assert_that, MemorySink, MemorySource, TestPipeline};

#[test]
#[should_panic(expected = "never checked")]
fn an_unchecked_assertion_fails() {
    let sink = MemorySink::<u64>::new();
    let _unchecked = assert_that(&sink);
}

#[test]
#[should_panic(expected = "did the pipeline run")]
fn an_assertion_on_a_sink_that_never_ran_fails() {
    let sink = MemorySink::<u64>::new();
    assert_that(&sink).is_empty();
}

#[test]
#[should_panic(expected = "missing: [3]")]
fn contains_in_any_order_names_what_is_missing() {
    let sink = MemorySink::new();
    let s = sink.clone();
    TestPipeline::new()
        .run(move |p| {
            p.read("read", MemorySource::from(vec![1u64, 2]))
                .write("write", s.clone());
            Ok(())
        })
        .unwrap();
    assert_that(&sink).contains_in_any_order([1, 2, 3]);
}

#[test]
fn contains_in_any_order_ignores_order_but_not_duplicates() {
    let sink = MemorySink::new();
    let s = sink.clone();
    TestPipeline::new()
        .workers(2)
        .run(move |p| {
            p.read("read", MemorySource::from(vec![3u64, 1, 2, 2]))
                .write("write", s.clone());
            Ok(())
        })
        .unwrap();
    assert_that(&sink).contains_in_any_order([2, 2, 1, 3]);
    let result = std::panic::catch_unwind(|| assert_that(&sink).contains_in_any_order([1, 2, 3]));
    assert!(result.is_err(), "a missing duplicate is a difference");
}
