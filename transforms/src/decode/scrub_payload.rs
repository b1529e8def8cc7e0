//! `ScrubPayload`: payload field rules from config: drop a field, drop a document matching a
//! predicate (as a dead letter, or counted).

use crate::config_doc::{ty, Documented, Key};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice::{Counter, Message, PCollection, PTransform, WithFailures};
use sluice_schemas::snake_case;

use super::json_scan::remove_path;
use super::{attr, DecodeError};

/// A JSON pointer (RFC 6901) such as `/environment/profile` or `/a~1b` (key `a/b`); written
/// and read as its string. The empty pointer (the whole document) is refused: drop the
/// document with a [`DocumentRule`] instead.
///
/// ```
/// use sluice_transforms::decode::JsonPointer;
/// let p = JsonPointer::parse("/payload/a~1b").unwrap();
/// assert_eq!(p.segments(), ["payload", "a/b"]);
/// assert!(JsonPointer::parse("payload").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    segments: Vec<String>,
}

impl JsonPointer {
    /// Parses a pointer: `/` then keys separated by `/`, with `~1` for `/` and `~0` for `~`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a json pointer: it must start with `/`, as in `/environment/profile`"
            ));
        };
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            let mut seg = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    seg.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => seg.push('~'),
                    Some('1') => seg.push('/'),
                    _ => {
                        return Err(format!(
                            "`{text}` is not a json pointer: `~` must be followed by 0 or 1"
                        ))
                    }
                }
            }
            segments.push(seg);
        }
        Ok(JsonPointer {
            text: text.to_string(),
            segments,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The keys, unescaped.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl Serialize for JsonPointer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for JsonPointer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        JsonPointer::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The decoder's `[decoder.scrub_payload]` section: payload fields removed from decoded
/// outputs and documents not written at all. The [`Decoder`](super::Decoder) applies the rules
/// where gcp-ingestion's MessageScrubber runs: in `ParsePayload`, right after the payload is
/// parsed (and replayed metadata lifted), before validation; `namespace` and `doctype` are
/// compared with the uri's as the schema registry compares names (snake_case).
///
/// ```
/// use sluice_transforms::decode::{DropAction, ScrubPayloadConfig};
/// let c: ScrubPayloadConfig = serde_json::from_str(r#"{
///     "drop_fields": [{"field": "/environment/profile", "namespace": "telemetry"}],
///     "drop_documents": [{"name": "debug", "field": "/debug", "equals": true, "action": "count"}]
/// }"#).unwrap();
/// assert_eq!(c.drop_fields[0].field.segments(), ["environment", "profile"]);
/// assert_eq!(c.drop_documents[0].action, DropAction::Count);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubPayloadConfig {
    /// Fields removed from the payload (the rest of the document is kept byte for byte); a
    /// document without the field passes unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_fields: Vec<FieldRule>,
    /// Documents not written: the first rule that matches decides what happens to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_documents: Vec<DocumentRule>,
}

impl ScrubPayloadConfig {
    /// Whether no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.drop_fields.is_empty() && self.drop_documents.is_empty()
    }
}

impl Documented for ScrubPayloadConfig {
    const KEYS: &'static [Key] = &[
        Key::optional(
            "drop_fields",
            ty::TABLES,
            "fields removed from the payload (the rest kept byte for byte)",
        )
        .with_table(<FieldRule as Documented>::keys),
        Key::optional(
            "drop_documents",
            ty::TABLES,
            "documents not written: the first matching rule decides",
        )
        .with_table(<DocumentRule as Documented>::keys),
    ];
}

const RULE_NAMESPACE: Key = Key::optional(
    "namespace",
    ty::STRING,
    "only documents of this namespace (compared snake_cased)",
);
const RULE_DOCTYPE: Key = Key::optional(
    "doctype",
    ty::STRING,
    "only documents of this doctype (compared snake_cased)",
);

impl Documented for FieldRule {
    const KEYS: &'static [Key] = &[
        Key::required(
            "field",
            ty::STRING,
            "\"/environment/profile\"",
            "the field, a JSON pointer (object keys only)",
        ),
        RULE_NAMESPACE,
        RULE_DOCTYPE,
    ];
}

impl Documented for DocumentRule {
    const KEYS: &'static [Key] = &[
        Key::required(
            "name",
            ty::STRING,
            "\"debug_pings\"",
            "names the rule in dead letters and counters",
        ),
        Key::optional(
            "field",
            ty::STRING,
            "the payload field tested, a JSON pointer (array indexes allowed); or `attribute`",
        ),
        Key::optional(
            "attribute",
            ty::STRING,
            "the attribute tested instead of a field (`app_version`, `x_source_tags`, ...)",
        ),
        Key::optional(
            "equals",
            ty::ANY,
            "matches when the value equals this (neither `equals` nor `in`: when it exists)",
        ),
        Key::optional("in", "array", "matches when the value is one of these"),
        RULE_NAMESPACE,
        RULE_DOCTYPE,
        Key::default(
            "action",
            "\"dead_letter\" | \"count\"",
            "\"dead_letter\"",
            "a `ScrubPayload` dead letter, or dropped and counted (`records_dropped`)",
        ),
    ];
    const EXAMPLE_EXTRA: &'static str = "field = \"/debug\"\n";
}

/// One field removed: `field` follows object keys only (a key that names an array element
/// matches nothing).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// The field, as a JSON pointer.
    pub field: JsonPointer,
    /// Only documents of this namespace; unset: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only documents of this doctype; unset: every doctype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctype: Option<String>,
}

/// What happens to a document a [`DocumentRule`] matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropAction {
    /// A dead letter with `error_type` `ScrubPayload` naming the rule (replayable).
    #[default]
    DeadLetter,
    /// Not written anywhere, counted under the rule's name (`records_dropped{rule="..."}` and
    /// the run's summary): never a silent loss.
    Count,
}

/// One rule dropping documents: matches when the value at `field` (a payload field) or of
/// `attribute` (an attribute the edge or the uri set: `app_version`, `app_update_channel`,
/// `x_source_tags`, ...; compared as a JSON string) equals `equals`, is one of `in`, or
/// (neither given) exists. Give `field` or `attribute`, not both.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawDocumentRule")]
pub struct DocumentRule {
    /// Names the rule in dead letters and counters.
    pub name: String,
    /// The field tested, as a JSON pointer (array indexes allowed, as in `/a/0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<JsonPointer>,
    /// The attribute tested, instead of a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// Matches documents whose field has this value (JSON equality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// Matches documents whose field has one of these values.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// Only documents of this namespace; unset: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only documents of this doctype; unset: every doctype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctype: Option<String>,
    /// `dead_letter` (default) or `count`.
    #[serde(default)]
    pub action: DropAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocumentRule {
    name: String,
    #[serde(default)]
    field: Option<JsonPointer>,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default, rename = "in")]
    one_of: Option<Vec<Value>>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    doctype: Option<String>,
    #[serde(default)]
    action: DropAction,
}

impl TryFrom<RawDocumentRule> for DocumentRule {
    type Error = String;

    fn try_from(r: RawDocumentRule) -> Result<Self, String> {
        if r.name.trim().is_empty() {
            return Err("a rule needs a `name` (it labels its dead letters and counter)".into());
        }
        match (&r.field, &r.attribute) {
            (Some(_), None) => {}
            (None, Some(a)) if !a.trim().is_empty() => {}
            (None, Some(_)) => return Err(format!("rule `{}`: `attribute` must name one", r.name)),
            _ => {
                return Err(format!(
                    "rule `{}`: give `field` (a JSON pointer) or `attribute`, one of them",
                    r.name
                ))
            }
        }
        if r.equals.is_some() && r.one_of.is_some() {
            return Err(format!(
                "rule `{}`: give `equals` or `in`, not both",
                r.name
            ));
        }
        Ok(DocumentRule {
            name: r.name,
            field: r.field,
            attribute: r.attribute,
            equals: r.equals,
            one_of: r.one_of,
            namespace: r.namespace,
            doctype: r.doctype,
            action: r.action,
        })
    }
}

/// Whether a rule limited to `namespace`/`doctype` applies to a message with these attributes.
/// The rules run before validation (where gcp-ingestion's MessageScrubber runs), on the names
/// as the uri spells them: they are compared as the schema registry compares them (snake_case),
/// so that a rule for `org-mozilla-fenix` also sees `/submit/org_mozilla_fenix/...`.
fn applies(
    namespace: &Option<String>,
    doctype: &Option<String>,
    attributes: &BTreeMap<String, String>,
) -> bool {
    let ok = |want: &Option<String>, name| {
        want.as_deref().is_none_or(|w| {
            attributes
                .get(name)
                .is_some_and(|have| have == w || snake_case(have) == snake_case(w))
        })
    };
    ok(namespace, attr::DOCUMENT_NAMESPACE) && ok(doctype, attr::DOCUMENT_TYPE)
}

/// Removes the member at `path` (object keys) from `document`; whether there was one.
fn remove_in_value(document: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = document;
    for key in parents {
        match at.get_mut(key.as_str()) {
            Some(next) if next.is_object() => at = next,
            _ => return false,
        }
    }
    at.as_object_mut()
        .is_some_and(|o| o.remove(last.as_str()).is_some())
}

impl DocumentRule {
    fn matches(&self, attributes: &BTreeMap<String, String>, document: &Value) -> bool {
        let attribute;
        let found = match (&self.field, &self.attribute) {
            (Some(field), _) => document.pointer(field.as_str()),
            (None, Some(name)) => {
                attribute = attributes.get(name).map(|v| Value::String(v.clone()));
                attribute.as_ref()
            }
            (None, None) => None,
        };
        let Some(found) = found else {
            return false;
        };
        match (&self.equals, &self.one_of) {
            (Some(v), _) => found == v,
            (None, Some(vs)) => vs.contains(found),
            (None, None) => true,
        }
    }

    /// What the rule tests, as its dead letters name it.
    fn tested(&self) -> String {
        match (&self.field, &self.attribute) {
            (Some(field), _) => format!("`{}`", field.as_str()),
            (None, Some(name)) => format!("attribute `{name}`"),
            (None, None) => String::new(),
        }
    }
}

/// What [`ScrubPayload::apply_owned`] did with a message that is not a dead letter.
#[derive(Debug)]
pub enum Scrubbed {
    /// The message goes on, without the dropped fields.
    Kept(Message),
    /// Rule number `.0` of `drop_documents` (action `count`) dropped it.
    Dropped(usize),
}

/// Applies a [`ScrubPayloadConfig`] to decoded messages (error_type `ScrubPayload` for the
/// documents a `dead_letter` rule drops; documents a `count` rule drops are counted under
/// [`Counter::Dropped`] with the rule's name). The [`Decoder`](super::Decoder) does not run
/// this step: it gives the same rules to [`ParsePayload`](super::ParsePayload), which applies
/// them to the document it parsed, before validation (one parse, and a rule can drop or
/// redact a document that would fail validation). This step is for pipelines of their own.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::{ScrubPayload, ScrubPayloadConfig};
/// let rules: ScrubPayloadConfig = serde_json::from_str(r#"{
///     "drop_fields": [{"field": "/secret"}],
///     "drop_documents": [{"name": "tests", "field": "/test", "equals": true}]
/// }"#).unwrap();
/// let input = vec![
///     Message::new(r#"{"a":1,"secret":"s"}"#),
///     Message::new(r#"{"a":2,"test":true}"#),
/// ];
/// let out = sluice::harness::run(input, move |input, dead| {
///     input.apply("scrub", ScrubPayload::new(&rules)).failures_to(dead)
/// });
/// assert_eq!(out.output, vec![Message::new(r#"{"a":1}"#)]);
/// assert_eq!(out.dead_letters[0].error_type, "ScrubPayload");
/// ```
#[derive(Clone, Debug)]
pub struct ScrubPayload {
    fields: Arc<[FieldRule]>,
    documents: Arc<[DocumentRule]>,
}

impl ScrubPayload {
    /// The rules of `config`.
    pub fn new(config: &ScrubPayloadConfig) -> Self {
        ScrubPayload {
            fields: config.drop_fields.clone().into(),
            documents: config.drop_documents.clone().into(),
        }
    }

    /// Whether there is no rule (the step passes everything unchanged).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.documents.is_empty()
    }

    /// The document rules, in order.
    pub fn document_rules(&self) -> &[DocumentRule] {
        &self.documents
    }

    /// Applies the rules to one message: kept (fields removed), dropped by a `count` rule, or
    /// handed back with the error for a dead letter (a `dead_letter` rule matched, or the
    /// payload is not JSON while document rules apply).
    pub fn apply_owned(&self, mut m: Message) -> Result<Scrubbed, (Message, DecodeError)> {
        if self.documents_apply(&m.attributes) {
            let document: Value = match serde_json::from_slice(&m.payload) {
                Ok(d) => d,
                Err(source) => return Err((m, DecodeError::InvalidJson { source })),
            };
            match self.check_document(&m.attributes, &document) {
                Ok(None) => {}
                Ok(Some(i)) => return Ok(Scrubbed::Dropped(i)),
                Err(e) => return Err((m, e)),
            }
        }
        for rule in self.fields.iter() {
            if !applies(&rule.namespace, &rule.doctype, &m.attributes) {
                continue;
            }
            if let Some(cut) = remove_path(&m.payload, rule.field.segments()) {
                m.payload = cut.into();
            }
        }
        Ok(Scrubbed::Kept(m))
    }

    /// Whether any document rule applies to a message with these attributes.
    fn documents_apply(&self, attributes: &BTreeMap<String, String>) -> bool {
        self.documents
            .iter()
            .any(|r| applies(&r.namespace, &r.doctype, attributes))
    }

    /// The document rules on a parsed document: `Ok(None)` to keep it, `Ok(Some(i))` when
    /// rule `i` (action `count`) drops it, the error when a `dead_letter` rule matches.
    pub(crate) fn check_document(
        &self,
        attributes: &BTreeMap<String, String>,
        document: &Value,
    ) -> Result<Option<usize>, DecodeError> {
        let matched = self.documents.iter().enumerate().find(|(_, r)| {
            applies(&r.namespace, &r.doctype, attributes) && r.matches(attributes, document)
        });
        match matched {
            None => Ok(None),
            Some((i, rule)) => match rule.action {
                DropAction::Count => Ok(Some(i)),
                DropAction::DeadLetter => Err(DecodeError::DroppedByRule {
                    rule: rule.name.clone(),
                    field: rule.tested(),
                }),
            },
        }
    }

    /// The field rules on a parsed document and its bytes: each field a rule names is removed
    /// from both (the other bytes kept as they are).
    pub(crate) fn drop_fields(
        &self,
        attributes: &BTreeMap<String, String>,
        document: &mut Value,
        payload: &mut Bytes,
    ) {
        for rule in self.fields.iter() {
            if !applies(&rule.namespace, &rule.doctype, attributes) {
                continue;
            }
            if remove_in_value(document, rule.field.segments()) {
                if let Some(cut) = remove_path(payload, rule.field.segments()) {
                    *payload = cut.into();
                }
            }
        }
    }

    /// Counters of the `count` rules, by rule index, in `metrics`.
    pub(crate) fn counters(&self, metrics: &sluice::Metrics) -> Vec<Option<Arc<AtomicU64>>> {
        self.documents
            .iter()
            .map(|r| {
                (r.action == DropAction::Count).then(|| metrics.counter(Counter::Dropped, &r.name))
            })
            .collect()
    }
}

/// Counts a document that rule `i` dropped.
pub(crate) fn count_drop(counters: &[Option<Arc<AtomicU64>>], i: usize) {
    if let Some(Some(c)) = counters.get(i) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for ScrubPayload {
    type Output = WithFailures<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        let counters = self.counters(&input.metrics());
        input.try_flat_map_owned("ScrubPayload", move |m: Message| {
            match self.apply_owned(m)? {
                Scrubbed::Kept(m) => Ok(Some(m)),
                Scrubbed::Dropped(i) => {
                    count_drop(&counters, i);
                    Ok(None)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> ScrubPayload {
        ScrubPayload::new(&serde_json::from_str(json).unwrap())
    }

    fn doc(payload: &str, ns: &str, dt: &str) -> Message {
        Message::new(payload.to_string())
            .with_attribute("document_namespace", ns)
            .with_attribute("document_type", dt)
    }

    fn kept(r: &ScrubPayload, m: Message) -> String {
        match r.apply_owned(m) {
            Ok(Scrubbed::Kept(m)) => String::from_utf8(m.payload.to_vec()).unwrap(),
            other => panic!("not kept: {other:?}"),
        }
    }

    #[test]
    fn drops_fields_only_where_the_rule_applies() {
        let r = rules(
            r#"{"drop_fields": [
                {"field": "/env/profile"},
                {"field": "/payload/secret", "namespace": "telemetry", "doctype": "main"}
            ]}"#,
        );
        let payload = r#"{"env":{"profile":{"x":1},"os":"l"},"payload":{"secret":"s","k":1}}"#;
        assert_eq!(
            kept(&r, doc(payload, "telemetry", "main")),
            r#"{"env":{"os":"l"},"payload":{"k":1}}"#
        );
        assert_eq!(
            kept(&r, doc(payload, "telemetry", "event")),
            r#"{"env":{"os":"l"},"payload":{"secret":"s","k":1}}"#
        );
        // no such field: unchanged, byte for byte
        assert_eq!(kept(&r, doc(r#"{ "a" : 1 }"#, "x", "y")), r#"{ "a" : 1 }"#);
    }

    #[test]
    fn the_first_matching_document_rule_decides() {
        let r = rules(
            r#"{"drop_documents": [
                {"name": "debug", "field": "/debug", "equals": true, "action": "count"},
                {"name": "channels", "field": "/app/channel", "in": ["nightly", "aurora"]},
                {"name": "has_x", "field": "/x/0", "doctype": "main"}
            ]}"#,
        );
        let outcome = |p: &str, dt: &str| r.apply_owned(doc(p, "telemetry", dt));
        assert!(matches!(
            outcome(r#"{"debug":true,"app":{"channel":"nightly"}}"#, "main"),
            Ok(Scrubbed::Dropped(0))
        ));
        let (m, e) = outcome(r#"{"debug":false,"app":{"channel":"aurora"}}"#, "main").unwrap_err();
        assert_eq!(m.attribute("document_type"), Some("main"));
        assert_eq!(
            e.to_string(),
            "document dropped by payload rule `channels`: `/app/channel` matched"
        );
        assert!(outcome(r#"{"x":[0]}"#, "main").is_err());
        assert!(matches!(
            outcome(r#"{"x":[0]}"#, "event"),
            Ok(Scrubbed::Kept(_))
        ));
        assert!(matches!(
            outcome(r#"{"x":[]}"#, "main"),
            Ok(Scrubbed::Kept(_))
        ));
        assert!(matches!(
            outcome(r#"{"debug":"true","app":{"channel":"release"}}"#, "main"),
            Ok(Scrubbed::Kept(_))
        ));
        // a payload that is not json cannot be checked: a dead letter, never passed on
        let (_, e) = outcome("not json", "main").unwrap_err();
        assert!(matches!(e, DecodeError::InvalidJson { .. }), "{e}");
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let err = |json: &str| {
            serde_json::from_str::<ScrubPayloadConfig>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"drop_fields": [{"field": "env"}]}"#).contains("must start with `/`"));
        assert!(err(r#"{"drop_fields": [{"field": "/a~2"}]}"#).contains("`~` must be followed"));
        assert!(err(r#"{"drop_fields": [{"field": "/a", "x": 1}]}"#).contains("unknown field"));
        assert!(err(
            r#"{"drop_documents": [{"name": "n", "field": "/a", "equals": 1, "in": [1]}]}"#
        )
        .contains("not both"));
        assert!(err(r#"{"drop_documents": [{"name": " ", "field": "/a"}]}"#).contains("`name`"));
        assert!(
            err(r#"{"drop_documents": [{"name": "n", "field": "/a", "action": "drop"}]}"#)
                .contains("unknown variant")
        );
        assert!(
            err(r#"{"drop_documents": [{"name": "n", "field": "/a", "y": 1}]}"#)
                .contains("unknown field")
        );
        assert!(err(r#"{"drop_documents": [{"name": "n"}]}"#).contains("give `field`"));
        assert!(
            err(r#"{"drop_documents": [{"name": "n", "field": "/a", "attribute": "b"}]}"#)
                .contains("one of them")
        );
        assert!(
            err(r#"{"drop_documents": [{"name": "n", "attribute": ""}]}"#)
                .contains("`attribute` must name one")
        );
    }

    #[test]
    fn a_rule_can_test_an_attribute() {
        // gcp-ingestion's MessageScrubber also drops by what the uri and the edge say
        let r = rules(
            r#"{"drop_documents": [
                {"name": "old_fx", "attribute": "app_version", "in": ["61.0a1", "62.0"]},
                {"name": "tagged", "attribute": "x_source_tags"}
            ]}"#,
        );
        let with = |k: &str, v: &str| doc("{}", "telemetry", "main").with_attribute(k, v);
        let (_, e) = r.apply_owned(with("app_version", "62.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "document dropped by payload rule `old_fx`: attribute `app_version` matched"
        );
        assert!(r.apply_owned(with("x_source_tags", "automation")).is_err());
        assert!(matches!(
            r.apply_owned(with("app_version", "124.0")),
            Ok(Scrubbed::Kept(_))
        ));
    }

    #[test]
    fn counted_drops_are_counted_and_dead_letters_routed() {
        let r = rules(
            r#"{"drop_documents": [
                {"name": "debug", "field": "/debug", "action": "count"},
                {"name": "test", "field": "/test"}
            ]}"#,
        );
        let input = vec![
            Message::new(r#"{"debug":1}"#),
            Message::new(r#"{"debug":2}"#),
            Message::new(r#"{"test":1}"#),
            Message::new(r#"{"ok":1}"#),
        ];
        let out = sluice::MemorySink::<Message>::new();
        let dead = sluice::MemorySink::<sluice::DeadLetter>::new();
        let (o, d) = (out.clone(), dead.clone());
        let pipeline = sluice::Pipeline::new("t");
        let metrics = pipeline.metrics();
        pipeline
            .run(move |p| {
                let mut dl = p.dead_letters();
                p.read("in", sluice::MemorySource::from(input.clone()))
                    .apply("scrub", r.clone())
                    .failures_to(&mut dl)
                    .write("out", o.clone())
                    .failures_to(&mut dl);
                dl.write("dead", d.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(out.records(), vec![Message::new(r#"{"ok":1}"#)]);
        let dead = dead.records();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].error_type, "ScrubPayload");
        assert!(
            dead[0].error_message.contains("`test`"),
            "{}",
            dead[0].error_message
        );
        let dropped = metrics.snapshot().family(Counter::Dropped);
        assert_eq!(dropped.get("debug"), Some(&2));
        assert_eq!(dropped.get("test"), None);
        assert!(metrics
            .snapshot()
            .to_prometheus()
            .contains("sluice_records_dropped{rule=\"debug\"} 2"));
    }
}
