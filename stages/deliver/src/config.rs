//! The deliver stage's configuration: how providers are called, and each provider's own
//! settings (one table per provider, `[deliver.<provider>]`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::TlsConfig;
use crate::providers::apns::ApnsConfig;
use crate::providers::fcm::FcmConfig;
use crate::providers::log::LogConfig;
use crate::providers::sendgrid::SendgridConfig;
use crate::providers::smtp::SmtpConfig;
use crate::providers::twilio::TwilioConfig;
use crate::providers::vonage::VonageConfig;
use crate::providers::web_push::WebPushConfig;
use crate::providers::webhook::WebhookConfig;

/// How deliveries are handed to providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverConfig {
    /// Provider calls in flight at once, per provider route and process (a provider's own
    /// `concurrency` overrides it). A call holds its slot
    /// until its outcome is written, so this also bounds how many deliveries a crash can leave
    /// between "the provider accepted" and "recorded as sent" (each may be called again).
    pub concurrency: usize,
    /// Longest a provider call may take before it is abandoned and retried (with the same
    /// idempotency key).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Trust for every provider's TLS (an extra CA for sandboxes).
    pub tls: TlsConfig,
    /// The `log` sandbox provider.
    pub log: LogConfig,
    /// Apple Push Notification service.
    pub apns: ApnsConfig,
    /// Firebase Cloud Messaging HTTP v1.
    pub fcm: FcmConfig,
    /// Web push (RFC 8030).
    pub web_push: WebPushConfig,
    /// Signed webhooks to producer-supplied URLs.
    pub webhook: WebhookConfig,
    /// Twilio: SMS and voice calls.
    pub twilio: TwilioConfig,
    /// Vonage: SMS.
    pub vonage: VonageConfig,
    /// E-mail through each tenant's SMTP relay.
    pub smtp: SmtpConfig,
    /// SendGrid: e-mail through the v3 Mail Send API.
    pub sendgrid: SendgridConfig,
    /// The order SMS and e-mail providers are tried in, for every tenant and per tenant.
    pub failover: Failover,
    /// When a provider's failures raise a `failure_rate` alert.
    pub failure_alert: crate::breaker::FailureAlertConfig,
}

/// Which providers send a route, in order (`[deliver.failover]`). The first sends; the next
/// sends when the one before it is down (its breaker open, or it answered an outage or a
/// slow-down) or the tenant has no account with it. A provider that gave no answer at all (a
/// timeout: it may have sent) is not failed over from but retried, so no message goes out twice.
/// A tenant with an account at only some of them is served by those: the others are passed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    /// SMS providers: `twilio`, `vonage`.
    pub sms: Vec<String>,
    /// E-mail providers: `smtp`, `sendgrid`.
    pub email: Vec<String>,
    /// A tenant's own order, e.g. `[deliver.failover.tenants.acme] sms = ["vonage", "twilio"]`.
    pub tenants: BTreeMap<String, TenantFailover>,
}

/// One tenant's provider order; a channel it leaves out follows the deployment's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantFailover {
    pub sms: Option<Vec<String>>,
    pub email: Option<Vec<String>>,
}

impl Failover {
    /// The deployment's order for `route` (the routes with a choice: SMS and e-mail).
    pub fn order(&self, route: herald_schemas::Route) -> &[String] {
        if route == herald_schemas::Route::Email { &self.email } else { &self.sms }
    }
}

impl TenantFailover {
    /// The tenant's own order for `route`, when it has one.
    pub fn order(&self, route: herald_schemas::Route) -> Option<&[String]> {
        if route == herald_schemas::Route::Email { self.email.as_deref() } else { self.sms.as_deref() }
    }
}

impl Default for Failover {
    fn default() -> Self {
        Failover { sms: vec!["twilio".into(), "vonage".into()], email: vec!["smtp".into(), "sendgrid".into()], tenants: BTreeMap::new() }
    }
}

impl Default for DeliverConfig {
    fn default() -> Self {
        DeliverConfig {
            concurrency: 64,
            send_timeout: Duration::from_secs(10),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            apns: ApnsConfig::default(),
            fcm: FcmConfig::default(),
            web_push: WebPushConfig::default(),
            webhook: WebhookConfig::default(),
            twilio: TwilioConfig::default(),
            vonage: VonageConfig::default(),
            smtp: SmtpConfig::default(),
            sendgrid: SendgridConfig::default(),
            failover: Failover::default(),
            failure_alert: crate::breaker::FailureAlertConfig::default(),
        }
    }
}

impl DeliverConfig {
    /// How long a provider call may hold a delivery in `sending` before another copy may take
    /// it over: the call's timeout, and as long again to write its outcome.
    pub fn lease(&self) -> Duration {
        self.send_timeout.saturating_mul(2)
    }
}
