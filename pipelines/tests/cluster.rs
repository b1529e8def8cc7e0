//! `sluice run` as a two-process timely cluster over loopback: every input record ends up once,
//! decoded or dead-lettered, across the two processes' objects.

mod support;

use std::path::Path;
use std::process::Command;

use sluice_testing::cluster::{free_port, wait_all};
use support::read_object_lines;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn objects(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            objects(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn two_processes_decode_every_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let input = root().join("pipelines/tests/fixtures/input/submissions.ndjson");
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .current_dir(root())
                // the file source's positions, apart from other tests' and from the repository
                .env("SLUICE_DATA_DIR", tmp.path().join("state"))
                .args([
                    "run",
                    "examples/configs/decoder-local.toml",
                    "--no-progress",
                ])
                .args(["--set", &format!("source.path={}", input.display())])
                .args(["--set", &format!("sink.dir={}", out.display())])
                .args(["--set", &format!("dead_letter.dir={}", out.display())])
                .args([
                    "--workers",
                    "1",
                    "--processes",
                    "2",
                    "--process",
                    &i.to_string(),
                ])
                .arg("--hostfile")
                .arg(&hosts)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(tmp.path().join(format!("stderr-{i}"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both run before either is waited for: each blocks until its peer connects.
    let mut children = children;
    let statuses = wait_all(&mut children, std::time::Duration::from_secs(120));
    for (i, status) in statuses.iter().enumerate() {
        let stderr = std::fs::read_to_string(tmp.path().join(format!("stderr-{i}"))).unwrap();
        assert!(status.success(), "process {i} failed: {stderr}");
    }
    let mut files = Vec::new();
    objects(&out, &mut files);
    let written_by: std::collections::BTreeSet<bool> = files
        .iter()
        .map(|f| f.to_string_lossy().contains("-w0001-"))
        .collect();
    assert_eq!(
        written_by.len(),
        2,
        "both processes wrote objects: {files:?}"
    );
    let lines: usize = files
        .iter()
        .map(|f| read_object_lines(f).unwrap().len())
        .sum();
    let input_lines = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(
        lines, input_lines,
        "every record once, decoded or dead-lettered"
    );
}

#[test]
fn a_hostfile_that_disagrees_with_processes_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hosts.txt");
    std::fs::write(&hosts, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root())
        .env("SLUICE_DATA_DIR", tmp.path().join("state"))
        .args([
            "run",
            "examples/configs/decoder-local.toml",
            "--processes",
            "3",
        ])
        .args(["--process", "0", "--hostfile"])
        .arg(&hosts)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists 2 process address(es)"));
}
