//! The validation pass: checks the TOML tree through the typed config itself (the connectors'
//! structs and the job's), collecting every problem with its key path, so `sluice validate`
//! reports them all at once (serde alone stops at the first).
//!
//! How: each section is deserialised with `serde_path_to_error`; on an error the offending key
//! is recorded and removed from the tree, and the section is read again, until it reads or
//! nothing more can be removed. Serde checks required keys after every present key and names
//! one at a time: a missing key is filled in with a simple value the type accepts (`""`, `1`,
//! an enum's first name, ...) to hear of the next.
//!
//! A tagged section (`[source]`, `[sink]`, `[dead_letter]`) is read in two steps: its `type`
//! picks the connector, then the rest of the table is that connector's struct, so errors keep
//! their paths (serde's internally tagged enums would buffer the table and lose them). The
//! top level is read as `JobConfig<IgnoredAny, IgnoredAny>`, its sections taken as anything.
//! Validation reads files' metadata (`decoder.schemas` must exist, `source.state_dir` must
//! not be a file, `source.path` must match a file) and writes nothing.

use std::path::Path;

use serde::de::{DeserializeOwned, IgnoredAny};
use toml::Value;

use super::model::{DeadLetterConfig, JobConfig, SinkConfig, SourceConfig};
use super::ConfigError;

/// A tagged config section: one struct per `type`.
pub trait Connector: Sized {
    /// The `type`s this build supports.
    const KINDS: &'static [&'static str];
    /// `type`s that are known but not in this build (a clearer error than "unknown").
    const PLANNED: &'static [&'static str];

    /// Checks `table` (without its `type` key) as the struct of `kind`, pushing every
    /// problem; `None` when `kind` is not one of [`Connector::KINDS`], `Some(None)` when the
    /// table has problems.
    fn check(
        kind: &str,
        table: toml::Table,
        key: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Option<Self>>;
}

/// Checks a connector's table as its config struct `T`, every problem pushed with its path
/// under `key`.
pub fn check_connector<T: DeserializeOwned>(
    table: toml::Table,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    check_as(Value::Table(table), key, &[], errors)
}

const TAGGED: &[&str] = &["source", "sink", "dead_letter"];

/// The top level, its sections taken as anything: they are checked on their own.
type TopLevel = JobConfig<IgnoredAny, IgnoredAny, IgnoredAny>;

/// The keys a config file may have at its top level (sections included).
pub(super) fn top_level_keys() -> &'static [&'static str] {
    sluice_transforms::config_doc::serde_fields::<TopLevel>()
}

/// Checks the whole tree (relative paths are relative to the working directory: `load` has
/// made a file's relative to its folder).
pub(super) fn validate(root: &toml::Table, errors: &mut Vec<ConfigError>) {
    // Missing sections are reported below, with the kinds they may have.
    let missing: Vec<Vec<String>> = TAGGED.iter().map(|s| vec![s.to_string()]).collect();
    check_as::<TopLevel>(
        Value::Table(without_nested_sinks(root)),
        "",
        &missing,
        errors,
    );
    check_tagged::<SourceConfig>(root, "source", errors);
    check_tagged::<SinkConfig>(root, "sink", errors);
    check_dead_letter(root, errors);
    check_nested_sinks(root, errors);

    // Rules across keys.
    let job = root.get("job").and_then(Value::as_str);
    if job == Some("decoder") {
        {
            if !root.contains_key("decoder") {
                errors.push(ConfigError::new(
                    "decoder",
                    "missing required section `[decoder]` for job = \"decoder\" (it needs at least `schemas`)",
                ));
            }
            if root.get("decompress").and_then(Value::as_bool) == Some(true) {
                errors.push(ConfigError::new(
                    "decompress",
                    "only the sink job takes `decompress` (the decoder always decompresses)",
                ));
            }
        }
    }
    for section in ["dedup", "counts"] {
        if let Some(job) = job.filter(|j| *j != "decoder" && root.contains_key(section)) {
            errors.push(ConfigError::new(
                section,
                format!("only the decoder job takes `[{section}]`, not job = {job:?}"),
            ));
        }
    }
    if let Some(d) = root.get("dedup") {
        if let Some(p) = d.get("payload_field").and_then(Value::as_str) {
            if !p.starts_with('/') {
                errors.push(ConfigError::new(
                    "dedup.payload_field",
                    format!("expected a JSON pointer starting with `/`, found {p:?}"),
                ));
            }
        }
        if d.get("key").and_then(Value::as_str) == Some("") {
            errors.push(ConfigError::new(
                "dedup.key",
                "expected an attribute name, found an empty string",
            ));
        }
        let zero = match d.get("window") {
            Some(Value::String(w)) => {
                sluice_transforms::io::units::parse_duration(w).is_ok_and(|w| w.is_zero())
            }
            Some(Value::Integer(0)) => true,
            _ => false,
        };
        {
            if zero {
                errors.push(ConfigError::new(
                    "dedup.window",
                    "expected a window above zero",
                ));
            }
        }
    }
    match root.get("job").and_then(Value::as_str) {
        Some("sink") if root.contains_key("decoder") => errors.push(ConfigError::new(
            "decoder",
            "the sink job does not decode: remove `[decoder]` or set job = \"decoder\"",
        )),
        Some("republisher") if root.contains_key("decoder") => errors.push(ConfigError::new(
            "decoder",
            "the republisher takes decoded messages: remove `[decoder]`",
        )),
        _ => {}
    }
    match (root.get("job").and_then(Value::as_str), root.get("routes")) {
        (Some("republisher"), None) => errors.push(ConfigError::new(
            "routes",
            "missing required `[[routes]]` for job = \"republisher\" (each a `name`, filters and a `sink`)",
        )),
        (Some("republisher"), Some(Value::Array(routes))) => {
            let mut names = std::collections::BTreeSet::new();
            for (i, r) in routes.iter().enumerate() {
                if let Some(Value::String(n)) = r.get("name") {
                    if !names.insert(n.clone()) {
                        errors.push(ConfigError::new(
                            format!("routes[{i}].name"),
                            format!("route name {n:?} is used twice"),
                        ));
                    }
                }
                if let Some(Value::Integer(n)) = r.get("sample_below") {
                    if !(1..=100).contains(n) {
                        errors.push(ConfigError::new(
                            format!("routes[{i}].sample_below"),
                            format!("expected 1 to 100 (sample_id is 0 to 99), found {n}"),
                        ));
                    }
                }
            }
        }
        (Some(job), Some(_)) if job != "republisher" => errors.push(ConfigError::new(
            "routes",
            format!("only the republisher job takes `[[routes]]`, not job = {job:?}"),
        )),
        _ => {}
    }
    if let Some(Value::String(s)) = root.get("decoder").and_then(|d| d.get("schemas")) {
        if !Path::new(s).exists() {
            errors.push(ConfigError::new(
                "decoder.schemas",
                format!("schemas path {s:?} does not exist (expected a directory or a .tar.gz)"),
            ));
        }
    }
    if let Some(Value::String(pattern)) = root
        .get("source")
        .filter(|s| s.get("type").and_then(Value::as_str) == Some("file"))
        .and_then(|s| s.get("path"))
    {
        // Lists the files (reads directories, opens nothing): an input that matches no file
        // is reported with the rest.
        if let Err(e) = sluice_transforms::io::file::FileSource::glob(
            pattern.clone(),
            sluice_transforms::io::format::InputFormat::Json,
        )
        .resolve()
        {
            errors.push(ConfigError::new("source.path", sluice::chain(&e)));
        }
    }
    if let Some(Value::String(s)) = root.get("source").and_then(|d| d.get("state_dir")) {
        let p = Path::new(s);
        if !s.is_empty() && p.exists() && !p.is_dir() {
            errors.push(ConfigError::new(
                "source.state_dir",
                format!("{s:?} exists and is not a directory"),
            ));
        }
    }
    check_bigquery(root, errors);
    let dead_letter = root.get("dead_letter");
    // a Kafka dead-letter topic keeps the error attributes in every format (headers, the
    // envelope, Heka fields), a BigQuery error table in its columns; line outputs keep them
    // only in the envelope
    let kafka = dead_letter
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str)
        == Some("kafka");
    if let Some(Value::String(f)) = dead_letter
        .filter(|d| d.get("type").and_then(Value::as_str) != Some("bigquery"))
        .and_then(|d| d.get("format"))
    {
        if f != "json" && !kafka {
            errors.push(ConfigError::new(
                "dead_letter.format",
                format!("dead letters are written in the replayable `json` envelope (their error attributes would be lost), found {f:?}"),
            ));
        }
    }
}

/// The sections whose `sink` key is a sink of its own: `[dedup.sink]`, `[counts.sink]`.
const NESTED_SINKS: &[&str] = &["dedup", "counts"];

/// `root` without the nested sinks, which [`check_nested_sinks`] checks with their paths (the
/// typed section would read them as one tagged enum and lose the paths).
fn without_nested_sinks(root: &toml::Table) -> toml::Table {
    let mut root = root.clone();
    for section in NESTED_SINKS {
        if let Some(Value::Table(t)) = root.get_mut(*section) {
            t.remove("sink");
        }
    }
    root
}

/// `[dedup.sink]` and `[counts.sink]`: each a sink like `[sink]`; duplicates are dead letters,
/// so their sink takes the dead letters' formats; a sink for dropped duplicates is a mistake.
fn check_nested_sinks(root: &toml::Table, errors: &mut Vec<ConfigError>) {
    for section in NESTED_SINKS {
        let Some(Value::Table(t)) = root.get(*section) else {
            continue;
        };
        let Some(sink) = t.get("sink") else { continue };
        let key = format!("{section}.sink");
        let mut nested = toml::Table::new();
        nested.insert(key.clone(), sink.clone());
        check_tagged::<SinkConfig>(&nested, &key, errors);
        if *section != "dedup" {
            continue;
        }
        if t.get("on_duplicate").and_then(Value::as_str) == Some("drop") {
            errors.push(ConfigError::new(
                key.clone(),
                "on_duplicate = \"drop\" writes no duplicate: remove `[dedup.sink]` or set on_duplicate = \"dead_letter\"",
            ));
        }
        let kind = sink.get("type").and_then(Value::as_str);
        let format = sink.get("format").and_then(Value::as_str);
        match (kind, format) {
            (Some("bigquery"), f) if f != Some("raw") => errors.push(ConfigError::new(
                format!("{key}.format"),
                format!("duplicates are dead letters: written to BigQuery in the `raw` format (every attribute a column), found {:?}", f.unwrap_or("payload")),
            )),
            (Some("bigquery" | "kafka"), _) | (_, None | Some("json")) => {}
            (_, Some(f)) => errors.push(ConfigError::new(
                format!("{key}.format"),
                format!("duplicates are dead letters: written in the replayable `json` envelope (their error attributes would be lost), found {f:?}"),
            )),
        }
    }
    if let Some(Value::Table(t)) = root.get("counts") {
        let zero = match t.get("every") {
            Some(Value::String(w)) => {
                sluice_transforms::io::units::parse_duration(w).is_ok_and(|w| w.is_zero())
            }
            Some(Value::Integer(0)) => true,
            _ => false,
        };
        if zero {
            errors.push(ConfigError::new(
                "counts.every",
                "expected a period above zero",
            ));
        }
    }
}

/// BigQuery sinks: dead letters need the `raw` format (every attribute a column), and
/// creating `payload` tables needs the decoder's schemas.
fn check_bigquery(root: &toml::Table, errors: &mut Vec<ConfigError>) {
    let is_bigquery = |section: &str| {
        root.get(section)
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            == Some("bigquery")
    };
    let format = |section: &str| {
        root.get(section)
            .and_then(|s| s.get("format"))
            .and_then(Value::as_str)
            .unwrap_or("payload")
    };
    if is_bigquery("dead_letter") && format("dead_letter") != "raw" {
        errors.push(ConfigError::new(
            "dead_letter.format",
            format!(
                "dead letters are written to BigQuery in the `raw` format (every attribute a column, the payload as bytes), found {:?}",
                format("dead_letter")
            ),
        ));
    }
    let creates = root
        .get("sink")
        .and_then(|s| s.get("create_tables"))
        .and_then(Value::as_bool)
        == Some(true);
    if is_bigquery("sink")
        && creates
        && format("sink") == "payload"
        && root.get("job").and_then(Value::as_str) != Some("decoder")
    {
        errors.push(ConfigError::new(
            "sink.create_tables",
            "tables of the `payload` format are created from the decoder's schemas: only the decoder job can create them (or use format = \"decoded\" or \"raw\")",
        ));
    }
}

fn quoted(values: &[impl AsRef<str>]) -> String {
    values
        .iter()
        .map(|v| format!("\"{}\"", v.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `[dead_letter]`: its own keys ([`DeadLetterConfig::OWN_KEYS`]), then the rest as a sink.
fn check_dead_letter(root: &toml::Table, errors: &mut Vec<ConfigError>) {
    let mut root = root.clone();
    if let Some(Value::Table(section)) = root.get_mut("dead_letter") {
        for key in DeadLetterConfig::OWN_KEYS {
            match section.remove(*key) {
                None | Some(Value::Boolean(_)) => {}
                Some(other) => errors.push(ConfigError::new(
                    format!("dead_letter.{key}"),
                    format!("expected a boolean, found {}", type_name(&other)),
                )),
            }
        }
    }
    check_tagged::<SinkConfig>(&root, "dead_letter", errors);
}

fn check_tagged<C: Connector>(root: &toml::Table, section: &str, errors: &mut Vec<ConfigError>) {
    let kinds = quoted(C::KINDS);
    let mut table = match root.get(section) {
        None => {
            errors.push(ConfigError::new(
                section,
                format!("missing required section `[{section}]` (with `type` one of {kinds})"),
            ));
            return;
        }
        Some(Value::Table(t)) => t.clone(),
        Some(other) => {
            errors.push(ConfigError::new(
                section,
                format!("expected a table, found {}", type_name(other)),
            ));
            return;
        }
    };
    let type_key = format!("{section}.type");
    let kind = match table.remove("type") {
        Some(Value::String(s)) => s,
        None => {
            errors.push(ConfigError::new(
                type_key,
                format!("missing required key (expected one of {kinds})"),
            ));
            return;
        }
        Some(other) => {
            errors.push(ConfigError::new(
                type_key,
                format!("expected one of {kinds}, found {}", type_name(&other)),
            ));
            return;
        }
    };
    if C::check(&kind, table, section, errors).is_none() {
        let message = if C::PLANNED.contains(&kind.as_str()) {
            format!("{section} type {kind:?} is not supported by this build (supported: {kinds})")
        } else {
            format!("expected one of {kinds}, found {kind:?}")
        };
        errors.push(ConfigError::new(type_key, message));
    }
}

/// Reads `value` as `T`, pushing every problem found (see the module docs); `Some` only when
/// there was none. Missing keys at the paths in `reported` are left to the caller.
fn check_as<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    reported: &[Vec<String>],
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut removed: Vec<Vec<String>> = reported.to_vec();
    let mut failed = false;
    // Each round removes a key or fills one in; the bound is a guard, never reached by a
    // config a person wrote.
    for _ in 0..1000 {
        let (path, message) = match read::<T>(value.clone()) {
            Ok(v) => return (!failed).then_some(v),
            Err(e) => e,
        };
        failed = true;
        if let Some(field) = between(&message, "missing field `", "`") {
            let mut at = path.clone();
            at.push(field.to_string());
            if !removed.contains(&at) {
                let message = match expected_at::<T>(&value, &at) {
                    Some(expected) => format!("missing required key (expected {expected})"),
                    None => "missing required key".to_string(),
                };
                errors.push(ConfigError::new(join(prefix, &at), message));
            }
            // Serde names one missing key at a time: fill this one in, to hear of the next.
            if let Some(filled) = filled_in::<T>(&value, &at) {
                value = filled;
                removed.push(at);
                continue;
            }
        } else {
            errors.push(ConfigError::new(join(prefix, &path), explain(&message)));
        }
        // Go on without the bad key (or the table missing a key), if it can be removed.
        if path.is_empty() || !remove(&mut value, &path) {
            return None;
        }
        removed.push(path);
    }
    None
}

/// Reads `value` as `T`; an error is its key path and serde's message.
fn read<T: DeserializeOwned>(value: Value) -> Result<T, (Vec<String>, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|error| {
        let path = error
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        (path, error.into_inner().message().to_string())
    })
}

/// `value` with `new` at `path` (whose parent tables exist).
fn with_value(value: &Value, path: &[String], new: Value) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut copy = value.clone();
    let mut at = &mut copy;
    for key in parents {
        at = at.get_mut(key.as_str())?;
    }
    at.as_table_mut()?.insert(last.clone(), new);
    Some(copy)
}

/// Serde's complaint about `probe` at `path`, if it has one there.
fn complaint_at<T: DeserializeOwned>(
    value: &Value,
    path: &[String],
    probe: Value,
) -> Option<String> {
    match read::<T>(with_value(value, path, probe)?) {
        Err((at, message)) if at == path => Some(message),
        _ => None,
    }
}

/// What `T` expects at `path`, learnt by putting values there that it refuses (an empty array,
/// then an empty string for the names of an enum) and reading serde's complaint.
fn expected_at<T: DeserializeOwned>(value: &Value, path: &[String]) -> Option<String> {
    let message = complaint_at::<T>(value, path, Value::Array(Vec::new()))?;
    if let Some(expected) = message.strip_prefix("invalid type: sequence, expected ") {
        if !expected.contains("variant") {
            return Some(plain(expected).to_string());
        }
    }
    Some(format!(
        "one of {}",
        quoted(&variants_at::<T>(value, path)?)
    ))
}

/// The names an enum at `path` takes.
fn variants_at<T: DeserializeOwned>(value: &Value, path: &[String]) -> Option<Vec<String>> {
    let message = complaint_at::<T>(value, path, Value::String(String::new()))?;
    let (_, expected) = message
        .strip_prefix("unknown variant ``")?
        .split_once("expected ")?;
    Some(listed(expected).into_iter().map(String::from).collect())
}

/// `value` with some value `T` accepts at `path`, if one of a few simple ones is.
fn filled_in<T: DeserializeOwned>(value: &Value, path: &[String]) -> Option<Value> {
    let variant = variants_at::<T>(value, path)
        .and_then(|v| v.into_iter().next())
        .map(Value::String);
    [
        Value::String(String::new()),
        Value::Integer(1),
        Value::Boolean(true),
        Value::Table(toml::Table::new()),
        Value::Array(Vec::new()),
    ]
    .into_iter()
    .chain(variant)
    .find_map(|candidate| {
        let filled = with_value(value, path, candidate)?;
        match read::<T>(filled.clone()) {
            Err((at, _)) if at == path => None,
            _ => Some(filled),
        }
    })
}

/// Serde's names of types, as a config file calls them.
fn plain(expected: &str) -> &str {
    if expected.starts_with("struct ") || expected.starts_with("a map") {
        "a table"
    } else if expected == "path string" {
        "a path"
    } else {
        expected
    }
}

fn join(prefix: &str, path: &[String]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !prefix.is_empty() {
        parts.push(prefix);
    }
    parts.extend(path.iter().map(String::as_str));
    parts.join(".")
}

fn remove(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        match at.get_mut(key.as_str()) {
            Some(v) => at = v,
            None => return false,
        }
    }
    at.as_table_mut()
        .is_some_and(|t| t.remove(last.as_str()).is_some())
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    rest.find(end).map(|i| &rest[..i])
}

/// The names serde lists after `expected` (`` `a`, `b` or `c` ``).
fn listed(expected: &str) -> Vec<&str> {
    expected.split('`').skip(1).step_by(2).collect()
}

/// Serde's messages, said as the rest of the config errors say things.
fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        return format!(
            "unknown key; expected one of: {}",
            listed(expected).join(", ")
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((found, expected)) = rest.split_once("`, expected ") {
            return format!(
                "expected one of {}, found {found:?}",
                quoted(&listed(expected))
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("expected {}, found {found}", plain(expected));
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn top_level_keys_come_from_the_struct() {
        let keys = top_level_keys();
        for k in [
            "job",
            "workers",
            "source",
            "sink",
            "dead_letter",
            "pipeline",
        ] {
            assert!(keys.contains(&k), "{k} in {keys:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Two {
        name: String,
        kind: super::super::JobKind,
        count: u32,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    fn check_text(text: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let value = Value::Table(toml::from_str(text).unwrap());
        assert!(check_as::<Two>(value, "t", &[], &mut errors).is_none());
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_missing_and_bad_key_of_a_table_is_reported() {
        assert_eq!(
            check_text("extra = 1"),
            [
                "`t.extra`: unknown key; expected one of: name, kind, count, inner",
                "`t.name`: missing required key (expected a string)",
                "`t.kind`: missing required key (expected one of \"decoder\", \"sink\", \"republisher\")",
                "`t.count`: missing required key (expected u32)",
            ]
        );
        assert_eq!(
            check_text("name = 3\ncount = -1\ninner = { flag = \"yes\", other = 2 }"),
            [
                "`t.count`: invalid value: integer `-1`, expected u32",
                "`t.inner.flag`: expected a boolean, found string \"yes\"",
                "`t.inner.other`: unknown key; expected one of: flag",
                "`t.name`: expected a string, found integer `3`",
                "`t.kind`: missing required key (expected one of \"decoder\", \"sink\", \"republisher\")",
            ]
        );
    }

    #[test]
    fn serde_messages_are_explained() {
        assert_eq!(
            explain("unknown field `bukket`, expected one of `dir`, `path`"),
            "unknown key; expected one of: dir, path"
        );
        assert_eq!(
            explain("unknown variant `csv`, expected `json` or `text`"),
            "expected one of \"json\", \"text\", found \"csv\""
        );
        assert_eq!(
            explain("invalid type: integer `5`, expected a string"),
            "expected a string, found integer `5`"
        );
    }
}
