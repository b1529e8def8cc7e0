//! Nested failures print each cause once: an error says what failed, its source says why, and
//! the CLI prints the chain (`what: why: deeper why`), never a cause twice.

use std::path::Path;
use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

/// The `error: ...` line of a failed run; each of `causes` appears in it exactly once, in
/// this order.
fn assert_chain(out: &Output, code: i32, causes: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"))
        .to_string();
    let mut at = 0;
    for cause in causes {
        assert_eq!(
            line.matches(cause).count(),
            1,
            "`{cause}` must appear once in: {line}"
        );
        let i = line.find(cause).unwrap();
        assert!(i >= at, "`{cause}` out of order in: {line}");
        at = i + cause.len();
    }
    assert!(!line.ends_with('.'), "{line}");
    line
}

fn sink_job(input: &Path, out: &Path, state: &Path) -> Vec<String> {
    [
        "run",
        "../examples/configs/sink-local.toml",
        "--no-progress",
        "--set",
        &format!("source.path={}/*.ndjson", input.display()),
        "--set",
        &format!("source.state_dir={}", state.display()),
        "--set",
        &format!("sink.dir={}", out.display()),
        "--set",
        &format!("dead_letter.dir={}", out.display()),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_corrupt_schema_archive_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("schemas.tar.gz");
    std::fs::write(&archive, b"this is not gzip").unwrap();
    let out = sluice(&[
        "run",
        "../examples/configs/decoder-local.toml",
        "--no-progress",
        "--set",
        "source.path=../examples/data/*.ndjson",
        "--set",
        &format!("decoder.schemas={}", archive.display()),
        "--set",
        &format!("sink.dir={}", dir.path().display()),
        "--set",
        &format!("dead_letter.dir={}", dir.path().display()),
    ]);
    let line = assert_chain(&out, 2, &["cannot load schemas `", "cannot read `"]);
    // the archive is named by both levels (what each could not do), its cause once, last
    assert_eq!(
        line.matches(&archive.display().to_string()).count(),
        2,
        "{line}"
    );
    let cause = line.rsplit(": ").next().unwrap();
    assert!(
        !cause.contains("schemas"),
        "the innermost cause comes last: {line}"
    );
    assert_eq!(line.matches(cause).count(), 1, "{line}");
}

#[test]
fn an_unreadable_checkpoint_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out, state) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("state"),
    );
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("a.ndjson"),
        "{\"attributeMap\":{\"k\":\"v\"},\"payload\":\"aGk=\"}\n",
    )
    .unwrap();
    let args = sink_job(&input, &out, &state);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = sluice(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // the checkpoint becomes a directory: reading it fails with an os error, three levels down
    let checkpoint = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".checkpoint.json"))
        .expect("the first run wrote a checkpoint");
    std::fs::remove_file(&checkpoint).unwrap();
    std::fs::create_dir(&checkpoint).unwrap();

    let second = sluice(&args);
    let line = assert_chain(
        &second,
        1,
        &["source `", "cannot use file source state", "Is a directory"],
    );
    assert_eq!(
        line.matches(&checkpoint.display().to_string()).count(),
        1,
        "{line}"
    );
}

#[test]
fn a_corrupt_checkpoint_prints_its_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out, state) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("state"),
    );
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.ndjson"), "{\"payload\":\"aGk=\"}\n").unwrap();
    let args = sink_job(&input, &out, &state);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(sluice(&args).status.success());
    let checkpoint = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".checkpoint.json"))
        .expect("the first run wrote a checkpoint");
    std::fs::write(&checkpoint, "{not json").unwrap();

    let line = assert_chain(
        &sluice(&args),
        1,
        &["source `", "corrupt checkpoint", "key must be a string"],
    );
    assert!(line.contains("delete it"), "{line}");
}

#[test]
fn an_s3_endpoint_refusing_connections_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.ndjson"), "{\"payload\":\"aGk=\"}\n").unwrap();
    // nothing listens on port 1: every connection is refused (the store retries ~4 s)
    let config = dir.path().join("s3.toml");
    std::fs::write(
        &config,
        format!(
            r#"job = "sink"
[source]
type = "file"
path = "{input}/*.ndjson"
[sink]
type = "s3"
bucket = "sluice-refused"
endpoint = "http://127.0.0.1:1"
allow_http = true
region = "us-east-1"
path = "raw/"
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/"
"#,
            input = input.display(),
            out = dir.path().join("out").display()
        ),
    )
    .unwrap();
    let out = sluice(&["validate", "--check", config.to_str().unwrap()]);
    assert_chain(
        &out,
        2,
        &[
            "sink: cannot reach the destination `raw`",
            "error sending request",
            "Connection refused",
        ],
    );
    // the run's health check cuts the chain to what a user can act on
    let out = sluice(&["run", config.to_str().unwrap(), "--no-progress"]);
    assert_chain(
        &out,
        2,
        &[
            "sink (s3 bucket `sluice-refused`): cannot reach the destination `raw`",
            "connection refused",
        ],
    );
}
