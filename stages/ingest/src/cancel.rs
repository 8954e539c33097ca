//! Cancel: stops a scheduled or deferred notification before it is sent.
//!
//! In: a [`CancelRequest`] from `<prefix>.cancel.<tenant>`.
//! Out: one `cancelled` event for the notification.
//! Side effects: writes the marker `cancel.<tenant>.<notification>` in the dedupe bucket (kept
//! for the bucket's max age), then removes every scheduled copy of the notification from the
//! broker. Throttle reads the marker for every delivery that was scheduled or deferred, so a
//! copy that fired while the cancel was on its way ends as `cancelled` too.
//! Invariants: a cancel is idempotent (a second one re-reports the same event); it cannot stop
//! a delivery that already passed throttle, and says so.

use bytes::Bytes;
use herald_schemas::{CancelRequest, Status, Timestamp};
use herald_stage::{EventBuilder, KeyValue, Meta, Outcome, Scheduler, Stage, StageError, cancel_marker_key};
use serde::{Deserialize, Serialize};

/// The cancel stage.
#[derive(Debug)]
pub struct Cancel<K, S> {
    markers: K,
    scheduler: S,
}

impl<K: KeyValue, S: Scheduler> Cancel<K, S> {
    /// `markers` is the dedupe bucket (throttle reads the markers there).
    pub fn new(markers: K, scheduler: S) -> Self {
        Cancel { markers, scheduler }
    }
}

/// What a cancel marker records.
#[derive(Debug, Serialize, Deserialize)]
pub struct Marker {
    pub by: Option<String>,
    pub at: Timestamp,
}

impl<K: KeyValue, S: Scheduler> Stage for Cancel<K, S> {
    const NAME: &'static str = "cancel";
    type Input = CancelRequest;

    async fn process(&self, request: CancelRequest, meta: &Meta) -> Result<Outcome, StageError> {
        let marker = Marker { by: request.by.clone(), at: meta.received_at };
        // The marker first: a copy that fires between the two steps still finds it.
        self.markers.create(&cancel_marker_key(&meta.tenant, request.notification_id), Bytes::from(serde_json::to_vec(&marker)?)).await?;
        let removed = self.scheduler.cancel(&meta.tenant, request.notification_id).await?;
        let by = request.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
        let detail = format!(
            "cancelled{by}: {removed} scheduled cop{} removed; scheduled or deferred copies still on their way end as cancelled, deliveries already past throttle are not stopped",
            if removed == 1 { "y" } else { "ies" }
        );
        Outcome::new().event(
            EventBuilder::about(Self::NAME, meta, &meta.tenant, request.notification_id, Status::Cancelled)
                .reason("cancelled", detail)
                .build(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use herald_stage::PortError;
    use herald_stage::memory::MemoryKv;
    use uuid::Uuid;

    use super::*;

    #[derive(Default)]
    struct Schedules(Mutex<Vec<(String, Uuid)>>);

    impl Scheduler for Schedules {
        async fn cancel(&self, tenant: &str, notification: Uuid) -> Result<u64, PortError> {
            self.0.lock().unwrap().push((tenant.to_owned(), notification));
            Ok(2)
        }
    }

    #[tokio::test]
    async fn marks_removes_and_reports() {
        let kv = MemoryKv::new();
        let stage = Cancel::new(kv.clone(), Schedules::default());
        let id = Uuid::from_u128(7);
        let request = CancelRequest { v: 1, notification_id: id, by: Some("ops".into()) };
        let out = stage.process(request.clone(), &Meta::for_tests()).await.unwrap();
        let events = out.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].status, Status::Cancelled);
        assert_eq!(events[0].notification_id, Some(id));
        assert!(events[0].detail.as_deref().unwrap().contains("2 scheduled copies removed"));
        assert!(kv.value(&cancel_marker_key("acme", id)).is_some(), "the marker is written");
        assert_eq!(stage.scheduler.0.lock().unwrap().as_slice(), &[("acme".to_owned(), id)]);
        // Idempotent: the same cancel again reports the same event.
        let again = stage.process(request, &Meta::for_tests()).await.unwrap();
        assert_eq!(again.events()[0].event_id, events[0].event_id);
    }
}
