//! The Pub/Sub source and sink on the memory double of the service's delivery semantics:
//! the conformance suites, acks only after durable writes, redelivery after a failed run,
//! lease expiry, flow control, shutdown, and the refusals of what Pub/Sub cannot take.
//! (`io_pubsub_emulator.rs` runs the suites against the emulator.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::{DeadLetter, EpochBounds, MemorySink, MemorySource, Message};
use sluice_testing::conformance::{
    sample_messages, sink_conformance, source_conformance, SinkUnderTest, SourceUnderTest,
};
use sluice_testing::{FailingSink, TestPipeline};
use sluice_transforms::io::object::{BatchBounds, Compression, ObjectSink, PathTemplate};
use sluice_transforms::io::pubsub::{MemoryPubsub, PubsubSink, PubsubSource};

const TOPIC: &str = "projects/p/topics/raw";
const SUB: &str = "projects/p/subscriptions/raw";
const OUT: &str = "projects/p/topics/out";

fn idle() -> Duration {
    Duration::from_millis(300)
}

/// A double with the input topic and subscription, `records` published, and the output topic.
fn double_with(records: &[Message]) -> MemoryPubsub {
    let ps = MemoryPubsub::new();
    ps.create_subscription(SUB, TOPIC);
    ps.create_topic(OUT);
    for r in records {
        ps.publish(TOPIC, r.clone()).unwrap();
    }
    ps
}

fn out_template() -> PathTemplate {
    PathTemplate::parse(OUT).unwrap()
}

fn multiset(records: impl IntoIterator<Item = Message>) -> BTreeMap<Message, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

#[test]
fn source_conformance_on_the_double() {
    source_conformance("pubsub (double)", |records: &[Message]| {
        let ps = double_with(records);
        SourceUnderTest::resuming(move || PubsubSource::memory(&ps, SUB).exit_when_idle(idle()))
    });
}

#[test]
fn source_conformance_on_the_double_with_tight_flow_control() {
    source_conformance("pubsub (double, 5 outstanding)", |records: &[Message]| {
        let ps = double_with(records);
        SourceUnderTest::resuming(move || {
            PubsubSource::memory(&ps, SUB)
                .flow_control(5, usize::MAX)
                .exit_when_idle(idle())
        })
    });
}

#[test]
fn sink_conformance_on_the_double() {
    sink_conformance("pubsub sink (double)", || {
        let ps = double_with(&[]);
        let read = ps.clone();
        SinkUnderTest::new(PubsubSink::memory(&ps, out_template()), move || {
            read.published(OUT).iter().map(|p| p.message()).collect()
        })
        .refusing(
            Message::new("too many").with_attributes(
                (0..101)
                    .map(|i| (format!("a{i}"), "v".to_string()))
                    .collect(),
            ),
        )
    });
}

/// Runs source -> sink (a failing wrapper when `fail_first` > 0) on `workers`; returns the
/// result and what the sink made durable.
fn run_copy(
    ps: &MemoryPubsub,
    source: PubsubSource,
    fail_first: usize,
    workers: usize,
) -> (sluice::Result<sluice::RunSummary>, MemorySink<Message>) {
    let out = MemorySink::<Message>::new();
    let dead = MemorySink::<DeadLetter>::new();
    let (o, d) = (out.clone(), dead.clone());
    let _ = ps;
    let result = TestPipeline::new()
        .workers(workers)
        .epoch_bounds(EpochBounds {
            max_records: 7,
            ..EpochBounds::default()
        })
        .run(move |p| {
            let dl = p.dead_letters();
            let input = p.read("read", source.clone());
            if fail_first > 0 {
                input.write("write", FailingSink::first(fail_first, o.clone()));
            } else {
                input.write("write", o.clone());
            }
            dl.write("dead_letters", d.clone());
            Ok(())
        });
    (result, out)
}

#[test]
fn a_failed_run_acks_nothing_unwritten_and_nacks_the_rest_for_redelivery() {
    let input = sample_messages(50);
    let ps = double_with(&input);
    let source = PubsubSource::memory(&ps, SUB).exit_when_idle(idle());
    let (result, out) = run_copy(&ps, source.clone(), 1, 1);
    assert!(result.is_err(), "a failing sink must fail the run");
    // nothing acked that is not durable
    let written = multiset(out.records());
    let acked = ps.acked(SUB);
    let published = ps.published(TOPIC);
    for id in &acked {
        let m = published.iter().find(|p| &p.message_id == id).unwrap();
        assert!(
            written.contains_key(&m.message()),
            "acked but not written: {id}"
        );
    }
    // the rest was nacked at once: nothing is left leased (no wait for a lease to expire)
    assert_eq!(ps.outstanding(SUB), 0, "delivered messages left leased");
    assert!(
        ps.nacks(SUB) > 0,
        "the failed epoch's messages must be nacked"
    );
    assert_eq!(ps.unacked(SUB), input.len() - acked.len());

    // a restart reads what was not acked, and it lands
    let (result, out2) = run_copy(&ps, source, 0, 2);
    result.unwrap();
    let all = multiset(out.records().into_iter().chain(out2.records()));
    for m in &input {
        assert!(all.contains_key(m), "lost: {m:?}");
    }
    assert_eq!(ps.unacked(SUB), 0);
    // nothing acked twice: each message acked once, after its first durable write
    assert_eq!(ps.acked(SUB).len(), input.len());
}

#[test]
fn expired_leases_redeliver_and_stale_acks_are_ignored() {
    let input = sample_messages(40);
    let ps = double_with(&input);
    let expired = Arc::new(AtomicUsize::new(0));
    let (p2, e2) = (ps.clone(), expired.clone());
    let out = MemorySink::<Message>::new();
    let o = out.clone();
    let source = PubsubSource::memory(&ps, SUB).exit_when_idle(idle());
    TestPipeline::new()
        .epoch_bounds(EpochBounds {
            max_records: 7,
            ..EpochBounds::default()
        })
        .run(move |p| {
            let p2 = p2.clone();
            let e2 = e2.clone();
            p.read("read", source.clone())
                .inspect(move |_| {
                    // the leases of everything delivered so far expire once, mid-run
                    if e2.fetch_add(1, Ordering::SeqCst) == 10 {
                        p2.expire_leases(SUB);
                    }
                })
                .write("write", o.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(ps.unacked(SUB), 0, "every message is acked in the end");
    let written = multiset(out.records());
    for m in &input {
        assert!(written.contains_key(m), "lost: {m:?}");
    }
    // redelivered ones were written twice (at-least-once), and acked once
    assert!(written.values().sum::<usize>() > input.len());
    let acked = ps.acked(SUB);
    let mut unique = acked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), input.len());
}

#[test]
fn flow_control_bounds_what_is_outstanding() {
    let input = sample_messages(100);
    let ps = double_with(&input);
    let source = PubsubSource::memory(&ps, SUB)
        .flow_control(8, usize::MAX)
        .exit_when_idle(idle());
    let (result, out) = run_copy(&ps, source, 0, 1);
    result.unwrap();
    assert_eq!(multiset(out.records()), multiset(input));
    assert!(
        ps.max_outstanding_seen(SUB) <= 8,
        "{} outstanding against a bound of 8",
        ps.max_outstanding_seen(SUB)
    );
    assert_eq!(ps.unacked(SUB), 0);
}

#[test]
fn full_flow_control_makes_streamed_objects_close_instead_of_waiting_for_their_age() {
    // Objects that would stay open for an hour hold every outstanding message: without the
    // source saying it awaits acks, the job would stall until they reached their age.
    let input = sample_messages(200);
    let ps = double_with(&input);
    let source = PubsubSource::memory(&ps, SUB)
        .flow_control(20, usize::MAX)
        .exit_when_idle(idle());
    let store = object_store::memory::InMemory::new();
    let sink = ObjectSink::memory(store.clone(), PathTemplate::parse("out/").unwrap())
        .with_compression(Compression::None)
        .with_batch(BatchBounds {
            max_bytes: 100 << 20,
            max_records: 1_000_000,
            max_age: Duration::from_secs(3600),
        });
    let dead = MemorySink::<DeadLetter>::new();
    let d = dead.clone();
    let run = std::thread::spawn(move || {
        TestPipeline::new().run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", source.clone())
                .write("write", sink.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
    });
    // Not a speed bound: without the fix the job stalls for the objects' hour.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !run.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job stalls until its objects reach their age"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run.join().unwrap().unwrap();
    assert_eq!(ps.unacked(SUB), 0);
    assert!(ps.max_outstanding_seen(SUB) <= 20);
    assert!(dead.is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let objects = rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        metas.len()
    });
    // 200 messages through a window of 20: at least one object per window.
    assert!(objects >= 200 / 20, "{objects} objects");
}

#[test]
fn shutdown_leaves_nothing_leased_and_a_restart_reads_the_rest() {
    let input = sample_messages(60);
    let ps = double_with(&input);
    let source = PubsubSource::memory(&ps, SUB).exit_when_idle(idle());
    let out = MemorySink::<Message>::new();
    let pipeline = TestPipeline::new().epoch_bounds(EpochBounds {
        max_records: 5,
        ..EpochBounds::default()
    });
    let stop = pipeline.pipeline().shutdown_flag();
    let seen = Arc::new(AtomicUsize::new(0));
    let (o, s2, src) = (out.clone(), seen.clone(), source.clone());
    pipeline
        .run(move |p| {
            let stop = stop.clone();
            let seen = s2.clone();
            p.read("read", src.clone())
                .inspect(move |_| {
                    if seen.fetch_add(1, Ordering::SeqCst) == 12 {
                        stop.store(true, Ordering::SeqCst);
                    }
                })
                .write("write", o.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(ps.outstanding(SUB), 0, "a shutdown leaves nothing leased");
    let first = out.records();
    assert!(first.len() < input.len(), "the shutdown stopped reading");
    // what was written was acked; the rest is available again at once
    assert_eq!(ps.unacked(SUB), input.len() - ps.acked(SUB).len());
    let (result, out2) = run_copy(&ps, source, 0, 1);
    result.unwrap();
    let all = multiset(first.into_iter().chain(out2.records()));
    for m in &input {
        assert!(all.contains_key(m), "lost: {m:?}");
    }
    assert_eq!(ps.unacked(SUB), 0);
}

#[test]
fn messages_pubsub_cannot_take_become_dead_letters_with_the_source_position() {
    let mut input = sample_messages(20);
    input.push(
        Message::new("many").with_attributes(
            (0..101)
                .map(|i| (format!("a{i}"), "v".to_string()))
                .collect(),
        ),
    );
    input.push(Message::new("long").with_attribute("uri", "u".repeat(1500)));
    input.push(Message::new(vec![b'x'; 7_500_000]));
    let ps = double_with(&input);
    let source = PubsubSource::memory(&ps, SUB).exit_when_idle(idle());
    let sink = PubsubSink::memory(&ps, out_template());
    let dead = MemorySink::<DeadLetter>::new();
    let d = dead.clone();
    TestPipeline::new()
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", source.clone())
                .write("write", sink.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    let published: Vec<Message> = ps.published(OUT).iter().map(|p| p.message()).collect();
    assert_eq!(multiset(published), multiset(input[..20].to_vec()));
    let dead = dead.records();
    assert_eq!(dead.len(), 3);
    let reasons: Vec<&str> = dead.iter().map(|d| d.error_message.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("101 attributes")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("`uri` is 1500 bytes")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("7500000 bytes")),
        "{reasons:?}"
    );
    for d in &dead {
        // never truncated: the original is kept whole
        assert!(input.contains(&d.original));
        let attributes = d.to_message().attributes;
        assert_eq!(
            attributes.get("pubsub_subscription").map(String::as_str),
            Some(SUB)
        );
        assert!(attributes.contains_key("pubsub_message_id"));
        assert!(attributes.contains_key("pubsub_publish_time"));
        assert_eq!(
            attributes
                .get("pubsub_delivery_attempt")
                .map(String::as_str),
            Some("1")
        );
        assert!(
            d.exception_class.contains("PubsubRefusal"),
            "{}",
            d.exception_class
        );
    }
    assert_eq!(
        ps.unacked(SUB),
        0,
        "refused messages are dead-lettered, then acked"
    );
}

#[test]
fn a_publish_failure_stops_the_job_without_acking_its_input() {
    let input = sample_messages(30);
    let ps = double_with(&input);
    ps.fail_publishes(1_000);
    let source = PubsubSource::memory(&ps, SUB).exit_when_idle(idle());
    let sink = PubsubSink::memory(&ps, out_template());
    let s2 = sink.clone();
    let src = source.clone();
    let result = TestPipeline::new().run(move |p| {
        let mut dl = p.dead_letters();
        p.read("read", src.clone())
            .write("write", s2.clone())
            .failures_to(&mut dl);
        dl.write("dead_letters", MemorySink::<DeadLetter>::new());
        Ok(())
    });
    let err = sluice::chain(&result.unwrap_err());
    assert!(err.contains("service is unavailable"), "{err}");
    assert!(ps.acked(SUB).is_empty());
    assert_eq!(ps.outstanding(SUB), 0);
    assert_eq!(ps.unacked(SUB), input.len());

    ps.fail_publishes(0);
    let src = source.clone();
    TestPipeline::new()
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", src.clone())
                .write("write", sink.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", MemorySink::<DeadLetter>::new());
            Ok(())
        })
        .unwrap();
    let published: Vec<Message> = ps.published(OUT).iter().map(|p| p.message()).collect();
    assert_eq!(multiset(published), multiset(input));
    assert_eq!(ps.unacked(SUB), 0);
}

#[test]
fn the_sink_takes_dead_letters_in_message_form() {
    let ps = double_with(&[]);
    let sink = PubsubSink::memory(&ps, out_template());
    let letters = vec![DeadLetter::new(
        Message::new("bad").with_attribute("uri", "/x"),
        "ParseUri",
        sluice::Failure::new("no"),
    )];
    TestPipeline::new()
        .run(move |p| {
            let mut dl = p.dead_letters();
            dl.push(p.read("read", MemorySource::from(letters.clone())));
            dl.write_messages("dead_letters", sink.clone());
            Ok(())
        })
        .unwrap();
    let published = ps.published(OUT);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].data, "bad");
    assert_eq!(
        published[0]
            .attributes
            .get("error_type")
            .map(String::as_str),
        Some("ParseUri")
    );
}

#[test]
fn a_templated_topic_that_does_not_exist_is_a_dead_letter_per_record() {
    let input: Vec<Message> = (0..12)
        .map(|i| {
            Message::new(format!("m{i}")).with_attribute("document_type", ["out", "nowhere"][i % 2])
        })
        .collect();
    let ps = double_with(&input);
    let source = PubsubSource::memory(&ps, SUB).exit_when_idle(idle());
    let template = PathTemplate::parse("projects/p/topics/${document_type:-x}").unwrap();
    let sink = PubsubSink::memory(&ps, template);
    let dead = MemorySink::<DeadLetter>::new();
    let d = dead.clone();
    TestPipeline::new()
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", source.clone())
                .write("write", sink.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", d.clone());
            Ok(())
        })
        .unwrap();
    let published: Vec<Message> = ps.published(OUT).iter().map(|p| p.message()).collect();
    assert_eq!(
        multiset(published),
        multiset(input.iter().step_by(2).cloned())
    );
    let dead = dead.records();
    assert_eq!(
        multiset(dead.iter().map(|d| d.original.clone())),
        multiset(input.iter().skip(1).step_by(2).cloned())
    );
    for d in &dead {
        assert!(
            d.error_message
                .contains("the topic `projects/p/topics/nowhere` does not exist"),
            "{}",
            d.error_message
        );
    }
    assert_eq!(ps.unacked(SUB), 0);
}

#[test]
fn the_check_on_the_double_names_a_missing_subscription_or_fixed_topic() {
    use sluice::{Sink, Source};
    let ps = double_with(&[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ctx = sluice::CheckContext::new(runtime.handle().clone());
    let missing = "projects/p/subscriptions/none";
    assert!(PubsubSource::memory(&ps, SUB).check(&ctx).is_ok());
    let e = PubsubSource::memory(&ps, missing).check(&ctx).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("the subscription `{missing}` does not exist")
    );
    assert!(PubsubSink::memory(&ps, out_template()).check(&ctx).is_ok());
    let none = PathTemplate::parse("projects/p/topics/none").unwrap();
    let e = PubsubSink::memory(&ps, none).check(&ctx).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the topic `projects/p/topics/none` does not exist"
    );
    // a templated topic is known per record only: the check passes
    let templated = PathTemplate::parse("projects/p/topics/${x:-none}").unwrap();
    assert!(PubsubSink::memory(&ps, templated).check(&ctx).is_ok());
}
