//! The NATS topology, declared once: every stream, durable consumer and KV bucket Herald uses,
//! and the subject of every hop. Attachments are not here: they live in the attachment store
//! (OpenDAL: a directory or an S3 bucket), so no file ever rides a NATS message.
//!
//! Streams are file-backed with limits retention and a max age, so operators can replay a range.
//! Each stage reads one stream through durable pull consumers shared by all its replicas:
//! one per priority lane (`critical`, `high`, `normal`, `low`), so urgent work never queues
//! behind a backlog of less urgent work, and for deliver one per route (provider queue: `apns`,
//! `fcm`, `web_push`, `sms` …) and lane, so a dead provider stalls only its own route. Track has
//! a single lane: events are not deliveries.
//!
//! Subjects: `<p>.requests.<tenant>[.<lane>]`, `<p>.stage.<stage>.<lane>.<tenant>`,
//! `<p>.stage.deliver.<route>.<lane>.<tenant>`, `<p>.stage.track.<tenant>`,
//! `<p>.cancel.<tenant>`, `<p>.events.<tenant>.<status>`, `<p>.dlq.<stage>.<tenant>`,
//! `<p>.alerts.<kind>`. Scheduled
//! copies (a `send_at`, a deferral) wait in the enrich and throttle streams on
//! `<p>.schedule.<stage>.<tenant>.<notification>.<key>`, which no consumer reads: the server
//! publishes them to their stage's subject when they are due (`Nats-Schedule`).

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};
use herald_schemas::{Priority, Route};
use herald_stage::Hop;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// The same for the deliver consumers: the ceiling of every provider's own `retry.attempts`
    /// (provider calls are retried over about an hour, not seconds).
    pub deliver_max_deliveries: u32,
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
    /// How long users' in-app inbox messages are kept (`<PREFIX>_INBOX`).
    #[serde(with = "humantime_serde")]
    pub inbox_retention: Duration,
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
            deliver_max_deliveries: 12,
            max_ack_pending: 20_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            dedupe_ttl: Duration::from_secs(7 * 24 * 3600),
            max_message_size: 1024 * 1024,
            inbox_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// A consumer the runner can drive: which stream, which durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRef {
    pub stream: String,
    pub durable: String,
}

/// A durable consumer and what it is for.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stage reading it (`log` for the notification log's writer).
    pub stage: String,
    /// Deliver's route.
    pub route: Option<Route>,
    /// The priority lane (`normal` for the stages without lanes).
    pub lane: Priority,
    pub stream: String,
    pub config: consumer::pull::Config,
}

impl ConsumerSpec {
    pub fn durable(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    /// The subjects it reads.
    pub fn filters(&self) -> Vec<&str> {
        if self.config.filter_subjects.is_empty() {
            vec![self.config.filter_subject.as_str()]
        } else {
            self.config.filter_subjects.iter().map(String::as_str).collect()
        }
    }
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
    pub const CANCEL: &str = "CANCEL";
    pub const ALERTS: &str = "ALERTS";
    pub const INBOX: &str = "INBOX";
    pub const RECEIPTS: &str = "RECEIPTS";
}

/// Stages whose input is split into priority lanes.
const LANED: [&str; 7] = ["ingest", "enrich", "fanout", "render", "dedupe", "throttle", "deliver"];

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

    /// The subject a producer publishes a request on: the `normal` lane of ingest.
    pub fn requests_subject(&self, tenant: &str) -> String {
        format!("{}.requests.{tenant}", self.config.prefix)
    }

    /// The subject of ingest's `lane` (`<p>.requests.<tenant>.<lane>`), for producers whose
    /// urgent requests must not queue behind their bulk.
    pub fn requests_lane_subject(&self, tenant: &str, lane: Priority) -> String {
        format!("{}.requests.{tenant}.{lane}", self.config.prefix)
    }

    /// The subject a producer publishes a cancel on.
    pub fn cancel_subject(&self, tenant: &str) -> String {
        format!("{}.cancel.{tenant}", self.config.prefix)
    }

    /// Where a copy of an output to `hop` waits until it is due; `None` when the hop's stream
    /// takes no scheduled messages.
    pub fn schedule_subject(&self, hop: Hop, tenant: &str, notification: Uuid, key: Uuid) -> Option<String> {
        let stage = match hop {
            Hop::Enrich => "enrich",
            Hop::Throttle => "throttle",
            _ => return None,
        };
        Some(format!("{}.schedule.{stage}.{tenant}.{notification}.{key}", self.config.prefix))
    }

    /// Every (stream, subject filter) holding scheduled copies of `notification`.
    pub fn schedule_filters(&self, tenant: &str, notification: Uuid) -> Vec<(String, String)> {
        let p = &self.config.prefix;
        [(role::ENRICH, "enrich"), (role::THROTTLE, "throttle")]
            .into_iter()
            .map(|(role, stage)| (self.stream_name(role), format!("{p}.schedule.{stage}.{tenant}.{notification}.>")))
            .collect()
    }

    /// The subject a provider's verified receipt is published on (`<p>.receipts.<tenant>.<provider>`).
    pub fn receipts_subject(&self, tenant: &str, provider: &str) -> String {
        format!("{}.receipts.{tenant}.{provider}", self.config.prefix)
    }

    /// The subject of a tracking event.
    pub fn events_subject(&self, tenant: &str, status: &str) -> String {
        format!("{}.events.{tenant}.{status}", self.config.prefix)
    }

    /// The (core NATS) subject on which directory changes are announced.
    /// The subject of an operators' alert of `kind` (e.g. `breaker_opened`).
    pub fn alerts_subject(&self, kind: &str) -> String {
        format!("{}.alerts.{kind}", self.config.prefix)
    }

    pub fn directory_changes_subject(&self, tenant: &str) -> String {
        format!("{}.directory.changed.{tenant}", self.config.prefix)
    }

    /// The subject a stage's dead letters go to.
    pub fn dlq_subject(&self, stage: &str, tenant: &str) -> String {
        format!("{}.dlq.{stage}.{tenant}", self.config.prefix)
    }

    /// The subject of an output to `hop`, in the `normal` lane where the hop has lanes.
    pub fn hop_subject(&self, hop: Hop, tenant: &str, suffix: Option<&str>) -> String {
        self.lane_subject(hop, Some(Priority::Normal), tenant, suffix)
    }

    /// The subject of an output to `hop` in `lane` (`None`: the `normal` lane).
    pub fn lane_subject(&self, hop: Hop, lane: Option<Priority>, tenant: &str, suffix: Option<&str>) -> String {
        let p = &self.config.prefix;
        let lane = lane.unwrap_or_default();
        match hop {
            Hop::Enrich => format!("{p}.stage.enrich.{lane}.{tenant}"),
            Hop::Fanout => format!("{p}.stage.fanout.{lane}.{tenant}"),
            Hop::Render => format!("{p}.stage.render.{lane}.{tenant}"),
            Hop::Dedupe => format!("{p}.stage.dedupe.{lane}.{tenant}"),
            Hop::Throttle => format!("{p}.stage.throttle.{lane}.{tenant}"),
            Hop::Deliver(route) => format!("{p}.stage.deliver.{route}.{lane}.{tenant}"),
            Hop::Track => format!("{p}.stage.track.{tenant}"),
            Hop::Events => self.events_subject(tenant, suffix.unwrap_or("unknown")),
        }
    }

    /// The tenant named by a subject of any Herald stream.
    pub fn tenant_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        let rest = subject.strip_prefix(&self.config.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        match tokens.next()? {
            "requests" | "cancel" => tokens.next(),
            "stage" => match tokens.next()? {
                "deliver" => tokens.nth(2),
                "track" => tokens.next(),
                _ => tokens.nth(1),
            },
            "events" | "inbox" | "receipts" => tokens.next(),
            "dlq" => tokens.nth(1),
            _ => None,
        }
    }

    /// The `normal`-lane consumer of a stage (its only one for `track` and `cancel`).
    /// `route` picks the deliver consumer of one route.
    pub fn consumer(&self, stage: &str, route: Option<Route>) -> Option<ConsumerRef> {
        self.lane_consumer(stage, route, Priority::Normal)
    }

    /// The consumer of a stage's `lane`. The `normal` lane's consumer is named after the stage
    /// (`enrich`, `deliver-apns`), the others get the lane appended (`enrich-critical`).
    pub fn lane_consumer(&self, stage: &str, route: Option<Route>, lane: Priority) -> Option<ConsumerRef> {
        let role = match stage {
            "ingest" => role::REQUESTS,
            "enrich" => role::ENRICH,
            "fanout" => role::FANOUT,
            "render" => role::RENDER,
            "dedupe" => role::DEDUPE,
            "throttle" => role::THROTTLE,
            "deliver" => role::DELIVER,
            "track" => role::TRACK,
            "cancel" => role::CANCEL,
            "receipts" => role::RECEIPTS,
            "log" => role::EVENTS,
            _ => return None,
        };
        let base = match (stage, route) {
            ("deliver", Some(route)) => format!("deliver-{route}"),
            ("deliver", None) => return None,
            _ => stage.to_owned(),
        };
        let durable = if lane == Priority::Normal || !LANED.contains(&stage) { base } else { format!("{base}-{lane}") };
        Some(ConsumerRef { stream: self.stream_name(role), durable })
    }

    /// Whether a stage's input is split into priority lanes (all but track, cancel and receipts).
    pub fn is_laned(&self, stage: &str) -> bool {
        LANED.contains(&stage)
    }

    /// Every consumer of a stage: one per lane, or its only one.
    pub fn stage_consumers(&self, stage: &str, route: Option<Route>) -> Vec<ConsumerRef> {
        if LANED.contains(&stage) {
            Priority::ALL.iter().filter_map(|&lane| self.lane_consumer(stage, route, lane)).collect()
        } else {
            self.consumer(stage, route).into_iter().collect()
        }
    }

    /// Every stream's configuration.
    pub fn streams(&self) -> Vec<stream::Config> {
        let p = &self.config.prefix;
        let lanes = |stage: &str| -> Vec<String> { vec![format!("{p}.stage.{stage}.*.*")] };
        let scheduled = |stage: &str| -> Vec<String> { vec![format!("{p}.stage.{stage}.*.*"), format!("{p}.schedule.{stage}.>")] };
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
        let mut requests = vec![format!("{p}.requests.*")];
        requests.extend(Priority::ALL.map(|lane| format!("{p}.requests.*.{lane}")));
        let schedules = |mut config: stream::Config| {
            config.allow_message_schedules = true;
            config
        };
        vec![
            spec(role::REQUESTS, requests, "Producers' notification requests, one subject per tenant (and priority lane)"),
            schedules(spec(
                role::ENRICH,
                scheduled("enrich"),
                "Accepted notifications waiting for recipient resolution, and scheduled sends",
            )),
            spec(role::FANOUT, lanes("fanout"), "Pages of group fan-outs waiting to be expanded"),
            spec(role::RENDER, lanes("render"), "Deliveries waiting for their template to be rendered"),
            spec(role::DEDUPE, lanes("dedupe"), "Rendered deliveries waiting for their dedupe claim"),
            schedules(spec(
                role::THROTTLE,
                scheduled("throttle"),
                "Deliveries waiting for caps, quiet hours and priorities, and deferred ones",
            )),
            spec(role::DELIVER, vec![format!("{p}.stage.deliver.*.*.*")], "Deliveries waiting for their provider, one subject per route"),
            spec(role::TRACK, vec![format!("{p}.stage.track.*")], "Stage events on their way to the tracking stream"),
            spec(role::EVENTS, vec![format!("{p}.events.*.*")], "The tracking stream: every state change of every notification"),
            spec(role::DLQ, vec![format!("{p}.dlq.*.*")], "Dead letters: messages a stage gave up on, with the reason in headers"),
            spec(role::CANCEL, vec![format!("{p}.cancel.*")], "Producers' cancels of scheduled and deferred notifications"),
            spec(role::ALERTS, vec![format!("{p}.alerts.*")], "Operators' alerts: provider breakers opening and closing"),
            spec(
                role::RECEIPTS,
                vec![format!("{p}.receipts.*.*")],
                "Providers' verified receipts (status callbacks), per tenant and provider",
            ),
            stream::Config {
                max_age: self.config.inbox_retention,
                // Apps page through a user's history by direct gets, one subject per user.
                allow_direct: true,
                ..spec(role::INBOX, vec![format!("{p}.inbox.*.*")], "Users' in-app inbox messages, one subject per tenant and user")
            },
        ]
    }

    /// The subject of a user's inbox: `<prefix>.inbox.<tenant>.<user>`, with any `.` of the user
    /// id written `%2E` (user ids may hold `.`; subject tokens may not, nor `%` a user id).
    pub fn inbox_subject(&self, tenant: &str, user: &str) -> String {
        format!("{}.inbox.{tenant}.{}", self.config.prefix, user.replace('.', "%2E"))
    }

    /// Every durable consumer, with its stream.
    pub fn consumers(&self) -> Vec<(String, consumer::pull::Config)> {
        self.consumer_specs().into_iter().map(|c| (c.stream, c.config)).collect()
    }

    /// Every durable consumer with what it is for: its stage, route and lane.
    pub fn consumer_specs(&self) -> Vec<ConsumerSpec> {
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
        let mut consumers = Vec::new();
        let mut add = |stage: &str, route: Option<Route>, lane: Priority, filter: String| {
            if let Some(c) = self.lane_consumer(stage, route, lane) {
                let mut config = durable(c.durable, filter);
                if stage == "deliver" {
                    config.max_deliver = i64::from(self.config.deliver_max_deliveries) + 1;
                }
                consumers.push(ConsumerSpec { stage: stage.to_owned(), route, lane, stream: c.stream, config });
            }
        };
        for lane in Priority::ALL {
            add("ingest", None, lane, format!("{p}.requests.*.{lane}"));
            for stage in ["enrich", "fanout", "render", "dedupe", "throttle"] {
                add(stage, None, lane, format!("{p}.stage.{stage}.{lane}.*"));
            }
            for route in Route::ALL {
                add("deliver", Some(route), lane, format!("{p}.stage.deliver.{route}.{lane}.*"));
            }
        }
        add("track", None, Priority::Normal, format!("{p}.stage.track.*"));
        add("cancel", None, Priority::Normal, format!("{p}.cancel.*"));
        add("receipts", None, Priority::Normal, format!("{p}.receipts.*.*"));
        // The notification log's writer reads the tracking stream; it must never give up on an
        // event (a store outage only delays it), and reads in large batches.
        add("log", None, Priority::Normal, format!("{p}.events.*.*"));
        for ConsumerSpec { config, .. } in consumers.iter_mut().filter(|c| c.config.durable_name.as_deref() == Some("log")) {
            config.description = Some("Herald's notification log writer".into());
            config.max_deliver = -1;
        }
        // Ingest's normal lane also reads the plain `<p>.requests.<tenant>`.
        for ConsumerSpec { config, .. } in consumers.iter_mut().filter(|c| c.config.durable_name.as_deref() == Some("ingest")) {
            config.filter_subjects = vec![format!("{p}.requests.*"), std::mem::take(&mut config.filter_subject)];
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

    /// The KV bucket of providers' send-rate counters (`rate.<route>.<second>`), kept a minute.
    pub fn rates_bucket(&self) -> String {
        format!("{}-rates", self.config.prefix)
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
            bucket(self.rates_bucket(), "Providers' shared send rates, per route and second", Duration::from_secs(60)),
        ]
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
            (t.hop_subject(Hop::Deliver(Route::WebPush), "acme", None), Some("acme")),
            (t.lane_subject(Hop::Deliver(Route::WebPush), Some(Priority::Critical), "acme", None), Some("acme")),
            (t.lane_subject(Hop::Dedupe, Some(Priority::Low), "acme", None), Some("acme")),
            (t.requests_lane_subject("acme", Priority::High), Some("acme")),
            (t.cancel_subject("acme"), Some("acme")),
            (t.receipts_subject("acme", "twilio"), Some("acme")),
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
        hops.extend(Route::ALL.map(Hop::Deliver));
        let consumers = t.consumers();
        for hop in hops {
            for lane in Priority::ALL {
                let subject = t.lane_subject(hop, Some(lane), "acme", Some("sent"));
                let matching = streams.iter().filter(|s| s.subjects.iter().any(|f| matches(f, &subject))).count();
                assert_eq!(matching, 1, "{subject}");
                if hop != Hop::Events {
                    let readers = consumers.iter().filter(|(_, c)| filters(c).iter().any(|f| matches(f, &subject))).count();
                    assert_eq!(readers, 1, "exactly one consumer reads {subject}");
                }
            }
        }
        let front = [
            t.requests_subject("acme"),
            t.requests_lane_subject("acme", Priority::Critical),
            t.cancel_subject("acme"),
            t.receipts_subject("acme", "twilio"),
        ];
        for subject in front {
            let readers = consumers.iter().filter(|(_, c)| filters(c).iter().any(|f| matches(f, &subject))).count();
            assert_eq!(readers, 1, "exactly one consumer reads {subject}");
        }
        // Scheduled copies wait in the stream of the stage they are due at, read by no consumer.
        let (n, k) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for hop in [Hop::Enrich, Hop::Throttle] {
            let subject = t.schedule_subject(hop, "acme", n, k).unwrap();
            let target = t.lane_subject(hop, Some(Priority::Low), "acme", None);
            let holders: Vec<_> = streams.iter().filter(|s| s.subjects.iter().any(|f| matches(f, &subject))).collect();
            assert_eq!(holders.len(), 1, "{subject}");
            assert!(holders[0].allow_message_schedules);
            assert!(holders[0].subjects.iter().any(|f| matches(f, &target)), "the target is in the same stream");
            assert!(!consumers.iter().any(|(_, c)| filters(c).iter().any(|f| matches(f, &subject))), "no consumer reads {subject}");
            let (stream, filter) = t.schedule_filters("acme", n).into_iter().find(|(s, _)| *s == holders[0].name).unwrap();
            assert!(matches(&filter, &subject), "{filter} finds {subject} in {stream}");
        }
        assert!(t.schedule_subject(Hop::Render, "acme", n, k).is_none());
    }

    fn filters(c: &consumer::pull::Config) -> Vec<String> {
        if c.filter_subjects.is_empty() { vec![c.filter_subject.clone()] } else { c.filter_subjects.clone() }
    }

    #[test]
    fn lanes_have_their_own_consumers() {
        let t = topology();
        assert_eq!(t.consumer("enrich", None).unwrap().durable, "enrich");
        assert_eq!(t.lane_consumer("enrich", None, Priority::Critical).unwrap().durable, "enrich-critical");
        assert_eq!(t.lane_consumer("deliver", Some(Route::Email), Priority::Low).unwrap().durable, "deliver-email-low");
        assert_eq!(t.stage_consumers("throttle", None).len(), 4);
        assert_eq!(t.stage_consumers("track", None).len(), 1);
        assert_eq!(t.stage_consumers("cancel", None)[0].durable, "cancel");
    }

    #[test]
    fn every_consumer_filter_belongs_to_its_stream() {
        let t = topology();
        let streams = t.streams();
        for (stream, consumer) in t.consumers() {
            let config = streams.iter().find(|s| s.name == stream).unwrap();
            for filter in filters(&consumer) {
                assert!(config.subjects.iter().any(|f| covers(f, &filter)), "{stream}: {filter}");
            }
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
        if f.last() == Some(&">") {
            return s.len() >= f.len() && f[..f.len() - 1].iter().zip(&s).all(|(f, s)| *f == "*" || f == s);
        }
        f.len() == s.len() && f.iter().zip(&s).all(|(f, s)| *f == "*" || f == s)
    }

    fn covers(filter: &str, narrower: &str) -> bool {
        let f: Vec<_> = filter.split('.').collect();
        let n: Vec<_> = narrower.split('.').collect();
        f.len() == n.len() && f.iter().zip(&n).all(|(f, n)| *f == "*" || f == n)
    }
}
