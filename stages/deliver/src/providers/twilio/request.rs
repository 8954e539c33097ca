//! The form Twilio is sent: a message (`To`, `From` or `MessagingServiceSid`, `Body`,
//! `StatusCallback`, `ValidityPeriod`) or a call (`To`, `From`, `Twiml` with the rendered text in
//! `<Say>` in the recipient's language, `StatusCallback` with its events, `MachineDetection`,
//! `Timeout`).

use herald_schemas::providers::TwilioCredentials;
use herald_schemas::{Delivery, Timestamp};

use super::TwilioConfig;
use crate::ProviderError;

/// Twilio's longest `ValidityPeriod` (seconds).
const MAX_VALIDITY: i64 = 36_000;

/// The rendered `body` part, or a permanent error naming the template part to add.
fn body(delivery: &Delivery) -> Result<&str, ProviderError> {
    delivery.content.as_ref().and_then(|c| c.parts.get("body")).map(String::as_str).filter(|b| !b.is_empty()).ok_or_else(|| {
        ProviderError::permanent(
            "no_body",
            format!(
                "template `{}` rendered no `body` for {}; add one to its [{}] part",
                delivery.template, delivery.channel, delivery.channel
            ),
        )
    })
}

/// The delivery's own status callback URL: `<deliver.twilio.status_callback>/<tenant>/<delivery
/// id>`, so Herald's receiver knows whose auth token signed it and which delivery it is about.
pub fn callback(delivery: &Delivery, config: &TwilioConfig) -> Option<String> {
    let base = config.status_callback.as_deref()?.trim_end_matches('/');
    Some(format!("{base}/{}/{}", delivery.tenant, delivery.delivery_id))
}

/// The form of a message.
pub fn message(
    delivery: &Delivery,
    account: &TwilioCredentials,
    config: &TwilioConfig,
    now: Timestamp,
) -> Result<Vec<(&'static str, String)>, ProviderError> {
    let mut form = vec![("To", delivery.address.clone())];
    match (&account.messaging_service_sid, &account.from) {
        (Some(service), _) => form.push(("MessagingServiceSid", service.clone())),
        (None, Some(from)) => form.push(("From", from.clone())),
        (None, None) => {
            return Err(ProviderError::permanent(
                "no_sender",
                "the tenant's Twilio account names neither `from` nor `messaging_service_sid`",
            ));
        }
    }
    form.push(("Body", body(delivery)?.to_owned()));
    if let Some(url) = callback(delivery, config) {
        form.push(("StatusCallback", url));
    }
    // Twilio drops a message still queued after its validity: the notification's expiry.
    if let Some(expires_at) = delivery.expires_at {
        let seconds = expires_at.as_second() - now.as_second();
        form.push(("ValidityPeriod", seconds.clamp(1, MAX_VALIDITY).to_string()));
    }
    Ok(form)
}

/// The form of a call that speaks the rendered `body`.
pub fn call(delivery: &Delivery, account: &TwilioCredentials, config: &TwilioConfig) -> Result<Vec<(&'static str, String)>, ProviderError> {
    let from = account
        .from
        .clone()
        .ok_or_else(|| ProviderError::permanent("no_sender", "a call needs a number: the tenant's Twilio account has no `from`"))?;
    let mut form = vec![("To", delivery.address.clone()), ("From", from), ("Twiml", twiml(delivery, config)?)];
    if let Some(url) = callback(delivery, config) {
        form.push(("StatusCallback", url));
        form.push(("StatusCallbackEvent", "initiated ringing answered completed".into()));
    }
    if let Some(detection) = &config.machine_detection {
        form.push(("MachineDetection", detection.clone()));
    }
    if let Some(seconds) = config.ring_timeout {
        form.push(("Timeout", seconds.to_string()));
    }
    Ok(form)
}

/// `<Response><Say language=… voice=…>text</Say></Response>`.
pub fn twiml(delivery: &Delivery, config: &TwilioConfig) -> Result<String, ProviderError> {
    let text = escape(body(delivery)?);
    let mut attributes = String::new();
    if let Some(language) = language(delivery) {
        attributes.push_str(&format!(" language=\"{}\"", escape(&language)));
    }
    if let Some(voice) = &config.voice {
        attributes.push_str(&format!(" voice=\"{}\"", escape(voice)));
    }
    Ok(format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say{attributes}>{text}</Say></Response>"))
}

/// The language to speak in: the language the text was rendered in, in the form Twilio takes
/// (`ko-KR`), with the recipient's region when their locale is of that language. `None` for a
/// template's `default` text (Twilio then speaks en-US).
pub fn language(delivery: &Delivery) -> Option<String> {
    let rendered = delivery.content.as_ref()?.locale.as_deref()?.replace('_', "-");
    if rendered == "default" || rendered.is_empty() {
        return None;
    }
    let base = rendered.split('-').next().unwrap_or_default().to_ascii_lowercase();
    if rendered.contains('-') {
        return Some(tag(&rendered));
    }
    if let Some(user) = delivery.locale.as_deref().map(|l| l.replace('_', "-"))
        && user.split('-').next().is_some_and(|l| l.eq_ignore_ascii_case(&base))
        && user.contains('-')
    {
        return Some(tag(&user));
    }
    let region = match base.as_str() {
        "en" => "US",
        "ko" => "KR",
        "ja" => "JP",
        "zh" => "CN",
        "pt" => "BR",
        "sv" => "SE",
        "da" => "DK",
        "nb" => "NO",
        other => return Some(format!("{other}-{}", other.to_ascii_uppercase())),
    };
    Some(format!("{base}-{region}"))
}

/// `ko-kr` → `ko-KR`.
fn tag(locale: &str) -> String {
    let mut parts = locale.split('-');
    let language = parts.next().unwrap_or_default().to_ascii_lowercase();
    let rest: Vec<String> = parts.map(str::to_ascii_uppercase).collect();
    if rest.is_empty() { language } else { format!("{language}-{}", rest.join("-")) }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
