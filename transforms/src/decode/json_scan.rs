//! Byte-level edits of a JSON object's top-level members, so that the decoder can remove and
//! add members without re-serializing the document (DESIGN §7).
//!
//! The scanner assumes well-formed JSON (the caller parsed it already) but never panics or
//! loops on anything else: it returns `None` instead.

use std::borrow::Cow;
use std::ops::Range;

struct Member<'a> {
    key: Cow<'a, str>,
    key_start: usize,
    value_start: usize,
    value_end: usize,
    /// Position of the `,` after the value, if another member follows.
    comma: Option<usize>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is `"`; the index after the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after the value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

fn members(b: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        let key_start = i;
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let raw = &b[key_start + 1..key_end - 1];
        let key = if raw.contains(&b'\\') {
            Cow::Owned(serde_json::from_slice::<String>(&b[key_start..key_end]).ok()?)
        } else {
            Cow::Borrowed(std::str::from_utf8(raw).ok()?)
        };
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let value_start = i;
        let value_end = skip_value(b, i)?;
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => {
                out.push(Member {
                    key,
                    key_start,
                    value_start,
                    value_end,
                    comma: Some(i),
                });
                i = skip_ws(b, i + 1);
            }
            Some(b'}') => {
                out.push(Member {
                    key,
                    key_start,
                    value_start,
                    value_end,
                    comma: None,
                });
                return Some(out);
            }
            _ => return None,
        }
    }
}

/// `object` without its top-level members whose key matches `remove`, keeping every other
/// byte; `None` if `object` is not a JSON object.
///
/// A removed member takes its following comma with it; a removed tail takes the comma before
/// it, so the result stays valid JSON. This exactly undoes [`prepend_members`].
pub(crate) fn remove_members(object: &[u8], remove: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let members = members(object)?;
    let last_kept = members.iter().rposition(|m| !remove(&m.key));
    let mut cuts: Vec<Range<usize>> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        if !remove(&m.key) {
            continue;
        }
        match last_kept {
            Some(k) if i < k => cuts.push(m.key_start..m.comma? + 1),
            _ => {
                let start = match last_kept {
                    Some(k) => members[k].value_end,
                    None => members[0].key_start,
                };
                cuts.push(start..members.last()?.value_end);
                break;
            }
        }
    }
    let mut out = Vec::with_capacity(object.len());
    let mut at = 0;
    for cut in cuts {
        out.extend_from_slice(&object[at..cut.start]);
        at = cut.end;
    }
    out.extend_from_slice(&object[at..]);
    Some(out)
}

/// `object` without the member at `path` (object keys from the top, unescaped), keeping every
/// other byte; `None` when there is no such member (a key missing, or a value on the way that
/// is not an object) or `object` is not a JSON object. Where a key repeats, the path follows
/// the last one (the one a parser keeps) and the last step removes them all.
pub(crate) fn remove_path(object: &[u8], path: &[String]) -> Option<Vec<u8>> {
    let (first, rest) = path.split_first()?;
    let members = members(object)?;
    if rest.is_empty() {
        if !members.iter().any(|m| m.key == first.as_str()) {
            return None;
        }
        return remove_members(object, |k| k == first.as_str());
    }
    let m = members.iter().rev().find(|m| m.key == first.as_str())?;
    let inner = remove_path(&object[m.value_start..m.value_end], rest)?;
    let mut out = Vec::with_capacity(object.len());
    out.extend_from_slice(&object[..m.value_start]);
    out.extend_from_slice(&inner);
    out.extend_from_slice(&object[m.value_end..]);
    Some(out)
}

/// `object` with `members` (`"k":v,"k2":v2`, no braces) inserted right after its opening
/// brace; `None` if `object` does not look like a JSON object (first and last non-whitespace
/// bytes `{` and `}`).
pub(crate) fn prepend_members(object: &[u8], members: &[u8]) -> Option<Vec<u8>> {
    let open = skip_ws(object, 0);
    let close = object.iter().rposition(|c| !c.is_ascii_whitespace())?;
    if object.get(open) != Some(&b'{') || object[close] != b'}' || close == open {
        return None;
    }
    let empty = skip_ws(object, open + 1) == close;
    let mut out = Vec::with_capacity(object.len() + members.len() + 1);
    out.extend_from_slice(&object[..=open]);
    out.extend_from_slice(members);
    if !empty && !members.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(&object[open + 1..]);
    Some(out)
}

/// `object` with the string value at `path` (member names, one per nesting level) replaced
/// by `value`, every other byte kept; `None` if there is no string at `path`. Of duplicate
/// names the last counts, as for the parser.
pub(crate) fn replace_string(object: &[u8], path: &[&str], value: &str) -> Option<Vec<u8>> {
    let (first, rest) = path.split_first()?;
    let member = members(object)?
        .into_iter()
        .rev()
        .find(|m| m.key == *first)?;
    let span = member.value_start..member.value_end;
    let replaced = if rest.is_empty() {
        if object.get(span.start) != Some(&b'"') {
            return None;
        }
        serde_json::to_vec(value).ok()?
    } else {
        replace_string(&object[span.clone()], rest, value)?
    };
    let mut out = Vec::with_capacity(object.len() + replaced.len());
    out.extend_from_slice(&object[..span.start]);
    out.extend_from_slice(&replaced);
    out.extend_from_slice(&object[span.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rm(s: &str) -> String {
        String::from_utf8(remove_members(s.as_bytes(), |k| k == "m" || k == "n").unwrap()).unwrap()
    }

    fn rm_path(s: &str, path: &[&str]) -> Option<String> {
        let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
        remove_path(s.as_bytes(), &path).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn removes_a_nested_member_keeping_every_other_byte() {
        let doc = r#"{"a": {"b": 1, "c" : {"d":[1,"}"], "e":2}}, "z":3}"#;
        assert_eq!(
            rm_path(doc, &["a", "c", "d"]).unwrap(),
            r#"{"a": {"b": 1, "c" : { "e":2}}, "z":3}"#
        );
        assert_eq!(
            rm_path(doc, &["a", "c"]).unwrap(),
            r#"{"a": {"b": 1}, "z":3}"#
        );
        assert_eq!(
            rm_path(doc, &["z"]).unwrap(),
            r#"{"a": {"b": 1, "c" : {"d":[1,"}"], "e":2}}}"#
        );
        // missing keys, and values on the way that are not objects: nothing to remove
        assert_eq!(rm_path(doc, &["a", "x"]), None);
        assert_eq!(rm_path(doc, &["z", "x"]), None);
        assert_eq!(rm_path(doc, &["a", "c", "d", "0"]), None);
        assert_eq!(rm_path("[1]", &["a"]), None);
        // the last of repeated keys is the one followed
        assert_eq!(
            rm_path(r#"{"a":{"b":1},"a":{"b":2,"c":3}}"#, &["a", "b"]).unwrap(),
            r#"{"a":{"b":1},"a":{"c":3}}"#
        );
        let out = rm_path(doc, &["a", "b"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], serde_json::json!({"c": {"d": [1, "}"], "e": 2}}));
    }

    #[test]
    fn removes_members_anywhere() {
        assert_eq!(rm(r#"{"m":1,"a":2}"#), r#"{"a":2}"#);
        assert_eq!(rm(r#"{"a":2,"m":{"x":[1,"}"]}}"#), r#"{"a":2}"#);
        assert_eq!(rm(r#"{"a":2, "m":1 ,"b":3}"#), r#"{"a":2, "b":3}"#);
        assert_eq!(rm(r#"{"m":1,"n":2}"#), r#"{}"#);
        assert_eq!(rm(r#"{ "m" : 1 }"#), r#"{  }"#);
        assert_eq!(rm(r#"{"a":1,"m":1,"n":"\"}"}"#), r#"{"a":1}"#);
        assert_eq!(rm(r#"{"\u006d":1,"a":true}"#), r#"{"a":true}"#);
        assert_eq!(rm(r#"{}"#), r#"{}"#);
        assert_eq!(rm(r#"{"a":null}"#), r#"{"a":null}"#);
    }

    #[test]
    fn prepend_then_remove_is_identity() {
        for raw in [
            r#"{}"#,
            r#"{ }"#,
            r#"{"a":1}"#,
            "{ \"a\" : [1, 2] }\n",
            r#" {"b":{"m":1}}"#,
        ] {
            let with = prepend_members(raw.as_bytes(), br#""m":{"x":1},"n":5"#).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&with).unwrap();
            assert_eq!(v["n"], 5, "{raw}");
            assert_eq!(rm(std::str::from_utf8(&with).unwrap()), raw);
        }
    }

    #[test]
    fn rejects_non_objects() {
        assert!(prepend_members(b"[1]", b"\"m\":1").is_none());
        assert!(prepend_members(b"", b"\"m\":1").is_none());
        assert!(prepend_members(b"}", b"\"m\":1").is_none());
        assert!(remove_members(b"[1]", |_| true).is_none());
        assert!(remove_members(b"{\"a\"", |_| true).is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes: Vec<u8>) {
            let _ = remove_members(&bytes, |k| k.len() == 1);
            let _ = prepend_members(&bytes, b"\"m\":1");
        }

        #[test]
        fn removal_matches_the_parsed_value(
            entries in proptest::collection::vec(("[mnab]", proptest::arbitrary::any::<i32>()), 0..6)
        ) {
            let mut s = String::from("{");
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 { s.push_str(" , "); }
                s.push_str(&format!("\"{k}\": {v}"));
            }
            s.push('}');
            let cut = remove_members(s.as_bytes(), |k| k == "m" || k == "n").unwrap();
            let got: serde_json::Value = serde_json::from_slice(&cut).unwrap();
            let mut want: serde_json::Value = serde_json::from_str(&s).unwrap();
            let map = want.as_object_mut().unwrap();
            map.remove("m");
            map.remove("n");
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn replaces_a_nested_string_keeping_everything_else() {
        let r = |s: &str, path: &[&str]| {
            replace_string(s.as_bytes(), path, "new").map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            r(r#"{"a": {"b" : "OLD", "c":1} }"#, &["a", "b"]).as_deref(),
            Some(r#"{"a": {"b" : "new", "c":1} }"#)
        );
        assert_eq!(
            r(r#"{"b":"x","b":"\u0041"}"#, &["b"]).as_deref(),
            Some(r#"{"b":"x","b":"new"}"#)
        );
        assert_eq!(r(r#"{"b":1}"#, &["b"]), None);
        assert_eq!(r(r#"{"a":"x"}"#, &["a", "b"]), None);
        assert_eq!(r(r#"{"a":{}}"#, &["a", "b"]), None);
    }
}
