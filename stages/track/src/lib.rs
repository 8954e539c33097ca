//! Track: the single writer of the tracking stream.
//!
//! In: stage events from every stage (`<prefix>.stage.track.<tenant>`).
//! Out: each event on the public tracking stream, `<prefix>.events.<tenant>.<status>`, where
//! analysts and operators read it. Published with `Nats-Msg-Id = <event_id>:track`, so an event
//! reported twice (a redelivered stage message re-reports with the same deterministic id)
//! appears once.
//! Provider receipts are read by [`receipts`], the stage beside this one; bounces, opens,
//! clicks and the notification log join here with the tracking capability. [`stats`] folds
//! events into the figures `herald stats` prints.

pub mod receipts;
pub mod stats;

pub use receipts::{DeliveryArchive, Receipts, ReceiptsConfig, RedialPolicy, Suppression, Suppressions};

use herald_schemas::{Status, TrackEvent};
use herald_stage::{Hop, Meta, Outcome, Stage, StageError};

/// The track stage.
#[derive(Debug, Default)]
pub struct Track;

impl Stage for Track {
    const NAME: &'static str = "track";
    type Input = TrackEvent;

    async fn process(&self, event: TrackEvent, _meta: &Meta) -> Result<Outcome, StageError> {
        metrics::counter!("herald_events_total", "status" => event.status.as_str()).increment(1);
        if is_drop(event.status) {
            let reason = event.reason.clone().unwrap_or_else(|| "-".to_owned());
            metrics::counter!("herald_dropped_total", "stage" => event.stage.clone(), "status" => event.status.as_str(), "reason" => reason)
                .increment(1);
        }
        let mut outcome = Outcome::new();
        outcome.push(Hop::Events, &event, Some(event.status.as_str().to_owned()))?;
        Ok(outcome)
    }
}

/// What `herald_dropped_total` counts: an event ending a request or delivery unsent, or a
/// repeat absorbed.
fn is_drop(status: Status) -> bool {
    status.ends_unsent() || status == Status::Deduplicated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_under_the_status() {
        let event = TrackEvent {
            v: 1,
            event_id: uuid::Uuid::from_u128(9),
            notification_id: None,
            delivery_id: None,
            tenant: "acme".into(),
            user_id: None,
            channel: None,
            status: Status::Rejected,
            reason: Some("invalid_json".into()),
            detail: None,
            original_notification_id: None,
            scheduled_for: None,
            deferred_until: None,
            template: None,
            category: None,
            provider: None,
            provider_message_id: None,
            stage: "ingest".into(),
            attempt: 1,
            at: jiff::Timestamp::UNIX_EPOCH,
        };
        let out = Track.process(event.clone(), &Meta::for_tests()).await.unwrap();
        assert_eq!(out.emits.len(), 1);
        assert_eq!(out.emits[0].hop, Hop::Events);
        assert_eq!(out.emits[0].suffix.as_deref(), Some("rejected"));
        assert_eq!(out.emits[0].key, event.event_id);
        assert_eq!(out.events(), vec![event]);
    }
}
