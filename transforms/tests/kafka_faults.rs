//! Faults on librdkafka's mock cluster: produce requests that fail, a broker that goes down
//! while the sink writes or the source reads. The job waits and recovers, or stops with a
//! clear error, and never acknowledges what is not written.

mod kafka_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_support::{committed, end_offsets, produce, read_back, unique, Broker};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sluice::{
    DeadLetter, EpochBounds, InFlightBounds, MemorySink, MemorySource, Message, Pipeline,
};
use sluice_transforms::io::kafka::{KafkaSinkConfig, KafkaSourceConfig};
use sluice_transforms::io::object::PathTemplate;

/// The mock cluster's only broker.
const BROKER_ID: i32 = 1;

fn input(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::new(format!("{{\"n\":{i}}}")).with_attribute("n", i.to_string()))
        .collect()
}

fn mock() -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    match Broker::mock() {
        Broker::Mock(m) => m,
        Broker::Real(_) => unreachable!(),
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn produce_request_errors_are_retried_and_every_record_lands() {
    let cluster = mock();
    let topic = unique("errors");
    cluster.create_topic(&topic, 2, 1).unwrap();
    // retriable errors: librdkafka retries them
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let brokers = cluster.bootstrap_servers();
    let sink = KafkaSinkConfig::new(&brokers, PathTemplate::parse(&topic).unwrap()).sink();
    let records = input(200);
    let source = MemorySource::from(records.clone());
    let (s, k) = (source.clone(), sink.clone());
    Pipeline::new("faults")
        .run(move |p| {
            let mut dl = p.dead_letters();
            p.read("read", s.clone())
                .write("write", k.clone())
                .failures_to(&mut dl);
            dl.write("dead_letters", MemorySink::<DeadLetter>::new());
            Ok(())
        })
        .unwrap();
    assert!(source.all_acked());
    let written: BTreeSet<Message> = read_back(&brokers, &topic).into_iter().collect();
    assert_eq!(written, records.into_iter().collect());
}

#[test]
fn a_broker_down_while_writing_stops_the_job_and_acknowledges_only_what_was_written() {
    let cluster = mock();
    let topic = unique("down");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut config = KafkaSinkConfig::new(&brokers, PathTemplate::parse(&topic).unwrap());
    config.message_timeout = Duration::from_millis(1500);
    config.delivery_retries = 1;
    config.retry_backoff = Duration::from_millis(100);
    let sink = config.sink();
    let records = input(3000);
    let source = MemorySource::from_epochs(records.chunks(10).map(<[Message]>::to_vec).collect());
    let (s, k) = (source.clone(), sink.clone());
    let run = std::thread::spawn(move || {
        Pipeline::new("faults")
            .in_flight_bounds(InFlightBounds {
                max_epochs: 2,
                ..InFlightBounds::default()
            })
            .run(move |p| {
                let mut dl = p.dead_letters();
                p.read("read", s.clone())
                    .write("write", k.clone())
                    .failures_to(&mut dl);
                dl.write("dead_letters", MemorySink::<DeadLetter>::new());
                Ok(())
            })
    });
    wait_for("some acknowledged epochs", || source.acked().len() >= 50);
    cluster.broker_down(BROKER_ID).unwrap();
    let result = run.join().unwrap();
    let error = sluice::chain(&result.expect_err("a run whose broker is gone fails"));
    assert!(
        error.contains("kafka delivery of") && error.contains("failed after 2 attempt(s)"),
        "{error}"
    );
    assert!(
        !source.all_acked(),
        "the failed epochs are not acknowledged"
    );
    cluster.broker_up(BROKER_ID).unwrap();
    let written: BTreeSet<Message> = read_back(&brokers, &topic).into_iter().collect();
    let acked = source.acked();
    assert!(acked.len() >= 50);
    for r in &acked {
        assert!(written.contains(r), "acknowledged but not written: {r:?}");
    }
    eprintln!(
        "broker down: {} acknowledged, {} written, error: {error}",
        acked.len(),
        written.len()
    );
}

#[test]
fn a_broker_down_while_reading_is_waited_out() {
    let cluster = mock();
    let topic = unique("read-down");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let records = input(3000);
    produce(&brokers, &topic, &records);
    let group = unique("group");
    let mut config = KafkaSourceConfig::new(&brokers, &[topic.as_str()], &group);
    config.stop_at_end = true;
    let source = config.source();
    let out = MemorySink::<Message>::new();
    let o = out.clone();
    let run = std::thread::spawn(move || {
        Pipeline::new("faults")
            .epoch_bounds(EpochBounds {
                max_records: 20,
                ..EpochBounds::default()
            })
            .in_flight_bounds(InFlightBounds {
                max_epochs: 2,
                ..InFlightBounds::default()
            })
            .run(move |p| {
                let mut dl = p.dead_letters();
                p.read_with_failures("read", source.clone())
                    .failures_to(&mut dl)
                    .write("write", o.clone());
                dl.write("dead_letters", MemorySink::<DeadLetter>::new());
                Ok(())
            })
    });
    wait_for("some records", || out.len() >= 100);
    cluster.broker_down(BROKER_ID).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.broker_up(BROKER_ID).unwrap();
    run.join()
        .unwrap()
        .expect("the job recovers once the broker is back");
    let written: BTreeSet<Message> = out.records().into_iter().collect();
    assert_eq!(written.len(), records.len());
    assert_eq!(written, records.into_iter().collect());
    assert_eq!(
        committed(&brokers, &group, &topic, 2),
        end_offsets(&brokers, &topic, 2)
    );
}

/// Writes to a memory sink; its first write stalls for a while (a sink far slower than the
/// source, for once).
#[derive(Clone)]
struct StallingSink {
    inner: MemorySink<Message>,
    stall: Duration,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl sluice::Sink for StallingSink {
    type Input = Message;
    fn kind(&self) -> &str {
        "stalling"
    }
    fn open(
        &self,
        _: &sluice::SinkContext,
    ) -> Result<Box<dyn sluice::SinkWriter<Message>>, sluice::BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl sluice::SinkWriter<Message> for StallingSink {
    fn write(
        &mut self,
        epoch: sluice::Epoch,
        records: Vec<Message>,
    ) -> sluice::WriteFuture<Message> {
        let write = sluice::SinkWriter::write(&mut self.inner, epoch, records);
        let first = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 0;
        let stall = if first { self.stall } else { Duration::ZERO };
        Box::pin(async move {
            tokio::time::sleep(stall).await;
            write.await
        })
    }
}

/// The pipeline holds the source back longer than `max.poll.interval.ms` (the first write
/// stalls 9 s, one epoch in flight): the poll thread pauses the partitions and keeps
/// polling, so the member never leaves the group, no rebalance re-reads anything, and every
/// record arrives exactly once. (A consumer that stopped polling while held back would be
/// dropped from the group after 6 s and read its in-flight records again.)
#[test]
fn backpressure_pauses_partitions_and_the_member_stays_in_the_group() {
    let cluster = mock();
    let topic = unique("slow");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let records = input(400);
    produce(&brokers, &topic, &records);
    let mut config = KafkaSourceConfig::new(&brokers, &[topic.as_str()], unique("group"));
    config.max_buffered_records = 20;
    config.session_timeout = Some(Duration::from_secs(6));
    config
        .options
        .insert("max.poll.interval.ms".to_string(), "6000".to_string());
    let source = config.source();
    let out = MemorySink::<Message>::new();
    let sink = StallingSink {
        inner: out.clone(),
        stall: Duration::from_secs(9),
        writes: Default::default(),
    };
    let pipeline = Pipeline::new("slow")
        .epoch_bounds(EpochBounds {
            max_records: 20,
            ..EpochBounds::default()
        })
        .in_flight_bounds(InFlightBounds {
            max_epochs: 1,
            ..InFlightBounds::default()
        });
    let stop = pipeline.shutdown_flag();
    let run = std::thread::spawn(move || {
        pipeline.run(move |p| {
            let mut dl = p.dead_letters();
            p.read_with_failures("read", source.clone())
                .failures_to(&mut dl)
                .write("write", sink.clone());
            dl.write("dead_letters", MemorySink::<DeadLetter>::new());
            Ok(())
        })
    });
    wait_for("every record", || {
        out.records().into_iter().collect::<BTreeSet<_>>().len() == records.len()
    });
    // anything read twice would arrive within a few more epochs
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    run.join()
        .unwrap()
        .expect("a stopped unbounded job ends cleanly");
    let written = out.records();
    assert_eq!(
        written.len(),
        records.len(),
        "a rebalance made the source read records twice"
    );
    assert_eq!(
        written.into_iter().collect::<BTreeSet<_>>(),
        records.into_iter().collect()
    );
}
