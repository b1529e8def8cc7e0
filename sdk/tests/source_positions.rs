//! What a source's readers say of their positions reaches the pipeline's metrics, per step and
//! partition, the workers' figures of one partition added up, and the last word is said after
//! the final acknowledgement.

use std::collections::BTreeMap;

use sluice::io::{ReadState, ReadStatus, Source, SourceContext, SourceReader};
use sluice::{BoxError, Epoch, EpochLedger, MemorySink, PartitionPosition, Pipeline, PositionKind};

/// Each worker reads `0..LEN` as its own partition `p/<worker>`; all share the "queue"
/// partition, where they report messages read and not yet acknowledged, and those acknowledged.
#[derive(Clone)]
struct Numbers;

const LEN: u64 = 500;

struct NumbersReader {
    partition: String,
    next: u64,
    acked: u64,
    ledger: EpochLedger<(), u64>,
}

impl Source for Numbers {
    type Output = u64;
    fn kind(&self) -> &str {
        "numbers"
    }
    fn describe(&self) -> String {
        format!("0..{LEN}")
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<u64>>, BoxError> {
        Ok(Box::new(NumbersReader {
            partition: format!("p/{}", ctx.worker_index()),
            next: 0,
            acked: 0,
            ledger: EpochLedger::new(),
        }))
    }
}

impl SourceReader<u64> for NumbersReader {
    fn read(&mut self, out: &mut Vec<u64>, max: usize) -> Result<ReadStatus, BoxError> {
        let end = LEN.min(self.next + (max as u64).min(37));
        out.extend(self.next..end);
        self.next = end;
        self.ledger.record((), end);
        let state = if end == LEN {
            ReadState::Exhausted
        } else {
            ReadState::More
        };
        Ok(ReadStatus::new(8 * out.len(), state))
    }
    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }
    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        for ((), offset) in self.ledger.ack(done) {
            self.acked = offset;
        }
        Ok(())
    }
    fn positions(&self) -> Vec<PartitionPosition> {
        let n = |v: u64| v as i64;
        vec![
            PartitionPosition::new(&self.partition, PositionKind::Offset, n(self.next)),
            PartitionPosition::new(
                "queue",
                PositionKind::Outstanding,
                n(self.next - self.acked),
            ),
            PartitionPosition::new("queue", PositionKind::Acked, n(self.acked)),
        ]
    }
}

#[test]
fn readers_positions_reach_the_metrics_per_partition_and_add_up_over_workers() {
    let out = MemorySink::new();
    let o = out.clone();
    let pipeline = Pipeline::new("positions").workers(2);
    let metrics = pipeline.metrics();
    pipeline
        .run(move |p| {
            p.read("read", Numbers).write("write", o.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(out.len(), 2 * LEN as usize);
    let positions: BTreeMap<(String, String, PositionKind), i64> = metrics.snapshot().positions;
    let at = |partition: &str, kind| positions[&("read".to_string(), partition.to_string(), kind)];
    assert_eq!(at("p/0", PositionKind::Offset), LEN as i64);
    assert_eq!(at("p/1", PositionKind::Offset), LEN as i64);
    assert_eq!(
        at("queue", PositionKind::Acked),
        2 * LEN as i64,
        "both workers' acks"
    );
    assert_eq!(at("queue", PositionKind::Outstanding), 0);
    assert_eq!(positions.len(), 4);
}
