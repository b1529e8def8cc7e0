//! A pipeline that would lose failures does not build; failures of sources, sinks and workers
//! stop it with a clear error; shutdown stops it cleanly.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice::io::{Source, SourceContext, SourceReader};
use sluice::{BoxError, DeadLetter, Error, Failure, Message};
use sluice_testing::{assert_that, MemorySink, MemorySource, TestPipeline, UnboundedMemorySource};

#[test]
fn unrouted_failures_do_not_build() {
    let source = MemorySource::from(vec![1u64, 2, 3]);
    let out = MemorySink::new();
    let o = out.clone();
    let result = TestPipeline::new().run(move |p| {
        let WithFailuresParts { output } = split(
            p.read("read", source.clone())
                .try_map("Check", |x: &u64| Ok::<_, Failure>(*x)),
        );
        output.write("write", o.clone());
        Ok(())
    });
    match result {
        Err(Error::UnroutedFailures { steps }) => assert_eq!(steps, vec!["Check".to_string()]),
        other => panic!("expected UnroutedFailures, got {other:?}"),
    }
    let message = Error::UnroutedFailures {
        steps: vec!["Check".into()],
    }
    .to_string();
    assert!(
        message.contains("`Check`") && message.contains("dead-letter"),
        "{message}"
    );
    assert_eq!(
        out.times_opened(),
        0,
        "nothing was opened: the error comes before any I/O"
    );
}

#[test]
fn unrouted_failures_of_an_owned_map_do_not_build() {
    let source = MemorySource::from(vec![1u64, 2, 3]);
    let result = TestPipeline::new().run(move |p| {
        let WithFailuresParts { output } = split(
            p.read("read", source.clone())
                .try_map_owned("CheckOwned", |x: u64| Ok::<_, (u64, Failure)>(x)),
        );
        output.write("write", MemorySink::new());
        Ok(())
    });
    assert!(
        matches!(&result, Err(Error::UnroutedFailures { steps }) if steps == &["CheckOwned"]),
        "{result:?}"
    );
}

struct WithFailuresParts<'s> {
    output: sluice::PCollection<'s, u64>,
}

/// Drops the failures on the floor, as a careless pipeline would.
fn split(w: sluice::WithFailures<'_, u64>) -> WithFailuresParts<'_> {
    WithFailuresParts { output: w.output }
}

#[test]
fn dead_letters_collected_but_never_written_do_not_build_either() {
    let source = MemorySource::from(vec![1u64]);
    let result = TestPipeline::new().run(move |p| {
        let mut dead_letters = p.dead_letters();
        p.read("read", source.clone())
            .apply("outer", Identity)
            .try_map("Inner", |x: &u64| Ok::<_, Failure>(*x))
            .failures_to(&mut dead_letters)
            .write("write", MemorySink::new());
        drop(dead_letters);
        Ok(())
    });
    assert!(
        matches!(&result, Err(Error::UnroutedFailures { steps }) if steps == &["Inner"]),
        "{result:?}"
    );
}

/// A composite step whose inner failures must still be routed.
struct Identity;

impl<'s> sluice::PTransform<sluice::PCollection<'s, u64>> for Identity {
    type Output = sluice::PCollection<'s, u64>;
    fn expand(self, input: sluice::PCollection<'s, u64>) -> Self::Output {
        input
    }
}

#[test]
fn a_pipeline_without_sink_does_not_build() {
    let source = MemorySource::from(vec![1u64]);
    let result = TestPipeline::new().run(move |p| {
        let _ = p.read("read", source.clone()).map(|x| x + 1);
        Ok(())
    });
    assert!(
        matches!(result, Err(Error::InvalidPipeline(ref m)) if m.contains("no sink")),
        "{result:?}"
    );
}

#[test]
fn a_panicking_step_is_a_clean_error_with_its_message_not_a_hang() {
    let source = MemorySource::from((0..1000u64).collect::<Vec<_>>());
    let result = TestPipeline::new().workers(2).run(move |p| {
        p.read("read", source.clone())
            .map(|x| {
                if x == 777 {
                    panic!("boom at {x}");
                }
                x
            })
            .write("write", MemorySink::new());
        Ok(())
    });
    match result {
        Err(Error::WorkerPanic { message, .. }) => assert_eq!(message, "boom at 777"),
        other => panic!("expected a worker panic, got {other:?}"),
    }
}

struct BrokenSource;

#[derive(Debug, thiserror::Error)]
#[error("broker 127.0.0.1:1 unreachable")]
struct Unreachable;

impl Source for BrokenSource {
    type Output = u64;
    fn kind(&self) -> &str {
        "broken"
    }
    fn describe(&self) -> String {
        "nowhere".into()
    }
    fn open(&self, _: &SourceContext) -> Result<Box<dyn SourceReader<u64>>, BoxError> {
        Err(Box::new(Unreachable))
    }
}

#[test]
fn an_unreachable_source_is_an_error_not_a_dead_letter() {
    let result = TestPipeline::new().run(|p| {
        p.read("read_kafka", BrokenSource)
            .write("write", MemorySink::new());
        Ok(())
    });
    let e = result.unwrap_err();
    assert!(matches!(e, Error::Source { .. }));
    // what failed, then the cause, once
    assert_eq!(e.to_string(), "source `read_kafka` failed");
    assert_eq!(
        sluice::chain(&e),
        "source `read_kafka` failed: broker 127.0.0.1:1 unreachable"
    );
}

#[test]
fn shutdown_flag_stops_an_unbounded_pipeline_and_acknowledges_what_was_written() {
    let (source, feeder) = UnboundedMemorySource::<u64>::new();
    feeder.push(0..1000);
    let written = MemorySink::new();
    let tp = TestPipeline::new().workers(2);
    let stop = tp.pipeline().shutdown_flag();
    let (s, w) = (source.clone(), written.clone());
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    tp.run(move |p| {
        p.read("read", s.clone()).write("write", w.clone());
        Ok(())
    })
    .expect("a shutdown is a clean end");
    stopper.join().unwrap();
    assert_eq!(written.len(), 1000);
    assert_eq!(source.acked_count(), 1000);
}

struct FramingSource(Vec<Result<Message, DeadLetter>>);

impl Source for FramingSource {
    type Output = Result<Message, DeadLetter>;
    fn kind(&self) -> &str {
        "file"
    }
    fn describe(&self) -> String {
        "input.ndjson".into()
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<Self::Output>>, BoxError> {
        sluice::MemorySource::from(self.0.clone()).open(ctx)
    }
}

#[test]
fn read_with_failures_routes_unframable_input_with_provenance() {
    let bad = DeadLetter::new(
        Message::new("{not json"),
        "ReadInput",
        Failure::new("invalid json"),
    );
    let source = FramingSource(vec![Ok(Message::new("a")), Err(bad)]);
    let source = std::sync::Arc::new(source);
    let out = MemorySink::new();
    let dead = MemorySink::new();
    let (o, d) = (out.clone(), dead.clone());
    let summary = TestPipeline::new()
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read_with_failures("read", FramingSource(source.0.clone()))
                .failures_to(&mut dead_letters)
                .write("write", o.clone());
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    assert_that(&out).contains_in_any_order([Message::new("a")]);
    assert_that(&dead).satisfies(|dls| {
        assert_eq!(dls.len(), 1);
        assert_eq!(dls[0].original.payload, "{not json");
        assert_eq!(dls[0].input.as_deref(), Some("input.ndjson"));
        assert_eq!(dls[0].input_type.as_deref(), Some("file"));
        assert_eq!(dls[0].job_name.as_deref(), Some("test"));
    });
    assert_eq!(summary.dead_lettered.get("ReadInput"), Some(&1));
    assert_eq!(summary.step_failed.get("read"), Some(&1));
}
