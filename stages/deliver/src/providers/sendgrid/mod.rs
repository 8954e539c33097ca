//! SendGrid: e-mail through the v3 Mail Send API (`POST /v3/mail/send`, JSON, the API key as a
//! bearer token), the second e-mail provider Herald fails over to. [`request`] builds the body;
//! [`classify`] reads the answers. SendGrid takes no idempotency key: "never twice" rests on the
//! deliver stage's record of each call, and a call without an answer is retried here, never
//! failed over.

mod classify;
mod config;
mod request;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use herald_schemas::providers::SendgridRegion;
use herald_schemas::{Credentials, Delivery};

pub use classify::{classify, retry_after, status_name};
pub use config::SendgridConfig;
pub use request::body;

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

/// E-mail through SendGrid.
pub struct Sendgrid {
    config: SendgridConfig,
    http: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
    attachments: Option<herald_attachments::Attachments>,
}

impl std::fmt::Debug for Sendgrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sendgrid").field("url", &self.config.url).finish_non_exhaustive()
    }
}

impl Sendgrid {
    pub fn new(
        config: &SendgridConfig,
        tls: &TlsConfig,
        timeout: Duration,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, BuildError> {
        let http = crate::http::client("sendgrid", tls, timeout, false)?;
        Ok(Sendgrid { config: config.clone(), http, credentials, attachments: None })
    }

    /// Reads e-mails' stored attachments from `store`.
    pub fn with_attachments(mut self, store: Option<herald_attachments::Attachments>) -> Self {
        self.attachments = store;
        self
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "sendgrid", "SendGrid account").await?;
        let Credentials::Sendgrid(account) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored SendGrid credentials are of another provider"));
        };
        let files = crate::providers::attachments::load(self.attachments.as_ref(), delivery).await?;
        let body = body(delivery, &account.from, &files)?;
        let base = match account.region {
            SendgridRegion::Global => &self.config.url,
            SendgridRegion::Eu => &self.config.eu_url,
        };
        let url = format!("{}/v3/mail/send", base.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .bearer_auth(account.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| crate::http::transport_error("SendGrid", &e))?;
        let status = response.status();
        if status.is_success() {
            // Queued. The id names the message in SendGrid's events; without one, ours does.
            let id = response.headers().get("x-message-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let id = id.unwrap_or_else(|| body["headers"]["Message-ID"].as_str().unwrap_or_default().to_owned());
            return Ok(Receipt { provider_message_id: id, duplicate: false });
        }
        let now = jiff::Timestamp::now().as_second().max(0).unsigned_abs();
        let wait = retry_after(response.headers(), now);
        let text = response.text().await.unwrap_or_default();
        Err(classify(status.as_u16(), &text, wait))
    }
}

impl Provider for Sendgrid {
    fn name(&self) -> &str {
        "sendgrid"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
