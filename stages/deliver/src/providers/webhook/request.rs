//! The request a webhook delivery becomes: `POST` of the rendered `body` part (JSON) to the
//! recipient's URL, signed so the receiver can tell it came from Herald and was not replayed
//! later:
//!
//! - `Herald-Timestamp`: Unix seconds when it was signed;
//! - `Herald-Signature`: `v1=` and the lower-case hex HMAC-SHA256, keyed with the tenant's
//!   secret, of the timestamp, a `.`, and the body's bytes exactly as sent;
//! - `Herald-Delivery-Id`: the delivery id, the same on every retry (the receiver's idempotency
//!   key); `Herald-Notification-Id` the notification's.

use herald_schemas::Delivery;
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;

use crate::ProviderError;

/// A webhook ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub url: Url,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { unreachable!("HMAC accepts every key length") };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The recipient's URL, if Herald may call it at all: `http` or `https`, a host, no user info.
pub fn parse_url(address: &str) -> Result<Url, ProviderError> {
    let bad = |why: &str| ProviderError::permanent("invalid_url", format!("webhook URL {address:?} {why}"));
    let url = Url::parse(address).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http:// or https://"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    Ok(url)
}

/// Builds the signed request for `delivery` at `timestamp` (Unix seconds).
pub fn build(delivery: &Delivery, secret: &str, timestamp: i64) -> Result<WebhookRequest, ProviderError> {
    let url = parse_url(&delivery.address)?;
    let body = delivery
        .content
        .as_ref()
        .and_then(|c| c.parts.get("body"))
        .cloned()
        .ok_or_else(|| ProviderError::permanent("no_channel_content", "the delivery has no rendered webhook `body`"))?;
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("herald-timestamp", timestamp.to_string()),
        ("herald-signature", signature(secret, timestamp, body.as_bytes())),
        ("herald-delivery-id", delivery.delivery_id.to_string()),
        ("herald-notification-id", delivery.notification_id.to_string()),
    ];
    Ok(WebhookRequest { url, body, headers })
}
