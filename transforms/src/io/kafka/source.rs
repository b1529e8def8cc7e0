//! The Kafka source: one consumer-group member per worker, a poll thread each, offsets
//! committed through the epoch ledger.

// Readers yield `Result<Message, DeadLetter>`, the framing-failure form the file source uses.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice::{
    BoxError, CheckContext, Epoch, EpochLedger, PartitionPosition, PositionKind, ReadState,
    ReadStatus, Source, SourceContext, SourcePosition, SourceReader, SourceWaker,
};

use super::{decode_record, KafkaError, KafkaSourceConfig, METADATA_TIMEOUT};
use crate::io::file::{record_bytes, ReadResult};

/// A topic and a partition number.
type Partition = (Arc<str>, i32);

/// How long one poll of the consumer waits: the poll thread's reaction time to a stop, and
/// how long a durable offset waits at most before its commit is sent.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long the poll thread waits before committing again after a commit failed.
const COMMIT_RETRY: Duration = Duration::from_secs(1);
/// How often librdkafka reports its statistics (`statistics.interval.ms`, unless the options
/// set it): the partitions' high watermarks (the lag on the metrics endpoint) come from there,
/// with no request of their own.
const STATISTICS_INTERVAL_MS: &str = "2000";

/// Reads Kafka topics as a consumer group; see the [module docs](super).
///
/// Clones share the end offsets of a bounded source (`stop_at_end`): build it once and clone
/// it into the pipeline closure.
#[derive(Clone)]
pub struct KafkaSource {
    config: Arc<KafkaSourceConfig>,
    ends: Arc<Mutex<Option<Arc<EndOffsets>>>>,
}

impl KafkaSource {
    /// A source reading what `config` says.
    pub fn new(config: KafkaSourceConfig) -> Self {
        KafkaSource {
            config: Arc::new(config),
            ends: Arc::default(),
        }
    }

    /// The config.
    pub fn config(&self) -> &KafkaSourceConfig {
        &self.config
    }

    /// The end offsets of a bounded source, looked up once for all workers.
    fn end_offsets(&self, job: &str) -> Result<Arc<EndOffsets>, KafkaError> {
        let mut slot = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ends) = slot.as_ref() {
            return Ok(ends.clone());
        }
        let ends = Arc::new(EndOffsets::look_up(&self.config, job)?);
        *slot = Some(ends.clone());
        Ok(ends)
    }
}

fn unreachable(config: &KafkaSourceConfig, e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Unreachable {
        brokers: config.brokers.clone(),
        reason: e.to_string(),
    }
}

/// The partitions of `topics` (each must exist), looked up with `consumer`.
fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    config: &KafkaSourceConfig,
) -> Result<Vec<(String, i32)>, KafkaError> {
    let mut out = Vec::new();
    for topic in &config.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| unreachable(config, e))?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| KafkaError::NoTopic(topic.clone()))?;
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(KafkaError::NoTopic(topic.clone()));
        }
        out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
    }
    Ok(out)
}

/// Where a bounded source stops: per partition, the end offset when the job started.
struct EndOffsets {
    ends: BTreeMap<Partition, i64>,
    /// Partitions with nothing to read (committed at their end, or empty).
    empty: BTreeSet<Partition>,
}

impl EndOffsets {
    fn look_up(config: &KafkaSourceConfig, job: &str) -> Result<Self, KafkaError> {
        let mut client = config.client_config(job, 0);
        client.remove("group.instance.id");
        let consumer: BaseConsumer = client
            .create()
            .map_err(|e| KafkaError::Client(e.to_string()))?;
        let partitions = partitions_of(&consumer, config)?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &partitions {
            tpl.add_partition(t, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, METADATA_TIMEOUT)
            .map_err(|e| unreachable(config, e))?;
        let mut ends = BTreeMap::new();
        let mut empty = BTreeSet::new();
        for (t, p) in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&t, p, METADATA_TIMEOUT)
                .map_err(|e| unreachable(config, e))?;
            let from = match committed.find_partition(&t, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            let key: Partition = (Arc::from(t.as_str()), p);
            if from >= high || high <= low {
                empty.insert(key.clone());
            }
            ends.insert(key, high);
        }
        Ok(EndOffsets { ends, empty })
    }

    fn is_past_end(&self, partition: &Partition, offset: i64) -> bool {
        self.ends.get(partition).is_none_or(|end| offset >= *end)
    }
}

/// A bounded reader's partitions and those it has not read to their end yet.
struct Bounded {
    ends: Arc<EndOffsets>,
    unreached: BTreeSet<Partition>,
}

impl Source for KafkaSource {
    type Output = ReadResult;

    fn kind(&self) -> &str {
        "kafka"
    }

    fn describe(&self) -> String {
        self.config.topics.join(",")
    }

    /// Asks the brokers for the topics' metadata: unreachable brokers or a missing topic fail
    /// here, before any record is read.
    fn check(&self, _ctx: &CheckContext) -> Result<(), BoxError> {
        let mut client = self.config.client_config("check", 0);
        client.remove("group.instance.id");
        let consumer: BaseConsumer = client
            .create()
            .map_err(|e| KafkaError::Client(e.to_string()))?;
        partitions_of(&consumer, &self.config)?;
        Ok(())
    }

    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<ReadResult>>, BoxError> {
        let ends = if self.config.stop_at_end {
            Some(self.end_offsets(ctx.job_name())?)
        } else {
            None
        };
        let mut bounded = None;
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            stop: AtomicBool::new(false),
            waker: ctx.waker(),
            config: self.config.clone(),
        });
        let mut client = self
            .config
            .client_config(ctx.job_name(), ctx.worker_index());
        if !self.config.options.contains_key("statistics.interval.ms") {
            client.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        }
        let consumer: BaseConsumer<PollContext> = client
            .create_with_context(PollContext {
                shared: shared.clone(),
            })
            .map_err(|e| KafkaError::Client(e.to_string()))?;
        match &ends {
            // A bounded read knows its partitions up front: they are shared out as files are
            // (partition i to worker i % peers, over the workers of every process) and resume
            // at the group's committed offsets, with no group membership, so no rebalance can
            // make a worker read twice. Each worker ends when its own partitions are read.
            Some(ends) => {
                let mut tpl = TopicPartitionList::new();
                let mut inner = shared.lock();
                for (i, key) in ends.ends.keys().enumerate() {
                    if i % ctx.peers().max(1) == ctx.worker_index() {
                        tpl.add_partition_offset(&key.0, key.1, Offset::Stored)
                            .map_err(|e| KafkaError::Client(e.to_string()))?;
                        inner.owned.insert(key.clone());
                    }
                }
                let unreached = inner
                    .owned
                    .iter()
                    .filter(|p| !ends.empty.contains(*p))
                    .cloned()
                    .collect();
                drop(inner);
                bounded = Some(Bounded {
                    ends: ends.clone(),
                    unreached,
                });
                consumer
                    .assign(&tpl)
                    .map_err(|e| KafkaError::Client(e.to_string()))?;
            }
            None => {
                let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&topics)
                    .map_err(|e| KafkaError::Client(e.to_string()))?;
            }
        }
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-poll-{}", ctx.worker_index()))
            .spawn(move || poll_loop(consumer, s))?;
        Ok(Box::new(KafkaReader {
            shared,
            thread: Some(thread),
            ledger: EpochLedger::new(),
            bounded,
        }))
    }
}

/// A record the poll thread read, waiting for the reader.
struct Polled {
    partition: Partition,
    offset: i64,
    record: ReadResult,
    bytes: usize,
}

/// What a reader and its poll thread share.
struct Shared {
    inner: Mutex<Inner>,
    stop: AtomicBool,
    waker: SourceWaker,
    config: Arc<KafkaSourceConfig>,
}

/// What a reader and its poll thread share: the records polled, and the offset commits.
///
/// Offsets are "the next to read". For every partition the worker owns and has read from in
/// its current assignment, `confirmed <= latest`: what the broker confirmed committed (or
/// where reading started: everything before it was committed already), and what every sink
/// made durable. The poll thread commits synchronously, so `confirmed` is what a crash now
/// would resume from.
#[derive(Default)]
struct Inner {
    records: VecDeque<Polled>,
    bytes: usize,
    /// The partitions this member owns now.
    owned: BTreeSet<Partition>,
    /// Per partition read in the current assignment: the committed offset the broker
    /// confirmed, or the first offset read.
    confirmed: BTreeMap<Partition, i64>,
    /// Per partition: the offset every sink made durable, when past `confirmed`.
    latest: BTreeMap<Partition, i64>,
    /// Per partition read in the current assignment: the next offset handed to the pipeline.
    position: BTreeMap<Partition, i64>,
    /// Per owned partition not read yet: the group's committed offset, as librdkafka says.
    committed: BTreeMap<Partition, i64>,
    /// Per owned partition: its high watermark, as librdkafka's statistics last said.
    high: BTreeMap<Partition, i64>,
    /// The reader handed out nothing for want of commits: wake it when one is confirmed.
    gated: bool,
    error: Option<KafkaError>,
    /// The partitions are paused (backpressure).
    paused: bool,
    /// The assignment changed: pause or resume it afresh.
    reassigned: bool,
}

impl Inner {
    /// Offsets durable in every sink whose commit the broker has not confirmed: what a crash
    /// now would read again beyond the records in flight.
    fn uncommitted(&self) -> usize {
        self.latest
            .iter()
            .map(|(p, o)| {
                let confirmed = self.confirmed.get(p).copied().unwrap_or(*o);
                usize::try_from(o - confirmed).unwrap_or(0)
            })
            .sum()
    }

    /// The broker confirmed the commit of `offsets`; true if the reader waits for that.
    fn confirm(&mut self, offsets: &BTreeMap<Partition, i64>) -> bool {
        for (p, o) in offsets {
            // a partition revoked meanwhile is forgotten
            if let Some(c) = self.confirmed.get_mut(p) {
                *c = (*c).max(*o);
            }
            if self.latest.get(p).is_some_and(|l| l <= o) {
                self.latest.remove(p);
            }
        }
        std::mem::take(&mut self.gated)
    }

    /// Forgets a partition this member no longer owns.
    fn disown(&mut self, p: &Partition) {
        self.owned.remove(p);
        self.confirmed.remove(p);
        self.latest.remove(p);
        self.position.remove(p);
        self.committed.remove(p);
        self.high.remove(p);
    }

    /// Per owned partition: the position (the next offset the pipeline reads), the committed
    /// offset and the lag (the high watermark minus the position), as far as known.
    fn positions(&self) -> Vec<PartitionPosition> {
        let mut out = Vec::new();
        for p in &self.owned {
            let name = format!("{}/{}", p.0, p.1);
            let committed = self
                .confirmed
                .get(p)
                .or_else(|| self.committed.get(p))
                .copied();
            let position = self.position.get(p).copied().or(committed);
            if let Some(o) = position {
                out.push(PartitionPosition::new(&name, PositionKind::Offset, o));
            }
            if let Some(c) = committed {
                out.push(PartitionPosition::new(&name, PositionKind::Committed, c));
            }
            if let (Some(o), Some(h)) = (position, self.high.get(p)) {
                out.push(PartitionPosition::new(
                    &name,
                    PositionKind::Lag,
                    (h - o).max(0),
                ));
            }
        }
        out
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn full(&self, inner: &Inner) -> bool {
        inner.records.len() >= self.config.max_buffered_records
            || inner.bytes >= self.config.max_buffered_bytes
    }

    fn low(&self, inner: &Inner) -> bool {
        inner.records.len() <= self.config.max_buffered_records / 2
            && inner.bytes <= self.config.max_buffered_bytes / 2
    }
}

/// The consumer's callbacks: they run on the poll thread, inside `poll`.
struct PollContext {
    shared: Arc<Shared>,
}

impl ClientContext for PollContext {
    /// librdkafka's statistics: the high watermark of each owned partition (from its fetch
    /// responses) and the group's committed offset of those not read yet.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut inner = self.shared.lock();
        let inner = &mut *inner;
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition
                let key: Partition = (Arc::from(name.as_str()), *id);
                if *id < 0 || !inner.owned.contains(&key) {
                    continue;
                }
                if p.hi_offset >= 0 {
                    inner.high.insert(key.clone(), p.hi_offset);
                }
                if p.committed_offset >= 0 && !inner.confirmed.contains_key(&key) {
                    inner.committed.insert(key, p.committed_offset);
                }
            }
        }
    }
}

impl ConsumerContext for PollContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked: BTreeSet<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let is_revoked = |p: &Partition| revoked.contains(&(p.0.to_string(), p.1));
        let durable: BTreeMap<Partition, i64> = {
            let mut inner = self.shared.lock();
            let inner = &mut *inner;
            // what the pipeline has not taken yet is the new owner's to read
            let before = inner.records.len();
            inner.records.retain(|r| !is_revoked(&r.partition));
            inner.bytes = inner.records.iter().map(|r| r.bytes).sum();
            let dropped = before - inner.records.len();
            let durable = inner
                .latest
                .iter()
                .filter(|(p, _)| is_revoked(p))
                .map(|(p, o)| (p.clone(), *o))
                .collect();
            let gone: Vec<Partition> = inner
                .owned
                .iter()
                .filter(|p| is_revoked(p))
                .cloned()
                .collect();
            for p in &gone {
                inner.disown(p);
            }
            inner.reassigned = true;
            tracing::info!(
                partitions = revoked.len(),
                dropped,
                "kafka partitions revoked: durable offsets committed, unread records left to the new owner"
            );
            durable
        };
        // only what every sink made durable, while this member still owns the partitions
        if let Err(e) = commit(consumer, &durable, CommitMode::Sync) {
            tracing::warn!(error = %e, "kafka offset commit at revocation failed: the new owner reads those records again");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut inner = self.shared.lock();
            for e in tpl.elements() {
                inner.owned.insert((Arc::from(e.topic()), e.partition()));
            }
            inner.reassigned = true;
            tracing::info!(partitions = tpl.count(), "kafka partitions assigned");
        }
    }
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &BTreeMap<Partition, i64>,
    mode: CommitMode,
) -> KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, mode)
}

/// Pauses the assignment when the buffer is full, resumes it when it has drained to half.
fn backpressure(consumer: &BaseConsumer<PollContext>, shared: &Shared) {
    let (pause, resume) = {
        let mut inner = shared.lock();
        let full = shared.full(&inner);
        let low = shared.low(&inner);
        let reassigned = std::mem::take(&mut inner.reassigned);
        let pause = full && (!inner.paused || reassigned);
        let resume = !full && (inner.paused && low || reassigned);
        if pause {
            inner.paused = true;
        } else if resume {
            inner.paused = false;
        }
        (pause, resume)
    };
    if !(pause || resume) {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "cannot pause or resume kafka partitions");
    }
}

/// The partitions this member owns now.
fn assigned<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> BTreeSet<(String, i32)> {
    consumer
        .assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect()
        })
        .unwrap_or_default()
}

fn poll_loop(consumer: BaseConsumer<PollContext>, shared: Arc<Shared>) {
    let mut topics: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut retry_at = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        // Synchronously, so the reader knows what is confirmed (see `Inner`). `latest` holds
        // only partitions this member owns: a revoked one is the new owner's to commit.
        let pending = shared.lock().latest.clone();
        if !pending.is_empty() && Instant::now() >= retry_at {
            match commit(&consumer, &pending, CommitMode::Sync) {
                Ok(()) => {
                    if shared.lock().confirm(&pending) {
                        shared.waker.wake();
                    }
                }
                Err(e) => {
                    // durable offsets stay in `latest`: committed with the next attempt
                    tracing::warn!(error = %e, "kafka offset commit failed: trying again");
                    retry_at = Instant::now() + COMMIT_RETRY;
                }
            }
        }
        backpressure(&consumer, &shared);
        match consumer.poll(POLL_WAIT) {
            None => {}
            Some(Ok(m)) => {
                let topic = match topics.get(m.topic()) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(m.topic());
                        topics.insert(m.topic().to_string(), t.clone());
                        t
                    }
                };
                let position = SourcePosition::Kafka {
                    topic: topic.clone(),
                    partition: m.partition(),
                    offset: m.offset(),
                };
                let headers: Vec<(Option<&str>, Option<&[u8]>)> = m
                    .headers()
                    .map(|h| h.iter().map(|h| (Some(h.key), h.value)).collect())
                    .unwrap_or_default();
                let record = decode_record(shared.config.format, m.payload(), headers, position);
                let bytes = record_bytes(&record);
                let was_empty = {
                    let mut inner = shared.lock();
                    let was_empty = inner.records.is_empty();
                    inner.bytes += bytes;
                    inner.records.push_back(Polled {
                        partition: (topic, m.partition()),
                        offset: m.offset(),
                        record,
                        bytes,
                    });
                    was_empty
                };
                if was_empty {
                    shared.waker.wake();
                }
            }
            Some(Err(e)) => {
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                    shared.lock().error = Some(KafkaError::Consumer(e.to_string()));
                    shared.waker.wake();
                    break;
                }
                tracing::warn!(error = %e, "kafka consumer");
            }
        }
    }
    // Commit what is durable for the partitions still owned, then leave the group (dropping
    // the consumer closes it; the revocation commits nothing more).
    let assigned = assigned(&consumer);
    let last: BTreeMap<Partition, i64> = std::mem::take(&mut shared.lock().latest)
        .into_iter()
        .filter(|(p, _)| assigned.contains(&(p.0.to_string(), p.1)))
        .collect();
    if let Err(e) = commit(&consumer, &last, CommitMode::Sync) {
        tracing::warn!(error = %e, "kafka offset commit at close failed: those records will be read again");
    }
    drop(consumer);
}

/// One worker's consumer-group member (see [`KafkaSource`]).
pub struct KafkaReader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    ledger: EpochLedger<Partition, i64>,
    bounded: Option<Bounded>,
}

impl KafkaReader {
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the kafka poll thread panicked");
            }
        }
    }
}

impl SourceReader<ReadResult> for KafkaReader {
    fn read(
        &mut self,
        out: &mut Vec<ReadResult>,
        max_records: usize,
    ) -> Result<ReadStatus, BoxError> {
        if self
            .bounded
            .as_ref()
            .is_some_and(|b| b.unreached.is_empty())
        {
            // what is left here is past the end
            return Ok(ReadStatus::new(0, ReadState::Exhausted));
        }
        let mut bytes = 0;
        let (remaining, gated) = {
            let mut inner = self.shared.lock();
            if let Some(e) = inner.error.clone() {
                return Err(Box::new(e));
            }
            // Bounds what a crash reads again: records in flight (the pipeline's bound) plus
            // durable offsets whose commit is not confirmed (this one).
            let gated = inner.uncommitted() > self.shared.config.max_uncommitted_records;
            inner.gated = gated;
            let mut taken = 0;
            while !gated && taken < max_records {
                let Some(p) = inner.records.pop_front() else {
                    break;
                };
                inner.bytes -= p.bytes;
                if let Some(b) = &mut self.bounded {
                    if b.ends.is_past_end(&p.partition, p.offset) {
                        continue;
                    }
                    if b.ends.is_past_end(&p.partition, p.offset + 1) {
                        b.unreached.remove(&p.partition);
                    }
                }
                inner
                    .confirmed
                    .entry(p.partition.clone())
                    .or_insert(p.offset);
                inner.position.insert(p.partition.clone(), p.offset + 1);
                self.ledger.record(p.partition, p.offset + 1);
                bytes += p.bytes;
                taken += 1;
                out.push(p.record);
            }
            (inner.records.len(), gated)
        };
        let state = match &self.bounded {
            Some(b) if b.unreached.is_empty() => ReadState::Exhausted,
            // woken by the commit callback
            _ if gated => ReadState::Idle,
            _ if remaining > 0 => ReadState::More,
            _ => ReadState::Idle,
        };
        Ok(ReadStatus::new(bytes, state))
    }

    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }

    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        let advanced = self.ledger.ack(done);
        if !advanced.is_empty() {
            let mut inner = self.shared.lock();
            for (p, offset) in advanced {
                // Only partitions read in the current assignment: a revoked one is its new
                // owner's to commit, and an old epoch's offset must not move a commit back.
                if inner.confirmed.get(&p).is_some_and(|c| offset > *c) {
                    let latest = inner.latest.entry(p).or_insert(offset);
                    *latest = (*latest).max(offset);
                }
            }
        }
        Ok(())
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        self.shared.lock().positions()
    }

    /// Commits what is durable and leaves the group. A consumer failure was already
    /// reported by `read`.
    fn close(&mut self) -> Result<(), BoxError> {
        self.stop();
        Ok(())
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("t"), n)
    }

    #[test]
    fn uncommitted_counts_durable_offsets_the_broker_has_not_confirmed() {
        let mut inner = Inner::default();
        for n in [0, 1] {
            inner.owned.insert(p(n));
        }
        // reading started at 100 on partition 0 and at 7 on partition 1
        inner.confirmed.insert(p(0), 100);
        inner.confirmed.insert(p(1), 7);
        assert_eq!(inner.uncommitted(), 0);
        inner.latest.insert(p(0), 150);
        inner.latest.insert(p(1), 10);
        assert_eq!(inner.uncommitted(), 53);

        // a commit of what was durable before more was: partly confirmed
        inner.gated = true;
        assert!(
            inner.confirm(&[(p(0), 120)].into()),
            "the waiting reader is woken"
        );
        assert_eq!(inner.uncommitted(), 33);
        assert!(!inner.confirm(&[(p(0), 150), (p(1), 10)].into()));
        assert_eq!(inner.uncommitted(), 0);
        assert!(inner.latest.is_empty(), "nothing left to commit");
    }

    #[test]
    fn positions_say_offset_committed_offset_and_lag_of_owned_partitions() {
        let mut inner = Inner::default();
        for n in [0, 1, 2] {
            inner.owned.insert(p(n));
        }
        // partition 0 read up to 150 of 200, committed at 120; partition 1 not read yet,
        // committed at 7 of 10; partition 2: nothing known yet
        inner.confirmed.insert(p(0), 120);
        inner.position.insert(p(0), 150);
        inner.high.insert(p(0), 200);
        inner.committed.insert(p(1), 7);
        inner.high.insert(p(1), 10);
        let got: Vec<(String, PositionKind, i64)> = inner
            .positions()
            .into_iter()
            .map(|p| (p.partition, p.kind, p.value))
            .collect();
        let want = |part: &str, kind, value| (part.to_string(), kind, value);
        assert_eq!(
            got,
            vec![
                want("t/0", PositionKind::Offset, 150),
                want("t/0", PositionKind::Committed, 120),
                want("t/0", PositionKind::Lag, 50),
                want("t/1", PositionKind::Offset, 7),
                want("t/1", PositionKind::Committed, 7),
                want("t/1", PositionKind::Lag, 3),
            ]
        );
        inner.disown(&p(0));
        assert!(inner.positions().iter().all(|p| p.partition != "t/0"));
    }

    #[test]
    fn a_revoked_partition_is_forgotten_and_a_late_confirmation_ignored() {
        let mut inner = Inner::default();
        inner.owned.insert(p(0));
        inner.confirmed.insert(p(0), 0);
        inner.latest.insert(p(0), 40);
        inner.disown(&p(0));
        assert_eq!(inner.uncommitted(), 0, "the new owner's to commit");
        inner.confirm(&[(p(0), 40)].into());
        assert!(inner.confirmed.is_empty() && inner.latest.is_empty());
    }
}
