//! Building tracking events.

use herald_schemas::{Channel, Delivery, Notification, Status, TrackEvent, ids};
use uuid::Uuid;

use crate::Meta;

/// Builds a [`TrackEvent`] about a notification or a delivery, with a deterministic id.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: TrackEvent,
    /// The delivery's address (a phone number, an e-mail address, a token), kept out of the
    /// event: the tracking stream carries ids, never addresses.
    address: Option<String>,
}

impl EventBuilder {
    /// An event about a notification as a whole.
    pub fn notification(stage: &str, meta: &Meta, notification: &Notification, status: Status) -> Self {
        let mut builder = Self::base(stage, meta, &notification.tenant, Some(notification.notification_id), status);
        builder.event.template = Some(notification.request.template.clone());
        builder.event.category = notification.request.category.clone();
        builder
    }

    /// An event about a notification known only by its id (a cancel).
    pub fn about(stage: &str, meta: &Meta, tenant: &str, notification_id: Uuid, status: Status) -> Self {
        Self::base(stage, meta, tenant, Some(notification_id), status)
    }

    /// An event about a request that has no notification id yet (it was rejected).
    pub fn request(stage: &str, meta: &Meta, status: Status) -> Self {
        let mut builder = Self::base(stage, meta, &meta.tenant, None, status);
        builder.event.event_id = ids::rejection_id(&meta.tenant, meta.sequence);
        builder
    }

    /// An event about one delivery.
    pub fn delivery(stage: &str, meta: &Meta, delivery: &Delivery, status: Status) -> Self {
        let mut builder = Self::base(stage, meta, &delivery.tenant, Some(delivery.notification_id), status);
        builder.event.delivery_id = Some(delivery.delivery_id);
        builder.event.user_id = delivery.user_id.clone();
        builder.event.channel = Some(delivery.channel);
        builder.event.template = Some(delivery.template.clone());
        builder.event.category = delivery.category.clone();
        builder.event.event_id = id(delivery.delivery_id, stage, status, meta.attempt);
        builder.address = Some(delivery.address.clone()).filter(|a| a.len() >= 3);
        builder
    }

    fn base(stage: &str, meta: &Meta, tenant: &str, notification_id: Option<Uuid>, status: Status) -> Self {
        let event_id = notification_id.map(|n| id(n, stage, status, meta.attempt)).unwrap_or_default();
        EventBuilder {
            event: TrackEvent {
                event_id,
                notification_id,
                attempt: meta.attempt,
                ..TrackEvent::new(tenant, status, stage, meta.received_at)
            },
            address: None,
        }
    }

    /// An event about one recipient of a notification that has no delivery (e.g. unknown user).
    pub fn recipient(mut self, subject_key: &str, user_id: Option<&str>, channel: Option<Channel>) -> Self {
        if let Some(n) = self.event.notification_id {
            let subject = Uuid::new_v5(&n, subject_key.as_bytes());
            self.event.event_id = id(subject, &self.event.stage, self.event.status, self.event.attempt);
        }
        self.event.user_id = user_id.map(str::to_owned);
        self.event.channel = channel;
        self
    }

    /// The notification an idempotency key admitted first.
    pub fn original(mut self, notification_id: Uuid) -> Self {
        self.event.original_notification_id = Some(notification_id);
        self
    }

    pub fn scheduled_for(mut self, at: herald_schemas::Timestamp) -> Self {
        self.event.scheduled_for = Some(at);
        self
    }

    /// When a deferred delivery resumes. Each deferral is its own state change, so the time
    /// enters the event id (a delivery deferred twice reports twice).
    pub fn deferred_until(mut self, until: herald_schemas::Timestamp) -> Self {
        self.event.deferred_until = Some(until);
        let subject = self.event.delivery_id.or(self.event.notification_id).unwrap_or_default();
        let subject = Uuid::new_v5(&subject, until.to_string().as_bytes());
        self.event.event_id = id(subject, &self.event.stage, self.event.status, self.event.attempt);
        self
    }

    /// The provider the change is about, and its id for the message when it gave one.
    pub fn provider(mut self, provider: &str, message_id: Option<&str>) -> Self {
        self.event.provider = Some(provider.to_owned());
        self.event.provider_message_id = message_id.map(str::to_owned);
        self
    }

    pub fn reason(mut self, reason: impl Into<String>, detail: impl Into<String>) -> Self {
        self.event.reason = Some(reason.into());
        self.event.detail = Some(detail.into());
        self
    }

    /// The event, with the delivery's address written `[address]` wherever a detail quotes it
    /// (a provider's refusal often does: "The 'To' number +1… is not a valid phone number").
    pub fn build(mut self) -> TrackEvent {
        if let (Some(address), Some(detail)) = (&self.address, &mut self.event.detail)
            && detail.contains(address.as_str())
        {
            *detail = detail.replace(address.as_str(), "[address]");
        }
        self.event
    }
}

/// Retries and holds are one event per attempt; every other state change is one event however often it
/// is reported, so a redelivered message re-reports with the same id and the stream dedupes it.
fn id(subject: Uuid, stage: &str, status: Status, attempt: u32) -> Uuid {
    let attempt = if status.is_per_attempt() { attempt } else { 0 };
    ids::event_id(subject, stage, status, attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_event_never_quotes_the_address() {
        let delivery = Delivery { address: "+14155550100".into(), ..crate::memory::delivery(3) };
        let meta = Meta::for_tests();
        let event = EventBuilder::delivery("deliver", &meta, &delivery, Status::Failed)
            .reason("21211", "Twilio answered 400: The 'To' number +14155550100 is not a valid phone number.")
            .build();
        assert_eq!(event.detail.as_deref(), Some("Twilio answered 400: The 'To' number [address] is not a valid phone number."));
        assert_eq!((event.delivery_id, event.user_id.as_deref()), (Some(delivery.delivery_id), Some("alice")), "the ids stay");
        let other =
            EventBuilder::about("cancel", &meta, "acme", delivery.notification_id, Status::Cancelled).reason("cancelled", "by +1").build();
        assert_eq!(other.detail.as_deref(), Some("by +1"), "only a delivery's own address is written over");
    }
}
