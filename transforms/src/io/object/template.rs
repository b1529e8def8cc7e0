//! Path templates: `${attr}` and `${attr:-default}` placeholders filled from a message's
//! attributes, rendered so that no value can leave the prefix the template describes.

use std::fmt;

use sluice::Message;

use super::ObjectSinkError;

/// A parsed path template such as
/// `${document_namespace}/${document_type}/v${document_version}/${submission_date:-unknown}/`.
///
/// - `${attr}` is replaced by the message attribute `attr`; `${attr:-default}` by `default` when
///   the attribute is missing or empty.
/// - `submission_date` (`submission_timestamp[0..10]`) and `submission_hour`
///   (`submission_timestamp[11..13]`) are derived when the message has no such attribute.
/// - A placeholder without a default is an error at [`PathTemplate::parse`] (gcp-ingestion's rule
///   for file paths: a record must never land in a path nobody chose). Use
///   [`PathTemplate::parse_allow_missing`] to opt out; missing values then render as
///   [`PathTemplate::MISSING`].
/// - Rendered values are sanitised: `/`, `\`, `%`, `#`, `?` and control characters become `_`,
///   and a path segment that would be empty, `.` or `..` becomes `_`, so a value can neither
///   escape the prefix nor change the depth of the layout.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::io::object::PathTemplate;
///
/// let t = PathTemplate::parse("${document_namespace:-none}/${submission_date:-unknown}/").unwrap();
/// let m = Message::new("{}")
///     .with_attribute("document_namespace", "telemetry")
///     .with_attribute("submission_timestamp", "2024-03-01T10:11:12Z");
/// assert_eq!(t.render(&m), "telemetry/2024-03-01/");
/// assert_eq!(t.render(&Message::new("{}")), "none/unknown/");
/// assert!(PathTemplate::parse("${document_type}/").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
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

impl PathTemplate {
    /// What a missing attribute without a default renders as, for templates parsed with
    /// [`PathTemplate::parse_allow_missing`].
    pub const MISSING: &'static str = "unknown";

    /// Parses a template; every placeholder must have a default.
    pub fn parse(template: &str) -> Result<Self, ObjectSinkError> {
        let parsed = Self::parse_allow_missing(template)?;
        let missing: Vec<&str> = parsed
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Placeholder {
                    name,
                    default: None,
                } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        if missing.is_empty() {
            Ok(parsed)
        } else {
            Err(ObjectSinkError::Template {
                template: template.to_string(),
                reason: format!(
                    "placeholder{} {} without a default (write `${{{}:-default}}`)",
                    if missing.len() > 1 { "s" } else { "" },
                    missing
                        .iter()
                        .map(|m| format!("`${{{m}}}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    missing[0]
                ),
            })
        }
    }

    /// Parses a template whose placeholders may lack a default: a missing attribute then
    /// renders as [`PathTemplate::MISSING`].
    pub fn parse_allow_missing(template: &str) -> Result<Self, ObjectSinkError> {
        let err = |reason: String| ObjectSinkError::Template {
            template: template.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                err(format!(
                    "unclosed `${{` at byte {}",
                    template.len() - rest.len() + start
                ))
            })?;
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (body, None),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(err(format!(
                    "bad attribute name `{name}` (letters, digits, `_`, `-`, `.`)"
                )));
            }
            if let Some(d) = &default {
                if d.contains("${") {
                    return Err(err(format!(
                        "nested placeholder in the default of `{name}`"
                    )));
                }
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Placeholder {
                name: name.to_string(),
                default,
            });
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        for p in &parts {
            if let Part::Literal(l) = p {
                if l.chars().any(|c| c.is_control() || c == '\\') {
                    return Err(err("control character or `\\` in the template".into()));
                }
            }
        }
        Ok(PathTemplate {
            source: template.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The attribute names the template reads.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder { name, .. } => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The folders every rendered path starts with: the template up to its last `/` before
    /// the first placeholder (empty when a placeholder comes first). What a check can look at
    /// before any record is written.
    ///
    /// ```
    /// use sluice_transforms::io::object::PathTemplate;
    /// let t = PathTemplate::parse("raw/v1/${document_type:-x}/").unwrap();
    /// assert_eq!(t.fixed_prefix(), "raw/v1/");
    /// ```
    pub fn fixed_prefix(&self) -> &str {
        let literal = match self.parts.first() {
            Some(Part::Literal(l)) => l.as_str(),
            _ => "",
        };
        match literal.rfind('/') {
            Some(i) => &literal[..=i],
            None => "",
        }
    }

    /// Renders the prefix for `message`. Never fails: missing values take their default (or
    /// [`PathTemplate::MISSING`]), and values are sanitised as described on the type. A leading
    /// `/` is dropped; the result ends with `/` when the template does (a directory), otherwise
    /// its last segment is a prefix of the object names.
    pub fn render(&self, message: &Message) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        self.render_into(message, &mut out);
        out
    }

    /// Like [`PathTemplate::render`], into `out` (cleared first) to reuse its allocation.
    pub fn render_into(&self, message: &Message, out: &mut String) {
        let mut raw = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(l) => raw.push_str(l),
                Part::Placeholder { name, default } => {
                    let value = lookup(message, name).filter(|v| !v.is_empty());
                    let value = value.or(default.as_deref()).unwrap_or(Self::MISSING);
                    push_sanitised(&mut raw, value);
                }
            }
        }
        out.clear();
        let trimmed = raw.trim_start_matches('/');
        let mut segments = trimmed.split('/').peekable();
        while let Some(segment) = segments.next() {
            let last = segments.peek().is_none();
            if last {
                // The object-name prefix after the last `/` may be empty, never `.`/`..`.
                if segment == "." || segment == ".." {
                    out.push('_');
                } else {
                    out.push_str(segment);
                }
            } else {
                if segment.is_empty() || segment == "." || segment == ".." {
                    out.push('_');
                } else {
                    out.push_str(segment);
                }
                out.push('/');
            }
        }
    }
}

impl fmt::Debug for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathTemplate({:?})", self.source)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for PathTemplate {
    type Err = ObjectSinkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PathTemplate::parse(s)
    }
}

/// An attribute, or one derived from `submission_timestamp`.
fn lookup<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    if let Some(v) = message.attribute(name) {
        return Some(v);
    }
    let range = match name {
        "submission_date" => 0..10,
        "submission_hour" => 11..13,
        _ => return None,
    };
    message
        .attribute("submission_timestamp")
        .and_then(|ts| ts.get(range))
}

fn push_sanitised(out: &mut String, value: &str) {
    for c in value.chars() {
        if c.is_control() || matches!(c, '/' | '\\' | '%' | '#' | '?') {
            out.push('_');
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(attrs: &[(&str, &str)]) -> Message {
        attrs
            .iter()
            .fold(Message::new("{}"), |m, (k, v)| m.with_attribute(*k, *v))
    }

    const LAYOUT: &str =
        "${document_namespace:-ns}/${document_type:-dt}/v${document_version:-0}/${submission_date:-unknown}/";

    #[test]
    fn fills_attributes_and_derived_dates() {
        let t = PathTemplate::parse(LAYOUT).unwrap();
        let m = msg(&[
            ("document_namespace", "telemetry"),
            ("document_type", "main"),
            ("document_version", "4"),
            ("submission_timestamp", "2024-03-01T10:11:12.123Z"),
        ]);
        assert_eq!(t.render(&m), "telemetry/main/v4/2024-03-01/");
        let h = PathTemplate::parse("${submission_hour:-xx}/").unwrap();
        assert_eq!(h.render(&m), "10/");
    }

    #[test]
    fn defaults_fill_missing_and_empty_attributes() {
        let t = PathTemplate::parse(LAYOUT).unwrap();
        assert_eq!(t.render(&msg(&[])), "ns/dt/v0/unknown/");
        assert_eq!(
            t.render(&msg(&[
                ("document_type", ""),
                ("submission_timestamp", "2024")
            ])),
            "ns/dt/v0/unknown/"
        );
    }

    #[test]
    fn explicit_attribute_wins_over_derived_one() {
        let t = PathTemplate::parse("${submission_date:-x}/").unwrap();
        let m = msg(&[
            ("submission_date", "2020-01-01"),
            ("submission_timestamp", "2024-03-01T10:11:12Z"),
        ]);
        assert_eq!(t.render(&m), "2020-01-01/");
    }

    #[test]
    fn placeholder_without_default_is_a_config_error_unless_allowed() {
        let e = PathTemplate::parse("out/${document_type}/${a:-b}/${c}/").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`${document_type}`"), "{text}");
        assert!(text.contains("`${c}`"), "{text}");
        let t = PathTemplate::parse_allow_missing("out/${document_type}/").unwrap();
        assert_eq!(t.render(&msg(&[])), "out/unknown/");
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in ["a/${x", "${}/", "${a b:-c}/", "${a:-${b}}/", "a\n/"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_cannot_escape_the_prefix() {
        let t = PathTemplate::parse("out/${a:-x}/${b:-y}/").unwrap();
        assert_eq!(
            t.render(&msg(&[("a", ".."), ("b", "../../etc")])),
            "out/_/.._.._etc/"
        );
        assert_eq!(
            t.render(&msg(&[("a", "."), ("b", "a/b\\c\n%#?")])),
            "out/_/a_b_c____/"
        );
        let joined = PathTemplate::parse("${a:-x}${b:-y}/").unwrap();
        assert_eq!(joined.render(&msg(&[("a", "."), ("b", ".")])), "_/");
        assert_eq!(
            PathTemplate::parse("/abs/${a:-x}")
                .unwrap()
                .render(&msg(&[("a", "..")])),
            "abs/_"
        );
    }

    #[test]
    fn literal_text_is_kept() {
        let t = PathTemplate::parse("plain/prefix-").unwrap();
        assert_eq!(t.render(&msg(&[])), "plain/prefix-");
        assert_eq!(t.attributes().count(), 0);
    }
}
