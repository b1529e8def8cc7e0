//! The decoder job with `[dedup]` and `[counts]`: every fixture submission sent twice comes out
//! once, its copy a `Duplicate` dead letter; the outcome counts match what was written.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::read_object_lines;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines of every object under `dir`, by the first directory below it.
fn lines_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += read_object_lines(&p).unwrap().len();
            }
        }
    }
    n
}

/// Runs the decoder on `input` with `extra` config; returns (decoded, dead letters per
/// error_type directory, stderr).
fn run(input: &Path, extra: &str) -> (usize, Vec<(String, usize)>, String) {
    let out = tempfile::tempdir().unwrap();
    let base =
        std::fs::read_to_string(manifest().join("../examples/configs/decoder-local.toml")).unwrap();
    let config = out.path().join("job.toml");
    std::fs::write(&config, format!("{base}\n{extra}\n")).unwrap();
    let dir = out.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(manifest())
        .args(["run", config.to_str().unwrap(), "--workers", "2"])
        .args([
            "--set",
            &format!("source.path={:?}", input.display().to_string()),
        ])
        .args(["--set", "decoder.schemas=\"../schemas/json\""])
        .args([
            "--set",
            &format!("sink.dir={:?}", dir.display().to_string()),
        ])
        .args([
            "--set",
            &format!("dead_letter.dir={:?}", dir.display().to_string()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    let errors = dir.join("errors");
    let total = lines_under(&dir);
    let mut by_type = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&errors) {
        for e in entries {
            let p = e.unwrap().path();
            by_type.push((
                p.file_name().unwrap().to_string_lossy().to_string(),
                lines_under(&p),
            ));
        }
    }
    by_type.sort();
    let dead: usize = by_type.iter().map(|(_, n)| n).sum();
    (total - dead, by_type, stderr)
}

#[test]
fn every_submission_sent_twice_is_written_once_and_its_copy_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        std::fs::read_to_string(manifest().join("tests/fixtures/input/submissions.ndjson"))
            .unwrap();
    let input = tmp.path().join("twice.ndjson");
    std::fs::write(&input, format!("{fixture}{fixture}")).unwrap();

    let (plain_decoded, plain_dead, _) = run(&input, "");
    assert!(plain_decoded > 0);
    assert!(!plain_dead.iter().any(|(t, _)| t == "Duplicate"));

    // the fixture's timestamps span three days in no order: the lateness must cover them
    let (decoded, dead, stderr) = run(&input, "[dedup]\nlateness = \"96h\"\n[counts]");
    assert_eq!(decoded * 2, plain_decoded, "each decoded document once");
    let duplicates = dead.iter().find(|(t, _)| t == "Duplicate").map(|(_, n)| *n);
    assert_eq!(duplicates, Some(decoded), "{dead:?}");
    // the other dead letters are untouched: dedup runs on decoded documents only
    let others: Vec<_> = dead.into_iter().filter(|(t, _)| t != "Duplicate").collect();
    assert_eq!(others, plain_dead);
    assert!(stderr.contains("Duplicate"), "{stderr}");
}

#[test]
fn the_parts_of_a_split_submission_are_not_duplicates_of_each_other() {
    // test/split splits into a subset and a remainder and keeps the original: three documents
    // with one uri. Sent twice, each part is written once and the resend's parts are duplicates.
    let tmp = tempfile::tempdir().unwrap();
    let fixture = std::fs::read_to_string(
        manifest().join("../transforms/tests/fixtures/decoder/input.ndjson"),
    )
    .unwrap();
    let split: String = fixture
        .lines()
        .filter(|l| l.contains("/submit/test/split/"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !split.is_empty(),
        "the decoder fixture has split submissions"
    );
    let input = tmp.path().join("split.ndjson");
    std::fs::write(&input, format!("{split}{split}")).unwrap();

    let (plain_decoded, _, _) = run(&input, "");
    let (decoded, dead, _) = run(&input, "[dedup]\nlateness = \"96h\"");
    assert!(
        plain_decoded >= 6,
        "parts of two submissions, twice: {plain_decoded}"
    );
    assert_eq!(decoded * 2, plain_decoded, "each part once: {dead:?}");
    let duplicates = dead.iter().find(|(t, _)| t == "Duplicate").map(|(_, n)| *n);
    assert_eq!(duplicates, Some(decoded), "{dead:?}");
}
