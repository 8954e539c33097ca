//! Twilio answers → what they mean for the delivery. Twilio refuses a message or call before it
//! queues it with HTTP 4xx and a JSON body `{code, message, more_info, status}`; the code decides:
//! 21610 (the recipient replied STOP) opts them out; 20429 and any 429 ask to slow down; 5xx is
//! an outage; every other refusal (21211 not a number, 21614 not a mobile, 21612 unreachable,
//! 20003 the credentials) is permanent.

use std::time::Duration;

use serde::Deserialize;

use crate::ProviderError;
use crate::providers::Class;

/// Twilio's error body.
#[derive(Debug, Default, Deserialize)]
struct TwilioError {
    code: Option<u64>,
    #[serde(default)]
    message: String,
}

/// What an answer other than 2xx means.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ProviderError {
    let error: TwilioError = serde_json::from_str(body).unwrap_or_default();
    let code = error.code.map_or_else(|| format!("http_{status}"), |c| c.to_string());
    let class = match (status, error.code) {
        (_, Some(21610)) => Class::OptedOut,
        (429, _) | (_, Some(20429)) => Class::Throttled,
        (500..=599, _) => Class::Outage,
        _ => Class::Permanent,
    };
    let what = match error.code {
        Some(21610) => "the recipient replied STOP",
        Some(21211) => "not a valid phone number",
        Some(21614) => "not a mobile number",
        Some(20003) => "Twilio refused the account SID and auth token",
        _ => "",
    };
    let message: String = error.message.chars().take(200).collect();
    let detail = format!("Twilio answered {status} ({code}): {message} {what}").trim().to_owned();
    ProviderError::new(class, code, detail).with_retry_after(retry_after)
}
