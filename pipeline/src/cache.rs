//! A bounded cache in front of the directory for hot lookups.
//!
//! Enrich reads the same users over and over (every notification to them); the cache keeps the
//! most recent `capacity` contacts for at most `ttl`. Every change through the admin API evicts
//! the changed user in every process: the API publishes the change on
//! `<prefix>.directory.changed.<tenant>` and each process's cache listens. The TTL bounds how
//! stale an entry can be if such a message is ever missed.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_enrich::Directory;
use herald_schemas::directory::Contact;
use herald_stage::PortError;
use lru::LruCache;
use serde::{Deserialize, Serialize};

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

type Key = (String, String);

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
        let Some(entries) = &self.entries else { return };
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        match user {
            Some(user) => {
                entries.pop(&(tenant.to_owned(), user.to_owned()));
            }
            None => {
                let keys: Vec<Key> = entries.iter().filter(|((t, _), _)| t == tenant).map(|(k, _)| k.clone()).collect();
                for key in keys {
                    entries.pop(&key);
                }
            }
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
}
