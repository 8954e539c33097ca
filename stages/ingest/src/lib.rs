//! Ingest: the front door.
//!
//! In: a producer's raw request from `herald.requests.<tenant>`.
//! Out: one [`Notification`] to enrich and an `accepted` event; with a future `send_at`, the
//! notification is handed to the broker's scheduler for that instant instead (a `scheduled`
//! event; enrich sees it then, so recipients resolve at send time); or a `rejected` event with
//! the reason (never retried: a malformed request does not become valid by waiting); or a
//! `deduplicated` event naming the original notification when the idempotency key was already
//! used for the same request, `rejected`/`idempotency_conflict` when for a different one.
//! Side effects: claims the producer's idempotency key in the idempotency bucket, recording
//! the notification it admitted and the request's fingerprint; writes inline attachments that
//! together exceed `attachments.inline_max` to the attachment store (the claim check), so the
//! notification carries only their keys.
//! Invariants: the notification id is a pure function of the request's stream position, so a
//! redelivered request yields the same notification and the publish is deduped downstream by
//! `Nats-Msg-Id`. The idempotency key only admits or refuses a request: the claim and the
//! notification it admitted expire together, and a key reused after `idempotency_ttl` is a new
//! notification, delivered.

pub mod cancel;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use herald_attachments::{AttachmentError, Attachments};
use herald_schemas::ids;
use herald_schemas::{Notification, NotificationRequest, Status, Timestamp, ValidationError};
use herald_stage::{Created, EventBuilder, Hop, KeyValue, Meta, Outcome, RawRequest, Stage, StageError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use cancel::Cancel;

const STAGE: &str = "ingest";

/// `attachments.inline_max` when ingest runs without a store.
const DEFAULT_INLINE_MAX: u64 = 64 * 1024;

/// The ingest stage over an idempotency-key store.
#[derive(Debug)]
pub struct Ingest<K> {
    idempotency: K,
    horizon: Duration,
    /// Where inline attachments over `inline_max` go (the claim check).
    attachments: Option<Attachments>,
}

/// What an idempotency key's claim records.
#[derive(Debug, Serialize, Deserialize)]
struct KeyClaim {
    /// The stream sequence of the request that made it (its own redelivery goes on).
    seq: u64,
    /// The notification it admitted.
    notification: Uuid,
    /// The admitted request's fingerprint.
    fingerprint: Uuid,
}

impl<K: KeyValue> Ingest<K> {
    pub fn new(idempotency: K) -> Self {
        Ingest { idempotency, horizon: Duration::from_secs(7 * 24 * 3600), attachments: None }
    }

    /// Stores inline attachments that together exceed the store's `inline_max` there, so only
    /// their keys travel on. Without a store, such requests are rejected.
    pub fn with_attachments(mut self, attachments: Attachments) -> Self {
        self.attachments = Some(attachments);
        self
    }

    /// The claim check: decodes the inline attachments and, when together they exceed
    /// `inline_max`, writes each to the store under `inline/<notification>/<index>` (the same key
    /// on a redelivery) and replaces its content by the key. `Ok(Err)` rejects the request.
    async fn claim_check(
        &self,
        tenant: &str,
        id: Uuid,
        mut request: NotificationRequest,
    ) -> Result<Result<NotificationRequest, ValidationError>, StageError> {
        let mut decoded = Vec::new();
        for (i, attachment) in request.attachments.iter_mut().enumerate() {
            let Some(content) = &attachment.content else { continue };
            match base64::engine::general_purpose::STANDARD.decode(content) {
                Ok(bytes) => {
                    attachment.size = Some(bytes.len() as u64);
                    decoded.push((i, bytes));
                }
                Err(e) => {
                    let detail = format!("attachments[{i}] ({}): `content` is not base64 ({e})", attachment.filename);
                    return Ok(Err(ValidationError::new("invalid_attachment", detail)));
                }
            }
        }
        let total: u64 = decoded.iter().map(|(_, b)| b.len() as u64).sum();
        let inline_max = self.attachments.as_ref().map_or(DEFAULT_INLINE_MAX, |a| a.config().inline_max);
        if total <= inline_max {
            return Ok(Ok(request));
        }
        let Some(store) = &self.attachments else {
            let detail = format!("the inline attachments are {total} bytes, over {inline_max}, and this ingest has no attachment store");
            return Ok(Err(ValidationError::new("attachments_unavailable", detail)));
        };
        for (i, bytes) in decoded {
            let key = format!("inline/{id}/{i}");
            match store.put(tenant, &key, bytes.into()).await {
                Ok(_) => {
                    let attachment = &mut request.attachments[i];
                    attachment.reference = Some(key);
                    attachment.content = None;
                }
                Err(e @ (AttachmentError::TooLarge { .. } | AttachmentError::Invalid(_))) => {
                    let name = &request.attachments[i].filename;
                    return Ok(Err(ValidationError::new("invalid_attachment", format!("attachments[{i}] ({name}): {e}"))));
                }
                Err(e) => return Err(StageError::outage("attachment_store_unavailable", e.to_string())),
            }
        }
        Ok(Ok(request))
    }

    /// How far ahead `send_at` may be: less than the streams keep a message (`topology.max_age`),
    /// or the scheduled copy would age out before it fires.
    pub fn with_schedule_horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }
}

impl<K: KeyValue> Stage for Ingest<K> {
    const NAME: &'static str = STAGE;
    type Input = RawRequest;

    async fn process(&self, RawRequest(body): RawRequest, meta: &Meta) -> Result<Outcome, StageError> {
        let request = match NotificationRequest::parse(&body).and_then(|r| check_timing(r, meta, self.horizon)) {
            Ok(request) => request,
            Err(ValidationError { code, detail }) => {
                let event = EventBuilder::request(Self::NAME, meta, Status::Rejected).reason(code, detail).build();
                return Outcome::new().event(event);
            }
        };
        let stored_at_ms = u64::try_from(meta.stored_at.as_millisecond()).unwrap_or_default();
        let mut notification = Notification {
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
            let fingerprint = notification.request.fingerprint();
            let claim = KeyClaim { seq: meta.sequence, notification: notification.notification_id, fingerprint };
            if let Created::Exists(owner) = self.idempotency.create(&key, Bytes::from(serde_json::to_vec(&claim)?)).await? {
                // A claim from before claims recorded their notification holds only a sequence.
                let held: Option<KeyClaim> = serde_json::from_slice(&owner.value).ok();
                let own = match &held {
                    Some(held) => held.seq == meta.sequence,
                    None => owner.value == meta.sequence.to_string().as_bytes(),
                };
                if !own {
                    return Outcome::new().event(repeat(meta, &notification, idempotency_key, held.as_ref(), fingerprint));
                }
            }
        }
        // Only after the key admitted it: a repeat stores nothing.
        notification.request = match self.claim_check(&meta.tenant, notification.notification_id, notification.request).await? {
            Ok(request) => request,
            Err(ValidationError { code, detail }) => {
                let event = EventBuilder::request(Self::NAME, meta, Status::Rejected).reason(code, detail).build();
                return Outcome::new().event(event);
            }
        };
        let accepted = EventBuilder::notification(Self::NAME, meta, &notification, Status::Accepted).build();
        match notification.request.send_at.filter(|at| *at > meta.received_at) {
            Some(send_at) => {
                let scheduled = EventBuilder::notification(Self::NAME, meta, &notification, Status::Scheduled)
                    .scheduled_for(send_at)
                    .reason("send_at", format!("held by the broker until {send_at}; `herald cancel` stops it until then"))
                    .build();
                Outcome::new().defer(Hop::Enrich, &notification, send_at)?.event(accepted)?.event(scheduled)
            }
            None => Outcome::new().forward(Hop::Enrich, &notification)?.event(accepted),
        }
    }
}

/// The answer to a request whose idempotency key another request already used: `deduplicated`
/// naming the original notification when it is the same request, `rejected` when it is not.
fn repeat(meta: &Meta, notification: &Notification, key: &str, held: Option<&KeyClaim>, fingerprint: Uuid) -> herald_schemas::TrackEvent {
    let builder = |status| EventBuilder::notification(STAGE, meta, notification, status);
    match held {
        Some(held) if held.fingerprint != fingerprint => builder(Status::Rejected)
            .original(held.notification)
            .reason(
                "idempotency_conflict",
                format!(
                    "idempotency key {key:?} was used for notification {} with a different request; use a new key for a new request",
                    held.notification
                ),
            )
            .build(),
        Some(held) => builder(Status::Deduplicated)
            .original(held.notification)
            .reason("duplicate_idempotency_key", format!("idempotency key {key:?} already admitted notification {}", held.notification))
            .build(),
        None => builder(Status::Deduplicated)
            .reason("duplicate_idempotency_key", format!("idempotency key {key:?} was already used (within topology.idempotency_ttl)"))
            .build(),
    }
}

/// Rules that depend on the clock: an already expired request, and a `send_at` further ahead
/// than the streams keep messages.
fn check_timing(request: NotificationRequest, meta: &Meta, horizon: Duration) -> Result<NotificationRequest, ValidationError> {
    if let Some(expires_at) = request.expires_at
        && expires_at <= meta.received_at
    {
        return Err(ValidationError::new("expired", format!("`expires_at` {expires_at} is already past")));
    }
    let latest = jiff::SignedDuration::try_from(horizon).ok().and_then(|h| meta.received_at.checked_add(h).ok()).unwrap_or(Timestamp::MAX);
    if let Some(send_at) = request.send_at
        && send_at > latest
    {
        return Err(ValidationError::new(
            "send_at_too_far",
            format!(
                "`send_at` {send_at} is more than {:#} ahead (topology.max_age less an hour); schedule it closer to the time",
                jiff::SignedDuration::try_from(horizon).unwrap_or(jiff::SignedDuration::MAX)
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
        // Another publish with the same key: a duplicate, naming the original notification.
        let original: Vec<Notification> = ingest(&stage, body, 10).await.forwarded(Hop::Enrich);
        let dup = ingest(&stage, body, 11).await;
        assert_eq!(statuses(&dup.events()), vec![Status::Deduplicated]);
        assert_eq!(dup.events()[0].original_notification_id, Some(original[0].notification_id));
        assert!(dup.forwarded::<Notification>(Hop::Enrich).is_empty());
        // The same key with another request: a conflict, refused.
        let other = r#"{"template":"welcome","recipients":[{"user_id":"bob"}],"idempotency_key":"order-1"}"#;
        let conflict = ingest(&stage, other, 12).await;
        assert_eq!(statuses(&conflict.events()), vec![Status::Rejected]);
        assert_eq!(conflict.events()[0].reason.as_deref(), Some("idempotency_conflict"));
        assert!(conflict.forwarded::<Notification>(Hop::Enrich).is_empty());
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
        let far = r#"{"template":"t","recipients":[{"user_id":"a"}],"send_at":"2999-01-01T00:00:00Z"}"#;
        assert_eq!(ingest(&stage, far, 2).await.events()[0].reason.as_deref(), Some("send_at_too_far"));
    }

    #[tokio::test]
    async fn a_future_send_at_is_scheduled_with_the_broker() {
        let stage = Ingest::new(MemoryKv::new());
        let send_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let body = format!(r#"{{"template":"t","recipients":[{{"user_id":"a"}}],"send_at":"{send_at}"}}"#);
        let out = ingest(&stage, &body, 3).await;
        assert!(out.forwarded::<Notification>(Hop::Enrich).is_empty(), "not to enrich now");
        let deferred: Vec<(Notification, jiff::Timestamp)> = out.deferred(Hop::Enrich);
        assert_eq!(deferred.len(), 1, "handed to the scheduler, not to enrich now");
        assert_eq!(deferred[0].1, send_at);
        assert_eq!(statuses(&out.events()), vec![Status::Accepted, Status::Scheduled]);
        assert_eq!(out.events()[1].scheduled_for, Some(send_at));
        // A `send_at` in the past is sent now.
        let past = r#"{"template":"t","recipients":[{"user_id":"a"}],"send_at":"2020-01-01T00:00:00Z"}"#;
        let now = ingest(&stage, past, 4).await;
        assert!(now.deferred::<Notification>(Hop::Enrich).is_empty());
        assert_eq!(now.forwarded::<Notification>(Hop::Enrich).len(), 1);
    }

    fn with_inline(size: usize, extra: &str) -> String {
        use base64::Engine as _;
        let content = base64::engine::general_purpose::STANDARD.encode(vec![42u8; size]);
        format!(
            r#"{{"template":"t","recipients":[{{"email":"a@example.com"}}],"attachments":[{{"filename":"a.bin","content":"{content}"}},{{"filename":"b.pdf","ref":"up/b.pdf"}}]{extra}}}"#
        )
    }

    #[tokio::test]
    async fn inline_attachments_over_the_limit_go_to_the_store_and_only_their_key_travels_on() {
        let store = Attachments::memory();
        let stage = Ingest::new(MemoryKv::new()).with_attachments(store.clone());
        let out = ingest(&stage, &with_inline(100_000, ""), 5).await;
        let forwarded: Vec<Notification> = out.forwarded(Hop::Enrich);
        let notification = &forwarded[0];
        let moved = &notification.request.attachments[0];
        let key = format!("inline/{}/0", notification.notification_id);
        assert_eq!(moved.reference.as_deref(), Some(key.as_str()));
        assert_eq!((moved.content.as_deref(), moved.size), (None, Some(100_000)));
        assert_eq!(notification.request.attachments[1].reference.as_deref(), Some("up/b.pdf"), "references pass as they are");
        assert_eq!(store.get("acme", &key).await.unwrap(), vec![42u8; 100_000]);
        assert!(serde_json::to_vec(notification).unwrap().len() < 2_000, "the notification carries the key, not the file");
        // Small ones stay inline.
        let small: Vec<Notification> = ingest(&stage, &with_inline(1_000, ""), 6).await.forwarded(Hop::Enrich);
        assert!(small[0].request.attachments[0].content.is_some());
        assert_eq!(small[0].request.attachments[0].size, Some(1_000));
    }

    #[tokio::test]
    async fn a_repeat_with_inline_attachments_is_still_a_duplicate_and_bad_base64_is_rejected() {
        let stage = Ingest::new(MemoryKv::new()).with_attachments(Attachments::memory());
        let body = with_inline(100_000, r#","idempotency_key":"k1""#);
        assert_eq!(statuses(&ingest(&stage, &body, 1).await.events()), vec![Status::Accepted]);
        assert_eq!(statuses(&ingest(&stage, &body, 2).await.events()), vec![Status::Deduplicated], "fingerprinted before the claim check");
        let bad = r#"{"template":"t","recipients":[{"user_id":"a"}],"attachments":[{"filename":"a","content":"not base64!"}]}"#;
        let out = ingest(&stage, bad, 3).await;
        assert_eq!(out.events()[0].reason.as_deref(), Some("invalid_attachment"));
        // No store: refused with the reason, not dropped.
        let bare = Ingest::new(MemoryKv::new());
        assert_eq!(ingest(&bare, &with_inline(100_000, ""), 4).await.events()[0].reason.as_deref(), Some("attachments_unavailable"));
    }
}
