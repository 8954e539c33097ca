//! Webhooks: a signed `POST` to the URL a producer named for a recipient. The tenant's secret
//! signs it ([`request`]); the URL may not reach a private, loopback or link-local address
//! unless configured ([`guard`]); redirects are never followed; answers are classified by
//! [`classify`]. An endpoint whose receiver answered 410 is disabled in the store and not called
//! again until the tenant enables it.

mod classify;
mod config;
pub mod guard;
mod request;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use herald_schemas::{Credentials, Delivery, Timestamp};
use reqwest::Url;

pub use classify::classify;
pub use config::WebhookConfig;
pub use request::{WebhookRequest, build, parse_url, signature};

use crate::http::TlsConfig;
use crate::ports::{CredentialStore, DeviceRegistry};
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

/// How much of a refusal's body is kept for the event.
const ERROR_BODY_BYTES: usize = 1024;

/// The webhook provider.
pub struct Webhook {
    config: WebhookConfig,
    /// Resolves through [`guard::GuardedResolver`]: refused addresses are never connected to.
    guarded: reqwest::Client,
    /// For the hosts `allow_private` names.
    open: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
    /// Where endpoints answered 410 are disabled; checked before each call.
    endpoints: Option<Arc<dyn DeviceRegistry>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("allow_private", &self.config.allow_private).finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn new(
        config: &WebhookConfig,
        tls: &TlsConfig,
        credentials: Arc<dyn CredentialStore>,
        endpoints: Option<Arc<dyn DeviceRegistry>>,
    ) -> Result<Self, BuildError> {
        let error = |detail: String| BuildError { provider: "webhook", detail };
        // No proxy from the environment: a proxy would resolve the name itself, past the guard.
        let guarded = crate::http::builder("webhook", tls, config.timeout, false)?
            .no_proxy()
            .dns_resolver(Arc::new(guard::GuardedResolver))
            .build()
            .map_err(|e| error(format!("cannot build its HTTP client: {e}")))?;
        let open = crate::http::builder("webhook", tls, config.timeout, false)?
            .no_proxy()
            .build()
            .map_err(|e| error(format!("cannot build its HTTP client: {e}")))?;
        Ok(Webhook { config: config.clone(), guarded, open, credentials, endpoints })
    }

    /// Whether `allow_private` names the URL's host (or host and port).
    fn allowed_private(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or_default();
        self.config.allow_private.iter().any(|entry| {
            let entry = entry.trim();
            entry.eq_ignore_ascii_case(host) || entry.eq_ignore_ascii_case(&format!("{host}:{port}")) || entry == format!("[{host}]:{port}")
        })
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "webhook", "webhook signing secret").await?;
        let Credentials::Webhook(credentials) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored webhook credentials are of another provider"));
        };
        let request = build(delivery, credentials.secret.expose(), Timestamp::now().as_second())?;
        if let Some(endpoints) = &self.endpoints {
            let disabled = endpoints
                .endpoint_disabled(&delivery.tenant, &delivery.address)
                .await
                .map_err(|e| ProviderError::outage("store_unavailable", format!("cannot read whether the endpoint is disabled: {e}")))?;
            if let Some(why) = disabled {
                return Err(ProviderError::permanent(
                    "endpoint_disabled",
                    format!(
                        "{} is disabled ({why}): its receiver said it is gone; `herald webhooks enable {}` sends to it again",
                        delivery.address, delivery.address
                    ),
                ));
            }
        }
        let refused = |why: String| {
            ProviderError::permanent(
                "address_refused",
                format!(
                    "{why}; a webhook may not reach a private, loopback or link-local address (deliver.webhook.allow_private lists exceptions)"
                ),
            )
        };
        let client = if self.allowed_private(&request.url) {
            &self.open
        } else {
            let literal = match request.url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal.filter(|ip| guard::refused(*ip)) {
                return Err(refused(format!("{} is the address {ip}", request.url)));
            }
            &self.guarded
        };
        let mut call = client.post(request.url.clone());
        for (name, value) in &request.headers {
            call = call.header(*name, value);
        }
        let response = match call.body(request.body).send().await {
            Ok(response) => response,
            Err(e) if guard::is_refusal(&e) => return Err(refused(format!("{}: {}", request.url, crate::http::causes(&e)))),
            Err(e) => return Err(crate::http::transport_error("the webhook receiver", &e)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Receipt { provider_message_id: delivery.delivery_id.to_string(), duplicate: false });
        }
        let retry_after = crate::http::retry_after(response.headers());
        let body = first_bytes(response, ERROR_BODY_BYTES).await;
        Err(classify(status.as_u16(), &body, retry_after))
    }
}

/// The first `limit` bytes of a body, as text: a refusal's explanation, not a download.
async fn first_bytes(mut response: reqwest::Response, limit: usize) -> String {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(limit - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

impl Provider for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
