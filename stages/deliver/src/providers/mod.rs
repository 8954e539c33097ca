//! The providers, one folder each with the same roles: `config.rs` (its settings), `request.rs`
//! (the request it builds from a delivery), `classify.rs` (the table from its answers to sent /
//! retry / permanent / token invalid), `tests.rs`; `mod.rs` ties them to the [`Provider`] trait.
//! [`Providers`] is the registry the deliver stage selects from: per tenant and route, an ordered
//! chain of [`Gate`]s (a provider with its concurrency permits, retry policy and circuit
//! breaker), the first the one that normally sends and the others its failover.

pub mod apns;
pub mod attachments;
pub mod email;
pub mod fcm;
pub mod inbox;
pub mod log;
pub mod sendgrid;
pub mod smtp;
pub mod twilio;
pub mod vonage;
pub mod web_push;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herald_schemas::{Delivery, Priority, Route};
use herald_stage::Alerts;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::DeliverConfig;
use crate::breaker::{Breaker, BreakerConfig, FailureAlertConfig, FailureRate};
use crate::ports::{CredentialStore, DeviceRegistry};
use crate::rate::SendRate;
use crate::retry::RetryPolicy;

/// A provider's answer to an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of the message (APNs `apns-id`, FCM `name`, Twilio `sid`, …).
    pub provider_message_id: String,
    /// Whether the provider recognized the idempotency key as already delivered.
    pub duplicate: bool,
}

/// What a refusal means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Try again later: the provider is unwell (5xx, no answer). Counts toward the breaker.
    Outage,
    /// Try again later: the provider asked us to slow down (429). Not an outage.
    Throttled,
    /// Never: this delivery cannot be sent as it is (bad payload, our credentials refused).
    Permanent,
    /// Never, and the address is gone for good (APNs `Unregistered`, FCM `UNREGISTERED`, web
    /// push 410): the device is disabled.
    TokenInvalid,
    /// Never, because the recipient asked not to be sent to on this channel (Twilio 21610: they
    /// replied STOP): the opt-out is recorded and later deliveries are `opted_out`.
    OptedOut,
}

/// How a provider refused a delivery.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ProviderError {
    pub class: Class,
    /// The provider's own code, e.g. `BadDeviceToken`, `UNREGISTERED`, `21211`, or ours, e.g.
    /// `connect_error`, `no_credentials`.
    pub code: String,
    pub detail: String,
    /// The provider's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(class: Class, code: impl Into<String>, detail: impl Into<String>) -> Self {
        ProviderError { class, code: code.into(), detail: detail.into(), retry_after: None }
    }

    pub fn outage(code: impl Into<String>, detail: impl Into<String>) -> Self {
        ProviderError::new(Class::Outage, code, detail)
    }

    pub fn permanent(code: impl Into<String>, detail: impl Into<String>) -> Self {
        ProviderError::new(Class::Permanent, code, detail)
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether a later call may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self.class, Class::Outage | Class::Throttled)
    }
}

/// A provider call in flight.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Receipt, ProviderError>> + Send + 'a>>;

/// A provider: speaks one service's protocol. Object-safe, so the registry can hold any mix.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name for events and metrics, e.g. `apns` or `log`.
    fn name(&self) -> &str;

    /// Sends one delivery. `delivery.delivery_id` is the idempotency key: a provider that
    /// accepts one is given it (APNs `apns-id`), so a repeated call is recognisable there.
    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a>;
}

/// A provider with what guards it: concurrency permits, retry policy, circuit breaker.
pub struct Gate {
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
    /// The provider's retry policy; `None` (the `log` sandbox): the runner's backoff and the
    /// consumer's attempts.
    pub retry: Option<RetryPolicy>,
    pub breaker: Breaker,
    /// The share of failed calls, for `failure_rate` alerts.
    pub failures: FailureRate,
    /// The route's send rate shared by every replica, when limited.
    pub rate: Option<Arc<dyn SendRate>>,
}

/// The right to one provider call: held until the call's outcome is written.
#[derive(Debug)]
pub struct CallPermit {
    _call: OwnedSemaphorePermit,
    _low: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("provider", &self.provider.name()).field("free", &self.permits.available_permits()).finish()
    }
}

/// Declares a provider's settings struct with the four every provider shares appended —
/// `concurrency`, `rate_limit`, `retry`, `breaker` — and its `guards()`. (serde cannot flatten a
/// shared struct into one that denies unknown fields, and a misspelt key must be an error.)
macro_rules! provider_config {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $type:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $type,)*
            /// Calls in flight per process (default: `deliver.concurrency`).
            pub concurrency: Option<usize>,
            /// Calls started per second by all replicas together (counted in NATS); unset: no limit.
            pub rate_limit: Option<u32>,
            pub retry: crate::retry::RetryPolicy,
            pub breaker: crate::breaker::BreakerConfig,
        }

        impl $name {
            /// The gate's settings.
            pub fn guards(&self) -> crate::providers::Guards {
                crate::providers::Guards {
                    concurrency: self.concurrency,
                    rate_limit: self.rate_limit,
                    retry: self.retry.clone(),
                    breaker: self.breaker.clone(),
                }
            }
        }
    };
}
pub(crate) use provider_config;

/// What a provider's settings say about its gate.
#[derive(Debug, Clone)]
pub struct Guards {
    pub concurrency: Option<usize>,
    pub rate_limit: Option<u32>,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
}

/// The guards of a gate.
#[derive(Debug, Clone, Default)]
pub struct GateConfig {
    pub concurrency: usize,
    pub retry: Option<RetryPolicy>,
    pub breaker: BreakerConfig,
    pub failure_alert: FailureAlertConfig,
}

impl Gate {
    pub fn new(provider: Arc<dyn Provider>, config: GateConfig) -> Self {
        let concurrency = config.concurrency.max(1);
        let reserve = concurrency / 8;
        let shared = concurrency - reserve;
        Gate {
            provider,
            permits: Arc::new(Semaphore::new(shared)),
            reserve: Arc::new(Semaphore::new(reserve)),
            low_share: Arc::new(Semaphore::new((shared / 2).max(1))),
            retry: config.retry,
            breaker: Breaker::new(config.breaker),
            failures: FailureRate::new(config.failure_alert),
            rate: None,
        }
    }

    /// A gate with `concurrency` permits and the default retry policy and breaker.
    pub fn with_concurrency(provider: Arc<dyn Provider>, concurrency: usize) -> Self {
        Gate::new(provider, GateConfig { concurrency, ..GateConfig::default() })
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

/// A route's gates by provider name, for `deliver.failover` to order.
type GatesByName = HashMap<&'static str, Arc<Gate>>;

/// Which providers serve a route, in order: a tenant's own chain first, else the deployment's.
#[derive(Clone, Default)]
pub struct Providers {
    defaults: HashMap<Route, Vec<Arc<Gate>>>,
    tenants: HashMap<(String, Route), Vec<Arc<Gate>>>,
    /// Where breakers' state changes are announced.
    pub alerts: Option<Arc<dyn Alerts>>,
    /// Where devices a provider refused for good are disabled.
    pub devices: Option<Arc<dyn DeviceRegistry>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").field("routes", &self.routes()).finish_non_exhaustive()
    }
}

/// A configuration that names a provider it cannot build.
#[derive(Debug, thiserror::Error)]
#[error("provider {provider}: {detail}")]
pub struct BuildError {
    pub provider: &'static str,
    pub detail: String,
}

/// What the providers read and report to besides their own settings.
#[derive(Clone)]
pub struct ProviderPorts {
    pub credentials: Arc<dyn CredentialStore>,
    pub devices: Arc<dyn DeviceRegistry>,
    pub alerts: Arc<dyn Alerts>,
    /// Where e-mails' stored attachments are read.
    pub attachments: Option<herald_attachments::Attachments>,
    /// Where in-app messages are stored (users' inboxes).
    pub inbox: Option<Arc<dyn crate::ports::InboxSink>>,
    /// Makes a route's shared send-rate limit (calls per second across replicas).
    pub rates: Arc<dyn Fn(Route, u32) -> Arc<dyn SendRate> + Send + Sync>,
}

impl std::fmt::Debug for ProviderPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderPorts").finish_non_exhaustive()
    }
}

impl Providers {
    pub fn new() -> Self {
        Providers::default()
    }

    /// The deployment's providers, from configuration: `log` always; APNs, FCM, web push,
    /// webhooks, SMS (Twilio, Vonage), voice (Twilio), e-mail (SMTP, SendGrid) and the in-app
    /// inbox when `ports` gives them the tenants' credentials, SMS and e-mail in
    /// `deliver.failover` order.
    pub fn from_config(config: &DeliverConfig, ports: Option<ProviderPorts>) -> Result<Self, BuildError> {
        let log = log::LogSink::from_config(&config.log)?;
        let mut providers = Providers::new().with(Route::Log, Arc::new(log), config.concurrency);
        if let Some(ports) = ports {
            let apns = apns::Apns::new(&config.apns, &config.tls, config.send_timeout, ports.credentials.clone())?;
            let fcm = fcm::Fcm::new(&config.fcm, &config.tls, config.send_timeout, ports.credentials.clone())?;
            let web_push = web_push::WebPush::new(&config.web_push, &config.tls, config.send_timeout, ports.credentials.clone())?;
            let webhook = webhook::Webhook::new(&config.webhook, &config.tls, ports.credentials.clone(), Some(ports.devices.clone()))?;
            let gate = |route: Route, provider: Arc<dyn Provider>, c: &Guards| {
                let config = GateConfig {
                    concurrency: c.concurrency.unwrap_or(config.concurrency),
                    retry: Some(c.retry.clone()),
                    breaker: c.breaker.clone(),
                    failure_alert: config.failure_alert.clone(),
                };
                let mut gate = Gate::new(provider, config);
                gate.rate = c.rate_limit.map(|n| (ports.rates)(route, n));
                gate
            };
            let (sms_twilio, voice_twilio) = twilio::twilio(&config.twilio, &config.tls, config.send_timeout, ports.credentials.clone())?;
            let vonage = vonage::Vonage::new(&config.vonage, &config.tls, config.send_timeout, ports.credentials.clone())?;
            let (a, f, w, h) = (config.apns.guards(), config.fcm.guards(), config.web_push.guards(), config.webhook.guards());
            let (t, v) = (config.twilio.guards(), config.vonage.guards());
            let smtp = smtp::Smtp::new(&config.smtp, &config.tls, config.send_timeout, ports.credentials.clone())?
                .with_attachments(ports.attachments.clone());
            let sendgrid = sendgrid::Sendgrid::new(&config.sendgrid, &config.tls, config.send_timeout, ports.credentials.clone())?
                .with_attachments(ports.attachments.clone());
            providers = providers
                .with_gate(Route::Apns, gate(Route::Apns, Arc::new(apns), &a))
                .with_gate(Route::Fcm, gate(Route::Fcm, Arc::new(fcm), &f))
                .with_gate(Route::WebPush, gate(Route::WebPush, Arc::new(web_push), &w))
                .with_gate(Route::Webhook, gate(Route::Webhook, Arc::new(webhook), &h))
                .with_gate(Route::Voice, gate(Route::Voice, Arc::new(voice_twilio), &t));
            // The routes with a choice of providers: each chain in `deliver.failover` order.
            let choices: [(Route, &str, GatesByName); 2] = [
                (
                    Route::Sms,
                    "sms",
                    HashMap::from([
                        ("twilio", Arc::new(gate(Route::Sms, Arc::new(sms_twilio), &t))),
                        ("vonage", Arc::new(gate(Route::Sms, Arc::new(vonage), &v))),
                    ]),
                ),
                (
                    Route::Email,
                    "email",
                    HashMap::from([
                        ("smtp", Arc::new(gate(Route::Email, Arc::new(smtp), &config.smtp.guards()))),
                        ("sendgrid", Arc::new(gate(Route::Email, Arc::new(sendgrid), &config.sendgrid.guards()))),
                    ]),
                ),
            ];
            for (route, channel, gates) in &choices {
                let chain = |names: &[String], what: &str| -> Result<Vec<Arc<Gate>>, BuildError> {
                    let mut known: Vec<&str> = gates.keys().copied().collect();
                    known.sort_unstable();
                    if names.is_empty() {
                        return Err(BuildError {
                            provider: "failover",
                            detail: format!("{what} is empty; name at least one of {}", known.join(", ")),
                        });
                    }
                    names
                        .iter()
                        .map(|name| {
                            gates.get(name.as_str()).cloned().ok_or_else(|| BuildError {
                                provider: "failover",
                                detail: format!("{what} names `{name}`, which is no {channel} provider ({})", known.join(", ")),
                            })
                        })
                        .collect()
                };
                providers.defaults.insert(*route, chain(config.failover.order(*route), &format!("deliver.failover.{channel}"))?);
                for (tenant, own) in &config.failover.tenants {
                    if let Some(names) = own.order(*route) {
                        let what = format!("deliver.failover.tenants.{tenant}.{channel}");
                        providers.tenants.insert((tenant.clone(), *route), chain(names, &what)?);
                    }
                }
            }
            if let Some(sink) = ports.inbox {
                providers = providers.with(Route::InApp, Arc::new(inbox::Inbox::new(sink)), config.concurrency);
            }
            providers.alerts = Some(ports.alerts);
            providers.devices = Some(ports.devices);
        }
        Ok(providers)
    }

    /// Serves `route` with `provider` for every tenant without one of its own.
    pub fn with(self, route: Route, provider: Arc<dyn Provider>, concurrency: usize) -> Self {
        self.with_gate(route, Gate::with_concurrency(provider, concurrency))
    }

    /// Serves `route` through `gate` for every tenant without a chain of its own, after the
    /// gates already serving it (its failover).
    pub fn with_gate(mut self, route: Route, gate: Gate) -> Self {
        self.defaults.entry(route).or_default().push(Arc::new(gate));
        self
    }

    /// Serves `route` for `tenant` with its own provider, after any it already has.
    pub fn with_tenant(mut self, tenant: &str, route: Route, provider: Arc<dyn Provider>, concurrency: usize) -> Self {
        let gate = Arc::new(Gate::with_concurrency(provider, concurrency));
        self.tenants.entry((tenant.to_owned(), route)).or_default().push(gate);
        self
    }

    /// The gates a delivery of `tenant` on `route` may go through, in the order tried.
    pub fn chain(&self, tenant: &str, route: Route) -> &[Arc<Gate>] {
        self.tenants.get(&(tenant.to_owned(), route)).or_else(|| self.defaults.get(&route)).map_or(&[], Vec::as_slice)
    }

    /// The first gate for a delivery of `tenant` on `route`.
    pub fn select(&self, tenant: &str, route: Route) -> Option<&Arc<Gate>> {
        self.chain(tenant, route).first()
    }

    /// The routes with a default provider.
    pub fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = self.defaults.keys().copied().collect();
        routes.sort();
        routes
    }
}
