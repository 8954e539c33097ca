//! Ports: what stages need from the outside world, as traits. `herald-nats` implements them on
//! JetStream; [`crate::memory`] implements them in memory for unit tests.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use herald_schemas::{TemplateVersion, Timestamp};

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

/// Where published templates are read. Versions are immutable, so implementations may cache a
/// version forever; which version is current is the part that changes.
pub trait TemplateSource: Send + Sync + 'static {
    /// The version that renders a notification accepted at `at`: the newest published at or
    /// before `at`, or the first version when all are younger (a notification sent just before
    /// its template was published). `None` when the template does not exist.
    fn resolve(
        &self,
        tenant: &str,
        id: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Option<Arc<TemplateVersion>>, PortError>> + Send;

    /// One version, exactly.
    fn version(&self, tenant: &str, id: &str, version: u32)
    -> impl Future<Output = Result<Option<Arc<TemplateVersion>>, PortError>> + Send;
}

/// Picks, from (version, published at) pairs in any order, the version
/// [`TemplateSource::resolve`] describes.
pub fn version_at(versions: impl IntoIterator<Item = (u32, Timestamp)> + Clone, at: Timestamp) -> Option<u32> {
    let current = versions.clone().into_iter().filter(|(_, published)| *published <= at).map(|(v, _)| v).max();
    current.or_else(|| versions.into_iter().map(|(v, _)| v).min())
}
