//! The [`KeyValue`] port on a JetStream KV bucket.

use async_nats::jetstream::kv::{self, CreateErrorKind};
use bytes::Bytes;
use herald_stage::{Created, KeyValue, PortError};

/// A JetStream KV bucket. `create` is the server's put-if-absent, so two replicas racing for
/// one key cannot both win.
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
        PortError { store: format!("kv bucket {}", self.name), detail: detail.to_string() }
    }
}

impl KeyValue for NatsKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Created, PortError> {
        match self.store.create(key, value).await {
            Ok(_) => Ok(Created::Created),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let existing = self.store.get(key).await.map_err(|e| self.error(e))?;
                Ok(Created::Exists(existing.unwrap_or_default()))
            }
            Err(e) => Err(self.error(e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        self.store.get(key).await.map_err(|e| self.error(e))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), PortError> {
        self.store.put(key, value).await.map(|_| ()).map_err(|e| self.error(e))
    }
}
