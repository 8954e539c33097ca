//! The provider authentication token: an ES256 JWT (`kid`, `iss`, `iat`) signed with the team's
//! `.p8` key, reused for every call until `token_refresh` old — Apple wants it refreshed at
//! least hourly and at most every 20 minutes, and answers a fresh token per request with 429.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_schemas::providers::ApnsCredentials;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::ProviderError;

/// One team key's signer and its current token.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    team_id: String,
    current: Mutex<Option<(String, Instant)>>,
    signed: AtomicU64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.header.kid).field("iss", &self.team_id).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

impl Signer {
    /// A signer for the credentials' key; a key that is not a P-256 PKCS#8 PEM is a permanent
    /// `invalid_credentials` (the tenant must fix it, retrying will not).
    pub fn new(credentials: &ApnsCredentials) -> Result<Self, ProviderError> {
        let key = EncodingKey::from_ec_pem(credentials.private_key.expose().as_bytes()).map_err(|e| {
            ProviderError::permanent(
                "invalid_credentials",
                format!("the APNs key {} is not a P-256 .p8 key ({e}); upload the .p8 file again", credentials.key_id),
            )
        })?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(credentials.key_id.clone());
        Ok(Signer { key, header, team_id: credentials.team_id.clone(), current: Mutex::new(None), signed: AtomicU64::new(0) })
    }

    /// The token to send: the current one while younger than `refresh`, else a new one.
    pub fn bearer(&self, refresh: Duration) -> Result<String, ProviderError> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, at)) = current.as_ref()
            && at.elapsed() < refresh
        {
            return Ok(token.clone());
        }
        let claims = Claims { iss: &self.team_id, iat: jiff::Timestamp::now().as_second() };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| ProviderError::permanent("invalid_credentials", format!("cannot sign an APNs token: {e}")))?;
        self.signed.fetch_add(1, Ordering::Relaxed);
        *current = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Forgets `token` when it is still the current one (APNs said it expired): the next call
    /// signs a new one.
    pub fn expire(&self, token: &str) {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|(t, _)| t == token) {
            *current = None;
        }
    }

    /// Tokens signed so far.
    pub fn signed(&self) -> u64 {
        self.signed.load(Ordering::Relaxed)
    }
}
