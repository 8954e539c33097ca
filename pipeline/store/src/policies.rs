//! Tenant policies: a tenant's own frequency caps, and the cached [`CapSource`] throttle reads.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_schemas::directory::check_tenant;
use herald_schemas::{Cap, TenantCaps};
use herald_stage::PortError;
use herald_throttle::CapSource;
use lru::LruCache;
use serde::Deserialize;
use serde_json::json;

use crate::cache::{CacheConfig, Key, evict};
use crate::{Store, StoreError};

impl Store {
    /// The tenant's own caps, when it has set any.
    pub async fn tenant_caps(&self, tenant: &str) -> Result<Option<TenantCaps>, StoreError> {
        #[derive(Deserialize)]
        struct Row {
            caps: String,
        }
        check_tenant(tenant)?;
        let rows: Vec<Row> = self.rows("read caps", "SELECT caps FROM type::record('tenant_caps', [$t])", json!({ "t": tenant })).await?;
        rows.into_iter().next().map(|r| serde_json::from_str(&r.caps).map_err(|e| StoreError::decode("read caps", e))).transpose()
    }

    /// Replaces the tenant's caps (validated).
    pub async fn put_tenant_caps(&self, tenant: &str, caps: &TenantCaps) -> Result<(), StoreError> {
        check_tenant(tenant)?;
        caps.validate()?;
        let text = serde_json::to_string(caps).map_err(|e| StoreError::query("write caps", e))?;
        let sql = "UPSERT type::record('tenant_caps', [$t]) SET tenant = $t, caps = $caps, updated_at = $now RETURN NONE";
        self.run("write caps", sql, json!({ "t": tenant, "caps": text, "now": jiff::Timestamp::now().to_string() })).await
    }

    /// Removes the tenant's caps: the defaults apply again. Returns whether it had any.
    pub async fn delete_tenant_caps(&self, tenant: &str) -> Result<bool, StoreError> {
        let had = self.tenant_caps(tenant).await?.is_some();
        self.run("delete caps", "DELETE type::record('tenant_caps', [$t])", json!({ "t": tenant })).await?;
        Ok(had)
    }
}

/// What a change announcement names when a tenant's caps changed.
pub const CAPS_CHANGE: &str = "caps/";

/// Tenants' caps with a cache in front: read once per tenant per `ttl`, evicted by the admin
/// API's change announcement (the same bounded, invalidated cache as the templates' indexes).
#[derive(Clone)]
pub struct CachedCaps {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<LruCache<Key, Cached>>>,
}

/// A tenant's caps (`None`: it has none of its own) and when they were read.
type Cached = (Instant, Option<Arc<Vec<Cap>>>);

impl std::fmt::Debug for CachedCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCaps").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl CachedCaps {
    pub fn new(store: Store, config: &CacheConfig) -> Self {
        let capacity = NonZeroUsize::new(config.capacity.clamp(1, 4096)).unwrap_or(NonZeroUsize::MIN);
        CachedCaps { store, ttl: config.ttl, entries: Arc::new(Mutex::new(LruCache::new(capacity))) }
    }

    /// Forgets the tenant's caps.
    pub fn invalidate(&self, tenant: &str) {
        evict(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()), tenant, None);
    }
}

impl CapSource for CachedCaps {
    async fn caps(&self, tenant: &str) -> Result<Option<Arc<Vec<Cap>>>, PortError> {
        let key = (tenant.to_owned(), String::new());
        if let Some((read_at, caps)) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && read_at.elapsed() < self.ttl
        {
            return Ok(caps.clone());
        }
        let caps = self.store.tenant_caps(tenant).await.map_err(|e| e.into_port("store"))?.map(|c| Arc::new(c.caps));
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).put(key, (Instant::now(), caps.clone()));
        Ok(caps)
    }
}
