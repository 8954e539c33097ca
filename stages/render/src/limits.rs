//! Channel limits, checked on the rendered parts: the provider payload each channel will send is
//! built and measured, so the check is the provider's own rule, not an estimate.
//!
//! | channel | limit |
//! |---|---|
//! | push, iOS (APNs) | JSON payload ≤ 4096 bytes; VoIP pushes ≤ 5120 |
//! | push, Android (FCM v1) | `notification` + `data` ≤ 4096 bytes |
//! | web push | plaintext JSON ≤ 3993 bytes (4096-byte record minus RFC 8291 overhead) |
//! | SMS | GSM-7 or UCS-2 segments ≤ `max_sms_segments` |
//! | voice | spoken text ≤ `max_voice_chars` characters |
//! | e-mail | subject ≤ `max_email_subject_chars` characters, on one line |
//!
//! Over a limit is `payload_too_large`, unless the template allows truncation: then the body (or
//! the e-mail subject) is shortened at a character boundary and ends with an ellipsis.

use herald_schemas::directory::Platform;
use herald_schemas::template::Parts;
use herald_schemas::{Channel, SmsInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::sms;

/// APNs: largest payload of a regular push.
pub const APNS_MAX_BYTES: usize = 4096;
/// APNs: largest payload of a VoIP push.
pub const APNS_VOIP_MAX_BYTES: usize = 5120;
/// FCM v1: largest notification plus data payload.
pub const FCM_MAX_BYTES: usize = 4096;
/// Web push: a 4096-byte record less the RFC 8291 header (86) and padding delimiter and tag (17).
pub const WEB_PUSH_MAX_BYTES: usize = 3993;

/// Configurable limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelLimits {
    /// Most segments an SMS may take (each is billed as one message).
    pub max_sms_segments: u32,
    /// Longest e-mail subject, in characters.
    pub max_email_subject_chars: usize,
    /// Longest text a voice call speaks, in characters.
    pub max_voice_chars: usize,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        ChannelLimits { max_sms_segments: 10, max_email_subject_chars: 255, max_voice_chars: 4096 }
    }
}

/// Why rendered parts cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// Over the channel's limit: `payload_too_large`.
    TooLarge(String),
    /// A part that must be JSON, a number… is not: `render_error`.
    Invalid(String),
}

/// Parts that fit, with what was measured on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub parts: Parts,
    pub sms: Option<SmsInfo>,
    pub truncated: bool,
    /// Bytes of the provider payload, where the channel has one.
    pub payload_bytes: Option<usize>,
}

/// Builds a provider payload from rendered parts.
type PayloadBuilder = fn(&Parts) -> Result<Value, Unfit>;

/// Parts that are one line: surrounding whitespace is trimmed and line breaks become spaces, so
/// a template can never inject a header.
const ONE_LINE: &[&str] = &["title", "subject", "from", "reply_to", "sound", "badge", "category", "thread", "icon", "url"];

/// Checks `parts` against the limit of `channel` (for push, of `platform`), shortening the body
/// when `truncate` allows.
pub fn fit(
    channel: Channel,
    platform: Option<Platform>,
    voip: bool,
    mut parts: Parts,
    truncate: bool,
    limits: &ChannelLimits,
) -> Result<Fitted, Unfit> {
    for name in ONE_LINE {
        if let Some(value) = parts.get_mut(*name) {
            *value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }
    match channel {
        Channel::Push => {
            let (max, build): (usize, PayloadBuilder) = match platform {
                Some(Platform::Android) => (FCM_MAX_BYTES, fcm_payload),
                _ if voip => (APNS_VOIP_MAX_BYTES, apns_payload),
                _ => (APNS_MAX_BYTES, apns_payload),
            };
            let provider = if platform == Some(Platform::Android) {
                "FCM"
            } else if voip {
                "APNs VoIP"
            } else {
                "APNs"
            };
            fit_bytes(parts, truncate, "body", max, provider, build)
        }
        Channel::WebPush => fit_bytes(parts, truncate, "body", WEB_PUSH_MAX_BYTES, "web push", web_push_payload),
        Channel::Sms => {
            let max = limits.max_sms_segments;
            let too_many = |info: &SmsInfo| info.segments > max;
            let body = parts.get("body").cloned().unwrap_or_default();
            let mut info = sms::measure(&body);
            let mut truncated = false;
            if too_many(&info) {
                if !truncate {
                    return Err(Unfit::TooLarge(format!(
                        "the SMS body needs {} {:?} segments ({} units), over the maximum of {max}",
                        info.segments, info.encoding, info.units
                    )));
                }
                // "..." rather than "…": the ellipsis character is not GSM-7 and would switch the
                // whole body to UCS-2.
                let short = shorten(&body, "...", |candidate| !too_many(&sms::measure(candidate)))
                    .ok_or_else(|| Unfit::TooLarge(format!("the SMS body cannot be shortened to {max} segments")))?;
                info = sms::measure(&short);
                parts.insert("body".into(), short);
                truncated = true;
            }
            Ok(Fitted { parts, sms: Some(info), truncated, payload_bytes: None })
        }
        Channel::Voice => fit_chars(parts, truncate, "body", limits.max_voice_chars, "spoken text"),
        Channel::Email => fit_chars(parts, truncate, "subject", limits.max_email_subject_chars, "e-mail subject"),
        Channel::Webhook => {
            let body = parts.get("body").map(String::as_str).unwrap_or("{}");
            serde_json::from_str::<Value>(body).map_err(|e| Unfit::Invalid(format!("part `body` must render to JSON: {e}")))?;
            Ok(Fitted { parts, sms: None, truncated: false, payload_bytes: None })
        }
        Channel::InApp => {
            json_object(&parts, "data")?;
            Ok(Fitted { parts, sms: None, truncated: false, payload_bytes: None })
        }
        Channel::Log => Ok(Fitted { parts, sms: None, truncated: false, payload_bytes: None }),
    }
}

fn fit_chars(mut parts: Parts, truncate: bool, part: &str, max: usize, what: &str) -> Result<Fitted, Unfit> {
    let mut truncated = false;
    if let Some(text) = parts.get(part) {
        let count = text.chars().count();
        if count > max {
            if !truncate {
                return Err(Unfit::TooLarge(format!("the {what} is {count} characters, over the maximum of {max}")));
            }
            let short = shorten(text, "…", |candidate| candidate.chars().count() <= max)
                .ok_or_else(|| Unfit::TooLarge(format!("the {what} cannot be shortened to {max} characters")))?;
            parts.insert(part.to_owned(), short);
            truncated = true;
        }
    }
    Ok(Fitted { parts, sms: None, truncated, payload_bytes: None })
}

fn fit_bytes(
    mut parts: Parts,
    truncate: bool,
    part: &str,
    max: usize,
    provider: &str,
    build: fn(&Parts) -> Result<Value, Unfit>,
) -> Result<Fitted, Unfit> {
    let size = |parts: &Parts| -> Result<usize, Unfit> { Ok(serde_json::to_vec(&build(parts)?).map(|v| v.len()).unwrap_or(usize::MAX)) };
    let bytes = size(&parts)?;
    if bytes <= max {
        return Ok(Fitted { parts, sms: None, truncated: false, payload_bytes: Some(bytes) });
    }
    let too_large = || Unfit::TooLarge(format!("the {provider} payload is {bytes} bytes, over the {max}-byte limit"));
    let Some(body) = parts.get(part).cloned().filter(|_| truncate) else { return Err(too_large()) };
    let mut trial = parts.clone();
    let short = shorten(&body, "…", |candidate| {
        trial.insert(part.to_owned(), candidate.to_owned());
        size(&trial).is_ok_and(|n| n <= max)
    })
    .ok_or_else(too_large)?;
    parts.insert(part.to_owned(), short);
    let bytes = size(&parts)?;
    Ok(Fitted { parts, sms: None, truncated: true, payload_bytes: Some(bytes) })
}

/// The longest prefix of `text` (whole characters) that, with `ellipsis` after it, passes `fits`.
/// `None` when not even the ellipsis alone fits.
fn shorten(text: &str, ellipsis: &str, mut fits: impl FnMut(&str) -> bool) -> Option<String> {
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let candidate = |n: usize| format!("{}{ellipsis}", text[..boundaries.get(n).copied().unwrap_or(text.len())].trim_end());
    let (mut low, mut high) = (0, boundaries.len());
    if !fits(&candidate(0)) {
        return None;
    }
    // Invariant: candidate(low) fits; candidate(high + 1) does not (or is the whole text).
    while low < high {
        let mid = (low + high).div_ceil(2);
        if fits(&candidate(mid)) { low = mid } else { high = mid - 1 }
    }
    Some(candidate(low))
}

/// Part `name` as a JSON object, when present.
fn json_object(parts: &Parts, name: &str) -> Result<Map<String, Value>, Unfit> {
    match parts.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(Map::new()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(Unfit::Invalid(format!("part `{name}` must render to a JSON object, not {other}"))),
            Err(e) => Err(Unfit::Invalid(format!("part `{name}` must render to a JSON object: {e}"))),
        },
    }
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<&String>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        map.insert(key.to_owned(), Value::String(value.clone()));
    }
}

/// The APNs JSON payload: `aps` with the alert, sound, badge, category and thread, and the
/// `data` part's keys beside it.
pub fn apns_payload(parts: &Parts) -> Result<Value, Unfit> {
    let mut alert = Map::new();
    insert_some(&mut alert, "title", parts.get("title"));
    insert_some(&mut alert, "body", parts.get("body"));
    let mut aps = Map::new();
    aps.insert("alert".into(), Value::Object(alert));
    insert_some(&mut aps, "sound", parts.get("sound"));
    insert_some(&mut aps, "category", parts.get("category"));
    insert_some(&mut aps, "thread-id", parts.get("thread"));
    if let Some(badge) = parts.get("badge").filter(|b| !b.is_empty()) {
        let n: u32 = badge.parse().map_err(|_| Unfit::Invalid(format!("part `badge` must render to a whole number, not {badge:?}")))?;
        aps.insert("badge".into(), json!(n));
    }
    let mut payload = json_object(parts, "data")?;
    if payload.contains_key("aps") {
        return Err(Unfit::Invalid("part `data` may not have an `aps` key; APNs reserves it".into()));
    }
    payload.insert("aps".into(), Value::Object(aps));
    Ok(Value::Object(payload))
}

/// The FCM v1 message payload: `notification` and `data` (whose values FCM requires to be
/// strings).
pub fn fcm_payload(parts: &Parts) -> Result<Value, Unfit> {
    let mut notification = Map::new();
    insert_some(&mut notification, "title", parts.get("title"));
    insert_some(&mut notification, "body", parts.get("body"));
    let data: Map<String, Value> = json_object(parts, "data")?
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, Value::String(text))
        })
        .collect();
    let mut payload = Map::new();
    payload.insert("notification".into(), Value::Object(notification));
    if !data.is_empty() {
        payload.insert("data".into(), Value::Object(data));
    }
    Ok(Value::Object(payload))
}

/// The web push message: the JSON a service worker receives.
pub fn web_push_payload(parts: &Parts) -> Result<Value, Unfit> {
    let mut payload = Map::new();
    for key in ["title", "body", "icon", "url"] {
        insert_some(&mut payload, key, parts.get(key));
    }
    Ok(Value::Object(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&str, &str)]) -> Parts {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn apns_payloads_are_measured_against_4096_and_voip_5120() {
        let body = "x".repeat(4500);
        let p = parts(&[("title", "T"), ("body", &body)]);
        let err = fit(Channel::Push, Some(Platform::Ios), false, p.clone(), false, &ChannelLimits::default()).unwrap_err();
        assert!(matches!(&err, Unfit::TooLarge(d) if d.contains("APNs payload is 4541 bytes, over the 4096-byte limit")), "{err:?}");
        let voip = fit(Channel::Push, Some(Platform::Ios), true, p.clone(), false, &ChannelLimits::default()).unwrap();
        assert_eq!(voip.payload_bytes, Some(4541));
        let cut = fit(Channel::Push, Some(Platform::Ios), false, p, true, &ChannelLimits::default()).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.payload_bytes, Some(4096), "truncation fills the payload exactly");
        assert!(cut.parts["body"].ends_with('…'));
    }

    #[test]
    fn payload_parts_must_have_their_types() {
        let bad_badge =
            fit(Channel::Push, Some(Platform::Ios), false, parts(&[("title", "t"), ("badge", "many")]), false, &Default::default());
        assert!(matches!(bad_badge, Err(Unfit::Invalid(d)) if d.contains("badge")));
        let bad_data =
            fit(Channel::Push, Some(Platform::Android), false, parts(&[("title", "t"), ("data", "[1]")]), false, &Default::default());
        assert!(matches!(bad_data, Err(Unfit::Invalid(d)) if d.contains("JSON object")));
        let bad_hook = fit(Channel::Webhook, None, false, parts(&[("body", "{nope")]), false, &Default::default());
        assert!(matches!(bad_hook, Err(Unfit::Invalid(_))));
    }

    #[test]
    fn sms_truncation_keeps_gsm7() {
        let limits = ChannelLimits { max_sms_segments: 1, ..Default::default() };
        let p = parts(&[("body", &"word ".repeat(100))]);
        assert!(matches!(fit(Channel::Sms, None, false, p.clone(), false, &limits), Err(Unfit::TooLarge(_))));
        let cut = fit(Channel::Sms, None, false, p, true, &limits).unwrap();
        let info = cut.sms.unwrap();
        assert_eq!((info.encoding, info.segments), (herald_schemas::SmsEncoding::Gsm7, 1));
        assert!(cut.parts["body"].ends_with("..."));
        assert!(info.units <= 160 && info.units > 150, "{info:?}");
    }

    #[test]
    fn one_line_parts_cannot_carry_line_breaks() {
        let p = parts(&[("subject", "Hi\r\nBcc: evil@example.com"), ("text", "x")]);
        let fitted = fit(Channel::Email, None, false, p, false, &Default::default()).unwrap();
        assert_eq!(fitted.parts["subject"], "Hi Bcc: evil@example.com");
    }
}
