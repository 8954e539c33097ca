//! The APNs sandbox: Apple's HTTP/2 provider API. It checks what Apple checks — the provider
//! token (ES256 signature by a registered key, `kid`, `iss`, `iat` age, and not renewed more
//! often than every 20 minutes), the headers (`apns-topic`, `apns-push-type`, `apns-priority`,
//! `apns-expiration`, `apns-collapse-id`, `apns-id`), the device token's form and the payload
//! size (4096 bytes, 5120 for VoIP) — and answers with Apple's status codes and reasons.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::Shared;
use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::server::{self, Call, Reply, empty, json};

/// A registered team key.
pub struct TeamKey {
    pub team_id: String,
    pub key: DecodingKey,
    /// The token in use and when it was first seen, and how many distinct ones were accepted.
    pub current: Option<(String, Instant)>,
    pub tokens_accepted: u64,
}

const PUSH_TYPES: [&str; 9] =
    ["alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk"];

fn refusal(status: u16, reason: &str) -> Answer {
    Answer::new(status, reason)
}

/// Checks the provider token: the credential (`<team>/<kid>`) or the refusal.
fn authenticate(shared: &Shared, call: &Call) -> Result<String, Answer> {
    let Some(token) = server::bearer_token(call) else {
        return Err(refusal(403, "MissingProviderToken"));
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| refusal(403, "InvalidProviderToken"))?;
    let kid = header.kid.unwrap_or_default();
    let mut keys = shared.lock_apns();
    let Some(team) = keys.get_mut(&kid) else { return Err(refusal(403, "InvalidProviderToken")) };
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss"]);
    validation.set_issuer(&[&team.team_id]);
    let claims =
        jsonwebtoken::decode::<serde_json::Value>(token, &team.key, &validation).map_err(|_| refusal(403, "InvalidProviderToken"))?.claims;
    let iat = claims.get("iat").and_then(serde_json::Value::as_i64).ok_or_else(|| refusal(403, "InvalidProviderToken"))?;
    let age = jiff::Timestamp::now().as_second() - iat;
    if age > i64::try_from(shared.options.apns_max_token_age.as_secs()).unwrap_or(3600) {
        return Err(refusal(403, "ExpiredProviderToken"));
    }
    match &team.current {
        Some((current, _)) if current == token => {}
        Some((_, since)) if since.elapsed() < shared.options.apns_min_token_age => return Err(refusal(429, "TooManyProviderTokenUpdates")),
        _ => {
            team.current = Some((token.to_owned(), Instant::now()));
            team.tokens_accepted += 1;
        }
    }
    Ok(format!("{}/{kid}", team.team_id))
}

/// Checks the request itself; returns the push type and the payload.
fn validate(call: &Call, device: &str, headers: &BTreeMap<String, String>) -> Result<serde_json::Value, Answer> {
    if !headers.contains_key("apns-topic") {
        return Err(refusal(400, "MissingTopic"));
    }
    let push_type = headers.get("apns-push-type").map_or("alert", String::as_str);
    if !PUSH_TYPES.contains(&push_type) {
        return Err(refusal(400, "InvalidPushType"));
    }
    if headers.get("apns-priority").is_some_and(|p| !["1", "5", "10"].contains(&p.as_str())) {
        return Err(refusal(400, "BadPriority"));
    }
    if headers.get("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
        return Err(refusal(400, "BadExpirationDate"));
    }
    if headers.get("apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Err(refusal(400, "BadCollapseId"));
    }
    if headers.get("apns-id").is_some_and(|id| uuid::Uuid::parse_str(id).map(|u| u.hyphenated().to_string() != *id).unwrap_or(true)) {
        return Err(refusal(400, "BadMessageId"));
    }
    if push_type == "voip" && !headers.get("apns-topic").is_some_and(|t| t.ends_with(".voip")) {
        return Err(refusal(400, "BadTopic"));
    }
    if device.len() < 64 || !device.len().is_multiple_of(2) || !device.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refusal(400, "BadDeviceToken"));
    }
    let body = call.body();
    if body.is_empty() {
        return Err(refusal(400, "PayloadEmpty"));
    }
    let limit = if push_type == "voip" { 5120 } else { 4096 };
    if body.len() > limit {
        return Err(refusal(413, "PayloadTooLarge"));
    }
    serde_json::from_slice(body).map_err(|_| refusal(400, "PayloadEmpty"))
}

/// Handles one APNs request.
pub async fn handle(shared: Arc<Shared>, call: Call) -> Reply {
    shared.pause(ProviderKind::Apns).await;
    if call.method() != hyper::Method::POST {
        return json(405, &serde_json::json!({ "reason": "MethodNotAllowed" }));
    }
    let Some(device) = call.uri().path().strip_prefix("/3/device/").map(str::to_owned) else {
        return json(404, &serde_json::json!({ "reason": "BadPath" }));
    };
    let headers: BTreeMap<String, String> = call
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("apns-"))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let id = headers.get("apns-id").cloned().unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
    let mut received = Received {
        provider: ProviderKind::Apns,
        at: jiff::Timestamp::now(),
        target: device.clone(),
        status: 200,
        reason: None,
        headers: headers.clone(),
        payload: serde_json::from_slice(call.body()).unwrap_or(serde_json::Value::Null),
        credential: None,
        message_id: Some(id.clone()),
        body: None,
    };
    let verdict = authenticate(&shared, &call).and_then(|credential| {
        received.credential = Some(credential);
        validate(&call, &device, &headers)?;
        match shared.fault(ProviderKind::Apns, &device) {
            Some(answer) => Err(answer),
            None => Ok(()),
        }
    });
    match verdict {
        Ok(()) => {
            shared.record(received);
            let mut reply = empty(200);
            if let Ok(value) = hyper::header::HeaderValue::from_str(&id) {
                reply.headers_mut().insert("apns-id", value);
            }
            reply
        }
        Err(answer) => {
            received.status = answer.status;
            received.reason = Some(answer.reason.clone());
            shared.record(received);
            let mut body = serde_json::json!({ "reason": answer.reason });
            if answer.status == 410 {
                body["timestamp"] = serde_json::json!(jiff::Timestamp::now().as_millisecond());
            }
            let mut reply = json(answer.status, &body);
            if let Some(secs) = answer.retry_after_secs {
                reply.headers_mut().insert("retry-after", hyper::header::HeaderValue::from(secs));
            }
            if let Ok(value) = hyper::header::HeaderValue::from_str(&id) {
                reply.headers_mut().insert("apns-id", value);
            }
            reply
        }
    }
}

/// APNs' own answers for faults.
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (Answer::new(503, "ServiceUnavailable"), Answer::new(500, "InternalServerError"), Answer::new(429, "TooManyRequests"))
}
