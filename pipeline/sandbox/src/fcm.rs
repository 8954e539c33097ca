//! The FCM sandbox: the OAuth token endpoint (the JWT-bearer grant: an RS256 assertion by a
//! registered service account, for the FCM scope, with Google's or the sandbox's audience) and
//! HTTP v1 `messages:send` (a valid access token of the project, exactly one target, string data
//! values, 4096 bytes of notification and data), answering with Google's error envelope and the
//! `FcmError` code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::Shared;
use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::server::{self, Call, Reply, json as reply};

/// A registered service account.
pub struct Account {
    pub project_id: String,
    pub client_email: String,
    pub key: DecodingKey,
}

/// An access token handed out.
pub struct Granted {
    pub project_id: String,
    pub client_email: String,
    pub expires: Instant,
}

const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

fn google_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// Google's error envelope, with an `FcmError` detail when `fcm_code` is given.
fn envelope(code: u16, message: &str, fcm_code: Option<&str>) -> Value {
    let details: Vec<Value> =
        fcm_code.map(|c| json!({ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c })).into_iter().collect();
    json!({ "error": { "code": code, "message": message, "status": google_status(code), "details": details } })
}

/// `POST /token`.
pub async fn token(shared: Arc<Shared>, call: Call) -> Reply {
    let refuse = |description: &str| reply(400, &json!({ "error": "invalid_grant", "error_description": description }));
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(call.body()).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return reply(400, &json!({ "error": "unsupported_grant_type" }));
    }
    let Some(assertion) = form.get("assertion") else { return refuse("no assertion") };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else { return refuse("the assertion is not a JWT") };
    let accounts = shared.lock_fcm_accounts();
    let Some(account) = header.kid.as_ref().and_then(|kid| accounts.get(kid)) else { return refuse("unknown key id") };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    validation.set_issuer(&[&account.client_email]);
    let own = shared.fcm_token_url();
    validation.set_audience(&[GOOGLE_TOKEN_URL, own.as_str()]);
    let claims = match jsonwebtoken::decode::<Value>(assertion, &account.key, &validation) {
        Ok(data) => data.claims,
        Err(error) => return refuse(&format!("invalid assertion: {error}")),
    };
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if exp - iat > 3600 {
        return refuse("the assertion lives longer than an hour");
    }
    let scope = claims["scope"].as_str().unwrap_or_default();
    if !scope.split(' ').any(|s| s.ends_with("/auth/firebase.messaging") || s.ends_with("/auth/cloud-platform")) {
        return refuse("the assertion does not ask for the firebase.messaging scope");
    }
    let (project_id, client_email) = (account.project_id.clone(), account.client_email.clone());
    drop(accounts);
    let access_token = format!("ya29.sandbox-{}", uuid::Uuid::new_v4().simple());
    let lifetime = shared.options.fcm_token_lifetime;
    shared.grant_fcm_token(access_token.clone(), Granted { project_id, client_email, expires: Instant::now() + lifetime });
    reply(200, &json!({ "access_token": access_token, "expires_in": lifetime.as_secs(), "token_type": "Bearer" }))
}

/// Checks a send; the project's message or the refusal (an `Answer` whose reason is the FCM
/// error code, or `UNAUTHENTICATED`/`PERMISSION_DENIED` without one).
fn validate(shared: &Shared, call: &Call, project: &str, received: &mut Received) -> Result<Value, (Answer, bool)> {
    let token = server::bearer_token(call);
    let granted = token.and_then(|t| shared.fcm_token(t));
    let Some((granted_project, email, expires)) = granted else {
        return Err((Answer::new(401, "UNAUTHENTICATED"), false));
    };
    if expires < Instant::now() {
        return Err((Answer::new(401, "UNAUTHENTICATED"), false));
    }
    received.credential = Some(email);
    if granted_project != project {
        return Err((Answer::new(403, "PERMISSION_DENIED"), false));
    }
    let body: Value = serde_json::from_slice(call.body()).map_err(|_| (Answer::new(400, "INVALID_ARGUMENT"), true))?;
    let message = body.get("message").cloned().ok_or((Answer::new(400, "INVALID_ARGUMENT"), true))?;
    received.payload = message.clone();
    let targets: Vec<&str> = ["token", "topic", "condition"].into_iter().filter(|t| message.get(*t).is_some()).collect();
    if targets.len() != 1 {
        return Err((Answer::new(400, "INVALID_ARGUMENT"), true));
    }
    received.target = message[targets[0]].as_str().unwrap_or_default().to_owned();
    if message.get("data").and_then(Value::as_object).is_some_and(|d| d.values().any(|v| !v.is_string())) {
        return Err((Answer::new(400, "INVALID_ARGUMENT"), true));
    }
    let size = message.get("notification").map_or(0, |n| n.to_string().len()) + message.get("data").map_or(0, |d| d.to_string().len());
    let limit = if targets[0] == "token" { 4096 } else { 2048 };
    if size > limit {
        return Err((Answer::new(400, "INVALID_ARGUMENT"), true));
    }
    Ok(body)
}

/// `POST /v1/projects/{project}/messages:send`.
pub async fn send(shared: Arc<Shared>, call: Call) -> Reply {
    shared.pause(ProviderKind::Fcm).await;
    let path = call.uri().path();
    let Some(project) = path.strip_prefix("/v1/projects/").and_then(|p| p.strip_suffix("/messages:send")).map(str::to_owned) else {
        return reply(404, &envelope(404, "no such method", None));
    };
    let mut received = Received {
        provider: ProviderKind::Fcm,
        at: jiff::Timestamp::now(),
        target: String::new(),
        status: 200,
        reason: None,
        headers: Default::default(),
        payload: Value::Null,
        credential: None,
        message_id: None,
        body: None,
    };
    let verdict =
        validate(&shared, &call, &project, &mut received).and_then(|body| match shared.fault(ProviderKind::Fcm, &received.target) {
            Some(answer) => Err((answer, true)),
            None => Ok(body),
        });
    match verdict {
        Ok(body) => {
            let name = format!("projects/{project}/messages/0:{}", uuid::Uuid::new_v4().simple());
            received.message_id = Some(name.clone());
            // validate_only checks without delivering: nothing reaches a device.
            if body.get("validate_only").and_then(Value::as_bool) == Some(true) {
                received.status = 200;
                received.reason = Some("validate_only".into());
            }
            shared.record(received);
            reply(200, &json!({ "name": name }))
        }
        Err((answer, fcm_error)) => {
            received.status = answer.status;
            received.reason = Some(answer.reason.clone());
            shared.record(received);
            let code = fcm_error.then_some(answer.reason.as_str());
            let mut out = reply(answer.status, &envelope(answer.status, &format!("sandbox: {}", answer.reason), code));
            if let Some(secs) = answer.retry_after_secs {
                out.headers_mut().insert("retry-after", hyper::header::HeaderValue::from(secs));
            }
            out
        }
    }
}

/// FCM's own answers for faults.
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (Answer::new(503, "UNAVAILABLE"), Answer::new(500, "INTERNAL"), Answer::new(429, "QUOTA_EXCEEDED"))
}
