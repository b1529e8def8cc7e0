//! The benchmark's baseline (`sluice-baseline`, scripts/bench.sh) does the decoder job's work:
//! on generated input with every kind of error (and documents whose schema splits them), its
//! outputs and dead letters equal `sluice run`'s, whatever the thread count, and `compare`
//! catches a difference.

use std::io::Write;

use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_pipelines::generate::{Generator, Workload};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn input(dir: &Path) -> PathBuf {
    let path = dir.join("input.ndjson");
    let mut bytes = Vec::new();
    for record in Generator::new(11, 0.25).take(400) {
        record.write_json_line(&mut bytes);
    }
    // a blank line still counts in the line numbers of the dead letters after it
    bytes.extend_from_slice(b"\n");
    // and the benchmark's workload: 9 doctypes
    Generator::new(12, 0.25)
        .with_workload(Workload::Telemetry)
        .take(300)
        .for_each(|r| r.write_json_line(&mut bytes));
    // documents of test/split, whose schema splits them: parts, and a part that fails
    for (i, doc) in [
        r#"{"client_id":"2907648D-1A3B-4C5D-8E9F-0A1B2C3D4E5F","payload":{"int":1,"string":"s"},"test_int":2}"#,
        r#"{"payload":{"string":"no subset"},"test_string":"t"}"#,
        r#"{"other_int":3}"#,
    ]
    .iter()
    .enumerate()
    {
        let payload = base64::engine::general_purpose::STANDARD.encode(doc);
        bytes.extend_from_slice(
            format!(
                "{{\"attributeMap\":{{\"uri\":\"/submit/test/split/1/8ad6b9a0-2f58-4a3e-b54f-3b2d3b0f6c1{i}\",\"submission_timestamp\":\"2026-11-20T10:00:00.000000Z\"}},\"payload\":\"{payload}\"}}\n"
            )
            .as_bytes(),
        );
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn baseline(input: &Path, out: &Path, threads: usize) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-baseline"))
        .current_dir(root())
        .args(["decode", "--threads", &threads.to_string(), "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn sluice(input: &Path, out: &Path, workers: usize) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args([
            "run",
            "examples/configs/decoder-local.toml",
            "--no-progress",
        ])
        .args(["--workers", &workers.to_string()])
        // the file source's positions: a fresh place per run, so each reads its whole input
        .env("SLUICE_DATA_DIR", out.with_extension("state"))
        .args(["--set", &format!("source.path={}", input.display())])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        .output()
        .unwrap()
}

fn compare(a: &Path, b: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-baseline"))
        .arg("compare")
        .args([a, b])
        .output()
        .unwrap()
}

#[test]
fn baseline_does_the_decoder_jobs_work_and_compare_catches_a_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path());
    let reference = tmp.path().join("base-1");
    ok(baseline(&input, &reference, 1));
    for (name, run) in [
        ("base-3", baseline(&input, &tmp.path().join("base-3"), 3)),
        ("sluice-1", sluice(&input, &tmp.path().join("sluice-1"), 1)),
        ("sluice-2", sluice(&input, &tmp.path().join("sluice-2"), 2)),
    ] {
        ok(run);
        let summary = ok(compare(&reference, &tmp.path().join(name)));
        assert!(summary.starts_with("equal work: "), "{name}: {summary}");
    }
    // every path of the decoder was taken: decoded records and dead letters of every step
    for folder in [
        "telemetry/main",
        "test/split/v1",
        "test/split-subset/v1",
        "test/split-remainder/v1",
        "errors/ReadInput",
        "errors/ParseUri",
        "errors/DecompressPayload",
        "errors/LimitPayloadSize",
        "errors/ParsePayload",
    ] {
        assert!(reference.join(folder).is_dir(), "{folder} missing");
    }

    // one extra dead letter: a copy of a line in a file of its own
    let extra = tmp.path().join("sluice-1/errors/ParseUri/extra.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&extra).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(b"{\"attributeMap\":{\"uri\":\"/x\"},\"payload\":\"\"}\n")
        .unwrap();
    gz.finish().unwrap();
    let out = compare(&reference, &tmp.path().join("sluice-1"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("errors/ParseUri: 0 only in the first, 1 only in the second"),
        "{stderr}"
    );
    assert!(stderr.contains("\"uri\":\"/x\""), "{stderr}");
}
