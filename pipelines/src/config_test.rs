//! `sluice test CONFIG TESTFILE`: unit tests of a job's config, in the style of `vector test`.
//!
//! A test file (TOML) lists test cases; each gives input messages and the exact multisets of
//! decoded outputs and dead letters expected. Each case runs the job as configured (its
//! schemas, payload rules, dedup, scrubbing, routes) on memory IO ([`jobs::run_in_memory`]):
//! the config's source and sinks are not touched.
//!
//! ```toml
//! [[tests]]
//! name = "a valid test document decodes"
//!
//! [[tests.inputs]]
//! attributes = { uri = "/submit/test/test/1/2c3a0767-d9b4-4bbe-a4a0-8ba6d59c6f1e" }
//! payload = '{"field": "a"}'          # text; or payload_base64 = "..." for bytes (gzip)
//!
//! [[tests.outputs]]                   # every output matches exactly one of these, and back
//! attributes = { document_namespace = "test", document_type = "test" }  # equal; others may be present
//! payload = '{"field": "a"}'          # optional: these JSON fields equal (others may be present)
//!
//! [[tests.dead_letters]]              # none expected here: the list is exact
//! ```
//!
//! A case without `outputs` (or `dead_letters`) expects none. A dead letter is expected by
//! `error_type`, optionally `message` (a substring of its `error_message`) and `attributes`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use sluice::Message;

use crate::config::JobConfig;
use crate::jobs::{self, JobError};

/// Why a test file cannot be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestFileError {
    /// The file cannot be read.
    #[error("cannot read test file `{path}`")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid test file.
    #[error("test file `{path}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with its key path.
        message: String,
    },
    /// The job cannot run.
    #[error("test `{name}`")]
    Job {
        /// The test case.
        name: String,
        /// Why.
        source: Box<JobError>,
    },
}

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The test cases, run in order.
    pub tests: Vec<TestCase>,
}

/// One test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Its name, printed with its result.
    pub name: String,
    /// The messages read, in order.
    #[serde(default)]
    pub inputs: Vec<InputMessage>,
    /// Every output expected (a multiset: each output matches exactly one).
    #[serde(default)]
    pub outputs: Vec<ExpectedOutput>,
    /// Every dead letter expected (a multiset).
    #[serde(default)]
    pub dead_letters: Vec<ExpectedDeadLetter>,
}

/// An input message: attributes and a payload, as text or base64.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputMessage {
    /// The attributes (`uri`, `submission_timestamp`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The payload as UTF-8 text (JSON, usually).
    pub payload: Option<String>,
    /// The payload as base64 (bytes: a gzipped document).
    pub payload_base64: Option<String>,
}

/// An expected output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOutput {
    /// Attributes the output has with these values (it may have more).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The payload: when both are JSON, every field given has this value in the output (others
    /// may be present, such as the decoder's `metadata`); else byte for byte.
    pub payload: Option<String>,
}

/// An expected dead letter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDeadLetter {
    /// Its `error_type` (the step that failed).
    pub error_type: String,
    /// A substring of its `error_message`.
    pub message: Option<String>,
    /// Attributes it has with these values (it may have more).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Reads a test file.
pub fn load(path: &Path) -> Result<TestFile, TestFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TestFileError::Read {
        path: name.clone(),
        source,
    })?;
    let file: TestFile = toml::from_str(&text).map_err(|e| TestFileError::Invalid {
        path: name.clone(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    for (i, t) in file.tests.iter().enumerate() {
        for (j, m) in t.inputs.iter().enumerate() {
            if m.payload.is_some() == m.payload_base64.is_some() {
                return Err(TestFileError::Invalid {
                    path: name.clone(),
                    message: format!(
                        "tests[{i}] (`{}`) inputs[{j}]: give one of `payload` or `payload_base64`",
                        t.name
                    ),
                });
            }
            if let Some(b) = &m.payload_base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| TestFileError::Invalid {
                        path: name.clone(),
                        message: format!(
                            "tests[{i}] (`{}`) inputs[{j}].payload_base64: {e}",
                            t.name
                        ),
                    })?;
            }
        }
    }
    Ok(file)
}

/// The result of one test case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Empty when it passed; else what differs, readable.
    pub diff: String,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.diff.is_empty()
    }
}

/// Runs every case of `file` on the job `config` describes.
pub fn run(config: &JobConfig, file: &TestFile) -> Result<Vec<CaseResult>, TestFileError> {
    file.tests
        .iter()
        .map(|case| {
            let input = case.inputs.iter().map(to_message).collect();
            let got = jobs::run_in_memory(config, input).map_err(|source| TestFileError::Job {
                name: case.name.clone(),
                source: Box::new(source),
            })?;
            let mut diff = String::new();
            compare(
                "outputs",
                &case.outputs,
                &got.outputs,
                output_matches,
                describe_expected_output,
                &mut diff,
            );
            compare(
                "dead letters",
                &case.dead_letters,
                &got.dead_letters,
                dead_letter_matches,
                describe_expected_dead_letter,
                &mut diff,
            );
            Ok(CaseResult {
                name: case.name.clone(),
                diff,
            })
        })
        .collect()
}

fn to_message(m: &InputMessage) -> Message {
    let payload = match (&m.payload, &m.payload_base64) {
        (Some(p), _) => p.as_bytes().to_vec(),
        // checked by `load`
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    Message::new(payload).with_attributes(m.attributes.clone())
}

fn attributes_match(expected: &BTreeMap<String, String>, got: &Message) -> bool {
    expected
        .iter()
        .all(|(k, v)| got.attribute(k) == Some(v.as_str()))
}

/// A JSON payload matches when every field the expected object gives is in the output with a
/// matching value (objects field by field, arrays and scalars exactly): the decoder adds its
/// `metadata` to each document, which a test need not repeat. Other payloads: byte for byte.
fn payload_matches(expected: &str, got: &[u8]) -> bool {
    let as_json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    match (as_json(expected.as_bytes()), as_json(got)) {
        (Some(a), Some(b)) => json_contains(&b, &a),
        _ => expected.as_bytes() == got,
    }
}

fn json_contains(got: &serde_json::Value, expected: &serde_json::Value) -> bool {
    match (got, expected) {
        (serde_json::Value::Object(g), serde_json::Value::Object(e)) => e
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| json_contains(gv, v))),
        _ => got == expected,
    }
}

fn output_matches(e: &ExpectedOutput, got: &Message) -> bool {
    attributes_match(&e.attributes, got)
        && e.payload
            .as_deref()
            .is_none_or(|p| payload_matches(p, &got.payload))
}

fn dead_letter_matches(e: &ExpectedDeadLetter, got: &Message) -> bool {
    got.attribute("error_type") == Some(e.error_type.as_str())
        && e.message.as_deref().is_none_or(|m| {
            got.attribute("error_message")
                .is_some_and(|g| g.contains(m))
        })
        && attributes_match(&e.attributes, got)
}

/// A maximum matching of expected to actual records (augmenting paths): the multisets are
/// equal when every expected and every actual record is matched.
fn matching<E>(
    expected: &[E],
    got: &[Message],
    matches: fn(&E, &Message) -> bool,
) -> Vec<Option<usize>> {
    let edges: Vec<Vec<usize>> = expected
        .iter()
        .map(|e| (0..got.len()).filter(|&j| matches(e, &got[j])).collect())
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; got.len()];
    fn augment(
        i: usize,
        edges: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &j in &edges[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            let current = owner[j];
            if current.is_none_or(|k| augment(k, edges, owner, seen)) {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }
    for i in 0..expected.len() {
        let mut seen = vec![false; got.len()];
        augment(i, &edges, &mut owner, &mut seen);
    }
    owner
}

fn compare<E>(
    what: &str,
    expected: &[E],
    got: &[Message],
    matches: fn(&E, &Message) -> bool,
    describe: fn(&E) -> String,
    diff: &mut String,
) {
    let owner = matching(expected, got, matches);
    let matched: Vec<bool> = (0..expected.len())
        .map(|i| owner.contains(&Some(i)))
        .collect();
    let missing: Vec<&E> = expected
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(e, _)| e)
        .collect();
    let extra: Vec<&Message> = got
        .iter()
        .zip(&owner)
        .filter(|(_, o)| o.is_none())
        .map(|(g, _)| g)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return;
    }
    let _ = writeln!(
        diff,
        "  {what}: expected {}, got {} ({} matched)",
        expected.len(),
        got.len(),
        expected.len() - missing.len()
    );
    for e in missing {
        let _ = writeln!(diff, "    - expected, not produced: {}", describe(e));
    }
    for g in extra {
        let _ = writeln!(
            diff,
            "    + produced, not expected: {}",
            describe_message(g)
        );
    }
}

fn inline(map: &BTreeMap<String, String>) -> String {
    let fields: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k} = {}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn describe_expected_output(e: &ExpectedOutput) -> String {
    let mut s = format!("attributes {}", inline(&e.attributes));
    if let Some(p) = &e.payload {
        let _ = write!(s, " payload {}", shorten(p, 300));
    }
    s
}

fn describe_expected_dead_letter(e: &ExpectedDeadLetter) -> String {
    let mut s = format!("error_type {}", e.error_type);
    if let Some(m) = &e.message {
        let _ = write!(s, " message containing {m:?}");
    }
    if !e.attributes.is_empty() {
        let _ = write!(s, " attributes {}", inline(&e.attributes));
    }
    s
}

fn describe_message(m: &Message) -> String {
    let payload = match std::str::from_utf8(&m.payload) {
        Ok(text) => shorten(text, 300),
        Err(_) => format!(
            "base64:{}",
            shorten(
                &base64::engine::general_purpose::STANDARD.encode(&m.payload),
                300
            )
        ),
    };
    format!(
        "attributes {}\n        payload {payload}",
        inline(&m.attributes)
    )
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(attrs: &[(&str, &str)]) -> ExpectedOutput {
        ExpectedOutput {
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            payload: None,
        }
    }

    #[test]
    fn the_matching_is_maximal_not_greedy() {
        // a loose expectation first must not take the only record the strict one matches
        let expected = [out(&[("a", "1")]), out(&[("a", "1"), ("b", "2")])];
        let got = [
            Message::new("")
                .with_attribute("a", "1")
                .with_attribute("b", "2"),
            Message::new("").with_attribute("a", "1"),
        ];
        let owner = matching(&expected, &got, output_matches);
        assert!(owner.iter().all(Option::is_some), "{owner:?}");
        let mut diff = String::new();
        compare(
            "outputs",
            &expected,
            &got,
            output_matches,
            describe_expected_output,
            &mut diff,
        );
        assert_eq!(diff, "");
    }

    #[test]
    fn multisets_count_copies_and_the_diff_names_both_sides() {
        let expected = [out(&[("a", "1")]), out(&[("a", "1")])];
        let got = [Message::new("x").with_attribute("a", "1")];
        let mut diff = String::new();
        compare(
            "outputs",
            &expected,
            &got,
            output_matches,
            describe_expected_output,
            &mut diff,
        );
        assert!(diff.contains("expected 2, got 1 (1 matched)"), "{diff}");
        assert!(diff.contains("- expected, not produced"), "{diff}");
    }

    #[test]
    fn payloads_compare_as_json_when_both_are() {
        assert!(payload_matches(
            "{\"a\": 1, \"b\": 2}",
            b"{\"b\":2,\"a\":1}"
        ));
        assert!(!payload_matches("{\"a\": 1}", b"{\"a\":2}"));
        // fields the expectation leaves out are not compared; arrays are exact
        assert!(payload_matches(
            "{\"a\": {\"b\": 1}}",
            b"{\"a\":{\"b\":1,\"c\":2},\"metadata\":{}}"
        ));
        assert!(!payload_matches("{\"a\": [1]}", b"{\"a\":[1,2]}"));
        assert!(!payload_matches("{\"a\": 1}", b"{\"b\":1}"));
        assert!(payload_matches("plain", b"plain"));
    }
}
