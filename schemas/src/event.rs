//! The tracking event: every state change of every notification, on `herald.events.<tenant>.<status>`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Channel, Timestamp};

/// One state change. Analysts consume these; operators trace a notification by them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "TrackEvent", extend("$id" = "urn:herald:schema:v1:track-event"))]
pub struct TrackEvent {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// Deterministic (see `ids::event_id`): the same state change reported twice has one id.
    pub event_id: Uuid,
    /// Absent only for a request rejected before it could be given an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    pub status: Status,
    /// Machine-readable reason for drops, failures and retries, e.g. `invalid_json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `deduplicated` by idempotency key: the notification the key admitted first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_notification_id: Option<Uuid>,
    /// For `scheduled`: when the notification will be sent (its `send_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    /// For `deferred`: when the delivery resumes (the end of the quiet hours or of the cap's
    /// window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<Timestamp>,
    /// The template the notification was sent with (for analytics by template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The notification's category, e.g. `marketing` (for analytics by category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The provider the change is about (`sent`, a provider's refusal, a receipt), e.g. `twilio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's id for the message (`sent` and receipts), e.g. a Twilio `SM…` sid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The stage that reported the change.
    pub stage: String,
    /// Which delivery attempt of the stage's input this was (1 for the first).
    pub attempt: u32,
    /// When the change happened.
    pub at: Timestamp,
}

/// Lifecycle states. Terminal states of a delivery: `sent`, `failed`, `dead_lettered`,
/// `skipped`, `opted_out`, `deduplicated`, `expired`, `throttled`, `cancelled`; of a request:
/// `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ingest accepted the request and gave it an id.
    Accepted,
    /// Ingest refused the request; `reason` says why. Not retried.
    Rejected,
    /// The request is a repeat of an earlier one (same idempotency key) or the delivery was
    /// already claimed (replay, redelivery).
    Deduplicated,
    /// A recipient could not be reached on a channel (no address, channel disabled).
    Skipped,
    /// The recipient opted out of the channel or category (or of everything).
    OptedOut,
    /// A delivery passed its `expires_at` before it could be sent.
    Expired,
    /// A delivery was dropped by a frequency cap whose policy is `throttle`; `reason` is
    /// `frequency_cap` and `detail` names the cap.
    Throttled,
    /// A notification with a future `send_at` is stored and will be processed then
    /// (`scheduled_for`). Not terminal.
    Scheduled,
    /// A delivery waits for quiet hours to end or a cap's window to open (`deferred_until`);
    /// `reason` is `quiet_hours` or `frequency_cap`. Not terminal: throttle sees it again then.
    Deferred,
    /// The producer cancelled a scheduled or deferred notification (`herald cancel`) before it
    /// was sent; nothing was sent.
    Cancelled,
    /// The provider accepted the delivery.
    Sent,
    /// A transient failure; the stage will try again (`attempt` counts).
    Retrying,
    /// Something every message needs is down (a store, the broker, a provider call of another
    /// replica still in flight): the message is held without spending an attempt, for at most
    /// `runner.hold_max`, then retried as usual. One event per hold.
    Held,
    /// A permanent failure for this delivery (unknown recipient, invalid token …).
    Failed,
    /// The provider said the device's token (or web push subscription) is gone for good
    /// (`reason` is its code, e.g. `Unregistered`): the device is disabled in the directory and
    /// never tried again until the app registers it anew. Reported beside the delivery's `failed`.
    TokenInvalidated,
    /// The message could not be processed after its retries and sits in the dead-letter stream.
    DeadLettered,
    /// The recipient asked not to be contacted on the channel again (an SMS provider's STOP,
    /// Twilio 21610; an e-mail's unsubscribe link, stage `engagement`): the opt-out is recorded
    /// in the store, and every later delivery to them on that channel is `opted_out`. Reported
    /// beside the delivery's own `opted_out` for a STOP.
    Unsubscribed,
    /// The provider reports the message reached the recipient (an SMS delivery receipt, a call
    /// answered and completed). From a receipt, after `sent`.
    Delivered,
    /// The provider reports it could not reach the recipient after accepting the message (an
    /// SMS carrier's refusal, a call busy, unanswered or failed); `reason` is the provider's
    /// status or error code. From a receipt, after `sent`. A voice call may be redialled per
    /// `receipts.redial`: the new call is another delivery (`redial_of` names the first).
    Undelivered,
    /// The recipient's mail server refused the e-mail (a SendGrid `bounce`): `reason` `bounce`
    /// (hard: the address is suppressed, every later e-mail to it is `opted_out`) or `blocked`.
    Bounced,
    /// The recipient marked the e-mail as spam (a SendGrid `spamreport`): they are unsubscribed
    /// from e-mail, and every later e-mail to them is `opted_out`.
    Complained,
    /// The recipient opened the message (an e-mail's open pixel: Herald's own, stage
    /// `engagement`, or as the provider reports it).
    Opened,
    /// The recipient followed a link in the message; `detail` names the link.
    Clicked,
}

impl TrackEvent {
    /// An event with only what every event has: tenant, status, reporting stage and time, at
    /// attempt 1; the rest unset, the id nil (the reporter derives it, see [`crate::ids`]).
    pub fn new(tenant: &str, status: Status, stage: &str, at: Timestamp) -> Self {
        TrackEvent {
            v: crate::WIRE_VERSION,
            event_id: Uuid::nil(),
            notification_id: None,
            delivery_id: None,
            tenant: tenant.to_owned(),
            user_id: None,
            channel: None,
            status,
            reason: None,
            detail: None,
            original_notification_id: None,
            scheduled_for: None,
            deferred_until: None,
            template: None,
            category: None,
            provider: None,
            provider_message_id: None,
            stage: stage.to_owned(),
            attempt: 1,
            at,
        }
    }
}

impl Status {
    /// Whether the status is reported once per delivery attempt of a message (and so carries the
    /// attempt in its event id) rather than once however often it is reported.
    pub fn is_per_attempt(self) -> bool {
        matches!(self, Status::Retrying | Status::Held)
    }

    /// Whether the status ends a request or delivery without anything sent: a rejection, skip,
    /// opt-out, expiry, throttle, cancel, failure or dead letter (a duplicate is not counted
    /// here: the original goes on).
    pub fn ends_unsent(self) -> bool {
        matches!(
            self,
            Status::Rejected
                | Status::Skipped
                | Status::OptedOut
                | Status::Expired
                | Status::Throttled
                | Status::Cancelled
                | Status::Failed
                | Status::DeadLettered
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Deduplicated => "deduplicated",
            Status::Skipped => "skipped",
            Status::OptedOut => "opted_out",
            Status::Expired => "expired",
            Status::Throttled => "throttled",
            Status::Scheduled => "scheduled",
            Status::Deferred => "deferred",
            Status::Cancelled => "cancelled",
            Status::Sent => "sent",
            Status::Retrying => "retrying",
            Status::Held => "held",
            Status::Failed => "failed",
            Status::TokenInvalidated => "token_invalidated",
            Status::DeadLettered => "dead_lettered",
            Status::Unsubscribed => "unsubscribed",
            Status::Delivered => "delivered",
            Status::Undelivered => "undelivered",
            Status::Bounced => "bounced",
            Status::Complained => "complained",
            Status::Opened => "opened",
            Status::Clicked => "clicked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
