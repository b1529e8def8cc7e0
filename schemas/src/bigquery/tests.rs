use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

fn derive(props: Value) -> TableSchema {
    derive_table_schema(&json!({"type": "object", "properties": props}))
}

fn col<'a>(t: &'a TableSchema, name: &str) -> &'a Field {
    t.field(name)
        .unwrap_or_else(|| panic!("no column `{name}` in {t}"))
}

fn kind(f: &Field) -> (&str, Mode) {
    (f.field_type.as_str(), f.mode)
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

#[test]
fn scalars_map_to_their_types() {
    let t = derive(json!({
        "s": {"type": "string"},
        "i": {"type": "integer"},
        "n": {"type": "number"},
        "b": {"type": "boolean"},
        "ts": {"type": "string", "format": "date-time"},
        "d": {"type": "string", "format": "date"},
        "e": {"enum": ["a", "b"]},
        "c": {"const": 3},
    }));
    assert_eq!(kind(col(&t, "s")), ("STRING", Mode::Nullable));
    assert_eq!(kind(col(&t, "i")), ("INT64", Mode::Nullable));
    assert_eq!(kind(col(&t, "n")), ("FLOAT64", Mode::Nullable));
    assert_eq!(kind(col(&t, "b")), ("BOOL", Mode::Nullable));
    assert_eq!(kind(col(&t, "ts")), ("TIMESTAMP", Mode::Nullable));
    assert_eq!(kind(col(&t, "d")), ("DATE", Mode::Nullable));
    assert_eq!(kind(col(&t, "e")), ("STRING", Mode::Nullable));
    assert_eq!(kind(col(&t, "c")), ("INT64", Mode::Nullable));
}

#[test]
fn objects_become_records_with_snake_cased_fields() {
    let t = derive(json!({
        "clientInfo": {"type": "object", "properties": {
            "appBuild": {"type": "string"},
            "nested": {"properties": {"x": {"type": "integer"}}}
        }}
    }));
    let ci = col(&t, "client_info");
    assert_eq!(kind(ci), ("RECORD", Mode::Nullable));
    assert_eq!(
        kind(ci.field("app_build").unwrap()),
        ("STRING", Mode::Nullable)
    );
    let nested = ci.field("nested").unwrap();
    assert_eq!(kind(nested.field("x").unwrap()), ("INT64", Mode::Nullable));
}

#[test]
fn arrays_become_repeated_and_arrays_of_arrays_list_records() {
    let t = derive(json!({
        "tags": {"type": "array", "items": {"type": "string"}},
        "objs": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "untyped": {"type": "array"},
    }));
    assert_eq!(kind(col(&t, "tags")), ("STRING", Mode::Repeated));
    assert_eq!(kind(col(&t, "objs")), ("RECORD", Mode::Repeated));
    let m = col(&t, "matrix");
    assert!(m.is_list_wrapper(), "{m:?}");
    assert_eq!(kind(&m.fields[0]), ("FLOAT64", Mode::Repeated));
    assert_eq!(kind(col(&t, "untyped")), ("STRING", Mode::Repeated));
}

#[test]
fn maps_become_repeated_key_value_records() {
    let t = derive(json!({
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "patterned": {"type": "object", "patternProperties": {"^a": {"type": "integer"}, "^b": {"type": "number"}}},
        "nested": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string"}}}},
    }));
    let c = col(&t, "counts");
    assert!(c.is_map());
    assert_eq!(kind(&c.fields[1]), ("INT64", Mode::Nullable));
    assert_eq!(
        kind(&col(&t, "patterned").fields[1]),
        ("FLOAT64", Mode::Nullable)
    );
    assert_eq!(
        kind(&col(&t, "nested").fields[1]),
        ("RECORD", Mode::Nullable)
    );
}

#[test]
fn compatible_alternatives_merge_and_others_are_json() {
    let t = derive(json!({
        "nullable": {"type": ["string", "null"]},
        "num": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
        "rec": {"anyOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {"type": "object", "properties": {"b": {"type": "integer"}}},
            {"type": "null"}
        ]},
        "mixed": {"type": ["string", "integer"]},
        "free": {"type": "object"},
        "anything": {},
        "never": false,
        "only_null": {"type": "null"},
        "tuple": {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "additionalItems": false},
        "same_tuple": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": false},
        "all": {"allOf": [
            {"type": "object", "properties": {"x": {"type": "string"}}},
            {"properties": {"y": {"type": "boolean"}}}
        ]},
        "required_only": {"type": "object", "properties": {"k": {"type": "string"}}, "oneOf": [{"required": ["k"]}]},
    }));
    assert_eq!(kind(col(&t, "nullable")), ("STRING", Mode::Nullable));
    assert_eq!(kind(col(&t, "num")), ("FLOAT64", Mode::Nullable));
    let rec = col(&t, "rec");
    assert!(rec.field("a").is_some() && rec.field("b").is_some());
    for json_col in ["mixed", "free", "anything", "tuple"] {
        let f = col(&t, json_col);
        assert_eq!(kind(f), ("STRING", Mode::Nullable), "{json_col}");
        assert_eq!(f.description.as_deref(), Some("JSON text"), "{json_col}");
    }
    assert!(t.field("never").is_none());
    assert!(t.field("only_null").is_none());
    assert_eq!(kind(col(&t, "same_tuple")), ("INT64", Mode::Repeated));
    let all = col(&t, "all");
    assert!(all.field("x").is_some() && all.field("y").is_some());
    assert!(col(&t, "required_only").field("k").is_some());
}

#[test]
fn references_resolve_and_recursion_stops_at_json() {
    let schema = json!({
        "type": "object",
        "definitions": {
            "uuid": {"type": "string"},
            "node": {"type": "object", "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/definitions/node"}}
            }}
        },
        "$defs": {"n": {"type": "integer"}},
        "properties": {
            "id": {"$ref": "#/definitions/uuid"},
            "tree": {"$ref": "#/definitions/node"},
            "n": {"$ref": "#/$defs/n"},
            "remote": {"$ref": "https://example.com/x.json"},
        }
    });
    let t = derive_table_schema(&schema);
    assert_eq!(kind(col(&t, "id")), ("STRING", Mode::Nullable));
    assert_eq!(kind(col(&t, "n")), ("INT64", Mode::Nullable));
    let tree = col(&t, "tree");
    assert_eq!(
        kind(tree.field("name").unwrap()),
        ("STRING", Mode::Nullable)
    );
    // where the schema recurs, values are JSON text
    let children = tree.field("children").unwrap();
    assert_eq!(kind(children), ("STRING", Mode::Repeated));
    assert_eq!(children.description.as_deref(), Some("JSON text"));
    assert_eq!(col(&t, "remote").description.as_deref(), Some("JSON text"));
}

#[test]
fn names_that_cannot_be_columns_are_left_out_and_colliding_names_merge() {
    let t = derive(json!({
        "日本": {"type": "string"},
        "64bit": {"type": "boolean"},
        "fooBar": {"type": "integer"},
        "foo_bar": {"type": "number"},
    }));
    assert!(t.fields.iter().all(|f| f.name.is_ascii()));
    assert_eq!(kind(col(&t, "_64bit")), ("BOOL", Mode::Nullable));
    assert_eq!(kind(col(&t, "foo_bar")), ("FLOAT64", Mode::Nullable));
}

#[test]
fn metadata_and_additional_properties_are_added() {
    let t = derive(json!({"metadata": {"type": "string"}, "x": {"type": "string"}}));
    let m = col(&t, "metadata");
    assert_eq!(kind(m), ("RECORD", Mode::Nullable));
    assert!(m.field("geo").unwrap().field("country").is_some());
    assert_eq!(
        kind(col(&t, "submission_timestamp")),
        ("TIMESTAMP", Mode::Nullable)
    );
    assert_eq!(kind(col(&t, "sample_id")), ("INT64", Mode::Nullable));
    assert_eq!(
        kind(col(&t, "additional_properties")),
        ("STRING", Mode::Nullable)
    );
    let names: Vec<&str> = t.fields.iter().map(|f| f.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "columns are sorted");
}

#[test]
fn json_form_round_trips_and_reads_legacy_names() {
    let t = derive(
        json!({"m": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}}}),
    );
    assert_eq!(TableSchema::from_json(&t.to_json()).unwrap(), t);
    let legacy = json!({"fields": [{"name": "a", "type": "INTEGER"}, {"name": "b", "type": "BOOLEAN", "mode": "REQUIRED"},
        {"name": "r", "type": "STRUCT", "fields": [{"name": "f", "type": "FLOAT"}]}]});
    let t = TableSchema::from_json(&legacy).unwrap();
    assert_eq!(kind(col(&t, "a")), ("INT64", Mode::Nullable));
    assert_eq!(kind(col(&t, "b")), ("BOOL", Mode::Required));
    assert_eq!(
        kind(col(&t, "r").field("f").unwrap()),
        ("FLOAT64", Mode::Nullable)
    );
    assert!(TableSchema::from_json(&json!({"fields": [{"type": "STRING"}]})).is_err());
}

#[test]
fn payload_rows_fit_the_table_and_keep_the_rest() {
    let t = derive(json!({
        "clientId": {"type": "string"},
        "n": {"type": "integer"},
        "f": {"type": "number"},
        "flag": {"type": "boolean"},
        "when": {"type": "string", "format": "date-time"},
        "free": {"type": "object"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "list": {"type": "array", "items": {"type": "integer"}},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        "rec": {"type": "object", "properties": {"a": {"type": "string"}}},
        "recs": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    }));
    let doc = obj(json!({
        "clientId": "c1",
        "n": "42",
        "f": 1,
        "flag": "true",
        "when": "2024-03-01T10:11:12.123456789+01:00",
        "free": {"any": [1, null]},
        "counts": {"a": 1, "b": "x"},
        "list": [1, null, 3],
        "matrix": [[1, 2], [3]],
        "rec": {"a": "x", "zz": 1},
        "recs": [{"a": 1}, {"a": 2, "q": true}],
        "unknown": {"deep": 1},
        "metadata": {"document_namespace": "test", "geo": {"country": "FR", "planet": "earth"}},
        "submission_timestamp": "2024-03-01T10:11:12Z",
        "sample_id": 7,
    }));
    let row = payload_row(&doc, &t).unwrap();
    check_row(&row, &t).unwrap();
    assert_eq!(row["client_id"], "c1");
    assert_eq!(row["n"], 42);
    assert_eq!(row["flag"], true);
    assert_eq!(row["when"], "2024-03-01T09:11:12.123456Z");
    assert_eq!(row["free"], "{\"any\":[1,null]}");
    assert_eq!(
        row["counts"],
        json!([{"key": "a", "value": 1}, {"key": "b"}])
    );
    assert!(
        row.get("list").is_none(),
        "an array with a null is kept whole aside"
    );
    assert_eq!(row["matrix"], json!([{"list": [1, 2]}, {"list": [3]}]));
    assert_eq!(row["rec"], json!({"a": "x"}));
    assert_eq!(row["recs"], json!([{"a": 1}, {"a": 2}]));
    assert_eq!(row["metadata"]["geo"]["country"], "FR");
    let extra: Value =
        serde_json::from_str(row["additional_properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        extra,
        json!({
            "counts": {"b": "x"},
            "list": [1, null, 3],
            "rec": {"zz": 1},
            "recs": [null, {"q": true}],
            "unknown": {"deep": 1},
            "metadata": {"geo": {"planet": "earth"}},
        })
    );
}

#[test]
fn a_document_s_own_additional_properties_is_kept() {
    let t = derive(json!({"a": {"type": "string"}}));
    let row = payload_row(
        &obj(json!({"a": "x", "additionalProperties": {"k": 1}, "z": 2})),
        &t,
    )
    .unwrap();
    let extra: Value =
        serde_json::from_str(row["additional_properties"].as_str().unwrap()).unwrap();
    assert_eq!(extra, json!({"additionalProperties": {"k": 1}, "z": 2}));
}

#[test]
fn a_row_without_an_additional_properties_column_refuses_extra_values() {
    let t = TableSchema {
        fields: vec![Field::new("a", FieldType::String)],
    };
    assert!(payload_row(&obj(json!({"a": "x", "b": null})), &t).is_ok());
    let e = payload_row(&obj(json!({"a": "x", "b": 1})), &t).unwrap_err();
    assert_eq!(
        e,
        RowError::NoColumn {
            fields: vec!["b".into()]
        }
    );
}

#[test]
fn raw_and_decoded_rows() {
    let attrs = BTreeMap::from([
        ("error_type".to_string(), "ParsePayload".to_string()),
        ("documentNamespace".to_string(), "x".to_string()),
        ("custom".to_string(), "y".to_string()),
    ]);
    let t = raw_table_schema();
    let row = raw_row(&attrs, b"\xff\x00", &t).unwrap();
    check_row(&row, &t).unwrap();
    assert_eq!(row["error_type"], "ParsePayload");
    assert_eq!(row["document_namespace"], "x");
    assert_eq!(row["payload"], "/wA=");
    assert_eq!(row["additional_properties"], "{\"custom\":\"y\"}");

    let t = decoded_table_schema();
    let metadata = obj(json!({"metadata": {"document_type": "main", "geo": {}}, "sample_id": 3}));
    let other = BTreeMap::from([("client_compression".to_string(), "gzip".to_string())]);
    let row = decoded_row(&metadata, &other, b"{}", &t).unwrap();
    check_row(&row, &t).unwrap();
    assert_eq!(row["metadata"]["document_type"], "main");
    assert_eq!(row["sample_id"], 3);
    assert_eq!(row["payload"], "e30=");
    assert_eq!(
        row["additional_properties"],
        "{\"client_compression\":\"gzip\"}"
    );
}

#[test]
fn check_row_refuses_what_bigquery_refuses() {
    let t = derive(json!({
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "r": {"type": "object", "properties": {"a": {"type": "boolean"}}},
        "ts": {"type": "string", "format": "date-time"},
    }));
    let bad = [
        json!({"n": "x"}),
        json!({"n": 1.5}),
        json!({"tags": "a"}),
        json!({"tags": ["a", null]}),
        json!({"r": {"b": 1}}),
        json!({"r": 3}),
        json!({"ts": "yesterday"}),
        json!({"nope": 1}),
    ];
    for row in bad {
        assert!(check_row(&obj(row.clone()), &t).is_err(), "{row}");
    }
    check_row(
        &obj(json!({"n": 1, "tags": [], "r": {"a": null}, "ts": null})),
        &t,
    )
    .unwrap();
    let required = TableSchema {
        fields: vec![Field::new("k", FieldType::String).with_mode(Mode::Required)],
    };
    assert!(check_row(&Map::new(), &required).is_err());
}

#[test]
fn bundled_schemas_derive() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/json");
    let registry = crate::SchemaRegistry::load(dir).unwrap();
    for (ns, dt, v) in [
        ("telemetry", "main", 4),
        ("telemetry", "event", 4),
        ("org-mozilla-fenix", "baseline", 1),
        ("test", "test", 1),
    ] {
        let s = registry.get(ns, dt, v).unwrap();
        let t = derive_table_schema(s.as_json());
        assert!(t.fields.len() > 10, "{ns}/{dt}: {t}");
        assert_eq!(TableSchema::from_json(&t.to_json()).unwrap(), t);
    }
}

// ---- property: every document the schema validates fits its derived table ----

/// Values for `schema`, following its keywords (not always valid: the test keeps the valid
/// ones). `depth` bounds recursion.
fn arb_for(schema: &Value, root: &Value, depth: u32) -> BoxedStrategy<Value> {
    let o = match schema {
        Value::Object(o) => o,
        _ => return arb_any(1),
    };
    if depth == 0 {
        return Just(Value::Null).boxed();
    }
    if let Some(Value::String(r)) = o.get("$ref") {
        let target = r
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .cloned()
            .unwrap_or(Value::Bool(true));
        return arb_for(&target, root, depth - 1);
    }
    if let Some(Value::Array(values)) = o.get("enum") {
        return proptest::sample::select(values.clone()).boxed();
    }
    if let Some(c) = o.get("const") {
        return Just(c.clone()).boxed();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alts)) = o.get(key) {
            let strategies: Vec<_> = alts.iter().map(|a| arb_for(a, root, depth - 1)).collect();
            return proptest::strategy::Union::new(strategies).boxed();
        }
    }
    let types: Vec<String> = match o.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ if o.contains_key("properties") => vec!["object".into()],
        _ => return arb_any(2),
    };
    let strategies: Vec<BoxedStrategy<Value>> = types
        .iter()
        .map(|t| match t.as_str() {
            "null" => Just(Value::Null).boxed(),
            "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
            "integer" => {
                let min = o.get("minimum").and_then(Value::as_i64).unwrap_or(0);
                let max = o
                    .get("maximum")
                    .and_then(Value::as_i64)
                    .unwrap_or(min + 2_000_000);
                (min..=max).prop_map(|i| json!(i)).boxed()
            }
            "number" => prop_oneof![
                (0i64..1000).prop_map(|i| json!(i)),
                (-1e6f64..1e6).prop_map(|f| json!(f))
            ]
            .boxed(),
            "string" => arb_string(o),
            "array" => {
                let item = match o.get("items") {
                    Some(Value::Array(tuple)) => {
                        let parts: Vec<_> =
                            tuple.iter().map(|i| arb_for(i, root, depth - 1)).collect();
                        return parts.prop_map(Value::Array).boxed();
                    }
                    Some(items) => arb_for(items, root, depth - 1),
                    None => arb_any(1),
                };
                let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
                let max = o
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .map_or(min + 2, |m| m as usize);
                proptest::collection::vec(item, min..=max)
                    .prop_map(Value::Array)
                    .boxed()
            }
            "object" => arb_object(o, root, depth),
            _ => arb_any(1),
        })
        .collect();
    proptest::strategy::Union::new(strategies).boxed()
}

fn arb_string(o: &Map<String, Value>) -> BoxedStrategy<Value> {
    if let Some(Value::String(p)) = o.get("pattern") {
        let p = p.trim_start_matches('^').trim_end_matches('$');
        if let Ok(s) = proptest::string::string_regex(p) {
            return s.prop_map(Value::String).boxed();
        }
    }
    match o.get("format").and_then(Value::as_str) {
        Some("date-time") => (0i64..4_000_000_000, 0u32..1_000_000_000, -720i32..720)
            .prop_map(|(s, n, off)| {
                let t = chrono::DateTime::from_timestamp(s, n).unwrap();
                let tz = chrono::FixedOffset::east_opt(off * 60).unwrap();
                Value::String(t.with_timezone(&tz).to_rfc3339())
            })
            .boxed(),
        Some("date") => (1i32..9999, 1u32..13, 1u32..29)
            .prop_map(|(y, m, d)| Value::String(format!("{y:04}-{m:02}-{d:02}")))
            .boxed(),
        _ => "[a-zA-Z0-9 _-]{0,8}".prop_map(Value::String).boxed(),
    }
}

fn arb_object(o: &Map<String, Value>, root: &Value, depth: u32) -> BoxedStrategy<Value> {
    let props: Vec<(String, Value)> = o
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let required: Vec<&str> = o
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let known: Vec<BoxedStrategy<Option<(String, Value)>>> = props
        .into_iter()
        .map(|(k, s)| {
            let p = if required.contains(&k.as_str()) {
                0.999
            } else {
                0.7
            };
            proptest::option::weighted(p, arb_for(&s, root, depth - 1))
                .prop_map(move |v| v.map(|v| (k.clone(), v)))
                .boxed()
        })
        .collect();
    let extra_schema = match o.get("additionalProperties") {
        Some(Value::Bool(false)) => None,
        Some(s @ Value::Object(_)) => Some(s.clone()),
        _ => Some(Value::Bool(true)),
    };
    let extra = match extra_schema {
        None => Just(Vec::new()).boxed(),
        Some(s) => {
            proptest::collection::vec(("[a-zA-Z_]{1,6}", arb_for(&s, root, depth - 1)), 0..3)
                .boxed()
        }
    };
    (known, extra)
        .prop_map(|(known, extra)| {
            let mut m = Map::new();
            for (k, v) in extra.into_iter().chain(known.into_iter().flatten()) {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

fn arb_any(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|i| json!(i)),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn registry_and_schemas() -> (crate::SchemaRegistry, Vec<(String, String, u32)>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/json");
    let keys = vec![
        ("telemetry".into(), "main".into(), 4),
        ("telemetry".into(), "event".into(), 4),
        ("org-mozilla-fenix".into(), "baseline".into(), 1),
        ("test".into(), "test".into(), 1),
    ];
    (crate::SchemaRegistry::load(dir).unwrap(), keys)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A document valid against a bundled schema (plus the decoder's metadata) becomes a row
    /// its derived table takes, with nothing dropped: every top-level member is in a column
    /// or in `additional_properties`.
    #[test]
    fn every_valid_document_fits_its_derived_table(which in 0usize..4, seed in any::<u64>()) {
        let (registry, keys) = registry_and_schemas();
        let (ns, dt, v) = &keys[which];
        let schema = registry.get(ns, dt, *v).unwrap();
        let table = derive_table_schema(schema.as_json());
        let strategy = arb_for(schema.as_json(), schema.as_json(), 6);
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &{ let mut s = [0u8; 32]; s[..8].copy_from_slice(&seed.to_le_bytes()); s },
            ),
        );
        let mut valid = 0;
        for _ in 0..50 {
            let doc = strategy.new_tree(&mut runner).unwrap().current();
            if !schema.is_valid(&doc) {
                continue;
            }
            valid += 1;
            let mut doc = doc.as_object().unwrap().clone();
            doc.insert("metadata".into(), json!({"document_namespace": ns, "geo": {"country": "FR"}, "header": {}}));
            doc.insert("submission_timestamp".into(), json!("2024-03-01T10:11:12Z"));
            let row = payload_row(&doc, &table).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_row(&row, &table).map_err(|e| TestCaseError::fail(format!("{e}: {}", Value::Object(row.clone()))))?;
            let extra: Map<String, Value> = row
                .get("additional_properties")
                .and_then(Value::as_str)
                .map(|s| serde_json::from_str(s).unwrap())
                .unwrap_or_default();
            for (k, v) in &doc {
                let placed = column_name(k).is_some_and(|c| row.contains_key(&c)) || extra.contains_key(k);
                prop_assert!(placed || v.is_null(), "`{}` was dropped from {}", k, Value::Object(doc.clone()));
            }
        }
        // the generator follows the schema: most documents it makes are valid
        prop_assert!(valid > 0, "no valid document generated for {}/{}", ns, dt);
    }
}
