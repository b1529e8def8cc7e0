//! A schema repository laid out like mozilla-pipeline-schemas (templates, a file named unlike
//! its folder, an unknown draft) through the binary: it loads with one warning listing every
//! file skipped; `strict_schemas` makes that one error listing them all, each cause once.

use std::path::Path;
use std::process::Command;

fn write(dir: &Path, relative: &str, contents: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// A config of the decoder job on a small Mozilla-like repository below `dir`.
fn setup(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("mps");
    write(
        &repo,
        "schemas/test/test/test.1.schema.json",
        r#"{"type": "object"}"#,
    );
    write(
        &repo,
        "templates/test/test/test.1.schema.json",
        r#"{"type": "object", @INCLUDE@ }"#,
    );
    write(&repo, "schemas/test/crash/crash-ping.1.schema.json", "{}");
    write(
        &repo,
        "schemas/test/old/old.1.schema.json",
        r#"{"$schema": "http://json-schema.org/draft-03/schema#"}"#,
    );
    let input = dir.join("input.ndjson");
    std::fs::write(&input, "").unwrap();
    let config = dir.join("job.toml");
    std::fs::write(
        &config,
        format!(
            r#"job = "decoder"
[source]
type = "file"
path = "{input}"
[decoder]
schemas = "{repo}"
[sink]
type = "stdout"
[dead_letter]
type = "stderr"
"#,
            input = input.display(),
            repo = repo.display(),
        ),
    )
    .unwrap();
    config
}

const SKIPPED: [&str; 3] = [
    "schemas/test/crash/crash-ping.1.schema.json",
    "schemas/test/old/old.1.schema.json",
    "templates/test/test/test.1.schema.json",
];

#[test]
fn a_mozilla_like_repository_loads_with_one_warning_listing_every_skipped_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("skipped 3 schema file(s)").count(),
        1,
        "{stderr}"
    );
    for file in SKIPPED {
        assert_eq!(stderr.matches(file).count(), 1, "{file} once in: {stderr}");
    }
}

#[test]
fn strict_schemas_make_every_skipped_file_one_error_with_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", config.to_str().unwrap()])
        .args(["--set", "decoder.strict_schemas=true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("cannot load schemas").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("cannot be indexed").count(), 1, "{stderr}");
    for file in SKIPPED {
        assert_eq!(stderr.matches(file).count(), 1, "{file} once in: {stderr}");
    }
    assert_eq!(stderr.matches("draft-03").count(), 1, "{stderr}");
}
