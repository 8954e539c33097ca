//! The push message a delivery becomes (RFC 8030): the JSON render measured, encrypted for the
//! subscription (RFC 8291 `aes128gcm`), with `TTL`, `Urgency` and `Topic`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_render::limits::{Unfit, web_push_payload};
use herald_schemas::directory::WebPushSubscription;
use herald_schemas::{Delivery, Priority, Timestamp};

use crate::ProviderError;

/// One push, built (the `Authorization` header is added by the caller).
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub endpoint: String,
    /// `scheme://host[:port]` of the endpoint: the VAPID audience.
    pub origin: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Builds the push for `delivery`, whose address is the subscription's JSON.
pub fn build(delivery: &Delivery, now: Timestamp, default_ttl: Duration) -> Result<PushRequest, ProviderError> {
    let gone = |detail: String| ProviderError::new(crate::providers::Class::TokenInvalid, "invalid_subscription", detail);
    let subscription: WebPushSubscription =
        serde_json::from_str(&delivery.address).map_err(|e| gone(format!("the address is not a push subscription ({e})")))?;
    let decode = |what: &str, value: &str| {
        URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).map_err(|e| gone(format!("the subscription's {what} is not base64url ({e})")))
    };
    let p256dh = p256::PublicKey::from_sec1_bytes(&decode("p256dh", &subscription.keys.p256dh)?)
        .map_err(|e| gone(format!("the subscription's p256dh is not a P-256 point ({e})")))?;
    let auth = decode("auth", &subscription.keys.auth)?;
    if auth.len() != 16 {
        return Err(gone(format!("the subscription's auth secret is {} bytes, not 16", auth.len())));
    }
    let endpoint: reqwest::Url = subscription.endpoint.parse().map_err(|e| gone(format!("the endpoint is not a URL ({e})")))?;
    let origin = endpoint.origin().ascii_serialization();

    let parts = delivery.content.as_ref().map(|c| c.parts.clone()).unwrap_or_default();
    let payload = web_push_payload(&parts).map_err(|e| {
        let detail = match e {
            Unfit::TooLarge(d) | Unfit::Invalid(d) => d,
        };
        ProviderError::permanent("invalid_payload", detail)
    })?;
    let plaintext = serde_json::to_vec(&payload).map_err(|e| ProviderError::permanent("invalid_payload", e.to_string()))?;
    let body = web_push_native::encrypt(plaintext, &p256dh, web_push_native::Auth::from_slice(&auth))
        .map_err(|e| ProviderError::permanent("encryption_failed", format!("cannot encrypt for the subscription: {e:?}")))?;

    let ttl = match delivery.expires_at {
        Some(at) => (at.as_second() - now.as_second()).max(0).to_string(),
        None => default_ttl.as_secs().to_string(),
    };
    let urgency = match delivery.priority {
        Priority::Critical | Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    };
    let mut headers = vec![
        ("TTL", ttl),
        ("Urgency", urgency.to_owned()),
        ("Content-Encoding", "aes128gcm".to_owned()),
        ("Content-Type", "application/octet-stream".to_owned()),
    ];
    // A newer message with the same topic replaces an undelivered one: the producer's dedupe
    // key says exactly that. Topics are at most 32 base64url characters.
    if let Some(dedupe) = &delivery.dedupe {
        let topic: String = dedupe.key.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(32).collect();
        if !topic.is_empty() {
            headers.push(("Topic", topic));
        }
    }
    Ok(PushRequest { endpoint: subscription.endpoint, origin, headers, body })
}
