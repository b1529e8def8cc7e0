//! Checks before any record is read: `sluice validate --check` lists the S3 bucket, and `sluice
//! run` does too, so a missing bucket is one clear error at start-up, never a failure after
//! decoding began. Needs `SLUICE_TEST_S3_ENDPOINT` (moto from `scripts/services/s3.sh`).

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

    for args in [
        vec!["validate", "--check", cfg],
        vec!["run", "--no-progress", cfg],
    ] {
        let out = sluice(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("sink: cannot reach the destination `out`"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("NoSuchBucket") || stderr.contains("does not exist"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("records read"),
            "{args:?}: nothing may be read: {stderr}"
        );
    }
    assert!(
        !dir.path().join("errors").exists(),
        "no dead letter may be written when the check fails"
    );
}
