//! The web push sandbox: a push service (RFC 8030) that is also the browsers subscribed to it.
//! It makes subscriptions (a P-256 key pair and an auth secret each, kept here), checks VAPID
//! (RFC 8292: ES256 by the `k` key, `aud` its own origin, `exp` within 24 hours, a `sub`
//! contact, `k` the key the subscription was made with), requires `TTL` and `aes128gcm`, refuses
//! bodies over 4096 bytes, and decrypts each message (RFC 8291) with the subscriber's keys — so a
//! test sees the plaintext a service worker would.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};

use crate::Shared;
use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::server::{Call, Reply, empty};

/// A browser's subscription, with its secrets.
pub struct Subscriber {
    pub secret: p256::SecretKey,
    pub auth: [u8; 16],
    /// The `applicationServerKey` it subscribed with, when it named one.
    pub application_server_key: Option<String>,
}

/// A subscription as a web app would send it to its server (`PushSubscription.toJSON()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPushSubscriber {
    pub id: String,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    /// The browser's private key (the P-256 scalar, base64url): what a test decrypts with.
    pub private_key: String,
}

impl WebPushSubscriber {
    pub fn subscription_json(&self) -> Value {
        json!({ "endpoint": self.endpoint, "keys": { "p256dh": self.p256dh, "auth": self.auth } })
    }
}

/// Makes a subscription served by this sandbox.
pub fn subscribe(shared: &Shared, application_server_key: Option<&str>) -> WebPushSubscriber {
    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let auth: [u8; 16] = rand::random();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let subscriber = WebPushSubscriber {
        id: id.clone(),
        endpoint: format!("{}/push/{id}", shared.web_push_origin()),
        p256dh: URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes()),
        auth: URL_SAFE_NO_PAD.encode(auth),
        private_key: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
    };
    let application_server_key = application_server_key.map(|k| k.trim_end_matches('=').to_owned());
    shared.add_subscriber(id, Subscriber { secret, auth, application_server_key });
    subscriber
}

/// Checks `Authorization: vapid t=<jwt>, k=<key>`; the key, or the refusal.
fn vapid(shared: &Shared, call: &Call) -> Result<String, Answer> {
    let value = call.headers().get("authorization").and_then(|v| v.to_str().ok()).ok_or(Answer::new(401, "missing VAPID authorization"))?;
    let rest = value.strip_prefix("vapid ").ok_or(Answer::new(401, "not a vapid authorization"))?;
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => token = Some(t.to_owned()),
            Some(("k", k)) => key = Some(k.trim_end_matches('=').to_owned()),
            _ => {}
        }
    }
    let (Some(token), Some(key)) = (token, key) else { return Err(Answer::new(401, "vapid needs t= and k=")) };
    let bad = || Answer::new(401, "invalid VAPID key");
    let point = URL_SAFE_NO_PAD.decode(&key).map_err(|_| bad())?;
    let public = p256::PublicKey::from_sec1_bytes(&point).map_err(|_| bad())?;
    let encoded = public.to_encoded_point(false);
    let (Some(x), Some(y)) = (encoded.x(), encoded.y()) else { return Err(bad()) };
    let decoding = DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y)).map_err(|_| bad())?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.set_audience(&[shared.web_push_origin()]);
    let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
        .map_err(|e| Answer::new(403, &format!("VAPID token refused: {e}")))?
        .claims;
    if claims["exp"].as_i64().unwrap_or(0) > jiff::Timestamp::now().as_second() + 24 * 3600 {
        return Err(Answer::new(403, "VAPID exp is more than 24 hours ahead"));
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(Answer::new(403, "VAPID sub must be a mailto: or https: contact"));
    }
    Ok(key)
}

/// `POST /push/{id}`.
pub async fn push(shared: Arc<Shared>, call: Call) -> Reply {
    shared.pause(ProviderKind::WebPush).await;
    let Some(id) = call.uri().path().strip_prefix("/push/").map(str::to_owned) else { return empty(404) };
    let headers: BTreeMap<String, String> = ["ttl", "urgency", "topic", "content-encoding", "authorization"]
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), call.headers().get(*name)?.to_str().ok()?.to_owned())))
        .collect();
    let mut received = Received {
        provider: ProviderKind::WebPush,
        at: jiff::Timestamp::now(),
        target: id.clone(),
        status: 201,
        reason: None,
        headers: headers.clone(),
        payload: Value::Null,
        credential: None,
        message_id: None,
        body: Some(URL_SAFE_NO_PAD.encode(call.body())),
    };
    let verdict = (|| {
        if !shared.has_subscriber(&id) {
            return Err(Answer::new(404, "no such subscription"));
        }
        if let Some(answer) = shared.fault(ProviderKind::WebPush, &id) {
            return Err(answer);
        }
        if headers.get("ttl").is_none_or(|t| t.parse::<u64>().is_err()) {
            return Err(Answer::new(400, "a TTL header is required"));
        }
        if headers.get("content-encoding").map(String::as_str) != Some("aes128gcm") {
            return Err(Answer::new(415, "Content-Encoding must be aes128gcm"));
        }
        let key = vapid(&shared, &call)?;
        received.credential = Some(key.clone());
        if call.body().len() > 4096 {
            return Err(Answer::new(413, "payload too large"));
        }
        shared.decrypt(&id, &key, call.body().to_vec())
    })();
    match verdict {
        Ok(plaintext) => {
            received.payload =
                serde_json::from_slice(&plaintext).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&plaintext).into()));
            let location = format!("{}/message/{}", shared.web_push_origin(), uuid::Uuid::new_v4().simple());
            received.message_id = Some(location.clone());
            shared.record(received);
            let mut reply = empty(201);
            if let Ok(value) = hyper::header::HeaderValue::from_str(&location) {
                reply.headers_mut().insert("location", value);
            }
            reply
        }
        Err(answer) => {
            received.status = answer.status;
            received.reason = Some(answer.reason.clone());
            shared.record(received);
            let mut reply = crate::server::json(answer.status, &json!({ "reason": answer.reason }));
            if let Some(secs) = answer.retry_after_secs {
                reply.headers_mut().insert("retry-after", hyper::header::HeaderValue::from(secs));
            }
            reply
        }
    }
}

/// Decrypts for a subscriber, checking the VAPID key matches the one it subscribed with.
pub fn decrypt(subscriber: &Subscriber, key: &str, body: Vec<u8>) -> Result<Vec<u8>, Answer> {
    if subscriber.application_server_key.as_deref().is_some_and(|k| k != key) {
        return Err(Answer::new(403, "the VAPID key is not the one this subscription was made with"));
    }
    web_push_native::decrypt(body, &subscriber.secret, web_push_native::Auth::from_slice(&subscriber.auth))
        .map_err(|_| Answer::new(400, "decrypt_failed"))
}

/// The push service's own answers for faults.
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (Answer::new(503, "service unavailable"), Answer::new(500, "internal error"), Answer::new(429, "too many requests"))
}
