//! Name normalisation shared by lookups and transforms.

/// Converts a name to snake_case, the form namespaces, doctypes and BigQuery names are looked
/// up in.
///
/// Rules: every character that is not alphanumeric separates words; an uppercase letter starts
/// a word after a lowercase letter or a digit (`camelCase`, `v2Beta`), and the last capital of
/// a run starts a word when a lowercase letter follows it (`HTTPServer` -> `http_server`);
/// digits stay with the word before them. Words are lowercased and joined by one `_`; leading
/// and trailing separators are dropped. The result is a fixed point: `snake_case(snake_case(x))
/// == snake_case(x)`.
///
/// ```
/// use sluice_schemas::snake_case;
/// assert_eq!(snake_case("org-mozilla-fenix"), "org_mozilla_fenix");
/// assert_eq!(snake_case("camelCase"), "camel_case");
/// assert_eq!(snake_case("HTTPServer2Go"), "http_server2_go");
/// assert_eq!(snake_case("already_snake"), "already_snake");
/// ```
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    let mut pending_separator = false;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            pending_separator = true;
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_numeric() || (prev.is_uppercase() && next_is_lower) {
                pending_separator = true;
            }
        }
        if pending_separator && !out.is_empty() {
            out.push('_');
        }
        pending_separator = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// Whether `name` is already in the form [`snake_case`] produces (fast path for lookups).
pub(crate) fn is_snake_case(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('_')
        && !name.ends_with('_')
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        for (input, expected) in [
            ("org-mozilla-fenix", "org_mozilla_fenix"),
            ("camelCase", "camel_case"),
            ("telemetry", "telemetry"),
            ("main", "main"),
            ("first-shutdown", "first_shutdown"),
            ("HTTPServer", "http_server"),
            ("v2Beta", "v2_beta"),
            ("a--b__c..d", "a_b_c_d"),
            ("_leading_", "leading"),
            ("XMLHttpRequest", "xml_http_request"),
            ("ABC", "abc"),
            ("", ""),
        ] {
            assert_eq!(snake_case(input), expected, "{input}");
        }
    }

    #[test]
    fn is_snake_case_agrees() {
        for s in ["a", "a_b", "org_mozilla_fenix", "x2"] {
            assert!(is_snake_case(s));
            assert_eq!(snake_case(s), s);
        }
        for s in ["", "A", "a-b", "_a", "a__b", "a_"] {
            assert!(!is_snake_case(s));
        }
    }
}
