//! The validation pass: walks the TOML tree against the known keys of every section and
//! collects every problem, so `sluice validate` reports them all at once (serde alone stops at
//! the first).

use std::path::Path;

use toml::Value;

use super::units::{check_duration, check_size};
use super::ConfigError;
use sluice_transforms::io::object::PathTemplate;

/// The type a key expects.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    /// An integer at least this large.
    UInt(i64),
    Size,
    Duration,
    Enum(&'static [&'static str]),
    /// A path template for objects (`${attr}`, `${attr:-default}`).
    Template,
    /// An existing file or directory (the schema registry).
    ExistingPath,
    /// A directory that exists or can be created (state kept across runs).
    Dir,
    Table(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    key: &'static str,
    ty: Ty,
    required: bool,
}

const fn opt(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        required: false,
    }
}

const fn req(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        required: true,
    }
}

const INPUT_FORMATS: &[&str] = &["json", "text", "heka"];
const OUTPUT_FORMATS: &[&str] = &["decoded", "json", "text"];
const COMPRESSIONS: &[&str] = &["gzip", "none"];

const SOURCE_KINDS: &[(&str, &[Field])] = &[
    (
        "file",
        &[
            req("path", Ty::Str),
            opt("format", Ty::Enum(INPUT_FORMATS)),
            opt("state_dir", Ty::Dir),
        ],
    ),
    ("stdin", &[opt("format", Ty::Enum(INPUT_FORMATS))]),
];
const SOURCE_UNSUPPORTED: &[&str] = &["kafka", "pubsub", "memory"];

const BATCH: &[Field] = &[
    opt("max_bytes", Ty::Size),
    opt("max_records", Ty::UInt(1)),
    opt("max_age", Ty::Duration),
];

const SINK_KINDS: &[(&str, &[Field])] = &[
    (
        "file",
        &[
            req("dir", Ty::Str),
            opt("path", Ty::Template),
            opt("format", Ty::Enum(OUTPUT_FORMATS)),
            opt("compression", Ty::Enum(COMPRESSIONS)),
            opt("batch", Ty::Table(BATCH)),
        ],
    ),
    (
        "s3",
        &[
            req("bucket", Ty::Str),
            opt("path", Ty::Template),
            opt("endpoint", Ty::Str),
            opt("region", Ty::Str),
            opt("credentials", Ty::Enum(&["env"])),
            opt("allow_http", Ty::Bool),
            opt("format", Ty::Enum(OUTPUT_FORMATS)),
            opt("compression", Ty::Enum(COMPRESSIONS)),
            opt("batch", Ty::Table(BATCH)),
        ],
    ),
    ("stdout", &[opt("format", Ty::Enum(OUTPUT_FORMATS))]),
    ("stderr", &[opt("format", Ty::Enum(OUTPUT_FORMATS))]),
];
const SINK_UNSUPPORTED: &[&str] = &["kafka", "pubsub", "bigquery", "memory"];

const DECODER: &[Field] = &[
    req("schemas", Ty::ExistingPath),
    opt("max_payload_bytes", Ty::Size),
];

const PIPELINE: &[Field] = &[
    opt(
        "epoch",
        Ty::Table(&[
            opt("max_records", Ty::UInt(1)),
            opt("max_bytes", Ty::Size),
            opt("max_age", Ty::Duration),
        ]),
    ),
    opt(
        "in_flight",
        Ty::Table(&[opt("max_epochs", Ty::UInt(1)), opt("max_bytes", Ty::Size)]),
    ),
    opt("stack_traces", Ty::Bool),
];

/// Top-level keys other than the tagged sections, which are walked by hand.
const TOP: &[Field] = &[
    req("job", Ty::Enum(&["decoder", "sink"])),
    opt("workers", Ty::UInt(1)),
    opt("decompress", Ty::Bool),
    opt("decoder", Ty::Table(DECODER)),
    opt("pipeline", Ty::Table(PIPELINE)),
];
const TAGGED: &[&str] = &["source", "sink", "dead_letter"];

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
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

/// The keys a config file may have at its top level (sections included).
pub(super) fn top_level_keys() -> impl Iterator<Item = &'static str> {
    TOP.iter().map(|f| f.key).chain(TAGGED.iter().copied())
}

/// Checks the whole tree, relative paths resolved against `base` (the config file's directory
/// is not used: paths are relative to the working directory, like every CLI).
pub(super) fn validate(root: &toml::Table, base: &Path, errors: &mut Vec<ConfigError>) {
    let known: Vec<&str> = TOP
        .iter()
        .map(|f| f.key)
        .chain(TAGGED.iter().copied())
        .collect();
    check_unknown(root, "", &known, errors);
    check_fields(root, "", TOP, base, errors);
    check_tagged(
        root,
        "source",
        SOURCE_KINDS,
        SOURCE_UNSUPPORTED,
        base,
        errors,
    );
    check_tagged(root, "sink", SINK_KINDS, SINK_UNSUPPORTED, base, errors);
    check_tagged(
        root,
        "dead_letter",
        SINK_KINDS,
        SINK_UNSUPPORTED,
        base,
        errors,
    );

    // Rules across sections.
    match root.get("job").and_then(Value::as_str) {
        Some("decoder") => {
            if !root.contains_key("decoder") {
                errors.push(ConfigError::new(
                    "decoder",
                    "missing required section `[decoder]` for job = \"decoder\" (it needs at least `schemas`)",
                ));
            }
            if root.contains_key("decompress") {
                errors.push(ConfigError::new(
                    "decompress",
                    "only the sink job takes `decompress` (the decoder always decompresses)",
                ));
            }
        }
        Some("sink") if root.contains_key("decoder") => errors.push(ConfigError::new(
            "decoder",
            "the sink job does not decode: remove `[decoder]` or set job = \"decoder\"",
        )),
        _ => {}
    }
    if let Some(Value::Table(dl)) = root.get("dead_letter") {
        if let Some(Value::String(f)) = dl.get("format") {
            if f != "json" {
                errors.push(ConfigError::new(
                    "dead_letter.format",
                    format!("dead letters are written in the replayable `json` envelope (their error attributes would be lost), found {f:?}"),
                ));
            }
        }
    }
}

fn check_unknown(table: &toml::Table, prefix: &str, known: &[&str], errors: &mut Vec<ConfigError>) {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(ConfigError::new(
                join(prefix, key),
                format!("unknown key; expected one of: {}", known.join(", ")),
            ));
        }
    }
}

fn check_fields(
    table: &toml::Table,
    prefix: &str,
    fields: &[Field],
    base: &Path,
    errors: &mut Vec<ConfigError>,
) {
    for f in fields {
        let path = join(prefix, f.key);
        match table.get(f.key) {
            None if f.required => errors.push(ConfigError::new(
                path,
                format!("missing required key (expected {})", describe(f.ty)),
            )),
            None => {}
            Some(v) => check_value(v, &path, f.ty, base, errors),
        }
    }
}

fn describe(ty: Ty) -> String {
    match ty {
        Ty::Str => "a string".into(),
        Ty::Bool => "true or false".into(),
        Ty::UInt(min) => format!("an integer >= {min}"),
        Ty::Size => super::units::SIZE_EXPECTED.into(),
        Ty::Duration => super::units::DURATION_EXPECTED.into(),
        Ty::Enum(values) => format!("one of {}", quoted(values)),
        Ty::Template => {
            "a path template like \"${document_type}/${submission_date:-unknown}/\"".into()
        }
        Ty::ExistingPath => "the path of an existing directory or .tar.gz".into(),
        Ty::Dir => "the path of a directory (created if missing)".into(),
        Ty::Table(_) => "a table".into(),
    }
}

fn quoted(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_value(v: &Value, path: &str, ty: Ty, base: &Path, errors: &mut Vec<ConfigError>) {
    let mismatch = |errors: &mut Vec<ConfigError>| {
        errors.push(ConfigError::new(
            path,
            format!("expected {}, found {}", describe(ty), type_name(v)),
        ))
    };
    match (ty, v) {
        (Ty::Str, Value::String(_)) | (Ty::Bool, Value::Boolean(_)) => {}
        (Ty::UInt(min), Value::Integer(n)) => {
            if *n < min {
                errors.push(ConfigError::new(
                    path,
                    format!("expected {}, found {n}", describe(ty)),
                ));
            }
        }
        (Ty::Size, _) => {
            if let Err(e) = check_size(v) {
                errors.push(ConfigError::new(path, e));
            }
        }
        (Ty::Duration, _) => {
            if let Err(e) = check_duration(v) {
                errors.push(ConfigError::new(path, e));
            }
        }
        (Ty::Enum(values), Value::String(s)) => {
            if !values.contains(&s.as_str()) {
                errors.push(ConfigError::new(
                    path,
                    format!("expected one of {}, found {s:?}", quoted(values)),
                ));
            }
        }
        (Ty::Template, Value::String(s)) => {
            if let Err(e) = PathTemplate::parse(s) {
                errors.push(ConfigError::new(
                    path,
                    format!("bad path template {s:?}: {e}"),
                ));
            }
        }
        (Ty::ExistingPath, Value::String(s)) => {
            let p = base.join(s);
            if !p.exists() {
                errors.push(ConfigError::new(
                    path,
                    format!(
                        "schemas path {s:?} does not exist (expected a directory or a .tar.gz)"
                    ),
                ));
            }
        }
        (Ty::Dir, Value::String(s)) => {
            let p = base.join(s);
            if s.is_empty() {
                errors.push(ConfigError::new(
                    path,
                    format!("expected {}, found an empty string", describe(ty)),
                ));
            } else if p.exists() && !p.is_dir() {
                errors.push(ConfigError::new(
                    path,
                    format!("{s:?} exists and is not a directory"),
                ));
            }
        }
        (Ty::Table(fields), Value::Table(t)) => {
            let known: Vec<&str> = fields.iter().map(|f| f.key).collect();
            check_unknown(t, path, &known, errors);
            check_fields(t, path, fields, base, errors);
        }
        _ => mismatch(errors),
    }
}

fn check_tagged(
    root: &toml::Table,
    section: &str,
    kinds: &[(&str, &[Field])],
    unsupported: &[&str],
    base: &Path,
    errors: &mut Vec<ConfigError>,
) {
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let table = match root.get(section) {
        None => {
            errors.push(ConfigError::new(
                section,
                format!(
                    "missing required section `[{section}]` (with `type` one of {})",
                    quoted(&names)
                ),
            ));
            return;
        }
        Some(Value::Table(t)) => t,
        Some(other) => {
            errors.push(ConfigError::new(
                section,
                format!("expected a table, found {}", type_name(other)),
            ));
            return;
        }
    };
    let type_path = join(section, "type");
    let kind = match table.get("type") {
        None => {
            errors.push(ConfigError::new(
                type_path,
                format!("missing required key (expected one of {})", quoted(&names)),
            ));
            return;
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            errors.push(ConfigError::new(
                type_path,
                format!(
                    "expected one of {}, found {}",
                    quoted(&names),
                    type_name(other)
                ),
            ));
            return;
        }
    };
    let Some((_, fields)) = kinds.iter().find(|(k, _)| *k == kind) else {
        let message = if unsupported.contains(&kind) {
            format!(
                "{section} type {kind:?} is not supported by this build (supported: {})",
                quoted(&names)
            )
        } else {
            format!("expected one of {}, found {kind:?}", quoted(&names))
        };
        errors.push(ConfigError::new(type_path, message));
        return;
    };
    let mut known: Vec<&str> = fields.iter().map(|f| f.key).collect();
    known.push("type");
    check_unknown(table, section, &known, errors);
    check_fields(table, section, fields, base, errors);
}
