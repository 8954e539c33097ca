//! The providers, one folder each with the same roles: its configuration, the request it
//! builds, the classification of the provider's answers (sent, retry, permanent), its tests.
//! [`Providers`] is the registry the deliver stage selects from, per tenant and route.

pub mod log;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_schemas::{Channel, Delivery, Priority};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::DeliverConfig;

/// A provider's answer to an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of the message (APNs `apns-id`, Twilio `sid`, …).
    pub provider_message_id: String,
    /// Whether the provider recognized the idempotency key as already delivered.
    pub duplicate: bool,
}

/// How a provider refused a delivery.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ProviderError {
    /// Retry later (outage, rate limit, I/O error), or never (invalid address, payload).
    pub retryable: bool,
    /// The provider's own code, e.g. `BadDeviceToken`, `21211`, or ours, e.g. `io_error`.
    pub code: String,
    pub detail: String,
    /// The provider's `Retry-After`, when it gave one.
    pub retry_after: Option<std::time::Duration>,
}

/// A provider call in flight.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Receipt, ProviderError>> + Send + 'a>>;

/// A provider: speaks one service's protocol. Object-safe, so the registry can hold any mix.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name for events and metrics, e.g. `apns` or `log`.
    fn name(&self) -> &str;

    /// Sends one delivery. `delivery.delivery_id` is the idempotency key: a provider that
    /// accepts one is given it, so a repeated call (after a crash) is absorbed there.
    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a>;
}

/// A provider with its concurrency limit.
#[derive(Clone)]
pub struct Route {
    pub provider: Arc<dyn Provider>,
    /// Calls in flight at once; a call holds its permit until its outcome is written.
    pub permits: Arc<Semaphore>,
    /// Permits only `critical` and `high` deliveries may take: an eighth of the concurrency,
    /// carved out of it (the two pools together never exceed it), so urgent calls never queue
    /// behind a backlog of `normal` and `low` ones.
    pub reserve: Arc<Semaphore>,
    /// How many of the shared permits `low` deliveries may hold at once (half), so a flood of
    /// `low` never takes the whole provider from `normal`.
    pub low_share: Arc<Semaphore>,
}

/// The right to one provider call: held until the call's outcome is written.
#[derive(Debug)]
pub struct CallPermit {
    _call: OwnedSemaphorePermit,
    _low: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("provider", &self.provider.name()).field("free", &self.permits.available_permits()).finish()
    }
}

impl Route {
    pub fn new(provider: Arc<dyn Provider>, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        let reserve = concurrency / 8;
        let shared = concurrency - reserve;
        Route {
            provider,
            permits: Arc::new(Semaphore::new(shared)),
            reserve: Arc::new(Semaphore::new(reserve)),
            low_share: Arc::new(Semaphore::new((shared / 2).max(1))),
        }
    }

    /// A permit for one call: urgent deliveries take whichever frees first, the shared pool or
    /// the reserve; `normal` ones wait for the shared pool; `low` ones also for their share.
    pub async fn permit(&self, priority: Priority) -> Result<CallPermit, AcquireError> {
        let low = match priority {
            Priority::Low => Some(self.low_share.clone().acquire_owned().await?),
            _ => None,
        };
        let call = if !priority.is_urgent() {
            self.permits.clone().acquire_owned().await?
        } else if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            permit
        } else {
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit?,
                permit = self.reserve.clone().acquire_owned() => permit?,
            }
        };
        Ok(CallPermit { _call: call, _low: low })
    }
}

/// Which provider serves a channel: a tenant's own choice first, else the deployment's.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    defaults: HashMap<Channel, Route>,
    tenants: HashMap<(String, Channel), Route>,
}

/// A configuration that names a provider it cannot build.
#[derive(Debug, thiserror::Error)]
#[error("provider {provider}: {detail}")]
pub struct BuildError {
    pub provider: &'static str,
    pub detail: String,
}

impl Providers {
    pub fn new() -> Self {
        Providers::default()
    }

    /// The deployment's providers, from configuration.
    pub fn from_config(config: &DeliverConfig) -> Result<Self, BuildError> {
        let log = log::LogSink::from_config(&config.log)?;
        Ok(Providers::new().with(Channel::Log, Arc::new(log), config.concurrency))
    }

    /// Serves `channel` with `provider` for every tenant without one of its own.
    pub fn with(mut self, channel: Channel, provider: Arc<dyn Provider>, concurrency: usize) -> Self {
        self.defaults.insert(channel, Route::new(provider, concurrency));
        self
    }

    /// Serves `channel` for `tenant` with its own provider.
    pub fn with_tenant(mut self, tenant: &str, channel: Channel, provider: Arc<dyn Provider>, concurrency: usize) -> Self {
        self.tenants.insert((tenant.to_owned(), channel), Route::new(provider, concurrency));
        self
    }

    /// The route for a delivery of `tenant` on `channel`.
    pub fn select(&self, tenant: &str, channel: Channel) -> Option<&Route> {
        self.tenants.get(&(tenant.to_owned(), channel)).or_else(|| self.defaults.get(&channel))
    }

    /// The channels with a default provider.
    pub fn channels(&self) -> Vec<Channel> {
        let mut channels: Vec<Channel> = self.defaults.keys().copied().collect();
        channels.sort();
        channels
    }
}
