//! The built `sluice` binary on fixture files, compared line by line (sorted) with expected
//! outputs and dead letters committed under `tests/fixtures/` (regenerate: `UPDATE_GOLDEN=1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::read_object_lines;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every object under `dir` (skipping `skip`): its prefix, and its lines.
fn objects(dir: &Path, skip: Option<&str>) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            if skip.is_some_and(|s| rel == s) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                assert!(!name.starts_with('.'), "partial object left visible: {rel}");
                let prefix = rel.rsplit_once('/').map_or("", |(a, _)| a).to_string();
                out.push((prefix, read_object_lines(&p).unwrap()));
            }
        }
    }
    out
}

fn golden(name: &str, actual: &str) {
    let path = manifest().join("tests/fixtures/expected").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for (i, (x, y)) in e.iter().zip(&a).enumerate() {
        assert_eq!(x, y, "{name}: line {} differs", i + 1);
    }
    assert_eq!(e.len(), a.len(), "{name}: line counts differ");
}

fn summarize(objs: &[(String, Vec<String>)]) -> (String, String) {
    let mut lines: Vec<&str> = objs
        .iter()
        .flat_map(|(_, l)| l.iter().map(String::as_str))
        .collect();
    lines.sort_unstable();
    let mut layout: BTreeMap<&str, usize> = BTreeMap::new();
    for (prefix, l) in objs {
        *layout.entry(prefix).or_default() += l.len();
    }
    let layout: String = layout.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    (lines.join("\n") + "\n", layout)
}

#[test]
fn decoder_file_to_file_matches_golden_files() {
    for workers in ["1", "2"] {
        let out = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let dir = out.path().to_str().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(manifest())
            // the file source's positions, apart from other tests' and from the repository
            .env("SLUICE_DATA_DIR", state.path())
            .args([
                "run",
                "../examples/configs/decoder-local.toml",
                "--workers",
                workers,
            ])
            .args(["--set", "source.path=tests/fixtures/input/*.ndjson"])
            .args(["--set", "decoder.schemas=../schemas/json"])
            .args(["--set", &format!("sink.dir={dir}")])
            .args(["--set", &format!("dead_letter.dir={dir}")])
            .args(["--set", "pipeline.stack_traces=false"])
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let decoded = objects(out.path(), Some("errors"));
        let errors = objects(&out.path().join("errors"), None);
        let (decoded_lines, decoded_layout) = summarize(&decoded);
        let (error_lines, error_layout) = summarize(&errors);
        golden("decoded.ndjson", &decoded_lines);
        golden("decoded.layout", &decoded_layout);
        golden("dead_letters.ndjson", &error_lines);
        golden("dead_letters.layout", &error_layout);
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(stderr.contains("dead letters by error_type"), "{stderr}");
    }
}

#[test]
fn sink_job_stdin_to_stdout_passes_messages_through() {
    use std::io::Write;
    let input = std::fs::read(manifest().join("tests/fixtures/input/submissions.ndjson")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(manifest())
        .args(["run", "../examples/configs/sink-stdin-stdout.toml"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    let dead = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("{\"attributeMap\""))
        .count();
    let input_lines =
        std::fs::read_to_string(manifest().join("tests/fixtures/input/submissions.ndjson"))
            .unwrap()
            .lines()
            .count();
    assert_eq!(lines + dead, input_lines);
    assert!(
        dead > 0,
        "unframable lines and corrupt gzip are dead letters"
    );
}
