//! Secrets at rest: AES-256-GCM under the server key, with a fresh nonce per seal and the
//! record's identity as associated data (a sealed value moved to another record does not
//! open). The key comes from `store.secret_key`, else the file `store.secret_key_file`, created
//! with a new random key (mode 0600) the first time; an in-memory store gets a key of its own.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{StoreConfig, StoreError};

/// The server key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

fn key_error(detail: String) -> StoreError {
    StoreError::Open { url: "store.secret_key".into(), detail }
}

impl Sealer {
    /// The configured key, the key file's, or (for `mem://`) a new one.
    pub fn from_config(config: &StoreConfig) -> Result<Self, StoreError> {
        let encoded = match (&config.secret_key, config.url.starts_with("mem://")) {
            (Some(key), _) => key.expose().trim().to_owned(),
            (None, true) => STANDARD.encode(rand::random::<[u8; 32]>()),
            (None, false) => read_or_create(&config.secret_key_file)?,
        };
        let bytes = STANDARD
            .decode(&encoded)
            .map_err(|e| key_error(format!("the server key is not base64 ({e}); it must be 32 random bytes, base64")))?;
        if bytes.len() != 32 {
            return Err(key_error(format!("the server key is {} bytes; it must be 32 (e.g. `openssl rand -base64 32`)", bytes.len())));
        }
        Ok(Sealer { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)) })
    }

    /// `nonce ‖ ciphertext`, base64.
    pub fn seal(&self, identity: &str, plaintext: &[u8]) -> Result<String, StoreError> {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: identity.as_bytes() })
            .map_err(|_| StoreError::query("seal", "encryption failed"))?;
        Ok(STANDARD.encode([nonce.as_slice(), &sealed].concat()))
    }

    pub fn open(&self, identity: &str, sealed: &str) -> Result<Vec<u8>, StoreError> {
        let refused = || {
            StoreError::decode(
                "unseal",
                format!("the secrets of {identity} do not open with this server key (was store.secret_key changed?); store them again"),
            )
        };
        let bytes = STANDARD.decode(sealed).map_err(|_| refused())?;
        if bytes.len() < 12 {
            return Err(refused());
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: identity.as_bytes() }).map_err(|_| refused())
    }
}

fn read_or_create(path: &Path) -> Result<String, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(key_error(format!("cannot read the key file {} ({e}); check store.secret_key_file", path.display())));
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| key_error(format!("cannot create {} ({e})", dir.display())))?;
    }
    let encoded = STANDARD.encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, format!("{encoded}\n").as_bytes())
                .map_err(|e| key_error(format!("cannot write the key file {} ({e})", path.display())))?;
            tracing::info!(path = %path.display(), "Created a server key for secrets at rest; back it up with the store.");
            Ok(encoded)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map(|t| t.trim().to_owned()).map_err(|e| key_error(e.to_string()))
        }
        Err(e) => Err(key_error(format!("cannot create the key file {} ({e})", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_with_the_key_and_at_their_identity() {
        let config = StoreConfig { url: "mem://".into(), ..StoreConfig::default() };
        let sealer = Sealer::from_config(&config).unwrap();
        let sealed = sealer.seal("acme/apns/default", b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.contains("BEGIN"));
        assert_eq!(sealer.open("acme/apns/default", &sealed).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        assert!(sealer.open("globex/apns/default", &sealed).is_err(), "bound to its record");
        assert!(Sealer::from_config(&config).unwrap().open("acme/apns/default", &sealed).is_err(), "another key");
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let config = StoreConfig { url: "surrealkv://x".into(), secret_key_file: path.clone(), ..StoreConfig::default() };
        let sealed = Sealer::from_config(&config).unwrap().seal("a", b"x").unwrap();
        assert_eq!(Sealer::from_config(&config).unwrap().open("a", &sealed).unwrap(), b"x", "the same key the second time");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
