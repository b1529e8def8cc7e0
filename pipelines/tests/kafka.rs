//! The `sluice` binary on a real Kafka broker (`SLUICE_TEST_KAFKA_BROKERS`, tansu started by
//! `scripts/services/kafka.sh`; skipped with a notice when unset):
//!
//! - the decoder, Kafka (Heka values) -> S3 (moto, `SLUICE_TEST_S3_ENDPOINT`), dead letters to
//!   a Kafka topic: every message is found once, in the output or the dead letters;
//! - crash: the loader killed with SIGKILL at random points and restarted: nothing lost,
//!   duplicates within the source's documented bound (`SLUICE_KAFKA_KILLS`, 3 by default; the
//!   reliability run sets 10 or more);
//! - rebalance: two processes in one consumer group, one killed mid-run: the other takes its
//!   partitions over and nothing is lost;
//! - the sink: messages written to topics from a template, read back with their headers;
//! - a two-process timely cluster: the partitions spread over the workers of both processes;
//! - a consumer-group member killed with SIGKILL and restarted, again and again, while
//!   another member runs: nothing lost, duplicates within the documented bound
//!   (`SLUICE_KAFKA_GROUP_KILLS`, 2 by default).
//!
//! Topics are read back with kafka-python (`scripts/services/kafka.sh client` installs it into
//! a cached venv), objects with boto3: clients independent of Sluice's.

#[path = "../../transforms/tests/kafka_support.rs"]
mod kafka_support;
#[path = "support/metrics.rs"]
mod metrics_endpoint;
mod support;
use metrics_endpoint::{http_get, metric};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_support::{produce, produce_values, unique, Broker, Offsets};
use prost::Message as _;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use sluice::Message;
use sluice_pipelines::generate::{Generator, Record};
use support::read_object_lines;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn s3_endpoint(test: &str) -> Option<String> {
    match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            eprintln!("SKIPPED {test}: SLUICE_TEST_S3_ENDPOINT is not set");
            None
        }
    }
}

/// The Python of the kafka-python venv `scripts/services/kafka.sh client` installs (at once,
/// when it is there already).
fn kafka_python() -> PathBuf {
    let script = root().join("scripts/services/kafka.sh");
    let install = Command::new(&script).arg("client").output().unwrap();
    assert!(
        install.status.success(),
        "kafka.sh client: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let env = Command::new(&script).arg("env").output().unwrap();
    String::from_utf8(env.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("export SLUICE_TEST_KAFKA_PYTHON="))
        .map(PathBuf::from)
        .expect("kafka.sh env names the client's python")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every record of `topic` (value, headers), by partition and offset, read up to the end
/// offsets with kafka-python: its own implementation of the protocol, independent of the
/// librdkafka Sluice writes with.
fn python_read_values(brokers: &str, topic: &str) -> Vec<(Vec<u8>, kafka_support::KafkaHeaders)> {
    let code = r#"
import sys, json, time
from kafka import KafkaConsumer, TopicPartition
brokers, topic = sys.argv[1], sys.argv[2]
c = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, group_id=None)
parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
if not parts:
    sys.exit("no partitions for " + topic)
c.assign(parts)
c.seek_to_beginning(*parts)
ends = c.end_offsets(parts)
got = {tp: [] for tp in parts}
deadline = time.time() + 60
while any(c.position(tp) < ends[tp] for tp in parts):
    if time.time() > deadline:
        sys.exit("not read to the end offsets %s in 60 s" % ends)
    for tp, records in c.poll(timeout_ms=500).items():
        got[tp] += [r for r in records if r.offset < ends[tp]]
out = []
for tp in parts:
    for r in got[tp]:
        out.append([(r.value or b"").hex(), [[k, (v or b"").hex()] for k, v in r.headers]])
json.dump(out, sys.stdout)
"#;
    let out = Command::new(kafka_python())
        .arg("-c")
        .arg(code)
        .args([brokers, topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<(String, Vec<(String, String)>)> =
        serde_json::from_slice(&out.stdout).unwrap();
    records
        .into_iter()
        .map(|(v, h)| {
            (
                unhex(&v),
                h.into_iter().map(|(k, v)| (k, unhex(&v))).collect(),
            )
        })
        .collect()
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

/// Every line of every object of `bucket`, gunzipped, read by boto3.
fn bucket_lines(endpoint: &str, bucket: &str) -> Vec<String> {
    let code = "\
out = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2]):
    for o in page.get('Contents', []):
        body = s3.get_object(Bucket=sys.argv[2], Key=o['Key'])['Body'].read()
        if o['Key'].endswith('.gz'):
            body = gzip.decompress(body)
        out.extend(body.decode('utf-8').splitlines())
json.dump(out, sys.stdout)
";
    serde_json::from_str(&boto3(endpoint, code, &[bucket])).unwrap()
}

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(root())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "warn");
    c
}

/// The attribute each test message carries to be found again.
const SEQ: &str = "x_test_seq";

#[test]
fn decoder_kafka_to_s3_writes_every_message_once_or_dead_letters_it() {
    let test = "decoder_kafka_to_s3_writes_every_message_once_or_dead_letters_it";
    let Some(broker) = Broker::real(test) else {
        return;
    };
    let Some(endpoint) = s3_endpoint(test) else {
        return;
    };
    let brokers = broker.brokers();
    let topic = unique("telemetry-raw");
    let errors = unique("telemetry-errors");
    broker.create_topic(&topic, 3);
    broker.create_topic(&errors, 1);
    let bucket = format!("sluice-kafka-{}", std::process::id());
    boto3(
        &endpoint,
        "s3.create_bucket(Bucket=sys.argv[2])",
        &[&bucket],
    );

    // valid, gzipped and broken submissions (every error kind), as the edge wrote them: one
    // Heka protobuf message per value; unframable records are junk values
    const N: usize = 400;
    let mut unframable: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let values: Vec<(Vec<u8>, kafka_support::KafkaHeaders)> = Generator::new(23, 0.3)
        .take(N)
        .enumerate()
        .map(|(i, r)| match r {
            Record::Message(m) => {
                let m = m.with_attribute(SEQ, i.to_string());
                let heka = sluice_schemas::heka::message_to_heka(&m).unwrap();
                (heka.encode_to_vec(), Vec::new())
            }
            Record::Unframable(raw) => {
                *unframable.entry(raw.clone()).or_default() += 1;
                (raw, Vec::new())
            }
        })
        .collect();
    produce_values(&brokers, &topic, values);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("job.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"job = "decoder"
workers = 2
[source]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
format = "heka"
stop_at_end = true
[decoder]
schemas = "{schemas}"
[sink]
type = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
allow_http = true
region = "us-east-1"
format = "json"
path = "${{document_namespace:-unknown}}/${{document_type:-unknown}}/"
batch = {{ max_age = "1s" }}
[dead_letter]
type = "kafka"
brokers = "{brokers}"
topic = "{errors}"
# tansu 0.6 misreports the end offset of multi-record batches, which read_values relies on
options = {{ "batch.num.messages" = "1" }}
[pipeline]
stack_traces = false
"#,
            group = unique("decoder"),
            // relative paths in a config file are relative to its folder
            schemas = root().join("schemas/json").display(),
        ),
    )
    .unwrap();
    let out = sluice()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut found = vec![0usize; N];
    let mut outputs = 0;
    for line in bucket_lines(&endpoint, &bucket) {
        let m = Message::from_json_line(line.as_bytes()).unwrap();
        let i: usize = m
            .attribute(SEQ)
            .unwrap_or_else(|| panic!("an output without {SEQ}: {line}"))
            .parse()
            .unwrap();
        found[i] += 1;
        outputs += 1;
    }
    let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
    for (value, headers) in python_read_values(&brokers, &errors) {
        let h: BTreeMap<String, String> = headers
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        *by_error.entry(h["error_type"].clone()).or_default() += 1;
        assert!(
            h.contains_key("kafka_offset"),
            "dead letters say where: {h:?}"
        );
        match h.get(SEQ) {
            Some(i) => found[i.parse::<usize>().unwrap()] += 1,
            None => {
                let left = unframable
                    .get_mut(&value)
                    .unwrap_or_else(|| panic!("a dead letter that is no input: {h:?}"));
                assert!(*left > 0, "an unframable value dead-lettered twice");
                *left -= 1;
            }
        }
    }
    eprintln!("{N} messages: {outputs} outputs, dead letters by error type {by_error:?}");
    assert!(
        unframable.values().all(|n| *n == 0),
        "unframable values lost"
    );
    for (i, n) in found.iter().enumerate() {
        assert!(
            *n <= 1,
            "message {i} was written {n} times in a run without failures"
        );
    }
    let missing: Vec<usize> = found
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| i)
        .collect();
    let unframable_total: usize = Generator::new(23, 0.3)
        .take(N)
        .filter(|r| matches!(r, Record::Unframable(_)))
        .count();
    assert_eq!(
        missing.len(),
        unframable_total,
        "only the unframable values have no {SEQ}; missing: {missing:?}"
    );
    assert!(outputs > 0 && by_error.len() >= 5, "{by_error:?}");
}

/// A bounded read: the job ends at the topic's end offsets.
const BOUNDED: &str = "stop_at_end = true";
/// A consumer-group member that leaves the group fast when killed.
const MEMBER: &str = "session_timeout = \"6s\"";

/// The loader (Kafka -> local objects) as a crash and rebalance subject: fast in a debug
/// build, and what is under test is the source's commits, not the decoding. `source_extra`
/// are more `[source]` lines; the config is named after `out`.
fn loader_config(
    dir: &Path,
    brokers: &str,
    topic: &str,
    group: &str,
    out: &Path,
    source_extra: &str,
) -> PathBuf {
    let cfg = dir.join(format!(
        "{}.toml",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &cfg,
        format!(
            r#"job = "sink"
workers = 2
[source]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "{group}"
max_uncommitted_records = {MAX_UNCOMMITTED}
{source_extra}
[sink]
type = "file"
dir = "{out}"
path = "raw/"
format = "json"
compression = "none"
batch = {{ max_records = 50, max_age = "200ms" }}
[dead_letter]
type = "file"
dir = "{out}"
path = "errors/"
[pipeline]
epoch = {{ max_records = {EPOCH_RECORDS} }}
in_flight = {{ max_epochs = {IN_FLIGHT_EPOCHS}, max_unacknowledged_epochs = {IN_FLIGHT_EPOCHS} }}
"#,
            out = out.display(),
        ),
    )
    .unwrap();
    cfg
}

const WORKERS: usize = 2;
const EPOCH_RECORDS: usize = 50;
const IN_FLIGHT_EPOCHS: usize = 4;
const MAX_UNCOMMITTED: usize = 50;
/// The source's documented bound on what one worker reads again after it stops owning its
/// partitions uncleanly (a SIGKILL, or a revocation): its records in flight, plus durable
/// offsets whose commit the broker had not confirmed.
const REREAD_PER_WORKER: usize = IN_FLIGHT_EPOCHS * EPOCH_RECORDS + MAX_UNCOMMITTED;
/// Messages written but not committed at any moment, at most, for one process.
const CRASH_BOUND: usize = WORKERS * REREAD_PER_WORKER;

/// Copies of each test message written under `out`, by its sequence number.
fn written(out: &Path) -> BTreeMap<usize, usize> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // staging files a kill leaves behind are not objects
            if !name.ends_with(".ndjson") {
                continue;
            }
            for line in read_object_lines(&p).unwrap() {
                let m = Message::from_json_line(line.as_bytes()).unwrap();
                assert!(m.attribute("error_type").is_none(), "a dead letter: {line}");
                let i: usize = m.attribute(SEQ).unwrap().parse().unwrap();
                *seen.entry(i).or_default() += 1;
            }
        }
    }
    seen
}

fn messages(range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|i| {
            Message::new(format!(
                "{{\"seq\":{i},\"pad\":\"{}\"}}",
                "x".repeat(i % 97)
            ))
            .with_attribute(SEQ, i.to_string())
            .with_attribute("document_namespace", "telemetry")
        })
        .collect()
}

fn total(offsets: &BTreeMap<i32, i64>) -> i64 {
    offsets.values().sum()
}

/// Waits until `done()` or the child ends by itself or the deadline passes; true if the child
/// still runs. The deadline is generous: tansu's group coordinator takes tens of seconds of
/// rebalances (one per 3 s heartbeat) to settle after a member dies, more on a loaded machine.
fn wait_while_running(child: &mut Child, done: impl Fn() -> bool, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if done() {
            return child.try_wait().unwrap().is_none();
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "not done in 300 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkills_at_random_points_lose_nothing() {
    let Some(broker) = Broker::real("sigkills_at_random_points_lose_nothing") else {
        return;
    };
    let kills: usize = std::env::var("SLUICE_KAFKA_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!(
        "kafka crash test: {kills} kills, seed {seed} (SLUICE_KAFKA_KILLS, SLUICE_CRASH_SEED)"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let brokers = broker.brokers();
    let topic = unique("crash");
    const PARTITIONS: i32 = 2;
    broker.create_topic(&topic, PARTITIONS);
    // large enough that a run on an idle machine is still reading when its kill comes
    let n = 4000 + 2000 * kills;
    produce(&brokers, &topic, &messages(0..n));
    let group = unique("crash");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = loader_config(tmp.path(), &brokers, &topic, &group, &out, BOUNDED);
    let offsets = Offsets::new(&brokers, &group);
    let job = || {
        let mut c = sluice();
        c.args(["run", "--no-progress"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    // record i is at partition i % PARTITIONS, offset i / PARTITIONS
    let committed_past = |i: usize, c: &BTreeMap<i32, i64>| {
        let p = (i % PARTITIONS as usize) as i32;
        c.get(&p).copied().unwrap_or(0) > (i / PARTITIONS as usize) as i64
    };
    let mut exposed_total = 0;
    for kill in 1..=kills {
        let more = 100 + i64::from(rng.next_u32() % 251);
        let jitter = Duration::from_millis(u64::from(rng.next_u32() % 11));
        let target = total(&offsets.committed(&topic, PARTITIONS)) + more;
        let mut child = job().spawn().unwrap();
        let running = wait_while_running(
            &mut child,
            || total(&offsets.committed(&topic, PARTITIONS)) >= target,
            "offsets committed",
        );
        std::thread::sleep(jitter);
        let running = running && child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            running,
            "run {kill} ended before it could be killed: the input is too small to prove anything"
        );
        let c = offsets.committed(&topic, PARTITIONS);
        let seen = written(&out);
        // what the next run reads again: written, not committed
        let exposed = seen.keys().filter(|i| !committed_past(**i, &c)).count();
        exposed_total += exposed;
        eprintln!(
            "kill {kill}: {more} more committed + {jitter:?}; committed {c:?}; {} distinct written; {exposed} written but not committed (bound {CRASH_BOUND})",
            seen.len()
        );
        assert!(
            exposed <= CRASH_BOUND,
            "kill {kill}: {exposed} messages written but not committed, over the bound of {CRASH_BOUND}"
        );
        // committed offsets never pass what was written
        for i in 0..n {
            assert!(
                !committed_past(i, &c) || seen.contains_key(&i),
                "kill {kill}: message {i} is committed but not written"
            );
        }
    }
    let status = job().status().unwrap();
    assert!(status.success(), "the last run failed: {status}");
    let seen = written(&out);
    let missing: Vec<usize> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    let copies: usize = seen.values().sum();
    let duplicates = copies - seen.len();
    eprintln!(
        "after {kills} kills: {n} messages, {copies} written, {duplicates} duplicates (bound {} = {kills} x {CRASH_BOUND})",
        kills * CRASH_BOUND
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    // a message is written again only by a run after a kill that left it written, uncommitted
    assert!(
        duplicates <= exposed_total,
        "{duplicates} duplicates, more than the {exposed_total} messages the kills left uncommitted"
    );
    assert_eq!(
        offsets.committed(&topic, PARTITIONS),
        (0..PARTITIONS)
            .map(|p| (p, (n / PARTITIONS as usize) as i64))
            .collect()
    );
}

#[test]
fn a_killed_group_member_s_partitions_are_taken_over_without_loss() {
    let Some(broker) =
        Broker::real("a_killed_group_member_s_partitions_are_taken_over_without_loss")
    else {
        return;
    };
    let brokers = broker.brokers();
    let topic = unique("rebalance");
    const PARTITIONS: i32 = 4;
    broker.create_topic(&topic, PARTITIONS);
    let n = 2000;
    produce(&brokers, &topic, &messages(0..n / 2));
    let group = unique("rebalance");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = loader_config(tmp.path(), &brokers, &topic, &group, &out, MEMBER);
    let offsets = Offsets::new(&brokers, &group);
    let start = || {
        sluice()
            .args(["run", "--no-progress"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = start();
    let mut b = start();
    // both members hold partitions once offsets of every partition are committed
    let running = wait_while_running(
        &mut a,
        || offsets.committed(&topic, PARTITIONS).len() == PARTITIONS as usize,
        "every partition committed",
    );
    assert!(running, "member a ended by itself");
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    // the second half lands on every partition: b must take a's partitions over to read it
    produce(&brokers, &topic, &messages(n / 2..n));
    let target = (n as i64) / i64::from(PARTITIONS);
    let running = wait_while_running(
        &mut b,
        || {
            offsets
                .committed(&topic, PARTITIONS)
                .values()
                .all(|o| *o >= target)
                && offsets.committed(&topic, PARTITIONS).len() == PARTITIONS as usize
        },
        "member b commits every partition to its end",
    );
    assert!(running, "member b ended by itself");
    // a signal stops an unbounded job cleanly: exit 0
    let term = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = b.wait().unwrap();
    assert!(status.success(), "member b after SIGTERM: {status}");
    let seen = written(&out);
    let missing: Vec<usize> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    let copies: usize = seen.values().sum();
    eprintln!(
        "rebalance: {n} messages, {copies} written, {} duplicates",
        copies - seen.len()
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
}

/// Objects (`.ndjson`) under `dir`, recursively.
fn object_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                n += 1;
            }
        }
    }
    n
}

/// How many times the workers logged a revocation of their partitions, in `logs`.
fn revocations(logs: &[PathBuf]) -> usize {
    logs.iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .matches("kafka partitions revoked")
                .count()
        })
        .sum()
}

#[test]
fn a_group_member_killed_again_and_again_loses_nothing() {
    let Some(broker) = Broker::real("a_group_member_killed_again_and_again_loses_nothing") else {
        return;
    };
    let kills: usize = std::env::var("SLUICE_KAFKA_GROUP_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(2);
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kafka group crash test: {kills} kills, seed {seed} (SLUICE_KAFKA_GROUP_KILLS, SLUICE_CRASH_SEED)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let brokers = broker.brokers();
    let topic = unique("group-crash");
    const PARTITIONS: i32 = 4;
    broker.create_topic(&topic, PARTITIONS);
    let group = unique("group-crash");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (out_a, out_b) = (out.join("a"), out.join("b"));
    // (no static membership: tansu 0.6 stops assigning partitions to a group with
    // `group.instance.id` members after the first rebalance)
    let cfg_a = loader_config(tmp.path(), &brokers, &topic, &group, &out_a, MEMBER);
    let cfg_b = loader_config(tmp.path(), &brokers, &topic, &group, &out_b, MEMBER);
    let (log_a, log_b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let start = |cfg: &Path, log: &Path| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        sluice()
            .env("RUST_LOG", "warn,sluice_transforms::io::kafka=info")
            .args(["run", "--no-progress"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let offsets = Offsets::new(&brokers, &group);
    // input keeps coming on every partition, so a member has something to read whatever it
    // owns after each rebalance
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, brokers, topic) = (stop.clone(), brokers.clone(), topic.clone());
        std::thread::spawn(move || {
            const CHUNK: usize = 40;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                produce(&brokers, &topic, &messages(n..n + CHUNK));
                n += CHUNK;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        })
    };
    let mut a = start(&cfg_a, &log_a);
    let mut b = start(&cfg_b, &log_b);
    for kill in 1..=kills {
        let before = object_count(&out_b);
        let running = wait_while_running(
            &mut b,
            || object_count(&out_b) > before,
            "member b writes an object",
        );
        assert!(running, "member b ended by itself");
        std::thread::sleep(Duration::from_millis(u64::from(rng.next_u32() % 200)));
        b.kill().unwrap(); // SIGKILL
        b.wait().unwrap();
        assert!(a.try_wait().unwrap().is_none(), "member a ended by itself");
        eprintln!(
            "kill {kill}: committed {:?}",
            offsets.committed(&topic, PARTITIONS)
        );
        b = start(&cfg_b, &log_b);
    }
    stop.store(true, Ordering::SeqCst);
    let n = producer.join().unwrap();
    // record i is on partition i % PARTITIONS (chunks are multiples of PARTITIONS)
    let target = (n as i64) / i64::from(PARTITIONS);
    let running = wait_while_running(
        &mut a,
        || {
            let c = offsets.committed(&topic, PARTITIONS);
            c.len() == PARTITIONS as usize && c.values().all(|o| *o >= target)
        },
        "the group commits every partition to its end",
    );
    assert!(running, "member a ended by itself");
    for (name, child) in [("a", &mut a), ("b", &mut b)] {
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "member {name} after SIGTERM: {status}");
    }
    let seen = written(&out);
    let missing: Vec<usize> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    let copies: usize = seen.values().sum();
    let duplicates = copies - seen.len();
    // every worker that stopped owning partitions uncleanly reads again at most
    // REREAD_PER_WORKER: the killed member's workers, and each revocation
    let revoked = revocations(&[log_a, log_b]);
    let bound = (kills * WORKERS + revoked) * REREAD_PER_WORKER;
    eprintln!(
        "group crash: {n} messages, {kills} kills, {revoked} revocations, {copies} written, {duplicates} duplicates (bound {bound})"
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, over the bound of {bound}"
    );
}

#[test]
fn a_two_process_cluster_spreads_partitions_over_every_worker_and_reads_each_message_once() {
    let test =
        "a_two_process_cluster_spreads_partitions_over_every_worker_and_reads_each_message_once";
    let Some(broker) = Broker::real(test) else {
        return;
    };
    let brokers = broker.brokers();
    let topic = unique("cluster");
    const PARTITIONS: usize = 6;
    const PROCESSES: usize = 2;
    broker.create_topic(&topic, PARTITIONS as i32);
    let n = 1200;
    produce(&brokers, &topic, &messages(0..n));
    let group = unique("cluster");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = loader_config(tmp.path(), &brokers, &topic, &group, &out, BOUNDED);
    let hosts = tmp.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1:{}\n127.0.0.1:{}\n",
            sluice_testing::cluster::free_port(),
            sluice_testing::cluster::free_port()
        ),
    )
    .unwrap();
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|i| {
            sluice()
                .args(["run", "--no-progress"])
                .arg(&cfg)
                .args(["--processes", &PROCESSES.to_string()])
                .args(["--process", &i.to_string()])
                .arg("--hostfile")
                .arg(&hosts)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(tmp.path().join(format!("stderr-{i}"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    // both run before either is waited for: each blocks until its peer connects
    let statuses = sluice_testing::cluster::wait_all(&mut children, Duration::from_secs(120));
    for (i, status) in statuses.iter().enumerate() {
        let stderr = std::fs::read_to_string(tmp.path().join(format!("stderr-{i}"))).unwrap();
        assert!(status.success(), "process {i} failed: {stderr}");
    }
    // The loader writes what a worker reads in that worker's objects (`-w<worker>-`), and
    // record i is on partition i % PARTITIONS: which workers read each partition.
    let mut readers: BTreeMap<usize, std::collections::BTreeSet<usize>> = BTreeMap::new();
    let mut copies = vec![0usize; n];
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let worker: usize = name
                .split("-w")
                .nth(1)
                .and_then(|r| r.get(..4))
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("an object name without its worker: {name}"));
            for line in read_object_lines(&p).unwrap() {
                let m = Message::from_json_line(line.as_bytes()).unwrap();
                let i: usize = m.attribute(SEQ).unwrap().parse().unwrap();
                copies[i] += 1;
                readers.entry(i % PARTITIONS).or_default().insert(worker);
            }
        }
    }
    let wrong: Vec<(usize, usize)> = copies
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .map(|(i, c)| (i, *c))
        .collect();
    assert!(
        wrong.is_empty(),
        "messages not written exactly once (seq, copies): {wrong:?}"
    );
    // partition p to worker p % workers, over the workers of both processes
    let workers = PROCESSES * WORKERS;
    let expected: BTreeMap<usize, std::collections::BTreeSet<usize>> =
        (0..PARTITIONS).map(|p| (p, [p % workers].into())).collect();
    assert_eq!(readers, expected, "partition -> the workers that read it");
    assert_eq!(
        Offsets::new(&brokers, &group).committed(&topic, PARTITIONS as i32),
        (0..PARTITIONS as i32)
            .map(|p| (p, (n / PARTITIONS) as i64))
            .collect()
    );
}

#[test]
fn the_sink_writes_each_message_once_to_its_templated_topic_with_its_headers() {
    let Some(broker) =
        Broker::real("the_sink_writes_each_message_once_to_its_templated_topic_with_its_headers")
    else {
        return;
    };
    let brokers = broker.brokers();
    let prefix = unique("raw");
    let (telemetry, unknown) = (format!("{prefix}-telemetry"), format!("{prefix}-unknown"));
    broker.create_topic(&telemetry, 2);
    broker.create_topic(&unknown, 1);
    let n = 300;
    // every third message has no namespace: the template's default names its topic
    let input: Vec<Message> = (0..n)
        .map(|i| {
            let m = Message::new(vec![0u8, 0xff, b'{', (i % 256) as u8])
                .with_attribute(SEQ, i.to_string())
                .with_attribute("x_header", format!("value {i} é"));
            if i % 3 == 0 {
                m
            } else {
                m.with_attribute("document_namespace", "telemetry")
            }
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("in.ndjson");
    let lines: Vec<String> = input.iter().map(|m| m.to_json_line()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let cfg = tmp.path().join("job.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"job = "sink"
workers = 2
[source]
type = "file"
path = "{file}"
[sink]
type = "kafka"
brokers = "{brokers}"
topic = "{prefix}-${{document_namespace:-unknown}}"
format = "raw"
# tansu 0.6 misreports the end offset of multi-record batches, which the reader relies on
options = {{ "batch.num.messages" = "1" }}
[dead_letter]
type = "file"
dir = "{errors}"
"#,
            file = file.display(),
            errors = tmp.path().join("errors").display(),
        ),
    )
    .unwrap();
    let out = sluice()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = vec![0usize; n];
    for (topic, namespaced) in [(&telemetry, true), (&unknown, false)] {
        for (value, headers) in python_read_values(&brokers, topic) {
            let h: BTreeMap<String, String> = headers
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                .collect();
            let i: usize = h[SEQ].parse().unwrap();
            let expected = &input[i];
            assert_eq!(value, expected.payload.to_vec(), "value of message {i}");
            assert_eq!(&h, &expected.attributes, "headers of message {i}");
            assert_eq!(
                namespaced,
                !i.is_multiple_of(3),
                "message {i} in topic {topic}"
            );
            found[i] += 1;
        }
    }
    let wrong: Vec<(usize, usize)> = found
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .map(|(i, c)| (i, *c))
        .collect();
    assert!(
        wrong.is_empty(),
        "messages not in their topic exactly once (seq, copies): {wrong:?}"
    );
}

/// An unbounded Kafka job (`stop_at_end = false`) with the metrics address: once it has read
/// a topic of two partitions, `/metrics` shows each partition's lag at 0 and its committed
/// offset and position at the partition's end; more messages move them on. `/api/status`, what
/// the page draws, says the same per partition.
#[test]
fn metrics_show_each_kafka_partition_s_offsets_and_lag() {
    let test = "metrics_show_each_kafka_partition_s_offsets_and_lag";
    let Some(broker) = Broker::real(test) else {
        return;
    };
    let brokers = broker.brokers();
    let topic = unique("positions");
    broker.create_topic(&topic, 2);
    produce(&brokers, &topic, &messages(0..100));
    let group = unique("positions");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = loader_config(tmp.path(), &brokers, &topic, &group, &out, "");
    let addr = format!("127.0.0.1:{}", sluice_testing::cluster::free_port());
    let mut child = sluice()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .args(["--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let (addr_ref, topic_ref) = (&addr, &topic);
    let at = |end: i64| {
        move || {
            let (addr, topic) = (addr_ref, topic_ref);
            let Some(text) = http_get(addr, "/metrics") else {
                return false;
            };
            (0..2).all(|p| {
                let labels = format!("{{step=\"read\",partition=\"{topic}/{p}\"}}");
                let of = |name: &str| metric(&text, &format!("sluice_source_{name}{labels}"));
                of("lag") == Some(0)
                    && of("committed_offset") == Some(end)
                    && of("offset") == Some(end)
            })
        }
    };
    let stderr = || std::fs::read_to_string(tmp.path().join("stderr")).unwrap_or_default();
    assert!(
        wait_while_running(&mut child, at(50), "offsets at 50, lag 0"),
        "the job ended: {}",
        stderr()
    );
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&addr, "/api/status").unwrap()).unwrap();
    let source = &status["sources"][0];
    assert_eq!(source["step"], "read");
    assert_eq!(source["lag"], 0);
    assert_eq!(
        source["partitions"][1],
        serde_json::json!({"partition": format!("{topic}/1"), "offset": 50,
            "committed_offset": 50, "lag": 0})
    );

    // 20 more, 10 per partition: the job reads and commits them too
    produce(&brokers, &topic, &messages(100..120));
    assert!(
        wait_while_running(&mut child, at(60), "offsets at 60, lag 0"),
        "the job ended: {}",
        stderr()
    );
    assert_eq!(
        kafka_support::committed(&brokers, &group, &topic, 2),
        BTreeMap::from([(0, 60), (1, 60)]),
        "the broker says what the metrics said"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
