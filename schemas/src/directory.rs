//! The directory: who can be notified and how. These are the admin API's and the JSONL
//! import's types; the store keeps them, enrich reads them.

use std::collections::BTreeMap;

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Channel, Timestamp, ValidationError};

/// A person in a tenant's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The tenant's own id for the user.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// E.164, e.g. `+14155550100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// BCP 47, e.g. `ko-KR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// IANA time zone, e.g. `Asia/Seoul`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Which push service a device is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// APNs.
    Ios,
    /// FCM.
    Android,
    /// Web push (RFC 8030).
    Web,
}

/// APNs environment of a device token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Sandbox,
    #[default]
    Production,
}

/// A browser's push subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebPushSubscription {
    pub endpoint: String,
    pub keys: WebPushKeys,
    #[serde(default, rename = "expirationTime", skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<i64>,
}

/// The subscription's keys, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebPushKeys {
    /// The browser's P-256 public key (65 bytes, uncompressed).
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

/// One of a user's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The tenant's id for the device (unique per user).
    pub id: String,
    pub platform: Platform,
    /// APNs or FCM registration token (ios, android).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Web push subscription (web).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebPushSubscription>,
    /// Bundle id (APNs topic) or Android package name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default)]
    pub environment: Environment,
    /// A PushKit VoIP token (ios): pushes go as APNs push type `voip`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub voip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// Set when the device stopped accepting pushes (e.g. APNs `Unregistered`); it gets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

/// Quiet hours in the user's time zone: `22:00`–`07:00` wraps past midnight. Deliveries that
/// are not `critical` wait until `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local wall-clock time, `HH:MM` (or `HH:MM:SS`).
    pub start: String,
    /// Local wall-clock time, `HH:MM` (or `HH:MM:SS`); before `start` means the next day.
    pub end: String,
}

impl QuietHours {
    /// The start and end as times of day.
    pub fn times(&self) -> Result<(jiff::civil::Time, jiff::civil::Time), ValidationError> {
        let parse = |field: &str, value: &str| {
            jiff::civil::Time::strptime("%H:%M:%S", value).or_else(|_| jiff::civil::Time::strptime("%H:%M", value)).map_err(|_| {
                ValidationError::new("invalid_quiet_hours", format!("quiet hours `{field}` {value:?} is not a time like 22:00"))
            })
        };
        let (start, end) = (parse("start", &self.start)?, parse("end", &self.end)?);
        if start == end {
            return Err(ValidationError::new("invalid_quiet_hours", "quiet hours `start` and `end` are the same time"));
        }
        Ok((start, end))
    }
}

/// Checks an IANA time zone name (`Asia/Seoul`, `Europe/Berlin`, `UTC`).
pub fn check_timezone(name: &str) -> Result<(), ValidationError> {
    jiff::tz::TimeZone::get(name)
        .map(|_| ())
        .map_err(|_| ValidationError::new("invalid_timezone", format!("time zone {name:?} is not an IANA name like Asia/Seoul or UTC")))
}

/// What a user agreed to receive. Absent entries mean yes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Per channel: `false` opts out of the channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<Channel, bool>,
    /// Per category, per channel: `false` opts out of that category on that channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, BTreeMap<Channel, bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Opted out of everything.
    #[serde(default)]
    pub unsubscribed: bool,
}

impl Preferences {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(quiet_hours) = &self.quiet_hours {
            quiet_hours.times()?;
        }
        Ok(())
    }
}

/// Why a user may not be reached on a channel, if they may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOut {
    Unsubscribed,
    Channel,
    Category,
}

impl OptOut {
    /// The `reason` of the `opted_out` event.
    pub fn reason(self) -> &'static str {
        match self {
            OptOut::Unsubscribed => "unsubscribed",
            OptOut::Channel => "channel_opt_out",
            OptOut::Category => "category_opt_out",
        }
    }
}

impl Preferences {
    /// Whether the preferences forbid `channel` for `category`.
    pub fn opt_out(&self, channel: Channel, category: Option<&str>) -> Option<OptOut> {
        if self.unsubscribed {
            return Some(OptOut::Unsubscribed);
        }
        if self.channels.get(&channel) == Some(&false) {
            return Some(OptOut::Channel);
        }
        let by_category = category.and_then(|c| self.categories.get(c)).and_then(|m| m.get(&channel));
        (by_category == Some(&false)).then_some(OptOut::Category)
    }
}

/// Everything enrich needs about one user: the user, their devices and their preferences.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub user: User,
    pub devices: Vec<Device>,
    pub preferences: Preferences,
}

/// A named set of users (a group, or a topic people subscribe to).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One line of a JSONL import: a user with, optionally, their devices, preferences and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ImportLine", extend("$id" = "urn:herald:schema:v1:import-line"))]
pub struct ImportLine {
    // The user's fields are repeated rather than `#[serde(flatten)]`ed from `User`: serde cannot
    // combine flatten with deny_unknown_fields, and a misspelt field must be an error.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Preferences>,
    /// Groups to add the user to (created when missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Ids of users, devices and groups: what a subject token and a record key can hold.
/// A tenant id: it becomes a subject token (`herald.requests.<tenant>`), so only letters,
/// digits, `_` and `-`, at most 64 of them. Checked wherever a tenant enters: the API's paths,
/// the CLI, the store, the publisher.
pub fn check_tenant(tenant: &str) -> Result<(), ValidationError> {
    let ok = !tenant.is_empty() && tenant.len() <= 64 && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "invalid_tenant",
            format!("tenant {tenant:?} must be 1–64 letters, digits, `_` or `-` (it is a NATS subject token: no `.`, `*`, `>` or spaces)"),
        ))
    }
}

pub fn check_id(field: &str, id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@+:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("invalid_id", format!("`{field}` {id:?} must be 1–128 characters of letters, digits and _-.@+:")))
    }
}

/// A plausible e-mail address: one `@`, a non-empty local part of at most 64 bytes, a dotted
/// domain, no spaces or control characters.
pub fn check_email(email: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| Err(ValidationError::new("invalid_email", format!("e-mail {email:?} {why}")));
    let Some((local, domain)) = email.rsplit_once('@') else { return bad("has no @") };
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return bad("has an invalid local part");
    }
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("is too long or contains spaces");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-');
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return bad("has an invalid domain");
    }
    Ok(())
}

/// E.164: `+`, a country code that does not start with 0, at most 15 digits in all.
pub fn check_phone(phone: &str) -> Result<(), ValidationError> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if ok { Ok(()) } else { Err(ValidationError::new("invalid_phone", format!("phone {phone:?} is not E.164 (e.g. +14155550100)"))) }
}

impl User {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id("id", &self.id)?;
        if let Some(email) = &self.email {
            check_email(email)?;
        }
        if let Some(phone) = &self.phone {
            check_phone(phone)?;
        }
        if let Some(timezone) = &self.timezone {
            check_timezone(timezone)?;
        }
        Ok(())
    }
}

impl Device {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_id("device id", &self.id)?;
        let bad = |code: &'static str, detail: String| Err(ValidationError::new(code, detail));
        match self.platform {
            Platform::Ios => match &self.token {
                // APNs device tokens are 32 bytes today; Apple allows them to grow.
                Some(t) if t.len() >= 64 && t.len() <= 200 && t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
                Some(t) => bad("invalid_token", format!("APNs token {t:?} must be an even number (64–200) of hex digits")),
                None => bad("invalid_token", "an ios device needs its APNs `token`".into()),
            },
            Platform::Android => match &self.token {
                Some(t) if (32..=4096).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b)) => Ok(()),
                Some(t) => {
                    bad("invalid_token", format!("FCM token {:?}… is not a registration token", t.chars().take(16).collect::<String>()))
                }
                None => bad("invalid_token", "an android device needs its FCM `token`".into()),
            },
            Platform::Web => match &self.subscription {
                Some(subscription) => subscription.validate(),
                None => bad("invalid_subscription", "a web device needs its push `subscription`".into()),
            },
        }
    }

    /// Whether pushes may be sent to it.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }
}

impl WebPushSubscription {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |detail: String| Err(ValidationError::new("invalid_subscription", detail));
        if !self.endpoint.starts_with("https://") || self.endpoint.len() > 2048 {
            return bad(format!("endpoint {:?} must be an https URL", self.endpoint));
        }
        let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('='));
        match decode(&self.keys.p256dh) {
            Ok(key) if key.len() == 65 && key[0] == 4 => {}
            _ => return bad("keys.p256dh must be a base64url uncompressed P-256 point (65 bytes)".into()),
        }
        match decode(&self.keys.auth) {
            Ok(secret) if secret.len() == 16 => Ok(()),
            _ => bad("keys.auth must be a base64url 16-byte secret".into()),
        }
    }
}

impl ImportLine {
    /// The user part of the line.
    pub fn user(&self) -> User {
        User {
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            locale: self.locale.clone(),
            timezone: self.timezone.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        self.user().validate()?;
        for device in &self.devices {
            device.validate()?;
        }
        for group in &self.groups {
            check_id("group", group)?;
        }
        if let Some(preferences) = &self.preferences {
            preferences.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_subject_tokens() {
        for good in ["acme", "acme-eu", "acme_2", "A1"] {
            assert!(check_tenant(good).is_ok(), "{good}");
        }
        for bad in ["", "acme.eu", "a*", "a>", "a b", "ünï", &"x".repeat(65)] {
            assert_eq!(check_tenant(bad).unwrap_err().code, "invalid_tenant", "{bad}");
        }
    }

    #[test]
    fn emails() {
        for good in ["a@example.com", "first.last+tag@sub.example.co.kr", "x@a-b.io"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        for bad in ["", "plain", "@example.com", "a@", "a@localhost", "a b@example.com", "a@-x.com", "a@x..com", "a@b@c.com"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones() {
        for good in ["+14155550100", "+821012345678", "+2348012345678"] {
            assert!(check_phone(good).is_ok(), "{good}");
        }
        for bad in ["14155550100", "+0123456789", "+1415555", "+1234567890123456", "+1 415 555 0100", "+1415555010a"] {
            assert!(check_phone(bad).is_err(), "{bad}");
        }
    }

    fn device(platform: Platform, token: Option<&str>, subscription: Option<WebPushSubscription>) -> Device {
        Device {
            id: "d1".into(),
            platform,
            token: token.map(str::to_owned),
            subscription,
            app_id: None,
            environment: Environment::Production,
            voip: false,
            last_seen: None,
            disabled_at: None,
            disabled_reason: None,
        }
    }

    fn subscription(p256dh: Vec<u8>, auth: Vec<u8>, endpoint: &str) -> WebPushSubscription {
        let enc = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        WebPushSubscription { endpoint: endpoint.into(), keys: WebPushKeys { p256dh: enc(p256dh), auth: enc(auth) }, expiration_time: None }
    }

    #[test]
    fn device_tokens_and_subscriptions() {
        let apns = "a".repeat(64);
        assert!(device(Platform::Ios, Some(&apns), None).validate().is_ok());
        assert!(device(Platform::Ios, Some(&"z".repeat(64)), None).validate().is_err());
        assert!(device(Platform::Ios, Some("abcd"), None).validate().is_err());
        assert!(device(Platform::Ios, None, None).validate().is_err());
        let fcm = format!("cZ3f:APA91b{}", "x_Y-".repeat(35));
        assert!(device(Platform::Android, Some(&fcm), None).validate().is_ok());
        assert!(device(Platform::Android, Some("has spaces in it and is not a token at all"), None).validate().is_err());
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        let good = subscription(point.clone(), vec![1; 16], "https://push.example.net/send/abc");
        assert!(device(Platform::Web, None, Some(good)).validate().is_ok());
        assert!(
            device(Platform::Web, None, Some(subscription(point.clone(), vec![1; 15], "https://push.example.net/x"))).validate().is_err()
        );
        assert!(
            device(Platform::Web, None, Some(subscription(vec![4; 33], vec![1; 16], "https://push.example.net/x"))).validate().is_err()
        );
        assert!(device(Platform::Web, None, Some(subscription(point, vec![1; 16], "http://push.example.net/x"))).validate().is_err());
        assert!(device(Platform::Web, None, None).validate().is_err());
    }

    #[test]
    fn preferences_decide_opt_outs() {
        let mut prefs = Preferences::default();
        assert_eq!(prefs.opt_out(Channel::Email, Some("marketing")), None);
        prefs.categories.insert("marketing".into(), BTreeMap::from([(Channel::Email, false)]));
        assert_eq!(prefs.opt_out(Channel::Email, Some("marketing")), Some(OptOut::Category));
        assert_eq!(prefs.opt_out(Channel::Email, Some("billing")), None);
        assert_eq!(prefs.opt_out(Channel::Sms, Some("marketing")), None);
        prefs.channels.insert(Channel::Sms, false);
        assert_eq!(prefs.opt_out(Channel::Sms, None), Some(OptOut::Channel));
        prefs.unsubscribed = true;
        assert_eq!(prefs.opt_out(Channel::Push, None), Some(OptOut::Unsubscribed));
    }

    #[test]
    fn import_lines_parse_with_nested_parts() {
        let line = r#"{"id":"alice","email":"alice@example.com","groups":["staff"],"preferences":{"channels":{"sms":false}},
            "devices":[{"id":"phone","platform":"ios","token":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}"#;
        let parsed: ImportLine = serde_json::from_str(line).unwrap();
        assert!(parsed.validate().is_ok());
        assert_eq!(parsed.user().email.as_deref(), Some("alice@example.com"));
        assert!(serde_json::from_str::<ImportLine>(r#"{"id":"bob","colour":"red"}"#).is_err(), "unknown fields are errors");
        assert_eq!(parsed.devices.len(), 1);
        assert_eq!(parsed.preferences.unwrap().channels.get(&Channel::Sms), Some(&false));
    }
}
