//! Twilio: SMS through the Messages resource and voice calls through the Calls resource, one
//! account per tenant (HTTP Basic with the account SID and auth token). Two providers over one
//! client — [`TwilioSms`] on the `sms` route and [`TwilioVoice`] on `voice` — so each route has its
//! own breaker. A message or call Twilio queued is `sent` (its status callbacks, `delivered` or
//! `busy`, come later); [`classify`] reads its refusals.

mod classify;
mod config;
mod request;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use herald_schemas::{Credentials, Delivery, Timestamp};
use serde::Deserialize;

pub use classify::classify;
pub use config::TwilioConfig;
pub use request::{call, language, message, twiml};

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

/// What Twilio answers when it queued a message or call.
#[derive(Deserialize)]
struct Created {
    sid: String,
}

/// The client both Twilio providers share.
struct Client {
    config: TwilioConfig,
    http: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
}

impl Client {
    async fn post(&self, delivery: &Delivery, resource: &str, voice: bool) -> Result<Receipt, ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "twilio", "Twilio account").await?;
        let Credentials::Twilio(account) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored Twilio credentials are of another provider"));
        };
        let form = if voice { call(delivery, account, &self.config)? } else { message(delivery, account, &self.config, Timestamp::now())? };
        let url = format!("{}/2010-04-01/Accounts/{}/{resource}", self.config.url.trim_end_matches('/'), account.account_sid);
        let response = self
            .http
            .post(&url)
            .basic_auth(&account.account_sid, Some(account.auth_token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| crate::http::transport_error("Twilio", &e))?;
        let status = response.status();
        let retry_after = crate::http::retry_after(response.headers());
        let body = response.text().await.map_err(|e| crate::http::transport_error("Twilio", &e))?;
        if status.is_success() {
            let created: Created = serde_json::from_str(&body)
                .map_err(|e| ProviderError::outage("bad_answer", format!("Twilio answered {status} without a sid ({e})")))?;
            return Ok(Receipt { provider_message_id: created.sid, duplicate: false });
        }
        Err(classify(status.as_u16(), &body, retry_after))
    }
}

/// SMS through Twilio.
pub struct TwilioSms(Arc<Client>);

/// Voice calls through Twilio.
pub struct TwilioVoice(Arc<Client>);

impl std::fmt::Debug for TwilioSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSms").field("url", &self.0.config.url).finish_non_exhaustive()
    }
}

/// The two Twilio providers over one client.
pub fn twilio(
    config: &TwilioConfig,
    tls: &TlsConfig,
    timeout: Duration,
    credentials: Arc<dyn CredentialStore>,
) -> Result<(TwilioSms, TwilioVoice), BuildError> {
    let http = crate::http::client("twilio", tls, timeout, false)?;
    let client = Arc::new(Client { config: config.clone(), http, credentials });
    Ok((TwilioSms(client.clone()), TwilioVoice(client)))
}

impl Provider for TwilioSms {
    fn name(&self) -> &str {
        "twilio"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.0.post(delivery, "Messages.json", false))
    }
}

impl Provider for TwilioVoice {
    fn name(&self) -> &str {
        "twilio"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.0.post(delivery, "Calls.json", true))
    }
}
