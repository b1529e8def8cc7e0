//! `sluice dead-letters summary|show|replay`: what users did by hand with
//! `zcat out/errors/*/*.gz | jq`.
//!
//! Dead letters are read from local files and directories (searched recursively) and from S3
//! (`s3://bucket/prefix`: every object under the prefix; credentials, region and endpoint from
//! the usual `AWS_*` variables, or `--endpoint`), as the object sinks write them: ndjson
//! envelopes (`{"attributeMap": {...}, "payload": "<base64>"}`), gzipped or not. Hidden files
//! and staging files of a killed run are skipped. A line that is not an envelope is counted and
//! reported, never silently dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sluice::Message;

/// The largest gunzipped payload `show` decodes (bigger ones are shown as their first bytes).
const MAX_DECODED_PAYLOAD: u64 = 1 << 20;
/// The bytes of a payload's text `show` prints at most.
const MAX_SHOWN_PAYLOAD: usize = 4096;

/// Why dead letters cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// A path cannot be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A URL scheme this build cannot read.
    #[error(
        "`{0}`: only local paths and s3:// URLs can be read (copy other remote dead letters first)"
    )]
    Remote(String),
    /// An S3 URL cannot be listed or read.
    #[error("cannot read `{url}`")]
    S3 {
        /// The URL or object.
        url: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing matched.
    #[error("no dead-letter file under {0}")]
    Empty(String),
}

/// One dead letter and where it was read.
#[derive(Clone, Debug)]
pub struct Record {
    /// The file.
    pub file: PathBuf,
    /// Its 1-based line in the (gunzipped) file.
    pub line: u64,
    /// The dead letter, in message form: the original payload and attributes plus
    /// `error_type`, `error_message`, ...
    pub message: Message,
}

impl Record {
    /// Its `error_type` (`(none)` if missing).
    pub fn error_type(&self) -> &str {
        self.message.attribute("error_type").unwrap_or("(none)")
    }

    /// Its `error_message` (empty if missing).
    pub fn error_message(&self) -> &str {
        self.message.attribute("error_message").unwrap_or("")
    }
}

/// What was read.
#[derive(Clone, Debug, Default)]
pub struct DeadLetters {
    /// The dead letters, in file and line order.
    pub records: Vec<Record>,
    /// The files read.
    pub files: usize,
    /// Lines that are not envelopes: (file, line).
    pub unreadable: Vec<(PathBuf, u64)>,
}

/// Which dead letters a command takes.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these `error_type`s (all if empty).
    pub error_types: Vec<String>,
    /// Only those whose `error_message` contains this.
    pub message: Option<String>,
}

impl Filter {
    /// Whether `r` is selected.
    pub fn selects(&self, r: &Record) -> bool {
        (self.error_types.is_empty() || self.error_types.iter().any(|t| t == r.error_type()))
            && self
                .message
                .as_deref()
                .is_none_or(|m| r.error_message().contains(m))
    }
}

/// Reads every dead letter under `paths` (files, directories searched recursively, or
/// `s3://bucket/prefix` URLs; `endpoint` is the S3 endpoint, else `AWS_ENDPOINT` or AWS's).
pub fn read(
    paths: &[PathBuf],
    filter: &Filter,
    endpoint: Option<&str>,
) -> Result<DeadLetters, DeadLetterError> {
    let mut files = Vec::new();
    let mut objects = Vec::new();
    for p in paths {
        let text = p.to_string_lossy();
        if let Some(rest) = text.strip_prefix("s3://") {
            objects.extend(s3_objects(rest, endpoint)?);
            continue;
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if !scheme.contains('/') {
                return Err(DeadLetterError::Remote(text.into_owned()));
            }
        }
        collect(p, &mut files)?;
    }
    if files.is_empty() && objects.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
        return Err(DeadLetterError::Empty(names.join(", ")));
    }
    files.sort();
    files.dedup();
    let mut out = DeadLetters {
        files: files.len() + objects.len(),
        ..DeadLetters::default()
    };
    for file in files {
        let read_error = |source| DeadLetterError::Read {
            path: file.clone(),
            source,
        };
        let raw = std::fs::File::open(&file).map_err(read_error)?;
        parse(BufReader::new(raw), &file, filter, &mut out).map_err(read_error)?;
    }
    for (name, bytes) in objects {
        let path = PathBuf::from(&name);
        parse(&bytes[..], &path, filter, &mut out).map_err(|e| DeadLetterError::S3 {
            url: name,
            source: Box::new(e),
        })?;
    }
    Ok(out)
}

/// Parses one file's lines (gunzipped when it starts with the gzip magic) into `out`.
fn parse(
    mut input: impl BufRead,
    file: &Path,
    filter: &Filter,
    out: &mut DeadLetters,
) -> std::io::Result<()> {
    let gz = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead + '_> = if gz {
        Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else {
        Box::new(input)
    };
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let n = i as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Message::from_json_line(&line) {
            Ok(message) => {
                let r = Record {
                    file: file.to_path_buf(),
                    line: n,
                    message,
                };
                if filter.selects(&r) {
                    out.records.push(r);
                }
            }
            Err(_) => out.unreadable.push((file.to_path_buf(), n)),
        }
    }
    Ok(())
}

/// The dead-letter objects under `bucket/prefix` (the URL without `s3://`), by URL, with
/// their bytes.
fn s3_objects(
    bucket_and_prefix: &str,
    endpoint: Option<&str>,
) -> Result<Vec<(String, bytes::Bytes)>, DeadLetterError> {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let url = format!("s3://{bucket_and_prefix}");
    let s3_error = |source: Box<dyn std::error::Error + Send + Sync>| DeadLetterError::S3 {
        url: url.clone(),
        source,
    };
    let (bucket, prefix) = bucket_and_prefix
        .split_once('/')
        .unwrap_or((bucket_and_prefix, ""));
    let mut options = sluice_transforms::io::object::S3Options::new(bucket);
    if let Some(e) = endpoint {
        options = options.with_endpoint(e);
    }
    let store = options.build().map_err(|e| s3_error(Box::new(e)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| s3_error(Box::new(e)))?;
    let prefix = prefix.trim_end_matches('/');
    let listed: Vec<object_store::ObjectMeta> = runtime
        .block_on(
            store
                .list(
                    (!prefix.is_empty())
                        .then(|| object_store::path::Path::from(prefix))
                        .as_ref(),
                )
                .try_collect(),
        )
        .map_err(|e| s3_error(Box::new(e)))?;
    let mut found = Vec::new();
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default().to_string();
        if !is_dead_letter_file(&name) {
            continue;
        }
        let object = format!("s3://{bucket}/{}", meta.location);
        let bytes = runtime
            .block_on(async { store.get(&meta.location).await?.bytes().await })
            .map_err(|e| DeadLetterError::S3 {
                url: object.clone(),
                source: Box::new(e),
            })?;
        found.push((object, bytes));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Whether a file name is one the object sinks write whole (not hidden, not a staging part).
fn is_dead_letter_file(name: &str) -> bool {
    let staging = name
        .rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    !name.starts_with('.')
        && !staging
        && (name.ends_with(".ndjson")
            || name.ends_with(".ndjson.gz")
            || name.ends_with(".json")
            || name.ends_with(".json.gz"))
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), DeadLetterError> {
    let meta = std::fs::metadata(path).map_err(|source| DeadLetterError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|source| DeadLetterError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| DeadLetterError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // hidden files (staging objects, the state directory) and a killed run's parts
        if p.is_dir() && !name.starts_with('.') {
            collect(&p, files)?;
        } else if is_dead_letter_file(&name) {
            files.push(p);
        }
    }
    Ok(())
}

/// `summary`: counts by `error_type`, and by `error_message` within each (the 5 most
/// frequent, messages cut to 160 characters).
pub fn summary(d: &DeadLetters) -> String {
    let mut by_type: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for r in &d.records {
        *by_type
            .entry(r.error_type())
            .or_default()
            .entry(r.error_message())
            .or_default() += 1;
    }
    let mut out = format!(
        "{} dead letter(s) in {} file(s)\n",
        d.records.len(),
        d.files
    );
    let mut types: Vec<(&str, usize, BTreeMap<&str, usize>)> = by_type
        .into_iter()
        .map(|(t, m)| (t, m.values().sum(), m))
        .collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (t, n, messages) in types {
        let _ = writeln!(out, "{n:>9}  {t}");
        let mut messages: Vec<(&str, usize)> = messages.into_iter().collect();
        messages.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (m, k) in messages.iter().take(5) {
            let _ = writeln!(out, "{k:>11}  {}", cut(&one_line(m), 160));
        }
        if messages.len() > 5 {
            let rest: usize = messages[5..].iter().map(|(_, k)| k).sum();
            let _ = writeln!(out, "{rest:>11}  ({} other message(s))", messages.len() - 5);
        }
    }
    unreadable_note(d, &mut out);
    out
}

fn unreadable_note(d: &DeadLetters, out: &mut String) {
    if let Some((file, line)) = d.unreadable.first() {
        let _ = writeln!(
            out,
            "{} line(s) are not dead-letter envelopes and were skipped (first: {} line {line})",
            d.unreadable.len(),
            file.display()
        );
    }
}

/// `show`: each dead letter pretty-printed, its payload decoded (gunzipped when gzipped; JSON
/// indented, other text as is, bytes as base64), at most `limit`.
pub fn show(d: &DeadLetters, limit: usize) -> String {
    let mut out = String::new();
    let n = d.records.len();
    for (i, r) in d.records.iter().take(limit).enumerate() {
        let m = &r.message;
        let _ = writeln!(
            out,
            "--- {} of {n}: {} ({} line {})",
            i + 1,
            r.error_type(),
            r.file.display(),
            r.line
        );
        let _ = writeln!(out, "error_message: {}", r.error_message());
        for (k, v) in &m.attributes {
            if k == "error_type" || k == "error_message" || k == "stack_trace" {
                continue;
            }
            let _ = writeln!(out, "  {k}: {v}");
        }
        if let Some(t) = m.attribute("stack_trace") {
            let _ = writeln!(out, "stack_trace:");
            for l in t.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
        let _ = write!(out, "{}", describe_payload(&m.payload));
    }
    if n > limit {
        let _ = writeln!(
            out,
            "--- {} more not shown (--limit, --error-type, --message select)",
            n - limit
        );
    }
    if n == 0 {
        out.push_str("no dead letter selected\n");
    }
    unreadable_note(d, &mut out);
    out
}

/// The payload block of `show`.
fn describe_payload(payload: &[u8]) -> String {
    let mut out = String::new();
    let (bytes, how) = if payload.starts_with(&[0x1f, 0x8b]) {
        let mut unzipped = Vec::new();
        let read = flate2::read::MultiGzDecoder::new(payload)
            .take(MAX_DECODED_PAYLOAD)
            .read_to_end(&mut unzipped);
        match read {
            Ok(n) if n as u64 == MAX_DECODED_PAYLOAD => (
                unzipped,
                format!(
                    "gzip, {} bytes -> gunzipped, its first {MAX_DECODED_PAYLOAD} bytes",
                    payload.len()
                ),
            ),
            Ok(n) => (
                unzipped,
                format!("gzip, {} bytes -> gunzipped {n} bytes", payload.len()),
            ),
            Err(e) => (payload.to_vec(), format!("gzip that does not gunzip: {e}")),
        }
    } else {
        (payload.to_vec(), format!("{} bytes", payload.len()))
    };
    let (kind, body) = match std::str::from_utf8(&bytes) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => (
                "JSON",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.into()),
            ),
            Err(_) => ("text", text.to_string()),
        },
        Err(_) => (
            "not UTF-8, base64",
            base64::engine::general_purpose::STANDARD.encode(&bytes),
        ),
    };
    let _ = writeln!(out, "payload ({how}, {kind}):");
    let mut end = body.len().min(MAX_SHOWN_PAYLOAD);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    for l in body[..end].lines() {
        let _ = writeln!(out, "  {l}");
    }
    if end < body.len() {
        let _ = writeln!(out, "  ... ({} more bytes not shown)", body.len() - end);
    }
    out
}

/// `replay`: writes the selected dead letters to `path` as job input (the same envelopes), and
/// returns how many were written and how many were left out because the dead-letter sink cut
/// their payload (`payload_truncated`: the original is gone).
pub fn write_replay_input(d: &DeadLetters, path: &Path) -> std::io::Result<(usize, usize)> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut written, mut truncated) = (0, 0);
    let mut line = String::new();
    for r in &d.records {
        if r.message.attribute("payload_truncated") == Some("true") {
            truncated += 1;
            continue;
        }
        line.clear();
        r.message.write_json_line(&mut line);
        if !line.ends_with('\n') {
            line.push('\n');
        }
        std::io::Write::write_all(&mut out, line.as_bytes())?;
        written += 1;
    }
    std::io::Write::flush(&mut out)?;
    Ok((written, truncated))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dead(error_type: &str, message: &str, payload: &[u8]) -> String {
        let mut s = String::new();
        Message::new(payload.to_vec())
            .with_attribute("error_type", error_type)
            .with_attribute("error_message", message)
            .write_json_line(&mut s);
        s.push('\n');
        s
    }

    #[test]
    fn reads_gzipped_and_plain_files_and_counts_what_is_not_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("errors/ParseUri");
        std::fs::create_dir_all(&sub).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(dead("ParseUri", "unknown uri", b"x").as_bytes())
            .unwrap();
        gz.write_all(dead("ParseUri", "unknown uri", b"y").as_bytes())
            .unwrap();
        std::fs::write(sub.join("a.ndjson.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("errors/b.ndjson"),
            format!("{}not json\n", dead("ParsePayload", "bad", b"{\"a\":1}")),
        )
        .unwrap();
        std::fs::write(sub.join(".a.ndjson.gz.staging"), "junk").unwrap();
        let d = read(&[dir.path().to_path_buf()], &Filter::default(), None).unwrap();
        assert_eq!((d.records.len(), d.files, d.unreadable.len()), (3, 2, 1));
        let s = summary(&d);
        assert!(s.starts_with("3 dead letter(s) in 2 file(s)"), "{s}");
        assert!(
            s.contains("        2  ParseUri\n          2  unknown uri"),
            "{s}"
        );
        assert!(s.contains("1 line(s) are not dead-letter envelopes"), "{s}");

        let only = Filter {
            error_types: vec!["ParsePayload".into()],
            message: None,
        };
        let d = read(&[dir.path().to_path_buf()], &only, None).unwrap();
        let shown = show(&d, 10);
        assert!(shown.contains("--- 1 of 1: ParsePayload"), "{shown}");
        assert!(
            shown.contains("payload (7 bytes, JSON):\n  {\n    \"a\": 1\n  }"),
            "{shown}"
        );
    }

    #[test]
    fn payloads_are_gunzipped_and_bytes_shown_as_base64() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        let shown = describe_payload(&gz.finish().unwrap());
        assert!(
            shown.contains("gunzipped 5 bytes, text):\n  hello"),
            "{shown}"
        );
        let shown = describe_payload(format!("\"{}\"", "a".repeat(10_000)).as_bytes());
        assert!(shown.len() < 4200, "{}", shown.len());
        assert!(
            shown.ends_with("  ... (5906 more bytes not shown)\n"),
            "{shown}"
        );
        let shown = describe_payload(&[0xff, 0x00]);
        assert!(shown.contains("base64):\n  /wA="), "{shown}");
    }

    #[test]
    fn an_unknown_url_scheme_is_refused() {
        let e = read(
            &[PathBuf::from("gs://bucket/errors/")],
            &Filter::default(),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("only local paths and s3:// URLs"),
            "{e}"
        );
    }
}
