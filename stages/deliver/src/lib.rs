//! Deliver: hands each delivery to its channel's provider, once.
//!
//! In: a [`Delivery`] from throttle, on its channel's own consumer (a provider outage stalls
//! only that channel).
//! Out: `sent` with the provider's message id; `failed` for a permanent provider rejection;
//! `expired` when it expired while waiting. A retryable provider error is a transient stage error:
//! the runner retries it with backoff and dead-letters it after the last attempt.
//! Side effects: the provider call; `sent.<delivery_id>` in the dedupe bucket after it succeeds.
//! Invariants: a redelivered message whose delivery is marked sent is not sent again. The only
//! window left is a crash between the provider's answer and the marker write; there the
//! delivery is sent again with the same idempotency key (the delivery id), which providers that
//! honour one (the log sandbox does) turn into a no-op.

pub mod log;

use std::future::Future;

use bytes::Bytes;
use herald_schemas::{Channel, Delivery, Status};
use herald_stage::{EventBuilder, KeyValue, Meta, Outcome, Stage, StageError};

pub use log::{DUPLICATES_FILE, LogSink};

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

/// A channel's provider.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name for events and metrics, e.g. `apns` or `log`.
    fn name(&self) -> &str;

    /// Sends one delivery. `delivery.delivery_id` is the idempotency key.
    fn send(&self, delivery: &Delivery) -> impl Future<Output = Result<Receipt, ProviderError>> + Send;
}

/// The deliver stage for one channel.
#[derive(Debug)]
pub struct Deliver<P, K> {
    channel: Channel,
    provider: P,
    markers: K,
}

impl<P: Provider, K: KeyValue> Deliver<P, K> {
    pub fn new(channel: Channel, provider: P, markers: K) -> Self {
        Deliver { channel, provider, markers }
    }

    fn sent(&self, meta: &Meta, delivery: &Delivery, provider_message_id: &str) -> Result<Outcome, StageError> {
        let event = EventBuilder::delivery(Self::NAME, meta, delivery, Status::Sent)
            .reason("provider_accepted", format!("{} accepted it as {provider_message_id}", self.provider.name()))
            .build();
        Outcome::new().event(event)
    }
}

impl<P: Provider, K: KeyValue> Stage for Deliver<P, K> {
    const NAME: &'static str = "deliver";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        if delivery.channel != self.channel {
            return Err(StageError::permanent(
                "wrong_channel",
                format!("a {} delivery reached the {} deliver consumer", delivery.channel, self.channel),
            ));
        }
        let marker = format!("sent.{}", delivery.delivery_id);
        // A first delivery cannot have been sent before: dedupe admitted it once. Only a
        // redelivery needs to ask.
        if meta.attempt > 1
            && let Some(id) = self.markers.get(&marker).await?
        {
            return self.sent(meta, &delivery, &String::from_utf8_lossy(&id));
        }
        if let Some(expires_at) = delivery.expires_at
            && expires_at <= meta.received_at
        {
            let event = EventBuilder::delivery(Self::NAME, meta, &delivery, Status::Expired)
                .reason("expired", format!("expired at {expires_at} while waiting for the provider"))
                .build();
            return Outcome::new().event(event);
        }
        match self.provider.send(&delivery).await {
            Ok(receipt) => {
                self.markers.put(&marker, Bytes::from(receipt.provider_message_id.clone())).await?;
                self.sent(meta, &delivery, &receipt.provider_message_id)
            }
            Err(error) if error.retryable => {
                let mut stage_error = StageError::transient(error.code, format!("{}: {}", self.provider.name(), error.detail));
                stage_error.retry_after = error.retry_after;
                Err(stage_error)
            }
            Err(error) => {
                let event = EventBuilder::delivery(Self::NAME, meta, &delivery, Status::Failed)
                    .reason(error.code, format!("{} refused it: {}", self.provider.name(), error.detail))
                    .build();
                Outcome::new().event(event)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use herald_stage::memory::MemoryKv;

    use super::*;

    /// A provider that answers from a script and counts its calls.
    struct Scripted {
        answers: Mutex<Vec<Result<Receipt, ProviderError>>>,
        calls: Mutex<u32>,
    }

    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        async fn send(&self, _delivery: &Delivery) -> Result<Receipt, ProviderError> {
            *self.calls.lock().unwrap() += 1;
            self.answers.lock().unwrap().remove(0)
        }
    }

    fn delivery() -> Delivery {
        herald_stage::memory::delivery(2)
    }

    fn scripted(answers: Vec<Result<Receipt, ProviderError>>) -> Scripted {
        Scripted { answers: Mutex::new(answers), calls: Mutex::new(0) }
    }

    fn ok(id: &str) -> Result<Receipt, ProviderError> {
        Ok(Receipt { provider_message_id: id.into(), duplicate: false })
    }

    fn refused(retryable: bool) -> Result<Receipt, ProviderError> {
        Err(ProviderError {
            retryable,
            code: if retryable { "unavailable" } else { "bad_address" }.into(),
            detail: "no".into(),
            retry_after: None,
        })
    }

    #[tokio::test]
    async fn sends_and_marks() {
        let kv = MemoryKv::new();
        let stage = Deliver::new(Channel::Log, scripted(vec![ok("m-1")]), kv.clone());
        let out = stage.process(delivery(), &Meta::for_tests()).await.unwrap();
        assert_eq!(out.events()[0].status, Status::Sent);
        assert_eq!(kv.get("sent.00000000-0000-0000-0000-000000000002").await.unwrap().as_deref(), Some(&b"m-1"[..]));
    }

    #[tokio::test]
    async fn a_redelivery_of_a_sent_delivery_is_not_sent_again() {
        let kv = MemoryKv::new();
        let stage = Deliver::new(Channel::Log, scripted(vec![ok("m-1")]), kv);
        stage.process(delivery(), &Meta::for_tests()).await.unwrap();
        let again = stage.process(delivery(), &Meta { attempt: 2, ..Meta::for_tests() }).await.unwrap();
        assert_eq!(again.events()[0].status, Status::Sent);
        assert_eq!(*stage.provider.calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn errors_are_classified() {
        let stage = Deliver::new(Channel::Log, scripted(vec![refused(true), refused(false)]), MemoryKv::new());
        let err = stage.process(delivery(), &Meta::for_tests()).await.unwrap_err();
        assert!(err.is_transient());
        assert_eq!(err.reason, "unavailable");
        let out = stage.process(delivery(), &Meta::for_tests()).await.unwrap();
        assert_eq!(out.events()[0].status, Status::Failed);
        assert_eq!(out.events()[0].reason.as_deref(), Some("bad_address"));
    }
}
