//! A tiny harness that runs a step on in-memory records: what the doc examples use.
//! Whole-pipeline tests use `sluice_testing::TestPipeline`.

use crate::memory::{MemorySink, MemorySource};
use crate::pcollection::{DeadLetters, PCollection};
use crate::{DeadLetter, Element, Pipeline};

/// What [`run`] produced, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output<U> {
    /// The records the step produced.
    pub output: Vec<U>,
    /// The dead letters (without stack traces).
    pub dead_letters: Vec<DeadLetter>,
}

/// Runs `step` on `input` with one worker and returns its sorted output and dead letters.
///
/// ```
/// let out = sluice::harness::run(vec![3, 1, 2], |input, _| input.map(|x| x + 1));
/// assert_eq!(out.output, vec![2, 3, 4]);
/// assert!(out.dead_letters.is_empty());
/// ```
///
/// # Panics
/// If the pipeline fails: this is for examples and tests.
pub fn run<T, U, F>(input: Vec<T>, step: F) -> Output<U>
where
    T: Element,
    U: Element + Ord + crate::Original,
    F: for<'s> Fn(PCollection<'s, T>, &mut DeadLetters<'s>) -> PCollection<'s, U>
        + Send
        + Sync
        + 'static,
{
    let source = MemorySource::from(input);
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    Pipeline::new("harness")
        .stack_traces(false)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            let input = p.read("read", source.clone());
            step(input, &mut dead_letters).write("write", o.clone());
            dead_letters.write("write_dead_letters", d.clone());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("harness pipeline failed: {}", crate::chain(&e)));
    Output {
        output: out.sorted(),
        dead_letters: dead.sorted(),
    }
}
