//! Tenants' provider credentials (sealed at rest) and the cached [`CredentialStore`] deliver
//! reads; and the [`DeviceRegistry`] deliver disables refused devices through.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_deliver::ports::{CredentialStore, DeviceRegistry, Invalidation, PortFuture, StoredCredentials};
use herald_schemas::directory::{Platform, WebPushSubscription, check_id, check_tenant};
use herald_schemas::providers::DEFAULT_APP;
use herald_schemas::{CredentialKey, Credentials};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cache::CacheConfig;
use crate::{Store, StoreError};

/// What a change announcement names when a tenant's provider credentials changed.
pub const PROVIDERS_CHANGE: &str = "providers/";

/// A stored credential as listings show it: identity, revision, secrets redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialSummary {
    pub provider: String,
    pub app: String,
    pub revision: u64,
    pub updated_at: String,
    pub credentials: serde_json::Value,
}

#[derive(Deserialize)]
struct Row {
    provider: String,
    app: String,
    revision: u64,
    sealed: String,
    summary: String,
    updated_at: String,
}

fn identity(tenant: &str, provider: &str, app: &str) -> String {
    format!("{tenant}/{provider}/{app}")
}

impl Store {
    /// Stores (or replaces) the tenant's credentials for `app`; returns the new revision.
    pub async fn put_credentials(&self, tenant: &str, app: &str, credentials: &Credentials) -> Result<u64, StoreError> {
        check_tenant(tenant)?;
        check_id("app", app)?;
        credentials.validate()?;
        let provider = credentials.provider();
        let plaintext = serde_json::to_vec(credentials).map_err(|e| StoreError::query("write credentials", e))?;
        let sealed = self.sealer.seal(&identity(tenant, provider, app), &plaintext)?;
        let summary = credentials.redacted().to_string();
        let sql = "LET $old = (SELECT VALUE revision FROM type::record('provider_credential', [$t, $p, $a]))[0] ?? 0; \
                   UPSERT type::record('provider_credential', [$t, $p, $a]) SET tenant = $t, provider = $p, app = $a, \
                   revision = $old + 1, sealed = $sealed, summary = $summary, updated_at = $now RETURN VALUE revision";
        let vars = json!({ "t": tenant, "p": provider, "a": app, "sealed": sealed, "summary": summary, "now": jiff::Timestamp::now().to_string() });
        let revisions: Vec<u64> = self.rows("write credentials", sql, vars).await?;
        revisions.into_iter().next().ok_or_else(|| StoreError::query("write credentials", "no revision returned"))
    }

    /// The tenant's credentials for exactly `provider` and `app`, unsealed.
    pub async fn credentials(&self, tenant: &str, provider: &str, app: &str) -> Result<Option<StoredCredentials>, StoreError> {
        let sql = "SELECT provider, app, revision, sealed, summary, updated_at FROM type::record('provider_credential', [$t, $p, $a])";
        let rows: Vec<Row> = self.rows("read credentials", sql, json!({ "t": tenant, "p": provider, "a": app })).await?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let plaintext = self.sealer.open(&identity(tenant, provider, app), &row.sealed)?;
        let credentials: Credentials = serde_json::from_slice(&plaintext).map_err(|e| StoreError::decode("read credentials", e))?;
        let key = CredentialKey { tenant: tenant.to_owned(), provider: row.provider, app: row.app };
        Ok(Some(StoredCredentials { key, revision: row.revision, credentials }))
    }

    /// Every credential of the tenant, secrets redacted.
    pub async fn list_credentials(&self, tenant: &str) -> Result<Vec<CredentialSummary>, StoreError> {
        check_tenant(tenant)?;
        let sql =
            "SELECT provider, app, revision, sealed, summary, updated_at FROM provider_credential WHERE tenant = $t ORDER BY provider, app";
        let rows: Vec<Row> = self.rows("list credentials", sql, json!({ "t": tenant })).await?;
        rows.into_iter()
            .map(|r| {
                let credentials = serde_json::from_str(&r.summary).map_err(|e| StoreError::decode("list credentials", e))?;
                Ok(CredentialSummary { provider: r.provider, app: r.app, revision: r.revision, updated_at: r.updated_at, credentials })
            })
            .collect()
    }

    /// Removes the tenant's credentials for `provider` and `app`. Returns whether they existed.
    pub async fn delete_credentials(&self, tenant: &str, provider: &str, app: &str) -> Result<bool, StoreError> {
        let sql = "DELETE type::record('provider_credential', [$t, $p, $a]) RETURN BEFORE";
        let deleted: Vec<serde_json::Value> = self.rows("delete credentials", sql, json!({ "t": tenant, "p": provider, "a": app })).await?;
        Ok(!deleted.is_empty())
    }

    /// Disables a user's device when it still has the refused address (a token registered anew
    /// meanwhile is left alone). Returns whether it did.
    pub async fn disable_device(&self, invalidation: &Invalidation) -> Result<bool, StoreError> {
        let Some(contact) = self.contact(&invalidation.tenant, &invalidation.user).await? else { return Ok(false) };
        let Some(mut device) = contact.devices.into_iter().find(|d| d.id == invalidation.device) else { return Ok(false) };
        let same = match device.platform {
            Platform::Web => serde_json::from_str::<WebPushSubscription>(&invalidation.address)
                .is_ok_and(|s| device.subscription.as_ref().is_some_and(|d| d.endpoint == s.endpoint)),
            _ => device.token.as_deref() == Some(invalidation.address.as_str()),
        };
        if !same || device.disabled_at.is_some() {
            return Ok(false);
        }
        device.disabled_at = Some(invalidation.at);
        device.disabled_reason = Some(invalidation.reason.clone());
        self.put_device(&invalidation.tenant, &invalidation.user, &device).await?;
        Ok(true)
    }
}

/// Credentials with a cache in front: read once per (tenant, provider, app) per `ttl`, evicted
/// by the admin API's change announcement. Unsealing is done once per read, not per call.
#[derive(Clone)]
pub struct CachedCredentials {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<LruCache<CacheKey, Cached>>>,
}

/// (tenant, provider, app).
type CacheKey = (String, String, String);

/// What (tenant, provider, app) holds (`None`: nothing) and when it was read.
type Cached = (Instant, Option<Arc<StoredCredentials>>);

impl std::fmt::Debug for CachedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCredentials").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl CachedCredentials {
    pub fn new(store: Store, config: &CacheConfig) -> Self {
        let capacity = NonZeroUsize::new(config.capacity.clamp(1, 4096)).unwrap_or(NonZeroUsize::MIN);
        CachedCredentials { store, ttl: config.ttl, entries: Arc::new(Mutex::new(LruCache::new(capacity))) }
    }

    /// Forgets every credential of the tenant.
    pub fn invalidate(&self, tenant: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = entries.iter().filter(|(k, _)| k.0 == tenant).map(|(k, _)| k.clone()).collect();
        for key in keys {
            entries.pop(&key);
        }
    }

    async fn exactly(&self, tenant: &str, provider: &str, app: &str) -> Result<Option<Arc<StoredCredentials>>, StoreError> {
        let key = (tenant.to_owned(), provider.to_owned(), app.to_owned());
        if let Some((read_at, found)) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && read_at.elapsed() < self.ttl
        {
            return Ok(found.clone());
        }
        let found = self.store.credentials(tenant, provider, app).await?.map(Arc::new);
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).put(key, (Instant::now(), found.clone()));
        Ok(found)
    }
}

impl CredentialStore for CachedCredentials {
    fn credentials<'a>(
        &'a self,
        tenant: &'a str,
        provider: &'a str,
        app: Option<&'a str>,
    ) -> PortFuture<'a, Option<Arc<StoredCredentials>>> {
        Box::pin(async move {
            let port = |e: StoreError| e.into_port("store");
            if let Some(app) = app.filter(|a| *a != DEFAULT_APP && check_id("app", a).is_ok())
                && let Some(found) = self.exactly(tenant, provider, app).await.map_err(port)?
            {
                return Ok(Some(found));
            }
            self.exactly(tenant, provider, DEFAULT_APP).await.map_err(port)
        })
    }
}

/// The directory as deliver's [`DeviceRegistry`]. `announce` is told the tenant and user whose
/// device changed, so every process's contact cache forgets it.
pub struct StoreDevices<F> {
    pub store: Store,
    pub announce: F,
}

impl<F> std::fmt::Debug for StoreDevices<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDevices").finish_non_exhaustive()
    }
}

impl<F, Fut> DeviceRegistry for StoreDevices<F>
where
    F: Fn(String, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    fn disable(&self, invalidation: Invalidation) -> PortFuture<'_, bool> {
        Box::pin(async move {
            let disabled = self.store.disable_device(&invalidation).await.map_err(|e| e.into_port("store"))?;
            if disabled {
                (self.announce)(invalidation.tenant.clone(), invalidation.user.clone()).await;
            }
            Ok(disabled)
        })
    }

    fn disable_endpoint<'a>(
        &'a self,
        tenant: &'a str,
        url: &'a str,
        reason: &'a str,
        at: herald_schemas::Timestamp,
    ) -> PortFuture<'a, bool> {
        Box::pin(async move { self.store.disable_endpoint(tenant, url, reason, at).await.map_err(|e| e.into_port("store")) })
    }

    fn endpoint_disabled<'a>(&'a self, tenant: &'a str, url: &'a str) -> PortFuture<'a, Option<String>> {
        Box::pin(async move {
            let found = self.store.disabled_endpoint(tenant, url).await.map_err(|e| e.into_port("store"))?;
            Ok(found.map(|e| format!("{} since {}", e.reason, e.disabled_at)))
        })
    }

    fn opt_out(&self, request: herald_deliver::ports::OptOutRequest) -> PortFuture<'_, bool> {
        Box::pin(async move {
            let new = self.store.record_opt_out(&request).await.map_err(|e| e.into_port("store"))?;
            if let Some(user) = &request.user {
                (self.announce)(request.tenant.clone(), user.clone()).await;
            }
            Ok(new)
        })
    }

    fn opted_out<'a>(&'a self, tenant: &'a str, channel: herald_schemas::Channel, address: &'a str) -> PortFuture<'a, Option<String>> {
        Box::pin(async move {
            let found = self.store.opt_out(tenant, channel, address).await.map_err(|e| e.into_port("store"))?;
            Ok(found.map(|o| format!("{} {} at {}", o.provider, o.reason, o.at)))
        })
    }
}
