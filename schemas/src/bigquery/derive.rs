//! JSON schema -> BigQuery table schema.
//!
//! The schema is first read into a [`Shape`] (what values it admits, coarsely), shapes of
//! alternatives are merged, and the result is laid out as columns:
//!
//! | JSON schema | column |
//! |---|---|
//! | `object` with `properties` | `RECORD`, one field per property (snake_cased) |
//! | `object` with only `additionalProperties`/`patternProperties` schemas (a map) | `REPEATED RECORD<key STRING, value T>` |
//! | `object` without properties (free-form) | `STRING`, JSON text |
//! | `array` of `T` | `T` `REPEATED`; an array of arrays (or maps) `REPEATED RECORD<list ...>` |
//! | tuple `items: [..]` / `prefixItems` | `REPEATED T` when the items merge, else JSON text |
//! | `integer` / `number` / `boolean` | `INT64` / `FLOAT64` / `BOOL` |
//! | `string` (`format: date-time` / `date`) | `STRING` (`TIMESTAMP` / `DATE`) |
//! | `oneOf`/`anyOf`/type lists | merged: `null` adds nothing, `integer`+`number` is `FLOAT64`, records merge field by field; anything else is JSON text |
//! | `true`, `{}`, unresolvable or recursive `$ref` | `STRING`, JSON text |
//! | `false`, `null` only | no column |
//!
//! Every column is `NULLABLE` (or `REPEATED`): a table must take documents of every schema
//! version that validated. Names that cannot be column names (not ASCII once snake_cased)
//! get no column; their values land in `additional_properties`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::row::column_name;
use super::types::{Field, FieldType, Mode, TableSchema};
use super::{ADDITIONAL_PROPERTIES, PAYLOAD};

/// How deep schemas nest before the rest is JSON text (BigQuery allows 15 levels of RECORD).
const MAX_DEPTH: usize = 15;

/// What a column of JSON-text values says about itself.
const JSON_DESCRIPTION: &str = "JSON text";

/// What a (sub)schema admits, coarsely.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    /// Nothing (`false`).
    Never,
    /// Only null.
    Null,
    /// Anything, untyped: JSON text.
    Json,
    Bool,
    Int,
    Float,
    /// A string, with a format that has its own column type.
    Str(StrFormat),
    /// An object with known properties, by column name.
    Record(BTreeMap<String, Shape>),
    /// An object of arbitrary keys with values of one shape.
    Map(Box<Shape>),
    Array(Box<Shape>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StrFormat {
    Plain,
    DateTime,
    Date,
}

/// Merges the shapes of two alternatives (a value may be of either).
fn union(a: Shape, b: Shape) -> Shape {
    use Shape::*;
    match (a, b) {
        (Never, x) | (x, Never) | (Null, x) | (x, Null) => x,
        (Json, _) | (_, Json) => Json,
        (Bool, Bool) => Bool,
        (Int, Int) => Int,
        (Int, Float) | (Float, Int) | (Float, Float) => Float,
        (Str(x), Str(y)) => Str(if x == y { x } else { StrFormat::Plain }),
        (Record(mut x), Record(y)) => {
            for (k, v) in y {
                let merged = match x.remove(&k) {
                    Some(old) => union(old, v),
                    None => v,
                };
                x.insert(k, merged);
            }
            Record(x)
        }
        (Map(x), Map(y)) => Map(Box::new(union(*x, *y))),
        (Array(x), Array(y)) => Array(Box::new(union(*x, *y))),
        _ => Json,
    }
}

/// Narrows `own` (from `type` and its keywords) by `other` (from `allOf`, or the merged
/// `oneOf`/`anyOf` alternatives): records gain the other's properties, and an untyped
/// `own` takes the other's shape.
fn refine(own: Option<Shape>, other: Shape) -> Shape {
    match own {
        None => other,
        Some(Shape::Record(mut x)) => match other {
            Shape::Record(y) => {
                for (k, v) in y {
                    let merged = match x.remove(&k) {
                        Some(old) => union(old, v),
                        None => v,
                    };
                    x.insert(k, merged);
                }
                Shape::Record(x)
            }
            _ => Shape::Record(x),
        },
        Some(own) => match (&own, &other) {
            (Shape::Json, _) => other,
            _ => own,
        },
    }
}

struct Deriver<'a> {
    root: &'a Value,
    /// `$ref`s being expanded (a recursive schema becomes JSON text where it recurs).
    expanding: BTreeSet<String>,
}

impl<'a> Deriver<'a> {
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        if !pointer.starts_with('/') {
            return None;
        }
        // JSON pointers in URI fragments may be percent-encoded
        let decoded = percent_decode(pointer);
        self.root.pointer(&decoded)
    }

    fn shape(&mut self, schema: &'a Value, depth: usize) -> Shape {
        if depth > MAX_DEPTH {
            return Shape::Json;
        }
        let o = match schema {
            Value::Bool(true) => return Shape::Json,
            Value::Bool(false) => return Shape::Never,
            Value::Object(o) => o,
            _ => return Shape::Json,
        };
        if let Some(Value::String(r)) = o.get("$ref") {
            if self.expanding.contains(r) {
                return Shape::Json;
            }
            let Some(target) = self.resolve(r) else {
                return Shape::Json;
            };
            self.expanding.insert(r.clone());
            let s = self.shape(target, depth);
            self.expanding.remove(r);
            // draft 2019-09 and later allow keywords beside `$ref`
            let rest = self.own_shape(o, depth);
            return refine(rest, s);
        }
        let own = self.own_shape(o, depth);
        let mut shape = own;
        if let Some(Value::Array(all)) = o.get("allOf") {
            for s in all {
                let s = self.shape(s, depth);
                shape = Some(refine(shape, s));
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(alts)) = o.get(key) {
                let merged = alts
                    .iter()
                    .map(|s| self.shape(s, depth))
                    .fold(Shape::Never, union);
                shape = Some(refine(shape, merged));
            }
        }
        shape.unwrap_or(Shape::Json)
    }

    /// The shape from `type`, `enum`/`const` and the object and array keywords; `None` when
    /// they say nothing.
    fn own_shape(&mut self, o: &'a serde_json::Map<String, Value>, depth: usize) -> Option<Shape> {
        let types: Vec<&str> = match o.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => {
                if let Some(values) = enum_values(o) {
                    return Some(
                        values
                            .iter()
                            .map(|v| value_shape(v))
                            .fold(Shape::Never, union),
                    );
                }
                let mut implied = Vec::new();
                if ["properties", "additionalProperties", "patternProperties"]
                    .iter()
                    .any(|k| o.contains_key(*k))
                {
                    implied.push("object");
                }
                if ["items", "prefixItems"].iter().any(|k| o.contains_key(*k)) {
                    implied.push("array");
                }
                if implied.is_empty() {
                    return None;
                }
                implied
            }
        };
        let mut shape = Shape::Never;
        for t in types {
            let s = match t {
                "null" => Shape::Null,
                "boolean" => Shape::Bool,
                "integer" => Shape::Int,
                "number" => Shape::Float,
                "string" => Shape::Str(match o.get("format").and_then(Value::as_str) {
                    Some("date-time") => StrFormat::DateTime,
                    Some("date") => StrFormat::Date,
                    _ => StrFormat::Plain,
                }),
                "object" => self.object_shape(o, depth),
                "array" => self.array_shape(o, depth),
                _ => Shape::Json,
            };
            shape = union(shape, s);
        }
        Some(shape)
    }

    fn object_shape(&mut self, o: &'a serde_json::Map<String, Value>, depth: usize) -> Shape {
        if let Some(Value::Object(props)) = o.get("properties") {
            if !props.is_empty() {
                let mut fields: BTreeMap<String, Shape> = BTreeMap::new();
                for (name, s) in props {
                    let Some(column) = column_name(name) else {
                        continue;
                    };
                    let s = self.shape(s, depth + 1);
                    let merged = match fields.remove(&column) {
                        Some(old) => union(old, s),
                        None => s,
                    };
                    fields.insert(column, merged);
                }
                return Shape::Record(fields);
            }
        }
        let mut values = Shape::Never;
        let mut typed = false;
        if let Some(ap @ Value::Object(_)) = o.get("additionalProperties") {
            values = union(values, self.shape(ap, depth + 1));
            typed = true;
        }
        if let Some(Value::Object(patterns)) = o.get("patternProperties") {
            for s in patterns.values() {
                values = union(values, self.shape(s, depth + 1));
                typed = true;
            }
        }
        if typed {
            Shape::Map(Box::new(values))
        } else {
            Shape::Json
        }
    }

    fn array_shape(&mut self, o: &'a serde_json::Map<String, Value>, depth: usize) -> Shape {
        let tuple = match (o.get("prefixItems"), o.get("items")) {
            (Some(Value::Array(t)), _) | (None, Some(Value::Array(t))) => Some(t),
            _ => None,
        };
        match tuple {
            Some(items) => {
                // items after the tuple: `items` (2020-12) or `additionalItems` (before)
                let rest = if o.contains_key("prefixItems") {
                    o.get("items")
                } else {
                    o.get("additionalItems")
                };
                let mut s = items
                    .iter()
                    .map(|i| self.shape(i, depth + 1))
                    .fold(Shape::Never, union);
                if let Some(rest) = rest {
                    s = union(s, self.shape(rest, depth + 1));
                } else {
                    s = union(s, Shape::Json);
                }
                match s {
                    // items of several kinds: the tuple is one JSON text
                    Shape::Json => Shape::Json,
                    s => Shape::Array(Box::new(s)),
                }
            }
            None => match o.get("items") {
                Some(items) => Shape::Array(Box::new(self.shape(items, depth + 1))),
                None => Shape::Array(Box::new(Shape::Json)),
            },
        }
    }
}

fn enum_values(o: &serde_json::Map<String, Value>) -> Option<Vec<&Value>> {
    if let Some(c) = o.get("const") {
        return Some(vec![c]);
    }
    match o.get("enum") {
        Some(Value::Array(values)) if !values.is_empty() => Some(values.iter().collect()),
        _ => None,
    }
}

fn value_shape(v: &Value) -> Shape {
    match v {
        Value::Null => Shape::Null,
        Value::Bool(_) => Shape::Bool,
        Value::Number(n) if n.is_i64() || n.is_u64() => Shape::Int,
        Value::Number(_) => Shape::Float,
        Value::String(_) => Shape::Str(StrFormat::Plain),
        _ => Shape::Json,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The field for a value of `shape` named `name`; `None` for shapes that admit no value.
fn field(name: &str, shape: Shape) -> Option<Field> {
    Some(match shape {
        Shape::Never | Shape::Null => return None,
        Shape::Json => json_field(name),
        Shape::Bool => Field::new(name, FieldType::Bool),
        Shape::Int => Field::new(name, FieldType::Int64),
        Shape::Float => Field::new(name, FieldType::Float64),
        Shape::Str(StrFormat::Plain) => Field::new(name, FieldType::String),
        Shape::Str(StrFormat::DateTime) => Field::new(name, FieldType::Timestamp),
        Shape::Str(StrFormat::Date) => Field::new(name, FieldType::Date),
        Shape::Record(fields) => {
            let fields: Vec<Field> = fields
                .into_iter()
                .filter_map(|(k, s)| field(&k, s))
                .collect();
            if fields.is_empty() {
                // BigQuery has no empty RECORD
                json_field(name)
            } else {
                Field::record(name, fields)
            }
        }
        Shape::Map(values) => {
            let value = field("value", *values).unwrap_or_else(|| json_field("value"));
            Field::record(name, vec![Field::new("key", FieldType::String), value])
                .with_mode(Mode::Repeated)
        }
        Shape::Array(items) => match *items {
            Shape::Never | Shape::Null => return None,
            inner @ (Shape::Array(_) | Shape::Map(_)) => match field("list", inner) {
                // BigQuery has no array of arrays: each inner one is a record's `list`
                Some(list) => Field::record(name, vec![list]).with_mode(Mode::Repeated),
                None => return None,
            },
            inner => field(name, inner)?.with_mode(Mode::Repeated),
        },
    })
}

fn json_field(name: &str) -> Field {
    Field::new(name, FieldType::String).with_description(JSON_DESCRIPTION)
}

fn string(name: &str) -> Field {
    Field::new(name, FieldType::String)
}

/// The fields the decoder writes at a document's top level from its attributes (see
/// `nest_metadata` in `sluice-transforms`): the `metadata` record (`geo`, `isp`,
/// `user_agent`, `header`, `uri`, and the document's namespace, type and version),
/// `submission_timestamp`, `document_id`, the `normalized_*` fields and `sample_id`.
pub fn metadata_fields() -> Vec<Field> {
    let record =
        |name: &str, names: &[&str]| Field::record(name, names.iter().map(|n| string(n)).collect());
    let metadata = Field::record(
        "metadata",
        vec![
            record(
                "geo",
                &[
                    "city",
                    "country",
                    "db_version",
                    "subdivision1",
                    "subdivision2",
                ],
            ),
            record("isp", &["db_version", "name", "organization"]),
            record("user_agent", &["browser", "os", "version"]),
            record(
                "header",
                &[
                    "date",
                    "dnt",
                    "x_debug_id",
                    "x_lb_tags",
                    "x_pingsender_version",
                    "x_source_tags",
                    "x_telemetry_agent",
                ],
            ),
            record(
                "uri",
                &[
                    "app_build_id",
                    "app_name",
                    "app_update_channel",
                    "app_version",
                    "uri",
                ],
            ),
            string("document_namespace"),
            string("document_type"),
            string("document_version"),
        ],
    );
    vec![
        metadata,
        Field::new("submission_timestamp", FieldType::Timestamp),
        string("document_id"),
        string("normalized_app_name"),
        string("normalized_channel"),
        string("normalized_os"),
        string("normalized_os_version"),
        string("normalized_country_code"),
        Field::new("sample_id", FieldType::Int64),
    ]
}

fn additional_properties() -> Field {
    json_field(ADDITIONAL_PROPERTIES)
        .with_description("JSON text: what the document holds that the table has no column for")
}

/// The table of the `payload` row format for documents valid against `schema` (a JSON
/// schema as the registry loads it): the document's columns (see the module docs), the
/// decoder's [`metadata_fields`], which replace the document's own fields of those names, and
/// `additional_properties`. Columns are sorted by name.
///
/// ```
/// use serde_json::json;
/// use sluice_schemas::bigquery::{derive_table_schema, FieldType, Mode};
/// let t = derive_table_schema(&json!({
///     "type": "object",
///     "properties": {"tags": {"type": "array", "items": {"type": "string"}}}
/// }));
/// let tags = t.field("tags").unwrap();
/// assert_eq!((&tags.field_type, tags.mode), (&FieldType::String, Mode::Repeated));
/// assert!(t.field("metadata").is_some() && t.field("additional_properties").is_some());
/// ```
pub fn derive_table_schema(schema: &Value) -> TableSchema {
    let mut d = Deriver {
        root: schema,
        expanding: BTreeSet::new(),
    };
    let mut columns: BTreeMap<String, Field> = match d.shape(schema, 0) {
        Shape::Record(fields) => fields
            .into_iter()
            .filter_map(|(k, s)| field(&k, s).map(|f| (k, f)))
            .collect(),
        _ => BTreeMap::new(),
    };
    for f in metadata_fields() {
        columns.insert(f.name.clone(), f);
    }
    columns.insert(ADDITIONAL_PROPERTIES.to_string(), additional_properties());
    TableSchema {
        fields: columns.into_values().collect(),
    }
}

/// The attribute columns of the `raw` row format (and so of an error table): the decoder's
/// attributes, the dead-letter attributes and the source positions Sluice writes. Other
/// attributes go to `additional_properties`.
const RAW_ATTRIBUTES: &[&str] = &[
    // the edge and the decoder
    "uri",
    "args",
    "protocol",
    "method",
    "host",
    "user_agent",
    "content_length",
    "date",
    "dnt",
    "x_debug_id",
    "x_forwarded_for",
    "x_lb_tags",
    "x_pingsender_version",
    "x_source_tags",
    "x_telemetry_agent",
    "remote_addr",
    "submission_timestamp",
    "document_namespace",
    "document_type",
    "document_version",
    "document_id",
    "app_name",
    "app_version",
    "app_update_channel",
    "app_build_id",
    "client_compression",
    "client_id",
    "sample_id",
    "normalized_app_name",
    "normalized_channel",
    "normalized_os",
    "normalized_os_version",
    "normalized_country_code",
    "geo_city",
    "geo_country",
    "geo_db_version",
    "geo_subdivision1",
    "geo_subdivision2",
    "isp_db_version",
    "isp_name",
    "isp_organization",
    "user_agent_browser",
    "user_agent_os",
    "user_agent_version",
    // dead letters
    "error_type",
    "error_message",
    "exception_class",
    "stack_trace",
    "error_table",
    "error_reason",
    "job_name",
    "input",
    "input_type",
    "payload_sha256",
    "payload_bytes",
    "payload_truncated",
    // source positions
    "input_file",
    "input_line",
    "input_offset",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "pubsub_subscription",
    "pubsub_message_id",
    "pubsub_publish_time",
    "pubsub_delivery_attempt",
    "memory_index",
];

/// The table of the `raw` row format, which an error table uses: one `STRING` column per
/// attribute Sluice knows (other attributes go to `additional_properties`, as a JSON object)
/// and the payload as `BYTES`. Columns are sorted by name.
pub fn raw_table_schema() -> TableSchema {
    let mut columns: BTreeMap<String, Field> = RAW_ATTRIBUTES
        .iter()
        .map(|n| (n.to_string(), string(n)))
        .collect();
    columns.insert(PAYLOAD.into(), Field::new(PAYLOAD, FieldType::Bytes));
    columns.insert(ADDITIONAL_PROPERTIES.into(), additional_properties());
    TableSchema {
        fields: columns.into_values().collect(),
    }
}

/// The table of the `decoded` row format: the decoder's [`metadata_fields`], the payload as
/// `BYTES` and `additional_properties` (the other attributes, as a JSON object).
pub fn decoded_table_schema() -> TableSchema {
    let mut columns: BTreeMap<String, Field> = metadata_fields()
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
    columns.insert(PAYLOAD.into(), Field::new(PAYLOAD, FieldType::Bytes));
    columns.insert(ADDITIONAL_PROPERTIES.into(), additional_properties());
    TableSchema {
        fields: columns.into_values().collect(),
    }
}
