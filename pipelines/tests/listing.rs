//! Cluster file jobs agree on the file list: `sluice validate` prints the input listing's
//! digest, and `run --expect-listing DIGEST` refuses to start (exit 2) on a host whose listing
//! differs, before reading anything.

use std::path::Path;
use std::process::{Command, Output};

fn sluice(args: &[&str], input: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        // the file source's positions, apart from other tests' and from the repository
        .env("SLUICE_DATA_DIR", out.with_extension("state"))
        .args(["--set", &format!("source.path={}/*.txt", input.display())])
        .args(["--set", "source.format=text"])
        .args(["--set", &format!("sink.dir={}", out.display())])
        .args(["--set", &format!("dead_letter.dir={}", out.display())])
        .output()
        .unwrap()
}

#[test]
fn a_host_that_lists_other_files_than_the_expected_digest_fails_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.txt"), "one\ntwo\n").unwrap();
    let config = "../examples/configs/sink-local.toml";

    let validated = sluice(&["validate", config], &input, &out);
    let text = String::from_utf8_lossy(&validated.stdout);
    assert!(validated.status.success(), "{text}");
    let digest = text
        .split_whitespace()
        .skip_while(|w| *w != "digest")
        .nth(1)
        .unwrap_or_else(|| panic!("validate prints the listing digest: {text}"))
        .to_string();
    assert_eq!(digest.len(), 16, "{text}");

    let same = sluice(&["run", config, "--expect-listing", &digest], &input, &out);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );

    // another host sees one more file (or a file of another size): it refuses to run
    std::fs::write(input.join("b.txt"), "three\n").unwrap();
    let other = sluice(&["run", config, "--expect-listing", &digest], &input, &out);
    let log = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{log}");
    assert!(log.contains("differ from the expected listing"), "{log}");
    assert!(log.contains("2 files"), "{log}");
    assert!(!log.contains("starting"), "nothing is read: {log}");
}
