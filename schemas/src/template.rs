//! Templates: what an operator uploads (a [`TemplateSpec`]) and what the store keeps (immutable
//! [`TemplateVersion`]s of it).
//!
//! A template has parts per channel (push: `title`, `body`…; e-mail: `subject`, `html`…) and per
//! locale. A delivery for locale `ko-KR` renders the first of `ko-KR`, `ko`, `default` that
//! defines its channel: all parts of a channel come from one locale, so a message never mixes
//! languages.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::directory::check_id;
use crate::{Channel, JsonObject, Timestamp, ValidationError};

/// The locale every template must have, used when no other locale of the chain matches.
pub const DEFAULT_LOCALE: &str = "default";

/// One channel's parts: part name to minijinja source.
pub type Parts = BTreeMap<String, String>;

/// What an operator publishes: one new version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "TemplateSpec", extend("$id" = "urn:herald:schema:v1:template-spec"))]
pub struct TemplateSpec {
    /// The template id requests name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Category of notifications that use the template and name none themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Channels used when a request names none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// Shorten the body (or an e-mail subject) to fit a channel's limit instead of failing with
    /// `payload_too_large`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncate: bool,
    /// Data to validate and preview the template with, as a request's `data` would be.
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub sample: JsonObject,
    /// Locale (`default`, `ko`, `ko-KR`) to channel to parts.
    pub locales: BTreeMap<String, BTreeMap<Channel, Parts>>,
}

/// A published, immutable version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateVersion {
    /// 1 for the first version, one more for each that changed something.
    pub version: u32,
    pub published_at: Timestamp,
    pub spec: TemplateSpec,
}

/// The part names a channel accepts, and which of them it needs (any one of `required`).
pub fn channel_parts(channel: Channel) -> (&'static [&'static str], &'static [&'static str]) {
    match channel {
        Channel::Push => (&["title", "body", "data", "sound", "badge", "category", "thread"], &["title", "body"]),
        Channel::Sms | Channel::Voice => (&["body"], &["body"]),
        Channel::Email => (&["subject", "html", "text", "from", "reply_to"], &["html", "text"]),
        Channel::WebPush => (&["title", "body", "icon", "url"], &["title", "body"]),
        Channel::Webhook => (&["body"], &["body"]),
        Channel::InApp => (&["title", "body", "data"], &["title", "body"]),
        // The sandbox channel records whatever it is given.
        Channel::Log => (&[], &[]),
    }
}

/// Normalizes a locale tag: `ko_kr` → `ko-KR`, `zh-hant-tw` → `zh-Hant-TW`.
pub fn normalize_locale(tag: &str) -> String {
    if tag.eq_ignore_ascii_case(DEFAULT_LOCALE) {
        return DEFAULT_LOCALE.to_owned();
    }
    tag.split(['-', '_'])
        .enumerate()
        .map(|(i, sub)| match (i, sub.len()) {
            (0, _) => sub.to_ascii_lowercase(),
            (_, 2) => sub.to_ascii_uppercase(),
            (_, 4) => {
                let mut s = sub.to_ascii_lowercase();
                s[..1].make_ascii_uppercase();
                s
            }
            _ => sub.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The locales tried for a requested locale, most specific first: `ko-KR` → `ko-KR`, `ko`,
/// `default`.
pub fn locale_chain(requested: Option<&str>) -> Vec<String> {
    let mut chain = Vec::new();
    if let Some(tag) = requested.map(normalize_locale).filter(|t| !t.is_empty() && t != DEFAULT_LOCALE) {
        let subtags: Vec<&str> = tag.split('-').collect();
        for n in (1..=subtags.len()).rev() {
            chain.push(subtags[..n].join("-"));
        }
    }
    chain.push(DEFAULT_LOCALE.to_owned());
    chain
}

fn check_locale(tag: &str) -> Result<(), ValidationError> {
    let ok = tag == DEFAULT_LOCALE
        || tag.split('-').enumerate().all(|(i, sub)| {
            let len_ok = if i == 0 { (2..=3).contains(&sub.len()) } else { (2..=8).contains(&sub.len()) };
            len_ok && sub.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("invalid_locale", format!("locale {tag:?} is not `default` or a language tag like `ko` or `ko-KR`")))
    }
}

impl TemplateSpec {
    /// Checks the structure (ids, locales, channels, part names); the sources themselves are
    /// checked by compiling them (see the render stage).
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id("id", &self.id)?;
        let Some(default) = self.locales.get(DEFAULT_LOCALE) else {
            return Err(ValidationError::new(
                "no_default_locale",
                format!("template `{}` has no `{DEFAULT_LOCALE}` locale; every locale falls back to it", self.id),
            ));
        };
        for (locale, channels) in &self.locales {
            check_locale(locale)?;
            if *locale != normalize_locale(locale) {
                return Err(ValidationError::new(
                    "invalid_locale",
                    format!("locale {locale:?} should be written {:?}", normalize_locale(locale)),
                ));
            }
            for (channel, parts) in channels {
                if !default.contains_key(channel) {
                    return Err(ValidationError::new(
                        "no_default_channel",
                        format!(
                            "locale `{locale}` defines channel `{channel}` but `{DEFAULT_LOCALE}` does not; add it there as the fallback"
                        ),
                    ));
                }
                let (allowed, required) = channel_parts(*channel);
                if let Some(unknown) = parts.keys().find(|p| !allowed.is_empty() && !allowed.contains(&p.as_str())) {
                    return Err(ValidationError::new(
                        "unknown_part",
                        format!("`{locale}`/`{channel}` has part `{unknown}`; {channel} parts are {}", allowed.join(", ")),
                    ));
                }
                if !required.is_empty() && !required.iter().any(|r| parts.contains_key(*r)) {
                    return Err(ValidationError::new(
                        "missing_part",
                        format!("`{locale}`/`{channel}` needs at least one of the parts {}", required.join(", ")),
                    ));
                }
            }
        }
        if let Some(channel) = self.channels.iter().find(|c| !default.contains_key(c)) {
            return Err(ValidationError::new(
                "no_default_channel",
                format!("default channel `{channel}` has no parts in the template; add a `{channel}` table or drop it from `channels`"),
            ));
        }
        if let Some(category) = &self.category {
            check_id("category", category)?;
        }
        Ok(())
    }

    /// The locale that supplies `channel`'s parts for `requested`, and those parts. `log` falls
    /// back to the template's first channel when the template has no `log` parts.
    pub fn parts_for(&self, channel: Channel, requested: Option<&str>) -> Option<(String, Channel, &Parts)> {
        let source = if channel == Channel::Log && !self.defines(Channel::Log) { self.first_channel()? } else { channel };
        locale_chain(requested).into_iter().find_map(|locale| {
            let parts = self.locales.get(&locale)?.get(&source)?;
            Some((locale, source, parts))
        })
    }

    /// Whether the default locale defines `channel`.
    pub fn defines(&self, channel: Channel) -> bool {
        self.locales.get(DEFAULT_LOCALE).is_some_and(|c| c.contains_key(&channel))
    }

    fn first_channel(&self) -> Option<Channel> {
        self.locales.get(DEFAULT_LOCALE)?.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_chains_go_from_specific_to_default() {
        assert_eq!(locale_chain(Some("ko_kr")), ["ko-KR", "ko", "default"]);
        assert_eq!(locale_chain(Some("zh-hant-tw")), ["zh-Hant-TW", "zh-Hant", "zh", "default"]);
        assert_eq!(locale_chain(None), ["default"]);
        assert_eq!(locale_chain(Some("DEFAULT")), ["default"]);
    }

    fn spec(toml_locales: serde_json::Value) -> TemplateSpec {
        serde_json::from_value(serde_json::json!({ "id": "t", "locales": toml_locales })).unwrap()
    }

    #[test]
    fn structure_rules_name_the_problem() {
        let code = |s: TemplateSpec| s.validate().unwrap_err().code;
        assert_eq!(code(spec(serde_json::json!({ "ko": { "sms": { "body": "x" } } }))), "no_default_locale");
        assert_eq!(
            code(spec(serde_json::json!({ "default": { "push": { "title": "x" } }, "ko": { "sms": { "body": "x" } } }))),
            "no_default_channel"
        );
        assert_eq!(code(spec(serde_json::json!({ "default": { "push": { "titel": "x" } } }))), "unknown_part");
        assert_eq!(code(spec(serde_json::json!({ "default": { "email": { "subject": "x" } } }))), "missing_part");
        assert_eq!(
            code(spec(serde_json::json!({ "default": { "sms": { "body": "x" } }, "ko_KR": { "sms": { "body": "x" } } }))),
            "invalid_locale"
        );
        spec(serde_json::json!({ "default": { "sms": { "body": "x" } }, "ko-KR": { "sms": { "body": "y" } } })).validate().unwrap();
    }

    #[test]
    fn parts_come_from_the_first_locale_that_has_the_channel() {
        let s = spec(serde_json::json!({
            "default": { "sms": { "body": "en" }, "push": { "title": "en" } },
            "ko": { "sms": { "body": "ko" } },
        }));
        assert_eq!(s.parts_for(Channel::Sms, Some("ko-KR")).unwrap().0, "ko");
        assert_eq!(s.parts_for(Channel::Push, Some("ko-KR")).unwrap().0, "default");
        assert!(s.parts_for(Channel::Email, None).is_none());
        assert_eq!(s.parts_for(Channel::Log, None).unwrap().1, Channel::Push);
    }
}
