//! The epoch ledger: which input positions a source may acknowledge once epochs are durable.
//!
//! Every acknowledging source has the same question to answer: it read its input in epochs,
//! the runner tells it which epochs every sink made durable, and it must acknowledge (commit an
//! offset, ack a message, persist a file checkpoint) exactly the input those epochs hold and
//! nothing past it. [`EpochLedger`] answers it once for all of them.

use std::collections::{BTreeMap, VecDeque};

use crate::io::Epoch;

/// Records, per partition, the position each epoch reached, and says which position per
/// partition may be acknowledged as epochs become durable.
///
/// - A *partition* `K` is a unit of input read in order: a Kafka topic partition, a file, a
///   queue. Its *position* `P` says how far an epoch read it: the next offset, a line count, a
///   checkpoint struct. A later epoch's position of a partition supersedes an earlier one's.
/// - A position is acknowledged only when the epoch that reached it *and every earlier epoch
///   that read the same partition* are durable: acknowledgements are contiguous and never pass
///   a gap. Epochs that did not read a partition do not hold it back.
/// - Input acknowledged per message rather than per offset (Pub/Sub ack ids) uses the ack id as
///   the partition and `()` as the position: each id is read by one epoch and acknowledged when
///   that epoch is durable, whatever happens to the others.
///
/// How a [`SourceReader`](crate::SourceReader) uses it: [`EpochLedger::record`] in `read`, for
/// the records it returns; [`EpochLedger::end_epoch`] in `end_epoch`; and
/// [`EpochLedger::ack`] in `ack`, then acknowledge what it returns. Sources that learn of
/// durable epochs one at a time, in any order, call [`EpochLedger::complete`]. The ledger
/// holds only positions not yet acknowledged: its size is bounded by the epochs in flight.
///
/// ```
/// use sluice::EpochLedger;
///
/// // Kafka-like: partition -> the next offset to read.
/// let mut ledger = EpochLedger::new();
/// ledger.record("p", 20);
/// ledger.record("q", 7);
/// ledger.end_epoch(3); // epoch 3 read p up to 20 and q up to 7
/// ledger.record("p", 30);
/// ledger.end_epoch(4); // epoch 4 read p from 20 to 30
///
/// // Epoch 4 alone is durable: p cannot pass epoch 3's gap, nothing is acknowledged.
/// assert_eq!(ledger.complete(4), vec![]);
/// // Every epoch below 4 is durable: p up to 20, then (epoch 4 is durable too) up to 30.
/// assert_eq!(ledger.ack(4), vec![("p", 30), ("q", 7)]);
///
/// // Pub/Sub-like: each ack id is its own partition, acknowledged with its epoch.
/// let mut acks = EpochLedger::new();
/// acks.record("id-1", ());
/// acks.end_epoch(1);
/// acks.record("id-2", ());
/// acks.end_epoch(2);
/// assert_eq!(acks.complete(2), vec![("id-2", ())]);
/// assert_eq!(acks.complete(1), vec![("id-1", ())]);
/// assert!(acks.is_empty());
/// ```
///
/// A minimal acknowledging source built on it is in the [`io`](crate::io) module's docs.
#[derive(Clone, Debug)]
pub struct EpochLedger<K, P> {
    /// Positions reached since the last `end_epoch`.
    open: BTreeMap<K, P>,
    /// Per partition, the positions that closed, unacknowledged epochs reached, oldest first.
    partitions: BTreeMap<K, VecDeque<(Epoch, P)>>,
    /// Closed epochs with positions not yet acknowledged.
    epochs: BTreeMap<Epoch, ClosedEpoch<K>>,
    /// Every epoch below this is durable.
    durable_below: Epoch,
    /// The highest epoch closed so far.
    last_closed: Option<Epoch>,
}

#[derive(Clone, Debug)]
struct ClosedEpoch<K> {
    /// The partitions it read.
    partitions: Vec<K>,
    /// Marked durable by `complete` (epochs below `durable_below` are durable anyway).
    durable: bool,
    /// Its positions still in `partitions` queues.
    remaining: usize,
}

impl<K: Ord + Clone, P: Clone> Default for EpochLedger<K, P> {
    fn default() -> Self {
        EpochLedger {
            open: BTreeMap::new(),
            partitions: BTreeMap::new(),
            epochs: BTreeMap::new(),
            durable_below: 0,
            last_closed: None,
        }
    }
}

impl<K: Ord + Clone, P: Clone> EpochLedger<K, P> {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// The open epoch read `partition` up to `position` (replacing what it recorded for the
    /// partition before).
    pub fn record(&mut self, partition: K, position: P) {
        self.open.insert(partition, position);
    }

    /// The positions recorded since the previous call belong to `epoch`. Epochs must increase;
    /// a call with an epoch not above the last one adds to that last epoch. An epoch without
    /// positions is not kept.
    pub fn end_epoch(&mut self, epoch: Epoch) {
        if self.open.is_empty() {
            return;
        }
        let epoch = self.last_closed.map_or(epoch, |last| epoch.max(last));
        self.last_closed = Some(epoch);
        let entry = self.epochs.entry(epoch).or_insert_with(|| ClosedEpoch {
            partitions: Vec::new(),
            durable: false,
            remaining: 0,
        });
        for (partition, position) in std::mem::take(&mut self.open) {
            let queue = self.partitions.entry(partition.clone()).or_default();
            match queue.back_mut() {
                // the same epoch again (see above): its newer position replaces the older one
                Some((e, p)) if *e == epoch => *p = position,
                _ => {
                    queue.push_back((epoch, position));
                    entry.partitions.push(partition);
                    entry.remaining += 1;
                }
            }
        }
    }

    /// Every epoch below `done` is durable: returns, per partition whose acknowledgeable
    /// position advanced, the new position (sorted by partition). `Epoch::MAX` means
    /// everything recorded, including positions of the epoch not yet ended (the input ended
    /// and every sink flushed).
    pub fn ack(&mut self, done: Epoch) -> Vec<(K, P)> {
        let mut advanced = BTreeMap::new();
        if done > self.durable_below {
            let newly: Vec<Epoch> = self
                .epochs
                .range(..done)
                .filter(|(_, e)| !e.durable)
                .map(|(t, _)| *t)
                .collect();
            self.durable_below = done;
            for epoch in newly {
                self.settle(epoch, &mut advanced);
            }
        }
        if done == Epoch::MAX {
            advanced.extend(std::mem::take(&mut self.open));
        }
        advanced.into_iter().collect()
    }

    /// `epoch` alone is durable (sources told of epochs one at a time, in any order): returns
    /// what may be acknowledged now, as [`EpochLedger::ack`] does. An epoch this ledger holds
    /// no positions of is ignored.
    pub fn complete(&mut self, epoch: Epoch) -> Vec<(K, P)> {
        let mut advanced = BTreeMap::new();
        if epoch >= self.durable_below {
            if let Some(e) = self.epochs.get_mut(&epoch) {
                if !e.durable {
                    e.durable = true;
                    self.settle(epoch, &mut advanced);
                }
            }
        }
        advanced.into_iter().collect()
    }

    /// Whether nothing recorded is left unacknowledged.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.partitions.is_empty()
    }

    /// Closed epochs holding positions not yet acknowledged.
    pub fn unacknowledged_epochs(&self) -> usize {
        self.epochs.len()
    }

    fn is_durable(&self, epoch: Epoch) -> bool {
        epoch < self.durable_below || self.epochs.get(&epoch).is_some_and(|e| e.durable)
    }

    /// `epoch` became durable: advances each partition it read past every durable epoch at
    /// the head of the partition's queue. A partition held back by an earlier epoch that is
    /// not durable is advanced when that epoch is, since that epoch read it too.
    fn settle(&mut self, epoch: Epoch, advanced: &mut BTreeMap<K, P>) {
        let partitions = match self.epochs.get(&epoch) {
            Some(e) => e.partitions.clone(),
            None => return,
        };
        for partition in partitions {
            let Some(mut queue) = self.partitions.remove(&partition) else {
                continue;
            };
            while let Some(&(e, _)) = queue.front() {
                if !self.is_durable(e) {
                    break;
                }
                let Some((_, position)) = queue.pop_front() else {
                    break;
                };
                advanced.insert(partition.clone(), position);
                if let Some(closed) = self.epochs.get_mut(&e) {
                    closed.remaining -= 1;
                    if closed.remaining == 0 {
                        self.epochs.remove(&e);
                    }
                }
            }
            if !queue.is_empty() {
                self.partitions.insert(partition, queue);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn never_passes_a_gap() {
        // epoch 3 read p 10..20, epoch 4 read 20..30; epochs < 4 are durable, 4 is not
        let mut l = EpochLedger::new();
        l.record("p", 20u64);
        l.end_epoch(3);
        l.record("p", 30);
        l.end_epoch(4);
        assert_eq!(l.ack(4), vec![("p", 20)]);
        assert_eq!(l.ack(4), vec![]);
        assert_eq!(l.ack(5), vec![("p", 30)]);
        assert!(l.is_empty());
    }

    #[test]
    fn a_partition_is_held_only_by_epochs_that_read_it() {
        let mut l = EpochLedger::new();
        l.record("a", 1u64);
        l.end_epoch(1);
        l.record("b", 1);
        l.end_epoch(2);
        l.record("a", 2);
        l.end_epoch(3);
        assert_eq!(l.complete(2), vec![("b", 1)]);
        assert_eq!(l.complete(3), vec![]);
        assert_eq!(l.unacknowledged_epochs(), 2);
        assert_eq!(l.complete(1), vec![("a", 2)]);
        assert_eq!(l.unacknowledged_epochs(), 0);
    }

    #[test]
    fn max_acknowledges_the_open_epoch_too() {
        let mut l = EpochLedger::new();
        l.record(0, 5u64);
        l.end_epoch(1);
        l.record(0, 9);
        assert_eq!(l.ack(1), vec![]);
        assert_eq!(l.ack(Epoch::MAX), vec![(0, 9)]);
        assert!(l.is_empty());
    }

    #[test]
    fn a_repeated_epoch_adds_to_the_last_one() {
        let mut l = EpochLedger::new();
        l.record(0, 1u64);
        l.end_epoch(2);
        l.record(0, 2);
        l.record(1, 1);
        l.end_epoch(1);
        assert_eq!(l.complete(1), vec![]);
        assert_eq!(l.complete(2), vec![(0, 2), (1, 1)]);
        assert!(l.is_empty());
    }

    /// One step of a reader's life, as the property test drives it.
    #[derive(Clone, Debug)]
    enum Op {
        /// The open epoch reads `n` more records of partition `p`.
        Read { p: u8, n: u8 },
        /// The open epoch closes (the next one starts `gap` epochs later).
        End { gap: u8 },
        /// One closed epoch (chosen by index) becomes durable.
        Complete(usize),
        /// Every epoch below the lowest closed, non-durable one is durable.
        Frontier,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4, 1u8..5).prop_map(|(p, n)| Op::Read { p, n }),
            2 => (1u8..3).prop_map(|gap| Op::End { gap }),
            3 => any::<usize>().prop_map(Op::Complete),
            1 => Just(Op::Frontier),
        ]
    }

    /// The plain model: every closed epoch with the positions it reached, and which are durable.
    #[derive(Default)]
    struct Model {
        closed: Vec<(Epoch, BTreeMap<u8, u64>)>,
        durable: BTreeSet<Epoch>,
        durable_below: Epoch,
    }

    impl Model {
        /// Per partition, the position of the last epoch of the longest durable run of the
        /// epochs that read it.
        fn acknowledgeable(&self) -> BTreeMap<u8, u64> {
            let mut acked = BTreeMap::new();
            let mut blocked = BTreeSet::new();
            for (epoch, positions) in &self.closed {
                let durable = *epoch < self.durable_below || self.durable.contains(epoch);
                for (p, pos) in positions {
                    if blocked.contains(p) {
                        continue;
                    }
                    if durable {
                        acked.insert(*p, *pos);
                    } else {
                        blocked.insert(*p);
                    }
                }
            }
            acked
        }
    }

    proptest! {
        #[test]
        fn acks_match_a_model_under_any_completion_order(
            ops in proptest::collection::vec(op(), 0..80),
            finish_order in any::<u64>(),
        ) {
            let mut ledger = EpochLedger::new();
            let mut model = Model::default();
            let mut acked: BTreeMap<u8, u64> = BTreeMap::new();
            let mut read: BTreeMap<u8, u64> = BTreeMap::new();
            let mut open: BTreeMap<u8, u64> = BTreeMap::new();
            let mut epoch: Epoch = 1;
            let apply = |acked: &mut BTreeMap<u8, u64>, got: Vec<(u8, u64)>| {
                for (p, pos) in got {
                    let before = acked.insert(p, pos);
                    prop_assert!(before.is_none_or(|b| b < pos), "partition {} went from {:?} to {}", p, before, pos);
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Read { p, n } => {
                        let pos = read.entry(p).or_default();
                        *pos += u64::from(n);
                        ledger.record(p, *pos);
                        open.insert(p, *pos);
                    }
                    Op::End { gap } => {
                        ledger.end_epoch(epoch);
                        if !open.is_empty() {
                            model.closed.push((epoch, std::mem::take(&mut open)));
                        }
                        epoch += u64::from(gap);
                    }
                    Op::Complete(i) => {
                        if model.closed.is_empty() {
                            continue;
                        }
                        let e = model.closed[i % model.closed.len()].0;
                        model.durable.insert(e);
                        apply(&mut acked, ledger.complete(e))?;
                    }
                    Op::Frontier => {
                        let done = model
                            .closed
                            .iter()
                            .map(|(e, _)| *e)
                            .find(|e| *e >= model.durable_below && !model.durable.contains(e))
                            .unwrap_or(epoch);
                        model.durable_below = model.durable_below.max(done);
                        apply(&mut acked, ledger.ack(done))?;
                    }
                }
                // never more, never less than the durable epochs allow
                prop_assert_eq!(&acked, &model.acknowledgeable());
            }
            // every remaining epoch becomes durable, one by one in a random order, then the input ends
            ledger.end_epoch(epoch);
            if !open.is_empty() {
                model.closed.push((epoch, std::mem::take(&mut open)));
            }
            let mut rest: Vec<Epoch> = model.closed.iter().map(|(e, _)| *e).collect();
            let mut seed = finish_order;
            while !rest.is_empty() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let e = rest.swap_remove((seed >> 33) as usize % rest.len());
                model.durable.insert(e);
                apply(&mut acked, ledger.complete(e))?;
                prop_assert_eq!(&acked, &model.acknowledgeable());
            }
            apply(&mut acked, ledger.ack(Epoch::MAX))?;
            prop_assert_eq!(&acked, &read, "everything durable is acknowledged");
            prop_assert!(ledger.is_empty());
            prop_assert_eq!(ledger.unacknowledged_epochs(), 0);
        }
    }
}
