//! VAPID (RFC 8292): `Authorization: vapid t=<JWT>, k=<public key>`, the JWT signed ES256 with
//! the application server's key, `aud` the push service's origin, `exp` at most 24 hours ahead,
//! `sub` a contact. One JWT per origin, reused for half its life.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_schemas::providers::VapidCredentials;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

use crate::ProviderError;

/// One application server key and its JWTs by origin.
pub struct Vapid {
    key: EncodingKey,
    /// The public key, base64url (the `k=` parameter).
    public_key: String,
    subject: String,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid").field("public_key", &self.public_key).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

fn invalid(detail: String) -> ProviderError {
    ProviderError::permanent("invalid_credentials", format!("{detail}; store the VAPID key pair again"))
}

impl Vapid {
    pub fn new(credentials: &VapidCredentials) -> Result<Self, ProviderError> {
        let secret = credentials.private_key.expose().trim();
        let secret_key = if secret.contains("-----BEGIN") {
            use p256::pkcs8::DecodePrivateKey;
            p256::SecretKey::from_pkcs8_pem(secret)
                .or_else(|_| p256::SecretKey::from_sec1_pem(secret))
                .map_err(|e| invalid(format!("the VAPID private key is not a P-256 PEM key ({e})")))?
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(secret.trim_end_matches('='))
                .map_err(|e| invalid(format!("the VAPID private key is not base64url ({e})")))?;
            p256::SecretKey::from_slice(&bytes).map_err(|e| invalid(format!("the VAPID private key is not a P-256 scalar ({e})")))?
        };
        let public = URL_SAFE_NO_PAD.encode(secret_key.public_key().to_sec1_bytes());
        if public != credentials.public_key.trim_end_matches('=') {
            return Err(invalid("the VAPID public key does not belong to the private key".into()));
        }
        let der = secret_key.to_pkcs8_der().map_err(|e| invalid(format!("cannot encode the VAPID key ({e})")))?;
        Ok(Vapid {
            key: EncodingKey::from_ec_der(der.as_bytes()),
            public_key: public,
            subject: credentials.subject.clone(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The `Authorization` header for a push service at `origin` (`https://host[:port]`).
    pub fn authorization(&self, origin: &str, expiry: Duration) -> Result<String, ProviderError> {
        let expiry = expiry.min(Duration::from_secs(24 * 3600));
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let token = match tokens.get(origin) {
            Some((token, at)) if at.elapsed() < expiry / 2 => token.clone(),
            _ => {
                let exp = jiff::Timestamp::now().as_second() + i64::try_from(expiry.as_secs()).unwrap_or(3600);
                let claims = Claims { aud: origin, exp, sub: &self.subject };
                let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)
                    .map_err(|e| invalid(format!("cannot sign a VAPID token ({e})")))?;
                tokens.insert(origin.to_owned(), (token.clone(), Instant::now()));
                token
            }
        };
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}
