//! The `pubsub` config sections: validation with key paths, and the decoder job from a
//! Pub/Sub subscription (the emulator) to files, every message found once in the outputs or
//! the dead letters. The emulator tests need `SLUICE_TEST_PUBSUB_ENDPOINT` and
//! `SLUICE_TEST_PUBSUB_REST` (`scripts/services/pubsub.sh env`); skipped with a notice
//! without them.

#[path = "../../transforms/tests/decode_support.rs"]
mod decode_support;
#[path = "support/metrics.rs"]
mod metrics_endpoint;
mod support;
use metrics_endpoint::{http_get, metric};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice::Message;
use sluice_pipelines::config::{self, ConfigErrors, Overrides, SinkConfig, SourceConfig};
use sluice_pipelines::jobs::Prepared;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn errors(text: &str) -> ConfigErrors {
    std::env::set_current_dir(root()).unwrap();
    config::parse_str(text, &Overrides::new()).expect_err("config should be rejected")
}

fn assert_one(errors: &ConfigErrors, key: &str, needle: &str) {
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.key == key && e.message.contains(needle)),
        "no error at `{key}` containing {needle:?} in:\n{errors}"
    );
}

const PUBSUB_TO_PUBSUB: &str = r#"
job = "decoder"
[source]
type = "pubsub"
subscription = "projects/p/subscriptions/raw-decoder"
[decoder]
schemas = "schemas/json"
[sink]
type = "pubsub"
topic = "projects/p/topics/decoded-${document_namespace:-unknown}"
[dead_letter]
type = "pubsub"
topic = "projects/p/topics/errors"
"#;

#[test]
fn pubsub_sections_parse() {
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(PUBSUB_TO_PUBSUB, &Overrides::new()).unwrap();
    assert!(
        matches!(job.source, SourceConfig::Pubsub(ref c) if c.subscription.ends_with("raw-decoder"))
    );
    assert!(matches!(job.sink, SinkConfig::Pubsub(_)));
    assert!(matches!(job.dead_letter.sink, SinkConfig::Pubsub(_)));
}

#[test]
fn pubsub_config_errors_name_their_key_paths_all_at_once() {
    let text = PUBSUB_TO_PUBSUB
        .replace(
            "subscription = \"projects/p/subscriptions/raw-decoder\"",
            "subscription = \"raw-decoder\"\nmax_lease_extension = \"1h\"\nmax_outstanding_bytes = 0",
        )
        .replace(
            "topic = \"projects/p/topics/decoded-${document_namespace:-unknown}\"",
            "topic = \"projects/p/topics/decoded-${document_namespace}\"\ncredentials = \"magic\"",
        )
        .replace(
            "topic = \"projects/p/topics/errors\"",
            "topic = \"errors\"\nmax_message_bytes = \"20MB\"",
        );
    let e = errors(&text);
    assert_one(
        &e,
        "source.subscription",
        "projects/<project>/subscriptions/<name>",
    );
    assert_one(&e, "source.max_lease_extension", "from 10s to 10m");
    assert_one(&e, "source.max_outstanding_bytes", "above zero");
    assert_one(&e, "sink.topic", "document_namespace");
    assert_one(&e, "sink.credentials", "magic");
    assert_one(&e, "dead_letter.topic", "projects/<project>/topics/<name>");
    assert_one(&e, "dead_letter.max_message_bytes", "request limit");
    assert_eq!(e.0.len(), 7, "{e}");
}

struct Emulator {
    grpc: String,
    rest: String,
}

fn emulator() -> Option<Emulator> {
    match (
        std::env::var("SLUICE_TEST_PUBSUB_ENDPOINT"),
        std::env::var("SLUICE_TEST_PUBSUB_REST"),
    ) {
        (Ok(grpc), Ok(rest)) if !grpc.is_empty() && !rest.is_empty() => {
            Some(Emulator { grpc, rest })
        }
        _ => {
            println!(
                "skipped: set SLUICE_TEST_PUBSUB_ENDPOINT and SLUICE_TEST_PUBSUB_REST (see \
                 `scripts/services/pubsub.sh env`) to run the Pub/Sub job tests"
            );
            None
        }
    }
}

/// Creates `topic` and `sub`, then publishes JSON lines `{"data": b64, "attributes": {}}`
/// from stdin: an independent client (REST, python3's standard library).
const PUBLISH: &str = r#"
import sys, json, urllib.request
rest, topic, sub = sys.argv[1], sys.argv[2], sys.argv[3]
def call(method, path, body):
    req = urllib.request.Request(rest + "/v1/" + path, method=method,
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")
call("PUT", topic, {})
call("PUT", sub, {"name": sub, "topic": topic})
batch = [json.loads(l) for l in sys.stdin]
for i in range(0, len(batch), 100):
    call("POST", topic + ":publish", {"messages": batch[i:i + 100]})
"#;

fn publish(e: &Emulator, topic: &str, sub: &str, messages: &[Message]) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let lines: String = messages
        .iter()
        .map(|m| {
            serde_json::json!({"data": b64.encode(&m.payload), "attributes": m.attributes})
                .to_string()
                + "\n"
        })
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", PUBLISH, &e.rest, topic, sub])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, lines.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "publishing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every record (envelope form) of every object under `dir`.
fn records(dir: &Path) -> Vec<Message> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p: PathBuf = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                for line in support::read_object_lines(&p).unwrap() {
                    out.push(Message::from_json_line(line.as_bytes()).unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn decoder_from_pubsub_to_files_finds_every_message_once() {
    use decode_support::*;
    let Some(e) = emulator() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{}-{nanos}", std::process::id());
    let topic = format!("projects/sluice-test/topics/raw-{id}");
    let sub = format!("projects/sluice-test/subscriptions/raw-{id}");

    let mut rng = Rng::new(5);
    let mut input = Vec::new();
    let mut ids = Vec::new();
    for i in 0..80 {
        let doc = rng.uuid();
        input.push(match i % 6 {
            0 => submission(
                gzip(telemetry_main(&mut rng, 2000).to_string().as_bytes()),
                telemetry_uri(&doc, "main"),
                &mut rng,
            ),
            1 => submission(
                fenix_baseline(&mut rng).to_string(),
                generic_uri("org-mozilla-fenix", "baseline", 1, &doc),
                &mut rng,
            ),
            2 => submission(
                test_doc(&mut rng).to_string(),
                generic_uri("test", "test", 1, &doc),
                &mut rng,
            ),
            3 => submission("{broken", generic_uri("test", "test", 1, &doc), &mut rng),
            4 => submission(gzip(b"\xff\xfe"), telemetry_uri(&doc, "main"), &mut rng),
            _ => submission("{}", format!("/nowhere/{doc}"), &mut rng),
        });
        ids.push(doc);
    }
    publish(&e, &topic, &sub, &input);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let errors = dir.path().join("errors");
    let text = format!(
        r#"
job = "decoder"
workers = 2
[source]
type = "pubsub"
subscription = "{sub}"
endpoint = "{grpc}"
credentials = "anonymous"
exit_when_idle = "5s"
[decoder]
schemas = "schemas/json"
[sink]
type = "file"
dir = "{out}"
path = "${{document_namespace:-unknown}}/${{document_type:-unknown}}/"
format = "json"
compression = "gzip"
[dead_letter]
type = "file"
dir = "{errors}"
path = "${{error_type:-unknown}}/"
format = "json"
"#,
        grpc = e.grpc,
        out = out.display(),
        errors = errors.display(),
    );
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(&text, &Overrides::new()).unwrap();
    let prepared = Prepared::new(job).unwrap();
    prepared.check_services().unwrap();
    let pipeline = prepared.pipeline();
    prepared.run(pipeline).unwrap();

    let text_of = |m: &Message| {
        let mut t = String::from_utf8_lossy(&m.payload).into_owned();
        for v in m.attributes.values() {
            t.push_str(v);
        }
        t
    };
    let outputs: Vec<String> = records(&out).iter().map(text_of).collect();
    let dead: Vec<String> = records(&errors).iter().map(text_of).collect();
    assert_eq!(
        outputs.len() + dead.len(),
        input.len(),
        "{} outputs, {} dead letters",
        outputs.len(),
        dead.len()
    );
    assert!(!outputs.is_empty() && !dead.is_empty());
    for (i, doc) in ids.iter().enumerate() {
        let n = outputs
            .iter()
            .chain(&dead)
            .filter(|t| t.contains(doc.as_str()))
            .count();
        assert_eq!(n, 1, "input {i} ({doc}) found {n} times");
    }
}

/// Pulls and acks everything on a subscription; prints JSON lines.
const DRAIN: &str = r#"
import sys, json, urllib.request
rest, sub = sys.argv[1], sys.argv[2]
def call(method, path, body):
    req = urllib.request.Request(rest + "/v1/" + path, method=method,
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")
empty = 0
while empty < 3:
    got = call("POST", sub + ":pull", {"maxMessages": 500, "returnImmediately": True})
    received = got.get("receivedMessages", [])
    if not received:
        empty += 1
        continue
    empty = 0
    for r in received:
        m = r["message"]
        print(json.dumps({"data": m.get("data", ""), "attributes": m.get("attributes") or {}}))
    call("POST", sub + ":acknowledge", {"ackIds": [r["ackId"] for r in received]})
"#;

fn drain(e: &Emulator, sub: &str) -> Vec<Message> {
    use base64::Engine;
    let out = Command::new("python3")
        .args(["-c", DRAIN, &e.rest, sub])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap_or(""))
                .unwrap();
            let attributes: std::collections::BTreeMap<String, String> =
                serde_json::from_value(v["attributes"].clone()).unwrap();
            Message::new(data).with_attributes(attributes)
        })
        .collect()
}

#[test]
fn republisher_config_rules() {
    let base = r#"
job = "republisher"
[source]
type = "pubsub"
subscription = "projects/p/subscriptions/decoded"
[sink]
type = "stdout"
[dead_letter]
type = "stderr"
"#;
    let e = errors(base);
    assert_one(&e, "routes", "missing required `[[routes]]`");
    let text = format!(
        "{base}\n[[routes]]\nname = \"a\"\nsample_below = 0\nsink = {{ type = \"stdout\" }}\n\
         [[routes]]\nname = \"a\"\nsink = {{ type = \"stdout\" }}\n"
    );
    let e = errors(&text);
    assert_one(&e, "routes[0].sample_below", "expected 1 to 100");
    assert_one(&e, "routes[1].name", "used twice");
    let e = errors(&PUBSUB_TO_PUBSUB.replace(
        "[dead_letter]",
        "[[routes]]\nname = \"a\"\nsink = { type = \"stdout\" }\n[dead_letter]",
    ));
    assert_one(&e, "routes", "only the republisher job");
}

#[test]
fn republisher_routes_each_message_to_exactly_the_routes_it_matches() {
    let Some(e) = emulator() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{}-{nanos}", std::process::id());
    let topic = |name: &str| format!("projects/sluice-test/topics/rp-{id}-{name}");
    let sub = |name: &str| format!("projects/sluice-test/subscriptions/rp-{id}-{name}");
    // decoded input: doctypes main/event/crash, sample_id 0..99, every 7th a debug ping
    let input: Vec<Message> = (0..150)
        .map(|i| {
            let mut m = Message::new(format!("{{\"n\":{i}}}"))
                .with_attribute("document_namespace", "telemetry")
                .with_attribute("document_type", ["main", "event", "crash"][i % 3])
                .with_attribute("sample_id", (i * 37 % 100).to_string());
            if i % 7 == 0 {
                m = m.with_attribute("x_debug_id", "dev");
            }
            m
        })
        .collect();
    publish(&e, &topic("in"), &sub("in"), &input);
    // the output topics, each with a subscription for the independent reader
    for name in ["main", "event", "sampled", "debug", "unrouted", "errors"] {
        publish(&e, &topic(name), &sub(name), &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
job = "republisher"
workers = 2
[source]
type = "pubsub"
subscription = "{input}"
endpoint = "{grpc}"
credentials = "anonymous"
exit_when_idle = "5s"
[[routes]]
name = "per-doctype"
doctypes = ["main", "event"]
sink = {{ type = "pubsub", topic = "projects/sluice-test/topics/rp-{id}-${{document_type:-unknown}}", endpoint = "{grpc}", credentials = "anonymous" }}
[[routes]]
name = "sampled"
sample_below = 10
sink = {{ type = "pubsub", topic = "{sampled}", endpoint = "{grpc}", credentials = "anonymous" }}
[[routes]]
name = "debug"
debug = true
sink = {{ type = "pubsub", topic = "{debug}", endpoint = "{grpc}", credentials = "anonymous" }}
[sink]
type = "pubsub"
topic = "{unrouted}"
endpoint = "{grpc}"
credentials = "anonymous"
[dead_letter]
type = "file"
dir = "{errors}"
"#,
        input = sub("in"),
        grpc = e.grpc,
        sampled = topic("sampled"),
        debug = topic("debug"),
        unrouted = topic("unrouted"),
        errors = dir.path().display(),
    );
    std::env::set_current_dir(root()).unwrap();
    let job = config::parse_str(&text, &Overrides::new()).unwrap();
    let prepared = Prepared::new(job).unwrap();
    let pipeline = prepared.pipeline();
    prepared.run(pipeline).unwrap();

    let sorted = |mut v: Vec<Message>| {
        v.sort();
        v
    };
    let expect =
        |f: &dyn Fn(&Message) -> bool| sorted(input.iter().filter(|m| f(m)).cloned().collect());
    let doctype = |m: &Message, d: &str| m.attribute("document_type") == Some(d);
    let sample = |m: &Message| m.attribute("sample_id").unwrap().parse::<u32>().unwrap() < 10;
    let debug = |m: &Message| m.attribute("x_debug_id").is_some();
    let routed = |m: &Message| doctype(m, "main") || doctype(m, "event") || sample(m) || debug(m);
    assert_eq!(
        sorted(drain(&e, &sub("main"))),
        expect(&|m| doctype(m, "main"))
    );
    assert_eq!(
        sorted(drain(&e, &sub("event"))),
        expect(&|m| doctype(m, "event"))
    );
    assert_eq!(sorted(drain(&e, &sub("sampled"))), expect(&sample));
    assert_eq!(sorted(drain(&e, &sub("debug"))), expect(&debug));
    assert_eq!(sorted(drain(&e, &sub("unrouted"))), expect(&|m| !routed(m)));
    assert!(records(dir.path()).is_empty(), "no route refused anything");
    // sanity: the input exercises every route and the overlap of routes
    assert!(input
        .iter()
        .any(|m| doctype(m, "crash") && sample(m) && debug(m)));
    assert!(input.iter().any(|m| !routed(m)));
}

/// Runs a python3 snippet with boto3 set up as `s3` against `endpoint` (an independent
/// reader of the objects); returns its stdout.
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

/// Every line of every object under `prefix` in `bucket`, gunzipped: `(key, line)`.
fn object_lines(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let code = "\
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):
    for o in page.get('Contents', []):
        body = s3.get_object(Bucket=sys.argv[2], Key=o['Key'])['Body'].read()
        if o['Key'].endswith('.gz'):
            body = gzip.decompress(body)
        for line in body.decode('utf-8').splitlines():
            print(json.dumps([o['Key'], line]))
";
    boto3(endpoint, code, &[bucket, prefix])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `sluice_records_read_total{step="read"}` from the binary's metrics endpoint (0 until it
/// answers).
fn records_read(addr: &str) -> u64 {
    http_get(addr, "/metrics")
        .and_then(|text| metric(&text, "sluice_records_read_total{step=\"read\"}"))
        .map_or(0, |n| n.max(0) as u64)
}

/// The decoder, Pub/Sub -> S3 (moto) in the shape of `examples/configs/pubsub-to-gcs.toml`
/// through the binary. A first run reads every message and is killed before any batch is
/// written: nothing may have been acked, so a second run finds every message again, and each
/// lands exactly once in a decoded object or a dead letter, read back with boto3.
#[test]
fn decoder_from_pubsub_to_s3_acks_only_what_its_objects_hold() {
    use decode_support::*;
    let Some(e) = emulator() else { return };
    let s3 = match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(s) if !s.is_empty() => s,
        _ => {
            println!("skipped: set SLUICE_TEST_S3_ENDPOINT to run the Pub/Sub -> S3 test");
            return;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{}-{}", std::process::id(), nanos % 1_000_000_000);
    let topic = format!("projects/sluice-test/topics/s3-{id}");
    let sub = format!("projects/sluice-test/subscriptions/s3-{id}");
    let bucket = format!("sluice-pubsub-{id}");
    boto3(&s3, "s3.create_bucket(Bucket=sys.argv[2])", &[&bucket]);

    let mut rng = Rng::new(11);
    let mut input = Vec::new();
    let mut ids = Vec::new();
    for i in 0..120 {
        let doc = rng.uuid();
        input.push(match i % 5 {
            0 => submission(
                gzip(telemetry_main(&mut rng, 1500).to_string().as_bytes()),
                telemetry_uri(&doc, "main"),
                &mut rng,
            ),
            1 => submission(
                fenix_baseline(&mut rng).to_string(),
                generic_uri("org-mozilla-fenix", "baseline", 1, &doc),
                &mut rng,
            ),
            2 => submission(
                test_doc(&mut rng).to_string(),
                generic_uri("test", "test", 1, &doc),
                &mut rng,
            ),
            3 => submission("{broken", generic_uri("test", "test", 1, &doc), &mut rng),
            _ => submission("{}", format!("/nowhere/{doc}"), &mut rng),
        });
        ids.push(doc);
    }
    publish(&e, &topic, &sub, &input);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            r#"job = "decoder"
workers = 2
[source]
type = "pubsub"
subscription = "{sub}"
endpoint = "{grpc}"
credentials = "anonymous"
admin_endpoint = "{rest}"
# what a killed run held is redelivered 10 s after its last lease extension
max_lease_extension = "10s"
exit_when_idle = "15s"
[decoder]
schemas = "{root}/schemas/json"
[sink]
type = "s3"
endpoint = "{s3}"
allow_http = true
region = "us-east-1"
bucket = "{bucket}"
path = "decoded/${{document_namespace:-unknown}}/${{document_type:-unknown}}/"
format = "json"
compression = "gzip"
batch = {{ max_bytes = "100MB", max_records = 1000000, max_age = "1h" }}
[dead_letter]
type = "s3"
endpoint = "{s3}"
allow_http = true
region = "us-east-1"
bucket = "{bucket}"
path = "errors/${{error_type:-unknown}}/"
format = "json"
batch = {{ max_bytes = "100MB", max_records = 1000000, max_age = "1h" }}
"#,
            grpc = e.grpc,
            rest = e.rest,
            root = root().display(),
        ),
    )
    .unwrap();
    let sluice = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .arg("run")
            .arg("--no-progress")
            .arg(&config);
        c
    };

    // run 1: reads everything, writes nothing (batches wait an hour), then dies
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let mut first = sluice()
        .args([
            "--metrics-addr",
            &metrics,
            "--set",
            "source.exit_when_idle=1h",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut polls = 0;
    while records_read(&metrics) < input.len() as u64 {
        polls += 1;
        assert!(
            polls < 1200 && first.try_wait().unwrap().is_none(),
            "the first run did not read all {} messages",
            input.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        object_lines(&s3, &bucket, "").is_empty(),
        "the killed run wrote nothing"
    );

    // run 2: every message again, each written once
    let out = sluice().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text_of = |line: &str| {
        let m = Message::from_json_line(line.as_bytes()).unwrap();
        let mut t = String::from_utf8_lossy(&m.payload).into_owned();
        for v in m.attributes.values() {
            t.push_str(v);
        }
        t
    };
    let decoded: Vec<String> = object_lines(&s3, &bucket, "decoded/")
        .iter()
        .map(|(_, l)| text_of(l))
        .collect();
    let dead: Vec<String> = object_lines(&s3, &bucket, "errors/")
        .iter()
        .map(|(_, l)| text_of(l))
        .collect();
    assert_eq!(decoded.len() + dead.len(), input.len());
    assert!(!decoded.is_empty() && !dead.is_empty());
    for (i, doc) in ids.iter().enumerate() {
        let n = decoded
            .iter()
            .chain(&dead)
            .filter(|t| t.contains(doc.as_str()))
            .count();
        assert_eq!(n, 1, "input {i} ({doc}) found {n} times");
    }
    assert!(drain(&e, &sub).is_empty(), "every message was acked");
}

/// A job reading a subscription through the binary with the metrics address: `/metrics`
/// shows the subscription's messages acked (every one, once they are written) and outstanding
/// (none left), and `/api/status`, what the page draws, says the same.
#[test]
fn metrics_show_a_subscription_s_acked_and_outstanding_messages() {
    let Some(e) = emulator() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{}-{nanos}", std::process::id());
    let topic = format!("projects/sluice-test/topics/positions-{id}");
    let sub = format!("projects/sluice-test/subscriptions/positions-{id}");
    let input: Vec<Message> = (0..40)
        .map(|i| Message::new(format!("{{\"n\":{i}}}")).with_attribute("n", i.to_string()))
        .collect();
    publish(&e, &topic, &sub, &input);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            r#"job = "sink"
workers = 2
[source]
type = "pubsub"
subscription = "{sub}"
endpoint = "{grpc}"
credentials = "anonymous"
[sink]
type = "file"
dir = "{out}"
path = "out/"
format = "json"
compression = "none"
batch = {{ max_records = 10, max_age = "200ms" }}
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/"
"#,
            grpc = e.grpc,
            out = dir.path().display(),
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", sluice_testing::cluster::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--no-progress"])
        .arg(&config)
        .args(["--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let labels = format!("{{step=\"read\",partition=\"{sub}\"}}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let text = http_get(&addr, "/metrics").unwrap_or_default();
        let acked = metric(&text, &format!("sluice_source_acked_total{labels}"));
        let outstanding = metric(&text, &format!("sluice_source_outstanding{labels}"));
        if acked == Some(40) && outstanding == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "not every message acked: acked {acked:?}, outstanding {outstanding:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/api/status").unwrap()).unwrap();
    let source = &status["sources"][0];
    assert_eq!(source["outstanding"], 0);
    assert_eq!(
        source["partitions"][0],
        serde_json::json!({"partition": sub, "outstanding": 0, "acked": 40})
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(records(&dir.path().join("out")).len(), 40);
    assert!(drain(&e, &sub).is_empty(), "every message was acked");
}
