//! The SendGrid sandbox: the v3 Mail Send API (`POST /v3/mail/send`, JSON, `Authorization:
//! Bearer <API key>`). Like SendGrid it answers `202 Accepted` with an empty body and the
//! message's id in `X-Message-Id`; refuses with `{"errors": [{"message", "field", "help"}]}` — 400
//! for a body it will not take (no personalization, no `to`, a bad address, no `from`, no subject,
//! no content or text/plain not first, a reserved header, an attachment that is not base64), 401
//! for an unknown key, 403 when `from` is not the key's verified sender, 413 over 30 MB — and in
//! an outage 503; a slow-down is 429 with `X-RateLimit-*` headers (SendGrid sends no
//! `Retry-After`). One record per recipient, as the SMTP sandbox keeps; an attachment's content is
//! recorded as its size and SHA-256, decoded here.
//!
//! With the Event Webhook on (`Sandbox::sendgrid_event_webhook`), each accepted recipient's
//! `processed` and `delivered` are posted to it as SendGrid posts them: a JSON array of events
//! (`email`, `timestamp`, `event`, `sg_event_id`, `sg_message_id` = `<X-Message-Id>.filter…`,
//! and the message's `custom_args` as top-level fields), signed as the Signed Event Webhook
//! signs: ECDSA P-256 / SHA-256 over the timestamp followed by the body, base64 DER in
//! `X-Twilio-Email-Event-Webhook-Signature`, the timestamp in `…-Timestamp`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::server::{Call, Reply, bearer_token, json as reply};
use crate::{Shared, lock};

/// The largest message SendGrid takes, headers and attachments included.
const MAX_BODY: usize = 30 * 1024 * 1024;

/// Headers SendGrid does not let a sender set.
const RESERVED: [&str; 12] = [
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
];

/// A refusal as SendGrid words it; `reason` carries the field.
fn refusal(status: u16, message: &str, field: Option<&str>) -> Answer {
    Answer::new(status, field.unwrap_or("")).with_message(message)
}

/// The sandbox's 503, 500 and throttling, as SendGrid sends them.
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (refusal(503, "Service Unavailable", None), refusal(500, "Internal Server Error", None), refusal(429, "too many requests", None))
}

fn answer_reply(answer: &Answer) -> Reply {
    let field = (!answer.reason.is_empty()).then(|| answer.reason.clone());
    let message = answer.message.clone().unwrap_or_default();
    let mut out = reply(answer.status, &json!({ "errors": [{ "message": message, "field": field, "help": null }] }));
    if answer.status == 429 {
        let wait = answer.retry_after_secs.unwrap_or(1);
        let reset = jiff::Timestamp::now().as_second() + i64::try_from(wait).unwrap_or(1);
        for (name, value) in
            [("x-ratelimit-limit", "600".to_owned()), ("x-ratelimit-remaining", "0".to_owned()), ("x-ratelimit-reset", reset.to_string())]
        {
            if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
                out.headers_mut().insert(name, value);
            }
        }
    }
    out
}

/// The key's public part (`SG.<id>.<secret>` → `<id>`): what the record names, never the secret.
fn key_id(key: &str) -> String {
    key.split('.').nth(1).unwrap_or("?").to_owned()
}

fn address_ok(email: &str) -> bool {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// `POST /v3/mail/send`.
pub async fn handle(shared: Arc<Shared>, call: Call) -> Reply {
    if call.uri().path() != "/v3/mail/send" || call.method() != hyper::Method::POST {
        return reply(404, &json!({ "errors": [{ "message": "Not Found", "field": null, "help": null }] }));
    }
    shared.pause(ProviderKind::Sendgrid).await;
    let key = bearer_token(&call).map(str::to_owned);
    let parsed: Option<Value> = serde_json::from_slice(call.body()).ok();
    let recipients = parsed.as_ref().map(recipients).unwrap_or_default();
    let first = recipients.first().cloned().unwrap_or_default();
    let verdict = check(&shared, key.as_deref(), call.body().len(), parsed.as_ref())
        .and_then(|()| shared.fault(ProviderKind::Sendgrid, &first).map_or(Ok(()), Err));
    let payload = parsed.map(recorded).unwrap_or(Value::Null);
    let headers: BTreeMap<String, String> = payload["headers"]
        .as_object()
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&uuid::Uuid::new_v4().as_bytes()[..16]);
    let record = |status: u16, reason: Option<String>, message_id: Option<String>| {
        for target in if recipients.is_empty() { vec![String::new()] } else { recipients.clone() } {
            shared.record(Received {
                provider: ProviderKind::Sendgrid,
                at: jiff::Timestamp::now(),
                target,
                status,
                reason: reason.clone(),
                headers: headers.clone(),
                payload: payload.clone(),
                credential: key.as_deref().map(key_id),
                message_id: message_id.clone(),
                body: None,
            });
        }
    };
    match verdict {
        Ok(()) => {
            record(202, None, Some(id.clone()));
            if lock(&shared.sendgrid_webhook).is_some() {
                let records: Vec<Received> =
                    shared.received_copy().into_iter().filter(|r| r.message_id.as_deref() == Some(id.as_str())).collect();
                let shared = shared.clone();
                tokio::spawn(async move {
                    for name in ["processed", "delivered"] {
                        tokio::time::sleep(shared.options.callback_delay).await;
                        post_events(&shared, records.iter().map(|r| event(r, name)).collect()).await;
                    }
                });
            }
            let mut out = crate::server::empty(202);
            if let Ok(value) = hyper::header::HeaderValue::from_str(&id) {
                out.headers_mut().insert("x-message-id", value);
            }
            out
        }
        Err(answer) => {
            let reason = answer.message.clone().unwrap_or_else(|| answer.reason.clone());
            record(answer.status, Some(reason), None);
            answer_reply(&answer)
        }
    }
}

/// An event about one accepted recipient, as SendGrid posts it.
pub fn event(record: &Received, name: &str) -> Value {
    let id = record.message_id.clone().unwrap_or_default();
    let mut event = json!({
        "email": record.target,
        "timestamp": jiff::Timestamp::now().as_second(),
        "event": name,
        "sg_event_id": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        "sg_message_id": format!("{id}.filter0001.16648.5515E0B88.0"),
        "smtp-id": format!("<{id}@ismtpd0001p1lon1.sendgrid.net>"),
    });
    if let (Some(event), Some(args)) = (event.as_object_mut(), record.payload["custom_args"].as_object()) {
        event.extend(args.clone());
    }
    event
}

/// The Signed Event Webhook's verification key: base64 of the public key's DER.
pub fn public_key(shared: &Shared) -> String {
    use p256::pkcs8::EncodePublicKey;
    let der = shared.sendgrid_signing.verifying_key().to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Posts `events` to the webhook, signed; returns what it answered (0: no answer, or no webhook).
pub async fn post_events(shared: &Shared, events: Vec<Value>) -> u16 {
    use p256::ecdsa::signature::Signer;
    let Some(url) = lock(&shared.sendgrid_webhook).clone() else { return 0 };
    let body = Value::Array(events.clone()).to_string();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let signature: p256::ecdsa::Signature = shared.sendgrid_signing.sign(format!("{timestamp}{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap_or_default();
    let answered = match client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-Twilio-Email-Event-Webhook-Signature", signature)
        .header("X-Twilio-Email-Event-Webhook-Timestamp", timestamp)
        .body(body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(error) => {
            tracing::debug!(%error, url, "The SendGrid sandbox could not post events.");
            0
        }
    };
    lock(&shared.sendgrid_events).extend(events.into_iter().map(|e| (e, answered)));
    answered
}

/// Every `to`, `cc` and `bcc` address of the personalizations.
fn recipients(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in body["personalizations"].as_array().into_iter().flatten() {
        for list in ["to", "cc", "bcc"] {
            for a in p[list].as_array().into_iter().flatten() {
                if let Some(email) = a["email"].as_str() {
                    out.push(email.to_owned());
                }
            }
        }
    }
    out
}

/// The body as recorded: each attachment's content replaced by its size and SHA-256.
fn recorded(mut body: Value) -> Value {
    for a in body.get_mut("attachments").and_then(Value::as_array_mut).into_iter().flatten() {
        let bytes = a["content"].as_str().and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok()).unwrap_or_default();
        if let Some(object) = a.as_object_mut() {
            object.remove("content");
            object.insert("size".into(), json!(bytes.len()));
            object.insert("sha256".into(), json!(hex::encode(Sha256::digest(&bytes))));
        }
    }
    body
}

/// What SendGrid checks before it queues a message, in its order.
fn check(shared: &Shared, key: Option<&str>, size: usize, body: Option<&Value>) -> Result<(), Answer> {
    let unauthorized = || refusal(401, "The provided authorization grant is invalid, expired, or revoked", None);
    let key = key.ok_or_else(unauthorized)?;
    let sender = lock(&shared.sendgrid_keys).get(key).cloned().ok_or_else(unauthorized)?;
    if size > MAX_BODY {
        return Err(refusal(413, "Request body too large: the total message size is limited to 30 MB", None));
    }
    let body = body.ok_or_else(|| refusal(400, "Bad Request", None))?;
    let bad = |message: &str, field: &str| Err(refusal(400, message, Some(field)));
    let personalizations = body["personalizations"].as_array().map(Vec::as_slice).unwrap_or_default();
    if personalizations.is_empty() {
        return bad("The personalizations field is required and must have at least one personalization.", "personalizations");
    }
    if personalizations.len() > 1000 {
        return bad("The personalizations field is limited to 1000 personalizations per request.", "personalizations");
    }
    for (i, p) in personalizations.iter().enumerate() {
        let to = p["to"].as_array().map(Vec::as_slice).unwrap_or_default();
        if to.is_empty() {
            return bad(
                "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
                &format!("personalizations.{i}.to"),
            );
        }
        for (j, a) in to.iter().enumerate() {
            if !a["email"].as_str().is_some_and(address_ok) {
                return bad("Does not contain a valid address.", &format!("personalizations.{i}.to.{j}.email"));
            }
        }
    }
    let Some(from) = body["from"]["email"].as_str().filter(|f| address_ok(f)) else {
        return bad(
            "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
            "from",
        );
    };
    if !from.eq_ignore_ascii_case(&sender) {
        return Err(refusal(
            403,
            "The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved.",
            Some("from"),
        ));
    }
    let templated = body["template_id"].as_str().is_some_and(|t| !t.is_empty());
    let subject_everywhere = personalizations.iter().all(|p| p["subject"].as_str().is_some_and(|s| !s.is_empty()));
    if !templated && !subject_everywhere && body["subject"].as_str().is_none_or(str::is_empty) {
        return bad(
            "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
            "subject",
        );
    }
    let content = body["content"].as_array().map(Vec::as_slice).unwrap_or_default();
    if content.is_empty() && !templated {
        return bad("Unless a valid template_id is provided, the content parameter is required.", "content");
    }
    for (i, c) in content.iter().enumerate() {
        if c["value"].as_str().is_none_or(str::is_empty) {
            return bad("The content value must be a string at least one character in length.", &format!("content.{i}.value"));
        }
        if c["type"] == "text/plain" && i > 0 {
            return bad("If present, text/plain content must be first, followed by text/html, followed by any other content.", "content");
        }
    }
    for name in body["headers"].as_object().map(|h| h.keys().collect::<Vec<_>>()).unwrap_or_default() {
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return bad(&format!("The header {name} is reserved and cannot be set."), "headers");
        }
    }
    for (i, a) in body["attachments"].as_array().into_iter().flatten().enumerate() {
        if a["filename"].as_str().is_none_or(str::is_empty) {
            return bad("The attachment filename parameter is required.", &format!("attachments.{i}.filename"));
        }
        let content = a["content"].as_str().unwrap_or_default();
        if content.is_empty() || base64::engine::general_purpose::STANDARD.decode(content).is_err() {
            return bad("The attachment content must be base64 encoded.", &format!("attachments.{i}.content"));
        }
    }
    if let Some(args) = body["custom_args"].as_object()
        && args.values().any(|v| !v.is_string())
    {
        return bad("Each custom_args value must be a string.", "custom_args");
    }
    Ok(())
}
