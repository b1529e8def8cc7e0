//! The config reference and `sluice validate` as a user meets them, through the binary:
//! `docs/config.md` is what `sluice config reference` prints, every `sluice config example`
//! validates, and `validate` on a read-only tree changes nothing, opens no connection and
//! lists every planted problem in one format.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use sluice_pipelines::config::{SinkConfig, SourceConfig};
use sluice_pipelines::reference;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn docs_config_md_is_the_generated_reference() {
    let out = sluice(&root(), &["config", "reference"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    let committed = std::fs::read_to_string(root().join("docs/config.md")).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/config.md is not the generated reference: regenerate it with `{}`",
        reference::REGENERATE
    );
}

/// Every job with every source (file sink) and every sink (file source): the printed starting
/// config validates where the repository's `examples/` and `schemas/` are beside it.
#[test]
fn every_example_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["examples", "schemas"] {
        std::os::unix::fs::symlink(root().join(name), dir.path().join(name)).unwrap();
    }
    let mut combinations = Vec::new();
    for job in reference::JOBS {
        for source in SourceConfig::kinds() {
            combinations.push((*job, *source, "file"));
        }
        for sink in SinkConfig::kinds() {
            combinations.push((*job, "file", *sink));
        }
    }
    for (job, source, sink) in combinations {
        let out = sluice(
            dir.path(),
            &["config", "example", job, "--source", source, "--sink", sink],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let config = text(&out.stdout);
        assert!(config.contains("# "), "commented: {config}");
        let path = dir.path().join(format!("{job}-{source}-{sink}.toml"));
        std::fs::write(&path, &config).unwrap();
        // from another working directory: the example's paths are relative to its folder
        let check = sluice(&root(), &["validate", path.to_str().unwrap()]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{job} {source} -> {sink}:\n{config}\n{}",
            text(&check.stderr)
        );
    }
    assert!(
        !dir.path().join("out").exists(),
        "validate created a directory"
    );
    let bad = sluice(
        dir.path(),
        &["config", "example", "decoder", "--sink", "gcs"],
    );
    assert_eq!(bad.status.code(), Some(2));
}

/// Every file and directory under `dir` with its kind, size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (bool, u64, SystemTime)> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            found.insert(path, (meta.is_dir(), meta.len(), meta.modified().unwrap()));
        }
    }
    found
}

fn set_read_only(dir: &Path, read_only: bool) {
    let mode = if read_only { "a-w" } else { "u+w" };
    let status = Command::new("chmod")
        .args(["-R", mode])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn validate_on_a_read_only_tree_changes_nothing_connects_nowhere_and_lists_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let conf = tree.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("data/in.ndjson"), "").unwrap();
    std::fs::write(tree.join("state-file"), "").unwrap();
    // a service that must never hear from `validate`
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();

    let broken = format!(
        r#"job = "decoder"
colour = "blue"
[source]
type = "file"
path = "../data/*.gz"
state_dir = "../state-file"
[decoder]
schemas = "../no-schemas"
[sink]
type = "s3"
bucket = "b"
endpoint = "http://{addr}"
allow_http = true
region = "us-east-1"
batch = {{ max_age = "soon" }}
[dead_letter]
type = "kafka"
brokers = "{addr}"
topic = "errors"
"#
    );
    std::fs::write(conf.join("broken.toml"), broken).unwrap();
    // valid, but only the built job can tell a geo database is missing; its output
    // directories and state directory do not exist and must not be created
    let schemas = root().join("schemas/json");
    let valid = format!(
        r#"job = "decoder"
[source]
type = "file"
path = "../data/in.ndjson"
state_dir = "../state"
[decoder]
schemas = "{schemas}"
geo_city_database = "../geo/city.mmdb"
[sink]
type = "file"
dir = "../out"
[dead_letter]
type = "file"
dir = "../errors"
"#,
        schemas = schemas.display()
    );
    std::fs::write(conf.join("geo.toml"), &valid).unwrap();
    std::fs::write(
        conf.join("valid.toml"),
        valid.replace("geo_city_database = \"../geo/city.mmdb\"\n", ""),
    )
    .unwrap();

    set_read_only(&tree, true);
    let before = snapshot(&tree);

    // run from elsewhere: relative paths are the config file's
    let out = sluice(tmp.path(), &["validate", "tree/conf/broken.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("config error: "))
        .collect();
    for (key, needle) in [
        ("colour", "unknown key"),
        ("decoder.schemas", "does not exist"),
        ("sink.batch.max_age", "expected a duration"),
        ("source.path", "matches no file"),
        ("source.state_dir", "exists and is not a directory"),
    ] {
        assert!(
            problems
                .iter()
                .any(|l| l.starts_with(&format!("config error: `{key}`: ")) && l.contains(needle)),
            "no `{key}` problem with {needle:?} in:\n{stderr}"
        );
    }
    assert_eq!(problems.len(), 5, "{stderr}");
    assert!(
        stderr.contains("5 problem(s) in `tree/conf/broken.toml`"),
        "{stderr}"
    );

    let out = sluice(tmp.path(), &["validate", "tree/conf/geo.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config error: `decoder`: cannot open the geo database")
            && stderr.contains("geo/city.mmdb"),
        "{stderr}"
    );

    let out = sluice(tmp.path(), &["validate", "tree/conf/valid.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = sluice(tmp.path(), &["validate", "--print", "tree/conf/valid.toml"]);
    assert!(
        text(&printed.stdout).contains("path = \"tree/conf/../data/in.ndjson\""),
        "{}",
        text(&printed.stdout)
    );

    assert_eq!(snapshot(&tree), before, "validate changed the tree");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "validate opened a connection"
    );
    set_read_only(&tree, false);
}
