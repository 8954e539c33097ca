//! APNs answers → what they mean for the delivery. The table follows Apple's "Handling
//! notification responses from APNs": never retry a token or payload error; 410 and the token
//! errors disable the device; 429 and 5xx are retried (obeying `Retry-After`); a stale provider
//! token is retried with a new one.

use std::time::Duration;

use crate::ProviderError;
use crate::providers::Class;

/// What an answer other than 200 means.
pub fn classify(status: u16, reason: &str, retry_after: Option<Duration>) -> ProviderError {
    let class = match (status, reason) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Class::TokenInvalid,
        // Our token went stale: the next call signs a new one.
        (403, "ExpiredProviderToken") => Class::Outage,
        (429, "TooManyProviderTokenUpdates") => Class::Outage,
        (429, _) => Class::Throttled,
        (400, "IdleTimeout") => Class::Outage,
        (500..=599, _) => Class::Outage,
        _ => Class::Permanent,
    };
    let reason = if reason.is_empty() { format!("http_{status}") } else { reason.to_owned() };
    let detail = match class {
        Class::TokenInvalid => format!("APNs answered {status} {reason}: the device token is no longer valid for this app"),
        Class::Permanent if status == 403 => {
            format!("APNs answered {status} {reason}: the tenant's APNs key is refused; check team id, key id and the .p8 key")
        }
        _ => format!("APNs answered {status} {reason}"),
    };
    ProviderError::new(class, reason, detail).with_retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, reason: &str, expected: Class) {
        let error = classify(status, reason, None);
        assert_eq!(error.class, expected, "{status} {reason}");
        assert_eq!(error.code, if reason.is_empty() { format!("http_{status}") } else { reason.to_owned() });
    }

    #[test]
    fn every_documented_answer_has_its_class() {
        use Class::*;
        for (status, reason, class) in [
            (400, "BadCollapseId", Permanent),
            (400, "BadDeviceToken", TokenInvalid),
            (400, "BadExpirationDate", Permanent),
            (400, "BadMessageId", Permanent),
            (400, "BadPriority", Permanent),
            (400, "BadTopic", Permanent),
            (400, "DeviceTokenNotForTopic", TokenInvalid),
            (400, "DuplicateHeaders", Permanent),
            (400, "IdleTimeout", Outage),
            (400, "InvalidPushType", Permanent),
            (400, "MissingDeviceToken", Permanent),
            (400, "MissingTopic", Permanent),
            (400, "PayloadEmpty", Permanent),
            (400, "TopicDisallowed", Permanent),
            (403, "BadCertificate", Permanent),
            (403, "BadCertificateEnvironment", Permanent),
            (403, "ExpiredProviderToken", Outage),
            (403, "Forbidden", Permanent),
            (403, "InvalidProviderToken", Permanent),
            (403, "MissingProviderToken", Permanent),
            (404, "BadPath", Permanent),
            (405, "MethodNotAllowed", Permanent),
            (410, "Unregistered", TokenInvalid),
            (410, "ExpiredToken", TokenInvalid),
            (413, "PayloadTooLarge", Permanent),
            (429, "TooManyProviderTokenUpdates", Outage),
            (429, "TooManyRequests", Throttled),
            (500, "InternalServerError", Outage),
            (503, "ServiceUnavailable", Outage),
            (503, "Shutdown", Outage),
            (502, "", Outage),
        ] {
            check(status, reason, class);
        }
    }

    #[test]
    fn retry_after_is_kept() {
        assert_eq!(classify(429, "TooManyRequests", Some(Duration::from_secs(2))).retry_after, Some(Duration::from_secs(2)));
    }
}
