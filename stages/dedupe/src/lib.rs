//! Dedupe: a delivery goes out once, however often it arrives.
//!
//! In: a rendered [`Delivery`].
//! Out: the delivery to throttle when this message holds its claim; otherwise a
//! `deduplicated` event (a replay, or a second notification with the same delivery id).
//! Side effects: claims `claim.<delivery_id>` in the dedupe bucket (put-if-absent; the bucket's
//! max age is the claim's lifetime).
//! Invariants: the claim's value is the stream sequence of the message that won it, so the
//! same message redelivered after a crash finds its own claim and goes on, while any other
//! copy (a replay is a new message with a new sequence) is dropped.

use bytes::Bytes;
use herald_schemas::{Delivery, Status};
use herald_stage::{Created, EventBuilder, Hop, KeyValue, Meta, Outcome, Stage, StageError};

/// The dedupe stage over a claim store.
#[derive(Debug)]
pub struct Dedupe<K> {
    claims: K,
}

impl<K: KeyValue> Dedupe<K> {
    pub fn new(claims: K) -> Self {
        Dedupe { claims }
    }
}

impl<K: KeyValue> Stage for Dedupe<K> {
    const NAME: &'static str = "dedupe";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        let key = format!("claim.{}", delivery.delivery_id);
        let mine = Bytes::from(meta.sequence.to_string());
        match self.claims.create(&key, mine.clone()).await? {
            Created::Created => Outcome::new().forward(Hop::Throttle, &delivery),
            Created::Exists(owner) if owner == mine => Outcome::new().forward(Hop::Throttle, &delivery),
            Created::Exists(owner) => {
                let detail = format!("delivery already claimed by message #{}", String::from_utf8_lossy(&owner));
                Outcome::new().event(
                    EventBuilder::delivery(Self::NAME, meta, &delivery, Status::Deduplicated).reason("duplicate_delivery", detail).build(),
                )
            }
        }
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
    async fn a_store_outage_is_retried_not_dropped() {
        let kv = MemoryKv::new();
        kv.fail(true);
        let err = Dedupe::new(kv).process(delivery(1), &Meta::for_tests()).await.unwrap_err();
        assert_eq!(err.kind, herald_stage::ErrorKind::Outage, "a store outage costs no attempt");
    }
}
