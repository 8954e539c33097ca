//! The FCM HTTP v1 `messages:send` body a delivery becomes: the token, the notification and
//! data render measured, and the platform blocks that carry its priority, lifetime and collapse
//! key to Android, iOS (through FCM) and browsers alike.

use herald_render::limits::{Unfit, fcm_payload};
use herald_schemas::{Delivery, Priority, Timestamp};
use serde_json::{Value, json};

use crate::ProviderError;

/// The request body for `delivery`.
pub fn build(delivery: &Delivery, now: Timestamp) -> Result<Value, ProviderError> {
    let parts = delivery.content.as_ref().map(|c| c.parts.clone()).unwrap_or_default();
    let payload = fcm_payload(&parts).map_err(|e| {
        let detail = match e {
            Unfit::TooLarge(d) | Unfit::Invalid(d) => d,
        };
        ProviderError::permanent("invalid_payload", detail)
    })?;
    let mut message = json!({ "token": delivery.address });
    if let Value::Object(payload) = payload {
        for (key, value) in payload {
            // An empty notification (data-only message) is left out: FCM then wakes the app.
            if key == "notification" && value.as_object().is_some_and(|n| n.is_empty()) {
                continue;
            }
            message[key] = value;
        }
    }
    let urgent = delivery.priority != Priority::Low;
    let ttl = delivery.expires_at.map(|at| (at.as_second() - now.as_second()).max(0));
    let mut android = json!({ "priority": if urgent { "HIGH" } else { "NORMAL" } });
    let mut apns_headers = json!({ "apns-priority": if urgent { "10" } else { "5" } });
    let mut webpush_headers = json!({ "Urgency": if urgent { "high" } else { "low" } });
    if let Some(ttl) = ttl {
        android["ttl"] = json!(format!("{ttl}s"));
        apns_headers["apns-expiration"] = json!(delivery.expires_at.map(|at| at.as_second()).unwrap_or(0).to_string());
        webpush_headers["TTL"] = json!(ttl.to_string());
    }
    if let Some(dedupe) = &delivery.dedupe {
        android["collapse_key"] = json!(dedupe.key);
        apns_headers["apns-collapse-id"] = json!(dedupe.key.chars().take(64).collect::<String>());
        webpush_headers["Topic"] = json!(dedupe.key.chars().filter(char::is_ascii_alphanumeric).take(32).collect::<String>());
    }
    message["android"] = android;
    message["apns"] = json!({ "headers": apns_headers });
    message["webpush"] = json!({ "headers": webpush_headers });
    // The delivery id travels with the message, so the app (and a support engineer) can match
    // what arrived to Herald's records.
    message["fcm_options"] = json!({ "analytics_label": format!("herald-{}", delivery.template.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.~%".contains(*c)).take(40).collect::<String>()) });
    Ok(json!({ "message": message }))
}
