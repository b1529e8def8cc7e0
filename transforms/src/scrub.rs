//! Removing attributes that must not be written: client IPs and whatever else a job names.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice::{DeadLetter, Message, PCollection, PTransform};

/// The attributes the edge sets that hold a client's IP address (gcp-ingestion removes them
/// before anything is written).
pub const CLIENT_IP_ATTRIBUTES: [&str; 2] = ["remote_addr", "x_forwarded_for"];

/// Removes named attributes from every message: [`CLIENT_IP_ATTRIBUTES`] unless told to keep
/// them, and any others given. A map that cannot fail; messages without those attributes pass
/// unchanged.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::scrub::ScrubAttributes;
/// let input = Message::new("{}")
///     .with_attribute("remote_addr", "192.0.2.1")
///     .with_attribute("x_forwarded_for", "198.51.100.7, 192.0.2.1")
///     .with_attribute("x_debug_id", "dbg")
///     .with_attribute("document_id", "id");
/// let scrub = ScrubAttributes::client_ip().with_attributes(["x_debug_id"]);
/// let out = sluice::harness::run(vec![input], move |input, _dead| {
///     input.apply("scrub", scrub.clone())
/// });
/// assert_eq!(out.output[0], Message::new("{}").with_attribute("document_id", "id"));
/// ```
#[derive(Debug, Clone)]
pub struct ScrubAttributes {
    names: Arc<[String]>,
}

impl ScrubAttributes {
    /// Removes the client IP attributes ([`CLIENT_IP_ATTRIBUTES`]).
    pub fn client_ip() -> Self {
        ScrubAttributes::none().with_attributes(CLIENT_IP_ATTRIBUTES)
    }

    /// Removes nothing (yet): start here to keep the client IPs.
    pub fn none() -> Self {
        ScrubAttributes {
            names: Arc::from(Vec::new()),
        }
    }

    /// Also removes these attributes.
    pub fn with_attributes<I: IntoIterator<Item = S>, S: Into<String>>(self, names: I) -> Self {
        let mut all: Vec<String> = self.names.to_vec();
        for name in names {
            let name = name.into();
            if !all.contains(&name) {
                all.push(name);
            }
        }
        ScrubAttributes {
            names: Arc::from(all),
        }
    }

    /// The attributes removed.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether nothing is removed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Removes the attributes from one map.
    pub fn scrub(&self, attributes: &mut BTreeMap<String, String>) {
        for name in self.names.iter() {
            attributes.remove(name);
        }
    }

    /// Removes the attributes from a dead letter's original message (the only attributes a
    /// dead letter has besides its error attributes).
    pub fn scrub_dead_letter(&self, mut dead_letter: DeadLetter) -> DeadLetter {
        self.scrub(&mut dead_letter.original.attributes);
        dead_letter
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for ScrubAttributes {
    type Output = PCollection<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        if self.is_empty() {
            return input;
        }
        input.map(move |mut m: Message| {
            self.scrub(&mut m.attributes);
            m
        })
    }
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
    fn removes_exactly_the_named_attributes() {
        let mut a = attrs(&[
            ("remote_addr", "192.0.2.1"),
            ("x_forwarded_for", "192.0.2.1"),
            ("x_debug_id", "d"),
            ("geo_country", "FR"),
        ]);
        ScrubAttributes::client_ip().scrub(&mut a);
        assert_eq!(a, attrs(&[("x_debug_id", "d"), ("geo_country", "FR")]));
        ScrubAttributes::none()
            .with_attributes(["geo_country"])
            .scrub(&mut a);
        assert_eq!(a, attrs(&[("x_debug_id", "d")]));
    }

    #[test]
    fn names_are_kept_once() {
        let s = ScrubAttributes::client_ip().with_attributes(["remote_addr", "a", "a"]);
        assert_eq!(s.names(), ["remote_addr", "x_forwarded_for", "a"]);
        assert!(ScrubAttributes::none().is_empty());
    }

    #[test]
    fn dead_letters_lose_them_from_the_original() {
        let m = Message::new("x").with_attribute("remote_addr", "192.0.2.1");
        let d = DeadLetter::new(m, "ParseUri", sluice::Failure::new("bad"));
        let d = ScrubAttributes::client_ip().scrub_dead_letter(d);
        assert!(d.original.attributes.is_empty());
        assert_eq!(d.to_message().attribute("remote_addr"), None);
    }
}
