//! A sink failure in one process of a two-process timely cluster: every process stops with an
//! error within seconds, and no process acknowledges the failed epoch (or any later one).

use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::io::{
    Epoch, ReadStatus, Sink, SinkContext, SinkWriter, Source, SourceContext, SourceReader,
    WriteFuture,
};
use sluice::{BoxError, EpochBounds, MemorySink, MemorySource, Pipeline};
use sluice_testing::cluster::{free_port, wait_all};

/// Wraps a source and records the highest `done` it was told to acknowledge.
#[derive(Clone)]
struct AckRecording {
    inner: MemorySource<u64>,
    highest_done: Arc<AtomicU64>,
}

impl Source for AckRecording {
    type Output = u64;
    fn kind(&self) -> &str {
        "memory"
    }
    fn describe(&self) -> String {
        "recording".to_string()
    }
    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<u64>>, BoxError> {
        Ok(Box::new(AckRecordingReader {
            inner: self.inner.open(ctx)?,
            highest_done: self.highest_done.clone(),
        }))
    }
}

struct AckRecordingReader {
    inner: Box<dyn SourceReader<u64>>,
    highest_done: Arc<AtomicU64>,
}

impl SourceReader<u64> for AckRecordingReader {
    fn read(&mut self, out: &mut Vec<u64>, max: usize) -> Result<ReadStatus, BoxError> {
        self.inner.read(out, max)
    }
    fn end_epoch(&mut self, epoch: Epoch) {
        self.inner.end_epoch(epoch)
    }
    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        self.highest_done.fetch_max(done, Ordering::SeqCst);
        self.inner.ack(done)
    }
    fn close(&mut self) -> Result<(), BoxError> {
        self.inner.close()
    }
}

/// Fails its `nth` write (and records that write's epoch); slow enough that the other process
/// is still running when it fails.
#[derive(Clone)]
struct FailAt {
    nth: usize,
    writes: Arc<AtomicUsize>,
    failed_epoch: Arc<AtomicU64>,
    inner: MemorySink<u64>,
}

impl Sink for FailAt {
    type Input = u64;
    fn kind(&self) -> &str {
        "memory"
    }
    fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<u64>>, BoxError> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<u64> for FailAt {
    fn write(&mut self, epoch: Epoch, records: Vec<u64>) -> WriteFuture<u64> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.nth {
            self.failed_epoch.store(epoch, Ordering::SeqCst);
            return Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err("injected failure of the sink".into())
            });
        }
        let write = self.inner.write(epoch, records);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            write.await
        })
    }
}

const CHILD: &str = "SLUICE_CLUSTER_FAILURE_CHILD";

/// One process of the cluster, when the parent test starts this binary with `CHILD` set.
/// Process 1's sink fails its 5th write; process 0's never fails.
#[test]
fn cluster_failure_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split(';');
    let process: usize = parts.next().unwrap().parse().unwrap();
    let addresses: Vec<String> = parts.next().unwrap().split(',').map(String::from).collect();
    let report = parts.next().unwrap().to_string();
    let epochs: Vec<Vec<u64>> = (0..60).map(|e| (e * 10..e * 10 + 10).collect()).collect();
    let highest_done = Arc::new(AtomicU64::new(0));
    let failed_epoch = Arc::new(AtomicU64::new(u64::MAX));
    let source = AckRecording {
        inner: MemorySource::from_epochs(epochs),
        highest_done: highest_done.clone(),
    };
    let sink = FailAt {
        nth: if process == 1 { 5 } else { usize::MAX },
        writes: Arc::default(),
        failed_epoch: failed_epoch.clone(),
        inner: MemorySink::new(),
    };
    let result = Pipeline::new("cluster-failure")
        .cluster(process, addresses)
        .epoch_bounds(EpochBounds {
            max_records: 10,
            ..EpochBounds::default()
        })
        .run(move |p| {
            p.read("read", source.clone()).write("store", sink.clone());
            Ok(())
        });
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => sluice::chain(e).replace('\n', " "),
    };
    std::fs::write(
        report,
        format!(
            "{}\n{}\n{}\n",
            highest_done.load(Ordering::SeqCst),
            failed_epoch.load(Ordering::SeqCst),
            outcome
        ),
    )
    .unwrap();
    std::process::exit(if result.is_ok() { 0 } else { 3 });
}

#[test]
fn a_sink_failure_in_one_process_stops_both_and_neither_acknowledges_the_failed_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let exe = std::env::current_exe().unwrap();
    let reports: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("process-{i}.txt")))
        .collect();
    let mut children: Vec<_> = reports
        .iter()
        .enumerate()
        .map(|(i, report)| {
            Command::new(&exe)
                .args(["--exact", "cluster_failure_child", "--nocapture"])
                .env(CHILD, format!("{i};{addresses};{}", report.display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start a cluster process")
        })
        .collect();
    // `wait_all` kills both and fails the test if they do not stop by themselves in time.
    let statuses = wait_all(&mut children, Duration::from_secs(30));
    let read = |i: usize| -> (u64, u64, String) {
        let text = std::fs::read_to_string(&reports[i])
            .unwrap_or_else(|e| panic!("process {i} wrote no report ({e}): {}", statuses[i]));
        let mut lines = text.lines();
        (
            lines.next().unwrap().parse().unwrap(),
            lines.next().unwrap().parse().unwrap(),
            lines.next().unwrap_or_default().to_string(),
        )
    };
    let (done_1, failed_epoch, outcome_1) = read(1);
    assert_ne!(failed_epoch, u64::MAX, "process 1's sink never failed");
    assert!(
        outcome_1.contains("injected failure of the sink"),
        "{outcome_1}"
    );
    assert!(
        done_1 <= failed_epoch,
        "process 1 acknowledged up to {done_1}, past its failed epoch {failed_epoch}"
    );
    assert!(!statuses[1].success());
    // Process 0 may have crashed on the closed connection before writing a report; if it wrote
    // one, it must say it stopped because of process 1 and must not have acknowledged the
    // failed epoch.
    assert!(!statuses[0].success(), "process 0 must fail too");
    if reports[0].exists() {
        let (done_0, _, outcome_0) = read(0);
        assert!(
            done_0 <= failed_epoch,
            "process 0 acknowledged up to {done_0}, past process 1's failed epoch {failed_epoch}"
        );
        assert!(outcome_0 != "ok", "{outcome_0}");
        eprintln!("process 0: {outcome_0}; process 1: {outcome_1}");
    }
}
