//! Clean streams through the binary: data a job writes on stdout or stderr never mixes with
//! logs or the summary; `--quiet` prints nothing but data; `--log-format json` lines parse;
//! exit codes are distinct; `--version` names the commit; every subcommand's help has examples.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Generated submissions, a third of them broken in every way the generator knows.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("in.ndjson");
    let out = sluice(&[
        "generate",
        "--count",
        "150",
        "--error-rate",
        "0.3",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

/// A decoder job on `input` with the given `[sink]` and `[dead_letter]` bodies.
fn config(dir: &Path, input: &Path, sink: &str, dead_letter: &str) -> PathBuf {
    let text = format!(
        "job = \"decoder\"\n[source]\ntype = \"file\"\npath = {input:?}\n[decoder]\nschemas = {schemas:?}\n[sink]\n{sink}\n[dead_letter]\n{dead_letter}\n",
        input = input.display().to_string(),
        schemas = root().join("schemas/json").display().to_string(),
    );
    let path = dir.join(format!("job-{}.toml", dir.read_dir().unwrap().count()));
    std::fs::write(&path, text).unwrap();
    path
}

fn file_sink(dir: &Path, name: &str) -> String {
    format!(
        "type = \"file\"\ndir = {:?}\ncompression = \"none\"",
        dir.join(name).display().to_string()
    )
}

/// Every line is a JSON object; returns how many.
fn json_lines(stream: &str, what: &str) -> usize {
    let mut n = 0;
    for line in stream.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("{what}: not JSON ({e}): {line:?}\nwhole stream:\n{stream}")
        });
        assert!(v.is_object(), "{what}: {line}");
        n += 1;
    }
    n
}

#[test]
fn dead_letters_on_stderr_are_ndjson_and_logs_move_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path());
    let cfg = config(
        tmp.path(),
        &input,
        &file_sink(tmp.path(), "out"),
        "type = \"stderr\"",
    );
    let out = sluice(&["run", "--no-progress", cfg.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    let dead = json_lines(&stderr, "stderr");
    assert!(dead > 0, "no dead letter on stderr; stdout:\n{stdout}");
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["attributeMap"]["error_type"].is_string(), "{line}");
    }
    // the logs and the summary went to stdout, and count what stderr holds
    assert!(stdout.contains("dead letters by error_type"), "{stdout}");
    assert!(
        stdout.contains(&format!("; {dead} dead letters")),
        "{stdout}"
    );
}

#[test]
fn with_data_on_both_streams_logs_go_nowhere_or_to_the_log_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path());
    let cfg = config(
        tmp.path(),
        &input,
        "type = \"stdout\"\nformat = \"decoded\"",
        "type = \"stderr\"",
    );
    let log = tmp.path().join("sluice.log");
    for log_file in [None, Some(&log)] {
        // each run reads the whole input (a file job resumes by default)
        let mut args = vec![
            "run",
            "--no-progress",
            "--from-start",
            cfg.to_str().unwrap(),
        ];
        if let Some(l) = log_file {
            args.extend(["--log-file", l.to_str().unwrap()]);
        }
        let out = sluice(&args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let decoded = json_lines(&stdout, "stdout");
        let dead = json_lines(&stderr, "stderr");
        assert_eq!(decoded + dead, 150, "every record once: stdout or stderr");
        if log_file.is_some() {
            let logged = std::fs::read_to_string(&log).unwrap();
            assert!(logged.contains("starting"), "{logged}");
            assert!(logged.contains("read 150 records"), "the summary: {logged}");
        }
    }
}

#[test]
fn quiet_prints_nothing_but_data() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path());
    let cfg = config(
        tmp.path(),
        &input,
        "type = \"stdout\"",
        &file_sink(tmp.path(), "errors"),
    );
    let out = sluice(&["run", "--quiet", cfg.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "--quiet wrote to stderr");
    assert!(json_lines(&stdout, "stdout") > 0);
    assert!(tmp.path().join("errors").exists(), "dead letters written");
}

#[test]
fn json_logs_parse_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path());
    let cfg = config(
        tmp.path(),
        &input,
        &file_sink(tmp.path(), "out"),
        &file_sink(tmp.path(), "errors"),
    );
    let out = sluice(&[
        "run",
        "--no-progress",
        "--log-format",
        "json",
        cfg.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(json_lines(&stderr, "logs") >= 2, "{stderr}");
    let levels: Vec<String> = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["level"].to_string())
        .collect();
    assert!(levels.iter().all(|l| l != "null"), "{stderr}");
    assert!(stderr.contains("starting"), "{stderr}");
    assert!(
        stderr.contains("dead letters by error_type"),
        "the summary: {stderr}"
    );

    // a config error, in the same format
    let out = sluice(&[
        "validate",
        "--log-format",
        "json",
        cfg.to_str().unwrap(),
        "--set",
        "colour=1",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(json_lines(&stderr, "config errors") >= 2, "{stderr}");
    assert!(stderr.contains("`colour`: unknown key"), "{stderr}");
}

#[test]
fn exit_codes_are_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path());
    let cfg = config(
        tmp.path(),
        &input,
        &file_sink(tmp.path(), "out"),
        &file_sink(tmp.path(), "errors"),
    );
    let cfg = cfg.to_str().unwrap();
    // a config error
    let out = sluice(&["run", cfg, "--set", "workers=0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // a bad command line
    let out = sluice(&["run", cfg, "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // the metrics address taken: a failure of the run, not of its config
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sluice(&["run", "--no-progress", cfg, "--metrics-addr", &addr]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    // success
    let out = sluice(&["run", "--no-progress", cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn version_names_the_commit() {
    let out = sluice(&["--version"]);
    let version = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        version.starts_with(&format!("sluice {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    match head {
        Ok(h) if h.status.success() => {
            let commit = text(&h.stdout);
            assert!(version.contains(commit.trim()), "{version} vs {commit}");
        }
        _ => assert!(version.contains("(commit unknown)"), "{version}"),
    }
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in [
        vec!["run"],
        vec!["validate"],
        vec!["generate"],
        vec!["schemas"],
        vec!["bench"],
        vec!["config"],
        vec!["config", "example"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let out = sluice(&args);
        let help = text(&out.stdout);
        assert!(out.status.success(), "{sub:?}: {}", text(&out.stderr));
        assert!(help.contains("Examples:\n  sluice "), "{sub:?}:\n{help}");
    }
}
