//! What deliver needs from the store, as traits: tenants' provider credentials, disabling a
//! device its provider says is gone, and users' inboxes. The store implements them; `memory` here for unit tests.

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

/// The credentials a delivery's tenant and device app use for `provider` (`what` names them in
/// errors, e.g. "APNs credentials"): a store that cannot be read is an outage, none at all a
/// permanent `no_credentials`.
pub async fn lookup(
    store: &dyn CredentialStore,
    delivery: &herald_schemas::Delivery,
    provider: &str,
    what: &str,
) -> Result<Arc<StoredCredentials>, crate::ProviderError> {
    let app = delivery.device.as_ref().and_then(|d| d.app_id.as_deref());
    store
        .credentials(&delivery.tenant, provider, app)
        .await
        .map_err(|e| crate::ProviderError::outage("store_unavailable", format!("cannot read {what}: {e}")))?
        .ok_or_else(|| {
            crate::ProviderError::permanent(
                "no_credentials",
                format!(
                    "tenant `{}` has no {what} for app `{}` (nor `default`); add them with `herald providers set {provider}`",
                    delivery.tenant,
                    app.unwrap_or("default")
                ),
            )
        })
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

/// A recipient's request, through a provider, not to be sent to on a channel again (an SMS
/// STOP: Twilio 21610).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutRequest {
    pub tenant: String,
    /// The directory user the address belongs to, when known: their preferences turn the
    /// channel off too.
    pub user: Option<String>,
    pub channel: herald_schemas::Channel,
    /// The phone number.
    pub address: String,
    /// Who reported it (`twilio`) and its code (`21610`).
    pub provider: String,
    pub reason: String,
    pub at: Timestamp,
}

/// The directory's devices, and the webhook endpoints receivers said are gone.
pub trait DeviceRegistry: Send + Sync + 'static {
    /// Disables the device if it still has the refused address. Returns whether it did.
    fn disable(&self, invalidation: Invalidation) -> PortFuture<'_, bool>;

    /// Disables a tenant's webhook endpoint (its receiver answered 410). Returns whether it was
    /// enabled until now.
    fn disable_endpoint<'a>(&'a self, tenant: &'a str, url: &'a str, reason: &'a str, at: Timestamp) -> PortFuture<'a, bool>;

    /// Why and since when the endpoint is disabled, if it is.
    fn endpoint_disabled<'a>(&'a self, tenant: &'a str, url: &'a str) -> PortFuture<'a, Option<String>>;

    /// Records an opt-out (and turns the channel off in the user's preferences). Returns whether
    /// it is new.
    fn opt_out(&self, request: OptOutRequest) -> PortFuture<'_, bool>;

    /// Why and since when `address` is opted out of `channel` for `tenant`, if it is.
    fn opted_out<'a>(&'a self, tenant: &'a str, channel: herald_schemas::Channel, address: &'a str) -> PortFuture<'a, Option<String>>;
}

/// Where in-app messages go: the user's inbox.
pub trait InboxSink: Send + Sync + 'static {
    /// Stores `payload` in `user`'s inbox, once per `msg_id` (a retry is not stored again);
    /// returns where it was stored (its sequence).
    fn store<'a>(&'a self, tenant: &'a str, user: &'a str, msg_id: &'a str, payload: bytes::Bytes) -> PortFuture<'a, u64>;
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

    /// Records invalidations, disabled endpoints by (tenant, url) and opt-outs by (tenant,
    /// channel, address).
    #[derive(Debug, Default)]
    pub struct MemoryDevices {
        pub disabled: Mutex<Vec<Invalidation>>,
        pub endpoints: Mutex<HashMap<(String, String), String>>,
        pub opt_outs: Mutex<HashMap<(String, herald_schemas::Channel, String), OptOutRequest>>,
    }

    impl DeviceRegistry for MemoryDevices {
        fn disable(&self, invalidation: Invalidation) -> PortFuture<'_, bool> {
            self.disabled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(invalidation);
            Box::pin(std::future::ready(Ok(true)))
        }

        fn disable_endpoint<'a>(&'a self, tenant: &'a str, url: &'a str, reason: &'a str, at: Timestamp) -> PortFuture<'a, bool> {
            let mut endpoints = self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let new = endpoints.insert((tenant.to_owned(), url.to_owned()), format!("{reason} at {at}")).is_none();
            Box::pin(std::future::ready(Ok(new)))
        }

        fn endpoint_disabled<'a>(&'a self, tenant: &'a str, url: &'a str) -> PortFuture<'a, Option<String>> {
            let endpoints = self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Box::pin(std::future::ready(Ok(endpoints.get(&(tenant.to_owned(), url.to_owned())).cloned())))
        }

        fn opt_out(&self, request: OptOutRequest) -> PortFuture<'_, bool> {
            let mut opt_outs = self.opt_outs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = (request.tenant.clone(), request.channel, request.address.clone());
            let new = opt_outs.insert(key, request).is_none();
            Box::pin(std::future::ready(Ok(new)))
        }

        fn opted_out<'a>(&'a self, tenant: &'a str, channel: herald_schemas::Channel, address: &'a str) -> PortFuture<'a, Option<String>> {
            let opt_outs = self.opt_outs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let found =
                opt_outs.get(&(tenant.to_owned(), channel, address.to_owned())).map(|r| format!("{} {} at {}", r.provider, r.reason, r.at));
            Box::pin(std::future::ready(Ok(found)))
        }
    }
}
