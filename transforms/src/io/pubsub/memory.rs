//! A double of Pub/Sub's delivery semantics, in memory, for tests: topics fan out to their
//! subscriptions; a pulled message is outstanding under its ack id until it is acked
//! (gone), nacked (available again at once, with its delivery attempt counted) or its lease
//! expires ([`MemoryPubsub::expire_leases`]: available again); acks come in any order; an
//! ack of an ack id that is no longer outstanding is ignored, as the service does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use sluice::Message;

use super::PubsubError;

/// A message as the double holds it, with what the service adds on publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The id the double assigned (unique per double).
    pub message_id: String,
    /// The data.
    pub data: Bytes,
    /// The attributes.
    pub attributes: BTreeMap<String, String>,
    /// The publish time (RFC 3339; a fixed date, the sequence number as seconds).
    pub publish_time: String,
}

impl Published {
    /// The data and attributes as a message.
    pub fn message(&self) -> Message {
        Message::new(self.data.clone()).with_attributes(self.attributes.clone())
    }
}

#[derive(Default)]
struct Subscription {
    topic: String,
    /// Deliverable now, with their delivery attempts so far.
    available: VecDeque<(Published, u32)>,
    /// Pulled, not yet acked: ack id -> message, delivery attempt.
    outstanding: BTreeMap<u64, (Published, u32)>,
    acked: Vec<String>,
    nacks: u64,
    max_outstanding_seen: usize,
}

#[derive(Default)]
struct Broker {
    topics: BTreeMap<String, Vec<Published>>,
    subscriptions: BTreeMap<String, Subscription>,
    next_id: u64,
    /// Publishes that fail before succeeding again (fault injection).
    failing_publishes: usize,
}

/// The double: clones share one broker.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::io::pubsub::MemoryPubsub;
///
/// let ps = MemoryPubsub::new();
/// ps.create_topic("projects/p/topics/t");
/// ps.create_subscription("projects/p/subscriptions/s", "projects/p/topics/t");
/// ps.publish("projects/p/topics/t", Message::new("a")).unwrap();
/// ps.publish("projects/p/topics/t", Message::new("b")).unwrap();
/// let pulled = ps.pull("projects/p/subscriptions/s", 10).unwrap();
/// assert_eq!(pulled.len(), 2);
/// ps.ack("projects/p/subscriptions/s", pulled[1].0); // out of order
/// ps.nack("projects/p/subscriptions/s", pulled[0].0); // redelivered at once
/// let again = ps.pull("projects/p/subscriptions/s", 10).unwrap();
/// assert_eq!(again.len(), 1);
/// assert_eq!(again[0].1.data, "a");
/// assert_eq!(again[0].2, 2); // the second delivery attempt
/// ```
#[derive(Clone, Default)]
pub struct MemoryPubsub {
    inner: Arc<Mutex<Broker>>,
}

impl MemoryPubsub {
    /// An empty double.
    pub fn new() -> Self {
        Self::default()
    }

    fn broker(&self) -> std::sync::MutexGuard<'_, Broker> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a topic (no-op if it exists).
    pub fn create_topic(&self, topic: &str) {
        self.broker().topics.entry(topic.to_string()).or_default();
    }

    /// Creates a subscription to `topic`: it receives what is published from now on.
    pub fn create_subscription(&self, subscription: &str, topic: &str) {
        let mut b = self.broker();
        b.topics.entry(topic.to_string()).or_default();
        b.subscriptions
            .entry(subscription.to_string())
            .or_insert_with(|| Subscription {
                topic: topic.to_string(),
                ..Subscription::default()
            });
    }

    /// What a start-up check on the double finds: an error when `name` does not exist.
    pub(super) fn check_exists(
        &self,
        resource: super::Resource,
        name: &str,
    ) -> Result<(), sluice::BoxError> {
        let b = self.broker();
        let exists = match resource {
            super::Resource::Topic => b.topics.contains_key(name),
            super::Resource::Subscription => b.subscriptions.contains_key(name),
        };
        if exists {
            Ok(())
        } else {
            Err(Box::new(PubsubError::Missing {
                resource,
                name: name.to_string(),
            }))
        }
    }

    /// Makes the next `n` publishes fail (an unavailable service).
    pub fn fail_publishes(&self, n: usize) {
        self.broker().failing_publishes = n;
    }

    /// Publishes a message; returns its id.
    pub fn publish(&self, topic: &str, message: Message) -> Result<String, PubsubError> {
        let mut b = self.broker();
        if b.failing_publishes > 0 {
            b.failing_publishes -= 1;
            return Err(PubsubError::Publish {
                topic: topic.to_string(),
                message: "injected failure: the service is unavailable".to_string(),
            });
        }
        if !b.topics.contains_key(topic) {
            return Err(PubsubError::NotFound {
                kind: "topic",
                name: topic.to_string(),
            });
        }
        b.next_id += 1;
        let id = b.next_id;
        let published = Published {
            message_id: id.to_string(),
            data: message.payload,
            attributes: message.attributes,
            publish_time: format!(
                "2024-01-01T00:00:{:02}.{:09}Z",
                id / 1_000_000_000 % 60,
                id % 1_000_000_000
            ),
        };
        for s in b.subscriptions.values_mut().filter(|s| s.topic == topic) {
            s.available.push_back((published.clone(), 0));
        }
        b.topics
            .get_mut(topic)
            .map(|log| log.push(published))
            .ok_or_else(|| PubsubError::NotFound {
                kind: "topic",
                name: topic.to_string(),
            })?;
        Ok(id.to_string())
    }

    /// Everything published to `topic`, in order.
    pub fn published(&self, topic: &str) -> Vec<Published> {
        self.broker().topics.get(topic).cloned().unwrap_or_default()
    }

    /// Pulls at most `max` messages: `(ack id, message, delivery attempt)`.
    pub fn pull(
        &self,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<(u64, Published, u32)>, PubsubError> {
        let mut b = self.broker();
        let first_id = b.next_id;
        let s = b
            .subscriptions
            .get_mut(subscription)
            .ok_or_else(|| PubsubError::NotFound {
                kind: "subscription",
                name: subscription.to_string(),
            })?;
        let mut out = Vec::new();
        let mut ack_id = first_id;
        while out.len() < max {
            let Some((m, attempts)) = s.available.pop_front() else {
                break;
            };
            ack_id += 1;
            s.outstanding.insert(ack_id, (m.clone(), attempts + 1));
            out.push((ack_id, m, attempts + 1));
        }
        s.max_outstanding_seen = s.max_outstanding_seen.max(s.outstanding.len());
        b.next_id = ack_id;
        Ok(out)
    }

    /// Acknowledges: the message is not delivered again. Unknown ack ids are ignored.
    pub fn ack(&self, subscription: &str, ack_id: u64) {
        if let Some(s) = self.broker().subscriptions.get_mut(subscription) {
            if let Some((m, _)) = s.outstanding.remove(&ack_id) {
                s.acked.push(m.message_id);
            }
        }
    }

    /// Negative acknowledgement: delivered again at once. Unknown ack ids are ignored.
    pub fn nack(&self, subscription: &str, ack_id: u64) {
        if let Some(s) = self.broker().subscriptions.get_mut(subscription) {
            if let Some(entry) = s.outstanding.remove(&ack_id) {
                s.nacks += 1;
                s.available.push_front(entry);
            }
        }
    }

    /// Every outstanding lease of `subscription` expires: its messages are delivered again
    /// (what happens when a subscriber stops extending leases, e.g. a crashed process). Their
    /// old ack ids no longer ack anything.
    pub fn expire_leases(&self, subscription: &str) {
        if let Some(s) = self.broker().subscriptions.get_mut(subscription) {
            let expired = std::mem::take(&mut s.outstanding);
            for (_, entry) in expired.into_iter().rev() {
                s.available.push_front(entry);
            }
        }
    }

    /// Messages of `subscription` not yet acked (available or outstanding).
    pub fn unacked(&self, subscription: &str) -> usize {
        self.broker()
            .subscriptions
            .get(subscription)
            .map_or(0, |s| s.available.len() + s.outstanding.len())
    }

    /// Messages of `subscription` pulled and neither acked nor nacked.
    pub fn outstanding(&self, subscription: &str) -> usize {
        self.broker()
            .subscriptions
            .get(subscription)
            .map_or(0, |s| s.outstanding.len())
    }

    /// The most messages of `subscription` that were ever outstanding at once.
    pub fn max_outstanding_seen(&self, subscription: &str) -> usize {
        self.broker()
            .subscriptions
            .get(subscription)
            .map_or(0, |s| s.max_outstanding_seen)
    }

    /// The message ids acked on `subscription`, in order (an id twice: acked after a
    /// redelivery too).
    pub fn acked(&self, subscription: &str) -> Vec<String> {
        self.broker()
            .subscriptions
            .get(subscription)
            .map_or_else(Vec::new, |s| s.acked.clone())
    }

    /// How many nacks `subscription` received.
    pub fn nacks(&self, subscription: &str) -> u64 {
        self.broker()
            .subscriptions
            .get(subscription)
            .map_or(0, |s| s.nacks)
    }
}
