//! The OAuth 2.0 service-account flow (RFC 7523 JWT bearer grant): an RS256 assertion signed
//! with the account's key is exchanged for an access token, which is reused until shortly
//! before it expires (Google's last an hour). One exchange at a time per account: concurrent
//! calls wait for it instead of each asking for a token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_schemas::providers::ServiceAccount;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::ProviderError;

/// The audience Google's own libraries put in the assertion, whatever the token URL.
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// What FCM needs the token for.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One service account's token source.
pub struct TokenSource {
    key: EncodingKey,
    header: Header,
    client_email: String,
    token_url: String,
    current: tokio::sync::Mutex<Option<(String, Instant)>>,
    exchanges: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("client_email", &self.client_email).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default = "an_hour")]
    expires_in: u64,
}

fn an_hour() -> u64 {
    3600
}

impl TokenSource {
    pub fn new(account: &ServiceAccount, token_url: Option<&str>) -> Result<Self, ProviderError> {
        let key = EncodingKey::from_rsa_pem(account.private_key.expose().as_bytes()).map_err(|e| {
            ProviderError::permanent(
                "invalid_credentials",
                format!("the FCM service account {}'s private_key is not an RSA PEM key ({e})", account.client_email),
            )
        })?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(account.private_key_id.clone());
        let token_url = token_url.or(account.token_uri.as_deref()).unwrap_or(GOOGLE_TOKEN_URL).to_owned();
        Ok(TokenSource {
            key,
            header,
            client_email: account.client_email.clone(),
            token_url,
            current: tokio::sync::Mutex::new(None),
            exchanges: AtomicU64::new(0),
        })
    }

    /// A valid access token: the cached one until a minute (or a tenth of its life, when
    /// shorter) before it expires, else a new one.
    pub async fn access_token(&self, client: &reqwest::Client) -> Result<String, ProviderError> {
        let mut current = self.current.lock().await;
        if let Some((token, refresh_at)) = current.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let now = jiff::Timestamp::now().as_second();
        let audience = if self.token_url.starts_with("https://oauth2.googleapis.com/") { GOOGLE_TOKEN_URL } else { &self.token_url };
        let claims = Assertion { iss: &self.client_email, scope: SCOPE, aud: audience, iat: now, exp: now + 3600 };
        let assertion = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| ProviderError::permanent("invalid_credentials", format!("cannot sign the OAuth assertion: {e}")))?;
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
        let response = client
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| crate::http::transport_error("the FCM token endpoint", &e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let detail = format!("the token endpoint {} answered {status}: {}", self.token_url, body.chars().take(300).collect::<String>());
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                ProviderError::outage("token_endpoint_unavailable", detail)
            } else {
                ProviderError::permanent("invalid_credentials", format!("{detail}; check the service account"))
            });
        }
        let granted: Granted = response
            .json()
            .await
            .map_err(|e| ProviderError::outage("token_endpoint_garbled", format!("the token endpoint's answer does not decode: {e}")))?;
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let life = Duration::from_secs(granted.expires_in);
        let margin = Duration::from_secs(60).min(life / 10);
        *current = Some((granted.access_token.clone(), Instant::now() + life - margin));
        Ok(granted.access_token)
    }

    /// Forgets `token` when it is still the current one (FCM answered 401).
    pub async fn expire(&self, token: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(t, _)| t == token) {
            *current = None;
        }
    }

    /// Access tokens obtained so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }
}
