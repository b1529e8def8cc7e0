//! Table templates: `${attr}` and `${attr:-default}` placeholders filled from a message's
//! attributes, values snake_cased, rendered to a table reference.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sluice::Message;
use sluice_schemas::snake_case;

/// BigQuery's longest dataset and table id.
const MAX_ID: usize = 1024;

/// A table: `project` (the sink's when absent), `dataset`, `table`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRef {
    /// The project, when the template names one.
    pub project: Option<String>,
    /// The dataset id.
    pub dataset: String,
    /// The table id.
    pub table: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{p}.{}.{}", self.dataset, self.table),
            None => write!(f, "{}.{}", self.dataset, self.table),
        }
    }
}

impl TableRef {
    /// Reads `dataset.table`, `project.dataset.table` or `project:dataset.table`; dataset and
    /// table ids are letters, digits and `_` (at most 1024).
    pub fn parse(text: &str) -> Result<TableRef, String> {
        let (project, rest) = match text.split_once(':') {
            Some((p, rest)) => (Some(p), rest),
            None => (None, text),
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let (project, dataset, table) = match (project, parts.as_slice()) {
            (None, [d, t]) => (None, *d, *t),
            (None, [p, d, t]) => (Some(*p), *d, *t),
            (Some(p), [d, t]) => (Some(p), *d, *t),
            _ => {
                return Err(format!(
                    "`{text}` is not `dataset.table` or `project.dataset.table`"
                ))
            }
        };
        for (what, id) in [("dataset", dataset), ("table", table)] {
            if id.is_empty()
                || id.len() > MAX_ID
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(format!(
                    "`{id}` is not a {what} id (letters, digits and `_`, at most {MAX_ID})"
                ));
            }
        }
        if let Some(p) = project {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!("`{p}` is not a project id"));
            }
        }
        Ok(TableRef {
            project: project.map(str::to_string),
            dataset: dataset.to_string(),
            table: table.to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Attribute {
        name: String,
        default: Option<String>,
    },
}

/// A table template such as `${document_namespace}.${document_type}_v${document_version}`.
///
/// Placeholders take the message's attribute (or `default` when it is missing or empty);
/// values are [`snake_case`]d, so `org-mozilla-fenix` names the dataset `org_mozilla_fenix`.
/// `submission_date` is derived from `submission_timestamp` when absent, as in path
/// templates. A placeholder without a value, or a rendered name that is not a table, is a
/// per-record error: the record becomes a dead letter ([`TableTemplate::render`]).
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::io::bigquery::TableTemplate;
/// let t = TableTemplate::parse("${document_namespace}.${document_type}_v${document_version}").unwrap();
/// let m = Message::new("{}")
///     .with_attribute("document_namespace", "org-mozilla-fenix")
///     .with_attribute("document_type", "baseline")
///     .with_attribute("document_version", "1");
/// assert_eq!(t.render(&m).unwrap().to_string(), "org_mozilla_fenix.baseline_v1");
/// assert!(t.render(&Message::new("{}")).is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TableTemplate {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for TableTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableTemplate({:?})", self.source)
    }
}

impl fmt::Display for TableTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl TableTemplate {
    /// Parses a template; an unclosed `${` or an empty placeholder name is an error.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("table template `{template}`: unclosed `${{`"))?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (inner, None),
            };
            if name.is_empty() {
                return Err(format!("table template `{template}`: empty placeholder"));
            }
            parts.push(Part::Attribute {
                name: name.to_string(),
                default,
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("the table template is empty".to_string());
        }
        let t = TableTemplate {
            source: template.to_string(),
            parts,
        };
        if !t.has_placeholders() {
            TableRef::parse(template).map_err(|e| format!("table template: {e}"))?;
        }
        Ok(t)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether any value comes from a record (otherwise every record goes to one table).
    pub fn has_placeholders(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Attribute { .. }))
    }

    /// The table of `message`, or why it has none (a missing attribute, a name that is not a
    /// table).
    pub fn render(&self, message: &Message) -> Result<TableRef, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Attribute { name, default } => {
                    let value = attribute(message, name)
                        .map(snake_case)
                        .filter(|v| !v.is_empty())
                        .or_else(|| default.clone());
                    match value {
                        Some(v) => out.push_str(&v),
                        None => {
                            return Err(format!(
                                "table template `{}`: the record has no `{name}`",
                                self.source
                            ))
                        }
                    }
                }
            }
        }
        TableRef::parse(&out)
    }
}

fn attribute<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    let value = message.attribute(name).filter(|v| !v.is_empty());
    if value.is_some() {
        return value;
    }
    match name {
        "submission_date" => message
            .attribute("submission_timestamp")
            .and_then(|t| t.get(..10)),
        _ => None,
    }
}

impl Serialize for TableTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for TableTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TableTemplate::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_snake_cased_values_and_defaults() {
        let t = TableTemplate::parse("${ns:-none}.${dt}_v${v}").unwrap();
        let m = Message::new("")
            .with_attribute("dt", "First-Shutdown")
            .with_attribute("v", "4");
        assert_eq!(t.render(&m).unwrap().to_string(), "none.first_shutdown_v4");
        let missing = t
            .render(&Message::new("").with_attribute("v", "4"))
            .unwrap_err();
        assert!(missing.contains("`dt`"), "{missing}");
        // a value that snake_cases to nothing takes the default or is missing
        let m = Message::new("")
            .with_attribute("ns", "--")
            .with_attribute("dt", "x")
            .with_attribute("v", "1");
        assert_eq!(t.render(&m).unwrap().dataset, "none");
    }

    #[test]
    fn rendered_names_must_be_tables() {
        let t = TableTemplate::parse("ds.${dt}").unwrap();
        let m = Message::new("").with_attribute("dt", "日本");
        assert!(t.render(&m).unwrap_err().contains("table id"));
        let t = TableTemplate::parse("${p}.ds.t").unwrap();
        let r = t
            .render(&Message::new("").with_attribute("p", "my-proj"))
            .unwrap();
        // snake_case turns `-` into `_`: still a project id
        assert_eq!(r.project.as_deref(), Some("my_proj"));
    }

    #[test]
    fn parse_errors() {
        assert!(TableTemplate::parse("ds.${x").is_err());
        assert!(TableTemplate::parse("ds.${}").is_err());
        assert!(TableTemplate::parse("").is_err());
        assert!(TableTemplate::parse("not a table").is_err());
        assert!(TableTemplate::parse("p:ds.t").is_ok());
        assert_eq!(
            TableRef::parse("p:ds.t").unwrap(),
            TableRef::parse("p.ds.t").unwrap()
        );
    }
}
