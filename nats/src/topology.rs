//! The NATS topology, declared once: every stream, durable consumer, KV bucket and object store
//! Herald uses, and the subject of every hop.
//!
//! Streams are file-backed with limits retention and a max age, so operators can replay a range.
//! Each stage reads one stream through one durable pull consumer shared by all its replicas; the
//! deliver stream has one consumer per channel, so a dead provider stalls only its own channel.

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, object_store, stream};
use herald_schemas::Channel;
use herald_stage::Hop;
use serde::{Deserialize, Serialize};

/// The knobs of the topology. Changing one and running `herald provision` updates the servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Prefix of every subject (`<prefix>.requests.<tenant>` …), stream (`<PREFIX>_REQUESTS` …)
    /// and bucket (`<prefix>-dedupe` …).
    pub prefix: String,
    /// How long streams keep messages, for replay and analysis.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The streams' publish-dedupe window for `Nats-Msg-Id`. Must exceed the longest gap between
    /// a crashed publish and its retry (ack wait plus backoff).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Stream and bucket replicas: 1 for one server, 3 for a cluster.
    pub replicas: usize,
    /// How long a stage may hold a message before the server redelivers it (the runner extends
    /// it with progress acks while a message is being worked on).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries of one message before the runner dead-letters it.
    pub max_deliveries: u32,
    /// Messages a consumer may have out unacknowledged across all replicas of its stage.
    pub max_ack_pending: i64,
    /// How long a producer's idempotency key is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How long a delivery's state (its dedupe claim, whether it was sent) is remembered. At
    /// least `max_age`, so a replay of anything still in the streams is recognized.
    #[serde(with = "humantime_serde")]
    pub dedupe_ttl: Duration,
    /// Largest message a stream stores, in bytes (headers included). An output larger than this
    /// fails with `payload_too_large` instead of being published. The server's own
    /// `max_payload` (1 MiB by default) caps it.
    pub max_message_size: usize,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            prefix: "herald".into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(5 * 60),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_ack_pending: 20_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            dedupe_ttl: Duration::from_secs(7 * 24 * 3600),
            max_message_size: 1024 * 1024,
        }
    }
}

/// A consumer the runner can drive: which stream, which durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRef {
    pub stream: String,
    pub durable: String,
}

/// The topology derived from a [`TopologyConfig`].
#[derive(Debug, Clone)]
pub struct Topology {
    pub config: TopologyConfig,
    stream_prefix: String,
}

/// Bytes kept free for headers (`Nats-Msg-Id` and the dead-letter headers) under the streams'
/// message size limit.
const HEADER_ROOM: usize = 1024;

/// Names of the streams, by role.
pub mod role {
    pub const REQUESTS: &str = "REQUESTS";
    pub const ENRICH: &str = "ENRICH";
    pub const FANOUT: &str = "FANOUT";
    pub const RENDER: &str = "RENDER";
    pub const DEDUPE: &str = "DEDUPE";
    pub const THROTTLE: &str = "THROTTLE";
    pub const DELIVER: &str = "DELIVER";
    pub const TRACK: &str = "TRACK";
    pub const EVENTS: &str = "EVENTS";
    pub const DLQ: &str = "DLQ";
}

/// The error for a prefix that cannot be a subject token.
#[derive(Debug, thiserror::Error)]
#[error("topology prefix `{0}` is not usable: use letters, digits, `_` or `-` (e.g. `herald`)")]
pub struct BadPrefix(String);

impl Topology {
    pub fn new(config: TopologyConfig) -> Result<Self, BadPrefix> {
        if !is_token(&config.prefix) {
            return Err(BadPrefix(config.prefix));
        }
        let stream_prefix = config.prefix.to_ascii_uppercase().replace('-', "_");
        Ok(Topology { config, stream_prefix })
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// The largest payload a stage may publish: the streams' limit less room for headers.
    pub fn max_payload(&self) -> usize {
        self.config.max_message_size.saturating_sub(HEADER_ROOM)
    }

    /// The stream name of a role, e.g. `HERALD_REQUESTS`.
    pub fn stream_name(&self, role: &str) -> String {
        format!("{}_{role}", self.stream_prefix)
    }

    /// The subject a producer publishes a request on.
    pub fn requests_subject(&self, tenant: &str) -> String {
        format!("{}.requests.{tenant}", self.config.prefix)
    }

    /// The subject of a tracking event.
    pub fn events_subject(&self, tenant: &str, status: &str) -> String {
        format!("{}.events.{tenant}.{status}", self.config.prefix)
    }

    /// The (core NATS) subject on which directory changes are announced.
    pub fn directory_changes_subject(&self, tenant: &str) -> String {
        format!("{}.directory.changed.{tenant}", self.config.prefix)
    }

    /// The subject a stage's dead letters go to.
    pub fn dlq_subject(&self, stage: &str, tenant: &str) -> String {
        format!("{}.dlq.{stage}.{tenant}", self.config.prefix)
    }

    /// The subject of an output to `hop`.
    pub fn hop_subject(&self, hop: Hop, tenant: &str, suffix: Option<&str>) -> String {
        let p = &self.config.prefix;
        match hop {
            Hop::Enrich => format!("{p}.stage.enrich.{tenant}"),
            Hop::Fanout => format!("{p}.stage.fanout.{tenant}"),
            Hop::Render => format!("{p}.stage.render.{tenant}"),
            Hop::Dedupe => format!("{p}.stage.dedupe.{tenant}"),
            Hop::Throttle => format!("{p}.stage.throttle.{tenant}"),
            Hop::Deliver(channel) => format!("{p}.stage.deliver.{channel}.{tenant}"),
            Hop::Track => format!("{p}.stage.track.{tenant}"),
            Hop::Events => self.events_subject(tenant, suffix.unwrap_or("unknown")),
        }
    }

    /// Where the tenant sits in the subjects of a stream, counted in tokens from the end.
    pub fn tenant_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        let rest = subject.strip_prefix(&self.config.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        match tokens.next()? {
            "requests" => tokens.next(),
            "stage" => match tokens.next()? {
                "deliver" => tokens.nth(1),
                _ => tokens.next(),
            },
            "events" | "inbox" => tokens.next(),
            "dlq" => tokens.nth(1),
            _ => None,
        }
    }

    /// The consumer a stage reads. `channel` picks the deliver consumer of one channel.
    pub fn consumer(&self, stage: &str, channel: Option<Channel>) -> Option<ConsumerRef> {
        let role = match stage {
            "ingest" => role::REQUESTS,
            "enrich" => role::ENRICH,
            "fanout" => role::FANOUT,
            "render" => role::RENDER,
            "dedupe" => role::DEDUPE,
            "throttle" => role::THROTTLE,
            "deliver" => role::DELIVER,
            "track" => role::TRACK,
            _ => return None,
        };
        let durable = match (stage, channel) {
            ("deliver", Some(channel)) => format!("deliver-{channel}"),
            ("deliver", None) => return None,
            _ => stage.to_owned(),
        };
        Some(ConsumerRef { stream: self.stream_name(role), durable })
    }

    /// Every stream's configuration.
    pub fn streams(&self) -> Vec<stream::Config> {
        let p = &self.config.prefix;
        let spec = |role: &str, subjects: Vec<String>, description: &str| stream::Config {
            name: self.stream_name(role),
            subjects,
            description: Some(description.to_owned()),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.config.max_age,
            duplicate_window: self.config.duplicate_window,
            num_replicas: self.config.replicas,
            max_message_size: i32::try_from(self.config.max_message_size).unwrap_or(i32::MAX),
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        vec![
            spec(role::REQUESTS, vec![format!("{p}.requests.*")], "Producers' notification requests, one subject per tenant"),
            spec(role::ENRICH, vec![format!("{p}.stage.enrich.*")], "Accepted notifications waiting for recipient resolution"),
            spec(role::FANOUT, vec![format!("{p}.stage.fanout.*")], "Pages of group fan-outs waiting to be expanded"),
            spec(role::RENDER, vec![format!("{p}.stage.render.*")], "Deliveries waiting for their template to be rendered"),
            spec(role::DEDUPE, vec![format!("{p}.stage.dedupe.*")], "Rendered deliveries waiting for their dedupe claim"),
            spec(role::THROTTLE, vec![format!("{p}.stage.throttle.*")], "Deliveries waiting for caps, quiet hours and priorities"),
            spec(role::DELIVER, vec![format!("{p}.stage.deliver.*.*")], "Deliveries waiting for their channel's provider"),
            spec(role::TRACK, vec![format!("{p}.stage.track.*")], "Stage events on their way to the tracking stream"),
            spec(role::EVENTS, vec![format!("{p}.events.*.*")], "The tracking stream: every state change of every notification"),
            spec(role::DLQ, vec![format!("{p}.dlq.*.*")], "Dead letters: messages a stage gave up on, with the reason in headers"),
        ]
    }

    /// Every durable consumer, with its stream.
    pub fn consumers(&self) -> Vec<(String, consumer::pull::Config)> {
        let p = &self.config.prefix;
        let durable = |name: String, filter: String| consumer::pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name),
            description: Some("Herald stage consumer".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: self.config.ack_wait,
            // One delivery more than the runner's limit: a message that comes back after its last
            // attempt timed out is dead-lettered by the runner on that extra delivery, so nothing
            // is ever stuck silently at the server's limit.
            max_deliver: i64::from(self.config.max_deliveries) + 1,
            max_ack_pending: self.config.max_ack_pending,
            filter_subject: filter,
            num_replicas: self.config.replicas,
            ..Default::default()
        };
        let mut consumers = vec![
            (self.stream_name(role::REQUESTS), durable("ingest".into(), format!("{p}.requests.*"))),
            (self.stream_name(role::ENRICH), durable("enrich".into(), format!("{p}.stage.enrich.*"))),
            (self.stream_name(role::FANOUT), durable("fanout".into(), format!("{p}.stage.fanout.*"))),
            (self.stream_name(role::RENDER), durable("render".into(), format!("{p}.stage.render.*"))),
            (self.stream_name(role::DEDUPE), durable("dedupe".into(), format!("{p}.stage.dedupe.*"))),
            (self.stream_name(role::THROTTLE), durable("throttle".into(), format!("{p}.stage.throttle.*"))),
            (self.stream_name(role::TRACK), durable("track".into(), format!("{p}.stage.track.*"))),
        ];
        for channel in Channel::ALL {
            consumers
                .push((self.stream_name(role::DELIVER), durable(format!("deliver-{channel}"), format!("{p}.stage.deliver.{channel}.*"))));
        }
        consumers
    }

    /// The KV bucket of producers' idempotency keys.
    pub fn idempotency_bucket(&self) -> String {
        format!("{}-idempotency", self.config.prefix)
    }

    /// The KV bucket of delivery claims and sent markers.
    pub fn dedupe_bucket(&self) -> String {
        format!("{}-dedupe", self.config.prefix)
    }

    /// The object store of large attachments.
    pub fn attachments_bucket(&self) -> String {
        format!("{}-attachments", self.config.prefix)
    }

    pub fn buckets(&self) -> Vec<kv::Config> {
        let bucket = |name: String, description: &str, max_age: Duration| kv::Config {
            bucket: name,
            description: description.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        };
        vec![
            bucket(self.idempotency_bucket(), "Producers' idempotency keys", self.config.idempotency_ttl),
            bucket(self.dedupe_bucket(), "Delivery claims and sent markers", self.config.dedupe_ttl),
        ]
    }

    pub fn object_stores(&self) -> Vec<object_store::Config> {
        vec![object_store::Config {
            bucket: self.attachments_bucket(),
            description: Some("Large attachments, referenced from notifications".into()),
            max_age: self.config.max_age,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        }]
    }
}

/// Whether `s` is a single NATS subject token made of safe characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::new(TopologyConfig::default()).unwrap()
    }

    #[test]
    fn tenant_is_found_in_every_subject_kind() {
        let t = topology();
        let cases = [
            (t.requests_subject("acme"), Some("acme")),
            (t.hop_subject(Hop::Enrich, "acme", None), Some("acme")),
            (t.hop_subject(Hop::Deliver(Channel::WebPush), "acme", None), Some("acme")),
            (t.hop_subject(Hop::Track, "acme", None), Some("acme")),
            (t.events_subject("acme", "sent"), Some("acme")),
            (t.dlq_subject("render", "acme"), Some("acme")),
            ("other.requests.acme".to_owned(), None),
        ];
        for (subject, tenant) in cases {
            assert_eq!(t.tenant_of(&subject), tenant, "{subject}");
        }
    }

    #[test]
    fn every_hop_subject_lands_in_exactly_one_stream() {
        let t = topology();
        let streams = t.streams();
        let mut hops: Vec<Hop> = vec![Hop::Enrich, Hop::Fanout, Hop::Render, Hop::Dedupe, Hop::Throttle, Hop::Track, Hop::Events];
        hops.extend(Channel::ALL.map(Hop::Deliver));
        for hop in hops {
            let subject = t.hop_subject(hop, "acme", Some("sent"));
            let matching = streams.iter().filter(|s| s.subjects.iter().any(|f| matches(f, &subject))).count();
            assert_eq!(matching, 1, "{subject}");
        }
    }

    #[test]
    fn every_consumer_filter_belongs_to_its_stream() {
        let t = topology();
        let streams = t.streams();
        for (stream, consumer) in t.consumers() {
            let config = streams.iter().find(|s| s.name == stream).unwrap();
            assert!(config.subjects.iter().any(|f| covers(f, &consumer.filter_subject)), "{stream}: {}", consumer.filter_subject);
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for prefix in ["", "a.b", "a b", "a>"] {
            assert!(Topology::new(TopologyConfig { prefix: prefix.into(), ..TopologyConfig::default() }).is_err());
        }
    }

    fn matches(filter: &str, subject: &str) -> bool {
        let f: Vec<_> = filter.split('.').collect();
        let s: Vec<_> = subject.split('.').collect();
        f.len() == s.len() && f.iter().zip(&s).all(|(f, s)| *f == "*" || f == s)
    }

    fn covers(filter: &str, narrower: &str) -> bool {
        let f: Vec<_> = filter.split('.').collect();
        let n: Vec<_> = narrower.split('.').collect();
        f.len() == n.len() && f.iter().zip(&n).all(|(f, n)| *f == "*" || f == n)
    }
}
