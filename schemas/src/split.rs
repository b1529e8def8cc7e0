//! A schema's `mozPipelineMetadata.split_config`: how the decoder splits a document of that
//! schema into several documents (mozilla-schema-generator's `subset_pings`, which writes the
//! schemas of the parts from the same config).

use regex::Regex;
use serde_json::Value;

/// The namespace, doctype and version a part of a split document is decoded as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitTarget {
    /// `document_namespace` of the part.
    pub namespace: String,
    /// `document_type` of the part.
    pub doctype: String,
    /// `document_version` of the part.
    pub version: u32,
}

/// One subset of a split: the fields whose dotted path (`payload.histograms.a`) matches
/// `pattern` or `extra_pattern` in full move from the document into this part.
///
/// In the schemas the generator writes, a field matched by `pattern` leaves the remainder's
/// schema while one matched by `extra_pattern` stays in it (a deployed table cannot drop a
/// column); in the data both go to the subset only.
#[derive(Clone, Debug)]
pub struct SplitSubset {
    /// What the part is decoded as.
    pub target: SplitTarget,
    pattern: Regex,
    extra_pattern: Option<Regex>,
}

impl SplitSubset {
    /// Whether the field at `path` (object keys joined by `.`) belongs to this subset.
    ///
    /// ```
    /// use serde_json::json;
    /// use sluice_schemas::SplitConfig;
    /// let c = SplitConfig::from_pipeline_metadata(&json!({"split_config": {"subsets": [{
    ///     "document_namespace": "test", "document_type": "subset", "document_version": "1",
    ///     "pattern": ".*int", "extra_pattern": ".*int64"}]}})).unwrap().unwrap();
    /// let s = &c.subsets[0];
    /// assert!(s.matches("payload.int") && s.matches("payload.int64") && s.matches("test_int"));
    /// assert!(!s.matches("payload.integer") && !s.matches("payload"));
    /// ```
    pub fn matches(&self, path: &str) -> bool {
        self.pattern.is_match(path)
            || self
                .extra_pattern
                .as_ref()
                .is_some_and(|p| p.is_match(path))
    }
}

/// A schema's `split_config`: subsets first, in order (a field goes to the first subset that
/// matches it), then the remainder (what no subset took), and the original document itself
/// when `preserve_original` is true.
#[derive(Clone, Debug)]
pub struct SplitConfig {
    /// Whether the whole document is decoded too, as its own schema.
    pub preserve_original: bool,
    /// The subsets, in order.
    pub subsets: Vec<SplitSubset>,
    /// Where the fields no subset took go; unset: they are only in the original.
    pub remainder: Option<SplitTarget>,
}

impl SplitConfig {
    /// Reads `split_config` from a schema's `mozPipelineMetadata`: `None` without one, an
    /// error (the reason) for one that is malformed. Patterns are Rust regular expressions
    /// (linear time: the keys they are matched against come from submissions), anchored at
    /// both ends as Python's `re.fullmatch` is; a version is a number or a string of digits.
    pub fn from_pipeline_metadata(pipeline: &Value) -> Result<Option<SplitConfig>, String> {
        let Some(config) = pipeline.get("split_config") else {
            return Ok(None);
        };
        let config = config
            .as_object()
            .ok_or("`split_config` must be an object")?;
        let preserve_original = match config.get("preserve_original") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`split_config.preserve_original` must be a boolean".into()),
        };
        let subsets = match config.get("subsets") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, s)| subset(s).map_err(|e| format!("`split_config.subsets[{i}]`: {e}")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`split_config.subsets` must be an array".into()),
        };
        let remainder = match config.get("remainder") {
            None | Some(Value::Null) => None,
            Some(r) => Some(target(r).map_err(|e| format!("`split_config.remainder`: {e}"))?),
        };
        if subsets.is_empty() && remainder.is_none() {
            return Err("`split_config` names neither subsets nor a remainder".into());
        }
        Ok(Some(SplitConfig {
            preserve_original,
            subsets,
            remainder,
        }))
    }
}

fn text<'a>(o: &'a Value, key: &str) -> Result<&'a str, String> {
    o.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("`{key}` must be a non-empty string"))
}

fn target(o: &Value) -> Result<SplitTarget, String> {
    if !o.is_object() {
        return Err("must be an object".into());
    }
    let version = match o.get("document_version") {
        Some(Value::Number(n)) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
    .ok_or("`document_version` must be a version number")?;
    Ok(SplitTarget {
        namespace: text(o, "document_namespace")?.to_owned(),
        doctype: text(o, "document_type")?.to_owned(),
        version,
    })
}

fn anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("pattern `{pattern}`: {e}"))
}

fn subset(o: &Value) -> Result<SplitSubset, String> {
    let target = target(o)?;
    let pattern = anchored(text(o, "pattern")?)?;
    let extra_pattern = match o.get("extra_pattern") {
        None | Some(Value::Null) => None,
        Some(_) => Some(anchored(text(o, "extra_pattern")?)?),
    };
    Ok(SplitSubset {
        target,
        pattern,
        extra_pattern,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(config: Value) -> Result<Option<SplitConfig>, String> {
        SplitConfig::from_pipeline_metadata(&json!({ "split_config": config }))
    }

    #[test]
    fn reads_the_generators_config() {
        let c = read(json!({
            "preserve_original": true,
            "subsets": [{"document_namespace": "test", "document_type": "subset",
                         "document_version": "1", "pattern": ".*int", "extra_pattern": ".*int64"}],
            "remainder": {"document_namespace": "test", "document_type": "remainder",
                          "document_version": 2}
        }))
        .unwrap()
        .unwrap();
        assert!(c.preserve_original);
        assert_eq!(c.subsets[0].target.doctype, "subset");
        assert_eq!(c.subsets[0].target.version, 1);
        assert_eq!(c.remainder.unwrap().version, 2);
        // anchored: a match inside the path is not enough
        assert!(!c.subsets[0].matches("payload.int.x"));
        assert!(
            SplitConfig::from_pipeline_metadata(&json!({"bq_table": "x"}))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_malformed_config_says_what_is_wrong() {
        let err = |c: Value| read(c).unwrap_err();
        assert_eq!(err(json!([])), "`split_config` must be an object");
        assert_eq!(
            err(json!({})),
            "`split_config` names neither subsets nor a remainder"
        );
        let sub = |extra: Value| {
            let mut s = json!({"document_namespace": "t", "document_type": "s",
                               "document_version": "1", "pattern": "a"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({ "subsets": [s] })
        };
        assert!(err(sub(json!({"pattern": "(a"})))
            .starts_with("`split_config.subsets[0]`: pattern `(a`"));
        assert!(err(sub(json!({"pattern": "(?=a)"}))).contains("look-around"));
        assert_eq!(
            err(sub(json!({"document_version": "v1"}))),
            "`split_config.subsets[0]`: `document_version` must be a version number"
        );
        assert_eq!(
            err(sub(json!({"document_type": ""}))),
            "`split_config.subsets[0]`: `document_type` must be a non-empty string"
        );
        assert_eq!(
            err(json!({"remainder": "x"})),
            "`split_config.remainder`: must be an object"
        );
        assert_eq!(
            err(
                json!({"remainder": {"document_namespace": "t", "document_type": "r",
                                     "document_version": 1}, "preserve_original": "yes"})
            ),
            "`split_config.preserve_original` must be a boolean"
        );
    }
}
