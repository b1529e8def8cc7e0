//! Path templates `${attr}` / `${attr:-default}`.
//!
//! Stand-in for `sluice_transforms::io::object::PathTemplate` until the object sink lands on
//! main; the config checks and the local sink use the same parse rules.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder {
        name: String,
        default: Option<String>,
    },
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `${` without its `}`.
    #[error("unclosed `${{` at byte {0}")]
    Unclosed(usize),
    /// `${}` or `${:-x}`.
    #[error("empty placeholder name at byte {0}")]
    EmptyName(usize),
    /// A placeholder without default in the file-name part (after the last `/`).
    #[error("placeholder `${{{0}}}` in the file name has no default: write `${{{0}:-default}}`")]
    DefaultlessInFileName(String),
}

impl PathTemplate {
    /// Parses `template`; placeholders without defaults may appear only in directory parts
    /// (before the last `/`), where a record that lacks the attribute is a dead letter.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        let mut offset = 0;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or(TemplateError::Unclosed(offset + start))?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n.trim(), Some(d.to_string())),
                None => (inner.trim(), None),
            };
            if name.is_empty() {
                return Err(TemplateError::EmptyName(offset + start));
            }
            parts.push(Part::Placeholder {
                name: name.to_string(),
                default,
            });
            let consumed = start + 2 + end + 1;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        // Placeholders after the last `/` name files: a missing attribute cannot pick one.
        let last_slash = parts
            .iter()
            .rposition(|p| matches!(p, Part::Literal(l) if l.contains('/')));
        for p in parts.iter().skip(last_slash.map_or(0, |i| i + 1)) {
            if let Part::Placeholder {
                name,
                default: None,
            } = p
            {
                return Err(TemplateError::DefaultlessInFileName(name.clone()));
            }
        }
        Ok(PathTemplate { parts })
    }

    /// The path for a record with these attributes; `Err(name)` names a missing attribute
    /// that has no default.
    pub fn render(&self, attributes: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Placeholder { name, default } => {
                    match attributes.get(name).filter(|v| !v.is_empty()) {
                        Some(v) => out.push_str(&sanitize(v)),
                        None => match default {
                            Some(d) => out.push_str(d),
                            None => return Err(name.clone()),
                        },
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Attribute values must not climb out of the prefix or add directory levels.
fn sanitize(v: &str) -> String {
    v.chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect::<String>()
        .replace("..", "__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_defaults() {
        let t = PathTemplate::parse("${a}/v${b:-x}/").unwrap();
        let mut attrs = BTreeMap::new();
        attrs.insert("a".to_string(), "ns/../y".to_string());
        assert_eq!(t.render(&attrs).unwrap(), "ns____y/vx/");
        assert_eq!(t.render(&BTreeMap::new()), Err("a".to_string()));
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(
            PathTemplate::parse("out/${a}"),
            Err(TemplateError::DefaultlessInFileName("a".into()))
        );
        assert!(PathTemplate::parse("out/${a:-z}").is_ok());
        assert!(matches!(
            PathTemplate::parse("${a"),
            Err(TemplateError::Unclosed(0))
        ));
        assert!(matches!(
            PathTemplate::parse("x/${}/"),
            Err(TemplateError::EmptyName(2))
        ));
    }
}
