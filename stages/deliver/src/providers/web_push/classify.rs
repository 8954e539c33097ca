//! Push service answers → what they mean for the delivery (RFC 8030 §5, RFC 8292 §4): 404 and
//! 410 say the subscription is gone; 413 and the VAPID refusals are permanent; 429 and 5xx are
//! retried.

use std::time::Duration;

use crate::ProviderError;
use crate::providers::Class;

/// What an answer other than 2xx means.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ProviderError {
    let class = match status {
        404 | 410 => Class::TokenInvalid,
        429 => Class::Throttled,
        500..=599 => Class::Outage,
        _ => Class::Permanent,
    };
    let what = match status {
        404 | 410 => "the subscription has expired or was unsubscribed",
        413 => "the payload is too large for the push service",
        401 | 403 => "the push service refused the VAPID authorization (is the key the one the browser subscribed with?)",
        429 => "the push service asks to slow down",
        _ => "",
    };
    let text: String = body.chars().take(200).collect();
    let detail = format!("the push service answered {status}: {what} {text}").trim().to_owned();
    ProviderError::new(class, format!("http_{status}"), detail).with_retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_has_its_class() {
        use Class::*;
        for (status, class) in [
            (400, Permanent),
            (401, Permanent),
            (403, Permanent),
            (404, TokenInvalid),
            (410, TokenInvalid),
            (413, Permanent),
            (429, Throttled),
            (500, Outage),
            (503, Outage),
        ] {
            let error = classify(status, "", None);
            assert_eq!((error.class, error.code), (class, format!("http_{status}")), "{status}");
        }
    }
}
