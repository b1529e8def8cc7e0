//! Helpers for tests that run a timely cluster as several OS processes on loopback.

use std::net::TcpListener;
use std::process::{Child, ExitStatus};
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
