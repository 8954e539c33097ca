//! E-mail over SMTP: each tenant's relay (host, port, STARTTLS or implicit TLS, AUTH), one pooled
//! transport per relay account kept while its credentials are unchanged. [`request`] builds the
//! message; [`classify`] reads the relay's replies.

mod classify;
mod config;
mod request;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_schemas::providers::{SmtpCredentials, SmtpSecurity};
use herald_schemas::{CredentialKey, Credentials, Delivery};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials as Login;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub use classify::classify;
pub use config::SmtpConfig;
pub use request::{message, message_id};

use crate::http::TlsConfig;
use crate::ports::CredentialStore;
use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// The SMTP provider.
pub struct Smtp {
    config: SmtpConfig,
    timeout: Duration,
    /// Extra CA certificates (PEM) to trust, from `deliver.tls.extra_ca_file`.
    extra_ca: Option<Vec<u8>>,
    credentials: Arc<dyn CredentialStore>,
    attachments: Option<herald_attachments::Attachments>,
    transports: Mutex<HashMap<CredentialKey, (u64, Transport)>>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").field("pool_size", &self.config.pool_size).finish_non_exhaustive()
    }
}

impl Smtp {
    pub fn new(config: &SmtpConfig, tls: &TlsConfig, timeout: Duration, credentials: Arc<dyn CredentialStore>) -> Result<Self, BuildError> {
        let extra_ca = match &tls.extra_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| BuildError {
                provider: "smtp",
                detail: format!("cannot read deliver.tls.extra_ca_file {} ({e})", path.display()),
            })?),
            None => None,
        };
        Ok(Smtp { config: config.clone(), timeout, extra_ca, credentials, attachments: None, transports: Mutex::new(HashMap::new()) })
    }

    /// Reads e-mails' stored attachments from `store`.
    pub fn with_attachments(mut self, store: Option<herald_attachments::Attachments>) -> Self {
        self.attachments = store;
        self
    }

    /// The pooled transport of a relay account, built once per credentials revision.
    fn transport(&self, key: &CredentialKey, revision: u64, relay: &SmtpCredentials) -> Result<Transport, ProviderError> {
        let mut transports = self.transports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((stored, transport)) = transports.get(key)
            && *stored == revision
        {
            return Ok(transport.clone());
        }
        let invalid = |detail: String| ProviderError::permanent("invalid_credentials", detail);
        let tls = || -> Result<TlsParameters, ProviderError> {
            let mut builder = TlsParameters::builder(relay.host.clone());
            if let Some(pem) = &self.extra_ca {
                for block in pem_blocks(pem) {
                    let certificate =
                        Certificate::from_pem(block.as_bytes()).map_err(|e| invalid(format!("deliver.tls.extra_ca_file: {e}")))?;
                    builder = builder.add_root_certificate(certificate);
                }
            }
            builder.build_rustls().map_err(|e| invalid(format!("TLS for {}: {e}", relay.host)))
        };
        let security = match relay.security {
            SmtpSecurity::Starttls => Tls::Required(tls()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls()?),
            SmtpSecurity::None => Tls::None,
        };
        let mut builder = Transport::builder_dangerous(relay.host.clone())
            .port(relay.port())
            .tls(security)
            .timeout(Some(self.timeout))
            .pool_config(PoolConfig::new().max_size(self.config.pool_size.max(1)));
        if let Some(name) = &self.config.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        if let (Some(user), Some(password)) = (&relay.username, &relay.password) {
            builder = builder.credentials(Login::new(user.clone(), password.expose().to_owned()));
        }
        let transport = builder.build();
        transports.insert(key.clone(), (revision, transport.clone()));
        Ok(transport)
    }

    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let stored = crate::ports::lookup(self.credentials.as_ref(), delivery, "smtp", "SMTP relay").await?;
        let Credentials::Smtp(relay) = &stored.credentials else {
            return Err(ProviderError::permanent("invalid_credentials", "the stored SMTP credentials are of another provider"));
        };
        let files = crate::providers::attachments::load(self.attachments.as_ref(), delivery).await?;
        let email = message(delivery, &relay.from, &files)?;
        let id = email.headers().get_raw("Message-ID").unwrap_or_default().to_owned();
        let transport = self.transport(&stored.key, stored.revision, relay)?;
        let response = transport.send(email).await.map_err(|e| classify(&e))?;
        // The relay's queue id when it names one (`250 2.0.0 Ok: queued as <id>`), else ours.
        let queued = response.message().last().and_then(|line| line.rsplit_once("queued as ")).map(|(_, q)| q.trim().to_owned());
        Ok(Receipt { provider_message_id: queued.unwrap_or(id), duplicate: false })
    }
}

/// The certificates of a PEM bundle, one block each.
fn pem_blocks(pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| b.trim().to_owned())
        .collect()
}

impl Provider for Smtp {
    fn name(&self) -> &str {
        "smtp"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
