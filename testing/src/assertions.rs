//! Assertions on what a sink received, which fail loudly when never checked.

use std::fmt::Debug;

use sluice::{Element, MemorySink};

/// Starts an assertion on what `sink` received. Call one check on it: an assertion dropped
/// unchecked panics, and so does checking a sink no pipeline ever opened (a test that forgot to
/// run its pipeline must not pass).
#[must_use = "an assertion does nothing until a check such as `contains_in_any_order` is called"]
pub fn assert_that<T: Element>(sink: &MemorySink<T>) -> SinkAssert<T> {
    SinkAssert {
        sink: sink.clone(),
        checked: false,
    }
}

/// An assertion on a [`MemorySink`]; see [`assert_that`].
pub struct SinkAssert<T: Element> {
    sink: MemorySink<T>,
    checked: bool,
}

impl<T: Element> SinkAssert<T> {
    fn records(&mut self) -> Vec<T> {
        self.checked = true;
        assert!(
            self.sink.times_opened() > 0,
            "assertion on a sink that no pipeline ever opened: did the pipeline run?"
        );
        self.sink.records()
    }

    /// The sink received exactly these records, in any order (a multiset comparison).
    pub fn contains_in_any_order(mut self, expected: impl IntoIterator<Item = T>)
    where
        T: Ord + Debug,
    {
        let mut actual = self.records();
        let mut expected: Vec<T> = expected.into_iter().collect();
        actual.sort();
        expected.sort();
        if actual != expected {
            let missing: Vec<&T> = expected.iter().filter(|e| !actual.contains(e)).collect();
            let unexpected: Vec<&T> = actual.iter().filter(|a| !expected.contains(a)).collect();
            panic!(
                "sink contents differ: {} received, {} expected\nmissing: {missing:?}\nunexpected: {unexpected:?}\n(duplicates count: compare the lengths)",
                actual.len(),
                expected.len()
            );
        }
    }

    /// The sink received nothing.
    pub fn is_empty(mut self)
    where
        T: Debug,
    {
        let actual = self.records();
        assert!(
            actual.is_empty(),
            "expected no records, received {}: {actual:?}",
            actual.len()
        );
    }

    /// The sink received exactly `n` records.
    pub fn has_len(mut self, n: usize) {
        let actual = self.records().len();
        assert_eq!(actual, n, "expected {n} records, received {actual}");
    }

    /// Every record satisfies `predicate`; the message names the first that does not.
    pub fn all(mut self, predicate: impl Fn(&T) -> bool)
    where
        T: Debug,
    {
        if let Some(bad) = self.records().iter().find(|r| !predicate(r)) {
            panic!("record does not satisfy the predicate: {bad:?}");
        }
    }

    /// Hands the records to a closure with its own assertions.
    pub fn satisfies(mut self, check: impl FnOnce(Vec<T>)) {
        let records = self.records();
        check(records)
    }
}

impl<T: Element> Drop for SinkAssert<T> {
    fn drop(&mut self) {
        if !self.checked && !std::thread::panicking() {
            panic!("assert_that(..) was never checked: call contains_in_any_order, is_empty, has_len, all or satisfies");
        }
    }
}
