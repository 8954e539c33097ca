//! The attachment store: the claim check of notifications' files. A producer uploads a file (or
//! sends it inline and ingest stores it); only its key travels through NATS; deliver reads it
//! back as it builds the e-mail. Files live under `<tenant>/<key>` on OpenDAL: a directory by
//! default (`data/attachments`), any S3-compatible bucket by configuration. Each is deleted
//! `retention` after it was written ([`Attachments::sweep`]).
//!
//! Invariants: a tenant reads and writes only under its own prefix (keys are checked by
//! [`herald_schemas::request::check_attachment_key`], so no `..` climbs out); a write is
//! idempotent (the same key written again replaces the file), so a redelivered request that
//! stores its inline files again changes nothing.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald_schemas::Secret;
use opendal::{ErrorKind, Operator, services};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where attachments are kept and for how long (`[attachments]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentsConfig {
    /// `fs` (a directory, `root`) or `s3` (an S3-compatible bucket, `[attachments.s3]`).
    pub backend: Backend,
    /// The directory of the `fs` backend.
    pub root: PathBuf,
    /// The bucket of the `s3` backend.
    pub s3: S3Config,
    /// Inline attachments of a request may together be this many bytes (decoded) and stay
    /// inline; beyond it ingest moves them into the store and passes only their keys on.
    pub inline_max: u64,
    /// Largest attachment accepted (upload) and sent (deliver), in bytes.
    pub max_bytes: u64,
    /// How long a file is kept after it was written; later deliveries that name it fail with
    /// `attachment_missing`. Keep it longer than the furthest `send_at` and retry horizon.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often the files past `retention` are looked for and deleted.
    #[serde(with = "humantime_serde")]
    pub sweep_every: Duration,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        AttachmentsConfig {
            backend: Backend::Fs,
            root: PathBuf::from("data/attachments"),
            s3: S3Config::default(),
            inline_max: 64 * 1024,
            max_bytes: 25 * 1024 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            sweep_every: Duration::from_secs(3600),
        }
    }
}

/// The storage service behind the attachment store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Fs,
    S3,
    /// In this process's memory: tests and throwaway runs only.
    Memory,
}

/// An S3-compatible bucket (AWS, MinIO, Ceph, R2…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// The service's URL, e.g. `http://127.0.0.1:9000` for MinIO; AWS when unset.
    pub endpoint: Option<String>,
    pub region: String,
    /// A prefix inside the bucket.
    pub root: String,
    /// Keys; when unset they come from the environment (`AWS_ACCESS_KEY_ID`…) or the instance.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            root: "/herald-attachments".into(),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment `{key}` of tenant `{tenant}` is not in the attachment store")]
    NotFound { tenant: String, key: String },
    #[error("attachment `{key}` is {size} bytes, over attachments.max_bytes ({max})")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error("invalid attachment: {0}")]
    Invalid(String),
    #[error("the attachment store cannot be used: {0}")]
    Unavailable(String),
}

impl AttachmentError {
    fn unavailable(what: &str, error: opendal::Error) -> Self {
        AttachmentError::Unavailable(format!("{what}: {error}"))
    }
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The key to reference it by (`{"ref": key}`).
    #[serde(rename = "ref")]
    pub key: String,
    pub size: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// The attachment store.
#[derive(Debug, Clone)]
pub struct Attachments {
    op: Operator,
    config: AttachmentsConfig,
}

impl Attachments {
    /// Opens the configured backend (creating the `fs` directory).
    pub fn open(config: &AttachmentsConfig) -> Result<Self, AttachmentError> {
        let invalid = |e: opendal::Error| AttachmentError::Invalid(format!("attachments.backend = {:?}: {e}", config.backend));
        let op = match config.backend {
            Backend::Fs => {
                std::fs::create_dir_all(&config.root)
                    .map_err(|e| AttachmentError::Invalid(format!("cannot create attachments.root {}: {e}", config.root.display())))?;
                let root = std::path::absolute(&config.root).unwrap_or_else(|_| config.root.clone());
                Operator::new(services::Fs::default().root(&root.to_string_lossy())).map_err(invalid)?.finish()
            }
            Backend::S3 => {
                let s3 = &config.s3;
                if s3.bucket.is_empty() {
                    return Err(AttachmentError::Invalid("attachments.backend = \"s3\" needs attachments.s3.bucket".into()));
                }
                let mut builder = services::S3::default().bucket(&s3.bucket).region(&s3.region).root(&s3.root);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.endpoint(endpoint);
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder.access_key_id(id).secret_access_key(secret.expose());
                }
                Operator::new(builder).map_err(invalid)?.finish()
            }
            Backend::Memory => Operator::new(services::Memory::default()).map_err(invalid)?.finish(),
        };
        Ok(Attachments { op, config: config.clone() })
    }

    /// A store in memory, for tests.
    pub fn memory() -> Self {
        let config = AttachmentsConfig { backend: Backend::Memory, ..AttachmentsConfig::default() };
        Attachments::open(&config).unwrap_or_else(|e| unreachable!("the memory backend always opens: {e}"))
    }

    pub fn config(&self) -> &AttachmentsConfig {
        &self.config
    }

    fn path(tenant: &str, key: &str) -> Result<String, AttachmentError> {
        herald_schemas::request::check_attachment_key(key).map_err(AttachmentError::Invalid)?;
        let token = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !token(tenant) {
            return Err(AttachmentError::Invalid(format!("tenant `{tenant}` is not a valid tenant id")));
        }
        Ok(format!("{tenant}/{key}"))
    }

    /// Stores `bytes` under the tenant's `key`.
    pub async fn put(&self, tenant: &str, key: &str, bytes: Bytes) -> Result<Stored, AttachmentError> {
        self.put_stream(tenant, key, futures::stream::iter([Ok::<_, std::io::Error>(bytes)])).await
    }

    /// Stores a stream of chunks under the tenant's `key`, never holding more than a chunk in
    /// memory; refuses (and removes what it wrote) past `max_bytes`.
    pub async fn put_stream<E: std::fmt::Display>(
        &self,
        tenant: &str,
        key: &str,
        mut chunks: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<Stored, AttachmentError> {
        let path = Attachments::path(tenant, key)?;
        let mut writer = self.op.writer(&path).await.map_err(|e| AttachmentError::unavailable(&path, e))?;
        let (mut size, mut digest) = (0u64, Sha256::new());
        let outcome = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| AttachmentError::Invalid(format!("the upload of `{key}` broke off: {e}")))?;
                size += chunk.len() as u64;
                if size > self.config.max_bytes {
                    return Err(AttachmentError::TooLarge { key: key.to_owned(), size, max: self.config.max_bytes });
                }
                digest.update(&chunk);
                writer.write(chunk).await.map_err(|e| AttachmentError::unavailable(&path, e))?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            let _ = writer.abort().await;
            let _ = self.op.delete(&path).await;
            return Err(error);
        }
        writer.close().await.map_err(|e| AttachmentError::unavailable(&path, e))?;
        Ok(Stored { key: key.to_owned(), size, sha256: hex::encode(digest.finalize()) })
    }

    /// The file under the tenant's `key`, whole.
    pub async fn get(&self, tenant: &str, key: &str) -> Result<Bytes, AttachmentError> {
        let path = Attachments::path(tenant, key)?;
        let not_found = || AttachmentError::NotFound { tenant: tenant.to_owned(), key: key.to_owned() };
        let meta = self.op.stat(&path).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => not_found(),
            _ => AttachmentError::unavailable(&path, e),
        })?;
        if meta.content_length() > self.config.max_bytes {
            return Err(AttachmentError::TooLarge { key: key.to_owned(), size: meta.content_length(), max: self.config.max_bytes });
        }
        let buffer = self.op.read(&path).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => not_found(),
            _ => AttachmentError::unavailable(&path, e),
        })?;
        Ok(buffer.to_bytes())
    }

    /// Deletes the tenant's `key` (nothing when it is not there).
    pub async fn delete(&self, tenant: &str, key: &str) -> Result<(), AttachmentError> {
        let path = Attachments::path(tenant, key)?;
        self.op.delete(&path).await.map_err(|e| AttachmentError::unavailable(&path, e))
    }

    /// Deletes every file written before `now - retention`. Returns how many it deleted.
    pub async fn sweep(&self, now: jiff::Timestamp) -> Result<usize, AttachmentError> {
        let retention = jiff::SignedDuration::try_from(self.config.retention).unwrap_or(jiff::SignedDuration::MAX);
        let cutoff = now.checked_sub(retention).unwrap_or(jiff::Timestamp::MIN);
        let entries = self.op.list_with("").recursive(true).await.map_err(|e| AttachmentError::unavailable("listing", e))?;
        let mut deleted = 0;
        for entry in entries {
            if !entry.metadata().mode().is_file() {
                continue;
            }
            let written = match entry.metadata().last_modified() {
                Some(at) => Some(at),
                None => self.op.stat(entry.path()).await.ok().and_then(|m| m.last_modified()),
            };
            let Some(written) = written.map(jiff::Timestamp::from) else { continue };
            if written < cutoff {
                self.op.delete(entry.path()).await.map_err(|e| AttachmentError::unavailable(entry.path(), e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
