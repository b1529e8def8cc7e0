//! The shared conformance suites (`sluice_testing::conformance`) against every connector of
//! this crate: the file and stdin sources, the writer (stdout/stderr) sink, and the object sink
//! on an in-memory store, a local directory and S3 (moto, when `SLUICE_TEST_S3_ENDPOINT` is set).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice::Message;
use sluice_testing::conformance::{
    sink_conformance, source_conformance, SinkUnderTest, SourceUnderTest,
};
use sluice_transforms::io::file::FileSource;
use sluice_transforms::io::format::{InputFormat, OutputFormat};
use sluice_transforms::io::object::{BatchBounds, Compression, ObjectSink, PathTemplate};
use sluice_transforms::io::stdio::{StdinSource, WriterSink};

/// A record whose `document_type` makes a 300-byte path segment: no store can take it.
fn unwritable() -> Message {
    Message::new("{\"id\":\"poison\"}")
        .with_attribute("document_type", "x".repeat(300))
        .with_attribute("document_namespace", "telemetry")
        .with_attribute("submission_timestamp", "2024-03-01T10:11:12Z")
}

fn template() -> PathTemplate {
    PathTemplate::parse(
        "${document_namespace:-none}/${document_type:-none}/v${document_version:-0}/",
    )
    .unwrap()
}

/// Small batches, so a run writes several objects per prefix.
fn small_batches() -> BatchBounds {
    BatchBounds {
        max_records: 9,
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(3600),
    }
}

/// The messages in ndjson object bodies (gunzipped when named `.gz`).
fn messages_in(name: &str, body: &[u8]) -> Vec<Message> {
    let mut text = String::new();
    if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap();
    } else {
        text = String::from_utf8(body.to_vec()).unwrap();
    }
    text.lines()
        .map(|l| Message::from_json_line(l.as_bytes()).unwrap())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
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
                out.push(p);
            }
        }
    }
    out
}

/// The object sink on a fresh temporary directory (kept alive in `dirs` until the test ends),
/// read back from the final objects only (hidden staging files `.<name>.staging[#<n>]` are not
/// objects).
fn local_sink(
    dirs: &Mutex<Vec<tempfile::TempDir>>,
    configure: impl Fn(ObjectSink) -> ObjectSink,
) -> SinkUnderTest<ObjectSink> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    dirs.lock().unwrap().push(dir);
    let sink = ObjectSink::local(&root, template())
        .unwrap()
        .with_format(OutputFormat::Json)
        .with_compression(Compression::Gzip);
    SinkUnderTest::new(configure(sink), move || {
        files_under(&root)
            .iter()
            .filter(|f| {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                !name.starts_with('.') && !name.contains('#')
            })
            .flat_map(|f| messages_in(&f.to_string_lossy(), &std::fs::read(f).unwrap()))
            .collect()
    })
    .refusing(unwritable())
}

#[test]
fn the_object_sink_on_a_local_directory_conforms() {
    let dirs = Mutex::new(Vec::new());
    sink_conformance("object sink (local directory)", || {
        local_sink(&dirs, |s| s.with_batch(small_batches()))
    });
}

/// Objects of several parts: records of ~3 KB in batches of up to 1000 records, parts of
/// 8 KiB, so every object goes up as a multipart upload (a staging file written part by part).
#[test]
fn the_object_sink_on_a_local_directory_conforms_with_objects_larger_than_a_part() {
    let dirs = Mutex::new(Vec::new());
    sink_conformance("object sink (local directory, multipart)", || {
        local_sink(&dirs, |s| {
            s.with_batch(BatchBounds {
                max_records: 1000,
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(3600),
            })
            .with_part_size(8 << 10)
        })
        .with_padding(3000)
    });
}

#[test]
fn the_object_sink_on_an_in_memory_store_conforms() {
    sink_conformance("object sink (in-memory store)", || {
        let store = object_store::memory::InMemory::new();
        let sink = ObjectSink::memory(store.clone(), template())
            .with_format(OutputFormat::Json)
            .with_batch(small_batches());
        SinkUnderTest::new(sink, move || read_store(&store)).refusing(unwritable())
    });
}

/// Everything in `store`, read with object_store's own client on a runtime of its own.
fn read_store(store: &dyn ObjectStore) -> Vec<Message> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = Vec::new();
        for meta in listed {
            let body = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            out.extend(messages_in(meta.location.as_ref(), &body));
        }
        out
    })
}

#[cfg(feature = "s3")]
#[test]
fn the_object_sink_on_s3_conforms() {
    let Ok(endpoint) = std::env::var("SLUICE_TEST_S3_ENDPOINT") else {
        println!("skipped: set SLUICE_TEST_S3_ENDPOINT to run the S3 conformance suite");
        return;
    };
    sink_conformance("object sink (S3)", || {
        let options = fresh_bucket(&endpoint, "conformance");
        let sink = ObjectSink::s3(&options, template())
            .unwrap()
            .with_format(OutputFormat::Json)
            .with_compression(Compression::Gzip)
            .with_batch(small_batches());
        let reader = sink.store().clone();
        SinkUnderTest::new(sink, move || read_store(reader.as_ref())).refusing(unwritable())
    });
}

/// Objects of several 5 MiB parts (S3's smallest) on S3: records of ~400 KB under one
/// prefix, so each worker's object holds several MB (uncompressed, to keep the test quick).
#[cfg(feature = "s3")]
#[test]
fn the_object_sink_on_s3_conforms_with_objects_larger_than_a_part() {
    use sluice_transforms::io::object::S3_MIN_PART_SIZE;
    let Ok(endpoint) = std::env::var("SLUICE_TEST_S3_ENDPOINT") else {
        println!("skipped: set SLUICE_TEST_S3_ENDPOINT to run the S3 conformance suite");
        return;
    };
    sink_conformance("object sink (S3, multipart)", || {
        let options = fresh_bucket(&endpoint, "big");
        let sink = ObjectSink::s3(&options, PathTemplate::parse("big/").unwrap())
            .unwrap()
            .with_format(OutputFormat::Json)
            .with_compression(Compression::None)
            .with_batch(BatchBounds {
                max_records: 1000,
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(3600),
            })
            .with_part_size(S3_MIN_PART_SIZE);
        let reader = sink.store().clone();
        SinkUnderTest::new(sink, move || read_store(reader.as_ref())).with_padding(400_000)
    });
}

/// A new, empty bucket on the test server (unique per call), with the server's options.
#[cfg(feature = "s3")]
fn fresh_bucket(endpoint: &str, name: &str) -> sluice_transforms::io::object::S3Options {
    static CREATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = CREATED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let bucket = format!("sluice-{name}-{}-{nanos}-{n}", std::process::id());
    create_bucket(endpoint, &bucket);
    sluice_transforms::io::object::S3Options::new(&bucket)
        .with_endpoint(endpoint)
        .with_credentials("test", "test")
}

/// Creates a bucket with boto3 (the S3 server is moto in the test script).
#[cfg(feature = "s3")]
fn create_bucket(endpoint: &str, bucket: &str) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, boto3\n\
             boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                 aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])",
        )
        .arg(endpoint)
        .arg(bucket)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "cannot create bucket {bucket}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A writer that appends to a shared buffer, as a stdout the test can read.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_writer_sink_conforms() {
    sink_conformance("writer sink (stdout/stderr)", || {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let sink = WriterSink::new(
            "buffer",
            OutputFormat::Json,
            Arc::new(move || Ok(Box::new(out.clone()) as Box<dyn Write + Send>)),
        );
        SinkUnderTest::new(sink, move || {
            messages_in("stdout", &buffer.0.lock().unwrap())
        })
    });
}

fn ndjson(records: &[Message]) -> String {
    records
        .iter()
        .map(|m| m.to_json_line() + "\n")
        .collect::<String>()
}

#[test]
fn the_file_source_conforms() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    source_conformance("file source", |records: &[Message]| {
        let dir = tempfile::tempdir().unwrap();
        // Two files, one gzipped, so that two workers share the input file by file.
        let half = records.len() / 2;
        std::fs::write(dir.path().join("a.ndjson"), ndjson(&records[..half])).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(ndjson(&records[half..]).as_bytes()).unwrap();
        std::fs::write(dir.path().join("b.ndjson.gz"), gz.finish().unwrap()).unwrap();
        let pattern = dir.path().join("*.ndjson*").display().to_string();
        dirs.lock().unwrap().push(dir);
        SourceUnderTest::rereading(move || FileSource::glob(&pattern, InputFormat::Json))
    });
}

#[test]
fn the_stdin_source_conforms() {
    source_conformance("stdin source", |records: &[Message]| {
        let bytes = ndjson(records).into_bytes();
        SourceUnderTest::rereading(move || {
            StdinSource::from_reader(InputFormat::Json, std::io::Cursor::new(bytes.clone()))
        })
    });
}

#[test]
fn the_file_source_with_a_state_directory_conforms_and_resumes() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    source_conformance("file source (state dir)", |records: &[Message]| {
        let dir = tempfile::tempdir().unwrap();
        let half = records.len() / 2;
        std::fs::write(dir.path().join("a.ndjson"), ndjson(&records[..half])).unwrap();
        std::fs::write(dir.path().join("b.ndjson"), ndjson(&records[half..])).unwrap();
        let pattern = dir.path().join("*.ndjson").display().to_string();
        let state = dir.path().join("state");
        dirs.lock().unwrap().push(dir);
        SourceUnderTest::resuming(move || {
            FileSource::glob(&pattern, InputFormat::Json).with_state_dir(&state)
        })
    });
}
