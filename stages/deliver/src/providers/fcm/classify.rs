//! FCM answers → what they mean for the delivery, from the `FcmError` in the error's details
//! (the HTTP status when there is none), per Firebase's error-code reference.

use std::time::Duration;

use serde::Deserialize;

use crate::ProviderError;
use crate::providers::Class;

#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    error: Body,
}

#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

/// The FCM error code of an error body: `details[].errorCode` of the `FcmError`, else the
/// Google status (`UNAUTHENTICATED` …), else `http_<status>`.
pub fn error_code(status: u16, body: &[u8]) -> (String, String) {
    let envelope: Envelope = serde_json::from_slice(body).unwrap_or_default();
    let fcm = envelope.error.details.iter().find_map(|d| {
        let kind = d.get("@type")?.as_str()?;
        if kind.ends_with("google.firebase.fcm.v1.FcmError") { d.get("errorCode")?.as_str().map(str::to_owned) } else { None }
    });
    let code = fcm.or_else(|| Some(envelope.error.status.clone()).filter(|s| !s.is_empty())).unwrap_or_else(|| format!("http_{status}"));
    (code, envelope.error.message)
}

/// What an answer other than 200 means.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let (code, message) = error_code(status, body);
    let class = match code.as_str() {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => Class::TokenInvalid,
        "QUOTA_EXCEEDED" => Class::Throttled,
        "UNAVAILABLE" | "INTERNAL" => Class::Outage,
        // The access token expired or was revoked: the next call gets a new one.
        "UNAUTHENTICATED" => Class::Outage,
        "INVALID_ARGUMENT" | "THIRD_PARTY_AUTH_ERROR" | "PERMISSION_DENIED" | "NOT_FOUND" => Class::Permanent,
        _ if status == 429 => Class::Throttled,
        _ if status >= 500 => Class::Outage,
        _ => Class::Permanent,
    };
    let detail = match class {
        Class::TokenInvalid => format!("FCM answered {status} {code}: the registration token is no longer valid ({message})"),
        _ => format!("FCM answered {status} {code}: {message}"),
    };
    ProviderError::new(class, code, detail).with_retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(status: u16, google: &str, fcm: Option<&str>) -> Vec<u8> {
        let details = fcm
            .map_or(vec![], |c| vec![serde_json::json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c})]);
        serde_json::to_vec(&serde_json::json!({"error": {"code": status, "message": "m", "status": google, "details": details}})).unwrap()
    }

    #[test]
    fn every_documented_error_code_has_its_class() {
        use Class::*;
        for (status, google, fcm, class, code) in [
            (400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), Permanent, "INVALID_ARGUMENT"),
            (404, "NOT_FOUND", Some("UNREGISTERED"), TokenInvalid, "UNREGISTERED"),
            (403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), TokenInvalid, "SENDER_ID_MISMATCH"),
            (429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), Throttled, "QUOTA_EXCEEDED"),
            (503, "UNAVAILABLE", Some("UNAVAILABLE"), Outage, "UNAVAILABLE"),
            (500, "INTERNAL", Some("INTERNAL"), Outage, "INTERNAL"),
            (401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"), Permanent, "THIRD_PARTY_AUTH_ERROR"),
            (401, "UNAUTHENTICATED", None, Outage, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED", None, Permanent, "PERMISSION_DENIED"),
            (502, "", None, Outage, "http_502"),
        ] {
            let error = classify(status, &envelope(status, google, fcm), None);
            assert_eq!((error.class, error.code.as_str()), (class, code), "{status} {google} {fcm:?}");
        }
        let garbled = classify(503, b"<html>", Some(Duration::from_secs(3)));
        assert_eq!((garbled.class, garbled.code.as_str(), garbled.retry_after), (Class::Outage, "http_503", Some(Duration::from_secs(3))));
    }
}
