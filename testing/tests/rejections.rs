//! Sinks that refuse single records: refusals become dead letters holding the record, must be
//! routed, and count toward an epoch's durability; the dead-letter sink's own refusals are
//! retried reduced; whole-write failures and panics stop the run without acknowledging.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice::io::{Epoch, Rejection, Sink, SinkContext, SinkWriter, WriteFuture};
use sluice::{BoxError, DeadLetter, Error, Failure, InFlightBounds, Message};
use sluice_testing::{
    FailingSink, MemorySink, MemorySource, PanickingSink, SlowSink, TestPipeline,
};

/// Reads `source` into `store` (routing its refusals) and the dead letters into `dead_letters`.
fn run_refusals<T, S, D>(
    pipeline: TestPipeline,
    source: &MemorySource<T>,
    store: &S,
    dead_letters: &D,
) -> sluice::Result<sluice::RunSummary>
where
    T: sluice::Element + sluice::Original,
    S: Sink<Input = T> + Clone,
    D: Sink<Input = DeadLetter> + Clone,
{
    let (s, o, d) = (source.clone(), store.clone(), dead_letters.clone());
    pipeline.run(move |p| {
        let mut dead_letters = p.dead_letters();
        p.read("read", s.clone())
            .write("store", o.clone())
            .failures_to(&mut dead_letters);
        dead_letters.write("dead_letters", d.clone());
        Ok(())
    })
}

fn odd_is_refused(x: &u64) -> Option<String> {
    (x % 2 == 1).then(|| format!("{x} is odd"))
}

#[test]
fn refused_records_become_dead_letters_with_the_record_and_the_rest_is_written() {
    let input: Vec<u64> = (0..200).collect();
    for workers in [1, 2] {
        let source = MemorySource::from(input.clone());
        let out = MemorySink::rejecting(odd_is_refused);
        let dead = MemorySink::<DeadLetter>::new();
        let summary =
            run_refusals(TestPipeline::new().workers(workers), &source, &out, &dead).unwrap();
        assert!(source.all_acked());
        let even: Vec<u64> = input.iter().copied().filter(|x| x % 2 == 0).collect();
        assert_eq!(out.sorted(), even);
        let mut refused: Vec<u64> = dead
            .records()
            .iter()
            .map(|d| {
                assert_eq!(d.error_type, "store");
                assert_eq!(d.input_type.as_deref(), Some("memory"));
                let x: u64 = std::str::from_utf8(&d.original.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(d.error_message, format!("{x} is odd"));
                x
            })
            .collect();
        refused.sort();
        let odd: Vec<u64> = input.iter().copied().filter(|x| x % 2 == 1).collect();
        assert_eq!(refused, odd);
        assert_eq!(summary.written["store"], 100);
        assert_eq!(summary.dead_lettered["store"], 100);
    }
}

#[test]
fn a_refusal_stream_that_reaches_no_sink_does_not_build() {
    let out = MemorySink::rejecting(odd_is_refused);
    let source = MemorySource::from(vec![1u64, 2]);
    let s = source.clone();
    let err = TestPipeline::new()
        .run(move |p| {
            p.read("read", s.clone()).write("store", out.clone());
            Ok(())
        })
        .unwrap_err();
    match err {
        Error::UnroutedFailures { steps } => assert_eq!(steps, vec!["store".to_string()]),
        other => panic!("expected unrouted failures, got {other}"),
    }
    assert!(source.acked().is_empty());
}

#[test]
fn an_epoch_is_not_acknowledged_until_its_refusals_are_durable() {
    // The dead-letter sink fails its first write: the epochs whose refusals it held must not be
    // acknowledged, though their accepted records were written.
    let epochs: Vec<Vec<u64>> = (0..10).map(|e| vec![2 * e, 2 * e + 1]).collect();
    let source = MemorySource::from_epochs(epochs);
    let out = MemorySink::rejecting(odd_is_refused);
    let dead = FailingSink::first(1, MemorySink::<DeadLetter>::new());
    let err = run_refusals(TestPipeline::new(), &source, &out, &dead).unwrap_err();
    assert!(
        matches!(err, Error::Sink { ref step, .. } if step == "dead_letters"),
        "{err}"
    );
    assert!(!source.all_acked());
    // Every acknowledged batch has its odd record in a durable dead letter: none, since the
    // first dead-letter write failed and the run stopped; so at most the batches before the
    // first refusal's epoch may be acknowledged, and batch 0 holds a refusal.
    assert!(
        source.acked().is_empty(),
        "acknowledged without its dead letter: {:?}",
        source.acked()
    );
}

/// A sink that refuses records but says it never does.
#[derive(Clone)]
struct Undeclared(MemorySink<u64>);

impl Sink for Undeclared {
    type Input = u64;
    fn kind(&self) -> &str {
        "undeclared"
    }
    fn open(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<u64>>, BoxError> {
        self.0.open(ctx)
    }
}

#[test]
fn a_sink_that_refuses_without_declaring_it_stops_the_run_instead_of_dropping() {
    let source = MemorySource::from(vec![1u64, 2, 3]);
    let s = source.clone();
    let out = Undeclared(MemorySink::rejecting(odd_is_refused));
    let err = TestPipeline::new()
        .run(move |p| {
            p.read("read", s.clone()).write("store", out.clone());
            Ok(())
        })
        .unwrap_err();
    let text = sluice::chain(&err);
    assert!(text.contains("sink `store`"), "{text}");
    assert!(text.contains("does not declare rejections"), "{text}");
    assert!(!source.all_acked());
}

/// A dead-letter sink that refuses messages over `limit` bytes of payload.
fn limited_dead_letter_sink(limit: usize) -> MemorySink<DeadLetter> {
    MemorySink::rejecting(move |d: &DeadLetter| {
        (d.original.payload.len() > limit).then(|| format!("over {limit} bytes"))
    })
}

#[test]
fn a_dead_letter_too_large_for_its_sink_lands_reduced_and_the_job_finishes() {
    let big = Message::new(vec![b'a'; 8 << 20]).with_attribute("uri", "/submit/x");
    let small = Message::new("tiny");
    let source = MemorySource::from(vec![big.clone(), small.clone()]);
    let out = MemorySink::rejecting(|_: &Message| Some("every record refused".to_string()));
    let dead = limited_dead_letter_sink(1 << 20);
    run_refusals(TestPipeline::new(), &source, &out, &dead).unwrap();
    assert!(source.all_acked());
    let mut landed = dead.records();
    landed.sort_by_key(|d| d.original.payload.len());
    assert_eq!(landed.len(), 2);
    assert_eq!(
        landed[0].original, small,
        "a dead letter that fits is untouched"
    );
    let reduced = &landed[1].original;
    assert_eq!(reduced.payload.len(), 64 << 10);
    assert_eq!(reduced.attribute("payload_bytes"), Some("8388608"));
    assert_eq!(reduced.attribute("payload_truncated"), Some("true"));
    assert_eq!(reduced.attribute("uri"), Some("/submit/x"));
    // sha256 of 8 MiB of `a`, computed independently (`head -c 8388608 /dev/zero | tr '\0' a | sha256sum`)
    assert_eq!(
        reduced.attribute("payload_sha256"),
        Some("ad97f87076920684e2ca66fc44e5d322797dc9d64706b174e51b5d0828937043")
    );
    assert_eq!(landed[1].error_message, "every record refused");
}

#[test]
fn a_reduced_dead_letter_refused_again_stops_the_run_without_acknowledging() {
    let source = MemorySource::from(vec![Message::new(vec![b'a'; 100])]);
    let out = MemorySink::rejecting(|_: &Message| Some("refused".to_string()));
    let dead = limited_dead_letter_sink(10);
    let err = run_refusals(
        TestPipeline::new().with_pipeline(|p| p.dead_letter_payload_limit(50)),
        &source,
        &out,
        &dead,
    )
    .unwrap_err();
    let text = sluice::chain(&err);
    assert!(text.contains("sink `dead_letters`"), "{text}");
    assert!(text.contains("refused a reduced dead letter"), "{text}");
    assert!(source.acked().is_empty());
    assert!(dead.is_empty());
}

#[test]
fn a_panicking_write_future_ends_the_run_with_an_error_naming_the_sink() {
    let epochs: Vec<Vec<u64>> = (0..20).map(|e| vec![e]).collect();
    for workers in [1, 2] {
        let source = MemorySource::from_epochs(epochs.clone());
        let sink = PanickingSink::nth(3, MemorySink::new());
        let (s, k) = (source.clone(), sink.clone());
        let err = TestPipeline::new()
            .workers(workers)
            .run(move |p| {
                p.read("read", s.clone()).write("store", k.clone());
                Ok(())
            })
            .unwrap_err();
        let text = sluice::chain(&err);
        assert!(text.contains("sink `store`"), "{text}");
        assert!(text.contains("injected panic in write #3"), "{text}");
        assert!(!source.all_acked());
    }
}

#[test]
fn zero_bounds_are_refused_before_anything_runs() {
    let opened = Arc::new(AtomicBool::new(false));
    let o = opened.clone();
    let err = TestPipeline::new()
        .in_flight_bounds(InFlightBounds {
            max_epochs: 0,
            max_bytes: 0,
            max_unacknowledged_epochs: 0,
        })
        .run(move |p| {
            o.store(true, Ordering::SeqCst);
            p.read("read", MemorySource::from(vec![1u64]))
                .write("store", MemorySink::new());
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPipeline(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(
                "in-flight max_epochs, in-flight max_bytes, in-flight max_unacknowledged_epochs must be greater than zero"
            ),
        "{text}"
    );
    assert!(
        !opened.load(Ordering::SeqCst),
        "the graph must not even be built"
    );
}

/// A sink whose writes refuse everything after a delay: refusals resolved late still hold the
/// epoch until the dead letters are durable.
#[derive(Clone)]
struct LateRefusals;

impl Sink for LateRefusals {
    type Input = u64;
    fn kind(&self) -> &str {
        "late"
    }
    fn can_reject(&self) -> bool {
        true
    }
    fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<u64>>, BoxError> {
        Ok(Box::new(LateRefusals))
    }
}

impl SinkWriter<u64> for LateRefusals {
    fn write(&mut self, _: Epoch, records: Vec<u64>) -> WriteFuture<u64> {
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            Ok(records
                .into_iter()
                .map(|r| Rejection::new(r, Failure::new("late")))
                .collect())
        })
    }
}

#[test]
fn late_refusals_through_a_slow_dead_letter_sink_are_all_durable_before_acknowledgement() {
    let epochs: Vec<Vec<u64>> = (0..30).map(|e| (e * 3..e * 3 + 3).collect()).collect();
    let source = MemorySource::from_epochs(epochs);
    let dead = MemorySink::<DeadLetter>::new();
    let slow = SlowSink::new(std::time::Duration::from_millis(3), dead.clone());
    let (s, d) = (source.clone(), slow.clone());
    TestPipeline::new()
        .workers(2)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", s.clone())
                .write("store", LateRefusals)
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    assert!(source.all_acked());
    assert_eq!(dead.len(), 90);
}
