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

/// Every line of every object under `dir`, parsed as JSON.
fn json_lines_under(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
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
                for l in read_object_lines(&p).unwrap() {
                    lines.push(serde_json::from_str(&l).unwrap());
                }
            }
        }
    }
    lines
}

#[test]
fn duplicates_go_to_their_own_sink_and_counts_to_theirs_as_rows_that_recount_the_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        std::fs::read_to_string(manifest().join("tests/fixtures/input/submissions.ndjson"))
            .unwrap();
    let input = tmp.path().join("twice.ndjson");
    std::fs::write(&input, format!("{fixture}{fixture}")).unwrap();
    let dups = tmp.path().join("dups");
    let counts = tmp.path().join("counts");
    let extra = format!(
        "[dedup]\nlateness = \"96h\"\n[dedup.sink]\ntype = \"file\"\ndir = {:?}\ncompression = \"none\"\n\
         [counts]\nevery = \"50ms\"\n[counts.sink]\ntype = \"file\"\ndir = {:?}\nformat = \"decoded\"\n",
        dups.display().to_string(),
        counts.display().to_string()
    );
    let (decoded, dead, _) = run(&input, &extra);
    assert!(decoded > 0);
    assert!(
        !dead.iter().any(|(t, _)| t == "Duplicate"),
        "no duplicate among the dead letters: {dead:?}"
    );
    // the duplicates' sink: one per decoded document, in the dead-letter envelope
    let written = json_lines_under(&dups);
    assert_eq!(written.len(), decoded);
    for d in &written {
        assert_eq!(d["attributeMap"]["error_type"], "Duplicate", "{d}");
        assert!(
            d["attributeMap"]["uri"].is_string(),
            "the original message: {d}"
        );
    }
    // the counts' rows: the newest row of each (key, minute) holds its count
    let mut newest: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for row in json_lines_under(&counts) {
        let key = (
            format!(
                "{}/{}/{}/{}",
                row["namespace"].as_str().unwrap(),
                row["doctype"].as_str().unwrap(),
                row["version"].as_str().unwrap(),
                row["outcome"].as_str().unwrap()
            ),
            row["minute"].as_str().unwrap().to_string(),
        );
        let n = row["count"].as_u64().unwrap();
        let e = newest.entry(key).or_default();
        *e = (*e).max(n);
    }
    let mut by_outcome: std::collections::BTreeMap<String, usize> = Default::default();
    for ((key, _), n) in &newest {
        let outcome = key.rsplit('/').next().unwrap().to_string();
        *by_outcome.entry(outcome).or_default() += *n as usize;
    }
    let mut expected: std::collections::BTreeMap<String, usize> = dead.into_iter().collect();
    expected.insert("decoded".to_string(), decoded);
    expected.insert("Duplicate".to_string(), written.len());
    assert_eq!(by_outcome, expected, "counts rows recount the sinks");
}

/// Runs `sluice validate` on the decoder config with `extra`; returns its stderr.
fn validate(extra: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    // the example's paths are relative to its folder: the copy elsewhere points to the same
    let examples = manifest().join("../examples/configs");
    let base = std::fs::read_to_string(examples.join("decoder-local.toml"))
        .unwrap()
        .replace("\"../", &format!("\"{}/../", examples.display()));
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, format!("{base}\n{extra}\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(manifest().join(".."))
        .args(["validate", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn nested_sinks_are_checked_with_their_paths() {
    let (ok, text) = validate(
        "[dedup]\n[dedup.sink]\ntype = \"file\"\ndir = \"dups\"\nformat = \"decoded\"\n\
         [counts]\n[counts.sink]\ntype = \"bucket\"",
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("`dedup.sink.format`: duplicates are dead letters"),
        "{text}"
    );
    assert!(
        text.contains("`counts.sink.type`: expected one of"),
        "{text}"
    );

    let (ok, text) = validate(
        "[dedup]\non_duplicate = \"drop\"\n[dedup.sink]\ntype = \"stdout\"\n[counts]\nevery = \"0s\"\n\
         [counts.sink]\ntype = \"file\"\ndri = \"x\"",
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("`dedup.sink`: on_duplicate = \"drop\" writes no duplicate"),
        "{text}"
    );
    assert!(
        text.contains("`counts.every`: expected a period above zero"),
        "{text}"
    );
    assert!(text.contains("`counts.sink.dri`"), "{text}");

    let (ok, text) = validate(
        "[dedup]\n[dedup.sink]\ntype = \"stdout\"\n[counts]\n[counts.sink]\ntype = \"stdout\"\nformat = \"decoded\"",
    );
    assert!(ok, "{text}");
}
