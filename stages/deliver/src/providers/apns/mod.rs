//! APNs: Apple's HTTP/2 provider API, with token-based auth.
//!
//! One HTTP/2 connection per host carries every call as a stream (the client speaks HTTP/2 from
//! the first byte, so concurrent calls never open more connections). Each tenant's app has its
//! own team key in the store; its signer and current JWT are cached by the credentials'
//! revision, so a key rotated through the admin API is used from the next call on. The
//! `apns-id` is the delivery id: a retried call is recognisable in Apple's and the sandbox's
//! logs.

mod classify;
mod config;
mod request;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_schemas::directory::Environment;
use herald_schemas::providers::ApnsCredentials;
use herald_schemas::{CredentialKey, Credentials, Delivery};

pub use classify::classify;
pub use config::ApnsConfig;
pub use request::{ApnsRequest, build};
use token::Signer;

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

mod token;

/// The APNs provider.
pub struct Apns {
    config: ApnsConfig,
    client: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
    /// Signers by credentials, with the revision they were built from.
    signers: Mutex<HashMap<CredentialKey, (u64, Arc<Signer>)>>,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns").field("production_url", &self.config.production_url).finish_non_exhaustive()
    }
}

impl Apns {
    pub fn new(config: &ApnsConfig, tls: &TlsConfig, timeout: Duration, credentials: Arc<dyn CredentialStore>) -> Result<Self, BuildError> {
        let client = crate::http::client("apns", tls, timeout, true)?;
        Ok(Apns { config: config.clone(), client, credentials, signers: Mutex::new(HashMap::new()) })
    }

    /// JWTs signed so far, over every key (each is reused until `token_refresh`).
    pub fn tokens_signed(&self) -> u64 {
        self.signers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().map(|(_, s)| s.signed()).sum()
    }

    /// The tenant's credentials for the device's app, and their signer.
    async fn credentials(&self, delivery: &Delivery) -> Result<(ApnsCredentials, Arc<Signer>), ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "apns", "APNs credentials").await?;
        let Credentials::Apns(credentials) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored APNs credentials are of another provider"));
        };
        let mut signers = self.signers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let signer = match signers.get(&stored.key) {
            Some((revision, signer)) if *revision == stored.revision => signer.clone(),
            _ => {
                let signer = Arc::new(Signer::new(credentials)?);
                signers.insert(stored.key.clone(), (stored.revision, signer.clone()));
                signer
            }
        };
        Ok((credentials.clone(), signer))
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let (credentials, signer) = self.credentials(delivery).await?;
        let request = build(delivery, &credentials.topic)?;
        let base = match request.environment {
            Environment::Production => &self.config.production_url,
            Environment::Sandbox => &self.config.development_url,
        };
        let token = signer.bearer(self.config.token_refresh)?;
        let mut call = self.client.post(format!("{}{}", base.trim_end_matches('/'), request.path)).bearer_auth(&token);
        for (name, value) in &request.headers {
            call = call.header(*name, value);
        }
        let response = call.body(request.body).send().await.map_err(|e| crate::http::transport_error("APNs", &e))?;
        let status = response.status().as_u16();
        if status == 200 {
            let id = response.headers().get("apns-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            return Ok(Receipt { provider_message_id: id.unwrap_or_else(|| delivery.delivery_id.to_string()), duplicate: false });
        }
        let retry_after = crate::http::retry_after(response.headers());
        #[derive(serde::Deserialize, Default)]
        struct Answer {
            #[serde(default)]
            reason: String,
        }
        let answer: Answer = response.json().await.unwrap_or_default();
        if answer.reason == "ExpiredProviderToken" {
            signer.expire(&token);
        }
        Err(classify(status, &answer.reason, retry_after))
    }
}

impl Provider for Apns {
    fn name(&self) -> &str {
        "apns"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
