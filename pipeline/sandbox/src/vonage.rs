//! The Vonage sandbox: the SMS API (`POST /sms/json`, form-encoded, `api_key` and `api_secret`
//! in the body). Like Vonage it answers HTTP 200 with a status per message part — `"0"` sent,
//! `"1"` throttled, `"2"` a missing parameter, `"3"` an invalid one (a `to` that is not a number),
//! `"4"` bad credentials, `"5"` an internal error, `"12"` too long — and HTTP 503 in an outage.
//! `to` is digits without `+`; the sandbox records it as E.164 (`+` and the digits) so a test
//! compares targets across SMS providers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::faults::Answer;
use crate::record::{ProviderKind, Received};
use crate::server::{Call, Reply, json as reply};
use crate::{Shared, lock};

/// The longest `text` taken (characters; Vonage splits it into up to this many parts' worth).
const MAX_TEXT: usize = 3200;

fn status(code: &str, text: &str) -> Answer {
    Answer::new(200, code).with_message(text)
}

/// The sandbox's 503, 500 and throttling, as Vonage sends them.
pub fn standard_answers() -> (Answer, Answer, Answer) {
    (
        Answer::new(503, "503").with_message("Service Unavailable"),
        status("5", "Internal Error"),
        status("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry"),
    )
}

/// `POST /sms/json`.
pub async fn handle(shared: Arc<Shared>, call: Call) -> Reply {
    if call.uri().path() != "/sms/json" || call.method() != hyper::Method::POST {
        return reply(404, &json!({ "type": "https://developer.vonage.com/api-errors#not-found", "title": "Not Found" }));
    }
    shared.pause(ProviderKind::Vonage).await;
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(call.body()).map(|pairs| pairs.into_iter().collect()).unwrap_or_default();
    let to = params.get("to").cloned().unwrap_or_default();
    let target = if to.is_empty() { String::new() } else { format!("+{}", to.trim_start_matches('+')) };
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let mut shown = params.clone();
    shown.remove("api_secret");
    let mut received = Received {
        provider: ProviderKind::Vonage,
        at: jiff::Timestamp::now(),
        target: target.clone(),
        status: 200,
        reason: None,
        headers: BTreeMap::new(),
        payload: serde_json::to_value(&shown).unwrap_or(Value::Null),
        credential: params.get("api_key").cloned(),
        message_id: Some(id.clone()),
        body: None,
    };
    let verdict = validate(&shared, &params).and_then(|()| match shared.fault(ProviderKind::Vonage, &target) {
        Some(answer) => Err(answer),
        None => Ok(()),
    });
    match verdict {
        Ok(()) => {
            shared.record(received);
            let text = params.get("text").map(String::as_str).unwrap_or_default();
            let unicode = params.get("type").is_some_and(|t| t == "unicode");
            let per_part = if unicode { 67 } else { 153 };
            let parts = text.chars().count().div_ceil(per_part).max(1);
            let messages: Vec<Value> = (0..parts)
                .map(|i| {
                    json!({ "to": to, "message-id": if i == 0 { id.clone() } else { format!("{id}-{i}") }, "status": "0",
                            "remaining-balance": "10.00000000", "message-price": "0.00500000", "network": "12345",
                            "client-ref": params.get("client-ref").cloned().unwrap_or_default() })
                })
                .collect();
            reply(200, &json!({ "message-count": parts.to_string(), "messages": messages }))
        }
        Err(answer) => {
            received.status = answer.status;
            received.reason = Some(answer.reason.clone());
            received.message_id = None;
            shared.record(received);
            if answer.status != 200 {
                return reply(answer.status, &json!({ "title": answer.message.clone().unwrap_or_default() }));
            }
            let text = answer.message.clone().unwrap_or_default();
            reply(200, &json!({ "message-count": "1", "messages": [{ "status": answer.reason, "error-text": text }] }))
        }
    }
}

fn validate(shared: &Shared, params: &BTreeMap<String, String>) -> Result<(), Answer> {
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(key), Some(secret)) = (get("api_key"), get("api_secret")) else {
        return Err(status("2", "Missing api_key or api_secret"));
    };
    if lock(&shared.vonage_accounts).get(key).is_none_or(|s| s != secret) {
        return Err(status("4", "Bad Credentials"));
    }
    let (Some(to), Some(_from)) = (get("to"), get("from")) else {
        return Err(status("2", "Missing to or from param"));
    };
    if !(7..=15).contains(&to.len()) || !to.bytes().all(|b| b.is_ascii_digit()) {
        return Err(status("3", "Invalid to param: not a number in international format without +"));
    }
    let Some(text) = get("text") else { return Err(status("2", "Missing text param")) };
    if text.chars().count() > MAX_TEXT {
        return Err(status("12", "Message too long"));
    }
    Ok(())
}
