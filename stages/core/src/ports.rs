//! Ports: what stages need from the outside world, as traits. `herald-nats` implements them on
//! JetStream; [`crate::memory`] implements them in memory for unit tests.

use std::future::Future;

use bytes::Bytes;

/// A failed call to a backing store. Always transient from a stage's point of view.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store}: {detail}")]
pub struct PortError {
    /// Which store failed, e.g. `kv bucket herald-dedupe`.
    pub store: String,
    pub detail: String,
}

/// The result of a put-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was absent and now holds our value.
    Created,
    /// The key already held this value.
    Exists(Bytes),
}

/// A key-value bucket with put-if-absent: the basis of idempotency keys and dedupe claims.
pub trait KeyValue: Send + Sync + 'static {
    /// Stores `value` under `key` unless the key exists. Keys expire with the bucket's max age.
    fn create(&self, key: &str, value: Bytes) -> impl Future<Output = Result<Created, PortError>> + Send;

    /// Reads a key.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, PortError>> + Send;

    /// Writes a key unconditionally.
    fn put(&self, key: &str, value: Bytes) -> impl Future<Output = Result<(), PortError>> + Send;
}
