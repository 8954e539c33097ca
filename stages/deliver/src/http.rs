//! The HTTP clients providers share the making of: rustls with the web's roots plus an optional
//! extra CA (a sandbox's), HTTP/2 where the provider speaks it, bounded timeouts, no redirects.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::providers::BuildError;

/// TLS settings for every provider client (`[deliver.tls]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// A PEM file of extra CA certificates to trust besides the web's roots: a sandbox's CA
    /// (`herald sandbox` writes one) or a corporate proxy's.
    pub extra_ca_file: Option<PathBuf>,
}

/// Builds a client. `http2_only` speaks HTTP/2 from the first byte (APNs): every concurrent call
/// becomes a stream on one connection instead of a connection each.
pub fn client(provider: &'static str, tls: &TlsConfig, timeout: Duration, http2_only: bool) -> Result<reqwest::Client, BuildError> {
    builder(provider, tls, timeout, http2_only)?
        .build()
        .map_err(|e| BuildError { provider, detail: format!("cannot build its HTTP client: {e}") })
}

/// The builder [`client`] builds, for a provider that adds to it (the webhook's guarded resolver).
pub fn builder(provider: &'static str, tls: &TlsConfig, timeout: Duration, http2_only: bool) -> Result<reqwest::ClientBuilder, BuildError> {
    let error = |detail: String| BuildError { provider, detail };
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(600))
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_while_idle(true)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(path) = &tls.extra_ca_file {
        let pem = std::fs::read(path).map_err(|e| error(format!("cannot read deliver.tls.extra_ca_file {} ({e})", path.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| error(format!("deliver.tls.extra_ca_file {} is not PEM certificates ({e})", path.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// A `Retry-After` header in seconds (the HTTP-date form is read as "a minute").
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    Some(value.parse::<u64>().map(Duration::from_secs).unwrap_or(Duration::from_secs(60)))
}

/// A transport failure (no answer): always worth retrying, and a sign of an outage.
pub fn transport_error(provider: &str, error: &reqwest::Error) -> crate::ProviderError {
    let code = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect_error"
    } else {
        "transport_error"
    };
    crate::ProviderError::outage(code, format!("{provider}: {}", causes(error)))
}

/// An error and its sources, joined: the chain says what actually failed (TLS, refused, reset).
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}
