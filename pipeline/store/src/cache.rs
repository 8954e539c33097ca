//! A bounded cache in front of the directory for hot lookups.
//!
//! Enrich reads the same users over and over (every notification to them); the cache keeps the
//! most recent `capacity` contacts for at most `ttl`. Every change through the admin API evicts
//! the changed user in every process: the API publishes the change on
//! `<prefix>.directory.changed.<tenant>` and each process's cache listens. The TTL bounds how
//! stale an entry can be if such a message is ever missed. Templates are cached the same way
//! ([`CachedTemplates`]).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_enrich::Directory;
use herald_schemas::directory::Contact;
use herald_schemas::{TemplateVersion, Timestamp};
use herald_stage::{PortError, TemplateSource, version_at};
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// The cache's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Contacts kept; 0 turns the cache off.
    pub capacity: usize,
    /// Longest time an entry is trusted.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { capacity: 100_000, ttl: Duration::from_secs(30) }
    }
}

pub(crate) type Key = (String, String);

/// Drops the entry of (`tenant`, `id`), or with `None` every entry of the tenant.
pub(crate) fn evict<V>(entries: &mut LruCache<Key, V>, tenant: &str, id: Option<&str>) {
    match id {
        Some(id) => {
            entries.pop(&(tenant.to_owned(), id.to_owned()));
        }
        None => {
            let keys: Vec<Key> = entries.iter().filter(|((t, _), _)| t == tenant).map(|(k, _)| k.clone()).collect();
            for key in keys {
                entries.pop(&key);
            }
        }
    }
}

/// Contacts by (tenant, user), with when they were read.
type Entries = Arc<Mutex<LruCache<Key, (Instant, Contact)>>>;

/// A [`Directory`] with a bounded, invalidated cache of contacts in front of another.
#[derive(Clone)]
pub struct CachedDirectory<D> {
    inner: D,
    entries: Option<Entries>,
    ttl: Duration,
}

impl<D> std::fmt::Debug for CachedDirectory<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDirectory").field("ttl", &self.ttl).finish()
    }
}

impl<D: Directory> CachedDirectory<D> {
    pub fn new(inner: D, config: &CacheConfig) -> Self {
        let entries = NonZeroUsize::new(config.capacity).map(|n| Arc::new(Mutex::new(LruCache::new(n))));
        CachedDirectory { inner, entries, ttl: config.ttl }
    }

    /// Forgets one user, or (with `None`) every user of the tenant.
    pub fn invalidate(&self, tenant: &str, user: Option<&str>) {
        if let Some(entries) = &self.entries {
            evict(&mut entries.lock().unwrap_or_else(|e| e.into_inner()), tenant, user);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map(|e| e.lock().unwrap_or_else(|e| e.into_inner()).len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<D: Directory> Directory for CachedDirectory<D> {
    async fn contacts(&self, tenant: &str, ids: &[String]) -> Result<Vec<Contact>, PortError> {
        let Some(entries) = &self.entries else { return self.inner.contacts(tenant, ids).await };
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                match entries.get(&(tenant.to_owned(), id.clone())) {
                    Some((at, contact)) if at.elapsed() < self.ttl => found.push(contact.clone()),
                    _ => missing.push(id.clone()),
                }
            }
        }
        if !missing.is_empty() {
            let fetched = self.inner.contacts(tenant, &missing).await?;
            let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            for contact in &fetched {
                entries.put((tenant.to_owned(), contact.user.id.clone()), (now, contact.clone()));
            }
            found.extend(fetched);
        }
        Ok(found)
    }

    async fn members(&self, tenant: &str, group: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, PortError> {
        // Not cached: paging a large group through the cache would only evict the hot users.
        self.inner.members(tenant, group, after, limit).await
    }
}

/// Template lookups in front of the store. Versions are immutable and kept (bounded, LRU)
/// without expiry; which versions a template has is kept for the TTL and evicted by the
/// `template/<id>` change message the API sends on publish.
#[derive(Clone)]
pub struct CachedTemplates {
    store: Store,
    versions: Shared<LruCache<(String, String, u32), Arc<TemplateVersion>>>,
    indexes: Shared<LruCache<Key, (Instant, Index)>>,
    ttl: Duration,
}

type Shared<T> = Arc<Mutex<T>>;

/// When each version of a template was published.
type Index = Vec<(u32, Timestamp)>;

impl std::fmt::Debug for CachedTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTemplates").field("ttl", &self.ttl).finish()
    }
}

/// The change message payload that announces a template publish.
pub const TEMPLATE_CHANGE_PREFIX: &str = "template/";

impl CachedTemplates {
    pub fn new(store: Store, config: &CacheConfig) -> Self {
        let capacity = NonZeroUsize::new(config.capacity.clamp(1, 4096)).unwrap_or(NonZeroUsize::MIN);
        CachedTemplates {
            store,
            versions: Arc::new(Mutex::new(LruCache::new(capacity))),
            indexes: Arc::new(Mutex::new(LruCache::new(capacity))),
            ttl: config.ttl,
        }
    }

    /// Forgets which versions `id` has (after a publish), or every template's of the tenant.
    pub fn invalidate(&self, tenant: &str, id: Option<&str>) {
        evict(&mut self.indexes.lock().unwrap_or_else(|e| e.into_inner()), tenant, id);
    }

    async fn index(&self, tenant: &str, id: &str) -> Result<Vec<(u32, Timestamp)>, PortError> {
        let key = (tenant.to_owned(), id.to_owned());
        if let Some((at, index)) = self.indexes.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(index.clone());
        }
        let index = self.store.template_index(tenant, id).await.map_err(template_error)?;
        self.indexes.lock().unwrap_or_else(|e| e.into_inner()).put(key, (Instant::now(), index.clone()));
        Ok(index)
    }
}

fn template_error(error: StoreError) -> PortError {
    error.into_port("template store")
}

impl TemplateSource for CachedTemplates {
    async fn resolve(&self, tenant: &str, id: &str, at: Timestamp) -> Result<Option<Arc<TemplateVersion>>, PortError> {
        let index = self.index(tenant, id).await?;
        match version_at(index.iter().copied(), at) {
            Some(version) => self.version(tenant, id, version).await,
            None => Ok(None),
        }
    }

    async fn version(&self, tenant: &str, id: &str, version: u32) -> Result<Option<Arc<TemplateVersion>>, PortError> {
        let key = (tenant.to_owned(), id.to_owned(), version);
        if let Some(hit) = self.versions.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Some(hit.clone()));
        }
        let Some(found) = self.store.template_version(tenant, id, version).await.map_err(template_error)? else { return Ok(None) };
        let found = Arc::new(found);
        self.versions.lock().unwrap_or_else(|e| e.into_inner()).put(key, found.clone());
        Ok(Some(found))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use herald_schemas::directory::User;

    use super::*;

    /// Counts lookups; every user exists, named after its id, with the current `generation` as
    /// their name.
    #[derive(Clone, Default)]
    struct Counting {
        lookups: Arc<AtomicUsize>,
        generation: Arc<AtomicUsize>,
    }

    impl Directory for Counting {
        async fn contacts(&self, _tenant: &str, ids: &[String]) -> Result<Vec<Contact>, PortError> {
            self.lookups.fetch_add(ids.len(), Ordering::SeqCst);
            let name = self.generation.load(Ordering::SeqCst).to_string();
            Ok(ids
                .iter()
                .map(|id| Contact { user: User { id: id.clone(), name: Some(name.clone()), ..User::default() }, ..Contact::default() })
                .collect())
        }

        async fn members(&self, _: &str, _: &str, _: Option<&str>, _: usize) -> Result<Vec<String>, PortError> {
            Ok(Vec::new())
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn hits_are_served_and_the_size_is_bounded() {
        let inner = Counting::default();
        let cache = CachedDirectory::new(inner.clone(), &CacheConfig { capacity: 2, ttl: Duration::from_secs(60) });
        cache.contacts("acme", &ids(&["a", "b"])).await.unwrap();
        cache.contacts("acme", &ids(&["a", "b"])).await.unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2, "the second read came from the cache");
        cache.contacts("acme", &ids(&["c"])).await.unwrap();
        assert_eq!(cache.len(), 2, "bounded");
        cache.contacts("acme", &ids(&["a"])).await.unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 4, "the least recently used entry was evicted");
    }

    #[tokio::test]
    async fn an_update_is_seen_after_invalidation() {
        let inner = Counting::default();
        let cache = CachedDirectory::new(inner.clone(), &CacheConfig::default());
        let name = |c: Vec<Contact>| c[0].user.name.clone().unwrap();
        assert_eq!(name(cache.contacts("acme", &ids(&["a"])).await.unwrap()), "0");
        inner.generation.store(1, Ordering::SeqCst);
        assert_eq!(name(cache.contacts("acme", &ids(&["a"])).await.unwrap()), "0", "cached");
        cache.invalidate("acme", Some("a"));
        assert_eq!(name(cache.contacts("acme", &ids(&["a"])).await.unwrap()), "1", "fresh after the update");
        inner.generation.store(2, Ordering::SeqCst);
        cache.invalidate("acme", None);
        assert_eq!(name(cache.contacts("acme", &ids(&["a"])).await.unwrap()), "2", "a tenant-wide flush");
    }

    #[tokio::test]
    async fn entries_expire() {
        let inner = Counting::default();
        let cache = CachedDirectory::new(inner.clone(), &CacheConfig { capacity: 10, ttl: Duration::ZERO });
        cache.contacts("acme", &ids(&["a"])).await.unwrap();
        cache.contacts("acme", &ids(&["a"])).await.unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn template_versions_are_cached_and_a_publish_is_seen_after_invalidation() {
        let store = Store::open(&crate::StoreConfig { url: "mem://".into(), ..Default::default() }).await.unwrap();
        let spec = |body: &str| -> herald_schemas::TemplateSpec {
            serde_json::from_value(serde_json::json!({ "id": "t", "locales": { "default": { "sms": { "body": body } } } })).unwrap()
        };
        let cache = CachedTemplates::new(store.clone(), &CacheConfig::default());
        assert!(cache.resolve("acme", "t", Timestamp::now()).await.unwrap().is_none(), "no template yet");
        store.publish_template("acme", &spec("one")).await.unwrap();
        assert!(cache.resolve("acme", "t", Timestamp::now()).await.unwrap().is_none(), "the negative answer is cached");
        cache.invalidate("acme", Some("t"));
        assert_eq!(cache.resolve("acme", "t", Timestamp::now()).await.unwrap().unwrap().version, 1);
        let again = store.publish_template("acme", &spec("one")).await.unwrap();
        assert!(!again.created, "an unchanged upload is not a new version");
        store.publish_template("acme", &spec("two")).await.unwrap();
        cache.invalidate("acme", None);
        let now = cache.resolve("acme", "t", Timestamp::now()).await.unwrap().unwrap();
        assert_eq!((now.version, now.spec.locales["default"][&herald_schemas::Channel::Sms]["body"].as_str()), (2, "two"));
        let v1 = cache.version("acme", "t", 1).await.unwrap().unwrap();
        assert_eq!(v1.spec.locales["default"][&herald_schemas::Channel::Sms]["body"], "one", "versions never change");
    }
}
