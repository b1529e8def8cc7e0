//! The registry on the example schemas, on archives, and on broken inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sluice_schemas::{check_depth_and_size, Error, LimitExceeded, Limits, SchemaRegistry};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("json")
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sluice-schemas")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, relative: &str, contents: &str) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}

/// Every file below `dir` as (relative path, bytes), sorted.
fn files_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn tar_gz(prefix: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for (relative, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{prefix}{relative}"), &bytes[..])
            .unwrap();
    }
    let mut encoder = builder.into_inner().unwrap();
    encoder.flush().unwrap();
    encoder.finish().unwrap()
}

fn keys(registry: &SchemaRegistry) -> Vec<(String, String, u32)> {
    registry
        .iter()
        .map(|s| {
            (
                s.namespace().to_owned(),
                s.doctype().to_owned(),
                s.version(),
            )
        })
        .collect()
}

#[test]
fn loads_the_example_schemas() {
    let registry = SchemaRegistry::load(example_dir()).unwrap();
    assert_eq!(
        keys(&registry),
        [
            ("firefox_desktop".into(), "newtab".into(), 1),
            ("org_mozilla_fenix".into(), "baseline".into(), 1),
            ("org_mozilla_fenix".into(), "events".into(), 1),
            ("org_mozilla_fenix".into(), "metrics".into(), 1),
            ("telemetry".into(), "crash".into(), 4),
            ("telemetry".into(), "event".into(), 4),
            ("telemetry".into(), "main".into(), 4),
            ("telemetry".into(), "new_profile".into(), 4),
            ("test".into(), "split".into(), 1),
            ("test".into(), "split_remainder".into(), 1),
            ("test".into(), "split_subset".into(), 1),
            ("test".into(), "test".into(), 1),
        ]
    );
    assert_eq!(registry.len(), 12);
    // only test/split declares a split, into the two others
    let split: Vec<&str> = registry
        .iter()
        .filter(|s| s.split_config().is_some())
        .map(|s| s.doctype())
        .collect();
    assert_eq!(split, ["split"]);
    let config = registry
        .get("test", "split", 1)
        .unwrap()
        .split_config()
        .unwrap();
    assert!(config.preserve_original);
    assert_eq!(config.subsets[0].target.doctype, "split-subset");
    assert_eq!(
        config.remainder.as_ref().unwrap().doctype,
        "split-remainder"
    );
    assert!(registry.doctype_exists("telemetry", "main"));
    assert!(registry.doctype_exists("org-mozilla-fenix", "baseline"));
    assert!(registry.doctype_exists("org_mozilla_fenix", "baseline"));
    assert!(!registry.doctype_exists("telemetry", "heartbeat"));
    assert!(!registry.doctype_exists("nope", "main"));

    let baseline = registry.get("org-mozilla-fenix", "baseline", 1).unwrap();
    assert!(baseline.source().ends_with("baseline.1.schema.json"));
    assert_eq!(baseline.as_json()["title"], "baseline");
    assert_eq!(
        registry.versions("telemetry", "main").collect::<Vec<_>>(),
        [4]
    );

    assert!(registry.get("telemetry", "main", 5).is_none());
    let err = registry.find("telemetry", "main", 5).unwrap_err();
    assert!(matches!(err, Error::NotFound { version: 5, .. }));
    assert_eq!(err.to_string(), "schema `telemetry/main.5` not found");
}

#[test]
fn lookups_snake_case_names() {
    let mut registry = SchemaRegistry::empty();
    registry
        .add("myNamespace", "camelCase", 2, json!({"type": "object"}))
        .unwrap();
    for (ns, dt) in [
        ("myNamespace", "camelCase"),
        ("my_namespace", "camel_case"),
        ("my-namespace", "camel-case"),
    ] {
        assert!(registry.get(ns, dt, 2).is_some(), "{ns}/{dt}");
    }
    let err = registry
        .add("my-namespace", "camel_case", 2, json!({}))
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
}

#[test]
fn a_tar_gz_with_top_folder_and_schemas_segment_loads_the_same() {
    let top = "mozilla-pipeline-schemas-abc123";
    let mut files: Vec<(String, Vec<u8>)> = files_below(&example_dir())
        .into_iter()
        .map(|(path, bytes)| (format!("{top}/schemas/{path}"), bytes))
        .collect();
    files.push((format!("{top}/README.txt"), b"not a schema".to_vec()));
    files.push((
        format!("{top}/schemas/telemetry/main/main.4.bq"),
        b"[]".to_vec(),
    ));
    let archive = tar_gz("", &files);
    let dir = scratch("tar");
    let path = dir.join("schemas.tar.gz");
    std::fs::write(&path, &archive).unwrap();

    let from_dir = SchemaRegistry::load(example_dir()).unwrap();
    let from_file = SchemaRegistry::load(&path).unwrap();
    let from_reader = SchemaRegistry::from_tar_gz_reader(&archive[..], "download").unwrap();
    assert_eq!(keys(&from_file), keys(&from_dir));
    assert_eq!(keys(&from_reader), keys(&from_dir));
    let main = from_reader.get("telemetry", "main", 4).unwrap();
    assert_eq!(
        main.source(),
        "download:mozilla-pipeline-schemas-abc123/schemas/telemetry/main/main.4.schema.json"
    );

    // without any prefix too
    let plain = tar_gz("", &files_below(&example_dir()));
    let registry = SchemaRegistry::from_tar_gz_reader(&plain[..], "plain").unwrap();
    assert_eq!(keys(&registry), keys(&from_dir));
}

#[test]
fn an_archive_with_a_broken_schema_names_the_entry() {
    let files = vec![(
        "telemetry/main/main.4.schema.json".to_owned(),
        b"{ not json".to_vec(),
    )];
    let archive = tar_gz("top/", &files);
    // nothing else to load: an error, listing the file
    let err = only_file(SchemaRegistry::from_tar_gz_reader(&archive[..], "a.tgz").unwrap_err());
    assert!(
        matches!(err, Error::InvalidJson { ref file, .. }
        if file == "a.tgz:top/telemetry/main/main.4.schema.json"),
        "{err}"
    );
    let err = SchemaRegistry::from_tar_gz_reader(&b"not gzip"[..], "b.tgz").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

/// The one file of an [`Error::Unindexable`].
fn only_file(err: Error) -> Error {
    match err {
        Error::Unindexable { mut files, .. } if files.len() == 1 => files.remove(0),
        other => panic!("expected one unindexable file: {other}"),
    }
}

/// Loads a directory holding only `test/test/test.1.schema.json` with these contents.
fn load_one(test: &str, contents: &str) -> (PathBuf, Error) {
    let dir = scratch(test);
    let file = write(&dir, "test/test/test.1.schema.json", contents);
    let err = only_file(SchemaRegistry::load(&dir).unwrap_err());
    (file, err)
}

#[test]
fn invalid_json_is_an_error_naming_the_file() {
    let (file, err) = load_one("invalid-json", "{\"type\": ");
    assert!(matches!(err, Error::InvalidJson { .. }), "{err}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn unknown_draft_is_an_error_naming_the_file() {
    let (file, err) = load_one(
        "unknown-draft",
        r#"{"$schema": "http://json-schema.org/draft-03/schema#", "type": "object"}"#,
    );
    assert!(
        matches!(err, Error::UnsupportedDraft { ref uri, .. } if uri == "http://json-schema.org/draft-03/schema#"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );

    let (_, err) = load_one("draft-not-a-string", r#"{"$schema": 7}"#);
    assert!(matches!(err, Error::UnsupportedDraft { .. }), "{err}");
}

#[test]
fn every_supported_draft_loads() {
    for uri in [
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    ] {
        let mut registry = SchemaRegistry::empty();
        registry
            .add("a", "b", 1, json!({"$schema": uri, "type": "object"}))
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
    }
}

#[test]
fn uncompilable_schemas_are_errors_naming_the_file() {
    for (name, contents) in [
        ("bad-type", r#"{"type": "nope"}"#),
        ("bad-pattern", r#"{"pattern": "(unclosed"}"#),
        ("bad-minimum", r#"{"minimum": "zero"}"#),
        (
            "remote-ref",
            r#"{"$ref": "https://example.com/other.json"}"#,
        ),
        ("missing-ref", r##"{"$ref": "#/definitions/nothing"}"##),
    ] {
        let (file, err) = load_one(name, contents);
        assert!(matches!(err, Error::Compile { .. }), "{name}: {err}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{name}: {err}"
        );
    }
}

#[test]
fn misplaced_schema_files_are_skipped_and_other_files_ignored() {
    let dir = scratch("misplaced");
    write(&dir, "test/test/test.1.schema.json", "{}");
    write(&dir, "README.md", "# schemas");
    write(&dir, "test/test/notes.txt", "notes");
    write(&dir, ".git/objects/x.1.schema.json", "garbage");
    let registry = SchemaRegistry::load(&dir).unwrap();
    assert_eq!(registry.len(), 1);
    assert!(registry.skipped().is_empty());

    write(&dir, "test/test.1.schema.json", "{}");
    let registry = SchemaRegistry::load(&dir).unwrap();
    assert_eq!(registry.len(), 1);
    let err = &registry.skipped()[0];
    assert!(
        matches!(err, Error::Layout { ref file, .. } if file.ends_with("test/test.1.schema.json")),
        "{err}"
    );
    let err = only_file(SchemaRegistry::load_strict(&dir).unwrap_err());
    assert!(matches!(err, Error::Layout { .. }), "{err}");
}

/// A repository laid out like mozilla-pipeline-schemas: generated `schemas/`, `templates/`
/// (not JSON, with includes), a file named unlike its folder, one of an unknown draft.
fn mozilla_like(name: &str) -> PathBuf {
    let dir = scratch(name);
    write(&dir, "README.md", "# mozilla-pipeline-schemas");
    write(
        &dir,
        "schemas/test/test/test.1.schema.json",
        r#"{"type": "object"}"#,
    );
    write(
        &dir,
        "schemas/telemetry/main/main.4.schema.json",
        r#"{"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}"#,
    );
    write(&dir, "schemas/telemetry/main/main.4.bq", "[]");
    write(
        &dir,
        "templates/telemetry/main/main.4.schema.json",
        r#"{"type": "object", "properties": { @TELEMETRY_ENVIRONMENT_1_JSON@ }}"#,
    );
    write(&dir, "templates/include/telemetry/environment.1.json", "{}");
    write(
        &dir,
        "schemas/telemetry/crash/crash-ping.4.schema.json",
        "{}",
    );
    write(
        &dir,
        "schemas/telemetry/old/old.1.schema.json",
        r#"{"$schema": "http://json-schema.org/draft-03/schema#"}"#,
    );
    dir
}

#[test]
fn a_mozilla_like_repository_loads_what_it_can_and_lists_the_rest() {
    let dir = mozilla_like("mozilla-like");
    let registry = SchemaRegistry::load(&dir).unwrap();
    assert_eq!(
        keys(&registry),
        [
            ("telemetry".to_owned(), "main".to_owned(), 4),
            ("test".to_owned(), "test".to_owned(), 1),
        ]
    );
    let skipped: Vec<String> = registry
        .skipped()
        .iter()
        .map(|e| {
            let file = e.file().unwrap();
            file[dir.display().to_string().len() + 1..].to_owned()
        })
        .collect();
    assert_eq!(
        skipped,
        [
            "schemas/telemetry/crash/crash-ping.4.schema.json",
            "schemas/telemetry/old/old.1.schema.json",
            "templates/telemetry/main/main.4.schema.json",
        ]
    );
    assert!(registry.skipped()[2].to_string().contains("a template"));

    // the same as an archive
    let archive = tar_gz("mps-abc123/", &files_below(&dir));
    let from_tar = SchemaRegistry::from_tar_gz_reader(&archive[..], "mps.tgz").unwrap();
    assert_eq!(keys(&from_tar), keys(&registry));
    assert_eq!(from_tar.skipped().len(), 3);

    // strict: one error listing every file, each cause said once
    let err = SchemaRegistry::load_strict(&dir).unwrap_err();
    let Error::Unindexable { ref files, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(files.len(), 3);
    let text = err.to_string();
    assert!(text.starts_with("3 schema file(s) in "), "{text}");
    for name in ["crash-ping.4", "old.1", "templates/telemetry/main"] {
        assert_eq!(text.matches(name).count(), 1, "{name} once in: {text}");
    }
    // an error's causes follow it once
    let invalid = only_file(
        SchemaRegistry::load(&{
            let d = scratch("invalid-describe");
            write(&d, "a/b/b.1.schema.json", "{ nope");
            d
        })
        .unwrap_err(),
    );
    let described = invalid.describe();
    assert_eq!(
        described.matches("is not valid json").count(),
        1,
        "{described}"
    );
    assert!(described.contains(": key must be a string"), "{described}");
}

#[test]
fn names_colliding_after_snake_case_are_an_error() {
    let dir = scratch("collide");
    write(&dir, "org-mozilla-x/b/b.1.schema.json", "{}");
    write(&dir, "org_mozilla_x/b/b.1.schema.json", "{}");
    let err = SchemaRegistry::load(&dir).unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
}

#[test]
fn bad_sources_are_errors() {
    let dir = scratch("empty");
    let err = SchemaRegistry::load(&dir).unwrap_err();
    assert!(matches!(err, Error::NoSchemas { .. }), "{err}");
    let err = SchemaRegistry::load(dir.join("missing.tar.gz")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = SchemaRegistry::load(dir.join("schemas.zip")).unwrap_err();
    assert!(matches!(err, Error::UnsupportedSource { .. }), "{err}");
    let err = SchemaRegistry::from_dir(dir.join("missing")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

fn valid_main() -> Value {
    json!({
        "type": "main",
        "id": "2d6fdb4d-6d7e-4c3b-9d2e-1f0a3b4c5d6e",
        "creationDate": "2018-03-12T21:02:18.123Z",
        "version": 4,
        "clientId": "c0ffeec0-ffee-c0ff-eec0-ffeec0ffeec0",
        "payload": {"histograms": {"GC_MS": {
            "bucket_count": 50, "histogram_type": 0, "sum": 3, "range": [1, 10000],
            "values": {"0": 1, "1": 2}
        }}}
    })
}

#[test]
fn validation_failures_name_the_json_pointer() {
    let registry = SchemaRegistry::load(example_dir()).unwrap();
    let main = registry.get("telemetry", "main", 4).unwrap();
    assert!(main.validate(&valid_main()).is_ok());
    assert!(main.is_valid(&valid_main()));

    let mut doc = valid_main();
    doc["clientId"] = json!("x");
    let failure = main.validate(&doc).unwrap_err();
    assert_eq!(failure.instance_path(), "/clientId");
    assert!(
        failure
            .to_string()
            .starts_with("/clientId: \"x\" does not match"),
        "{failure}"
    );

    let mut doc = valid_main();
    doc["payload"]["histograms"]["GC_MS"]["values"]["1"] = json!(-2);
    doc["creationDate"] = json!("yesterday");
    let failure = main.validate(&doc).unwrap_err();
    let paths: Vec<&str> = failure
        .issues()
        .iter()
        .map(|i| i.instance_path.as_str())
        .collect();
    assert!(
        paths.contains(&"/payload/histograms/GC_MS/values/1"),
        "{failure}"
    );
    assert!(paths.contains(&"/creationDate"), "{failure}");
    assert!(
        failure.to_string().contains("is not a \"date-time\""),
        "{failure}"
    );

    let mut doc = valid_main();
    doc.as_object_mut().unwrap().remove("clientId");
    let failure = main.validate(&doc).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "(root): \"clientId\" is a required property"
    );

    let err: Error = failure.into();
    assert!(matches!(err, Error::Validation(_)));
}

#[test]
fn the_depth_guard_rejects_a_1000_deep_document_without_overflow() {
    let mut doc = json!({"leaf": true});
    for _ in 0..1000 {
        doc = json!({ "a": doc });
    }
    let err = Limits::default().check(&doc).unwrap_err();
    assert!(matches!(err, LimitExceeded::TooDeep { max_depth: 64, .. }));
    assert_eq!(
        err.to_string(),
        format!("{}: document nested deeper than 64 levels", "/a".repeat(64))
    );

    let wide = Value::Array(vec![json!(0); 11]);
    assert!(matches!(
        check_depth_and_size(&wide, 64, 10),
        Err(LimitExceeded::TooLong {
            len: 11,
            max_len: 10,
            ..
        })
    ));

    // serde_json refuses such documents on its own (recursion limit 128)
    let text = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let err = serde_json::from_str::<Value>(&text).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

#[test]
fn the_registry_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SchemaRegistry>();
    assert_send_sync::<sluice_schemas::Error>();
}
