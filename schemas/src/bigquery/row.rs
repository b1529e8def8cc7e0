//! Documents -> rows of a table, and whether BigQuery takes a row.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::types::{Field, FieldType, Mode, TableSchema};
use super::{ADDITIONAL_PROPERTIES, PAYLOAD};
use crate::names::snake_case;

/// BigQuery's longest column name.
const MAX_COLUMN_NAME: usize = 300;

/// Why a row cannot be made or would be refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// Values the table has no column for, and no `additional_properties` column to keep them.
    #[error("the table has no column for {} and no `additional_properties` column", .fields.join(", "))]
    NoColumn {
        /// The names of the values (top-level keys or attributes).
        fields: Vec<String>,
    },
    /// A value BigQuery would refuse.
    #[error("{location}: {reason}")]
    Invalid {
        /// The column path (`a.b[2].c`).
        location: String,
        /// What is wrong.
        reason: String,
    },
}

/// The column a JSON key or attribute name maps to: [`snake_case`]d, `_`-prefixed when it
/// starts with a digit; `None` when it cannot be a column name (empty, not ASCII, over 300
/// bytes).
///
/// ```
/// use sluice_schemas::bigquery::column_name;
/// assert_eq!(column_name("clientId").as_deref(), Some("client_id"));
/// assert_eq!(column_name("64bit").as_deref(), Some("_64bit"));
/// assert_eq!(column_name("日本"), None);
/// ```
pub fn column_name(key: &str) -> Option<String> {
    let name = snake_case(key);
    if name.is_empty()
        || name.len() > MAX_COLUMN_NAME - 1
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    if name.as_bytes()[0].is_ascii_digit() {
        Some(format!("_{name}"))
    } else {
        Some(name)
    }
}

/// What a value became: the part the column takes, and the part it has no place for.
struct Fitted {
    value: Option<Value>,
    leftover: Option<Value>,
}

impl Fitted {
    fn all(v: Value) -> Self {
        Fitted {
            value: Some(v),
            leftover: None,
        }
    }
    fn none(v: &Value) -> Self {
        Fitted {
            value: None,
            leftover: Some(v.clone()),
        }
    }
    fn null() -> Self {
        Fitted {
            value: None,
            leftover: None,
        }
    }
}

/// Fits the members of an object into the record `fields`; members without a field (or
/// whose column another key took first) are left over under their own (not snake_cased)
/// names, so that what lands in `additional_properties` reads as the document did.
fn fit_members(
    object: &Map<String, Value>,
    fields: &[Field],
) -> (Map<String, Value>, Map<String, Value>) {
    let mut row = Map::new();
    let mut leftover = Map::new();
    for (key, v) in object {
        let column = column_name(key);
        let field = column
            .as_deref()
            .and_then(|c| fields.iter().find(|f| f.name == c));
        match field {
            Some(f) if !row.contains_key(&f.name) => {
                let fitted = fit(v, f, false);
                if let Some(value) = fitted.value {
                    row.insert(f.name.clone(), value);
                }
                if let Some(l) = fitted.leftover {
                    leftover.insert(key.clone(), l);
                }
            }
            _ => {
                if !v.is_null() {
                    leftover.insert(key.clone(), v.clone());
                }
            }
        }
    }
    (row, leftover)
}

/// Fits `v` into `field`; `element` when `v` is one element of a repeated field.
fn fit(v: &Value, field: &Field, element: bool) -> Fitted {
    if v.is_null() {
        return Fitted::null();
    }
    if field.mode == Mode::Repeated && !element {
        return fit_repeated(v, field);
    }
    match field.field_type {
        FieldType::Record => match v {
            Value::Object(o) => {
                let (row, leftover) = fit_members(o, &field.fields);
                Fitted {
                    // `{}` stays a record (of null fields), not a null
                    value: Some(Value::Object(row)),
                    leftover: (!leftover.is_empty()).then_some(Value::Object(leftover)),
                }
            }
            _ => Fitted::none(v),
        },
        _ => match scalar(v, &field.field_type) {
            Some(s) => Fitted::all(s),
            None => Fitted::none(v),
        },
    }
}

fn fit_repeated(v: &Value, field: &Field) -> Fitted {
    if field.is_map() {
        let Value::Object(o) = v else {
            return Fitted::none(v);
        };
        let value_field = &field.fields[1];
        let mut entries = Vec::with_capacity(o.len());
        let mut leftover = Map::new();
        for (k, val) in o {
            let fitted = fit(val, value_field, false);
            let mut entry = Map::new();
            entry.insert("key".into(), Value::String(k.clone()));
            if let Some(x) = fitted.value {
                entry.insert("value".into(), x);
            }
            if let Some(l) = fitted.leftover {
                leftover.insert(k.clone(), l);
            }
            entries.push(Value::Object(entry));
        }
        return Fitted {
            value: Some(Value::Array(entries)),
            leftover: (!leftover.is_empty()).then_some(Value::Object(leftover)),
        };
    }
    let Value::Array(items) = v else {
        return Fitted::none(v);
    };
    let mut values = Vec::with_capacity(items.len());
    let mut leftovers = Vec::with_capacity(items.len());
    let mut any_leftover = false;
    for item in items {
        let fitted = if field.is_list_wrapper() {
            let inner = fit(item, &field.fields[0], false);
            Fitted {
                value: inner.value.map(|x| {
                    let mut o = Map::new();
                    o.insert("list".into(), x);
                    Value::Object(o)
                }),
                leftover: inner.leftover,
            }
        } else {
            fit(item, field, true)
        };
        match fitted.value {
            // an array cannot hold null in BigQuery, and dropping an element would move the
            // others: the whole array is then kept as it was
            None => return Fitted::none(v),
            Some(x) => values.push(x),
        }
        any_leftover |= fitted.leftover.is_some();
        leftovers.push(fitted.leftover.unwrap_or(Value::Null));
    }
    Fitted {
        value: Some(Value::Array(values)),
        leftover: any_leftover.then_some(Value::Array(leftovers)),
    }
}

/// A scalar as a column of `t` takes it in a JSON row, cast where that loses nothing.
fn scalar(v: &Value, t: &FieldType) -> Option<Value> {
    match t {
        FieldType::String | FieldType::Json => Some(match v {
            Value::String(_) if *t == FieldType::String => v.clone(),
            other => Value::String(other.to_string()),
        }),
        FieldType::Int64 => match v {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(Value::Number(i.into()))
                } else {
                    // `integer` admits 1.0
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| Value::Number((f as i64).into()))
                }
            }
            Value::String(s) => s.parse::<i64>().ok().map(|i| Value::Number(i.into())),
            _ => None,
        },
        FieldType::Float64 => match v {
            Value::Number(_) => Some(v.clone()),
            Value::String(s) => s
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
            _ => None,
        },
        FieldType::Bool => match v {
            Value::Bool(_) => Some(v.clone()),
            Value::String(s) if s == "true" || s == "false" => Some(Value::Bool(s == "true")),
            _ => None,
        },
        FieldType::Timestamp => match v {
            Value::String(s) => timestamp(s).map(Value::String),
            _ => None,
        },
        FieldType::Date => match v {
            Value::String(s) if is_date(s) => Some(v.clone()),
            _ => None,
        },
        FieldType::Bytes => match v {
            Value::String(s) if base64::engine::general_purpose::STANDARD.decode(s).is_ok() => {
                Some(v.clone())
            }
            _ => None,
        },
        FieldType::Record => None,
        FieldType::Other(_) => match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(v.clone()),
            _ => None,
        },
    }
}

/// An RFC 3339 timestamp as BigQuery takes it: UTC, at most microseconds (finer digits are
/// cut; BigQuery keeps no more).
fn timestamp(s: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let t = t.with_timezone(&chrono::Utc);
    if !(1..=9999).contains(&chrono::Datelike::year(&t)) {
        return None;
    }
    Some(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .is_ok_and(|d| (1..=9999).contains(&chrono::Datelike::year(&d)))
}

/// Puts `leftover` (a JSON object) into the row's `additional_properties`, or says which
/// values have no place.
fn place_leftover(
    row: &mut Map<String, Value>,
    leftover: Map<String, Value>,
    table: &TableSchema,
) -> Result<(), RowError> {
    if leftover.is_empty() {
        return Ok(());
    }
    match table.field(ADDITIONAL_PROPERTIES) {
        Some(f) if f.mode != Mode::Repeated && f.field_type != FieldType::Record => {
            let text = Value::Object(leftover).to_string();
            row.insert(ADDITIONAL_PROPERTIES.into(), Value::String(text));
            Ok(())
        }
        _ => Err(RowError::NoColumn {
            fields: leftover.keys().cloned().collect(),
        }),
    }
}

/// The row of the `payload` format for a decoded document: each member in the column of its
/// snake_cased name (maps as key/value records, arrays of arrays as `list` records, values
/// of `STRING` columns that are not strings as JSON text, lossless casts of strings to
/// numbers, booleans and timestamps); what has no column, or does not fit its column, goes
/// as a JSON object into `additional_properties` under its original names. Nothing is
/// dropped: without an `additional_properties` column such a value is an error.
pub fn payload_row(
    document: &Map<String, Value>,
    table: &TableSchema,
) -> Result<Map<String, Value>, RowError> {
    // a document's own `additional_properties` (any spelling) is kept among the leftovers,
    // not mistaken for the column
    let (own, doc): (Map<String, Value>, Map<String, Value>) = document
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| column_name(k).as_deref() == Some(ADDITIONAL_PROPERTIES));
    let (mut row, mut leftover) = fit_members(&doc, &table.fields);
    leftover.extend(own.into_iter().filter(|(_, v)| !v.is_null()));
    place_leftover(&mut row, leftover, table)?;
    Ok(row)
}

fn payload_column(
    row: &mut Map<String, Value>,
    payload: &[u8],
    table: &TableSchema,
) -> Result<(), RowError> {
    match table.field(PAYLOAD) {
        Some(f) if f.field_type == FieldType::Bytes => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
            row.insert(PAYLOAD.into(), Value::String(b64));
            Ok(())
        }
        Some(f) if f.field_type == FieldType::String => match std::str::from_utf8(payload) {
            Ok(s) => {
                row.insert(PAYLOAD.into(), Value::String(s.to_string()));
                Ok(())
            }
            Err(_) => Err(RowError::Invalid {
                location: PAYLOAD.into(),
                reason: "the payload is not UTF-8 and the column is a STRING".into(),
            }),
        },
        _ => Err(RowError::NoColumn {
            fields: vec![PAYLOAD.into()],
        }),
    }
}

/// The row of the `raw` format (an error table's): each attribute in the column of its
/// snake_cased name (cast to the column's type), the payload as base64 in `payload`, other
/// attributes as a JSON object in `additional_properties`.
pub fn raw_row(
    attributes: &BTreeMap<String, String>,
    payload: &[u8],
    table: &TableSchema,
) -> Result<Map<String, Value>, RowError> {
    let mut row = Map::new();
    let mut leftover = Map::new();
    for (k, v) in attributes {
        let field = column_name(k)
            .filter(|c| c != PAYLOAD && c != ADDITIONAL_PROPERTIES)
            .and_then(|c| table.field(&c));
        let value = Value::String(v.clone());
        match field.filter(|f| !row.contains_key(&f.name)) {
            Some(f) if f.mode != Mode::Repeated && f.field_type != FieldType::Record => {
                match scalar(&value, &f.field_type) {
                    Some(x) => {
                        row.insert(f.name.clone(), x);
                    }
                    None => {
                        leftover.insert(k.clone(), value);
                    }
                }
            }
            _ => {
                leftover.insert(k.clone(), value);
            }
        }
    }
    payload_column(&mut row, payload, table)?;
    place_leftover(&mut row, leftover, table)?;
    Ok(row)
}

/// The row of the `decoded` format: `metadata` (the decoder's nested metadata members, as
/// `nest_metadata` writes them) fitted like a payload, the payload as base64 in `payload`, and
/// `other_attributes` (those the metadata does not hold) with whatever did not fit, as a JSON
/// object in `additional_properties`.
pub fn decoded_row(
    metadata: &Map<String, Value>,
    other_attributes: &BTreeMap<String, String>,
    payload: &[u8],
    table: &TableSchema,
) -> Result<Map<String, Value>, RowError> {
    let (mut row, mut leftover) = fit_members(metadata, &table.fields);
    row.remove(PAYLOAD);
    row.remove(ADDITIONAL_PROPERTIES);
    for (k, v) in other_attributes {
        leftover
            .entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    payload_column(&mut row, payload, table)?;
    place_leftover(&mut row, leftover, table)?;
    Ok(row)
}

/// Whether BigQuery would take `row` into a table of `table`'s schema: every member a
/// column, values of the column's type (JSON numbers or numeric strings for numbers, RFC 3339
/// timestamps, base64 bytes), arrays only in `REPEATED` columns and without nulls, `REQUIRED`
/// columns present. What the sink's memory double checks, as BigQuery's `insertAll` does.
pub fn check_row(row: &Map<String, Value>, table: &TableSchema) -> Result<(), RowError> {
    check_record(row, &table.fields, "")
}

fn invalid(location: &str, reason: impl Into<String>) -> RowError {
    RowError::Invalid {
        location: if location.is_empty() {
            "row".into()
        } else {
            location.to_string()
        },
        reason: reason.into(),
    }
}

fn check_record(row: &Map<String, Value>, fields: &[Field], path: &str) -> Result<(), RowError> {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    for (k, v) in row {
        let Some(f) = fields.iter().find(|f| f.name == *k) else {
            return Err(invalid(&join(k), "no such field"));
        };
        check_value(v, f, &join(k))?;
    }
    for f in fields {
        if f.mode == Mode::Required && row.get(&f.name).is_none_or(Value::is_null) {
            return Err(invalid(&join(&f.name), "missing required field"));
        }
    }
    Ok(())
}

fn check_value(v: &Value, f: &Field, path: &str) -> Result<(), RowError> {
    if v.is_null() {
        return Ok(());
    }
    if f.mode == Mode::Repeated {
        let Value::Array(items) = v else {
            return Err(invalid(path, "a repeated field takes an array"));
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            if item.is_null() {
                return Err(invalid(&at, "an array cannot hold null"));
            }
            check_single(item, f, &at)?;
        }
        return Ok(());
    }
    check_single(v, f, path)
}

fn check_single(v: &Value, f: &Field, path: &str) -> Result<(), RowError> {
    let ok = match (&f.field_type, v) {
        (FieldType::Record, Value::Object(o)) => return check_record(o, &f.fields, path),
        (FieldType::Record, _) => false,
        (FieldType::String | FieldType::Json, Value::String(_)) => true,
        (FieldType::Int64, Value::Number(n)) => n.is_i64(),
        (FieldType::Int64, Value::String(s)) => s.parse::<i64>().is_ok(),
        (FieldType::Float64, Value::Number(_)) => true,
        (FieldType::Float64, Value::String(s)) => s.parse::<f64>().is_ok(),
        (FieldType::Bool, Value::Bool(_)) => true,
        (FieldType::Bool, Value::String(s)) => s == "true" || s == "false",
        (FieldType::Timestamp, Value::String(s)) => timestamp(s).is_some(),
        (FieldType::Date, Value::String(s)) => is_date(s),
        (FieldType::Bytes, Value::String(s)) => {
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        (FieldType::Other(_), Value::String(_) | Value::Number(_) | Value::Bool(_)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("{} is not a valid {}", kind(v), f.field_type.as_str()),
        ))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "this string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
