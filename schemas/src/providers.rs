//! Provider credentials: what a tenant gives Herald to send through its own APNs, FCM and web
//! push accounts. Kept in the store per (tenant, provider, app) with the secrets sealed by the
//! server key; taken by the admin API (`PUT /v1/tenants/{t}/providers/{provider}/{app}`) and
//! `herald providers set`. Secrets are [`Secret`]s: they never print, and the API shows them
//! only as `<redacted>`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Route, Secret, ValidationError};

/// The app a credential serves when a device names no app (or one without its own).
pub const DEFAULT_APP: &str = "default";

/// One provider account's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "provider", rename_all = "snake_case")]
#[schemars(title = "ProviderCredentials", extend("$id" = "urn:herald:schema:v1:provider-credentials"))]
pub enum Credentials {
    /// APNs token-based auth: a `.p8` signing key of an Apple team.
    Apns(ApnsCredentials),
    /// FCM HTTP v1: a Google service account of the Firebase project.
    Fcm(FcmCredentials),
    /// Web push: the VAPID key pair the browsers subscribed with.
    WebPush(VapidCredentials),
    /// Webhooks: the secret every webhook of the tenant is signed with (`Herald-Signature`).
    Webhook(WebhookCredentials),
    /// Twilio: SMS through the Messages API, calls through the Calls API.
    Twilio(TwilioCredentials),
    /// Vonage SMS API: the second SMS provider, for failover.
    Vonage(VonageCredentials),
    /// An SMTP relay for e-mail (SES, Postmark, Mailgun, the company's own).
    Smtp(SmtpCredentials),
    /// SendGrid v3 Mail Send: the second e-mail provider, for failover.
    Sendgrid(SendgridCredentials),
    /// The in-app inbox: the secret the tenant's backend signs its users' inbox tokens with.
    Inbox(InboxCredentials),
}

/// The key of a tenant's inbox user tokens: HS256 JWTs its backend mints per user (`sub` the
/// user id, `tenant` the tenant, `exp`), which the inbox API checks. Never the admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxCredentials {
    /// The HMAC-SHA256 key, as text (at least 32 characters).
    #[schemars(with = "String")]
    pub signing_secret: Secret,
}

/// APNs token-based auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApnsCredentials {
    /// The 10-character Team ID (the JWT's `iss`).
    pub team_id: String,
    /// The 10-character Key ID (the JWT's `kid`).
    pub key_id: String,
    /// The `.p8` file's contents (a PKCS#8 PEM P-256 key).
    #[schemars(with = "String")]
    pub private_key: Secret,
    /// The app's bundle id: the `apns-topic` (VoIP pushes add `.voip`).
    pub topic: String,
}

/// FCM HTTP v1 credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FcmCredentials {
    /// The service-account JSON file Google gives out, as it is.
    pub service_account: ServiceAccount,
}

/// A Google service-account key file. Fields Herald does not use are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key_id: String,
    /// RSA PKCS#8 PEM.
    #[schemars(with = "String")]
    pub private_key: Secret,
    pub client_email: String,
    /// Where access tokens are obtained (deliver's `fcm.token_url` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_uri: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// VAPID (RFC 8292) keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VapidCredentials {
    /// A contact for the push services: `mailto:` or `https:` URL (the JWT's `sub`).
    pub subject: String,
    /// The application server key the browsers subscribed with: base64url of the 65-byte
    /// uncompressed P-256 point.
    pub public_key: String,
    /// The private key: base64url of the 32-byte scalar, or a PKCS#8 / SEC1 PEM.
    #[schemars(with = "String")]
    pub private_key: Secret,
}

/// The signing secret of a tenant's webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCredentials {
    /// The HMAC-SHA256 key, as text (at least 32 characters); receivers verify with the same.
    #[schemars(with = "String")]
    pub secret: Secret,
}

/// A Twilio account: `account_sid` and `auth_token` authenticate the calls (HTTP Basic) and sign
/// the status callbacks Twilio posts back (`X-Twilio-Signature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TwilioCredentials {
    /// `AC` and 32 hex digits.
    pub account_sid: String,
    #[schemars(with = "String")]
    pub auth_token: Secret,
    /// The sending number (E.164, e.g. `+15005550006`): SMS without a messaging service, and
    /// every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A Messaging Service (`MG` and 32 hex digits) to send SMS through instead of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
}

/// A Vonage (Nexmo) account for the SMS API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VonageCredentials {
    pub api_key: String,
    #[schemars(with = "String")]
    pub api_secret: Secret,
    /// The sender: a number (E.164 digits) or an alphanumeric sender id of up to 11 characters.
    pub from: String,
}

/// An SMTP relay account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpCredentials {
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// AUTH user (PLAIN or LOGIN, whichever the server offers); with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub password: Option<Secret>,
    /// The sender: `no-reply@acme.example` or `Acme <no-reply@acme.example>`. Its domain names
    /// the messages' `Message-ID`.
    pub from: String,
}

/// A SendGrid account (or subuser) for the v3 Mail Send API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendgridCredentials {
    /// An API key with the Mail Send permission: `SG.` and the rest, as SendGrid shows it once.
    #[schemars(with = "String")]
    pub api_key: Secret,
    /// A verified sender identity: `no-reply@acme.example` or `Acme <no-reply@acme.example>`.
    /// Its domain names the messages' `Message-ID`.
    pub from: String,
    /// Where the account's data lives: `global` (api.sendgrid.com) or `eu` (api.eu.sendgrid.com,
    /// for an EU-pinned subuser).
    #[serde(default)]
    pub region: SendgridRegion,
    /// The Signed Event Webhook's verification key, as SendGrid's settings show it (base64 of
    /// the P-256 public key's DER). With it, Herald takes the account's event webhook at
    /// `POST /v1/receipts/sendgrid/<tenant>`; without, it refuses every post there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_webhook_public_key: Option<String>,
}

/// A SendGrid account's region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendgridRegion {
    #[default]
    Global,
    Eu,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain TCP upgraded with STARTTLS, which the server must offer (submission, port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (implicit TLS, port 465).
    Tls,
    /// No encryption: only for a relay on a trusted network, and never with a password.
    None,
}

impl SmtpCredentials {
    /// The port, or the security's usual one.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// The shortest webhook secret taken: 32 characters (a random 256-bit key in base64 has 43).
pub const MIN_WEBHOOK_SECRET: usize = 32;

impl Credentials {
    /// The provider's name: `apns`, `fcm`, `web_push`, `webhook`, `twilio`, `vonage`, `smtp`,
    /// `sendgrid`, `inbox`.
    pub fn provider(&self) -> &'static str {
        match self {
            Credentials::Apns(_) => "apns",
            Credentials::Fcm(_) => "fcm",
            Credentials::WebPush(_) => "web_push",
            Credentials::Webhook(_) => "webhook",
            Credentials::Twilio(_) => "twilio",
            Credentials::Vonage(_) => "vonage",
            Credentials::Smtp(_) => "smtp",
            Credentials::Sendgrid(_) => "sendgrid",
            Credentials::Inbox(_) => "inbox",
        }
    }

    /// The routes the credentials send on.
    pub fn routes(&self) -> &'static [Route] {
        match self {
            Credentials::Apns(_) => &[Route::Apns],
            Credentials::Fcm(_) => &[Route::Fcm],
            Credentials::WebPush(_) => &[Route::WebPush],
            Credentials::Webhook(_) => &[Route::Webhook],
            Credentials::Twilio(_) => &[Route::Sms, Route::Voice],
            Credentials::Vonage(_) => &[Route::Sms],
            Credentials::Smtp(_) | Credentials::Sendgrid(_) => &[Route::Email],
            Credentials::Inbox(_) => &[Route::InApp],
        }
    }

    /// Checks the shape (the keys themselves are checked when deliver builds a signer).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |detail: String| Err(ValidationError::new("invalid_credentials", detail));
        let pem = |what: &str, secret: &Secret| {
            if secret.expose().contains("-----BEGIN") {
                Ok(())
            } else {
                bad(format!("{what} must be a PEM key (-----BEGIN PRIVATE KEY-----…)"))
            }
        };
        match self {
            Credentials::Apns(c) => {
                for (field, value) in [("team_id", &c.team_id), ("key_id", &c.key_id)] {
                    if value.len() != 10 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return bad(format!("APNs `{field}` {value:?} must be the 10-character id Apple shows"));
                    }
                }
                if c.topic.is_empty() || c.topic.ends_with(".voip") {
                    return bad(format!("APNs `topic` {:?} must be the app's bundle id (without .voip)", c.topic));
                }
                pem("APNs `private_key` (the .p8 file)", &c.private_key)
            }
            Credentials::Fcm(c) => {
                let a = &c.service_account;
                if a.project_id.is_empty() || a.client_email.is_empty() || a.private_key_id.is_empty() {
                    return bad("the FCM service account needs project_id, private_key_id and client_email".into());
                }
                pem("the service account's `private_key`", &a.private_key)
            }
            Credentials::WebPush(c) => {
                if !(c.subject.starts_with("mailto:") || c.subject.starts_with("https://")) {
                    return bad(format!("VAPID `subject` {:?} must be a mailto: or https: URL", c.subject));
                }
                if c.public_key.is_empty() || c.private_key.expose().is_empty() {
                    return bad("VAPID needs `public_key` and `private_key`".into());
                }
                Ok(())
            }
            Credentials::Inbox(c) => {
                if c.signing_secret.expose().chars().count() < MIN_WEBHOOK_SECRET {
                    return bad(format!(
                        "the inbox `signing_secret` must be at least {MIN_WEBHOOK_SECRET} characters (e.g. `openssl rand -base64 32`)"
                    ));
                }
                Ok(())
            }
            Credentials::Webhook(c) => {
                if c.secret.expose().chars().count() < MIN_WEBHOOK_SECRET {
                    return bad(format!(
                        "the webhook `secret` must be at least {MIN_WEBHOOK_SECRET} characters (e.g. `openssl rand -base64 32`)"
                    ));
                }
                Ok(())
            }
            Credentials::Twilio(c) => {
                let sid = |value: &str, prefix: &str| {
                    value.len() == 34 && value.starts_with(prefix) && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
                };
                if !sid(&c.account_sid, "AC") {
                    return bad(format!("Twilio `account_sid` {:?} must be AC and 32 hex digits, as the console shows", c.account_sid));
                }
                if c.auth_token.expose().is_empty() {
                    return bad("Twilio needs the account's `auth_token`".into());
                }
                if let Some(from) = &c.from
                    && crate::directory::check_phone(from).is_err()
                {
                    return bad(format!("Twilio `from` {from:?} must be an E.164 number such as +15005550006"));
                }
                match &c.messaging_service_sid {
                    Some(service) if !sid(service, "MG") => {
                        bad(format!("Twilio `messaging_service_sid` {service:?} must be MG and 32 hex digits"))
                    }
                    None if c.from.is_none() => bad("Twilio needs `from` (a number) or `messaging_service_sid`".into()),
                    _ => Ok(()),
                }
            }
            Credentials::Vonage(c) => {
                if c.api_key.is_empty() || c.api_secret.expose().is_empty() {
                    return bad("Vonage needs `api_key` and `api_secret`".into());
                }
                let number = c.from.bytes().all(|b| b.is_ascii_digit()) && (7..=15).contains(&c.from.len());
                let alphanumeric = (1..=11).contains(&c.from.len()) && c.from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ');
                if !(number || alphanumeric) {
                    return bad(format!(
                        "Vonage `from` {:?} must be a number in E.164 digits or a sender id of up to 11 letters and digits",
                        c.from
                    ));
                }
                Ok(())
            }
            Credentials::Sendgrid(c) => {
                let key = c.api_key.expose();
                if !key.starts_with("SG.") || key.len() < 20 || key.chars().any(char::is_whitespace) {
                    return bad("the SendGrid `api_key` must be the key SendGrid showed when it was made: `SG.` and the rest".into());
                }
                if !sender_is_an_address(&c.from) {
                    return bad(format!("SendGrid `from` {:?} must be an address, or `Name <address>`", c.from));
                }
                if let Some(key) = &c.event_webhook_public_key
                    && sendgrid_webhook_key(key).is_none()
                {
                    return bad("the SendGrid `event_webhook_public_key` must be the verification key its Mail Settings show: base64 of a P-256 public key".into());
                }
                Ok(())
            }
            Credentials::Smtp(c) => {
                if c.host.trim().is_empty() {
                    return bad("SMTP needs the relay's `host`".into());
                }
                if !sender_is_an_address(&c.from) {
                    return bad(format!("SMTP `from` {:?} must be an address, or `Name <address>`", c.from));
                }
                match (&c.username, &c.password) {
                    (Some(_), None) | (None, Some(_)) => bad("SMTP `username` and `password` go together".into()),
                    (_, Some(_)) if c.security == SmtpSecurity::None => {
                        bad("SMTP with a password needs `security` = `starttls` or `tls`: it would cross the network in the clear".into())
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The credentials as JSON with every secret replaced by `<redacted>`: what the API shows.
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        let hidden = || Secret::new("<redacted>");
        match &mut copy {
            Credentials::Apns(c) => c.private_key = hidden(),
            Credentials::Fcm(c) => c.service_account.private_key = hidden(),
            Credentials::WebPush(c) => c.private_key = hidden(),
            Credentials::Webhook(c) => c.secret = hidden(),
            Credentials::Inbox(c) => c.signing_secret = hidden(),
            Credentials::Twilio(c) => c.auth_token = hidden(),
            Credentials::Vonage(c) => c.api_secret = hidden(),
            Credentials::Sendgrid(c) => c.api_key = hidden(),
            Credentials::Smtp(c) => {
                if c.password.is_some() {
                    c.password = Some(hidden());
                }
            }
        }
        serde_json::to_value(copy).unwrap_or_default()
    }
}

/// The Signed Event Webhook's verification key, from its base64 DER (SubjectPublicKeyInfo).
pub fn sendgrid_webhook_key(key: &str) -> Option<p256::ecdsa::VerifyingKey> {
    use base64::Engine;
    use p256::pkcs8::DecodePublicKey;
    let der = base64::engine::general_purpose::STANDARD.decode(key.trim()).ok()?;
    p256::ecdsa::VerifyingKey::from_public_key_der(&der).ok()
}

/// Whether a sender is `address` or `Name <address>`.
fn sender_is_an_address(from: &str) -> bool {
    let address = from.rsplit_once('<').map_or(from, |(_, a)| a.trim_end_matches('>'));
    crate::directory::check_email(address.trim()).is_ok()
}

/// A stored credential's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct CredentialKey {
    pub tenant: String,
    /// `apns`, `fcm`, `web_push`, `webhook`, `twilio`, `vonage`, `smtp`, `sendgrid` or `inbox`.
    pub provider: String,
    /// The app id a device names (bundle id, package name) or [`DEFAULT_APP`].
    pub app: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apns() -> Credentials {
        Credentials::Apns(ApnsCredentials {
            team_id: "TEAM123456".into(),
            key_id: "KEY1234567".into(),
            private_key: Secret::new("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"),
            topic: "com.example.app".into(),
        })
    }

    #[test]
    fn redacted_never_shows_a_secret() {
        let shown = apns().redacted().to_string();
        assert!(!shown.contains("BEGIN"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("\"provider\":\"apns\""), "{shown}");
    }

    #[test]
    fn webhook_secrets_are_long_and_never_shown() {
        let short: Credentials = serde_json::from_value(serde_json::json!({"provider": "webhook", "secret": "too-short"})).unwrap();
        assert_eq!(short.validate().unwrap_err().code, "invalid_credentials");
        let secret = "whsec-0123456789abcdefghijklmnopqrstuv";
        let good: Credentials = serde_json::from_value(serde_json::json!({"provider": "webhook", "secret": secret})).unwrap();
        assert!(good.validate().is_ok());
        assert_eq!((good.provider(), good.routes()), ("webhook", &[Route::Webhook][..]));
        assert!(!good.redacted().to_string().contains(secret));
    }

    #[test]
    fn shapes_are_checked() {
        assert!(apns().validate().is_ok());
        let Credentials::Apns(c) = apns() else { unreachable!() };
        let short = Credentials::Apns(ApnsCredentials { team_id: "T1".into(), ..c.clone() });
        assert_eq!(short.validate().unwrap_err().code, "invalid_credentials");
        let voip = Credentials::Apns(ApnsCredentials { topic: "com.example.app.voip".into(), ..c });
        assert!(voip.validate().is_err());
        let json = serde_json::json!({"provider": "fcm", "service_account": {"type": "service_account", "project_id": "p",
            "private_key_id": "k", "private_key": "-----BEGIN PRIVATE KEY-----\n", "client_email": "a@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token", "universe_domain": "googleapis.com"}});
        let fcm: Credentials = serde_json::from_value(json).unwrap();
        assert!(fcm.validate().is_ok());
        assert_eq!(fcm.routes(), &[Route::Fcm]);
    }

    #[test]
    fn sms_accounts_are_checked() {
        let sid = format!("AC{}", "0a".repeat(16));
        let twilio = |from: Option<&str>, service: Option<String>| {
            Credentials::Twilio(TwilioCredentials {
                account_sid: sid.clone(),
                auth_token: Secret::new("token"),
                from: from.map(Into::into),
                messaging_service_sid: service,
            })
        };
        assert!(twilio(Some("+15005550006"), None).validate().is_ok());
        assert!(twilio(None, Some(format!("MG{}", "1f".repeat(16)))).validate().is_ok());
        assert!(twilio(None, None).validate().is_err(), "neither a number nor a service");
        assert!(twilio(Some("5550006"), None).validate().is_err(), "not E.164");
        assert!(twilio(None, Some("MG12".into())).validate().is_err());
        let bad_sid = Credentials::Twilio(TwilioCredentials {
            account_sid: "AC12".into(),
            ..match twilio(Some("+15005550006"), None) {
                Credentials::Twilio(c) => c,
                _ => unreachable!(),
            }
        });
        assert!(bad_sid.validate().is_err());
        assert_eq!(twilio(Some("+15005550006"), None).routes(), &[Route::Sms, Route::Voice]);
        assert!(!twilio(Some("+15005550006"), None).redacted().to_string().contains(r#":"token""#));
        let vonage =
            |from: &str| Credentials::Vonage(VonageCredentials { api_key: "k".into(), api_secret: Secret::new("s"), from: from.into() });
        assert!(vonage("Acme").validate().is_ok());
        assert!(vonage("14155550100").validate().is_ok());
        assert!(vonage("A sender id that is too long").validate().is_err());
    }

    #[test]
    fn smtp_relays_are_checked() {
        let relay = |security: SmtpSecurity, login: bool, from: &str| {
            Credentials::Smtp(SmtpCredentials {
                host: "smtp.example.com".into(),
                port: None,
                security,
                username: login.then(|| "mailer".into()),
                password: login.then(|| Secret::new("pw")),
                from: from.into(),
            })
        };
        assert!(relay(SmtpSecurity::Starttls, true, "Acme <no-reply@acme.example>").validate().is_ok());
        assert!(relay(SmtpSecurity::None, false, "no-reply@acme.example").validate().is_ok(), "a trusted relay without a login");
        assert!(relay(SmtpSecurity::None, true, "no-reply@acme.example").validate().is_err(), "a password in the clear");
        assert!(relay(SmtpSecurity::Tls, true, "Acme").validate().is_err(), "no address");
        let Credentials::Smtp(c) = relay(SmtpSecurity::Tls, true, "a@b.example") else { unreachable!() };
        assert_eq!(c.port(), 465);
        assert!(!relay(SmtpSecurity::Starttls, true, "a@b.example").redacted().to_string().contains(r#""pw""#));
    }

    #[test]
    fn sendgrid_accounts_are_checked() {
        let account = |key: &str, from: &str| {
            let json = serde_json::json!({"provider": "sendgrid", "api_key": key, "from": from});
            serde_json::from_value::<Credentials>(json).unwrap()
        };
        let key = "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";
        let good = account(key, "Acme <no-reply@acme.example>");
        assert!(good.validate().is_ok());
        assert_eq!((good.provider(), good.routes()), ("sendgrid", &[Route::Email][..]));
        assert!(matches!(&good, Credentials::Sendgrid(c) if c.region == SendgridRegion::Global));
        assert!(!good.redacted().to_string().contains(key));
        assert!(account("not-a-sendgrid-key-at-all", "no-reply@acme.example").validate().is_err());
        assert!(account(key, "Acme").validate().is_err(), "no address");
        let eu: Credentials =
            serde_json::from_value(serde_json::json!({"provider": "sendgrid", "api_key": key, "from": "a@b.example", "region": "eu"}))
                .unwrap();
        assert!(matches!(eu, Credentials::Sendgrid(c) if c.region == SendgridRegion::Eu));
    }
}
