//! An accepted notification: what ingest hands to enrich.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{NotificationRequest, Timestamp};

/// A request that passed ingest: validated, given its id, owned by a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Notification", extend("$id" = "urn:herald:schema:v1:notification"))]
pub struct Notification {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// Deterministic id (see `ids::notification_id`): a redelivered request gets the same one.
    pub notification_id: Uuid,
    /// The tenant the request was published for.
    pub tenant: String,
    /// When ingest accepted the request.
    pub accepted_at: Timestamp,
    /// The request as the producer sent it.
    pub request: NotificationRequest,
}

/// A producer's cancel of a scheduled or deferred notification, on `herald.cancel.<tenant>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "CancelRequest", extend("$id" = "urn:herald:schema:v1:cancel-request"))]
pub struct CancelRequest {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// The notification to cancel (of the tenant in the subject).
    pub notification_id: Uuid,
    /// Who or what asked, recorded in the `cancelled` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}
