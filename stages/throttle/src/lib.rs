//! Throttle: decides whether and when a delivery may go out.
//!
//! In: a claimed [`Delivery`] from dedupe.
//! Out: the delivery to its channel's deliver consumer; or `expired` when its `expires_at` has
//! passed (a late notification that no longer matters is dropped with an event, not sent).
//! Side effects: none yet. Frequency caps, quiet hours and provider rates arrive with the
//! throttle capability and will live here.

use herald_schemas::{Delivery, Status};
use herald_stage::{EventBuilder, Hop, Meta, Outcome, Stage, StageError};

/// The throttle stage.
#[derive(Debug, Default)]
pub struct Throttle;

impl Stage for Throttle {
    const NAME: &'static str = "throttle";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        if let Some(expires_at) = delivery.expires_at
            && expires_at <= meta.received_at
        {
            let detail = format!("expired at {expires_at}, before it could be sent");
            return Outcome::new()
                .event(EventBuilder::delivery(Self::NAME, meta, &delivery, Status::Expired).reason("expired", detail).build());
        }
        Outcome::new().forward(Hop::Deliver(delivery.channel), &delivery)
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn delivery(expires_at: Option<jiff::Timestamp>) -> Delivery {
        Delivery { channel: Channel::Email, address: "alice@example.com".into(), expires_at, ..herald_stage::memory::delivery(2) }
    }

    #[tokio::test]
    async fn routes_by_channel_and_drops_the_expired() {
        let meta = Meta::for_tests();
        let live = Throttle.process(delivery(None), &meta).await.unwrap();
        assert_eq!(live.forwarded::<Delivery>(Hop::Deliver(Channel::Email)).len(), 1);
        let future = jiff::Timestamp::from_second(meta.received_at.as_second() + 60).unwrap();
        assert_eq!(
            Throttle.process(delivery(Some(future)), &meta).await.unwrap().forwarded::<Delivery>(Hop::Deliver(Channel::Email)).len(),
            1
        );
        let past = jiff::Timestamp::from_second(meta.received_at.as_second() - 60).unwrap();
        let dropped = Throttle.process(delivery(Some(past)), &meta).await.unwrap();
        assert!(dropped.forwarded::<Delivery>(Hop::Deliver(Channel::Email)).is_empty());
        assert_eq!(dropped.events()[0].status, Status::Expired);
    }
}
