//! Receipts: what providers report after they accepted a delivery.
//!
//! In: a provider's [`Receipt`], verified by the HTTP receiver (Twilio's `X-Twilio-Signature`)
//! and published on `<prefix>.receipts.<tenant>.<provider>`.
//! Out:
//! - `delivered` (an SMS delivery receipt; a call answered and completed) or `undelivered` (an
//!   SMS the carrier refused; a call busy, unanswered, failed or cancelled) about the delivery,
//!   with the provider's status or error code as the reason;
//! - for a call whose outcome is in `receipts.redial.on`, while redials are left: a redial — a
//!   copy of the call as a new delivery (`ids::redial_id`), scheduled with the broker into
//!   throttle `receipts.redial.after` from now (throttle checks expiry, caps and quiet hours again),
//!   with a `deferred` event (`reason` `redial`) about it;
//! - for e-mail (SendGrid's event webhook): `delivered`; `bounced` (`bounce` or `blocked`);
//!   `undelivered` (`dropped`); `complained` (`spamreport`); `unsubscribed`; `opened`;
//!   `clicked`. A hard bounce, a spam report and an unsubscribe suppress the address: it is
//!   recorded as opted out of e-mail (and the user's e-mail preference turned off), so deliver
//!   sends it nothing again;
//! - nothing for a provider's intermediate statuses (`queued`, `sent`, `ringing`, `processed`,
//!   `deferred` …).
//!
//! The delivery is found through its state in the dedupe bucket (`sent` names the deliver
//! message that sent it) and that message in the deliver stream. A receipt that races ahead of
//! deliver's `sent` is retried; one for a delivery that was never sent, or whose provider id
//! differs, is dead-lettered with the reason.
//! Invariants: a receipt posted twice yields the same events (deterministic ids) and at most one
//! redial (its id is a function of the first call and the redial's number).

use std::future::Future;
use std::time::Duration;

use herald_dedupe::{Phase, States};
use herald_schemas::{Channel, Delivery, Receipt, Status, ids};
use herald_stage::{EventBuilder, Hop, KeyValue, Meta, Outcome, PortError, Stage, StageError};
use serde::{Deserialize, Serialize};

/// The receipts' settings (`[receipts]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptsConfig {
    pub redial: RedialPolicy,
}

/// When a voice call that did not reach the person is tried again (`[receipts.redial]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedialPolicy {
    /// Redials after the first call (0: never redial).
    pub attempts: u32,
    /// How long after the unanswered call each redial is placed.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// The call outcomes (Twilio `CallStatus`) that are redialled: `busy`, `no-answer`,
    /// `failed`, `canceled`.
    pub on: Vec<String>,
}

impl Default for RedialPolicy {
    fn default() -> Self {
        RedialPolicy { attempts: 2, after: Duration::from_secs(5 * 60), on: vec!["busy".into(), "no-answer".into()] }
    }
}

impl RedialPolicy {
    /// The outcomes a redial may follow.
    pub const OUTCOMES: [&'static str; 4] = ["busy", "no-answer", "failed", "canceled"];

    /// Refuses an outcome Twilio never reports as final, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        match self.on.iter().find(|o| !Self::OUTCOMES.contains(&o.as_str())) {
            Some(bad) => Err(format!("receipts.redial.on: `{bad}` is not a call outcome; use any of {:?}", Self::OUTCOMES)),
            None => Ok(()),
        }
    }
}

/// Where the deliveries deliver read are found again, by their deliver stream sequence.
pub trait DeliveryArchive: Send + Sync + 'static {
    /// The delivery deliver read at `sequence`, or `None` when the stream no longer holds it.
    fn delivery(&self, sequence: u64) -> impl Future<Output = Result<Option<Delivery>, PortError>> + Send;
}

/// An address a receipt says must not be sent to again on a channel (a hard bounce, a spam
/// report, an unsubscribe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub tenant: String,
    /// The directory user, when the delivery had one: their channel preference is turned off.
    pub user: Option<String>,
    pub channel: Channel,
    pub address: String,
    /// Who reported it (`sendgrid`) and why (`bounce`, `spamreport`, `unsubscribe`).
    pub provider: String,
    pub reason: String,
    pub at: herald_schemas::Timestamp,
}

/// Where suppressions are recorded (the store's opt-outs, which deliver checks).
pub trait Suppressions: Send + Sync + 'static {
    /// Records the suppression; returns whether it is new.
    fn suppress(&self, suppression: Suppression) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// The receipts stage.
#[derive(Debug)]
pub struct Receipts<K, A, S> {
    states: States<K>,
    archive: A,
    suppressions: S,
    config: ReceiptsConfig,
}

impl<K: KeyValue, A: DeliveryArchive, S: Suppressions> Receipts<K, A, S> {
    /// `kv` is the dedupe bucket (the delivery states), `archive` the deliver stream,
    /// `suppressions` the store's opt-outs.
    pub fn new(kv: K, archive: A, suppressions: S, config: ReceiptsConfig) -> Self {
        Receipts { states: States::new(kv), archive, suppressions, config }
    }

    /// The delivery the receipt is about, as deliver sent it.
    async fn sent_delivery(&self, receipt: &Receipt) -> Result<Delivery, StageError> {
        let id = receipt.delivery_id;
        let (by, provider, provider_message_id) = match self.states.get(id).await?.map(|s| s.phase) {
            Some(Phase::Sent { by, provider, provider_message_id, .. }) => (by, provider, provider_message_id),
            Some(Phase::Claimed | Phase::Sending { .. }) => {
                // The provider answered faster than deliver wrote `sent`.
                let detail = format!("delivery {id} is not recorded as sent yet; the receipt waits for it");
                return Err(StageError::transient("delivery_not_settled", detail).retry_after(Duration::from_secs(1)));
            }
            Some(Phase::Failed { reason, .. }) => {
                return Err(StageError::permanent("receipt_for_unsent", format!("delivery {id} failed ({reason}); it was never sent")));
            }
            None => return Err(StageError::permanent("unknown_delivery", format!("no delivery {id} is recorded (or its record expired)"))),
        };
        // SendGrid's events name `<X-Message-Id>.<more>`, the id the send was answered with first.
        let same_message = receipt.provider_message_id == provider_message_id
            || receipt.provider_message_id.strip_prefix(provider_message_id.as_str()).is_some_and(|rest| rest.starts_with('.'));
        if provider != receipt.provider || !same_message {
            let detail = format!(
                "the receipt names {} message {}, but delivery {id} was sent through {provider} as {provider_message_id}",
                receipt.provider, receipt.provider_message_id
            );
            return Err(StageError::permanent("receipt_mismatch", detail));
        }
        match self.archive.delivery(by).await? {
            Some(delivery) if delivery.delivery_id == id => Ok(delivery),
            Some(other) => Err(StageError::permanent(
                "receipt_mismatch",
                format!("deliver message #{by} holds delivery {}, not {id}", other.delivery_id),
            )),
            None => Err(StageError::permanent(
                "delivery_gone",
                format!("deliver message #{by} of delivery {id} is past the stream's max age; the receipt cannot be placed"),
            )),
        }
    }
}

/// What a provider's status says: delivered, not delivered, an engagement, or not final yet.
fn verdict(channel: Channel, status: &str) -> Option<Status> {
    match (channel, status) {
        (Channel::Sms, "delivered") | (Channel::Voice, "completed") | (Channel::Email, "delivered") => Some(Status::Delivered),
        (Channel::Sms, "undelivered" | "failed") | (Channel::Voice, "busy" | "no-answer" | "failed" | "canceled") => {
            Some(Status::Undelivered)
        }
        (Channel::Email, "bounce") => Some(Status::Bounced),
        (Channel::Email, "dropped") => Some(Status::Undelivered),
        (Channel::Email, "spamreport") => Some(Status::Complained),
        (Channel::Email, "unsubscribe" | "group_unsubscribe") => Some(Status::Unsubscribed),
        (Channel::Email, "open") => Some(Status::Opened),
        (Channel::Email, "click") => Some(Status::Clicked),
        _ => None,
    }
}

/// Whether the receipt says never to send to the address again: a hard bounce (SendGrid's
/// `type` `bounce`; `blocked` is the server refusing for now), a spam report, an unsubscribe.
fn suppresses(receipt: &Receipt, status: Status) -> bool {
    match status {
        Status::Bounced => receipt.details.get("type").is_none_or(|t| t == "bounce"),
        Status::Complained | Status::Unsubscribed => true,
        _ => false,
    }
}

impl<K: KeyValue, A: DeliveryArchive, S: Suppressions> Stage for Receipts<K, A, S> {
    const NAME: &'static str = "receipts";
    type Input = Receipt;

    async fn process(&self, receipt: Receipt, meta: &Meta) -> Result<Outcome, StageError> {
        if receipt.tenant != meta.tenant {
            let detail = format!("a receipt of tenant `{}` arrived on tenant `{}`'s subject", receipt.tenant, meta.tenant);
            return Err(StageError::permanent("wrong_tenant", detail));
        }
        let delivery = self.sent_delivery(&receipt).await?;
        let Some(status) = verdict(delivery.channel, &receipt.status) else {
            return Ok(Outcome::new());
        };
        let reason = match status {
            Status::Bounced => receipt.details.get("type").cloned().unwrap_or_else(|| "bounce".into()),
            _ => receipt.error_code.clone().unwrap_or_else(|| receipt.status.replace('-', "_")),
        };
        let mut detail = format!("{} reports {} {}", receipt.provider, receipt.provider_message_id, receipt.status);
        for (name, value) in &receipt.details {
            detail.push_str(&format!(", {name} {value}"));
        }
        if suppresses(&receipt, status) {
            let suppression = Suppression {
                tenant: delivery.tenant.clone(),
                user: delivery.user_id.clone(),
                channel: delivery.channel,
                address: delivery.address.clone(),
                provider: receipt.provider.clone(),
                reason: receipt.status.clone(),
                at: receipt.received_at,
            };
            let new = self.suppressions.suppress(suppression).await?;
            detail.push_str(if new {
                "; the address is suppressed: later deliveries to it on this channel are opted_out"
            } else {
                "; the address was suppressed already"
            });
        }
        let redial = &self.config.redial;
        let mut again = None;
        if delivery.channel == Channel::Voice && status == Status::Undelivered && redial.on.contains(&receipt.status) {
            if delivery.redial < redial.attempts {
                let first = delivery.redial_of.unwrap_or(delivery.delivery_id);
                let number = delivery.redial + 1;
                // From when the receipt came, not when this copy of it is read: a redelivered
                // receipt schedules the same redial at the same time, with the same event.
                let at = receipt.received_at.checked_add(redial.after).unwrap_or(receipt.received_at);
                detail.push_str(&format!("; redial {number} of {} at {at}", redial.attempts));
                let call = Delivery {
                    delivery_id: ids::redial_id(first, number),
                    redial_of: Some(first),
                    redial: number,
                    claim: None,
                    deferred_until: None,
                    ..delivery.clone()
                };
                let why = format!("call {first} was {}: redial {number} of {}", receipt.status, redial.attempts);
                again = Some((call, at, why));
            } else {
                detail.push_str(&format!("; no redial left (receipts.redial.attempts = {})", redial.attempts));
            }
        }
        // The receipt's event first, so `undelivered` precedes the redial's `deferred`.
        let mut outcome = Outcome::new().event(
            EventBuilder::delivery(Self::NAME, meta, &delivery, status)
                .provider(&receipt.provider, Some(&receipt.provider_message_id))
                .reason(reason, detail)
                .build(),
        )?;
        if let Some((call, at, why)) = again {
            let deferred =
                EventBuilder::delivery(Self::NAME, meta, &call, Status::Deferred).reason("redial", why).deferred_until(at).build();
            outcome = outcome.defer(Hop::Throttle, &call, at)?.event(deferred)?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use herald_dedupe::Begin;
    use herald_schemas::Timestamp;
    use herald_stage::ErrorKind;
    use herald_stage::memory::MemoryKv;

    use super::*;

    /// Deliveries by deliver stream sequence.
    #[derive(Default)]
    struct Archive(Mutex<HashMap<u64, Delivery>>);

    impl DeliveryArchive for Archive {
        async fn delivery(&self, sequence: u64) -> Result<Option<Delivery>, PortError> {
            Ok(self.0.lock().unwrap().get(&sequence).cloned())
        }
    }

    /// Suppressions recorded.
    #[derive(Default)]
    struct Suppressed(Mutex<Vec<Suppression>>);

    impl Suppressions for Suppressed {
        async fn suppress(&self, suppression: Suppression) -> Result<bool, PortError> {
            let mut all = self.0.lock().unwrap();
            let new = !all.iter().any(|s| s.address == suppression.address && s.channel == suppression.channel);
            all.push(suppression);
            Ok(new)
        }
    }

    fn call(id: u128) -> Delivery {
        Delivery { channel: Channel::Voice, address: "+14155550100".into(), ..herald_stage::memory::delivery(id) }
    }

    fn receipt(delivery: &Delivery, sid: &str, status: &str) -> Receipt {
        Receipt {
            v: 1,
            receipt_id: ids::receipt_id("twilio", sid, status),
            tenant: "acme".into(),
            delivery_id: delivery.delivery_id,
            provider: "twilio".into(),
            provider_message_id: sid.into(),
            status: status.into(),
            error_code: None,
            details: Default::default(),
            received_at: Timestamp::now(),
        }
    }

    /// A stage whose store knows `delivery` as sent by deliver message `by` as `sid`.
    async fn sent(delivery: &Delivery, by: u64, sid: &str, attempts: u32) -> Receipts<MemoryKv, Archive, Suppressed> {
        let provider = if delivery.channel == Channel::Email { "sendgrid" } else { "twilio" };
        let kv = MemoryKv::new();
        let states = States::new(kv.clone());
        let Begin::Send(ticket) = states.begin(delivery.delivery_id, None, by, 1, Duration::from_secs(60), Timestamp::now()).await.unwrap()
        else {
            panic!("a new delivery is sent")
        };
        let phase = Phase::Sent { by, provider: provider.into(), provider_message_id: sid.into(), at: Timestamp::now() };
        states.finish(&ticket, phase).await.unwrap();
        let archive = Archive::default();
        archive.0.lock().unwrap().insert(by, delivery.clone());
        let config = ReceiptsConfig { redial: RedialPolicy { attempts, ..RedialPolicy::default() } };
        Receipts::new(kv, archive, Suppressed::default(), config)
    }

    #[tokio::test]
    async fn a_busy_call_is_undelivered_and_redialled_once_per_number_until_the_policy_is_spent() {
        let first = call(3);
        let stage = sent(&first, 40, "CA1", 1).await;
        let meta = Meta::for_tests();
        let busy = receipt(&first, "CA1", "busy");
        let out = stage.process(busy.clone(), &meta).await.unwrap();
        let statuses: Vec<_> = out.events().iter().map(|e| (e.status, e.reason.clone())).collect();
        assert_eq!(statuses, [(Status::Undelivered, Some("busy".into())), (Status::Deferred, Some("redial".into()))]);
        let redials: Vec<(Delivery, Timestamp)> = out.deferred(Hop::Throttle);
        assert_eq!(redials.len(), 1);
        let (redial, at) = &redials[0];
        assert_eq!(
            (redial.delivery_id, redial.redial, redial.redial_of),
            (ids::redial_id(first.delivery_id, 1), 1, Some(first.delivery_id))
        );
        assert!(*at >= meta.received_at.checked_add(Duration::from_secs(299)).unwrap(), "placed receipts.redial.after later");
        // The stored receipt read again later (a redelivery): the same events, the same redial.
        let later = Meta { attempt: 2, received_at: meta.received_at.checked_add(Duration::from_secs(40)).unwrap(), ..meta.clone() };
        let again = stage.process(busy, &later).await.unwrap();
        let ids = |o: &Outcome| o.events().iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&out), "the same event ids");
        assert_eq!(again.deferred::<Delivery>(Hop::Throttle), redials, "the same redial at the same time");

        // The redial, busy too: the policy's one redial is spent.
        let stage = sent(redial, 41, "CA2", 1).await;
        let out = stage.process(receipt(redial, "CA2", "busy"), &meta).await.unwrap();
        assert!(out.deferred::<Delivery>(Hop::Throttle).is_empty(), "no second redial");
        let event = &out.events()[0];
        assert_eq!(event.status, Status::Undelivered);
        assert!(event.detail.as_deref().unwrap().contains("no redial left"), "{event:?}");
    }

    #[tokio::test]
    async fn sms_and_call_outcomes_map_to_delivered_or_undelivered_and_intermediate_ones_to_nothing() {
        let text = Delivery { channel: Channel::Sms, ..call(4) };
        let stage = sent(&text, 7, "SM1", 2).await;
        let meta = Meta::for_tests();
        let status = |out: Outcome| out.events().iter().map(|e| (e.status, e.reason.clone())).collect::<Vec<_>>();
        assert_eq!(
            status(stage.process(receipt(&text, "SM1", "delivered"), &meta).await.unwrap()),
            [(Status::Delivered, Some("delivered".into()))]
        );
        let mut failed = receipt(&text, "SM1", "undelivered");
        failed.error_code = Some("30003".into());
        assert_eq!(
            status(stage.process(failed, &meta).await.unwrap()),
            [(Status::Undelivered, Some("30003".into()))],
            "the carrier's code"
        );
        for status in ["queued", "sent", "sending"] {
            assert!(stage.process(receipt(&text, "SM1", status), &meta).await.unwrap().emits.is_empty(), "{status}");
        }
        let answered = call(5);
        let stage = sent(&answered, 8, "CA9", 2).await;
        let out = stage.process(receipt(&answered, "CA9", "completed"), &meta).await.unwrap();
        assert_eq!(out.events().iter().map(|e| e.status).collect::<Vec<_>>(), [Status::Delivered]);
        assert!(out.deferred::<Delivery>(Hop::Throttle).is_empty());
    }

    #[tokio::test]
    async fn a_receipt_ahead_of_sent_waits_and_a_foreign_or_unknown_one_is_refused() {
        let meta = Meta::for_tests();
        let d = call(6);
        let stage = sent(&d, 9, "CA1", 2).await;
        let err = stage.process(receipt(&d, "CA-other", "busy"), &meta).await.unwrap_err();
        assert_eq!((err.kind, err.reason.as_str()), (ErrorKind::Permanent, "receipt_mismatch"));
        let unknown = call(99);
        let err = stage.process(receipt(&unknown, "CA1", "busy"), &meta).await.unwrap_err();
        assert_eq!((err.kind, err.reason.as_str()), (ErrorKind::Permanent, "unknown_delivery"));
        let mut other_tenant = receipt(&d, "CA1", "busy");
        other_tenant.tenant = "globex".into();
        assert_eq!(stage.process(other_tenant, &meta).await.unwrap_err().reason, "wrong_tenant");

        // Still `sending`: retried, not dropped.
        let kv = MemoryKv::new();
        let racing = call(7);
        States::new(kv.clone()).begin(racing.delivery_id, None, 3, 1, Duration::from_secs(60), Timestamp::now()).await.unwrap();
        let stage = Receipts::new(kv, Archive::default(), Suppressed::default(), ReceiptsConfig::default());
        let err = stage.process(receipt(&racing, "CA1", "completed"), &meta).await.unwrap_err();
        assert_eq!((err.kind, err.reason.as_str()), (ErrorKind::Transient, "delivery_not_settled"));
    }

    #[tokio::test]
    async fn sendgrid_events_map_to_their_statuses_and_hard_bounces_spam_reports_and_unsubscribes_suppress() {
        let meta = Meta::for_tests();
        let mail = Delivery { channel: Channel::Email, address: "alice@example.com".into(), ..call(8) };
        let stage = sent(&mail, 12, "14c5d75ce93.dfd.64b469", 2).await;
        // SendGrid names the message `<X-Message-Id>.filter…` in its events.
        let event = |name: &str, kind: Option<&str>| {
            let mut r = receipt(&mail, "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", name);
            r.provider = "sendgrid".into();
            if let Some(kind) = kind {
                r.details.insert("type".into(), kind.into());
            }
            r
        };
        let cases = [
            ("processed", None, None),
            ("deferred", None, None),
            ("delivered", None, Some((Status::Delivered, "delivered"))),
            ("open", None, Some((Status::Opened, "open"))),
            ("click", None, Some((Status::Clicked, "click"))),
            ("bounce", Some("blocked"), Some((Status::Bounced, "blocked"))),
            ("dropped", None, Some((Status::Undelivered, "dropped"))),
        ];
        for (name, kind, expected) in cases {
            let out = stage.process(event(name, kind), &meta).await.unwrap();
            let got = out.events().first().map(|e| (e.status, e.reason.clone().unwrap()));
            assert_eq!(got, expected.map(|(s, r)| (s, r.to_owned())), "{name}");
        }
        assert!(stage.suppressions.0.lock().unwrap().is_empty(), "nothing above suppresses the address");
        for (name, status) in [("bounce", Status::Bounced), ("spamreport", Status::Complained), ("unsubscribe", Status::Unsubscribed)] {
            let out = stage.process(event(name, (name == "bounce").then_some("bounce")), &meta).await.unwrap();
            assert_eq!(out.events()[0].status, status, "{name}");
            assert!(out.events()[0].detail.as_deref().unwrap().contains("suppressed"), "{:?}", out.events()[0]);
        }
        let suppressed = stage.suppressions.0.lock().unwrap().clone();
        assert_eq!(suppressed.len(), 3);
        assert!(
            suppressed
                .iter()
                .all(|s| s.address == "alice@example.com" && s.channel == Channel::Email && s.user.as_deref() == Some("alice"))
        );
        // Another message's events are not this delivery's.
        let mut foreign = event("open", None);
        foreign.provider_message_id = "14c5d75ce93.dfd.64b469X.filter".into();
        assert_eq!(stage.process(foreign, &meta).await.unwrap_err().reason, "receipt_mismatch");
    }

    #[test]
    fn the_policy_refuses_an_outcome_twilio_never_reports() {
        assert!(RedialPolicy::default().check().is_ok());
        let bad = RedialPolicy { on: vec!["no_answer".into()], ..RedialPolicy::default() };
        assert!(bad.check().unwrap_err().contains("receipts.redial.on"), "the setting is named");
    }
}
