//! An in-app inbox message: what deliver stores on `<prefix>.inbox.<tenant>.<user>` and the
//! inbox API lists, with the user's read / seen / archived state beside it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JsonObject, Timestamp};

/// One message of a user's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "InboxMessage", extend("$id" = "urn:herald:schema:v1:inbox-message"))]
pub struct InboxMessage {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// The delivery it is (the same id as in its tracking events).
    pub id: Uuid,
    pub notification_id: Uuid,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The rendered `title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The rendered `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The rendered `data` part (a JSON object for the app: a deep link, an order id…).
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub data: JsonObject,
    /// When it was sent to the inbox.
    pub sent_at: Timestamp,
}
