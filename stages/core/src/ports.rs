//! Ports: what stages need from the outside world, as traits. `herald-nats` and the store
//! implement them; [`crate::memory`] implements them in memory for unit tests.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use herald_schemas::{Alert, TemplateVersion, Timestamp};

/// What kind of failure a [`PortError`] is, which decides what the runner does with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// The store cannot be reached or is not answering: not the message's fault, held and
    /// tried again.
    Unavailable,
    /// The store answered with something that cannot be read (a row that does not decode):
    /// trying again reads the same row, so the message is dead-lettered with the reason.
    Decode,
    /// The store refused the query itself: as permanent as a decode error.
    Query,
}

/// A failed call to a backing store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store}: {detail}")]
pub struct PortError {
    /// Which store failed, e.g. `kv bucket herald-dedupe`.
    pub store: String,
    pub detail: String,
    pub kind: PortErrorKind,
}

impl PortError {
    /// The store is down or not answering.
    pub fn unavailable(store: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        PortError { store: store.into(), detail: detail.to_string(), kind: PortErrorKind::Unavailable }
    }

    /// A record that does not decode.
    pub fn decode(store: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        PortError { store: store.into(), detail: detail.to_string(), kind: PortErrorKind::Decode }
    }

    /// A query the store refused.
    pub fn query(store: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        PortError { store: store.into(), detail: detail.to_string(), kind: PortErrorKind::Query }
    }
}

/// A key's current value and its revision, for compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub revision: u64,
}

/// The result of a put-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was absent and now holds our value, at this revision.
    Created(u64),
    /// The key already held this entry.
    Exists(Entry),
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// The key held the expected revision and now holds our value, at this revision.
    Done(u64),
    /// Someone else wrote the key since the expected revision: read it again.
    Conflict,
}

/// A key-value bucket with put-if-absent and compare-and-swap: the basis of idempotency keys
/// and delivery states. Keys expire with the bucket's max age.
pub trait KeyValue: Send + Sync + 'static {
    /// Stores `value` under `key` unless the key exists.
    fn create(&self, key: &str, value: Bytes) -> impl Future<Output = Result<Created, PortError>> + Send;

    /// Reads a key with its revision.
    fn entry(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, PortError>> + Send;

    /// Writes `value` only if the key is still at `revision`.
    fn swap(&self, key: &str, value: Bytes, revision: u64) -> impl Future<Output = Result<Swapped, PortError>> + Send;
}

/// The broker's scheduled messages (scheduled sends, deferrals).
pub trait Scheduler: Send + Sync + 'static {
    /// Removes every scheduled message of `notification` (of `tenant`) that has not fired yet;
    /// returns how many were removed.
    fn cancel(&self, tenant: &str, notification: uuid::Uuid) -> impl Future<Output = Result<u64, PortError>> + Send;
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

/// Where operators' alerts go (`herald.alerts.<kind>`): a provider's breaker opening, closing.
/// Object-safe, so a provider can hold one. Best effort: an alert that cannot be published is
/// logged, never a reason to fail a message.
pub trait Alerts: Send + Sync + 'static {
    fn alert(&self, alert: Alert) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
