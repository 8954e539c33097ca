//! A delivery: one notification for one recipient on one channel at one address.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Channel, JsonObject, Priority, Timestamp};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub template: String,
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
}
