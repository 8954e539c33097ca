//! What deliver needs from the store, as traits: tenants' provider credentials, and disabling a
//! device its provider says is gone. The store implements them; `memory` here for unit tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_schemas::{CredentialKey, Credentials, Timestamp};
use herald_stage::PortError;

/// A boxed future, so the ports stay object-safe.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PortError>> + Send + 'a>>;

/// A tenant's credentials for one provider and app, with the revision they were stored at:
/// whatever a provider derives from them (a signing key, a token) is cached by key and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub key: CredentialKey,
    pub revision: u64,
    pub credentials: Credentials,
}

/// Where tenants' provider credentials are read.
pub trait CredentialStore: Send + Sync + 'static {
    /// The credentials of `tenant` for `provider` (`apns`, `fcm`, `web_push`) and `app`: the
    /// app's own, else the tenant's `default` ones. `None` when the tenant has neither.
    fn credentials<'a>(
        &'a self,
        tenant: &'a str,
        provider: &'a str,
        app: Option<&'a str>,
    ) -> PortFuture<'a, Option<Arc<StoredCredentials>>>;
}

/// What a provider said about a device it will never deliver to again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub tenant: String,
    pub user: String,
    pub device: String,
    /// The token or subscription that was refused: a device registered anew with another one
    /// meanwhile is left alone.
    pub address: String,
    /// The provider's code, e.g. `Unregistered`.
    pub reason: String,
    pub at: Timestamp,
}

/// The directory's devices.
pub trait DeviceRegistry: Send + Sync + 'static {
    /// Disables the device if it still has the refused address. Returns whether it did.
    fn disable(&self, invalidation: Invalidation) -> PortFuture<'_, bool>;
}

/// In-memory ports for unit tests.
pub mod memory {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use herald_schemas::providers::DEFAULT_APP;

    /// Credentials in a map.
    #[derive(Debug, Default)]
    pub struct MemoryCredentials {
        map: Mutex<HashMap<(String, String, String), Arc<StoredCredentials>>>,
    }

    impl MemoryCredentials {
        pub fn put(&self, tenant: &str, app: &str, credentials: Credentials) {
            let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let provider = credentials.provider().to_owned();
            let key = CredentialKey { tenant: tenant.into(), provider: provider.clone(), app: app.into() };
            let revision = map.get(&(tenant.into(), provider.clone(), app.into())).map_or(1, |c| c.revision + 1);
            map.insert((tenant.into(), provider, app.into()), Arc::new(StoredCredentials { key, revision, credentials }));
        }
    }

    impl CredentialStore for MemoryCredentials {
        fn credentials<'a>(
            &'a self,
            tenant: &'a str,
            provider: &'a str,
            app: Option<&'a str>,
        ) -> PortFuture<'a, Option<Arc<StoredCredentials>>> {
            let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let find = |app: &str| map.get(&(tenant.to_owned(), provider.to_owned(), app.to_owned())).cloned();
            let found = app.and_then(find).or_else(|| find(DEFAULT_APP));
            Box::pin(std::future::ready(Ok(found)))
        }
    }

    /// Records invalidations.
    #[derive(Debug, Default)]
    pub struct MemoryDevices {
        pub disabled: Mutex<Vec<Invalidation>>,
    }

    impl DeviceRegistry for MemoryDevices {
        fn disable(&self, invalidation: Invalidation) -> PortFuture<'_, bool> {
            self.disabled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(invalidation);
            Box::pin(std::future::ready(Ok(true)))
        }
    }
}
