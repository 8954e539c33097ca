//! Dedupe: a delivery goes out once, however often it arrives.
//!
//! In: a rendered [`Delivery`].
//! Out: the delivery to throttle when this message holds its claim; otherwise a
//! `deduplicated` event (a replay, or a second notification with the same delivery id).
//! Side effects: claims the delivery's state in the dedupe bucket (see [`state`]; the bucket's
//! max age is the claim's lifetime). A delivery carrying a producer dedupe key first claims
//! `key.<id>` for (tenant, key, user, channel, address) until its window ends: another delivery
//! under the same key within the window is `deduplicated` with reason `dedupe_key`.
//! Invariants: the claim remembers the stream sequence of the message that won it, so the
//! same message redelivered after a crash finds its own claim and goes on, while any other
//! copy is dropped. A delivery whose state is `failed` may be claimed again: that is how a
//! replay retries what failed.

pub mod state;

use bytes::Bytes;
use herald_schemas::{Delivery, Status, Timestamp};
use herald_stage::{Created, EventBuilder, Hop, KeyValue, Meta, Outcome, Stage, StageError, Swapped};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use state::{Begin, Claim, DeliveryState, Finished, Phase, States, Ticket};

/// The dedupe stage over the delivery states.
#[derive(Debug)]
pub struct Dedupe<K> {
    states: States<K>,
}

impl<K: KeyValue> Dedupe<K> {
    pub fn new(kv: K) -> Self {
        Dedupe { states: States::new(kv) }
    }
}

impl<K: KeyValue> Stage for Dedupe<K> {
    const NAME: &'static str = "dedupe";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        if let Some(holder) = self.producer_key(&delivery, meta).await? {
            let detail = format!(
                "dedupe key {:?} is held for this recipient by delivery {} until its window ends (the first delivery under a key holds it, whatever becomes of it)",
                delivery.dedupe.as_ref().map(|d| d.key.as_str()).unwrap_or_default(),
                holder
            );
            return Outcome::new()
                .event(EventBuilder::delivery(Self::NAME, meta, &delivery, Status::Deduplicated).reason("dedupe_key", detail).build());
        }
        match self.states.claim(delivery.delivery_id, meta.sequence).await? {
            Claim::Won(claim) => Outcome::new().forward(Hop::Throttle, &Delivery { claim, ..delivery }),
            Claim::Taken(state) => {
                let detail = match state.phase {
                    Phase::Sent { provider, provider_message_id, .. } => {
                        format!("already sent through {provider} as {provider_message_id}")
                    }
                    _ if state.claim == 0 => "already being delivered".to_owned(),
                    _ => format!("already claimed by message #{}", state.claim),
                };
                Outcome::new().event(
                    EventBuilder::delivery(Self::NAME, meta, &delivery, Status::Deduplicated).reason("duplicate_delivery", detail).build(),
                )
            }
        }
    }
}

/// Who holds a producer dedupe key, and until when.
#[derive(Debug, Serialize, Deserialize)]
struct KeyClaim {
    delivery: Uuid,
    until: Timestamp,
}

impl<K: KeyValue> Dedupe<K> {
    /// Claims the delivery's producer dedupe key, if it has one. Returns the delivery holding it
    /// when that is another one whose window has not ended.
    async fn producer_key(&self, delivery: &Delivery, meta: &Meta) -> Result<Option<Uuid>, StageError> {
        let Some(dedupe) = &delivery.dedupe else { return Ok(None) };
        let scope = format!(
            "{}\0{}\0{}\0{}\0{}",
            delivery.tenant,
            dedupe.key,
            delivery.user_id.as_deref().unwrap_or_default(),
            delivery.channel,
            delivery.address
        );
        let key = format!("key.{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, scope.as_bytes()));
        let window = jiff::SignedDuration::from_secs(i64::try_from(dedupe.window_secs).unwrap_or(i64::MAX));
        let until = meta.received_at.checked_add(window).unwrap_or(Timestamp::MAX);
        let mine = Bytes::from(serde_json::to_vec(&KeyClaim { delivery: delivery.delivery_id, until })?);
        for _ in 0..state::MAX_CONFLICTS {
            let entry = match self.states.kv().create(&key, mine.clone()).await? {
                Created::Created(_) => return Ok(None),
                Created::Exists(entry) => entry,
            };
            let held: KeyClaim = serde_json::from_slice(&entry.value)
                .map_err(|e| StageError::permanent("store_decode_failed", format!("dedupe key {key} holds {e}")))?;
            if held.delivery == delivery.delivery_id {
                return Ok(None);
            }
            if held.until > meta.received_at {
                return Ok(Some(held.delivery));
            }
            match self.states.kv().swap(&key, mine.clone(), entry.revision).await? {
                Swapped::Done(_) => return Ok(None),
                Swapped::Conflict => continue,
            }
        }
        Err(StageError::transient("store_contention", format!("dedupe key {key} kept changing under this message")))
    }
}

#[cfg(test)]
mod tests {
    use herald_stage::memory::{MemoryKv, delivery};

    use super::*;

    /// (delivery id, message sequence) → passes?
    async fn check(stage: &Dedupe<MemoryKv>, id: u128, sequence: u64, passes: bool) {
        let meta = Meta { sequence, ..Meta::for_tests() };
        let out = stage.process(delivery(id), &meta).await.unwrap();
        assert_eq!(out.forwarded::<Delivery>(Hop::Throttle).len() == 1, passes, "delivery {id} seq {sequence}");
        if !passes {
            assert_eq!(out.events()[0].status, Status::Deduplicated);
        }
    }

    #[tokio::test]
    async fn one_claim_per_delivery() {
        let stage = Dedupe::new(MemoryKv::new());
        check(&stage, 1, 100, true).await; // first arrival
        check(&stage, 1, 100, true).await; // same message redelivered after a crash
        check(&stage, 1, 250, false).await; // a replayed copy
        check(&stage, 2, 101, true).await; // another delivery
    }

    #[tokio::test]
    async fn a_producer_dedupe_key_lets_one_delivery_per_recipient_through_per_window() {
        let stage = Dedupe::new(MemoryKv::new());
        let keyed = |id: u128, address: &str| Delivery {
            address: address.into(),
            dedupe: Some(herald_schemas::DedupeKey { key: "order-1".into(), window_secs: 600 }),
            ..delivery(id)
        };
        let meta = Meta { sequence: 1, ..Meta::for_tests() };
        let passes = |out: &Outcome| out.forwarded::<Delivery>(Hop::Throttle).len() == 1;
        assert!(passes(&stage.process(keyed(1, "user:alice"), &meta).await.unwrap()));
        assert!(passes(&stage.process(keyed(1, "user:alice"), &meta).await.unwrap()), "its own redelivery");
        let second = stage.process(keyed(2, "user:alice"), &Meta { sequence: 2, ..meta.clone() }).await.unwrap();
        assert!(!passes(&second));
        assert_eq!(second.events()[0].reason.as_deref(), Some("dedupe_key"));
        assert!(passes(&stage.process(keyed(3, "user:bob"), &Meta { sequence: 3, ..meta.clone() }).await.unwrap()), "another recipient");
        // After the window, the key admits again.
        let later = Meta { sequence: 4, received_at: meta.received_at + jiff::SignedDuration::from_secs(601), ..meta.clone() };
        assert!(passes(&stage.process(keyed(4, "user:alice"), &later).await.unwrap()));
    }

    #[tokio::test]
    async fn a_store_outage_is_retried_not_dropped() {
        let kv = MemoryKv::new();
        kv.fail(true);
        let err = Dedupe::new(kv).process(delivery(1), &Meta::for_tests()).await.unwrap_err();
        assert_eq!(err.kind, herald_stage::ErrorKind::Outage, "a store outage costs no attempt");
    }
}
