//! The recorder: every request a sandbox received, accepted or refused, in arrival order — what
//! a provider's own request log would show, and what tests count ("never twice" is counted here,
//! duplicates included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which service a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Apns,
    Fcm,
    WebPush,
    /// Twilio's Messages resource (SMS).
    Twilio,
    /// Twilio's Calls resource (voice), on the same server.
    TwilioVoice,
    /// Vonage's SMS API.
    Vonage,
    /// The SMTP server: one record per recipient of a message.
    Smtp,
    /// SendGrid's Mail Send API: one record per recipient of a request.
    Sendgrid,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Apns => "apns",
            ProviderKind::Fcm => "fcm",
            ProviderKind::WebPush => "web_push",
            ProviderKind::Twilio => "twilio",
            ProviderKind::TwilioVoice => "twilio_voice",
            ProviderKind::Vonage => "vonage",
            ProviderKind::Smtp => "smtp",
            ProviderKind::Sendgrid => "sendgrid",
        }
    }

    /// Every service, in a stable order.
    pub const ALL: [ProviderKind; 8] = [
        ProviderKind::Apns,
        ProviderKind::Fcm,
        ProviderKind::WebPush,
        ProviderKind::Twilio,
        ProviderKind::TwilioVoice,
        ProviderKind::Vonage,
        ProviderKind::Smtp,
        ProviderKind::Sendgrid,
    ];
}

/// One request as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    pub provider: ProviderKind,
    pub at: jiff::Timestamp,
    /// The APNs device token, the FCM registration token (or topic), the web push subscription id,
    /// the phone number (E.164) of an SMS or a call.
    pub target: String,
    /// What the sandbox answered.
    pub status: u16,
    /// The refusal's reason (APNs `reason`, FCM `errorCode`, web push text), when refused.
    pub reason: Option<String>,
    /// The protocol headers that matter (`apns-*`; web push `TTL`, `Urgency`, `Topic`,
    /// `Content-Encoding` and the VAPID `Authorization`; SendGrid's `headers` object).
    pub headers: BTreeMap<String, String>,
    /// The APNs JSON body; the FCM `message`; the decrypted web push plaintext (as JSON when it
    /// is); Twilio's and Vonage's form parameters (Vonage's `api_secret` left out); SendGrid's
    /// JSON body, each attachment's `content` replaced by the decoded file's `size` and `sha256`.
    pub payload: serde_json::Value,
    /// Who signed it: APNs `<team>/<key id>`, FCM the service account's e-mail, web push the
    /// VAPID public key, Twilio the account SID, Vonage the API key, SMTP the AUTH user,
    /// SendGrid the API key's id (`SG.<id>.…`).
    pub credential: Option<String>,
    /// The id the sandbox answered with (`apns-id`, FCM `name`, web push `Location`).
    pub message_id: Option<String>,
    /// Web push: the request body as sent (base64url, the aes128gcm ciphertext), so a test can
    /// decrypt it with the subscriber's keys itself. SMTP: the raw message as received. `None`
    /// for the other providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Received {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
