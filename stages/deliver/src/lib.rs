//! Deliver: hands each delivery to its provider, once.
//!
//! In: a [`Delivery`] from throttle, on its channel's own consumer (a provider outage stalls
//! only that channel).
//! Out: `sent` with the provider's message id; `failed` for a permanent provider refusal;
//! `expired` when it expired while waiting; `deduplicated` when another copy already sent it. A
//! retryable provider error is a transient stage error: the runner retries it with backoff and
//! dead-letters it after the last attempt.
//! Side effects: the provider call, and the delivery's state in the dedupe bucket
//! (`herald_dedupe::state`), read on every message and moved by compare-and-swap.
//! Invariants:
//! - A delivery whose state is `sent` is never sent again, whichever copy of it arrives
//!   (redelivered, republished after the duplicate window, replayed).
//! - After a provider accepted, only the state write is retried, never the call.
//! - A call holds its route's concurrency permit until its outcome is written, so a crash
//!   leaves at most `deliver.concurrency` deliveries per route and process in `sending`; those
//!   are the only ones a provider can see twice (after the holder's lease), and they carry the
//!   delivery id as the idempotency key, which providers that honour one absorb.

pub mod config;
pub mod providers;

use std::sync::Arc;
use std::time::Duration;

use herald_dedupe::{Begin, Finished, Phase, States, Ticket};
use herald_schemas::{Channel, Delivery, Status, Timestamp};
use herald_stage::{EventBuilder, KeyValue, Meta, Outcome, Stage, StageError};
use tracing::warn;

pub use config::DeliverConfig;
pub use providers::log::{CALLS_FILE, DUPLICATES_FILE, LogConfig, LogSink};
pub use providers::{BuildError, CallPermit, Provider, ProviderError, Providers, Receipt, Route, SendFuture};

/// The deliver stage for one channel.
#[derive(Debug)]
pub struct Deliver<K> {
    channel: Channel,
    providers: Arc<Providers>,
    states: States<K>,
    config: DeliverConfig,
}

impl<K: KeyValue> Deliver<K> {
    pub fn new(channel: Channel, providers: Arc<Providers>, kv: K, config: DeliverConfig) -> Self {
        Deliver { channel, providers, states: States::new(kv), config }
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
        Self::event(meta, delivery, Status::Sent, "provider_accepted", format!("{provider} accepted it as {provider_message_id}"))
    }

    /// Calls the provider under a ticket and records what it said.
    async fn send(&self, route: &Route, ticket: Ticket, delivery: &Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        let provider = route.provider.name().to_owned();
        if ticket.took_over {
            warn!(delivery_id = %delivery.delivery_id, provider, "An earlier holder's lease ran out before it recorded an outcome; sending again with the same idempotency key.");
        }
        let now = Timestamp::now();
        if let Some(expires_at) = delivery.expires_at
            && expires_at <= now
        {
            let detail = format!("expired at {expires_at} while waiting for the provider");
            self.finish(&ticket, delivery, failed(meta, "expired", &detail)).await;
            return Self::event(meta, delivery, Status::Expired, "expired", detail);
        }
        let answer = tokio::time::timeout(self.config.send_timeout, route.provider.send(delivery)).await;
        let error = match answer {
            Ok(Ok(receipt)) => {
                let phase = Phase::Sent {
                    by: meta.sequence,
                    provider: provider.clone(),
                    provider_message_id: receipt.provider_message_id.clone(),
                    at: Timestamp::now(),
                };
                self.finish(&ticket, delivery, phase).await;
                return Self::sent(meta, delivery, &provider, &receipt.provider_message_id);
            }
            Ok(Err(error)) if !error.retryable => {
                let detail = format!("{provider} refused it: {}", error.detail);
                self.finish(&ticket, delivery, failed(meta, &error.code, &detail)).await;
                return Self::event(meta, delivery, Status::Failed, error.code, detail);
            }
            Ok(Err(error)) => error,
            Err(_) => ProviderError {
                retryable: true,
                code: "provider_timeout".into(),
                detail: format!("no answer within {:?} (deliver.send_timeout)", self.config.send_timeout),
                retry_after: None,
            },
        };
        let detail = format!("{provider}: {}", error.detail);
        if meta.is_last_attempt() {
            // The runner dead-letters it now; `failed` lets a later replay through dedupe send it again.
            self.finish(&ticket, delivery, failed(meta, &error.code, &detail)).await;
        } else if let Err(e) = self.states.release(&ticket).await {
            warn!(error = %e, delivery_id = %delivery.delivery_id, "Could not release the delivery; the next attempt waits for its lease.");
        }
        let mut stage_error = StageError::transient(error.code, detail);
        stage_error.retry_after = error.retry_after;
        Err(stage_error)
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

fn failed(meta: &Meta, reason: &str, detail: &str) -> Phase {
    Phase::Failed { by: meta.sequence, reason: reason.to_owned(), detail: detail.to_owned(), at: Timestamp::now() }
}

impl<K: KeyValue> Stage for Deliver<K> {
    const NAME: &'static str = "deliver";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        if delivery.channel != self.channel {
            return Err(StageError::permanent(
                "wrong_channel",
                format!("a {} delivery reached the {} deliver consumer", delivery.channel, self.channel),
            ));
        }
        let Some(route) = self.providers.select(&delivery.tenant, delivery.channel) else {
            let detail = format!(
                "no provider serves channel `{}` for tenant `{}`; configure one under [deliver]",
                delivery.channel, delivery.tenant
            );
            return Self::event(meta, &delivery, Status::Failed, "no_provider", detail);
        };
        // Held until the outcome is written: bounds what a crash can leave in `sending`.
        let _permit = route.permit(delivery.priority).await.map_err(|e| StageError::outage("stopping", e.to_string()))?;
        let now = Timestamp::now();
        match self.states.begin(delivery.delivery_id, delivery.claim, meta.sequence, meta.attempt, self.config.lease(), now).await? {
            Begin::Send(ticket) => self.send(route, ticket, &delivery, meta).await,
            Begin::Sent { mine: true, provider, provider_message_id, .. } => Self::sent(meta, &delivery, &provider, &provider_message_id),
            Begin::Sent { mine: false, by, provider, provider_message_id } => {
                let detail = format!("already sent through {provider} as {provider_message_id} by message #{by}");
                Self::event(meta, &delivery, Status::Deduplicated, "already_sent", detail)
            }
            Begin::Failed { mine: true, reason, detail } => {
                // Reported again exactly as the first time (an expiry is recorded as a failure
                // so a replay may retry it, but it was reported as `expired`).
                let status = if reason == "expired" { Status::Expired } else { Status::Failed };
                Self::event(meta, &delivery, status, reason, detail)
            }
            Begin::Failed { mine: false, reason, .. } => {
                let detail = format!("already failed ({reason}); a replay through dedupe retries it");
                Self::event(meta, &delivery, Status::Deduplicated, "already_failed", detail)
            }
            Begin::Busy { until, by } => {
                let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default();
                let detail = format!("message #{by} is calling the provider; its lease runs until {until}");
                Err(StageError::outage("delivery_in_flight", detail).retry_after(wait))
            }
        }
    }
}

#[cfg(test)]
mod tests;
