//! The object sink against a real S3-compatible server, read back with an independent client.
//!
//! Needs `SLUICE_TEST_S3_ENDPOINT` (e.g. `http://127.0.0.1:5000` from
//! `scripts/services/s3.sh start`) and `python3` with boto3; skipped when the variable is unset.
#![cfg(feature = "s3")]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use sluice::{DeadLetter, MemorySink, MemorySource, Message, Pipeline};
use sluice_transforms::io::object::{
    BatchBounds, Compression, ObjectSink, OutputFormat, PathTemplate, S3Options,
};

fn endpoint() -> Option<String> {
    match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            println!(
                "skipped: set SLUICE_TEST_S3_ENDPOINT (e.g. http://127.0.0.1:5000 after \
                 scripts/services/s3.sh start) to run the S3 integration tests"
            );
            None
        }
    }
}

/// Runs a python3 snippet with boto3 set up as `s3` against `endpoint`; returns its stdout.
fn boto3(endpoint: &str, code: &str, args: &[&str]) -> String {
    let script = format!(
        "import sys, json, gzip, boto3\n\
         s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
             aws_access_key_id='test', aws_secret_access_key='test')\n{code}"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(endpoint)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn create_bucket(endpoint: &str, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!("sluice-{name}-{}-{nanos}", std::process::id());
    boto3(endpoint, "s3.create_bucket(Bucket=sys.argv[2])", &[&bucket]);
    bucket
}

/// Every object of `bucket` as (key, lines), read and gunzipped by boto3.
fn read_back(endpoint: &str, bucket: &str) -> Vec<(String, Vec<String>)> {
    let code = "\
out = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2]):
    for o in page.get('Contents', []):
        body = s3.get_object(Bucket=sys.argv[2], Key=o['Key'])['Body'].read()
        if o['Key'].endswith('.gz'):
            body = gzip.decompress(body)
        out.append([o['Key'], body.decode('utf-8').splitlines()])
json.dump(out, sys.stdout)
";
    let text = boto3(endpoint, code, &[bucket]);
    let mut objects: Vec<(String, Vec<String>)> = serde_json::from_str(&text).unwrap();
    objects.sort();
    objects
}

fn input(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(format!("{{\"id\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)))
                .with_attribute("document_namespace", ["telemetry", "glean"][i % 2])
                .with_attribute("document_type", ["main", "event", "crash"][i % 3])
                .with_attribute("document_version", "4")
                .with_attribute("submission_timestamp", "2024-03-01T10:11:12Z")
        })
        .collect()
}

fn run(sink: ObjectSink, records: Vec<Message>, workers: usize) {
    let n = records.len() as u64;
    let source = MemorySource::from(records);
    let acked = source.clone();
    let refused = MemorySink::<DeadLetter>::new();
    let none_refused = refused.clone();
    let summary = Pipeline::new("s3-test")
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
    assert_eq!(summary.written.values().sum::<u64>(), n);
    assert!(acked.all_acked());
    assert!(none_refused.is_empty(), "{:?}", none_refused.records());
}

fn multiset<I: IntoIterator<Item = Message>>(records: I) -> BTreeMap<Message, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

#[test]
fn pipeline_writes_partitioned_gzip_objects_that_boto3_reads_back() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = create_bucket(&endpoint, "layout");
    let options = S3Options::new(&bucket)
        .with_endpoint(&endpoint)
        .with_region("us-east-1")
        .with_credentials("test", "test");
    let template = PathTemplate::parse(
        "${document_namespace:-none}/${document_type:-none}/v${document_version:-0}/${submission_date:-unknown}/",
    )
    .unwrap();
    let sink = ObjectSink::s3(&options, template)
        .unwrap()
        .with_format(OutputFormat::Json)
        .with_compression(Compression::Gzip)
        .with_batch(BatchBounds {
            max_records: 40,
            max_bytes: 1_000_000,
            max_age: Duration::from_secs(3600),
        });
    let records = input(300);
    run(sink, records.clone(), 2);

    let objects = read_back(&endpoint, &bucket);
    assert!(objects.len() >= 6, "{} objects", objects.len());
    let mut seen = Vec::new();
    for (key, lines) in &objects {
        assert!(
            key.ends_with(".ndjson.gz") && key.contains("/s3-test-") && !key.contains(':'),
            "{key}"
        );
        assert!(
            !lines.is_empty() && lines.len() <= 40,
            "{key}: {}",
            lines.len()
        );
        for line in lines {
            let m = Message::from_json_line(line.as_bytes()).unwrap();
            let dir = format!(
                "{}/{}/v4/2024-03-01/",
                m.attribute("document_namespace").unwrap(),
                m.attribute("document_type").unwrap()
            );
            assert!(key.starts_with(&dir), "{key} holds a record of {dir}");
            seen.push(m);
        }
    }
    assert_eq!(multiset(seen), multiset(records));
}

#[test]
fn big_objects_use_multipart_and_arrive_whole() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = create_bucket(&endpoint, "multipart");
    let options = S3Options::new(&bucket)
        .with_endpoint(&endpoint)
        .with_credentials("test", "test");
    // 12 records of ~1 MiB: one object of ~12 MiB, sent as parts of 5 MiB (S3's minimum).
    let records: Vec<Message> = (0..12)
        .map(|i| Message::new(format!("{i:02}{}", "y".repeat(1 << 20))))
        .collect();
    let sink = ObjectSink::s3(&options, PathTemplate::parse("big/").unwrap())
        .unwrap()
        .with_format(OutputFormat::Text)
        .with_compression(Compression::None)
        .with_part_size(5 << 20);
    run(sink, records.clone(), 1);
    let objects = read_back(&endpoint, &bucket);
    assert_eq!(objects.len(), 1);
    assert!(objects[0].0.starts_with("big/") && objects[0].0.ends_with(".txt"));
    // A multipart object's ETag is `"<md5 of part md5s>-<parts>"`: ~12 MiB in 5 MiB parts is 3.
    let etag = boto3(
        &endpoint,
        "print(s3.head_object(Bucket=sys.argv[2], Key=sys.argv[3])['ETag'])",
        &[&bucket, &objects[0].0],
    );
    assert!(etag.trim().ends_with("-3\""), "etag {etag}");
    let back: Vec<Message> = objects[0]
        .1
        .iter()
        .map(|l| Message::new(l.clone()))
        .collect();
    assert_eq!(multiset(back), multiset(records));
}

#[test]
fn an_unreachable_bucket_fails_the_pipeline_without_acknowledging() {
    let Some(endpoint) = endpoint() else { return };
    // No such bucket: the put fails (NoSuchBucket), which must stop the run with an error.
    let options = S3Options::new("sluice-no-such-bucket-here")
        .with_endpoint(&endpoint)
        .with_credentials("test", "test");
    let sink = ObjectSink::s3(&options, PathTemplate::parse("x/").unwrap()).unwrap();
    let source = MemorySource::from(input(5));
    let acked = source.clone();
    let refused = MemorySink::<DeadLetter>::new();
    let err = Pipeline::new("s3-fail")
        .run(move |p| {
            let mut dead_letters = p.dead_letters();
            p.read("in", source.clone())
                .write("out", sink.clone())
                .failures_to(&mut dead_letters);
            dead_letters.write("dead_letters", refused.clone());
            Ok(())
        })
        .unwrap_err();
    assert!(
        sluice::chain(&err).contains("cannot upload object `x/s3-fail-"),
        "{err}"
    );
    assert!(acked.acked().is_empty());
}
