//! The notification log: what track's log writer reads off the tracking stream, kept for the
//! status API, `herald trace` and `herald stats`.
//!
//! A batch of events is one transaction of three statements: the history rows (`INSERT IGNORE`,
//! keyed by event id, so an event read twice adds one row), then one merge per delivery and per
//! notification the batch touches. Every merge is order-free and idempotent — first times take
//! the minimum, latest times and attempts the maximum, and the status is the one whose
//! `status_key` (the event's time, then its rank in the lifecycle) is greatest — so replaying
//! every event, in any batches, leaves every row as it was.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_schemas::directory::check_tenant;
use herald_schemas::log::{DeliveryFilter, DeliveryPage, DeliveryRecord, NotificationRecord};
use herald_schemas::{Channel, Status, Timestamp, TrackEvent, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{BATCH, Store, StoreError};

/// How track keeps the log (`[log]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Whether track writes the log at all (the tracking stream carries every event either way).
    pub enabled: bool,
    /// Most events written in one statement.
    pub batch: usize,
    /// Longest a partial batch waits for more events.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long rows are kept after their last event; older ones are pruned.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often the pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_every: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            enabled: true,
            batch: BATCH,
            linger: Duration::from_millis(100),
            retention: Duration::from_secs(30 * 24 * 3600),
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// Rows a listing returns unless asked for fewer.
pub const DEFAULT_PAGE: usize = 50;
/// Rows a listing returns at most.
pub const MAX_PAGE: usize = 500;

/// Where a status sits in a delivery's lifecycle, to order events of the same microsecond
/// (one stage message reports several at once); `None` for the events beside the lifecycle
/// (engagement, holds, a token disabled), which never change the current status.
pub fn rank(status: Status) -> Option<i64> {
    Some(match status {
        Status::Deduplicated => 1,
        Status::Accepted => 2,
        Status::Scheduled => 3,
        Status::Deferred => 4,
        Status::Retrying => 5,
        Status::Sent => 10,
        // Exhaustive on purpose (not `ends_unsent()`): a new status must be placed here.
        Status::Rejected
        | Status::Skipped
        | Status::OptedOut
        | Status::Expired
        | Status::Throttled
        | Status::Cancelled
        | Status::Failed
        | Status::DeadLettered => 11,
        Status::Delivered | Status::Undelivered | Status::Bounced | Status::Complained => 12,
        Status::Held | Status::TokenInvalidated | Status::Unsubscribed | Status::Opened | Status::Clicked => return None,
    })
}

/// Ranks fit below this; a status key is `time * RANKS + rank`.
const RANKS: i64 = 32;

fn micros(at: Timestamp) -> i64 {
    at.as_microsecond()
}

fn timestamp(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The key that decides a status: later wins, and in the same microsecond the later stage of
/// the lifecycle. A repeat (`deduplicated`) about a delivery that has a status keeps it: its
/// key is its rank alone, below any timed one.
fn status_key(event: &TrackEvent) -> Option<i64> {
    let rank = rank(event.status)?;
    Some(if event.status == Status::Deduplicated { rank } else { micros(event.at).saturating_mul(RANKS) + rank })
}

/// What one batch says about one delivery, merged into its row by the store.
#[derive(Debug, Default, Serialize)]
struct DeliveryPatch {
    tenant: String,
    delivery_id: String,
    notification_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    status_key: i64,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_message_id: Option<String>,
    first_us: i64,
    updated_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    opened_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clicked_us: Option<i64>,
}

/// What one batch says about one notification as a whole.
#[derive(Debug, Default, Serialize)]
struct NotificationPatch {
    tenant: String,
    notification_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    status_key: i64,
    first_us: i64,
    updated_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_us: Option<i64>,
}

fn earliest(slot: &mut Option<i64>, us: i64) {
    *slot = Some(slot.map_or(us, |old| old.min(us)));
}

impl DeliveryPatch {
    fn apply(&mut self, event: &TrackEvent) {
        let us = micros(event.at);
        if self.delivery_id.is_empty() {
            self.first_us = us;
        }
        self.tenant.clone_from(&event.tenant);
        self.delivery_id = event.delivery_id.unwrap_or_default().to_string();
        self.notification_id = event.notification_id.unwrap_or_default().to_string();
        self.user_id = self.user_id.take().or_else(|| event.user_id.clone());
        self.channel = self.channel.or(event.channel);
        self.template = self.template.take().or_else(|| event.template.clone());
        self.category = self.category.take().or_else(|| event.category.clone());
        self.first_us = self.first_us.min(us);
        self.updated_us = self.updated_us.max(us);
        if event.stage == "deliver" {
            self.attempts = self.attempts.max(event.attempt);
        }
        if let Some(provider) = &event.provider {
            self.provider = Some(provider.clone());
        }
        if let Some(id) = &event.provider_message_id {
            self.provider_message_id = Some(id.clone());
        }
        if let Some(key) = status_key(event)
            && key > self.status_key
        {
            self.status_key = key;
            self.status = Some(event.status);
            self.reason.clone_from(&event.reason);
        }
        match event.status {
            Status::Sent => earliest(&mut self.sent_us, us),
            Status::Delivered => earliest(&mut self.delivered_us, us),
            Status::Opened => earliest(&mut self.opened_us, us),
            Status::Clicked => earliest(&mut self.clicked_us, us),
            _ => {}
        }
    }
}

impl NotificationPatch {
    fn apply(&mut self, event: &TrackEvent) {
        let us = micros(event.at);
        if self.notification_id.is_empty() {
            self.first_us = us;
        }
        self.tenant.clone_from(&event.tenant);
        self.notification_id = event.notification_id.unwrap_or_default().to_string();
        self.template = self.template.take().or_else(|| event.template.clone());
        self.category = self.category.take().or_else(|| event.category.clone());
        self.first_us = self.first_us.min(us);
        self.updated_us = self.updated_us.max(us);
        // The notification's own status comes from the events about it as a whole.
        if event.delivery_id.is_none()
            && let Some(key) = status_key(event)
            && key > self.status_key
        {
            self.status_key = key;
            self.status = Some(event.status);
            self.reason.clone_from(&event.reason);
        }
        if event.status == Status::Accepted {
            earliest(&mut self.accepted_us, us);
        }
    }
}

const WRITE: &str = "BEGIN TRANSACTION;
INSERT IGNORE INTO log_event $events RETURN NONE;
INSERT INTO log_delivery $deliveries ON DUPLICATE KEY UPDATE
    user_id = user_id ?? $input.user_id, channel = channel ?? $input.channel,
    template = template ?? $input.template, category = category ?? $input.category,
    provider = $input.provider ?? provider, provider_message_id = $input.provider_message_id ?? provider_message_id,
    attempts = array::max([attempts ?? 0, $input.attempts]),
    first_us = array::min([first_us ?? $input.first_us, $input.first_us]),
    updated_us = array::max([updated_us ?? 0, $input.updated_us]),
    sent_us = array::min([sent_us ?? $input.sent_us, $input.sent_us ?? sent_us]),
    delivered_us = array::min([delivered_us ?? $input.delivered_us, $input.delivered_us ?? delivered_us]),
    opened_us = array::min([opened_us ?? $input.opened_us, $input.opened_us ?? opened_us]),
    clicked_us = array::min([clicked_us ?? $input.clicked_us, $input.clicked_us ?? clicked_us]),
    status = IF $input.status_key > (status_key ?? 0) { $input.status } ELSE { status },
    reason = IF $input.status_key > (status_key ?? 0) { $input.reason } ELSE { reason },
    status_key = array::max([status_key ?? 0, $input.status_key])
RETURN NONE;
INSERT INTO log_notification $notifications ON DUPLICATE KEY UPDATE
    template = template ?? $input.template, category = category ?? $input.category,
    first_us = array::min([first_us ?? $input.first_us, $input.first_us]),
    updated_us = array::max([updated_us ?? 0, $input.updated_us]),
    accepted_us = array::min([accepted_us ?? $input.accepted_us, $input.accepted_us ?? accepted_us]),
    status = IF $input.status_key > (status_key ?? 0) { $input.status } ELSE { status },
    reason = IF $input.status_key > (status_key ?? 0) { $input.reason } ELSE { reason },
    status_key = array::max([status_key ?? 0, $input.status_key])
RETURN NONE;
COMMIT TRANSACTION;";

/// A delivery's row as stored.
#[derive(Debug, Deserialize)]
struct DeliveryRow {
    tenant: String,
    delivery_id: Uuid,
    notification_id: Uuid,
    user_id: Option<String>,
    channel: Option<Channel>,
    template: Option<String>,
    category: Option<String>,
    status: Option<Status>,
    reason: Option<String>,
    #[serde(default)]
    attempts: u32,
    provider: Option<String>,
    provider_message_id: Option<String>,
    first_us: i64,
    updated_us: i64,
    sent_us: Option<i64>,
    delivered_us: Option<i64>,
    opened_us: Option<i64>,
    clicked_us: Option<i64>,
}

impl From<DeliveryRow> for DeliveryRecord {
    fn from(row: DeliveryRow) -> Self {
        DeliveryRecord {
            delivery_id: row.delivery_id,
            notification_id: row.notification_id,
            tenant: row.tenant,
            user_id: row.user_id,
            channel: row.channel,
            template: row.template,
            category: row.category,
            status: row.status,
            reason: row.reason,
            attempts: row.attempts,
            provider: row.provider,
            provider_message_id: row.provider_message_id,
            first_at: timestamp(row.first_us),
            updated_at: timestamp(row.updated_us),
            sent_at: row.sent_us.map(timestamp),
            delivered_at: row.delivered_us.map(timestamp),
            opened_at: row.opened_us.map(timestamp),
            clicked_at: row.clicked_us.map(timestamp),
        }
    }
}

#[derive(Debug, Deserialize)]
struct NotificationRow {
    tenant: String,
    notification_id: Uuid,
    template: Option<String>,
    category: Option<String>,
    status: Option<Status>,
    accepted_us: Option<i64>,
    first_us: i64,
    updated_us: i64,
}

const DELIVERY_FIELDS: &str = "tenant, delivery_id, notification_id, user_id, channel, template, category, status, reason, attempts, \
     provider, provider_message_id, first_us, updated_us, sent_us, delivered_us, opened_us, clicked_us";

/// How many rows the log holds (for operators and the replay check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogCounts {
    pub notifications: u64,
    pub deliveries: u64,
    pub events: u64,
}

impl Store {
    /// Writes a batch of tracking events into the log; safe to repeat with any of them.
    pub async fn write_log(&self, events: &[TrackEvent]) -> Result<(), StoreError> {
        for chunk in events.chunks(BATCH) {
            let mut deliveries: HashMap<(&str, Uuid), DeliveryPatch> = HashMap::new();
            let mut notifications: HashMap<(&str, Uuid), NotificationPatch> = HashMap::new();
            let mut rows = Vec::with_capacity(chunk.len());
            for event in chunk {
                if let Some(delivery) = event.delivery_id {
                    deliveries.entry((&event.tenant, delivery)).or_default().apply(event);
                }
                if let Some(notification) = event.notification_id {
                    notifications.entry((&event.tenant, notification)).or_default().apply(event);
                }
                let event_json = serde_json::to_value(event).map_err(|e| StoreError::decode("write log", e))?;
                rows.push(json!({
                    "id": [event.tenant, event.event_id.to_string()],
                    "tenant": event.tenant,
                    "notification_id": event.notification_id.map(|n| n.to_string()),
                    "delivery_id": event.delivery_id.map(|d| d.to_string()),
                    "status": event.status,
                    "at_us": micros(event.at),
                    "rank": rank(event.status).unwrap_or(RANKS),
                    "event": event_json,
                }));
            }
            // One statement a table: each row keyed by its record id, merged with what is there.
            let with_id = |key: [&str; 2], patch: serde_json::Value| -> serde_json::Value {
                let mut row = patch;
                if let Some(map) = row.as_object_mut() {
                    map.insert("id".to_owned(), json!(key));
                }
                row
            };
            let deliveries: Vec<serde_json::Value> = deliveries
                .into_iter()
                .map(|((tenant, id), patch)| Ok(with_id([tenant, &id.to_string()], serde_json::to_value(patch)?)))
                .collect::<Result<_, serde_json::Error>>()
                .map_err(|e| StoreError::decode("write log", e))?;
            let notifications: Vec<serde_json::Value> = notifications
                .into_iter()
                .map(|((tenant, id), patch)| Ok(with_id([tenant, &id.to_string()], serde_json::to_value(patch)?)))
                .collect::<Result<_, serde_json::Error>>()
                .map_err(|e| StoreError::decode("write log", e))?;
            let vars = json!({ "events": rows, "deliveries": deliveries, "notifications": notifications });
            self.run("write the notification log", WRITE, vars).await?;
        }
        Ok(())
    }

    /// A notification with its deliveries and timeline, if the log has it.
    pub async fn log_notification(&self, tenant: &str, id: Uuid) -> Result<Option<NotificationRecord>, StoreError> {
        check_tenant(tenant)?;
        let vars = json!({ "t": tenant, "n": id.to_string() });
        let sql = "SELECT tenant, notification_id, template, category, status, accepted_us, first_us, updated_us \
                   FROM type::record('log_notification', [$t, $n])";
        let Some(row) = self.rows::<NotificationRow>("read a logged notification", sql, vars.clone()).await?.into_iter().next() else {
            return Ok(None);
        };
        let sql =
            format!("SELECT {DELIVERY_FIELDS} FROM log_delivery WHERE tenant = $t AND notification_id = $n ORDER BY first_us, delivery_id");
        let deliveries: Vec<DeliveryRow> = self.rows("read a notification's deliveries", &sql, vars.clone()).await?;
        let timeline = self.log_timeline(tenant, id).await?;
        Ok(Some(NotificationRecord {
            notification_id: row.notification_id,
            tenant: row.tenant,
            template: row.template,
            category: row.category,
            status: row.status,
            accepted_at: row.accepted_us.map(timestamp),
            first_at: timestamp(row.first_us),
            updated_at: timestamp(row.updated_us),
            deliveries: deliveries.into_iter().map(DeliveryRecord::from).collect(),
            timeline,
        }))
    }

    /// Every logged event about a notification and its deliveries, oldest first (in the same
    /// microsecond, in lifecycle order).
    pub async fn log_timeline(&self, tenant: &str, id: Uuid) -> Result<Vec<TrackEvent>, StoreError> {
        let sql = "SELECT VALUE event FROM log_event WHERE tenant = $t AND notification_id = $n ORDER BY at_us, rank, id";
        self.rows("read a notification's timeline", sql, json!({ "t": tenant, "n": id.to_string() })).await
    }

    /// A page of a tenant's deliveries, newest first, narrowed by `filter`.
    pub async fn log_deliveries(&self, tenant: &str, filter: &DeliveryFilter) -> Result<DeliveryPage, StoreError> {
        check_tenant(tenant)?;
        let limit = filter.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let mut conditions = vec!["tenant = $t".to_owned()];
        let mut vars = serde_json::Map::new();
        vars.insert("t".into(), json!(tenant));
        vars.insert("limit".into(), json!(limit + 1));
        let mut narrow = |field: &str, op: &str, name: &str, value: Value| {
            conditions.push(format!("{field} {op} ${name}"));
            vars.insert(name.to_owned(), value);
        };
        if let Some(user) = &filter.user {
            narrow("user_id", "=", "user", json!(user));
        }
        if let Some(template) = &filter.template {
            narrow("template", "=", "template", json!(template));
        }
        if let Some(status) = filter.status {
            narrow("status", "=", "status", json!(status));
        }
        if let Some(channel) = filter.channel {
            narrow("channel", "=", "channel", json!(channel));
        }
        if let Some(since) = filter.since {
            narrow("first_us", ">=", "since", json!(micros(since)));
        }
        if let Some(until) = filter.until {
            narrow("first_us", "<", "until", json!(micros(until)));
        }
        if let Some(cursor) = &filter.cursor {
            let (us, id) = decode_cursor(cursor)?;
            conditions.push("(first_us < $cursor_us OR (first_us = $cursor_us AND delivery_id < $cursor_id))".into());
            vars.insert("cursor_us".into(), json!(us));
            vars.insert("cursor_id".into(), json!(id.to_string()));
        }
        let sql = format!(
            "SELECT {DELIVERY_FIELDS} FROM log_delivery WHERE {} ORDER BY first_us DESC, delivery_id DESC LIMIT $limit",
            conditions.join(" AND ")
        );
        let mut rows: Vec<DeliveryRow> = self.rows("list logged deliveries", &sql, Value::Object(vars)).await?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(last.first_us, last.delivery_id))
        } else {
            None
        };
        Ok(DeliveryPage { items: rows.into_iter().map(DeliveryRecord::from).collect(), next })
    }

    /// Deletes what the log last heard of before `before`: events older than it, and the
    /// deliveries and notifications whose latest event is.
    pub async fn prune_log(&self, before: Timestamp) -> Result<(), StoreError> {
        let sql = "DELETE log_event WHERE at_us < $cut RETURN NONE; \
                   DELETE log_delivery WHERE updated_us < $cut RETURN NONE; \
                   DELETE log_notification WHERE updated_us < $cut RETURN NONE";
        self.run("prune the notification log", sql, json!({ "cut": micros(before) })).await
    }

    /// How many rows the log holds, for one tenant or all.
    pub async fn log_counts(&self, tenant: Option<&str>) -> Result<LogCounts, StoreError> {
        let filter = if tenant.is_some() { "WHERE tenant = $t" } else { "" };
        let sql = format!(
            "RETURN {{ notifications: (SELECT count() FROM log_notification {filter} GROUP ALL)[0].count ?? 0, \
             deliveries: (SELECT count() FROM log_delivery {filter} GROUP ALL)[0].count ?? 0, \
             events: (SELECT count() FROM log_event {filter} GROUP ALL)[0].count ?? 0 }}"
        );
        let mut response = self.query("count the notification log", &sql, json!({ "t": tenant })).await?;
        let counts: Option<Value> = response.take(0).map_err(|e| StoreError::decode("count the notification log", e))?;
        serde_json::from_value(counts.unwrap_or_default()).map_err(|e| StoreError::decode("count the notification log", e))
    }
}

fn encode_cursor(us: i64, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{us}.{id}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, Uuid), StoreError> {
    let bad = || StoreError::Invalid(ValidationError::new("bad_cursor", "`cursor` is not one this listing gave; pass its `next` as it is"));
    let text = URL_SAFE_NO_PAD.decode(cursor).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (us, id) = text.split_once('.').ok_or_else(bad)?;
    Ok((us.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use herald_schemas::ids;
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    use super::*;
    use crate::StoreConfig;

    async fn memory() -> Store {
        Store::open(&StoreConfig { url: "mem://".into(), ..StoreConfig::default() }).await.unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn event(n: Uuid, delivery: Option<Uuid>, stage: &str, status: Status, attempt: u32, second: i64) -> TrackEvent {
        TrackEvent {
            v: 1,
            event_id: ids::event_id(delivery.unwrap_or(n), stage, status, attempt),
            notification_id: Some(n),
            delivery_id: delivery,
            tenant: "acme".into(),
            user_id: delivery.map(|_| "alice".into()),
            channel: delivery.map(|_| Channel::Sms),
            status,
            reason: Some(format!("{status}_reason")),
            detail: None,
            original_notification_id: None,
            scheduled_for: None,
            deferred_until: None,
            template: Some("welcome".into()),
            category: Some("account".into()),
            provider: None,
            provider_message_id: None,
            stage: stage.into(),
            attempt,
            at: at(second),
        }
    }

    /// A notification whose one SMS was deferred by quiet hours, failed once at the provider,
    /// was sent on the second try and delivered, then opened; and a second delivery skipped.
    fn story(n: Uuid) -> Vec<TrackEvent> {
        let d = Uuid::new_v5(&n, b"sms");
        let skipped = Uuid::new_v5(&n, b"push");
        let mut sent = event(n, Some(d), "deliver", Status::Sent, 2, 40);
        sent.provider = Some("twilio".into());
        sent.provider_message_id = Some("SM123".into());
        let mut delivered = event(n, Some(d), "receipts", Status::Delivered, 1, 50);
        delivered.provider = Some("twilio".into());
        delivered.provider_message_id = Some("SM123".into());
        vec![
            event(n, None, "ingest", Status::Accepted, 1, 0),
            event(n, Some(d), "throttle", Status::Deferred, 1, 1),
            event(n, Some(skipped), "enrich", Status::Skipped, 1, 1),
            event(n, Some(d), "deliver", Status::Retrying, 1, 30),
            sent,
            // A redelivered copy of the delivery, refused by dedupe after it was sent.
            event(n, Some(d), "dedupe", Status::Deduplicated, 1, 45),
            delivered,
            event(n, Some(d), "receipts", Status::Opened, 1, 60),
        ]
    }

    #[tokio::test]
    async fn a_deferred_retried_then_delivered_sms_is_logged_with_its_timeline() {
        let store = memory().await;
        let n = Uuid::from_u128(7);
        let events = story(n);
        store.write_log(&events).await.unwrap();
        let record = store.log_notification("acme", n).await.unwrap().expect("logged");
        assert_eq!((record.status, record.accepted_at, record.template.as_deref()), (Some(Status::Accepted), Some(at(0)), Some("welcome")));
        assert_eq!((record.first_at, record.updated_at), (at(0), at(60)));
        let sms = record.deliveries.iter().find(|d| d.channel == Some(Channel::Sms) && d.status != Some(Status::Skipped)).unwrap();
        assert_eq!(sms.status, Some(Status::Delivered), "the repeat after `sent` and the open leave the lifecycle status");
        assert_eq!(sms.reason.as_deref(), Some("delivered_reason"));
        assert_eq!((sms.attempts, sms.provider.as_deref(), sms.provider_message_id.as_deref()), (2, Some("twilio"), Some("SM123")));
        assert_eq!((sms.first_at, sms.sent_at, sms.delivered_at, sms.opened_at), (at(1), Some(at(40)), Some(at(50)), Some(at(60))));
        assert_eq!(record.deliveries.len(), 2);
        let statuses: Vec<Status> = record.timeline.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Accepted,
                Status::Deferred,
                Status::Skipped,
                Status::Retrying,
                Status::Sent,
                Status::Deduplicated,
                Status::Delivered,
                Status::Opened
            ],
            "oldest first; in the same second, lifecycle order"
        );
        assert_eq!(record.timeline[4], events[4], "events come back as they were written");
        assert_eq!(store.log_counts(Some("acme")).await.unwrap(), LogCounts { notifications: 1, deliveries: 2, events: 8 });
    }

    #[tokio::test]
    async fn any_order_and_any_batches_and_any_repeats_give_the_same_log() {
        let n = Uuid::from_u128(8);
        let events = story(n);
        let reference = memory().await;
        reference.write_log(&events).await.unwrap();
        let expected = reference.log_notification("acme", n).await.unwrap();
        for seed in 0..8u64 {
            let store = memory().await;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut shuffled = events.clone();
            shuffled.extend(events.iter().take(seed as usize).cloned());
            shuffled.shuffle(&mut rng);
            for batch in shuffled.chunks(1 + seed as usize % 3) {
                store.write_log(batch).await.unwrap();
            }
            // And the whole history replayed once more.
            store.write_log(&events).await.unwrap();
            assert_eq!(store.log_notification("acme", n).await.unwrap(), expected, "seed {seed}");
            assert_eq!(store.log_counts(None).await.unwrap(), LogCounts { notifications: 1, deliveries: 2, events: 8 }, "seed {seed}");
        }
    }

    #[tokio::test]
    async fn deliveries_list_newest_first_with_filters_and_cursor_pages() {
        let store = memory().await;
        let mut all = Vec::new();
        for i in 0..7u128 {
            let n = Uuid::from_u128(100 + i);
            let d = Uuid::new_v5(&n, b"d");
            let mut e = event(n, Some(d), "deliver", if i % 2 == 0 { Status::Sent } else { Status::Failed }, 1, i as i64 * 10);
            if i == 3 {
                e.user_id = Some("bob".into());
            }
            all.push(e);
        }
        store.write_log(&all).await.unwrap();
        let mut seen = Vec::new();
        let mut filter = DeliveryFilter { limit: Some(3), ..DeliveryFilter::default() };
        loop {
            let page = store.log_deliveries("acme", &filter).await.unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|d| d.first_at));
            match page.next {
                Some(next) => filter.cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<Timestamp> = (0..7).rev().map(|i| at(i * 10)).collect();
        assert_eq!(seen, expected, "every delivery once, newest first, across pages");

        let failed = DeliveryFilter { status: Some(Status::Failed), ..DeliveryFilter::default() };
        assert_eq!(store.log_deliveries("acme", &failed).await.unwrap().items.len(), 3);
        let bob = DeliveryFilter { user: Some("bob".into()), ..DeliveryFilter::default() };
        let bobs = store.log_deliveries("acme", &bob).await.unwrap().items;
        assert_eq!(bobs.iter().map(|d| d.first_at).collect::<Vec<_>>(), [at(30)]);
        let window = DeliveryFilter { since: Some(at(20)), until: Some(at(50)), channel: Some(Channel::Sms), ..DeliveryFilter::default() };
        assert_eq!(store.log_deliveries("acme", &window).await.unwrap().items.len(), 3, "20, 30 and 40");
        let other = DeliveryFilter { template: Some("other".into()), ..DeliveryFilter::default() };
        assert!(store.log_deliveries("acme", &other).await.unwrap().items.is_empty());
        assert!(store.log_deliveries("globex", &DeliveryFilter::default()).await.unwrap().items.is_empty(), "tenants apart");
        let forged = DeliveryFilter { cursor: Some("not-a-cursor".into()), ..DeliveryFilter::default() };
        let error = store.log_deliveries("acme", &forged).await.unwrap_err().to_string();
        assert!(error.contains("cursor"), "{error}");
    }

    #[tokio::test]
    async fn pruning_drops_what_was_last_heard_of_before_the_cut() {
        let store = memory().await;
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut events = story(old);
        events.extend(story(new).into_iter().map(|mut e| {
            e.at = e.at.checked_add(jiff::SignedDuration::from_hours(48)).unwrap();
            e
        }));
        store.write_log(&events).await.unwrap();
        assert_eq!(store.log_counts(None).await.unwrap(), LogCounts { notifications: 2, deliveries: 4, events: 16 });
        store.prune_log(at(3600)).await.unwrap();
        assert_eq!(store.log_counts(None).await.unwrap(), LogCounts { notifications: 1, deliveries: 2, events: 8 });
        assert!(store.log_notification("acme", old).await.unwrap().is_none());
        assert_eq!(store.log_notification("acme", new).await.unwrap().unwrap().timeline.len(), 8);
    }
}
