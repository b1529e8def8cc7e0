//! The object sink on a local directory inside real pipelines: every record lands exactly once,
//! whole objects only, no staging files left behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use sluice::{DeadLetter, MemorySink, MemorySource, Message, Pipeline};
use sluice_transforms::io::object::{BatchBounds, ObjectSink, OutputFormat, PathTemplate};

fn input(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(format!("{{\"id\":{i}}}"))
                .with_attribute("document_type", ["main", "event", "crash"][i % 3])
                .with_attribute(
                    "submission_timestamp",
                    format!("2024-03-0{}T10:00:00Z", 1 + i % 2),
                )
        })
        .collect()
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs `records` through a pipeline of `workers` into `dir`; returns the multiset of what the
/// objects hold and checks the layout on the way.
fn run(dir: &Path, workers: usize, records: Vec<Message>) -> BTreeMap<Message, usize> {
    let sink = ObjectSink::local(
        dir,
        PathTemplate::parse("${document_type:-none}/${submission_date:-unknown}/").unwrap(),
    )
    .unwrap()
    .with_format(OutputFormat::Json)
    .with_batch(BatchBounds {
        max_records: 7,
        max_bytes: 100_000,
        max_age: Duration::from_secs(3600),
    });
    let n = records.len();
    let source = MemorySource::from(records);
    let acked = source.clone();
    let refused = MemorySink::<DeadLetter>::new();
    let none_refused = refused.clone();
    let summary = Pipeline::new("local-test")
        .workers(workers)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("in", source.clone())
                .write("out", sink.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", refused.clone());
            Ok(())
        })
        .unwrap();
    assert!(acked.all_acked());
    assert!(none_refused.is_empty(), "{:?}", none_refused.records());
    let mut seen = BTreeMap::new();
    for f in files(dir) {
        let rel = f.strip_prefix(dir).unwrap().to_string_lossy().to_string();
        assert!(
            rel.ends_with(".ndjson.gz") && !rel.contains('#'),
            "unexpected file {rel}"
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            !lines.is_empty() && lines.len() <= 7,
            "{rel}: {} lines",
            lines.len()
        );
        let (ty, rest) = rel.split_once('/').unwrap();
        for line in lines {
            let m = Message::from_json_line(line.as_bytes()).unwrap();
            assert_eq!(m.attribute("document_type"), Some(ty));
            assert!(rest.starts_with(&m.attribute("submission_timestamp").unwrap()[..10]));
            *seen.entry(m).or_insert(0) += 1;
        }
    }
    assert_eq!(summary.written.values().sum::<u64>() as usize, n);
    seen
}

fn expected(records: &[Message]) -> BTreeMap<Message, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn one_worker_writes_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let records = input(100);
    assert_eq!(run(dir.path(), 1, records.clone()), expected(&records));
}

#[test]
fn two_workers_write_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let records = input(250);
    assert_eq!(run(dir.path(), 2, records.clone()), expected(&records));
}

#[test]
fn a_second_run_into_the_same_directory_adds_objects_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let records = input(30);
    run(dir.path(), 2, records.clone());
    let first = files(dir.path()).len();
    let mut twice = expected(&records);
    twice.values_mut().for_each(|n| *n *= 2);
    assert_eq!(run(dir.path(), 2, records), twice);
    assert_eq!(files(dir.path()).len(), first * 2);
}

#[test]
fn a_record_whose_path_cannot_exist_is_refused_alone_and_the_rest_lands() {
    // A 300-byte path segment (an attacker-chosen document type) cannot be a file name: that
    // record becomes a dead letter holding it untouched; the others in its batch are written and
    // the run succeeds and acknowledges everything.
    let dir = tempfile::tempdir().unwrap();
    let mut records = input(20);
    let poison = Message::new("{\"id\":\"poison\"}")
        .with_attribute("document_type", "x".repeat(300))
        .with_attribute("submission_timestamp", "2024-03-01T10:00:00Z");
    records.insert(7, poison.clone());
    let sink = ObjectSink::local(
        dir.path(),
        PathTemplate::parse("${document_type:-none}/${submission_date:-unknown}/").unwrap(),
    )
    .unwrap()
    .with_format(OutputFormat::Json);
    let source = MemorySource::from(records.clone());
    let acked = source.clone();
    let refused = MemorySink::<DeadLetter>::new();
    let dead = refused.clone();
    let summary = Pipeline::new("poison")
        .workers(2)
        .stack_traces(false)
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("in", source.clone())
                .write("out", sink.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", refused.clone());
            Ok(())
        })
        .unwrap();
    assert!(acked.all_acked());
    let dead = dead.records();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].original, poison);
    assert_eq!(dead[0].error_type, "out");
    assert!(
        dead[0].error_message.contains("over the limit of 255"),
        "{}",
        dead[0].error_message
    );
    assert_eq!(summary.written["out"], 20);
    let written: usize = files(dir.path())
        .iter()
        .map(|f| {
            let mut text = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            text.lines().count()
        })
        .sum();
    assert_eq!(written, 20);
}
