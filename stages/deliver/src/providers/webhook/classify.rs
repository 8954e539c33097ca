//! Receiver answers → what they mean for the delivery: 2xx sent; 410 says the endpoint is gone;
//! 408, 429 and 5xx are retried (`Retry-After` obeyed); a redirect is never followed (it could
//! lead anywhere) and, like any other 4xx, is permanent.

use std::time::Duration;

use crate::ProviderError;
use crate::providers::Class;

/// What an answer other than 2xx means.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ProviderError {
    let (class, code) = match status {
        410 => (Class::TokenInvalid, format!("http_{status}")),
        429 => (Class::Throttled, format!("http_{status}")),
        408 | 500..=599 => (Class::Outage, format!("http_{status}")),
        300..=399 => (Class::Permanent, "redirect_refused".to_owned()),
        _ => (Class::Permanent, format!("http_{status}")),
    };
    let what = match status {
        410 => "the endpoint is gone",
        429 => "the receiver asks to slow down",
        300..=399 => "a redirect, which Herald does not follow",
        _ => "",
    };
    let text: String = body.chars().take(200).collect();
    let detail = format!("the receiver answered {status}: {what} {text}").trim().to_owned();
    ProviderError::new(class, code, detail).with_retry_after(retry_after)
}
