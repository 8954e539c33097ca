//! Providers' receipts: `POST /v1/receipts/twilio/{tenant}/{delivery}`, the status callback URL
//! deliver gives Twilio with each message and call (`deliver.twilio.status_callback` +
//! `/<tenant>/<delivery id>`), and `POST /v1/receipts/sendgrid/{tenant}`, the tenant's SendGrid
//! event webhook.
//!
//! No admin token: the request is authenticated by `X-Twilio-Signature`, which Twilio computes
//! as base64(HMAC-SHA1(auth token, URL + every form parameter's name and value, sorted by
//! name)). The URL is the configured one, never the `Host` the request names, so a proxy in
//! front changes nothing. The auth token is the tenant's stored Twilio account's, and the
//! callback's `AccountSid` must be that account. A bad or missing signature is `401` and
//! changes nothing. A verified receipt is published on `<prefix>.receipts.<tenant>.twilio`
//! (`Nats-Msg-Id` = its receipt id, so a callback Twilio retries is stored once) before the
//! answer `204`; if it cannot be stored the answer is `503` and Twilio posts it again.
//!
//! SendGrid's Signed Event Webhook signs `<X-Twilio-Email-Event-Webhook-Timestamp><body>` with
//! ECDSA P-256 / SHA-256 (`X-Twilio-Email-Event-Webhook-Signature`, base64 DER), checked with the
//! verification key stored in the tenant's SendGrid credentials. Each event of the posted array
//! that names a Herald delivery (`herald_delivery_id`, `herald_tenant` in its custom args) is a
//! receipt (id from `sg_event_id`); other events (mail Herald did not send) are skipped. The
//! recipient's address and SendGrid's free-text bounce reason are not kept.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_schemas::providers::DEFAULT_APP;
use herald_schemas::{Credentials, Receipt, ids};
use hmac::{Hmac, Mac};
use uuid::Uuid;

use crate::AppState;
use crate::error::{Answer, ApiError};

/// The receipt routes, under `/v1/receipts`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/twilio/{tenant}/{delivery}", post(twilio)).route("/sendgrid/{tenant}", post(sendgrid))
}

/// The parameters Twilio's callbacks carry that are kept on the receipt (never the numbers:
/// tracking events carry ids, not phone numbers).
const KEPT: [&str; 4] = ["AnsweredBy", "CallDuration", "ErrorMessage", "SmsStatus"];

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
}

async fn twilio(
    State(state): State<AppState>,
    Path((tenant, delivery)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<StatusCode> {
    let base = state.receipts.twilio.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "receipts_off",
            "this Herald takes no Twilio receipts: set deliver.twilio.status_callback to its public receipt URL",
        )
    })?;
    herald_schemas::directory::check_tenant(&tenant)?;
    let delivery_id = Uuid::parse_str(&delivery).map_err(|_| ApiError::not_found("delivery", &delivery))?;
    let mut url = format!("{}/{tenant}/{delivery}", base.trim_end_matches('/'));
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(&query);
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("no X-Twilio-Signature header: only Twilio may post here"))?;
    let stored = state.store.credentials(&tenant, "twilio", DEFAULT_APP).await?;
    let Some(Credentials::Twilio(account)) = stored.map(|s| s.credentials) else {
        return Err(unauthorized(format!("tenant `{tenant}` has no Twilio account to check the signature with")));
    };
    if !verify(account.auth_token.expose(), &url, &params, signature) {
        return Err(unauthorized(format!("X-Twilio-Signature does not match {url} signed with tenant `{tenant}`'s auth token")));
    }
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    if param("AccountSid").as_deref() != Some(account.account_sid.as_str()) {
        return Err(unauthorized(format!("the callback's AccountSid is not tenant `{tenant}`'s Twilio account")));
    }
    let (Some(sid), Some(status)) =
        (param("MessageSid").or_else(|| param("CallSid")), param("MessageStatus").or_else(|| param("CallStatus")))
    else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_callback",
            "a Twilio callback names MessageSid/CallSid and its status",
        ));
    };
    let details: BTreeMap<String, String> =
        params.iter().filter(|(n, _)| KEPT.contains(&n.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect();
    let receipt = Receipt {
        v: herald_schemas::WIRE_VERSION,
        receipt_id: ids::receipt_id("twilio", &sid, &status),
        tenant,
        delivery_id,
        provider: "twilio".into(),
        provider_message_id: sid,
        status,
        error_code: param("ErrorCode").filter(|c| !c.is_empty()),
        details,
        received_at: jiff::Timestamp::now(),
    };
    state
        .nats
        .publish_receipt(&receipt)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", format!("cannot store the receipt: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// SendGrid event fields kept on the receipt.
const SENDGRID_KEPT: [&str; 4] = ["type", "status", "bounce_classification", "url"];

async fn sendgrid(State(state): State<AppState>, Path(tenant): Path<String>, headers: HeaderMap, body: Bytes) -> Answer<StatusCode> {
    herald_schemas::directory::check_tenant(&tenant)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(signature), Some(timestamp)) =
        (header("x-twilio-email-event-webhook-signature"), header("x-twilio-email-event-webhook-timestamp"))
    else {
        return Err(unauthorized("no X-Twilio-Email-Event-Webhook-Signature / -Timestamp: turn on SendGrid's Signed Event Webhook"));
    };
    let stored = state.store.credentials(&tenant, "sendgrid", DEFAULT_APP).await?;
    let Some(Credentials::Sendgrid(account)) = stored.map(|s| s.credentials) else {
        return Err(unauthorized(format!("tenant `{tenant}` has no SendGrid account to check the signature with")));
    };
    let key = account.event_webhook_public_key.as_deref().and_then(herald_schemas::providers::sendgrid_webhook_key).ok_or_else(|| {
        unauthorized(format!(
            "tenant `{tenant}`'s SendGrid credentials have no event_webhook_public_key: add the Signed Event Webhook's verification key"
        ))
    })?;
    if !verify_sendgrid(&key, &timestamp, &body, &signature) {
        return Err(unauthorized(format!("X-Twilio-Email-Event-Webhook-Signature does not verify with tenant `{tenant}`'s key")));
    }
    let events: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_events", format!("SendGrid events are a JSON array of objects: {e}"))
    })?;
    let received_at = jiff::Timestamp::now();
    let mut receipts = Vec::new();
    for event in &events {
        let text = |name: &str| event.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let ours = text("herald_tenant").is_some_and(|t| t == tenant);
        let (Some(delivery), Some(message), Some(status), true) = (text("herald_delivery_id"), text("sg_message_id"), text("event"), ours)
        else {
            continue;
        };
        let Ok(delivery_id) = Uuid::parse_str(&delivery) else { continue };
        let event_key = text("sg_event_id").unwrap_or_else(|| format!("{message}:{}", event.get("timestamp").cloned().unwrap_or_default()));
        let mut details: BTreeMap<String, String> = SENDGRID_KEPT.iter().filter_map(|&n| Some((n.to_owned(), text(n)?))).collect();
        if status == "dropped"
            && let Some(reason) = text("reason")
        {
            details.insert("reason".into(), reason);
        }
        receipts.push(Receipt {
            v: herald_schemas::WIRE_VERSION,
            receipt_id: ids::receipt_id("sendgrid", &event_key, &status),
            tenant: tenant.clone(),
            delivery_id,
            provider: "sendgrid".into(),
            provider_message_id: message,
            status,
            error_code: None,
            details,
            received_at,
        });
    }
    let stored = futures::future::join_all(receipts.iter().map(|r| state.nats.publish_receipt(r))).await;
    if let Some(error) = stored.into_iter().find_map(Result::err) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", format!("cannot store the receipts: {error}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Whether `signature` (base64 DER) is ECDSA P-256 / SHA-256 over `timestamp` then `body`.
fn verify_sendgrid(key: &p256::ecdsa::VerifyingKey, timestamp: &str, body: &[u8], signature: &str) -> bool {
    use p256::ecdsa::signature::Verifier;
    let Ok(der) = STANDARD.decode(signature.trim()) else { return false };
    let Ok(signature) = p256::ecdsa::Signature::from_der(&der) else { return false };
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    key.verify(&signed, &signature).is_ok()
}

/// Whether `signature` is Twilio's for `url` and `params` under `token` (compared in constant
/// time by the MAC).
fn verify(token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else { return false };
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()) else { return false };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's documented example (its signature-validation snippets): auth token `12345`,
    /// this URL and these parameters sign to `GvWf1cFY/Q7PnoempGyD5oXAezc=`.
    #[test]
    fn the_documented_example_verifies_and_any_change_fails() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let signature = "GvWf1cFY/Q7PnoempGyD5oXAezc=";
        assert!(verify("12345", url, &params, signature));
        assert!(!verify("12346", url, &params, signature), "another token");
        assert!(!verify("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", &params, signature), "another URL");
        let mut changed = params.clone();
        changed[2].1 = "1235".into();
        assert!(!verify("12345", url, &changed, signature), "another parameter value");
        assert!(!verify("12345", url, &params, "not base64!"), "garbage");
    }
}
