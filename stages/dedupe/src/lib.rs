//! Dedupe: a delivery goes out once, however often it arrives.
//!
//! In: a rendered [`Delivery`].
//! Out: the delivery to throttle when this message holds its claim; otherwise a
//! `deduplicated` event (a replay, or a second notification with the same delivery id).
//! Side effects: claims the delivery's state in the dedupe bucket (see [`state`]; the bucket's
//! max age is the claim's lifetime).
//! Invariants: the claim remembers the stream sequence of the message that won it, so the
//! same message redelivered after a crash finds its own claim and goes on, while any other
//! copy is dropped. A delivery whose state is `failed` may be claimed again: that is how a
//! replay retries what failed.

pub mod state;

use herald_schemas::{Delivery, Status};
use herald_stage::{EventBuilder, Hop, KeyValue, Meta, Outcome, Stage, StageError};

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
