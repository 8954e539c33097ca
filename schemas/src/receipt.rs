//! A provider's receipt: what a provider reported about a message after accepting it (a Twilio
//! status callback), on `<prefix>.receipts.<tenant>.<provider>`. The HTTP receiver checks the
//! provider's signature and publishes it; the receipts stage turns it into tracking events.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Timestamp;

/// One receipt, as the receiver verified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Receipt", extend("$id" = "urn:herald:schema:v1:receipt"))]
pub struct Receipt {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// Deterministic (`ids::receipt_id`): a receipt the provider posts again has the same id.
    pub receipt_id: Uuid,
    pub tenant: String,
    /// The delivery the receipt is about (named in the callback URL Herald gave the provider).
    pub delivery_id: Uuid,
    /// `twilio`.
    pub provider: String,
    /// The provider's id of the message or call (`SM…`, `CA…`).
    pub provider_message_id: String,
    /// The provider's status, as it wrote it (`delivered`, `undelivered`, `busy`, `no-answer` …).
    pub status: String,
    /// The provider's error code, when it gave one (Twilio `ErrorCode`, e.g. `30003`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Other fields worth keeping (Twilio `AnsweredBy`, `CallDuration`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// When Herald received it.
    pub received_at: Timestamp,
}
