//! The `republisher` job (gcp-ingestion's third job): decoded messages in, fanned out by
//! configured routes. Each route is a filter on attributes and a sink; a message goes to
//! every route it matches (a copy each), and to `[sink]` when it matches none, so nothing is
//! dropped unseen. A route's refusals are dead letters (`error_type` = `route/<name>`).

use sluice::Message;

use crate::config::RouteConfig;

/// A route's filter: every condition set must hold (an empty list is no condition).
///
/// ```
/// use sluice::Message;
/// use sluice_pipelines::jobs::RouteFilter;
/// let f = RouteFilter {
///     doctypes: vec!["main".into(), "telemetry/event".into()],
///     sample_below: Some(10),
///     ..RouteFilter::default()
/// };
/// let m = |ns: &str, dt: &str, sample: &str| Message::new("{}")
///     .with_attribute("document_namespace", ns)
///     .with_attribute("document_type", dt)
///     .with_attribute("sample_id", sample);
/// assert!(f.matches(&m("telemetry", "main", "3")));
/// assert!(f.matches(&m("telemetry", "event", "9")));
/// assert!(!f.matches(&m("other", "event", "9"))); // `telemetry/event` names the namespace
/// assert!(!f.matches(&m("telemetry", "main", "10"))); // sample_id < 10 only
/// assert!(!f.matches(&m("telemetry", "crash", "1")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// `document_namespace` is one of these.
    pub namespaces: Vec<String>,
    /// `document_type` is one of these; an entry `namespace/doctype` also names the namespace.
    pub doctypes: Vec<String>,
    /// `normalized_channel` (or, when absent, `app_update_channel`) is one of these.
    pub channels: Vec<String>,
    /// `sample_id` (an integer attribute, 0 to 99) is below this: a sampled stream.
    pub sample_below: Option<u32>,
    /// Only messages with a non-empty `x_debug_id` (the debug stream).
    pub debug: bool,
}

impl RouteFilter {
    /// Whether `m` takes this route.
    pub fn matches(&self, m: &Message) -> bool {
        let namespace = m.attribute("document_namespace").unwrap_or("");
        let doctype = m.attribute("document_type").unwrap_or("");
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            return false;
        }
        if !self.doctypes.is_empty()
            && !self.doctypes.iter().any(|d| match d.split_once('/') {
                Some((ns, dt)) => ns == namespace && dt == doctype,
                None => d == doctype,
            })
        {
            return false;
        }
        if !self.channels.is_empty() {
            let channel = m
                .attribute("normalized_channel")
                .or_else(|| m.attribute("app_update_channel"))
                .unwrap_or("");
            if !self.channels.iter().any(|c| c == channel) {
                return false;
            }
        }
        if let Some(below) = self.sample_below {
            match m.attribute("sample_id").and_then(|s| s.parse::<u32>().ok()) {
                Some(id) if id < below => {}
                _ => return false,
            }
        }
        if self.debug && m.attribute("x_debug_id").is_none_or(str::is_empty) {
            return false;
        }
        true
    }
}

impl From<&RouteConfig> for RouteFilter {
    fn from(r: &RouteConfig) -> Self {
        RouteFilter {
            namespaces: r.namespaces.clone(),
            doctypes: r.doctypes.clone(),
            channels: r.channels.clone(),
            sample_below: r.sample_below,
            debug: r.debug,
        }
    }
}

/// The indices of the routes `m` takes, or `[unrouted]` when it takes none.
pub(crate) fn route_indices(filters: &[RouteFilter], m: &Message, unrouted: usize) -> Vec<usize> {
    let hits: Vec<usize> = filters
        .iter()
        .enumerate()
        .filter(|(_, f)| f.matches(m))
        .map(|(i, _)| i)
        .collect();
    if hits.is_empty() {
        vec![unrouted]
    } else {
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_takes_every_route_it_matches_or_the_unrouted_sink() {
        let filters = vec![
            RouteFilter {
                doctypes: vec!["main".into()],
                ..RouteFilter::default()
            },
            RouteFilter {
                sample_below: Some(10),
                ..RouteFilter::default()
            },
            RouteFilter {
                debug: true,
                channels: vec!["nightly".into()],
                ..RouteFilter::default()
            },
        ];
        let m = Message::new("{}")
            .with_attribute("document_type", "main")
            .with_attribute("sample_id", "4")
            .with_attribute("x_debug_id", "me")
            .with_attribute("app_update_channel", "nightly");
        assert_eq!(route_indices(&filters, &m, 3), vec![0, 1, 2]);
        let m = Message::new("{}")
            .with_attribute("document_type", "crash")
            .with_attribute("sample_id", "x")
            .with_attribute("x_debug_id", "");
        assert_eq!(route_indices(&filters, &m, 3), vec![3]);
        let m = Message::new("{}")
            .with_attribute("x_debug_id", "me")
            .with_attribute("normalized_channel", "release")
            .with_attribute("app_update_channel", "nightly");
        // the normalized channel wins over the raw one
        assert_eq!(route_indices(&filters, &m, 3), vec![3]);
    }
}
