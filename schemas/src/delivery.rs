//! A delivery: one notification for one recipient on one channel at one address.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::directory::{Environment, Platform, QuietHours};
use crate::{Channel, JsonObject, Priority, Route, Timestamp};

/// The unit of work from enrich to deliver. Enrich creates it; render fills `content`; dedupe,
/// throttle and deliver decide whether and when it goes out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Delivery", extend("$id" = "urn:herald:schema:v1:delivery"))]
pub struct Delivery {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// Deterministic id (see `ids::delivery_id`); the dedupe key.
    pub delivery_id: Uuid,
    pub notification_id: Uuid,
    pub tenant: String,
    /// The directory user, when the recipient has an account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub channel: Channel,
    /// Where the channel sends to: a device token, an e-mail address, a phone number, a URL, or
    /// (for `log`) the recipient key.
    pub address: String,
    /// For `push` and `web_push`: the device's platform (APNs, FCM or web), which sets the
    /// payload format and its size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// A PushKit VoIP token (APNs push type `voip`, 5120-byte payloads).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub voip: bool,
    /// For `push` and `web_push`: the directory device the address belongs to, so deliver can
    /// pick the app's credentials and disable the device when its provider says it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub template: String,
    /// The template version enrich chose: the newest published when the notification was
    /// accepted. Every delivery of a notification renders from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub data: JsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    pub accepted_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Rendered message parts (e.g. `title`, `body`, `subject`, `html`, `text`), set by render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// For `email`: the notification's attachments, by reference to the attachment store (or
    /// small ones inline); deliver reads each from the store as it sends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::Attachment>,
    /// The notification's `send_at`, when it was a scheduled send (a cancel can still stop it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    /// Set by throttle when it deferred the delivery (quiet hours, a cap): when it resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<Timestamp>,
    /// The user's quiet hours, read by throttle in the user's `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// The producer's dedupe key, claimed per recipient and channel by dedupe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<DedupeKey>,
    /// Set by dedupe: the claim it holds on the delivery's state, so deliver can move the state
    /// on with one compare-and-swap instead of reading it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimRef>,
    /// For a voice call redialled after a busy or unanswered receipt: the first call's
    /// delivery id (this delivery's own id is `ids::redial_id` of it and `redial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redial_of: Option<Uuid>,
    /// Which redial this is (1 for the first); 0 for a first call.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redial: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A producer's dedupe key with its window, as carried by a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupeKey {
    pub key: String,
    /// How long the key holds, in seconds.
    pub window_secs: u64,
}

/// A dedupe claim on a delivery's state: the dedupe message that won it, and the state's
/// revision when it said `claimed`. A compare-and-swap at that revision succeeds only while the
/// state is still that claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRef {
    /// The stream sequence of the dedupe message holding the claim.
    pub sequence: u64,
    /// The state's revision in the dedupe bucket.
    pub revision: u64,
}

/// The device a push delivery goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRef {
    /// The tenant's id of the device.
    pub id: String,
    /// Bundle id (APNs topic), Android package name or web app id: which of the tenant's
    /// credentials sign the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// APNs environment of the token (which APNs host serves it).
    #[serde(default)]
    pub environment: Environment,
}

impl Delivery {
    /// The deliver route the delivery waits on.
    pub fn route(&self) -> Route {
        Route::of(self.channel, self.platform)
    }
}

/// The rendered message, by part name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Part name to rendered text.
    pub parts: BTreeMap<String, String>,
    /// Template version the parts were rendered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
    /// The template locale the parts came from (`ko`, `default`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Message headers to send (e-mail: `List-Unsubscribe`, `List-Unsubscribe-Post`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// For SMS: how the body is encoded and into how many segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsInfo>,
    /// Whether a part was shortened to fit the channel (the template allows it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// An SMS body's encoding and size on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsInfo {
    pub encoding: SmsEncoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: u32,
    /// Messages the body is split into (concatenated SMS).
    pub segments: u32,
}

/// The two SMS alphabets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsEncoding {
    /// GSM 03.38 default alphabet and its extension table: 160 septets, 153 per segment.
    Gsm7,
    /// UTF-16: 70 code units, 67 per segment.
    Ucs2,
}
