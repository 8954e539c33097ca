//! Credentials for tests, the demo and `herald sandbox`: an APNs `.p8` team key, a Google
//! service-account file, a VAPID key pair — the same formats the real services hand out.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};

/// An APNs token-signing key.
#[derive(Debug, Clone)]
pub struct ApnsKey {
    pub team_id: String,
    pub key_id: String,
    /// PKCS#8 PEM, like Apple's `.p8` file.
    pub private_key_pem: String,
    /// SPKI PEM, for the sandbox to verify with.
    pub public_key_pem: String,
}

pub fn apns_key(team_id: &str, key_id: &str) -> anyhow::Result<ApnsKey> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    Ok(ApnsKey {
        team_id: team_id.into(),
        key_id: key_id.into(),
        private_key_pem: key.serialize_pem(),
        public_key_pem: key.public_key_pem(),
    })
}

/// A Google service account's key file, and the public key to verify its assertions with.
#[derive(Debug, Clone)]
pub struct ServiceAccountKey {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: String,
    /// The JSON file as Google gives it out.
    pub json: serde_json::Value,
    pub public_key_pem: String,
}

pub fn fcm_service_account(project_id: &str, token_uri: &str) -> anyhow::Result<ServiceAccountKey> {
    let key = KeyPair::generate_for(&PKCS_RSA_SHA256)?;
    let client_email = format!("herald@{project_id}.iam.gserviceaccount.com");
    let private_key_id = uuid::Uuid::new_v4().simple().to_string();
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": private_key_id,
        "private_key": key.serialize_pem(),
        "client_email": client_email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    });
    Ok(ServiceAccountKey { project_id: project_id.into(), client_email, private_key_id, json, public_key_pem: key.public_key_pem() })
}

/// A VAPID key pair, base64url as web apps use them (`applicationServerKey`).
#[derive(Debug, Clone)]
pub struct VapidKey {
    /// The 32-byte private scalar.
    pub private_key: String,
    /// The 65-byte uncompressed public point.
    pub public_key: String,
}

pub fn vapid_key() -> VapidKey {
    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    VapidKey {
        private_key: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
        public_key: URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes()),
    }
}
