//! Health checks before any record is read: `sluice run` checks each source and sink (the S3
//! bucket is listed and written), so a missing bucket is one clear error line naming the
//! section at start-up, never a failure after decoding began; `sluice check` runs the checks
//! alone, one line per section; `--no-healthcheck` skips them. `sluice validate --check` lists
//! the bucket too. Needs `SLUICE_TEST_S3_ENDPOINT` (moto from `scripts/services/s3.sh`).

use std::process::Command;

fn endpoint() -> Option<String> {
    match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            println!("skipped: set SLUICE_TEST_S3_ENDPOINT to run the S3 check tests");
            None
        }
    }
}

fn config(dir: &std::path::Path, endpoint: &str, bucket: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        r#"job = "decoder"
[source]
type = "file"
path = "{root}/../examples/data/*.ndjson"
[decoder]
schemas = "{root}/../schemas/json"
[sink]
type = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
allow_http = true
region = "us-east-1"
path = "out/${{document_type:-x}}/"
[dead_letter]
type = "file"
dir = "{dir}"
path = "errors/"
"#,
        dir = dir.display()
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap()
}

#[test]
fn a_missing_bucket_is_one_clear_error_before_anything_is_read() {
    let Some(endpoint) = endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &endpoint, "sluice-no-such-bucket-for-check");
    let cfg = cfg.to_str().unwrap();

    // Plain validate connects to nothing and passes.
    let out = sluice(&["validate", cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = sluice(&["validate", "--check", cfg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sink: cannot reach the destination `out`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("NoSuchBucket") || stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("records read"),
        "nothing may be read: {stderr}"
    );
    assert!(
        !dir.path().join("errors").exists(),
        "no dead letter may be written when the check fails"
    );
}

/// Creates a bucket on the S3 test server (moto takes unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT'), timeout=10)",
            &format!("{endpoint}/{bucket}"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "cannot create bucket {bucket}");
}

#[test]
fn run_fails_with_one_line_naming_the_section_and_check_reports_every_section() {
    let Some(endpoint) = endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &endpoint,
        "sluice-no-such-bucket-for-healthcheck",
    );
    let cfg = cfg.to_str().unwrap();

    let out = sluice(&["run", "--no-progress", cfg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let line = errors[0];
    assert!(
        line.starts_with("error: sink (s3 bucket `sluice-no-such-bucket-for-healthcheck`): "),
        "names the section and what was checked: {line}"
    );
    assert!(
        line.contains("NoSuchBucket: The specified bucket does not exist"),
        "the S3 error, shortened to its code and message: {line}"
    );
    assert!(!line.contains("<?xml"), "no raw XML: {line}");
    assert!(line.len() < 300, "short: {line}");
    assert!(
        !stderr.contains("starting") && !stderr.contains("records"),
        "nothing may be read: {stderr}"
    );
    assert!(
        !dir.path().join("errors").exists(),
        "no dead letter written"
    );

    // `sluice check`: one line per section, the failed one with its cause
    let out = sluice(&["check", cfg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("source (files `") && lines[0].ends_with("): ok"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("sink (s3 bucket") && lines[1].contains("NoSuchBucket"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("dead_letter (directory `") && lines[2].ends_with("): ok"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("errors").exists(),
        "`check` creates no directory"
    );

    // once the bucket exists every check passes, and the probe object is gone
    let bucket = format!("sluice-healthcheck-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let cfg = config(dir.path(), &endpoint, &bucket);
    let out = sluice(&["check", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("): ok").count(), 3, "{stdout}");
}

#[test]
fn an_http_endpoint_without_allow_http_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // nothing listens there: the refusal comes before any connection
    let cfg = config(dir.path(), "http://127.0.0.1:9", "sluice-any-bucket");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("allow_http = true\n", "");
    std::fs::write(&cfg, text).unwrap();
    let out = sluice(&["run", "--no-progress", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: sink (s3 bucket `sluice-any-bucket`): "),
        "{stderr}"
    );
    assert!(errors[0].contains("allow_http = true"), "{stderr}");
    assert!(errors[0].len() < 400, "short: {}", errors[0]);

    // --no-healthcheck skips the checks: the run starts (and fails when it writes)
    let out = sluice(&[
        "run",
        "--no-progress",
        "--no-healthcheck",
        cfg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("health checks skipped"), "{stderr}");
    assert!(stderr.contains("starting"), "{stderr}");
}
