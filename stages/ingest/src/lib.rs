//! Ingest: the front door.
//!
//! In: a producer's raw request from `herald.requests.<tenant>`.
//! Out: one [`Notification`] to enrich and an `accepted` event; or a `rejected` event with the
//! reason (never retried: a malformed request does not become valid by waiting); or a
//! `deduplicated` event when the idempotency key was already used.
//! Side effects: claims the producer's idempotency key in the idempotency bucket.
//! Invariants: the notification id is a pure function of the request's stream position, so a
//! redelivered request yields the same notification and the publish is deduped downstream by
//! `Nats-Msg-Id`. The idempotency key only admits or refuses a request: the claim and the
//! notification it admitted expire together, and a key reused after `idempotency_ttl` is a new
//! notification, delivered.

use bytes::Bytes;
use herald_schemas::ids;
use herald_schemas::{Notification, NotificationRequest, Status, ValidationError};
use herald_stage::{Created, EventBuilder, Hop, KeyValue, Meta, Outcome, RawRequest, Stage, StageError};

/// The ingest stage over an idempotency-key store.
#[derive(Debug)]
pub struct Ingest<K> {
    idempotency: K,
}

impl<K: KeyValue> Ingest<K> {
    pub fn new(idempotency: K) -> Self {
        Ingest { idempotency }
    }
}

impl<K: KeyValue> Stage for Ingest<K> {
    const NAME: &'static str = "ingest";
    type Input = RawRequest;

    async fn process(&self, RawRequest(body): RawRequest, meta: &Meta) -> Result<Outcome, StageError> {
        let request = match NotificationRequest::parse(&body).and_then(|r| check_timing(r, meta)) {
            Ok(request) => request,
            Err(ValidationError { code, detail }) => {
                let event = EventBuilder::request(Self::NAME, meta, Status::Rejected).reason(code, detail).build();
                return Outcome::new().event(event);
            }
        };
        let stored_at_ms = u64::try_from(meta.stored_at.as_millisecond()).unwrap_or_default();
        let notification = Notification {
            v: herald_schemas::WIRE_VERSION,
            notification_id: ids::notification_id(&meta.tenant, meta.sequence, stored_at_ms),
            tenant: meta.tenant.clone(),
            accepted_at: meta.stored_at,
            request,
        };
        if let Some(idempotency_key) = &notification.request.idempotency_key {
            // The claim holds the stream position of the request that made it: a redelivery of
            // that same request finds its own claim and goes on; any other request is a repeat.
            let key = format!("idem.{}", ids::idempotency_key_id(&meta.tenant, idempotency_key));
            let mine = Bytes::from(meta.sequence.to_string());
            match self.idempotency.create(&key, mine.clone()).await? {
                Created::Created(_) => {}
                Created::Exists(owner) if owner.value == mine => {}
                Created::Exists(owner) => {
                    let event = EventBuilder::request(Self::NAME, meta, Status::Deduplicated)
                        .reason(
                            "duplicate_idempotency_key",
                            format!(
                                "idempotency key {idempotency_key:?} already used by request #{} (within topology.idempotency_ttl)",
                                String::from_utf8_lossy(&owner.value),
                            ),
                        )
                        .build();
                    return Outcome::new().event(event);
                }
            }
        }
        let accepted = EventBuilder::notification(Self::NAME, meta, &notification, Status::Accepted).build();
        Outcome::new().forward(Hop::Enrich, &notification)?.event(accepted)
    }
}

/// Rules that depend on the clock: an already expired request, and scheduled sends (which this
/// version does not perform; rejecting says so instead of sending early).
fn check_timing(request: NotificationRequest, meta: &Meta) -> Result<NotificationRequest, ValidationError> {
    if let Some(expires_at) = request.expires_at
        && expires_at <= meta.received_at
    {
        return Err(ValidationError::new("expired", format!("`expires_at` {expires_at} is already past")));
    }
    if let Some(send_at) = request.send_at
        && send_at > meta.received_at
    {
        return Err(ValidationError::new(
            "scheduling_unsupported",
            format!(
                "`send_at` {send_at} is in the future and this version does not hold scheduled sends; send it at that time, or omit `send_at`"
            ),
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use herald_schemas::TrackEvent;
    use herald_stage::memory::MemoryKv;

    use super::*;

    async fn ingest(stage: &Ingest<MemoryKv>, body: &str, sequence: u64) -> Outcome {
        let meta = Meta { sequence, ..Meta::for_tests() };
        stage.process(RawRequest(Bytes::from(body.to_owned())), &meta).await.unwrap()
    }

    fn statuses(events: &[TrackEvent]) -> Vec<Status> {
        events.iter().map(|e| e.status).collect()
    }

    #[tokio::test]
    async fn a_valid_request_is_accepted_and_forwarded() {
        let stage = Ingest::new(MemoryKv::new());
        let out = ingest(&stage, r#"{"template":"welcome","recipients":[{"user_id":"alice"}]}"#, 7).await;
        let forwarded: Vec<Notification> = out.forwarded(Hop::Enrich);
        assert_eq!(forwarded.len(), 1);
        assert_eq!(forwarded[0].tenant, "acme");
        assert_eq!(statuses(&out.events()), vec![Status::Accepted]);
        assert_eq!(out.events()[0].notification_id, Some(forwarded[0].notification_id));
    }

    #[tokio::test]
    async fn the_same_message_gets_the_same_id_and_a_new_one_a_new_id() {
        let stage = Ingest::new(MemoryKv::new());
        let body = r#"{"template":"welcome","recipients":[{"user_id":"alice"}]}"#;
        let first: Vec<Notification> = ingest(&stage, body, 7).await.forwarded(Hop::Enrich);
        let again: Vec<Notification> = ingest(&stage, body, 7).await.forwarded(Hop::Enrich);
        let other: Vec<Notification> = ingest(&stage, body, 8).await.forwarded(Hop::Enrich);
        assert_eq!(first[0].notification_id, again[0].notification_id);
        assert_ne!(first[0].notification_id, other[0].notification_id);
    }

    #[tokio::test]
    async fn malformed_requests_are_rejected_with_a_reason() {
        let stage = Ingest::new(MemoryKv::new());
        let out = ingest(&stage, r#"{"template":"welcome"}"#, 3).await;
        assert!(out.forwarded::<Notification>(Hop::Enrich).is_empty());
        let events = out.events();
        assert_eq!(statuses(&events), vec![Status::Rejected]);
        assert_eq!(events[0].reason.as_deref(), Some("invalid_json"));
        assert!(events[0].detail.as_deref().unwrap_or_default().contains("recipients"));
    }

    #[tokio::test]
    async fn an_idempotency_key_admits_one_request_but_survives_redelivery() {
        let stage = Ingest::new(MemoryKv::new());
        let body = r#"{"template":"welcome","recipients":[{"user_id":"alice"}],"idempotency_key":"order-1"}"#;
        assert_eq!(statuses(&ingest(&stage, body, 10).await.events()), vec![Status::Accepted]);
        // The same message redelivered: still accepted (its own claim).
        assert_eq!(statuses(&ingest(&stage, body, 10).await.events()), vec![Status::Accepted]);
        // Another publish with the same key: a duplicate.
        let dup = ingest(&stage, body, 11).await;
        assert_eq!(statuses(&dup.events()), vec![Status::Deduplicated]);
        assert!(dup.forwarded::<Notification>(Hop::Enrich).is_empty());
    }

    #[tokio::test]
    async fn a_key_reused_after_its_claim_expired_is_a_new_notification() {
        let kv = MemoryKv::new();
        let stage = Ingest::new(kv.clone());
        let body = r#"{"template":"welcome","recipients":[{"user_id":"alice"}],"idempotency_key":"order-1"}"#;
        let first: Vec<Notification> = ingest(&stage, body, 10).await.forwarded(Hop::Enrich);
        // The bucket's max age passes: the claim is gone (a fresh bucket stands for that).
        let stage = Ingest::new(MemoryKv::new());
        let later: Vec<Notification> = ingest(&stage, body, 500).await.forwarded(Hop::Enrich);
        assert_eq!(later.len(), 1, "admitted again");
        assert_ne!(first[0].notification_id, later[0].notification_id, "a new notification, so its deliveries are new");
        assert_eq!(kv.len(), 1);
    }

    #[tokio::test]
    async fn a_store_outage_is_an_outage() {
        let kv = MemoryKv::new();
        kv.fail(true);
        let stage = Ingest::new(kv);
        let body = r#"{"template":"welcome","recipients":[{"user_id":"alice"}],"idempotency_key":"k"}"#;
        let err = stage.process(RawRequest(Bytes::from(body)), &Meta::for_tests()).await.unwrap_err();
        assert_eq!(err.kind, herald_stage::ErrorKind::Outage, "a store outage costs no attempt");
    }

    #[tokio::test]
    async fn clock_rules() {
        let stage = Ingest::new(MemoryKv::new());
        let past = r#"{"template":"t","recipients":[{"user_id":"a"}],"expires_at":"2000-01-01T00:00:00Z"}"#;
        assert_eq!(ingest(&stage, past, 1).await.events()[0].reason.as_deref(), Some("expired"));
        let future = r#"{"template":"t","recipients":[{"user_id":"a"}],"send_at":"2999-01-01T00:00:00Z"}"#;
        assert_eq!(ingest(&stage, future, 2).await.events()[0].reason.as_deref(), Some("scheduling_unsupported"));
    }
}
