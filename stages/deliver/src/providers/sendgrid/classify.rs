//! SendGrid answers → what they mean for the delivery. Mail Send answers `202 Accepted` (queued)
//! with the message's id in `X-Message-Id`; a refusal is JSON, `{"errors": [{"message", "field",
//! "help"}]}`. 400 (a field SendGrid will not take), 401 (the key is wrong or revoked), 403 (the
//! key lacks Mail Send, or `from` is no verified sender), 413 (over 30 MB) are permanent; 429 asks
//! to slow down until `Retry-After` or `X-RateLimit-Reset`; 5xx is an outage.

use std::time::Duration;

use serde::Deserialize;

use crate::ProviderError;
use crate::providers::Class;

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    errors: Vec<Reason>,
}

#[derive(Deserialize)]
struct Reason {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

/// The reason of a refusal, for events.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "payload_too_large",
        429 => "too_many_requests",
        500..=599 => "server_error",
        _ => "refused",
    }
}

/// What an answer other than 2xx means. `retry_after` is the answer's own (`Retry-After`, or the
/// time until `X-RateLimit-Reset`).
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ProviderError {
    let class = match status {
        429 => Class::Throttled,
        500..=599 => Class::Outage,
        _ => Class::Permanent,
    };
    let reasons: Vec<String> = serde_json::from_str::<Refusal>(body)
        .map(|r| {
            r.errors
                .into_iter()
                .filter_map(|e| match (e.message, e.field) {
                    (Some(message), Some(field)) => Some(format!("{message} ({field})")),
                    (Some(message), None) => Some(message),
                    (None, Some(field)) => Some(format!("field {field}")),
                    (None, None) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let said = if reasons.is_empty() { body.chars().take(200).collect::<String>() } else { reasons.join("; ") };
    let detail = format!("SendGrid answered {status}: {said}").trim().to_owned();
    ProviderError::new(class, status_name(status), detail).with_retry_after(retry_after.filter(|_| class != Class::Permanent))
}

/// When to try again after a 429: `Retry-After`, else the rate limit's reset (`X-RateLimit-Reset`,
/// a Unix time) seen from `now` (Unix seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: u64) -> Option<Duration> {
    crate::http::retry_after(headers).or_else(|| {
        let reset: u64 = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
    })
}
