//! In-memory port implementations and fixtures for unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use herald_schemas::{Alert, TemplateSpec, TemplateVersion, Timestamp};

use crate::{Alerts, Created, Entry, KeyValue, PortError, Swapped, TemplateSource, version_at};

/// A [`KeyValue`] in a `HashMap`, with revisions like a JetStream bucket's. Failures can be
/// injected per operation, to exercise error paths.
#[derive(Debug, Clone, Default)]
pub struct MemoryKv {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    revision: u64,
    failing: bool,
    /// Compare-and-swaps still to fail (as an unavailable store) before they work again.
    failing_swaps: u32,
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv::default()
    }

    /// Makes every later call fail (or succeed again), to exercise error paths.
    pub fn fail(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Makes the next `n` compare-and-swaps fail as if the store were down.
    pub fn fail_swaps(&self, n: u32) {
        self.lock().failing_swaps = n;
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current value of a key (for assertions).
    pub fn value(&self, key: &str) -> Option<Bytes> {
        self.lock().map.get(key).map(|e| e.value.clone())
    }

    /// Writes a key unconditionally (to set up a test).
    pub fn set(&self, key: &str, value: Bytes) {
        let mut inner = self.lock();
        inner.revision += 1;
        let revision = inner.revision;
        inner.map.insert(key.to_owned(), Entry { value, revision });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(inner: &Inner) -> Result<(), PortError> {
        if inner.failing {
            return Err(PortError::unavailable("memory kv", "injected failure"));
        }
        Ok(())
    }
}

impl KeyValue for MemoryKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Created, PortError> {
        let mut inner = self.lock();
        Self::check(&inner)?;
        if let Some(existing) = inner.map.get(key) {
            return Ok(Created::Exists(existing.clone()));
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.map.insert(key.to_owned(), Entry { value, revision });
        Ok(Created::Created(revision))
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>, PortError> {
        let inner = self.lock();
        Self::check(&inner)?;
        Ok(inner.map.get(key).cloned())
    }

    async fn swap(&self, key: &str, value: Bytes, revision: u64) -> Result<Swapped, PortError> {
        let mut inner = self.lock();
        Self::check(&inner)?;
        if inner.failing_swaps > 0 {
            inner.failing_swaps -= 1;
            return Err(PortError::unavailable("memory kv", "injected failure of a compare-and-swap"));
        }
        if inner.map.get(key).map(|e| e.revision) != Some(revision) {
            return Ok(Swapped::Conflict);
        }
        inner.revision += 1;
        let new = inner.revision;
        inner.map.insert(key.to_owned(), Entry { value, revision: new });
        Ok(Swapped::Done(new))
    }
}

/// [`Alerts`] kept in memory, in the order raised.
#[derive(Debug, Clone, Default)]
pub struct MemoryAlerts {
    raised: Arc<Mutex<Vec<Alert>>>,
}

impl MemoryAlerts {
    pub fn raised(&self) -> Vec<Alert> {
        self.raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Alerts for MemoryAlerts {
    fn alert(&self, alert: Alert) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(alert);
        Box::pin(std::future::ready(()))
    }
}

/// A delivery for unit tests: tenant `acme`, user `alice` on the `log` channel, template `t`.
pub fn delivery(id: u128) -> herald_schemas::Delivery {
    herald_schemas::Delivery {
        v: herald_schemas::WIRE_VERSION,
        delivery_id: uuid::Uuid::from_u128(id),
        notification_id: uuid::Uuid::from_u128(1),
        tenant: "acme".into(),
        user_id: Some("alice".into()),
        channel: herald_schemas::Channel::Log,
        address: "user:alice".into(),
        platform: None,
        voip: false,
        device: None,
        locale: None,
        timezone: None,
        template: "t".into(),
        template_version: None,
        data: Default::default(),
        category: None,
        priority: herald_schemas::Priority::Normal,
        accepted_at: jiff::Timestamp::UNIX_EPOCH,
        expires_at: None,
        content: None,
        attachments: Vec::new(),
        scheduled_for: None,
        deferred_until: None,
        quiet_hours: None,
        dedupe: None,
        claim: None,
        redial_of: None,
        redial: 0,
    }
}

/// Versions by (tenant, template id), oldest first.
type Versions = HashMap<(String, String), Vec<Arc<TemplateVersion>>>;

/// Templates in memory: every version of every template of every tenant.
#[derive(Debug, Clone, Default)]
pub struct MemoryTemplates {
    versions: Arc<Mutex<Versions>>,
}

impl MemoryTemplates {
    pub fn new() -> Self {
        MemoryTemplates::default()
    }

    /// Publishes `spec` as the next version of its template, at `at`; returns the version.
    pub fn publish(&self, tenant: &str, spec: TemplateSpec, at: Timestamp) -> u32 {
        let mut map = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let versions = map.entry((tenant.to_owned(), spec.id.clone())).or_default();
        let version = versions.len() as u32 + 1;
        versions.push(Arc::new(TemplateVersion { version, published_at: at, spec }));
        version
    }

    fn all(&self, tenant: &str, id: &str) -> Vec<Arc<TemplateVersion>> {
        let map = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant.to_owned(), id.to_owned())).cloned().unwrap_or_default()
    }
}

impl TemplateSource for MemoryTemplates {
    async fn resolve(&self, tenant: &str, id: &str, at: Timestamp) -> Result<Option<Arc<TemplateVersion>>, PortError> {
        let all = self.all(tenant, id);
        let chosen = version_at(all.iter().map(|v| (v.version, v.published_at)), at);
        Ok(all.into_iter().find(|v| Some(v.version) == chosen))
    }

    async fn version(&self, tenant: &str, id: &str, version: u32) -> Result<Option<Arc<TemplateVersion>>, PortError> {
        Ok(self.all(tenant, id).into_iter().find(|v| v.version == version))
    }
}
