//! Reading a running job's metrics address (`--metrics-addr`) from a test.

use std::io::{Read, Write};
use std::time::Duration;

/// `GET path` on the metrics address: the body, or `None` while nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    // The server keeps connections alive unless asked not to; never wait on one forever.
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// The value of the metric line `name{labels}` in Prometheus text.
pub fn metric(text: &str, name_and_labels: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
