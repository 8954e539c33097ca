//! In-memory port implementations and fixtures for unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use herald_schemas::{TemplateSpec, TemplateVersion, Timestamp};

use crate::{Created, KeyValue, PortError, TemplateSource, version_at};

/// A [`KeyValue`] in a `HashMap`; `fail` makes every call fail.
#[derive(Debug, Clone, Default)]
pub struct MemoryKv {
    map: Arc<Mutex<HashMap<String, Bytes>>>,
    failing: Arc<Mutex<bool>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv::default()
    }

    /// Makes every later call fail (or succeed again), to exercise error paths.
    pub fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = failing;
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bytes>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), PortError> {
        if *self.failing.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(PortError { store: "memory kv".into(), detail: "injected failure".into() });
        }
        Ok(())
    }
}

impl KeyValue for MemoryKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Created, PortError> {
        self.check()?;
        let mut map = self.lock();
        if let Some(existing) = map.get(key) {
            return Ok(Created::Exists(existing.clone()));
        }
        map.insert(key.to_owned(), value);
        Ok(Created::Created)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        self.check()?;
        Ok(self.lock().get(key).cloned())
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), PortError> {
        self.check()?;
        self.lock().insert(key.to_owned(), value);
        Ok(())
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
