//! Vonage answers → what they mean for the delivery. The SMS API answers HTTP 200 with a status
//! per message part: `"0"` sent; `"1"` (throughput exceeded) asks to slow down; `"5"` (internal
//! error) is an outage; the others are permanent and named by what they mean. HTTP 5xx is an
//! outage, 429 a slow-down, any other HTTP error permanent.

use std::time::Duration;

use crate::ProviderError;
use crate::providers::Class;

/// The name of a Vonage SMS status, for events.
pub fn status_name(status: &str) -> &'static str {
    match status {
        "0" => "success",
        "1" => "throttled",
        "2" => "missing_parameters",
        "3" => "invalid_parameters",
        "4" => "invalid_credentials",
        "5" => "internal_error",
        "6" => "invalid_message",
        "7" => "number_barred",
        "8" => "partner_account_barred",
        "9" => "partner_quota_violation",
        "10" => "too_many_existing_binds",
        "11" => "account_not_enabled_for_http",
        "12" => "message_too_long",
        "14" => "invalid_signature",
        "15" => "invalid_sender_address",
        "22" => "invalid_network_code",
        "23" => "invalid_callback_url",
        "29" => "non_whitelisted_destination",
        "32" => "signature_and_api_secret_disallowed",
        "33" => "number_de_activated",
        _ => "unknown_status",
    }
}

/// What a message part's non-zero `status` means.
pub fn classify_status(status: &str, text: &str) -> ProviderError {
    let class = match status {
        "1" | "10" => Class::Throttled,
        "5" => Class::Outage,
        _ => Class::Permanent,
    };
    let text: String = text.chars().take(200).collect();
    ProviderError::new(class, status_name(status), format!("Vonage answered status {status}: {text}").trim().to_owned())
}

/// What an HTTP answer other than 2xx means.
pub fn classify_http(status: u16, body: &str, retry_after: Option<Duration>) -> ProviderError {
    let class = match status {
        429 => Class::Throttled,
        500..=599 => Class::Outage,
        _ => Class::Permanent,
    };
    let text: String = body.chars().take(200).collect();
    ProviderError::new(class, format!("http_{status}"), format!("Vonage answered {status}: {text}").trim().to_owned())
        .with_retry_after(retry_after)
}
