//! Helpers for tests that run a timely cluster as several OS processes on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free right now, for a cluster process to listen on.
///
/// # Panics
/// If no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits for every process of a cluster and returns their exit statuses in order.
///
/// A cluster process that dies at start leaves its peers waiting for it forever (timely has no
/// connect timeout), so after `deadline` every process still running is killed and this panics.
///
/// # Panics
/// If the processes do not all end within `deadline`.
pub fn wait_all(children: &mut [Child], deadline: Duration) -> Vec<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        let statuses: Vec<Option<ExitStatus>> = children
            .iter_mut()
            .map(|c| c.try_wait().expect("the state of a cluster process"))
            .collect();
        if statuses.iter().all(Option::is_some) {
            return statuses.into_iter().flatten().collect();
        }
        if Instant::now() > until {
            for c in children.iter_mut() {
                let _ = c.kill();
            }
            panic!("the cluster did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One process of a cluster started by [`run_two_process_cluster`], as the parent test told it
/// through an environment variable.
#[derive(Clone, Debug)]
pub struct ClusterChild {
    /// This process's index.
    pub process: usize,
    /// Every process's loopback address, in process order.
    pub addresses: Vec<String>,
    /// Where this process writes what the parent test checks.
    pub out_file: PathBuf,
}

impl ClusterChild {
    /// The process this test binary is to be when `var` is set; `None` in a normal test run
    /// (the child test then returns at once).
    ///
    /// # Panics
    /// If `var` is set but not as [`run_two_process_cluster`] sets it.
    pub fn from_env(var: &str) -> Option<ClusterChild> {
        let spec = std::env::var(var).ok()?;
        let mut parts = spec.splitn(3, ';');
        let mut next = || parts.next().expect("process;addresses;out_file");
        Some(ClusterChild {
            process: next().parse().expect("a process index"),
            addresses: next().split(',').map(String::from).collect(),
            out_file: PathBuf::from(next()),
        })
    }
}

/// Runs the test `child_test` of the current test binary as each process of a two-process
/// cluster on loopback, telling it its part through the environment variable `var` (read it
/// with [`ClusterChild::from_env`]), and returns each process's output file (under `dir`) once
/// every process succeeded.
///
/// # Panics
/// If a process cannot start, fails, or the cluster does not finish within 120 s.
pub fn run_two_process_cluster(child_test: &str, var: &str, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("the cluster test's directory");
    let addresses = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let exe = std::env::current_exe().expect("the test binary");
    let (mut processes, outputs): (Vec<Child>, Vec<PathBuf>) = (0..2)
        .map(|i| {
            let out = dir.join(format!("process-{i}.txt"));
            let child = Command::new(&exe)
                .args(["--exact", child_test, "--nocapture", "--test-threads", "1"])
                .env(var, format!("{i};{addresses};{}", out.display()))
                .stdout(Stdio::null())
                .spawn()
                .expect("start a cluster process");
            (child, out)
        })
        .unzip();
    for status in wait_all(&mut processes, Duration::from_secs(120)) {
        assert!(status.success(), "cluster process failed: {status}");
    }
    outputs
}
