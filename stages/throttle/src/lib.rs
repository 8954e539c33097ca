//! Throttle: decides whether and when a delivery may go out.
//!
//! In: a claimed [`Delivery`] from dedupe (or a deferred one coming back from the broker's
//! scheduler when it is due).
//! Out, in this order of checks:
//! - `expired` when its `expires_at` has passed, or would pass before it may go out;
//! - `cancelled` when it was scheduled or deferred and the notification has been cancelled;
//! - `deferred` until the user's quiet hours end (in the user's time zone), unless `critical`;
//! - for each frequency cap that counts it: over the cap, `throttled` (policy `throttle`,
//!   dropped, the cap named) or `deferred` to when the window has room (policy `defer`);
//! - otherwise the delivery to its channel's deliver consumer, in its priority lane.
//!
//! A deferral is an output scheduled with the broker (`Outcome::defer`): the message is acked
//! now and comes back to throttle when due, which checks it all again.
//! Side effects: cap counters in the dedupe bucket (`cap.<id>`, compare-and-swap, so every
//! replica shares one count); reads cancel markers (`cancel.<tenant>.<notification>`).
//! Invariants: a cap never lets more than its limit through in a window, across replicas; the
//! same delivery redelivered is not counted twice (sliding windows, and fixed windows up to
//! 1,000 deliveries); `critical` bypasses user caps and quiet hours, never tenant caps.

pub mod windows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_schemas::{Cap, CapPolicy, CapScope, Delivery, Priority, Status, Timestamp};
use herald_stage::{Created, EventBuilder, Hop, KeyValue, Meta, Outcome, PortError, Stage, StageError, Swapped};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

use windows::{Admission, Counter};

/// The throttle's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Caps for tenants that set none of their own (`PUT /v1/tenants/{t}/caps`).
    pub caps: Vec<Cap>,
    /// The time zone of users who have none, for quiet hours.
    pub default_timezone: String,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { caps: Vec::new(), default_timezone: "UTC".into() }
    }
}

/// Where a tenant's own caps are read.
pub trait CapSource: Send + Sync + 'static {
    /// The tenant's caps, or `None` when it has not set any (the defaults apply).
    fn caps(&self, tenant: &str) -> impl Future<Output = Result<Option<Arc<Vec<Cap>>>, PortError>> + Send;
}

/// No tenant overrides: every tenant gets the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultCaps;

impl CapSource for DefaultCaps {
    async fn caps(&self, _tenant: &str) -> Result<Option<Arc<Vec<Cap>>>, PortError> {
        Ok(None)
    }
}

/// The throttle stage.
#[derive(Debug)]
pub struct Throttle<K, C> {
    kv: K,
    tenant_caps: C,
    defaults: Arc<Vec<Cap>>,
    default_tz: TimeZone,
    horizon: Duration,
}

/// Most compare-and-swaps on one counter before the message is retried later.
const MAX_CONFLICTS: usize = 200;

impl<K: KeyValue, C: CapSource> Throttle<K, C> {
    /// `kv` is the dedupe bucket (counters and cancel markers live there).
    pub fn new(kv: K, tenant_caps: C, config: ThrottleConfig) -> Self {
        let default_tz = TimeZone::get(&config.default_timezone).unwrap_or(TimeZone::UTC);
        Throttle { kv, tenant_caps, defaults: Arc::new(config.caps), default_tz, horizon: Duration::from_secs(3 * 24 * 3600) }
    }

    /// The longest single deferral: half of `topology.max_age`, so a scheduled copy always
    /// fires well before its stream would drop it. Longer waits are taken in steps.
    pub fn with_defer_horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon.max(Duration::from_secs(1));
        self
    }

    fn event(meta: &Meta, delivery: &Delivery, status: Status, reason: &str, detail: String) -> EventBuilder {
        EventBuilder::delivery(Self::NAME, meta, delivery, status).reason(reason, detail)
    }

    /// Sends `delivery` back to throttle at `until`, or ends it as expired if it would expire
    /// first. A wait longer than the defer horizon comes back at the horizon and is checked
    /// again: a scheduled copy must fire before its stream's max age removes it.
    fn defer(&self, meta: &Meta, delivery: Delivery, until: Timestamp, reason: &str, detail: String) -> Result<Outcome, StageError> {
        if let Some(expires_at) = delivery.expires_at
            && expires_at <= until
        {
            let detail = format!("{detail}; it expires at {expires_at}, before then");
            return Outcome::new().event(Self::event(meta, &delivery, Status::Expired, "expired", detail).build());
        }
        let horizon = jiff::SignedDuration::try_from(self.horizon).ok().and_then(|h| meta.received_at.checked_add(h).ok());
        let until = horizon.map_or(until, |h| until.min(h));
        let event = Self::event(meta, &delivery, Status::Deferred, reason, detail).deferred_until(until).build();
        let delivery = Delivery { deferred_until: Some(until), ..delivery };
        Outcome::new().defer(Hop::Throttle, &delivery, until)?.event(event)
    }

    async fn cancelled(&self, delivery: &Delivery) -> Result<bool, StageError> {
        let key = herald_stage::cancel_marker_key(&delivery.tenant, delivery.notification_id);
        Ok(self.kv.entry(&key).await?.is_some())
    }

    fn quiet_until(&self, delivery: &Delivery, now: Timestamp) -> Option<Timestamp> {
        let hours = delivery.quiet_hours.as_ref()?;
        let (start, end) = match hours.times() {
            Ok(times) => times,
            Err(error) => {
                warn!(delivery_id = %delivery.delivery_id, %error, "Ignoring unreadable quiet hours.");
                return None;
            }
        };
        let tz = match delivery.timezone.as_deref().map(TimeZone::get) {
            Some(Ok(tz)) => tz,
            Some(Err(_)) | None => self.default_tz.clone(),
        };
        windows::quiet_until(now, &tz, start, end)
    }

    /// The counter key of `cap` for `delivery`: one per cap, scope value, channel and category.
    fn cap_key(cap: &Cap, delivery: &Delivery) -> String {
        let who = match cap.scope {
            CapScope::Tenant => String::new(),
            CapScope::User | CapScope::UserCategory => delivery.user_id.clone().unwrap_or_else(|| delivery.address.clone()),
        };
        let category = if cap.scope == CapScope::UserCategory { delivery.category.as_deref().unwrap_or_default() } else { "" };
        let scope = format!("{}\0{}\0{who}\0{}\0{category}", delivery.tenant, cap.name, delivery.channel);
        format!("cap.{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, scope.as_bytes()).simple())
    }

    /// Counts the delivery against one cap, by compare-and-swap on its counter.
    async fn admit(&self, cap: &Cap, key: &str, delivery: u64, now_ms: i64) -> Result<Admission, StageError> {
        let window_ms = i64::try_from(cap.window().as_millis()).unwrap_or(i64::MAX);
        for conflict in 0..MAX_CONFLICTS {
            let entry = self.kv.entry(key).await?;
            let mut counter: Counter = match &entry {
                Some(entry) => serde_json::from_slice(&entry.value)
                    .map_err(|e| StageError::permanent("store_decode_failed", format!("cap counter {key} holds {e}")))?,
                None => Counter::default(),
            };
            let admission = counter.admit(cap.kind, cap.limit, window_ms, delivery, now_ms);
            if admission != Admission::Admitted {
                return Ok(admission);
            }
            let value = Bytes::from(serde_json::to_vec(&counter)?);
            let written = match entry {
                None => matches!(self.kv.create(key, value).await?, Created::Created(_)),
                Some(entry) => matches!(self.kv.swap(key, value, entry.revision).await?, Swapped::Done(_)),
            };
            if written {
                return Ok(admission);
            }
            // Another replica counted first: read again. A little jitter spreads a crowd.
            let pause = Duration::from_micros(200 + (delivery.wrapping_add(conflict as u64) % 7) * 300);
            tokio::time::sleep(pause).await;
        }
        Err(StageError::transient("cap_contention", format!("cap counter {key} kept changing under {MAX_CONFLICTS} compare-and-swaps")))
    }

    /// Takes a delivery back out of a counter (best effort: another cap refused it).
    async fn release(&self, key: &str, delivery: u64) {
        for _ in 0..16 {
            let Ok(Some(entry)) = self.kv.entry(key).await else { return };
            let Ok(mut counter) = serde_json::from_slice::<Counter>(&entry.value) else { return };
            if !counter.release(delivery) {
                return;
            }
            let Ok(value) = serde_json::to_vec(&counter) else { return };
            match self.kv.swap(key, Bytes::from(value), entry.revision).await {
                Ok(Swapped::Done(_)) => return,
                Ok(Swapped::Conflict) => continue,
                Err(error) => {
                    warn!(%error, key, "Could not give a cap's room back; the window counts one delivery more than went out.");
                    return;
                }
            }
        }
    }
}

impl<K: KeyValue, C: CapSource> Stage for Throttle<K, C> {
    const NAME: &'static str = "throttle";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        // A deferred copy is due at `deferred_until` by the server's clock; a replica whose clock
        // is behind must not find it early and defer it to the same instant again.
        let now = delivery.deferred_until.map_or(meta.received_at, |due| due.max(meta.received_at));
        if let Some(expires_at) = delivery.expires_at
            && expires_at <= now
        {
            let detail = format!("expired at {expires_at}, before it could be sent");
            return Outcome::new().event(Self::event(meta, &delivery, Status::Expired, "expired", detail).build());
        }
        if (delivery.scheduled_for.is_some() || delivery.deferred_until.is_some()) && self.cancelled(&delivery).await? {
            let detail = "the notification was cancelled before this delivery was sent".to_owned();
            return Outcome::new().event(Self::event(meta, &delivery, Status::Cancelled, "cancelled", detail).build());
        }
        let critical = delivery.priority == Priority::Critical;
        if !critical && let Some(until) = self.quiet_until(&delivery, now) {
            let tz = delivery.timezone.as_deref().unwrap_or("the default time zone");
            let detail = format!("the user's quiet hours ({tz}) last until {until}");
            return self.defer(meta, delivery, until, "quiet_hours", detail);
        }
        let caps = match self.tenant_caps.caps(&delivery.tenant).await? {
            Some(caps) => caps,
            None => self.defaults.clone(),
        };
        let (high, low) = delivery.delivery_id.as_u64_pair();
        let id = high ^ low;
        let now_ms = now.as_millisecond();
        let mut counted: Vec<String> = Vec::new();
        for cap in caps.iter().filter(|c| c.applies(delivery.channel, delivery.category.as_deref(), critical)) {
            let key = Self::cap_key(cap, &delivery);
            let admission = match self.admit(cap, &key, id, now_ms).await {
                Ok(admission) => admission,
                Err(error) => {
                    // Retried later: what this attempt counted must not stay counted meanwhile.
                    for key in &counted {
                        self.release(key, id).await;
                    }
                    return Err(error);
                }
            };
            match admission {
                Admission::Admitted => counted.push(key),
                Admission::AlreadyAdmitted => {}
                Admission::Over { reopens_at } => {
                    for key in &counted {
                        self.release(key, id).await;
                    }
                    let limit =
                        format!("cap `{}` ({} per {} {:?} window, {:?} scope)", cap.name, cap.limit, cap.window, cap.kind, cap.scope);
                    let reopens = Timestamp::from_millisecond(reopens_at).unwrap_or(now);
                    return match cap.policy {
                        CapPolicy::Throttle => Outcome::new().event(
                            Self::event(meta, &delivery, Status::Throttled, "frequency_cap", format!("over {limit}; dropped")).build(),
                        ),
                        CapPolicy::Defer => self.defer(meta, delivery, reopens, "frequency_cap", format!("over {limit}")),
                    };
                }
            }
        }
        Outcome::new().forward(Hop::Deliver(delivery.route()), &delivery)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use herald_schemas::directory::QuietHours;
    use herald_schemas::{Channel, Route};
    use herald_stage::memory::MemoryKv;

    use super::*;

    fn delivery(id: u128) -> Delivery {
        Delivery { channel: Channel::Email, address: "alice@example.com".into(), ..herald_stage::memory::delivery(id) }
    }

    fn throttle(caps: &str) -> Throttle<MemoryKv, DefaultCaps> {
        let caps: Vec<Cap> = serde_json::from_str(caps).unwrap();
        Throttle::new(MemoryKv::new(), DefaultCaps, ThrottleConfig { caps, ..ThrottleConfig::default() })
    }

    fn statuses(out: &Outcome) -> Vec<Status> {
        out.events().iter().map(|e| e.status).collect()
    }

    #[tokio::test]
    async fn routes_by_channel_and_drops_the_expired() {
        let stage = throttle("[]");
        let meta = Meta::for_tests();
        let live = stage.process(delivery(2), &meta).await.unwrap();
        assert_eq!(live.forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1);
        let past = jiff::Timestamp::from_second(meta.received_at.as_second() - 60).unwrap();
        let dropped = stage.process(Delivery { expires_at: Some(past), ..delivery(2) }, &meta).await.unwrap();
        assert!(dropped.forwarded::<Delivery>(Hop::Deliver(Route::Email)).is_empty());
        assert_eq!(statuses(&dropped), vec![Status::Expired]);
    }

    #[tokio::test]
    async fn a_cap_lets_its_limit_through_then_throttles_or_defers() {
        let stage = throttle(r#"[{"name":"hourly","scope":"user","limit":2,"window":"1h"}]"#);
        let meta = Meta::for_tests();
        for id in 1..=2 {
            assert_eq!(stage.process(delivery(id), &meta).await.unwrap().forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1);
        }
        // The same delivery again (a redelivery) is not counted twice.
        assert_eq!(stage.process(delivery(2), &meta).await.unwrap().forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1);
        let third = stage.process(delivery(3), &meta).await.unwrap();
        assert_eq!(statuses(&third), vec![Status::Throttled]);
        assert!(third.events()[0].detail.as_deref().unwrap().contains("hourly"));
        // Another user has their own count; critical is not counted by user caps.
        let bob = Delivery { user_id: Some("bob".into()), ..delivery(4) };
        assert_eq!(stage.process(bob, &meta).await.unwrap().forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1);
        let urgent = Delivery { priority: Priority::Critical, ..delivery(5) };
        assert_eq!(stage.process(urgent, &meta).await.unwrap().forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1);

        let deferring = throttle(r#"[{"name":"hourly","scope":"user","limit":1,"window":"1h","policy":"defer"}]"#);
        deferring.process(delivery(1), &meta).await.unwrap();
        let later = deferring.process(delivery(2), &meta).await.unwrap();
        assert_eq!(statuses(&later), vec![Status::Deferred]);
        let deferred: Vec<(Delivery, Timestamp)> = later.deferred(Hop::Throttle);
        let window_end =
            Timestamp::from_millisecond(windows::fixed_start(meta.received_at.as_millisecond(), 3_600_000) + 3_600_000).unwrap();
        assert_eq!(deferred[0].1, window_end);
        assert_eq!(deferred[0].0.deferred_until, Some(window_end));
        assert_eq!(later.events()[0].deferred_until, Some(window_end));
    }

    #[tokio::test]
    async fn quiet_hours_defer_all_but_critical() {
        let stage = throttle("[]");
        // Noon UTC, inside quiet hours 11:30–12:30 UTC.
        let meta = Meta { received_at: "2026-01-01T12:00:00Z".parse().unwrap(), ..Meta::for_tests() };
        let hours = QuietHours { start: "11:30".into(), end: "12:30".into() };
        let quiet = Delivery { quiet_hours: Some(hours.clone()), timezone: Some("UTC".into()), ..delivery(1) };
        let out = stage.process(quiet.clone(), &meta).await.unwrap();
        assert_eq!(statuses(&out), vec![Status::Deferred]);
        assert_eq!(out.events()[0].reason.as_deref(), Some("quiet_hours"));
        let until = out.deferred::<Delivery>(Hop::Throttle)[0].1;
        assert_eq!(until, "2026-01-01T12:30:00Z".parse().unwrap());
        let critical = stage.process(Delivery { priority: Priority::Critical, ..quiet.clone() }, &meta).await.unwrap();
        assert_eq!(critical.forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1, "critical goes at once");
        // One that would expire during the quiet hours expires instead.
        let soon = Delivery { expires_at: Some(meta.received_at + jiff::SignedDuration::from_secs(5)), ..quiet };
        assert_eq!(statuses(&stage.process(soon, &meta).await.unwrap()), vec![Status::Expired]);
    }

    #[tokio::test]
    async fn a_cancelled_scheduled_delivery_is_not_sent() {
        let stage = throttle("[]");
        let meta = Meta::for_tests();
        let scheduled = Delivery { scheduled_for: Some(meta.received_at), ..delivery(1) };
        stage.kv.set(&herald_stage::cancel_marker_key("acme", scheduled.notification_id), Bytes::from_static(b"{}"));
        assert_eq!(statuses(&stage.process(scheduled, &meta).await.unwrap()), vec![Status::Cancelled]);
    }

    #[tokio::test]
    async fn a_long_wait_comes_back_at_the_horizon_and_a_copy_due_is_never_early() {
        let stage = throttle(r#"[{"name":"daily","scope":"user","limit":1,"window":"24h","policy":"defer"}]"#)
            .with_defer_horizon(Duration::from_secs(3600));
        // A minute into a UTC day: the daily window ends in 23 h 59 m, far past the horizon.
        let meta = Meta { received_at: "2026-01-01T00:01:00Z".parse().unwrap(), ..Meta::for_tests() };
        stage.process(delivery(1), &meta).await.unwrap();
        let out = stage.process(delivery(2), &meta).await.unwrap();
        let (copy, until) = out.deferred::<Delivery>(Hop::Throttle).remove(0);
        assert!(until <= meta.received_at + jiff::SignedDuration::from_secs(3600), "at most the horizon: {until}");
        // The copy comes back due; this replica's clock is a second behind the server's.
        let behind = Meta { received_at: until - jiff::SignedDuration::from_secs(1), ..meta.clone() };
        let again = stage.process(copy, &behind).await.unwrap();
        let (_, next) = again.deferred::<Delivery>(Hop::Throttle).remove(0);
        assert!(next > until, "deferred on from its due time, never to the same instant: {next} vs {until}");
    }

    /// A source of tenant caps that counts its reads.
    struct Overrides(AtomicUsize);

    impl CapSource for Overrides {
        async fn caps(&self, tenant: &str) -> Result<Option<Arc<Vec<Cap>>>, PortError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            let caps = serde_json::from_str(r#"[{"name":"strict","scope":"tenant","limit":1,"window":"1m"}]"#).unwrap();
            Ok((tenant == "acme").then(|| Arc::new(caps)))
        }
    }

    #[tokio::test]
    async fn a_tenants_own_caps_replace_the_defaults_and_bind_critical_too() {
        let stage = Throttle::new(MemoryKv::new(), Overrides(AtomicUsize::new(0)), ThrottleConfig::default());
        let meta = Meta::for_tests();
        let critical = |id| Delivery { priority: Priority::Critical, ..delivery(id) };
        assert_eq!(stage.process(critical(1), &meta).await.unwrap().forwarded::<Delivery>(Hop::Deliver(Route::Email)).len(), 1);
        assert_eq!(statuses(&stage.process(critical(2), &meta).await.unwrap()), vec![Status::Throttled]);
        assert!(stage.tenant_caps.0.load(Ordering::Relaxed) >= 2);
    }
}
