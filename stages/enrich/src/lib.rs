//! Enrich: from "notify these recipients" to one delivery per (recipient, channel, address).
//!
//! In: a [`Notification`] from ingest.
//! Out: one [`Delivery`] per reachable (recipient, channel, address) to render; for everything
//! that cannot be reached, an event with the reason: `failed`/`unknown_recipient` for a user the
//! directory does not know, `skipped`/`channel_disabled` for a channel this deployment does not
//! deliver, `skipped`/`no_address` for a user without an address on the channel.
//! Side effects: none (directory reads only).
//! Invariants: delivery ids are derived from (notification, recipient, channel, address), so
//! running enrich twice on one notification emits the same deliveries.

use std::future::Future;

use herald_schemas::{Channel, Delivery, Notification, Recipient, Status, ids};
use herald_stage::{EventBuilder, Hop, Meta, Outcome, PortError, Stage, StageError};
use serde::{Deserialize, Serialize};

/// A user of the directory, with what enrich needs to reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// E.164.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Where recipients are looked up.
pub trait Directory: Send + Sync + 'static {
    fn user(&self, tenant: &str, id: &str) -> impl Future<Output = Result<Option<User>, PortError>> + Send;
}

/// Which channels the deployment uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Channels used when a request names none.
    pub default_channels: Vec<Channel>,
    /// Channels this deployment can deliver; others are skipped with an event.
    pub enabled_channels: Vec<Channel>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig { default_channels: vec![Channel::Log], enabled_channels: vec![Channel::Log] }
    }
}

/// The enrich stage over a directory.
#[derive(Debug)]
pub struct Enrich<D> {
    directory: D,
    config: EnrichConfig,
}

impl<D: Directory> Enrich<D> {
    pub fn new(directory: D, config: EnrichConfig) -> Self {
        Enrich { directory, config }
    }
}

/// A resolved recipient: who, and how to reach them on each channel.
struct Reachable {
    key: String,
    user: Option<User>,
}

impl Reachable {
    fn address(&self, channel: Channel, recipient: &Recipient) -> Option<String> {
        match (&self.user, channel) {
            (_, Channel::Log) => Some(self.key.clone()),
            (Some(user), Channel::Email) => user.email.clone(),
            (Some(user), Channel::Sms | Channel::Voice) => user.phone.clone(),
            (Some(_), _) => None,
            (None, Channel::Email) => recipient.email.clone(),
            (None, Channel::Sms | Channel::Voice) => recipient.phone.clone(),
            (None, Channel::Webhook) => recipient.webhook.clone(),
            (None, _) => None,
        }
    }
}

impl<D: Directory> Stage for Enrich<D> {
    const NAME: &'static str = "enrich";
    type Input = Notification;

    async fn process(&self, notification: Notification, meta: &Meta) -> Result<Outcome, StageError> {
        let mut outcome = Outcome::new();
        let request = &notification.request;
        let channels = request.channels.as_deref().unwrap_or(&self.config.default_channels);
        for recipient in &request.recipients {
            let key = recipient.key();
            let event = |status: Status, channel: Option<Channel>, reason: &str, detail: String| {
                EventBuilder::notification(Self::NAME, meta, &notification, status)
                    .recipient(
                        &format!("{key}\0{}", channel.map(Channel::as_str).unwrap_or_default()),
                        recipient.user_id.as_deref(),
                        channel,
                    )
                    .reason(reason, detail)
                    .build()
            };
            let reachable = if let Some(id) = &recipient.user_id {
                match self.directory.user(&notification.tenant, id).await? {
                    Some(user) => Reachable { key: key.clone(), user: Some(user) },
                    None => {
                        let detail = format!("user `{id}` is not in tenant `{}`'s directory", notification.tenant);
                        outcome.push(Hop::Track, &event(Status::Failed, None, "unknown_recipient", detail), None)?;
                        continue;
                    }
                }
            } else if let Some(group) = &recipient.group {
                let detail = format!("group `{group}` cannot be expanded: this version's directory has no groups");
                outcome.push(Hop::Track, &event(Status::Skipped, None, "groups_unsupported", detail), None)?;
                continue;
            } else {
                Reachable { key: key.clone(), user: None }
            };
            for &channel in channels {
                if !self.config.enabled_channels.contains(&channel) {
                    let detail = format!("channel `{channel}` is not enabled in this deployment");
                    outcome.push(Hop::Track, &event(Status::Skipped, Some(channel), "channel_disabled", detail), None)?;
                    continue;
                }
                let Some(address) = reachable.address(channel, recipient) else {
                    let detail = format!("{key} has no address for channel `{channel}`");
                    outcome.push(Hop::Track, &event(Status::Skipped, Some(channel), "no_address", detail), None)?;
                    continue;
                };
                let user = reachable.user.as_ref();
                let delivery = Delivery {
                    v: herald_schemas::WIRE_VERSION,
                    delivery_id: ids::delivery_id(notification.notification_id, &key, channel, &address),
                    notification_id: notification.notification_id,
                    tenant: notification.tenant.clone(),
                    user_id: recipient.user_id.clone(),
                    channel,
                    address,
                    locale: user.and_then(|u| u.locale.clone()),
                    timezone: user.and_then(|u| u.timezone.clone()),
                    template: request.template.clone(),
                    data: request.data.clone(),
                    category: request.category.clone(),
                    priority: request.priority,
                    accepted_at: notification.accepted_at,
                    expires_at: request.expires_at,
                    content: None,
                };
                outcome.push(Hop::Render, &delivery, None)?;
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use herald_schemas::NotificationRequest;

    use super::*;

    struct Users(HashMap<String, User>);

    impl Directory for Users {
        async fn user(&self, _tenant: &str, id: &str) -> Result<Option<User>, PortError> {
            Ok(self.0.get(id).cloned())
        }
    }

    fn stage(config: EnrichConfig) -> Enrich<Users> {
        let alice = User { id: "alice".into(), email: Some("alice@example.com".into()), locale: Some("ko-KR".into()), ..User::default() };
        Enrich::new(Users(HashMap::from([("alice".to_owned(), alice)])), config)
    }

    fn notification(body: &str) -> Notification {
        Notification {
            v: 1,
            notification_id: uuid::Uuid::from_u128(1),
            tenant: "acme".into(),
            accepted_at: jiff::Timestamp::UNIX_EPOCH,
            request: NotificationRequest::parse(body.as_bytes()).unwrap(),
        }
    }

    /// Runs enrich on `body` and returns (deliveries as `channel:address`, events as `status/reason`).
    async fn check(config: EnrichConfig, body: &str, deliveries: &[&str], events: &[&str]) {
        let out = stage(config).process(notification(body), &Meta::for_tests()).await.unwrap();
        let got: Vec<String> = out.forwarded::<Delivery>(Hop::Render).iter().map(|d| format!("{}:{}", d.channel, d.address)).collect();
        assert_eq!(got, deliveries, "deliveries for {body}");
        let got: Vec<String> = out.events().iter().map(|e| format!("{}/{}", e.status, e.reason.as_deref().unwrap_or(""))).collect();
        assert_eq!(got, events, "events for {body}");
    }

    #[tokio::test]
    async fn resolution_table() {
        let both = EnrichConfig { default_channels: vec![Channel::Log], enabled_channels: vec![Channel::Log, Channel::Email] };
        check(EnrichConfig::default(), r#"{"template":"t","recipients":[{"user_id":"alice"}]}"#, &["log:user:alice"], &[]).await;
        check(
            both.clone(),
            r#"{"template":"t","recipients":[{"user_id":"alice"}],"channels":["email","log","sms"]}"#,
            &["email:alice@example.com", "log:user:alice"],
            &["skipped/channel_disabled"],
        )
        .await;
        check(EnrichConfig::default(), r#"{"template":"t","recipients":[{"user_id":"bob"}]}"#, &[], &["failed/unknown_recipient"]).await;
        check(
            both.clone(),
            r#"{"template":"t","recipients":[{"email":"x@example.com"}],"channels":["email"]}"#,
            &["email:x@example.com"],
            &[],
        )
        .await;
        check(
            EnrichConfig { enabled_channels: vec![Channel::Log, Channel::Sms], ..EnrichConfig::default() },
            r#"{"template":"t","recipients":[{"user_id":"alice"}],"channels":["sms"]}"#,
            &[],
            &["skipped/no_address"],
        )
        .await;
        check(EnrichConfig::default(), r#"{"template":"t","recipients":[{"group":"staff"}]}"#, &[], &["skipped/groups_unsupported"]).await;
    }

    #[tokio::test]
    async fn deliveries_are_deterministic_and_carry_the_user() {
        let body = r#"{"template":"t","recipients":[{"user_id":"alice"}],"data":{"n":1}}"#;
        let a = stage(EnrichConfig::default()).process(notification(body), &Meta::for_tests()).await.unwrap();
        let b = stage(EnrichConfig::default()).process(notification(body), &Meta::for_tests()).await.unwrap();
        let (a, b): (Vec<Delivery>, Vec<Delivery>) = (a.forwarded(Hop::Render), b.forwarded(Hop::Render));
        assert_eq!(a[0].delivery_id, b[0].delivery_id);
        assert_eq!(a[0].locale.as_deref(), Some("ko-KR"));
        assert_eq!(a[0].data.get("n"), Some(&serde_json::json!(1)));
    }
}
