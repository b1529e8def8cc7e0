//! The table schema model, and its JSON form (the `schema` of BigQuery's REST `Table`).

use std::fmt;

use serde_json::{json, Map, Value};

/// A column's type, as BigQuery's standard SQL names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldType {
    /// `STRING`: text, and JSON text where a value could not be typed.
    String,
    /// `BYTES`: base64 in JSON rows.
    Bytes,
    /// `INT64` (legacy `INTEGER`).
    Int64,
    /// `FLOAT64` (legacy `FLOAT`).
    Float64,
    /// `BOOL` (legacy `BOOLEAN`).
    Bool,
    /// `TIMESTAMP`.
    Timestamp,
    /// `DATE`.
    Date,
    /// `JSON`: sent as JSON text.
    Json,
    /// `RECORD` (`STRUCT`): the field's `fields`.
    Record,
    /// Any other type of an existing table (`NUMERIC`, `GEOGRAPHY`, ...): values are passed
    /// through as they are.
    Other(String),
}

impl FieldType {
    /// The name BigQuery's REST API uses.
    pub fn as_str(&self) -> &str {
        match self {
            FieldType::String => "STRING",
            FieldType::Bytes => "BYTES",
            FieldType::Int64 => "INT64",
            FieldType::Float64 => "FLOAT64",
            FieldType::Bool => "BOOL",
            FieldType::Timestamp => "TIMESTAMP",
            FieldType::Date => "DATE",
            FieldType::Json => "JSON",
            FieldType::Record => "RECORD",
            FieldType::Other(name) => name,
        }
    }

    /// Reads a type name, legacy names included.
    pub fn parse(name: &str) -> FieldType {
        match name.to_ascii_uppercase().as_str() {
            "STRING" => FieldType::String,
            "BYTES" => FieldType::Bytes,
            "INT64" | "INTEGER" => FieldType::Int64,
            "FLOAT64" | "FLOAT" => FieldType::Float64,
            "BOOL" | "BOOLEAN" => FieldType::Bool,
            "TIMESTAMP" => FieldType::Timestamp,
            "DATE" => FieldType::Date,
            "JSON" => FieldType::Json,
            "RECORD" | "STRUCT" => FieldType::Record,
            other => FieldType::Other(other.to_string()),
        }
    }
}

/// A column's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// May be null (BigQuery's default).
    Nullable,
    /// Must be present.
    Required,
    /// An array (never null inside).
    Repeated,
}

impl Mode {
    /// The name BigQuery's REST API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nullable => "NULLABLE",
            Mode::Required => "REQUIRED",
            Mode::Repeated => "REPEATED",
        }
    }
}

/// One column (or nested field of a `RECORD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The column name.
    pub name: String,
    /// Its type.
    pub field_type: FieldType,
    /// Its mode.
    pub mode: Mode,
    /// The nested fields of a `RECORD`.
    pub fields: Vec<Field>,
    /// A description (derived JSON columns say so here).
    pub description: Option<String>,
}

impl Field {
    /// A nullable column of a scalar type.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        Field {
            name: name.into(),
            field_type,
            mode: Mode::Nullable,
            fields: Vec::new(),
            description: None,
        }
    }

    /// A nullable `RECORD` column.
    pub fn record(name: impl Into<String>, fields: Vec<Field>) -> Self {
        Field {
            fields,
            ..Field::new(name, FieldType::Record)
        }
    }

    /// This field with `mode`.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// This field with a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The nested field `name` of a record.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether this is the repeated key/value record a JSON map becomes.
    pub fn is_map(&self) -> bool {
        self.mode == Mode::Repeated
            && self.field_type == FieldType::Record
            && self.fields.len() == 2
            && self.fields[0].name == "key"
            && self.fields[0].field_type == FieldType::String
            && self.fields[1].name == "value"
    }

    /// Whether this is the repeated record with one repeated `list` field that an array of
    /// arrays becomes (BigQuery has no array of arrays).
    pub fn is_list_wrapper(&self) -> bool {
        self.mode == Mode::Repeated
            && self.field_type == FieldType::Record
            && self.fields.len() == 1
            && self.fields[0].name == "list"
            && self.fields[0].mode == Mode::Repeated
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("name".into(), json!(self.name));
        o.insert("type".into(), json!(self.field_type.as_str()));
        o.insert("mode".into(), json!(self.mode.as_str()));
        if !self.fields.is_empty() {
            o.insert(
                "fields".into(),
                Value::Array(self.fields.iter().map(Field::to_json).collect()),
            );
        }
        if let Some(d) = &self.description {
            o.insert("description".into(), json!(d));
        }
        Value::Object(o)
    }

    fn from_json(v: &Value, path: &str) -> Result<Field, TableSchemaError> {
        let err = |reason: &str| TableSchemaError(format!("{path}: {reason}"));
        let o = v
            .as_object()
            .ok_or_else(|| err("a field is not an object"))?;
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| err("a field has no name"))?;
        let path = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        let field_type = FieldType::parse(
            o.get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| TableSchemaError(format!("{path}: no type")))?,
        );
        let mode = match o.get("mode").and_then(Value::as_str) {
            None => Mode::Nullable,
            Some(m) => match m.to_ascii_uppercase().as_str() {
                "NULLABLE" => Mode::Nullable,
                "REQUIRED" => Mode::Required,
                "REPEATED" => Mode::Repeated,
                other => return Err(TableSchemaError(format!("{path}: unknown mode `{other}`"))),
            },
        };
        let fields = match o.get("fields") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| Field::from_json(f, &path))
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Field {
            name: name.to_string(),
            field_type,
            mode,
            fields,
            description: o
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// A table's columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSchema {
    /// The top-level columns.
    pub fields: Vec<Field>,
}

/// A table schema's JSON form that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid table schema: {0}")]
pub struct TableSchemaError(pub String);

impl TableSchema {
    /// The column `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The JSON form BigQuery's REST API takes and gives: `{"fields": [{"name", "type",
    /// "mode", "fields"?, "description"?}, ...]}`.
    pub fn to_json(&self) -> Value {
        json!({"fields": self.fields.iter().map(Field::to_json).collect::<Vec<_>>()})
    }

    /// Reads the JSON form (legacy type names are accepted).
    pub fn from_json(v: &Value) -> Result<TableSchema, TableSchemaError> {
        let fields = match v.get("fields") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| Field::from_json(f, ""))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
            Some(_) => return Err(TableSchemaError("`fields` is not an array".into())),
        };
        Ok(TableSchema { fields })
    }
}

impl fmt::Display for TableSchema {
    /// Pretty-printed JSON, as `bq show --schema` prints it (the `fields` array).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = &self.to_json()["fields"];
        let text = serde_json::to_string_pretty(fields).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}
