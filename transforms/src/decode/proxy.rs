//! `ParseProxy`, and the choice of the client IP among the forwarding headers.

use std::collections::BTreeMap;

use sluice::{Message, PCollection, PTransform};

use super::attr;

/// Set by the pipeline's own proxy (a tee) in front of the edge: the time it received the
/// submission, or any other value.
pub const X_PIPELINE_PROXY: &str = "x_pipeline_proxy";
/// The edge's timestamp of a proxied submission, kept when `x_pipeline_proxy` replaces it.
pub const PROXY_TIMESTAMP: &str = "proxy_timestamp";
/// The `X-Forwarded-For` header.
pub const X_FORWARDED_FOR: &str = "x_forwarded_for";
/// The address the edge saw the request come from.
pub const REMOTE_ADDR: &str = "remote_addr";

/// Undoes what the pipeline's own proxy changed (gcp-ingestion's `ParseProxy`): for a message
/// with `x_pipeline_proxy`,
/// - if its value is a timestamp, it becomes `submission_timestamp` (when the proxy received
///   the submission) and the edge's `submission_timestamp` moves to `proxy_timestamp`;
/// - the last entry of `x_forwarded_for`, the one the proxy added, is dropped;
/// - `x_pipeline_proxy` is removed.
///
/// Other messages pass unchanged. It runs before the client IP is chosen ([`client_ip`]) and
/// before the IP attributes are scrubbed. Never fails.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::ParseProxy;
/// let mut m = Message::new("{}")
///     .with_attribute("x_pipeline_proxy", "1999-12-31T23:59:59.999999Z")
///     .with_attribute("submission_timestamp", "2000-01-01T00:00:00.000000Z")
///     .with_attribute("x_forwarded_for", "4, 3, 2, 1");
/// ParseProxy::apply(&mut m);
/// assert_eq!(m.attribute("submission_timestamp"), Some("1999-12-31T23:59:59.999999Z"));
/// assert_eq!(m.attribute("proxy_timestamp"), Some("2000-01-01T00:00:00.000000Z"));
/// assert_eq!(m.attribute("x_forwarded_for"), Some("4, 3, 2"));
/// assert_eq!(m.attribute("x_pipeline_proxy"), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParseProxy {
    _private: (),
}

impl ParseProxy {
    /// The step.
    pub fn new() -> Self {
        ParseProxy::default()
    }

    /// What the step does to one message.
    pub fn apply(message: &mut Message) {
        let a = &mut message.attributes;
        let Some(xpp) = a.remove(X_PIPELINE_PROXY) else {
            return;
        };
        if chrono::DateTime::parse_from_rfc3339(&xpp).is_ok() {
            match a.insert(attr::SUBMISSION_TIMESTAMP.to_string(), xpp) {
                Some(edge) => a.insert(PROXY_TIMESTAMP.to_string(), edge),
                None => a.remove(PROXY_TIMESTAMP),
            };
        }
        if let Some(xff) = a.get_mut(X_FORWARDED_FOR) {
            xff.truncate(xff.rfind(',').unwrap_or(0));
        }
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for ParseProxy {
    type Output = PCollection<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.map(|mut m: Message| {
            ParseProxy::apply(&mut m);
            m
        })
    }
}

/// The client's IP as gcp-ingestion's geo lookups choose it: with `x_forwarded_for`, the
/// second-to-last entry (the load balancer appends the immediate client and its own address;
/// the first entries are often bogus or internal), or the only one; else `remote_addr`. `None`
/// when neither is set. The text is not checked to be an address.
///
/// ```
/// use std::collections::BTreeMap;
/// use sluice_transforms::decode::client_ip;
/// let a = BTreeMap::from([("x_forwarded_for".to_string(), "_, 202.196.224.0, _".to_string())]);
/// assert_eq!(client_ip(&a), Some("202.196.224.0"));
/// ```
pub fn client_ip(attributes: &BTreeMap<String, String>) -> Option<&str> {
    match attributes.get(X_FORWARDED_FOR) {
        Some(xff) => {
            // Java's `split("\\s*,\\s*")`: whitespace around commas goes, trailing empty
            // entries are dropped
            let mut ips: Vec<&str> = xff.split(',').collect();
            let n = ips.len();
            if n > 1 {
                for (i, ip) in ips.iter_mut().enumerate() {
                    if i > 0 {
                        *ip = ip.trim_start_matches(is_java_space);
                    }
                    if i + 1 < n {
                        *ip = ip.trim_end_matches(is_java_space);
                    }
                }
                while ips.last() == Some(&"") {
                    ips.pop();
                }
            }
            Some(ips.get(ips.len().saturating_sub(2)).copied().unwrap_or(""))
        }
        None => attributes.get(REMOTE_ADDR).map(String::as_str),
    }
}

/// Java's regex `\s`.
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn chooses_like_gcp_ingestion() {
        for (xff, want) in [
            ("1.2.3.4", "1.2.3.4"),
            ("1.1.1.1, 2.2.2.2", "1.1.1.1"),
            ("9.9.9.9 ,1.1.1.1 , 2.2.2.2", "1.1.1.1"),
            ("1.1.1.1, 2.2.2.2, ,", "1.1.1.1"),
            ("", ""),
        ] {
            let a = attrs(&[("x_forwarded_for", xff), ("remote_addr", "7.7.7.7")]);
            assert_eq!(client_ip(&a), Some(want), "{xff}");
        }
        assert_eq!(
            client_ip(&attrs(&[("remote_addr", "7.7.7.7")])),
            Some("7.7.7.7")
        );
        assert_eq!(client_ip(&attrs(&[])), None);
    }
}
