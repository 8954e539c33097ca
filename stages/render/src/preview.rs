//! Previews: a template version rendered with sample (or given) data for each channel, with the
//! locale the parts came from and the payload size the provider would get — or the failure a
//! delivery would get. The admin API and `herald templates preview` both show this.

use herald_schemas::api::PreviewRequest;
use herald_schemas::directory::Platform;
use herald_schemas::template::{DEFAULT_LOCALE, Parts};
use herald_schemas::{Channel, TemplateVersion};
use serde_json::{Value, json};

use crate::engine::{channels_of, sample_delivery};
use crate::{Engine, limits};

/// Renders `version` for each requested channel (every channel of the template by default).
pub fn preview(engine: &Engine, version: &TemplateVersion, request: &PreviewRequest) -> Value {
    let spec = &version.spec;
    let channels = if request.channels.is_empty() { channels_of(spec) } else { request.channels.clone() };
    let data = request.data.clone().unwrap_or_else(|| spec.sample.clone());
    let mut out = serde_json::Map::new();
    for channel in channels {
        let platform = if channel == Channel::Push { request.platform } else { None };
        let mut delivery = sample_delivery(spec, channel, request.locale.as_deref().unwrap_or(DEFAULT_LOCALE), data.clone(), platform);
        delivery.timezone = request.timezone.clone();
        let result = match engine.render_uncached(version, &delivery) {
            Ok(content) => json!({
                "locale": content.locale,
                "parts": content.parts,
                "sms": content.sms,
                "truncated": content.truncated,
                "payload_bytes": payload_bytes(channel, delivery.platform, &content.parts),
            }),
            Err(failure) => json!({ "failed": failure.reason, "detail": failure.detail }),
        };
        out.insert(channel.as_str().to_owned(), result);
    }
    json!({ "template": spec.id, "version": version.version, "channels": out })
}

fn payload_bytes(channel: Channel, platform: Option<Platform>, parts: &Parts) -> Option<usize> {
    let payload = match (channel, platform) {
        (Channel::Push, Some(Platform::Android)) => limits::fcm_payload(parts).ok()?,
        (Channel::Push, _) => limits::apns_payload(parts).ok()?,
        (Channel::WebPush, _) => limits::web_push_payload(parts).ok()?,
        _ => return None,
    };
    serde_json::to_vec(&payload).ok().map(|v| v.len())
}
