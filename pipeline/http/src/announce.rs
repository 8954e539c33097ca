//! Announcing changes: every process's caches listen on `<prefix>.directory.changed.<tenant>`
//! and evict what changed (a user id, `*` for the whole tenant, or `template/<id>`).

use crate::AppState;

/// Announces a change so every process's cache evicts it (a user id, `*`, or `template/<id>`).
pub async fn changed(state: &AppState, tenant: &str, user: Option<&str>) {
    if let Err(error) = state.nats.publish_directory_change(tenant, user).await {
        tracing::warn!(%error, tenant, "Could not announce a directory change; caches expire it by their TTL.");
    }
}
