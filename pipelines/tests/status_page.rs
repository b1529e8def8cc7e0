//! The metrics address of a running job: `/metrics`, `/health`, `/ready`, and the status page
//! in a real headless browser (Debian's `chromium`): it loads, shows the job's counts, and they
//! change while the job runs. Set `SLUICE_STATUS_SCREENSHOT=path.png` to keep a screenshot.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::{CountOutcomes, DeadLetter, Failure, Message, Pipeline};
use sluice_pipelines::status;
use sluice_testing::{MemorySink, UnboundedMemorySource};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// The page's DOM after its script ran (chromium's virtual time lets the first polls finish).
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The text of the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    rest[..rest.find('<').unwrap()].to_string()
}

fn messages(from: usize, n: usize) -> Vec<Message> {
    (from..from + n)
        .map(|i| {
            let (ns, dt) = [
                ("activity-stream", "events"),
                ("activity-stream", "sessions"),
                ("glean", "baseline"),
            ][i % 3];
            Message::new(format!("{i}")).with_attribute("uri", format!("/submit/{ns}/{dt}/1/{i}"))
        })
        .collect()
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < until, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_status_page_shows_a_running_jobs_counts_and_they_change() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED: no chromium on PATH (apt-get install chromium) to test the status page"
        );
        return;
    };
    let (source, feeder) = UnboundedMemorySource::<Message>::new();
    let out = MemorySink::<Message>::new();
    let dead = MemorySink::<DeadLetter>::new();
    let (o, d) = (out.clone(), dead.clone());
    let pipeline = Pipeline::new("status-test").workers(2).stack_traces(false);
    let metrics = pipeline.metrics();
    let ready = Arc::new(AtomicBool::new(false));
    let server = status::serve("127.0.0.1:0", "status-test", metrics, ready.clone()).unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health").0, 200);
    assert_eq!(get(addr, "/ready").0, 503, "not ready before the job runs");
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let job = std::thread::spawn(move || {
        pipeline.run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("read", source.clone())
                .try_map("EveryTenth", |m: &Message| {
                    if m.payload.ends_with(b"0") {
                        Err(Failure::new("ends with 0"))
                    } else {
                        Ok(m.clone())
                    }
                })
                .failures_to(&mut dead_letters)
                .apply("count", CountOutcomes::new())
                .write("write", o.clone());
            let all = dead_letters
                .into_pcollection()
                .apply("count_dead", CountOutcomes::new());
            let mut dead_letters = sluice::DeadLetters::for_pipeline_of(&all);
            dead_letters.push(all);
            dead_letters.write("dead_letters", d.clone());
            Ok(())
        })
    });
    assert_eq!(get(addr, "/ready").0, 200);

    // a few seconds of input, so that the throughput chart has a line
    for i in 0..10 {
        feeder.push(messages(i * 30, 30));
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for("300 records", || out.len() + dead.len() == 300);
    let url = format!("http://{addr}/");
    let first = dump_dom(&chromium, &url);
    assert_eq!(
        text_of(&first, "total-read"),
        "300",
        "the page shows the job's counts"
    );
    assert!(first.contains("activity-stream/events"), "{first}");
    assert!(first.contains("<td>EveryTenth</td>"), "{first}");

    for i in 10..20 {
        feeder.push(messages(i * 30, 30));
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for("600 records", || out.len() + dead.len() == 600);
    let second = dump_dom(&chromium, &url);
    assert_eq!(text_of(&second, "total-read"), "600", "the counts change");
    assert_eq!(text_of(&second, "total-dead"), "60");
    // the memory source is unbounded: it has no position to show
    assert!(
        second.contains("<td>read</td><td class=\"n\">600</td>") && second.contains("unbounded"),
        "{second}"
    );

    let (code, metrics_text) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics_text.contains("sluice_records_read_total{step=\"read\"} 600"));
    assert!(metrics_text.contains(
        "sluice_outcomes_total{namespace=\"activity-stream\",doctype=\"events\",version=\"1\",outcome=\"decoded\"}"
    ));

    if let Some(path) = std::env::var_os("SLUICE_STATUS_SCREENSHOT") {
        let shot = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--virtual-time-budget=3000",
                "--window-size=1400,1100",
            ])
            .arg(format!("--screenshot={}", PathBuf::from(path).display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(shot.status.success());
    }
    feeder.close();
    job.join().unwrap().unwrap();
}
