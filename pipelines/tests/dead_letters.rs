//! `sluice dead-letters summary|show|replay` on the dead letters a real `sluice run` wrote
//! (gzipped ndjson under `errors/<error_type>/`): the summary's counts equal an independent
//! count of the files, `show` decodes payloads, and `replay` feeds the selected dead letters
//! back through the job as configured now (here: its own payload limit instead of the run's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn sluice(args: &[&str], state: &Path) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(args)
        .env("SLUICE_DATA_DIR", state)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(p);
        }
    }
}

/// Records per `error_type` (`""` for decoded outputs) under `dir`.
fn count(dir: &Path) -> BTreeMap<String, usize> {
    let mut found = Vec::new();
    files(dir, &mut found);
    let mut counts = BTreeMap::new();
    for f in found {
        for line in support::read_object_lines(&f).unwrap() {
            let m = sluice::Message::from_json_line(line.as_bytes()).unwrap();
            let t = m.attribute("error_type").unwrap_or("").to_string();
            *counts.entry(t).or_default() += 1;
        }
    }
    counts
}

#[test]
fn summary_show_and_replay_work_on_a_runs_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, state) = (tmp.path().join("out"), tmp.path().join("state"));
    let (run, log) = sluice(
        &[
            "run",
            "examples/configs/decoder-local.toml",
            "--no-progress",
            "--set",
            &format!("sink.dir={}", out.display()),
            "--set",
            &format!("dead_letter.dir={}", out.display()),
            // documents over 4 KB become LimitPayloadSize dead letters
            "--set",
            "decoder.max_payload_bytes=4KB",
        ],
        &state,
    );
    assert_eq!(run.status.code(), Some(0), "{log}");
    let errors = out.join("errors");
    let expected = count(&errors);
    let too_big = expected.get("LimitPayloadSize").copied().unwrap_or(0);
    assert!(
        too_big > 0,
        "the run wrote LimitPayloadSize dead letters: {expected:?}"
    );
    assert!(expected.len() > 1, "several error types: {expected:?}");

    // summary: every error_type with its count, largest first
    let (summary, text) = sluice(
        &["dead-letters", "summary", errors.to_str().unwrap()],
        &state,
    );
    assert_eq!(summary.status.code(), Some(0), "{text}");
    let total: usize = expected.values().sum();
    assert!(
        text.starts_with(&format!("{total} dead letter(s) in ")),
        "{text}"
    );
    for (t, n) in &expected {
        assert!(
            text.lines().any(|l| l.trim() == format!("{n}  {t}")),
            "{t}: {n} in {text}"
        );
    }

    // show: the selected type only, payload gunzipped and pretty-printed
    let (show, text) = sluice(
        &[
            "dead-letters",
            "show",
            errors.to_str().unwrap(),
            "--error-type",
            "LimitPayloadSize",
            "--limit",
            "2",
        ],
        &state,
    );
    assert_eq!(show.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("--- 1 of {too_big}: LimitPayloadSize")),
        "{text}"
    );
    assert_eq!(
        text.matches("\n--- ").count() + usize::from(text.starts_with("--- ")),
        3,
        "two shown and the rest counted: {text}"
    );
    assert!(
        text.contains(&format!("--- {} more not shown", too_big - 2)),
        "{text}"
    );
    assert!(text.contains("error_message: gzip payload of "), "{text}");
    assert!(text.contains("  uri: /submit/"), "{text}");
    assert!(text.contains("payload (gzip, "), "{text}");
    assert!(
        text.contains("more bytes not shown)"),
        "big payloads are cut: {text}"
    );
    assert!(text.len() < 20_000, "{}", text.len());

    // a document the schema refused: its payload gunzipped and indented
    let (show, text) = sluice(
        &[
            "dead-letters",
            "show",
            errors.to_str().unwrap(),
            "--error-type",
            "ParsePayload",
            "--message",
            "does not match schema",
            "--limit",
            "1",
        ],
        &state,
    );
    assert_eq!(show.status.code(), Some(0), "{text}");
    assert!(text.contains("--- 1 of "), "{text}");
    assert!(text.contains(" bytes, JSON):\n  {\n    \""), "{text}");

    // replay through the job as configured now (its default limit, 8 MiB): each is read and
    // decoded again, and these documents (padded past 8 MiB) are refused by the new limit
    let replayed = tmp.path().join("replayed");
    let (replay, text) = sluice(
        &[
            "dead-letters",
            "replay",
            errors.to_str().unwrap(),
            "--error-type",
            "LimitPayloadSize",
            "--config",
            "examples/configs/decoder-local.toml",
            "--set",
            &format!("sink.dir={}", replayed.display()),
            "--set",
            &format!("dead_letter.dir={}", replayed.display()),
        ],
        &state,
    );
    assert_eq!(replay.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("replaying {too_big} dead letter(s)")),
        "{text}"
    );
    assert!(text.contains(&format!("read {too_big} records")), "{text}");
    let (summary, text) = sluice(
        &["dead-letters", "summary", replayed.to_str().unwrap()],
        &state,
    );
    assert_eq!(summary.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "{too_big}  gzip payload of 41177 bytes decompresses to more than the limit of 8388608 bytes"
        )),
        "replayed under the job's limit: {text}"
    );
    assert_eq!(
        count(&replayed).values().sum::<usize>(),
        too_big,
        "each once"
    );
}

#[test]
fn a_path_without_dead_letters_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, text) = sluice(
        &["dead-letters", "summary", tmp.path().to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("no dead-letter file under"), "{text}");
}

/// Dead letters a run wrote to S3 (moto; needs `SLUICE_TEST_S3_ENDPOINT`) are read from their
/// `s3://` URL.
#[test]
fn summary_reads_dead_letters_from_s3() {
    let endpoint = match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => {
            println!("skipped: set SLUICE_TEST_S3_ENDPOINT to run the S3 dead-letter test");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let bucket = format!("sluice-dead-letters-{}", std::process::id());
    let created = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT'), timeout=10)",
            &format!("{endpoint}/{bucket}"),
        ])
        .status()
        .unwrap();
    assert!(created.success());
    let config = tmp.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            r#"job = "decoder"
[source]
type = "file"
path = "{root}/examples/data/*.ndjson"
[decoder]
schemas = "{root}/schemas/json"
[sink]
type = "file"
dir = "{out}"
[dead_letter]
type = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
allow_http = true
region = "us-east-1"
path = "errors/${{error_type:-unknown}}/"
"#,
            root = root().display(),
            out = tmp.path().join("out").display(),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, log) = run(&["run", "--no-progress", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{log}");
    // the summary's `read N records (...); M dead letters`
    let dead: usize = log
        .match_indices(" dead letters")
        .find_map(|(end, _)| log[..end].rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the run's summary counts dead letters: {log}"));
    assert!(dead > 0, "{log}");
    let url = format!("s3://{bucket}/errors/");
    let (code, text) = run(&["dead-letters", "summary", &url, "--endpoint", &endpoint]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with(&format!("{dead} dead letter(s) in ")),
        "as many as the run wrote: {text}"
    );
    assert!(text.contains("  ParseUri\n"), "{text}");
}
