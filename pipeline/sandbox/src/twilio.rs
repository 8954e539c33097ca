//! The Twilio sandbox: the REST API's Messages and Calls resources
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` and `…/Calls.json`), form-encoded,
//! HTTP Basic auth with the account SID and auth token. It checks what Twilio checks before it
//! queues — `To` is E.164 (21211), a sender (21603), a body up to 1,600 characters (21602,
//! 21617), the recipient has not replied STOP (21610) — answers 201 with an `SM…`/`CA…` sid, and
//! then posts the status callbacks Twilio would (`sent`, `delivered`; `initiated` … `completed`
//! or `busy`/`no-answer` for calls) to the request's `StatusCallback`, signed with
//! `X-Twilio-Signature` as Twilio signs them: base64 of HMAC-SHA1, keyed by the auth token, over
//! the URL followed by every parameter's name and value sorted by name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};

use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::server::{Call, Reply, json as reply};
use crate::{Shared, lock};

/// The longest body Twilio takes (characters; it splits it into segments).
const MAX_BODY: usize = 1600;

/// A status callback the sandbox posted, as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Callback {
    pub url: String,
    pub params: BTreeMap<String, String>,
    /// The `X-Twilio-Signature` it carried.
    pub signature: String,
    /// What the receiver answered (0: no answer).
    pub answered: u16,
}

/// How a call to a number ends (the sandbox's stand-in for the person who picks up, or not).
pub type CallOutcome = String;

/// Twilio's error body for `code`.
fn error(status: u16, code: u32, message: &str) -> Answer {
    Answer::new(status, &code.to_string()).with_message(message)
}

/// The message Twilio's documentation gives for a code, for the error body.
fn message_for(code: &str) -> &'static str {
    match code {
        "20003" => "Authenticate",
        "20429" => "Too Many Requests",
        "20500" => "An internal server error has occurred",
        "20503" => "Service is unavailable. Please try again",
        "21211" => "The 'To' number is not a valid phone number.",
        "21602" => "Message body is required.",
        "21603" => "A 'From' phone number is required.",
        "21604" => "A 'To' phone number is required.",
        "21610" => "Attempt to send to unsubscribed recipient",
        "21612" => "The 'To' phone number is not currently reachable via SMS.",
        "21614" => "'To' number is not a valid mobile number",
        "21617" => "The concatenated message body exceeds the 1600 character limit.",
        _ => "Error",
    }
}

/// The sandbox's 503, 500 and 429, as Twilio sends them.
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (error(503, 20503, ""), error(500, 20500, ""), error(429, 20429, ""))
}

/// E.164: `+`, 8 to 15 digits, no leading 0.
pub fn is_e164(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// `X-Twilio-Signature` of a form POST to `url` with `params`, keyed by `auth_token`.
pub fn signature(auth_token: &str, url: &str, params: &BTreeMap<String, String>) -> String {
    let mut signed = url.to_owned();
    for (name, value) in params {
        signed.push_str(name);
        signed.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(signed.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The account a request authenticates as: HTTP Basic `AccountSid:AuthToken` for the path's
/// account.
fn authenticate(shared: &Shared, call: &Call, account: &str) -> Result<String, Answer> {
    let refused = || error(401, 20003, "Authenticate");
    let value = call.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(refused)?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(refused)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refused());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| refused())?;
    let decoded = String::from_utf8(decoded).map_err(|_| refused())?;
    let (user, token) = decoded.split_once(':').ok_or_else(refused)?;
    let known = lock(&shared.twilio_accounts).get(user).cloned();
    match known {
        Some(expected) if user == account && expected == token => Ok(expected),
        _ => Err(refused()),
    }
}

/// A fresh sid with Twilio's two-letter prefix.
fn sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn answer_reply(answer: &Answer) -> Reply {
    let code: u64 = answer.reason.parse().unwrap_or(20500);
    let message = answer.message.clone().unwrap_or_else(|| message_for(&answer.reason).to_owned());
    let mut reply = reply(
        answer.status,
        &json!({ "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": answer.status }),
    );
    if let Some(seconds) = answer.retry_after_secs
        && let Ok(value) = hyper::header::HeaderValue::from_str(&seconds.to_string())
    {
        reply.headers_mut().insert(hyper::header::RETRY_AFTER, value);
    }
    reply
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json` and `…/Calls.json`.
pub async fn handle(shared: Arc<Shared>, call: Call) -> Reply {
    let path = call.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (account, resource) = match parts.as_slice() {
        ["2010-04-01", "Accounts", account, resource] if call.method() == hyper::Method::POST => ((*account).to_owned(), *resource),
        _ => return answer_reply(&Answer::new(404, "20404").with_message("The requested resource was not found")),
    };
    let kind = match resource {
        "Messages.json" => ProviderKind::Twilio,
        "Calls.json" => ProviderKind::TwilioVoice,
        _ => return answer_reply(&Answer::new(404, "20404").with_message("The requested resource was not found")),
    };
    shared.pause(kind).await;
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(call.body()).map(|pairs| pairs.into_iter().collect()).unwrap_or_default();
    let to = params.get("To").cloned().unwrap_or_default();
    let id = sid(if kind == ProviderKind::Twilio { "SM" } else { "CA" });
    let mut received = Received {
        provider: kind,
        at: jiff::Timestamp::now(),
        target: to.clone(),
        status: 201,
        reason: None,
        headers: BTreeMap::new(),
        payload: serde_json::to_value(&params).unwrap_or(Value::Null),
        credential: None,
        message_id: Some(id.clone()),
        body: None,
    };
    let verdict = authenticate(&shared, &call, &account).and_then(|token| {
        received.credential = Some(account.clone());
        validate(&shared, kind, &params)?;
        match shared.fault(kind, &to) {
            Some(answer) => Err(answer),
            None => Ok(token),
        }
    });
    match verdict {
        Ok(token) => {
            shared.record(received);
            let callback = params.get("StatusCallback").cloned();
            let (from, body) = (params.get("From").cloned().unwrap_or_default(), params.get("Body").cloned().unwrap_or_default());
            if let Some(url) = callback {
                let statuses = if kind == ProviderKind::Twilio {
                    vec!["sent".to_owned(), "delivered".to_owned()]
                } else {
                    let outcome = lock(&shared.call_outcomes).get(&to).cloned().unwrap_or_else(|| "completed".into());
                    let mut statuses = vec!["initiated".to_owned(), "ringing".to_owned()];
                    if outcome == "completed" {
                        statuses.push("in-progress".into());
                    }
                    statuses.push(outcome);
                    statuses
                };
                tokio::spawn(post_callbacks(
                    shared.clone(),
                    kind,
                    url,
                    token,
                    account.clone(),
                    id.clone(),
                    from.clone(),
                    to.clone(),
                    statuses,
                ));
            }
            let created = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S +0000").to_string();
            let resource = if kind == ProviderKind::Twilio {
                let segments = body.chars().count().div_ceil(153).max(1);
                json!({ "sid": id, "account_sid": account, "to": to, "from": from, "body": body, "status": "queued",
                        "num_segments": segments.to_string(), "direction": "outbound-api", "api_version": "2010-04-01",
                        "date_created": created, "error_code": null, "error_message": null,
                        "uri": format!("/2010-04-01/Accounts/{account}/Messages/{id}.json") })
            } else {
                json!({ "sid": id, "account_sid": account, "to": to, "from": from, "status": "queued", "direction": "outbound-api",
                        "api_version": "2010-04-01", "date_created": created,
                        "uri": format!("/2010-04-01/Accounts/{account}/Calls/{id}.json") })
            };
            reply(201, &resource)
        }
        Err(answer) => {
            received.status = answer.status;
            received.reason = Some(answer.reason.clone());
            received.message_id = None;
            shared.record(received);
            answer_reply(&answer)
        }
    }
}

/// What Twilio refuses before it queues a message or a call.
fn validate(shared: &Shared, kind: ProviderKind, params: &BTreeMap<String, String>) -> Result<(), Answer> {
    let to = params.get("To").map(String::as_str).unwrap_or_default();
    if to.is_empty() {
        return Err(error(400, 21604, message_for("21604")));
    }
    if !is_e164(to) {
        return Err(error(400, 21211, &format!("The 'To' number {to} is not a valid phone number.")));
    }
    let from = params.get("From").filter(|f| !f.is_empty());
    match kind {
        ProviderKind::Twilio => {
            if from.is_none() && params.get("MessagingServiceSid").is_none_or(String::is_empty) {
                return Err(error(400, 21603, message_for("21603")));
            }
            let body = params.get("Body").map(String::as_str).unwrap_or_default();
            if body.is_empty() && !params.contains_key("MediaUrl") {
                return Err(error(400, 21602, message_for("21602")));
            }
            if body.chars().count() > MAX_BODY {
                return Err(error(400, 21617, message_for("21617")));
            }
            if lock(&shared.stop_list).contains(to) {
                return Err(error(400, 21610, message_for("21610")));
            }
        }
        _ => {
            if from.is_none() {
                return Err(error(400, 21603, message_for("21603")));
            }
            if !params.contains_key("Twiml") && !params.contains_key("Url") && !params.contains_key("ApplicationSid") {
                return Err(error(400, 21205, "Url parameter is required."));
            }
        }
    }
    Ok(())
}

/// Posts a message's or call's status changes to its `StatusCallback`, one after another.
#[allow(clippy::too_many_arguments)]
async fn post_callbacks(
    shared: Arc<Shared>,
    kind: ProviderKind,
    url: String,
    token: String,
    account: String,
    sid: String,
    from: String,
    to: String,
    statuses: Vec<String>,
) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    for status in statuses {
        tokio::time::sleep(shared.options.callback_delay).await;
        let mut params = BTreeMap::from([
            ("AccountSid".to_owned(), account.clone()),
            ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
            ("From".to_owned(), from.clone()),
            ("To".to_owned(), to.clone()),
        ]);
        if kind == ProviderKind::Twilio {
            params.insert("MessageSid".into(), sid.clone());
            params.insert("SmsSid".into(), sid.clone());
            params.insert("MessageStatus".into(), status.clone());
            params.insert("SmsStatus".into(), status.clone());
        } else {
            params.insert("CallSid".into(), sid.clone());
            params.insert("CallStatus".into(), status.clone());
            params.insert("Direction".into(), "outbound-api".into());
        }
        let signature = signature(&token, &url, &params);
        let answered = match client.post(&url).header("X-Twilio-Signature", &signature).form(&params).send().await {
            Ok(response) => response.status().as_u16(),
            Err(error) => {
                tracing::debug!(%error, url, "The Twilio sandbox could not post a status callback.");
                0
            }
        };
        lock(&shared.twilio_callbacks).push(Callback { url: url.clone(), params, signature, answered });
    }
}
