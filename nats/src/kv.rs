//! The [`KeyValue`] port on a JetStream KV bucket.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use herald_stage::{Created, Entry, KeyValue, PortError, Swapped};

/// A JetStream KV bucket. `create` is the server's put-if-absent and `swap` its
/// compare-and-swap (`update` with the expected revision), so two replicas racing for one key
/// cannot both win, and a stale read (a follower in a cluster) can only make a swap fail, never
/// overwrite a newer value.
#[derive(Clone)]
pub struct NatsKv {
    store: kv::Store,
    name: String,
}

impl std::fmt::Debug for NatsKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKv").field("bucket", &self.name).finish()
    }
}

impl NatsKv {
    pub(crate) fn new(store: kv::Store, name: String) -> Self {
        NatsKv { store, name }
    }

    fn error(&self, detail: impl std::fmt::Display) -> PortError {
        PortError::unavailable(format!("kv bucket {}", self.name), detail)
    }
}

impl KeyValue for NatsKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Created, PortError> {
        match self.store.create(key, value).await {
            Ok(revision) => Ok(Created::Created(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => match self.entry(key).await? {
                Some(existing) => Ok(Created::Exists(existing)),
                // Deleted or expired between the two calls: report it as taken by nobody; the
                // caller's next attempt creates it.
                None => Err(self.error(format!("key {key} vanished while it was being read; try again"))),
            },
            Err(e) => Err(self.error(e)),
        }
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>, PortError> {
        let entry = self.store.entry(key).await.map_err(|e| self.error(e))?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| Entry { value: e.value, revision: e.revision }))
    }

    async fn swap(&self, key: &str, value: Bytes, revision: u64) -> Result<Swapped, PortError> {
        match self.store.update(key, value, revision).await {
            Ok(revision) => Ok(Swapped::Done(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Swapped::Conflict),
            Err(e) => Err(self.error(e)),
        }
    }
}
