//! Signals and standard streams, through the built binary: a job on stdin writes what it read
//! and exits 0 on SIGTERM, even with its stderr closed; a job on files stopped before the end
//! of its input exits 3 and says so, and a rerun with its state directory finishes with 0.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice_pipelines::generate::Generator;

/// How long a step of these tests may take before it counts as hung (never reached when
/// the binary behaves).
const HUNG: Duration = Duration::from_secs(60);

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// Waits for the child to exit; kills it and fails if it does not within [`HUNG`].
fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + HUNG;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running {HUNG:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn envelopes(count: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in Generator::new(7, 0.0).take(count) {
        r.write_json_line(&mut buf);
    }
    buf
}

/// Runs the stdin -> stdout filter, feeds it `records` records on a stdin that stays open,
/// waits until all of them came out on stdout, sends SIGTERM, and returns the exit status and
/// the lines written.
fn stdin_job_stopped_by_sigterm(
    stderr: Stdio,
    records: usize,
) -> (std::process::ExitStatus, usize) {
    let mut child = sluice()
        .args(["run", "../examples/configs/sink-stdin-stdout.toml"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&envelopes(records)).unwrap();
    stdin.flush().unwrap();
    // stdin stays open, as under a producer that waits: the records must come out anyway
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.is_err() || tx.send(()).is_err() {
                return;
            }
        }
    });
    for i in 0..records {
        if rx.recv_timeout(HUNG).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("only {i} of {records} records written while stdin stays open");
        }
    }
    signal(&child, "TERM");
    let status = wait_exit(&mut child, "the stdin job");
    drop(stdin);
    let mut written = records;
    while rx.recv_timeout(Duration::from_millis(10)).is_ok() {
        written += 1;
    }
    (status, written)
}

#[test]
fn sigterm_on_a_stdin_job_writes_what_it_read_and_exits_0() {
    let (status, written) = stdin_job_stopped_by_sigterm(Stdio::piped(), 5);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert_eq!(written, 5, "each record once");
}

#[test]
fn a_closed_stderr_neither_panics_nor_keeps_a_signal_from_stopping_the_job() {
    // stderr is a pipe whose reader is gone, as after `sluice run cfg 2>&1 | head -1`:
    // every log line fails with EPIPE
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (status, written) = stdin_job_stopped_by_sigterm(Stdio::from(writer), 3);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status} (101 is a panic)"
    );
    assert_eq!(written, 3);
}

fn checkpointed_lines(state: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(state) else {
        return 0;
    };
    entries
        .filter_map(|e| {
            let p = e.ok()?.path();
            if !p.to_string_lossy().ends_with(".checkpoint.json") {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            v["lines"].as_u64()
        })
        .sum()
}

/// The file -> local objects job; `slow` bounds it to small epochs, one in flight, so that a
/// signal finds it reading.
fn file_job(input: &Path, out: &Path, state: &Path, slow: bool) -> Command {
    let mut c = sluice();
    c.args([
        "run",
        "../examples/configs/sink-local.toml",
        "--workers",
        "1",
    ])
    .args(["--set", &format!("source.path={}", input.display())])
    .args(["--set", &format!("source.state_dir={}", state.display())])
    .args(["--set", &format!("sink.dir={}", out.display())])
    .args(["--set", &format!("dead_letter.dir={}", out.display())])
    .stdout(Stdio::null());
    if slow {
        c.args(["--set", "sink.batch.max_records=50"])
            .args(["--set", "pipeline.epoch.max_records=50"])
            .args(["--set", "pipeline.in_flight.max_epochs=1"]);
    }
    c
}

#[test]
fn a_file_job_stopped_before_the_end_of_its_input_exits_3_and_says_so() {
    const RECORDS: usize = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let (input, out, state) = (
        tmp.path().join("in.ndjson"),
        tmp.path().join("out"),
        tmp.path().join("state"),
    );
    std::fs::write(&input, envelopes(RECORDS)).unwrap();
    let mut child = file_job(&input, &out, &state, true)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // stop it once some input is acknowledged: it is then reading, far from the end
    let deadline = Instant::now() + HUNG;
    while checkpointed_lines(&state) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before anything was acknowledged"
        );
        assert!(
            Instant::now() < deadline,
            "nothing acknowledged in {HUNG:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "TERM");
    let status = wait_exit(&mut child, "the file job");
    let log = log.join().unwrap();
    let acknowledged = checkpointed_lines(&state);
    assert!(
        acknowledged < RECORDS as u64,
        "the job read its whole input before the signal: the input is too small to prove anything"
    );
    assert_eq!(status.code(), Some(3), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("STOPPED before the end of the input: 1 file(s) not read to the end"),
        "the summary says the run stopped early:\n{log}"
    );
    assert!(
        log.contains("stopped by a signal before the end of the input"),
        "{log}"
    );

    // a rerun with the same state directory reads the rest and ends as a finished run
    let rerun = file_job(&input, &out, &state, false)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&rerun.stderr);
    assert_eq!(rerun.status.code(), Some(0), "{log}");
    assert!(!log.contains("STOPPED"), "{log}");
}
