//! Vonage: SMS through the SMS API (`POST /sms/json`, form-encoded, the key and secret in the
//! body), the second SMS provider Herald fails over to. The delivery id goes as `client-ref`, so
//! Vonage's delivery receipts name it.

mod classify;
mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use herald_schemas::{Credentials, Delivery, SmsEncoding};
use serde::Deserialize;

pub use classify::{classify_http, classify_status, status_name};
pub use config::VonageConfig;

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text", default)]
    error_text: String,
}

/// SMS through Vonage.
pub struct Vonage {
    config: VonageConfig,
    http: reqwest::Client,
    credentials: Arc<dyn CredentialStore>,
}

impl std::fmt::Debug for Vonage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vonage").field("url", &self.config.url).finish_non_exhaustive()
    }
}

/// The form of one SMS.
pub fn form(
    delivery: &Delivery,
    api_key: &str,
    api_secret: &str,
    from: &str,
    config: &VonageConfig,
) -> Result<Vec<(&'static str, String)>, ProviderError> {
    let content = delivery.content.as_ref();
    let text = content.and_then(|c| c.parts.get("body")).filter(|b| !b.is_empty()).ok_or_else(|| {
        ProviderError::permanent(
            "no_body",
            format!("template `{}` rendered no `body` for sms; add one to its [sms] part", delivery.template),
        )
    })?;
    let unicode = content.and_then(|c| c.sms).is_some_and(|s| s.encoding == SmsEncoding::Ucs2);
    let mut form = vec![
        ("api_key", api_key.to_owned()),
        ("api_secret", api_secret.to_owned()),
        ("from", from.to_owned()),
        ("to", delivery.address.trim_start_matches('+').to_owned()),
        ("text", text.clone()),
        ("type", if unicode { "unicode" } else { "text" }.to_owned()),
        ("client-ref", delivery.delivery_id.to_string()),
    ];
    if let Some(url) = &config.status_callback {
        form.push(("callback", url.clone()));
        form.push(("status-report-req", "1".into()));
    }
    Ok(form)
}

impl Vonage {
    pub fn new(
        config: &VonageConfig,
        tls: &TlsConfig,
        timeout: Duration,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, BuildError> {
        let http = crate::http::client("vonage", tls, timeout, false)?;
        Ok(Vonage { config: config.clone(), http, credentials })
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "vonage", "Vonage account").await?;
        let Credentials::Vonage(account) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored Vonage credentials are of another provider"));
        };
        let form = form(delivery, &account.api_key, account.api_secret.expose(), &account.from, &self.config)?;
        let url = format!("{}/sms/json", self.config.url.trim_end_matches('/'));
        let response = self.http.post(&url).form(&form).send().await.map_err(|e| crate::http::transport_error("Vonage", &e))?;
        let status = response.status();
        let retry_after = crate::http::retry_after(response.headers());
        let body = response.text().await.map_err(|e| crate::http::transport_error("Vonage", &e))?;
        if !status.is_success() {
            return Err(classify_http(status.as_u16(), &body, retry_after));
        }
        let answer: Answer = serde_json::from_str(&body)
            .map_err(|e| ProviderError::outage("bad_answer", format!("Vonage answered {status} with an unreadable body ({e})")))?;
        // A long text is several parts: sent when every part is, refused by the first refusal.
        if let Some(refused) = answer.messages.iter().find(|p| p.status != "0") {
            return Err(classify_status(&refused.status, &refused.error_text));
        }
        let id = answer
            .messages
            .first()
            .and_then(|p| p.message_id.clone())
            .ok_or_else(|| ProviderError::outage("bad_answer", format!("Vonage answered {status} without a message id")))?;
        Ok(Receipt { provider_message_id: id, duplicate: false })
    }
}

impl Provider for Vonage {
    fn name(&self) -> &str {
        "vonage"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
