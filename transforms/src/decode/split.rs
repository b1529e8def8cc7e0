//! Ping splitting: a document whose schema has a `mozPipelineMetadata.split_config` becomes
//! several documents, each decoded as its own namespace, doctype and version.

use serde_json::{Map, Value};
use sluice_schemas::{SplitConfig, SplitSubset, SplitTarget};

/// Top-level fields every subset gets a copy of, so that each part can be joined with the
/// others and sampled alike (mozilla-schema-generator's `ADDITIONAL_METADATA_FIELDS`, which it
/// copies into every subset's schema).
const SHARED_FIELDS: [&str; 3] = ["client_id", "clientId", "client_info"];

/// One document a split made, and what it is decoded as.
#[derive(Debug, PartialEq)]
pub(crate) struct Part<'c> {
    pub(crate) target: &'c SplitTarget,
    pub(crate) document: Map<String, Value>,
}

/// Splits `document` as `config` says: for each subset in order, the fields whose dotted path
/// matches it move out of the document into a part of their own (with copies of
/// [`SHARED_FIELDS`]); a subset that takes nothing makes no part. What is left is the
/// remainder's part, if the config names one. Objects are walked whatever their keys (maps
/// too); arrays are values, never walked into.
pub(crate) fn split<'c>(
    mut document: Map<String, Value>,
    config: &'c SplitConfig,
) -> Vec<Part<'c>> {
    let shared: Vec<(&str, Value)> = SHARED_FIELDS
        .iter()
        .filter_map(|k| document.get(*k).map(|v| (*k, v.clone())))
        .collect();
    let mut parts = Vec::with_capacity(config.subsets.len() + 1);
    let mut path = String::new();
    for subset in &config.subsets {
        let mut taken = take(&mut document, subset, &mut path);
        if taken.is_empty() {
            continue;
        }
        for (k, v) in &shared {
            taken.entry(k.to_string()).or_insert_with(|| v.clone());
        }
        parts.push(Part {
            target: &subset.target,
            document: taken,
        });
    }
    if let Some(target) = &config.remainder {
        parts.push(Part { target, document });
    }
    parts
}

/// Moves the members of `object` (at `path`) that `subset` matches out of it, walking into the
/// objects it does not match; gives what it moved, laid out as it was.
fn take(
    object: &mut Map<String, Value>,
    subset: &SplitSubset,
    path: &mut String,
) -> Map<String, Value> {
    let mut taken = Map::new();
    let keys: Vec<String> = object.keys().cloned().collect();
    let depth = path.len();
    for key in keys {
        if depth > 0 {
            path.push('.');
        }
        path.push_str(&key);
        if subset.matches(path) {
            if let Some(v) = object.remove(&key) {
                taken.insert(key, v);
            }
        } else if let Some(Value::Object(child)) = object.get_mut(&key) {
            let below = take(child, subset, path);
            if !below.is_empty() {
                taken.insert(key, Value::Object(below));
            }
        }
        path.truncate(depth);
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(c: Value) -> SplitConfig {
        SplitConfig::from_pipeline_metadata(&json!({ "split_config": c }))
            .unwrap()
            .unwrap()
    }

    fn target(doctype: &str) -> Value {
        json!({"document_namespace": "test", "document_type": doctype, "document_version": "1"})
    }

    fn subset(doctype: &str, pattern: &str) -> Value {
        let mut t = target(doctype);
        t["pattern"] = json!(pattern);
        t
    }

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn parts(c: &SplitConfig, d: Value) -> Vec<(String, Value)> {
        split(doc(d), c)
            .into_iter()
            .map(|p| (p.target.doctype.clone(), Value::Object(p.document)))
            .collect()
    }

    #[test]
    fn fields_move_to_the_first_subset_that_matches_and_the_rest_remains() {
        // mozilla-schema-generator's test_subset, as data
        let mut s = subset("subset", ".*int");
        s["extra_pattern"] = json!(".*int64");
        let c = config(json!({"preserve_original": true, "subsets": [s],
                              "remainder": target("remainder")}));
        let out = parts(
            &c,
            json!({"client_id": "c", "payload": {"int": 1, "int64": 2, "string": "s"},
                   "test_int": 3, "test_string": "t"}),
        );
        assert_eq!(
            out,
            vec![
                (
                    "subset".to_string(),
                    json!({"client_id": "c", "payload": {"int": 1, "int64": 2}, "test_int": 3})
                ),
                (
                    "remainder".to_string(),
                    json!({"client_id": "c", "payload": {"string": "s"}, "test_string": "t"})
                ),
            ]
        );
    }

    #[test]
    fn subsets_take_in_order_and_an_empty_subset_makes_no_part() {
        let c = config(
            json!({"subsets": [subset("a", "x\\..*"), subset("b", "x\\.y.*"),
                                          subset("c", "nothing")]}),
        );
        // `x.y1` went to `a` first; `b` finds nothing left; no remainder configured
        let out = parts(
            &c,
            json!({"x": {"y1": 1}, "z": [{"x": 1}], "clientId": "id"}),
        );
        assert_eq!(
            out,
            vec![("a".to_string(), json!({"x": {"y1": 1}, "clientId": "id"}))]
        );
        // a whole object matched moves whole; arrays are not walked into
        let c = config(json!({"subsets": [subset("a", "m|z\\.x")], "remainder": target("r")}));
        let out = parts(&c, json!({"m": {"k": {"deep": 1}}, "z": [{"x": 1}]}));
        assert_eq!(
            out,
            vec![
                ("a".to_string(), json!({"m": {"k": {"deep": 1}}})),
                ("r".to_string(), json!({"z": [{"x": 1}]})),
            ]
        );
    }

    #[test]
    fn map_keys_are_matched_like_fields() {
        let c = config(
            json!({"subsets": [subset("uc", "payload\\.histograms\\.use_counter2_.*")],
                              "remainder": target("r")}),
        );
        let out = parts(
            &c,
            json!({"payload": {"histograms": {"use_counter2_a": 1, "GC_MS": 2}}}),
        );
        assert_eq!(
            out,
            vec![
                (
                    "uc".to_string(),
                    json!({"payload": {"histograms": {"use_counter2_a": 1}}})
                ),
                (
                    "r".to_string(),
                    json!({"payload": {"histograms": {"GC_MS": 2}}})
                ),
            ]
        );
    }
}
