//! FCM HTTP v1: `messages:send` with an OAuth 2.0 access token from the tenant's service
//! account. Each tenant's app has its own service account (two Firebase projects are two
//! accounts); its token source is cached by the credentials' revision.

mod classify;
mod config;
mod request;
#[cfg(test)]
mod tests;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_schemas::{CredentialKey, Credentials, Delivery, Timestamp};

pub use classify::{classify, error_code};
pub use config::FcmConfig;
pub use request::build;
use token::TokenSource;

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

/// The FCM provider.
pub struct Fcm {
    config: FcmConfig,
    client: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
    sources: Mutex<HashMap<CredentialKey, Source>>,
}

/// A service account's token source, with the revision it was built from and its project.
type Source = (u64, String, Arc<TokenSource>);

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm").field("url", &self.config.url).finish_non_exhaustive()
    }
}

impl Fcm {
    pub fn new(config: &FcmConfig, tls: &TlsConfig, timeout: Duration, credentials: Arc<dyn CredentialStore>) -> Result<Self, BuildError> {
        let client = crate::http::client("fcm", tls, timeout, false)?;
        Ok(Fcm { config: config.clone(), client, credentials, sources: Mutex::new(HashMap::new()) })
    }

    /// Access tokens obtained so far, over every service account.
    pub fn tokens_obtained(&self) -> u64 {
        self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().map(|(_, _, s)| s.exchanges()).sum()
    }

    async fn source(&self, delivery: &Delivery) -> Result<(String, Arc<TokenSource>), ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "fcm", "FCM service account").await?;
        let Credentials::Fcm(credentials) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored FCM credentials are of another provider"));
        };
        let mut sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match sources.get(&stored.key) {
            Some((revision, project, source)) if *revision == stored.revision => Ok((project.clone(), source.clone())),
            _ => {
                let account = &credentials.service_account;
                let source = Arc::new(TokenSource::new(account, self.config.token_url.as_deref())?);
                sources.insert(stored.key.clone(), (stored.revision, account.project_id.clone(), source.clone()));
                Ok((account.project_id.clone(), source))
            }
        }
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let (project, source) = self.source(delivery).await?;
        let body = build(delivery, Timestamp::now())?;
        let token = source.access_token(&self.client).await?;
        let url = format!("{}/v1/projects/{project}/messages:send", self.config.url.trim_end_matches('/'));
        let response =
            self.client.post(url).bearer_auth(&token).json(&body).send().await.map_err(|e| crate::http::transport_error("FCM", &e))?;
        let status = response.status().as_u16();
        let retry_after = crate::http::retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| crate::http::transport_error("FCM", &e))?;
        if status == 200 {
            #[derive(serde::Deserialize)]
            struct Sent {
                name: String,
            }
            // Accepted is accepted: an answer without a readable name must not make us send again.
            let name = serde_json::from_slice::<Sent>(&bytes).map(|s| s.name).unwrap_or_else(|_| format!("fcm:{}", delivery.delivery_id));
            return Ok(Receipt { provider_message_id: name, duplicate: false });
        }
        let error = classify(status, &bytes, retry_after);
        if status == 401 {
            source.expire(&token).await;
        }
        Err(error)
    }
}

impl Provider for Fcm {
    fn name(&self) -> &str {
        "fcm"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
