//! Web push (RFC 8030/8291/8292): each subscription names its push service (the browser
//! vendor's); the payload is encrypted for the subscriber, the call signed with the tenant's
//! VAPID key — the one its web app subscribed with.

mod classify;
mod config;
mod request;
#[cfg(test)]
mod tests;
mod vapid;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_schemas::{CredentialKey, Credentials, Delivery, Timestamp};

pub use classify::classify;
pub use config::WebPushConfig;
pub use request::{PushRequest, build};
use vapid::Vapid;

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

/// The web push provider.
pub struct WebPush {
    config: WebPushConfig,
    client: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
    keys: Mutex<HashMap<CredentialKey, (u64, Arc<Vapid>)>>,
}

impl std::fmt::Debug for WebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPush").finish_non_exhaustive()
    }
}

impl WebPush {
    pub fn new(
        config: &WebPushConfig,
        tls: &TlsConfig,
        timeout: Duration,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, BuildError> {
        let client = crate::http::client("web_push", tls, timeout, false)?;
        Ok(WebPush { config: config.clone(), client, credentials, keys: Mutex::new(HashMap::new()) })
    }

    async fn vapid(&self, delivery: &Delivery) -> Result<Arc<Vapid>, ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "web_push", "VAPID keys").await?;
        let Credentials::WebPush(credentials) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored web push credentials are of another provider"));
        };
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match keys.get(&stored.key) {
            Some((revision, vapid)) if *revision == stored.revision => Ok(vapid.clone()),
            _ => {
                let vapid = Arc::new(Vapid::new(credentials)?);
                keys.insert(stored.key.clone(), (stored.revision, vapid.clone()));
                Ok(vapid)
            }
        }
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let vapid = self.vapid(delivery).await?;
        let push = build(delivery, Timestamp::now(), self.config.default_ttl)?;
        let authorization = vapid.authorization(&push.origin, self.config.vapid_expiry)?;
        let mut call = self.client.post(&push.endpoint).header("Authorization", authorization);
        for (name, value) in &push.headers {
            call = call.header(*name, value);
        }
        let response = call.body(push.body).send().await.map_err(|e| crate::http::transport_error("the push service", &e))?;
        let status = response.status();
        if status.is_success() {
            let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
            return Ok(Receipt { provider_message_id: location.unwrap_or_else(|| delivery.delivery_id.to_string()), duplicate: false });
        }
        let retry_after = crate::http::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        Err(classify(status.as_u16(), &body, retry_after))
    }
}

impl Provider for WebPush {
    fn name(&self) -> &str {
        "web_push"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
