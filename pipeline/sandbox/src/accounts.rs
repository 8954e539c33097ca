//! A tenant's accounts at the sandboxes in one call: an APNs team key, an FCM service account, a
//! VAPID key pair, a Twilio account, a Vonage account, an SMTP login and a SendGrid API key
//! generated, registered with the sandboxes, and returned as the credential
//! files Herald takes (`herald providers set <provider> <file>`, or the admin API's
//! `PUT /v1/tenants/{t}/providers/{provider}/{app}` body). The end-to-end push tests use it.

use serde_json::{Value, json};

use crate::Sandbox;
use crate::keys::{apns_key, fcm_service_account, vapid_key};

/// The credentials of one tenant, as Herald takes them.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// `{team_id, key_id, topic, private_key}`.
    pub apns: Value,
    /// `{service_account}`: the file as Google gives it out, its `token_uri` the sandbox's.
    pub fcm: Value,
    /// `{subject, public_key, private_key}`.
    pub web_push: Value,
    /// `{account_sid, auth_token, from}`.
    pub twilio: Value,
    /// `{api_key, api_secret, from}`.
    pub vonage: Value,
    /// `{host, port, security, username, password, from}`: the SMTP sandbox, STARTTLS and AUTH.
    pub smtp: Value,
    /// `{api_key, from}`: a SendGrid API key whose verified sender is `from`.
    pub sendgrid: Value,
    /// The APNs `<team>/<kid>` the sandbox records as the credential of what this key signed.
    pub apns_credential: String,
    /// The VAPID public key browsers subscribe with ([`Sandbox::web_push_subscribe`]).
    pub vapid_public_key: String,
}

impl Accounts {
    /// `(provider, credentials)` pairs, in the order `herald providers set` would take them.
    pub fn each(&self) -> [(&'static str, &Value); 7] {
        [
            ("apns", &self.apns),
            ("fcm", &self.fcm),
            ("web_push", &self.web_push),
            ("twilio", &self.twilio),
            ("vonage", &self.vonage),
            ("smtp", &self.smtp),
            ("sendgrid", &self.sendgrid),
        ]
    }
}

/// A 10-character upper-case id as Apple shows them (team and key ids).
fn apple_id(seed: &str, salt: &str) -> String {
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{salt}/{seed}").as_bytes());
    digest.simple().to_string().to_uppercase()[..10].to_owned()
}

impl Sandbox {
    /// Generates `tenant`'s accounts, registers them with the three sandboxes and returns what
    /// Herald must be given. `topic` is the iOS app's bundle id (`apns-topic`).
    pub fn accounts(&self, tenant: &str, topic: &str) -> anyhow::Result<Accounts> {
        let (team_id, key_id) = (apple_id(tenant, "team"), apple_id(&uuid::Uuid::new_v4().to_string(), "key"));
        let key = apns_key(&team_id, &key_id)?;
        self.apns_add_key(&team_id, &key_id, &key.public_key_pem)?;
        let project = format!("{}-push", tenant.replace(|c: char| !c.is_ascii_alphanumeric(), "-").to_lowercase());
        let account = fcm_service_account(&project, &self.fcm_token_url())?;
        self.fcm_add_service_account(&account.project_id, &account.client_email, &account.private_key_id, &account.public_key_pem)?;
        let vapid = vapid_key();
        let seed = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, tenant.as_bytes()).simple().to_string();
        let (account_sid, auth_token) = (format!("AC{seed}"), uuid::Uuid::new_v4().simple().to_string());
        self.twilio_add_account(&account_sid, &auth_token);
        let (api_key, api_secret) = (seed[..8].to_owned(), uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
        self.vonage_add_account(&api_key, &api_secret);
        let (smtp_user, smtp_password) = (format!("{tenant}-mailer"), uuid::Uuid::new_v4().simple().to_string());
        self.smtp_add_account(&smtp_user, &smtp_password);
        let sender = format!("no-reply@{tenant}.example");
        let sendgrid_key = format!("SG.{}.{}", &seed[..22], uuid::Uuid::new_v4().simple());
        self.sendgrid_add_key(&sendgrid_key, &sender);
        Ok(Accounts {
            apns: json!({ "team_id": team_id, "key_id": key_id, "topic": topic, "private_key": key.private_key_pem }),
            fcm: json!({ "service_account": account.json }),
            web_push: json!({
                "subject": format!("mailto:ops@{tenant}.example"),
                "public_key": vapid.public_key,
                "private_key": vapid.private_key,
            }),
            twilio: json!({ "account_sid": account_sid, "auth_token": auth_token, "from": "+15005550006" }),
            vonage: json!({ "api_key": api_key, "api_secret": api_secret, "from": "Herald" }),
            smtp: json!({
                "host": "localhost",
                "port": self.smtp_port(),
                "security": "starttls",
                "username": smtp_user,
                "password": smtp_password,
                "from": format!("{tenant} <{sender}>"),
            }),
            sendgrid: json!({
                "api_key": sendgrid_key,
                "from": format!("{tenant} <{sender}>"),
                "event_webhook_public_key": self.sendgrid_webhook_public_key(),
            }),
            apns_credential: format!("{team_id}/{key_id}"),
            vapid_public_key: vapid.public_key,
        })
    }
}
