//! Deliver: hands each delivery to its provider, once.
//!
//! In: a [`Delivery`] from throttle, on its route's own consumer (`apns`, `fcm`, `web_push`,
//! `sms` …): a provider outage stalls only that route.
//! Out: `sent` with the provider's message id; `failed` for a permanent provider refusal (with
//! the provider's own code as reason), plus `token_invalidated` when the provider says the
//! device is gone (the device is disabled in the directory); `expired` when it expired while
//! waiting; `deduplicated` when another copy already sent it. A retryable refusal (5xx, 429, no
//! answer) is a transient error: the runner redelivers it after the provider's `Retry-After`
//! or the route's backoff, and after the route's last attempt it is `failed` and dead-lettered.
//! Side effects: the provider call; the delivery's state in the dedupe bucket
//! (`herald_dedupe::state`), read on every message and moved by compare-and-swap; disabling a
//! device; alerts when a route's circuit breaker opens or closes.
//! Invariants:
//! - A delivery whose state is `sent` is never sent again, whichever copy of it arrives
//!   (redelivered, republished after the duplicate window, replayed).
//! - After a provider accepted, only the state write is retried, never the call.
//! - A call holds its route's concurrency permit until its outcome is written, so a crash
//!   leaves at most `concurrency` deliveries per route and process in `sending`; those are the
//!   only ones a provider can see twice (after the holder's lease), and they carry the delivery
//!   id as the idempotency key (APNs `apns-id`).
//! - While a route's breaker is open no call is made: deliveries are held without spending an
//!   attempt.

pub mod breaker;
pub mod config;
pub mod http;
pub mod ports;
pub mod providers;
pub mod rate;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use herald_dedupe::{Begin, Finished, Phase, States, Ticket};
use herald_schemas::{Alert, AlertKind, Channel, Delivery, Route, Status, Timestamp, TrackEvent};
use herald_stage::{EventBuilder, KeyValue, Meta, Outcome, Stage, StageError};
use tracing::{info, warn};

use crate::breaker::Admission;
use crate::ports::{Invalidation, OptOutRequest};
use crate::providers::{Class, Gate};

pub use config::DeliverConfig;
pub use providers::log::{CALLS_FILE, DUPLICATES_FILE, LogConfig, LogSink};
pub use providers::{BuildError, CallPermit, GateConfig, Provider, ProviderError, ProviderPorts, Providers, Receipt, SendFuture};

/// The deliver stage for one route.
#[derive(Debug)]
pub struct Deliver<K> {
    route: Route,
    providers: Arc<Providers>,
    states: States<K>,
    config: DeliverConfig,
}

impl<K: KeyValue> Deliver<K> {
    pub fn new(route: Route, providers: Arc<Providers>, kv: K, config: DeliverConfig) -> Self {
        Deliver { route, providers, states: States::new(kv), config }
    }

    fn event(
        meta: &Meta,
        delivery: &Delivery,
        status: Status,
        reason: impl Into<String>,
        detail: impl Into<String>,
    ) -> Result<Outcome, StageError> {
        Outcome::new().event(EventBuilder::delivery(Self::NAME, meta, delivery, status).reason(reason, detail).build())
    }

    fn sent(meta: &Meta, delivery: &Delivery, provider: &str, provider_message_id: &str) -> Result<Outcome, StageError> {
        let detail = format!("{provider} accepted it as {provider_message_id}");
        Outcome::new().event(
            EventBuilder::delivery(Self::NAME, meta, delivery, Status::Sent)
                .provider(provider, Some(provider_message_id))
                .reason("provider_accepted", detail)
                .build(),
        )
    }

    /// A provider's refusal of the delivery.
    fn refusal(meta: &Meta, delivery: &Delivery, provider: &str, status: Status, reason: &str, detail: String) -> TrackEvent {
        EventBuilder::delivery(Self::NAME, meta, delivery, status).provider(provider, None).reason(reason, detail).build()
    }

    /// Raises a breaker's change of state on `herald.alerts`.
    async fn alert(&self, gate: &Gate, kind: Option<AlertKind>) {
        let Some(kind) = kind else { return };
        let provider = gate.provider.name().to_owned();
        let detail = match kind {
            AlertKind::BreakerOpened => format!(
                "{provider} failed {} times in a row (or its probe failed): calls on route {} stop for {:?}; deliveries wait",
                gate.breaker.config().failures_to_open,
                self.route,
                gate.breaker.config().open_for
            ),
            AlertKind::BreakerHalfOpen => format!("{provider}: probing with one call before letting route {} flow again", self.route),
            AlertKind::BreakerClosed => format!("{provider} answered again: route {} flows", self.route),
            other => format!("{provider} on route {}: {}", self.route, other.as_str()),
        };
        self.raise(gate, kind, detail).await;
    }

    /// Logs an alert about `gate`'s provider and publishes it on `herald.alerts`.
    async fn raise(&self, gate: &Gate, kind: AlertKind, detail: String) {
        let provider = gate.provider.name().to_owned();
        warn!(route = %self.route, provider, alert = kind.as_str(), "{detail}");
        let state = match kind {
            AlertKind::BreakerOpened => Some(2.0),
            AlertKind::BreakerHalfOpen => Some(1.0),
            AlertKind::BreakerClosed => Some(0.0),
            _ => None,
        };
        if let Some(state) = state {
            metrics::gauge!("herald_breaker_state", "route" => self.route.as_str(), "provider" => provider.clone()).set(state);
        }
        if let Some(alerts) = &self.providers.alerts {
            let source = format!("{}:{}", hostname(), std::process::id());
            let alert = Alert {
                v: herald_schemas::WIRE_VERSION,
                kind,
                route: Some(self.route),
                provider: Some(provider),
                consumer: None,
                detail,
                source,
                at: Timestamp::now(),
            };
            alerts.alert(alert).await;
        }
    }

    /// Calls the provider under a ticket and records what it said. A refusal the chain may get
    /// past ([`Handoff::takes`]) releases the delivery for the next provider, or for a retry of
    /// the ones before, instead.
    async fn send(&self, gate: &Gate, ticket: Ticket, delivery: &Delivery, meta: &Meta, probe: bool, handoff: Handoff) -> Try {
        let provider = gate.provider.name().to_owned();
        if ticket.took_over {
            warn!(delivery_id = %delivery.delivery_id, provider, "An earlier holder's lease ran out before it recorded an outcome; sending again with the same idempotency key.");
        }
        let now = Timestamp::now();
        if let Some(expires_at) = delivery.expires_at
            && expires_at <= now
        {
            let detail = format!("expired at {expires_at} while waiting for the provider");
            self.finish(&ticket, delivery, failed(meta, "expired", &detail)).await;
            gate.breaker.abandon(probe);
            return Try::Done(Self::event(meta, delivery, Status::Expired, "expired", detail));
        }
        if matches!(delivery.channel, Channel::Sms | Channel::Email)
            && let Some(outcome) = self.opted_out(&ticket, delivery, meta).await
        {
            gate.breaker.abandon(probe);
            return Try::Done(outcome);
        }
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(self.config.send_timeout, gate.provider.send(delivery)).await;
        let outcome = match &answer {
            Ok(Ok(_)) => "sent",
            Ok(Err(e)) => match e.class {
                Class::Outage => "outage",
                Class::Throttled => "throttled",
                Class::Permanent => "refused",
                Class::TokenInvalid => "token_invalid",
                Class::OptedOut => "opted_out",
            },
            Err(_) => "timeout",
        };
        let labels = [("route", self.route.as_str().to_owned()), ("provider", provider.clone())];
        metrics::histogram!("herald_provider_request_seconds", &labels).record(started.elapsed().as_secs_f64());
        metrics::counter!("herald_provider_requests_total", &[&labels[..], &[("outcome", outcome.to_owned())]].concat()).increment(1);
        if let Some((failures, calls)) = gate.failures.record(matches!(outcome, "outage" | "timeout" | "refused")) {
            let limit = gate.failures.config().rate * 100.0;
            let detail =
                format!("{provider} failed {failures} of its last {calls} calls on route {} (the limit is {limit:.0}%)", self.route);
            self.raise(gate, AlertKind::FailureRate, detail).await;
        }
        let error = match answer {
            Ok(Ok(receipt)) => {
                self.alert(gate, gate.breaker.record(probe, false)).await;
                let phase = Phase::Sent {
                    by: meta.sequence,
                    provider: provider.clone(),
                    provider_message_id: receipt.provider_message_id.clone(),
                    at: Timestamp::now(),
                };
                self.finish(&ticket, delivery, phase).await;
                return Try::Done(Self::sent(meta, delivery, &provider, &receipt.provider_message_id));
            }
            Ok(Err(error)) => error,
            Err(_) => {
                ProviderError::outage("provider_timeout", format!("no answer within {:?} (deliver.send_timeout)", self.config.send_timeout))
            }
        };
        self.alert(gate, gate.breaker.record(probe, error.class == Class::Outage)).await;
        if handoff.takes(&error) {
            if let Err(e) = self.states.release(&ticket).await {
                warn!(error = %e, delivery_id = %delivery.delivery_id, "Could not release the delivery for the next provider; it takes it over as the same attempt.");
            }
            return Try::Next(error);
        }
        Try::Done(self.refused(gate, &ticket, delivery, meta, error).await)
    }

    /// Records a provider's refusal: the outcome, or the error the runner retries.
    async fn refused(
        &self,
        gate: &Gate,
        ticket: &Ticket,
        delivery: &Delivery,
        meta: &Meta,
        error: ProviderError,
    ) -> Result<Outcome, StageError> {
        let provider = gate.provider.name().to_owned();
        match error.class {
            Class::Permanent => {
                let detail = format!("{provider} refused it: {}", error.detail);
                self.finish(ticket, delivery, failed(meta, &error.code, &detail)).await;
                Outcome::new().event(Self::refusal(meta, delivery, &provider, Status::Failed, &error.code, detail))
            }
            Class::OptedOut => {
                let detail = format!("{provider} refused it: {}", error.detail);
                self.finish(ticket, delivery, failed(meta, OPTED_OUT, &detail)).await;
                let recorded = self.record_opt_out(delivery, &provider, &error.code).await;
                Outcome::new().event(Self::refusal(meta, delivery, &provider, Status::OptedOut, OPTED_OUT, detail))?.event(Self::refusal(
                    meta,
                    delivery,
                    &provider,
                    Status::Unsubscribed,
                    &error.code,
                    recorded,
                ))
            }
            Class::TokenInvalid => {
                let detail = format!("{provider} refused it: {}", error.detail);
                self.finish(ticket, delivery, failed(meta, &error.code, &detail)).await;
                let disabled = self.invalidate(delivery, &error.code).await;
                Outcome::new().event(Self::refusal(meta, delivery, &provider, Status::Failed, &error.code, detail))?.event(Self::refusal(
                    meta,
                    delivery,
                    &provider,
                    Status::TokenInvalidated,
                    &error.code,
                    disabled,
                ))
            }
            Class::Outage | Class::Throttled => {
                let detail = format!("{provider}: {}", error.detail);
                let attempts = gate.retry.as_ref().map_or(meta.max_attempts, |r| r.attempts.min(meta.max_attempts).max(1));
                if meta.attempt >= attempts {
                    // `failed` lets a later replay through dedupe send it again; the runner
                    // dead-letters the message.
                    let detail = format!("{detail} (attempt {} of {attempts}, the last)", meta.attempt);
                    self.finish(ticket, delivery, failed(meta, &error.code, &detail)).await;
                    return Err(StageError::permanent(error.code, detail));
                }
                if let Err(e) = self.states.release(ticket).await {
                    warn!(error = %e, delivery_id = %delivery.delivery_id, "Could not release the delivery; the next attempt waits for its lease.");
                }
                let delay = match &gate.retry {
                    Some(policy) => Some(policy.delay(meta.attempt, error.retry_after)),
                    None => error.retry_after,
                };
                let mut error = StageError::transient(error.code, detail);
                error.retry_after = delay;
                Err(error)
            }
        }
    }

    /// The outcome of an SMS to a number that told a provider to stop, or of an e-mail to an
    /// address a receipt suppressed (a hard bounce, a spam report, an unsubscribe), if so:
    /// `opted_out`, and no call. A store that cannot be read does not hold the message: the
    /// provider refuses an opted-out number itself (21610), and suppresses a bounced address.
    async fn opted_out(&self, ticket: &Ticket, delivery: &Delivery, meta: &Meta) -> Option<Result<Outcome, StageError>> {
        let registry = self.providers.devices.as_ref()?;
        let why = match registry.opted_out(&delivery.tenant, delivery.channel, &delivery.address).await {
            Ok(why) => why?,
            Err(error) => {
                warn!(%error, delivery_id = %delivery.delivery_id, "Could not read the opt-outs; the provider decides.");
                return None;
            }
        };
        let detail = format!("the recipient opted out of {} ({why}); nothing was sent", delivery.channel);
        self.finish(ticket, delivery, failed(meta, OPTED_OUT, &detail)).await;
        Some(Self::event(meta, delivery, Status::OptedOut, OPTED_OUT, detail))
    }

    /// Records that the recipient told `provider` to stop; says what was done, for the event.
    async fn record_opt_out(&self, delivery: &Delivery, provider: &str, code: &str) -> String {
        let Some(registry) = &self.providers.devices else {
            return format!("the recipient should be opted out of {}, but this process has no store", delivery.channel);
        };
        let request = OptOutRequest {
            tenant: delivery.tenant.clone(),
            user: delivery.user_id.clone(),
            channel: delivery.channel,
            address: delivery.address.clone(),
            provider: provider.to_owned(),
            reason: code.to_owned(),
            at: Timestamp::now(),
        };
        let whose = delivery
            .user_id
            .as_ref()
            .map_or_else(String::new, |u| format!(" (user `{u}`: {} turned off in their preferences)", delivery.channel));
        match thrice(|| registry.opt_out(request.clone())).await {
            Ok(true) => {
                info!(tenant = %delivery.tenant, channel = %delivery.channel, provider, code, "Recorded an opt-out the recipient sent the provider.");
                format!("opted out of {} through {provider}{whose}: later deliveries are opted_out", delivery.channel)
            }
            Ok(false) => format!("already opted out of {}", delivery.channel),
            Err(error) => {
                warn!(%error, "Could not record the opt-out; the provider keeps refusing the number.");
                format!("the opt-out could not be recorded ({error}); {provider} keeps refusing the number")
            }
        }
    }

    /// Disables the webhook endpoint whose receiver said it is gone; says what was done.
    async fn disable_endpoint(&self, delivery: &Delivery, reason: &str) -> String {
        let url = &delivery.address;
        let Some(endpoints) = &self.providers.devices else {
            return format!("endpoint {url} should be disabled, but this process has no store");
        };
        match thrice(|| endpoints.disable_endpoint(&delivery.tenant, url, reason, Timestamp::now())).await {
            Ok(true) => {
                info!(tenant = %delivery.tenant, url, reason, "Disabled a webhook endpoint its receiver says is gone.");
                format!("endpoint {url} disabled: it gets no webhooks until `herald webhooks enable` enables it again")
            }
            Ok(false) => format!("endpoint {url} was already disabled"),
            Err(error) => {
                warn!(%error, url, "Could not disable the endpoint; its next webhook will be refused again.");
                format!("endpoint {url} could not be disabled ({error})")
            }
        }
    }

    /// Disables the device the provider refused for good; says what was done, for the event.
    async fn invalidate(&self, delivery: &Delivery, reason: &str) -> String {
        if delivery.channel == Channel::Webhook {
            return self.disable_endpoint(delivery, reason).await;
        }
        let (Some(user), Some(device)) = (&delivery.user_id, &delivery.device) else {
            return "the address is invalid; it belongs to no directory device, so nothing was disabled".into();
        };
        let Some(devices) = &self.providers.devices else {
            return format!("device `{}` of user `{user}` should be disabled, but this process has no directory", device.id);
        };
        let invalidation = Invalidation {
            tenant: delivery.tenant.clone(),
            user: user.clone(),
            device: device.id.clone(),
            address: delivery.address.clone(),
            reason: reason.to_owned(),
            at: Timestamp::now(),
        };
        match thrice(|| devices.disable(invalidation.clone())).await {
            Ok(true) => {
                info!(tenant = %delivery.tenant, user, device = %device.id, reason, "Disabled a device its provider no longer accepts.");
                format!("device `{}` of user `{user}` disabled: it gets no pushes until the app registers it again", device.id)
            }
            Ok(false) => format!("device `{}` of user `{user}` was already re-registered or removed; left as it is", device.id),
            Err(error) => {
                warn!(%error, device = %device.id, "Could not disable the device; its next delivery will be refused again.");
                format!("device `{}` of user `{user}` could not be disabled ({error})", device.id)
            }
        }
    }

    /// Writes an outcome until the store takes it. The provider has answered: calling it again
    /// is what this loop exists to avoid, so it waits out a store outage instead (the runner
    /// keeps the message with progress acks meanwhile).
    async fn finish(&self, ticket: &Ticket, delivery: &Delivery, phase: Phase) {
        let mut failures = 0u32;
        loop {
            match self.states.finish(ticket, phase.clone()).await {
                Ok(Finished::Written) => return,
                Ok(Finished::Overtaken) if matches!(phase, Phase::Sent { .. }) => {
                    warn!(delivery_id = %delivery.delivery_id, "Another attempt took the delivery over after this one's lease ran out, but the provider had accepted this one: recording it as sent.");
                    match self.states.settle_sent(ticket, phase.clone()).await {
                        Ok(()) => return,
                        Err(error) => {
                            warn!(%error, delivery_id = %delivery.delivery_id, "Could not record the acceptance yet; trying again.");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                Ok(Finished::Overtaken) => {
                    warn!(delivery_id = %delivery.delivery_id, "Another attempt took the delivery over after this one's lease ran out; its outcome stands.");
                    return;
                }
                Err(error) => {
                    failures += 1;
                    warn!(%error, delivery_id = %delivery.delivery_id, failures, "Could not record the provider's answer; trying again (the provider is not called again).");
                    let pause = Duration::from_millis(100).saturating_mul(1 << failures.min(6)).min(Duration::from_secs(5));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// The reason a delivery is `opted_out` by deliver: the recipient told the provider to stop.
const OPTED_OUT: &str = "recipient_opted_out";

/// What one provider of a route's chain made of a delivery.
enum Try {
    /// The delivery's outcome (or the error the runner retries).
    Done(Result<Outcome, StageError>),
    /// This provider could not take it, and the next in the chain may: the delivery was released.
    Next(ProviderError),
}

/// Where a provider stands in its route's chain, for what its refusal leads to.
#[derive(Debug, Clone, Copy)]
struct Handoff {
    /// Another provider comes after it.
    next: bool,
    /// A provider before it is down (refused as an outage, or its breaker is open): the
    /// delivery waits for that one rather than fail because this one has no account.
    behind_outage: bool,
}

impl Handoff {
    /// Whether `error` passes the delivery on rather than settling it here.
    fn takes(self, error: &ProviderError) -> bool {
        (self.next && may_fail_over(error)) || (self.behind_outage && error.class == Class::Permanent && error.code == "no_credentials")
    }
}

/// Whether a refusal lets the next provider send: the provider answered that it is down or
/// asks to slow down, refused the connection, or the tenant has no account with it. Never
/// after no answer at all (a timeout, a connection lost mid-call): the provider may have sent
/// it, and the retry goes to the same provider.
fn may_fail_over(error: &ProviderError) -> bool {
    match error.class {
        Class::Outage | Class::Throttled => {
            !matches!(error.code.as_str(), "timeout" | "transport_error" | "provider_timeout" | "store_unavailable")
        }
        Class::Permanent => error.code == "no_credentials",
        Class::TokenInvalid | Class::OptedOut => false,
    }
}

fn failed(meta: &Meta, reason: &str, detail: &str) -> Phase {
    Phase::Failed { by: meta.sequence, reason: reason.to_owned(), detail: detail.to_owned(), at: Timestamp::now() }
}

impl<K: KeyValue> Stage for Deliver<K> {
    const NAME: &'static str = "deliver";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        if delivery.route() != self.route {
            return Err(StageError::permanent(
                "wrong_route",
                format!("a {} delivery reached the {} deliver consumer", delivery.route(), self.route),
            ));
        }
        let chain = self.providers.chain(&delivery.tenant, self.route);
        if chain.is_empty() {
            let detail = format!(
                "no provider serves route `{}` for tenant `{}` in this version; remove channel `{}` from enrich.enabled_channels",
                self.route, delivery.tenant, delivery.channel
            );
            return Self::event(meta, &delivery, Status::Failed, "no_provider", detail);
        }
        // Down the chain: a provider whose breaker is open is passed over (no call, no attempt
        // spent); one that refused in a way the next may not share hands the delivery on.
        let mut open_for: Option<Duration> = None;
        let mut passed: Vec<(String, ProviderError)> = Vec::new();
        for (i, gate) in chain.iter().enumerate() {
            // The permit first, the breaker's word second: a delivery that waited for a permit
            // while the breaker opened is held, not sent to a provider known to be down.
            let permit = match gate.permit(delivery.priority).await {
                Ok(permit) => permit,
                Err(e) => return Err(StageError::outage("stopping", e.to_string())),
            };
            let (admission, change) = gate.breaker.admit();
            self.alert(gate, change).await;
            let probe = match admission {
                Admission::Call { probe } => probe,
                Admission::Wait(wait) => {
                    open_for = Some(open_for.map_or(wait, |w| w.min(wait)));
                    passed.push((gate.provider.name().to_owned(), ProviderError::outage("circuit_open", "its circuit breaker is open")));
                    continue;
                }
            };
            let handoff = Handoff { next: i + 1 < chain.len(), behind_outage: passed.iter().any(|(_, e)| e.retryable()) };
            let attempt = self.admitted(gate, permit, &delivery, meta, probe, handoff).await;
            // Whatever did not reach the provider leaves the probe slot to another delivery.
            gate.breaker.abandon(probe);
            match attempt {
                Try::Done(outcome) => return outcome,
                Try::Next(error) => {
                    let next = chain.get(i + 1).map(|g| g.provider.name().to_owned()).unwrap_or_default();
                    info!(delivery_id = %delivery.delivery_id, provider = gate.provider.name(), next, code = error.code, "Failing over to the next provider.");
                    passed.push((gate.provider.name().to_owned(), error));
                }
            }
        }
        // No provider took it: every breaker open, the last ones open after the first failed, or
        // those after a failed one without an account. Retried as the last outage answered.
        let detail = passed.iter().map(|(p, e)| format!("{p}: {}", e.detail)).collect::<Vec<_>>().join("; ");
        let answered = passed.iter().rev().find(|(_, e)| e.retryable() && e.code != "circuit_open");
        let code = answered.map_or("circuit_open".to_owned(), |(_, e)| e.code.clone());
        let retry_after = answered.and_then(|(_, e)| e.retry_after).map_or(open_for, |r| Some(open_for.map_or(r, |o| o.min(r))));
        let mut error = StageError::outage(code, format!("no provider of route {} took it ({detail})", self.route));
        error.retry_after = retry_after;
        Err(error)
    }
}

impl<K: KeyValue> Deliver<K> {
    /// `_permit` is held until the outcome is written: it bounds what a crash can leave in
    /// `sending`.
    async fn admitted(&self, gate: &Gate, _permit: CallPermit, delivery: &Delivery, meta: &Meta, probe: bool, handoff: Handoff) -> Try {
        // Before the delivery's lease is taken: a wait for the rate never runs a lease out.
        if let Some(rate) = &gate.rate
            && let Err(e) = rate.acquire().await
        {
            return Try::Done(Err(StageError::outage("rate_unavailable", format!("cannot count the send rate: {e}"))));
        }
        let now = Timestamp::now();
        let begun =
            match self.states.begin(delivery.delivery_id, delivery.claim, meta.sequence, meta.attempt, self.config.lease(), now).await {
                Ok(begun) => begun,
                Err(error) => return Try::Done(Err(error)),
            };
        Try::Done(match begun {
            Begin::Send(ticket) => return self.send(gate, ticket, delivery, meta, probe, handoff).await,
            Begin::Sent { mine: true, provider, provider_message_id, .. } => Self::sent(meta, delivery, &provider, &provider_message_id),
            Begin::Sent { mine: false, by, provider, provider_message_id } => {
                let detail = format!("already sent through {provider} as {provider_message_id} by message #{by}");
                Self::event(meta, delivery, Status::Deduplicated, "already_sent", detail)
            }
            Begin::Failed { mine: true, reason, detail } => {
                // Reported again exactly as the first time (an expiry is recorded as a failure
                // so a replay may retry it, but it was reported as `expired`).
                let status = match reason.as_str() {
                    "expired" => Status::Expired,
                    OPTED_OUT => Status::OptedOut,
                    _ => Status::Failed,
                };
                Self::event(meta, delivery, status, reason, detail)
            }
            Begin::Failed { mine: false, reason, .. } => {
                let detail = format!("already failed ({reason}); a replay through dedupe retries it");
                Self::event(meta, delivery, Status::Deduplicated, "already_failed", detail)
            }
            Begin::Busy { until, by } => {
                let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default();
                let detail = format!("message #{by} is calling the provider; its lease runs until {until}");
                Err(StageError::outage("delivery_in_flight", detail).retry_after(wait))
            }
        })
    }
}

/// This host's name, for alerts (`HOSTNAME`, else `/etc/hostname`).
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;

/// A store write tried up to three times, 200 ms and then 400 ms apart: disabling what a
/// provider refused is worth a short wait, not a held message.
async fn thrice<T, F, Fut>(mut write: F) -> Result<T, herald_stage::PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, herald_stage::PortError>>,
{
    let mut attempt = 1u32;
    loop {
        match write().await {
            Err(error) if attempt < 3 => {
                warn!(%error, attempt, "Could not write to the store yet; trying again.");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}
