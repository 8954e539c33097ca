//! The APNs request a delivery becomes: `POST /3/device/<token>` with the JSON payload render
//! measured, and the headers that say how to deliver it.

use herald_render::limits::{Unfit, apns_payload};
use herald_schemas::directory::Environment;
use herald_schemas::{Delivery, Priority};

use crate::ProviderError;

/// One APNs call, built.
#[derive(Debug, Clone, PartialEq)]
pub struct ApnsRequest {
    /// `/3/device/<token>`.
    pub path: String,
    pub environment: Environment,
    /// `apns-*` headers, in the order sent.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Builds the call for `delivery` to an app whose bundle id is `topic`.
pub fn build(delivery: &Delivery, topic: &str) -> Result<ApnsRequest, ProviderError> {
    let parts = delivery.content.as_ref().map(|c| c.parts.clone()).unwrap_or_default();
    let payload = apns_payload(&parts).map_err(|e| {
        let detail = match e {
            Unfit::TooLarge(d) | Unfit::Invalid(d) => d,
        };
        ProviderError::permanent("invalid_payload", detail)
    })?;
    let alert = ["title", "body"].iter().any(|p| parts.get(*p).is_some_and(|v| !v.is_empty()));
    let (push_type, topic) = if delivery.voip {
        ("voip", format!("{topic}.voip"))
    } else if alert {
        ("alert", topic.to_owned())
    } else {
        ("background", topic.to_owned())
    };
    // 10 delivers at once; 5 lets the device batch it to save power. Background pushes must
    // be 5 (APNs refuses 10 for them), and `low` is what power-considerate delivery is for.
    let priority = if push_type == "background" || delivery.priority == Priority::Low { "5" } else { "10" };
    let mut headers = vec![
        ("apns-id", delivery.delivery_id.hyphenated().to_string()),
        ("apns-topic", topic),
        ("apns-push-type", push_type.to_owned()),
        ("apns-priority", priority.to_owned()),
    ];
    if let Some(expires_at) = delivery.expires_at {
        headers.push(("apns-expiration", expires_at.as_second().max(1).to_string()));
    }
    if let Some(collapse) = collapse_id(delivery) {
        headers.push(("apns-collapse-id", collapse));
    }
    let body = serde_json::to_vec(&payload).map_err(|e| ProviderError::permanent("invalid_payload", e.to_string()))?;
    let environment = delivery.device.as_ref().map(|d| d.environment).unwrap_or_default();
    Ok(ApnsRequest { path: format!("/3/device/{}", delivery.address), environment, headers, body })
}

/// A producer's dedupe key says "a newer one replaces this": on the device, that is the
/// collapse id. Longer than APNs' 64 bytes, it is replaced by its UUIDv5 (stable, so the
/// replacement still works).
fn collapse_id(delivery: &Delivery) -> Option<String> {
    let key = &delivery.dedupe.as_ref()?.key;
    if key.len() <= 64 {
        Some(key.clone())
    } else {
        Some(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).hyphenated().to_string())
    }
}
