//! The delivery state: the one record that decides whether a delivery may go to its provider.
//!
//! Every delivery has one key, `delivery.<delivery_id>`, in the dedupe bucket. Dedupe creates it
//! (put-if-absent) and deliver moves it on, always by compare-and-swap on the revision it read:
//!
//! ```text
//!            dedupe                 deliver                       deliver
//!   (none) ──create──► claimed ──swap──► sending(by, attempt, until) ──swap──► sent(provider id)
//!                         ▲                       │                     └─swap──► failed(reason)
//!                         └──── swap (retryable) ─┘       failed ──swap (dedupe: a replay)──► claimed
//! ```
//!
//! - `claimed(seq)`: the dedupe message with stream sequence `seq` won the delivery. That
//!   message, redelivered, goes on; any other copy (a replay, a second publish) is a duplicate.
//! - `sending(by, attempt, until)`: attempt `attempt` of the deliver message `by` is calling the
//!   provider, and will write the outcome before `until` (its lease). Another copy waits; once
//!   the lease has run out its holder is presumed dead and the delivery may be sent again — the
//!   only way a provider sees a second call.
//! - `sent(by, provider id)`: never sent again. The message that sent it, redelivered, reports
//!   `sent` again (same event id); any other copy is `deduplicated`.
//! - `failed(by, reason)`: a permanent refusal or the last attempt's failure. Final for deliver:
//!   the message that failed it, redelivered, reports the failure again; any other copy is a
//!   duplicate. Only a replay through dedupe re-opens it: a new dedupe message swaps in its own
//!   `claimed`, and the delivery may be sent again.
//!
//! A swap that finds another revision means someone else moved the state: read it again and
//! decide again. A stale read (a follower in a cluster) can therefore never do harm.

use std::time::Duration;

use bytes::Bytes;
use herald_schemas::{ClaimRef, Timestamp};
use herald_stage::{Created, Entry, KeyValue, PortError, StageError, Swapped};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The state of one delivery, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The dedupe stream sequence of the message holding the claim; 0 when deliver opened the
    /// record itself (a copy that entered after the claim expired, or bypassed dedupe).
    pub claim: u64,
    #[serde(flatten)]
    pub phase: Phase,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Claimed,
    Sending {
        /// The deliver stream sequence of the message whose attempt is calling the provider.
        by: u64,
        attempt: u32,
        /// The holder writes the outcome before this, or is presumed dead.
        until: Timestamp,
    },
    Sent {
        by: u64,
        provider: String,
        provider_message_id: String,
        at: Timestamp,
    },
    Failed {
        by: u64,
        reason: String,
        detail: String,
        at: Timestamp,
    },
}

/// What dedupe's claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This message holds the claim (new, its own from before a crash, or taken over from a
    /// failed delivery): forward it, with the claim when the state still says `claimed` (so
    /// deliver can swap without reading).
    Won(Option<ClaimRef>),
    /// Another message holds the delivery: a duplicate.
    Taken(DeliveryState),
}

/// What deliver may do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Call the provider, then [`States::finish`] with the ticket.
    Send(Ticket),
    /// Another attempt is calling the provider and its lease runs until then: wait.
    Busy { until: Timestamp, by: u64 },
    /// Already sent. `mine` when by this same message (a redelivery after the state was
    /// written but before the ack): report it again, do not send.
    Sent { mine: bool, by: u64, provider: String, provider_message_id: String },
    /// Already failed. `mine` when by this same message: report the failure again; any other
    /// copy is a duplicate (a retry goes through dedupe, which re-opens the delivery).
    Failed { mine: bool, reason: String, detail: String },
}

/// The right to write a delivery's outcome: the revision our `sending` state was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    key: String,
    revision: u64,
    claim: u64,
    /// Whether this takes over from a holder whose lease ran out (it may have called the
    /// provider already: the call is repeated with the same idempotency key).
    pub took_over: bool,
}

/// How writing an outcome went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Written,
    /// Someone took the delivery over after our lease ran out; their outcome stands.
    Overtaken,
}

/// Conflicting swaps in a row before giving up on a message (it is retried later).
pub(crate) const MAX_CONFLICTS: usize = 16;

/// Delivery states over a key-value bucket.
#[derive(Debug, Clone)]
pub struct States<K> {
    kv: K,
}

impl<K> States<K> {
    /// The bucket the states live in.
    pub fn kv(&self) -> &K {
        &self.kv
    }
}

fn key(delivery_id: Uuid) -> String {
    format!("delivery.{delivery_id}")
}

fn encode(state: &DeliveryState) -> Bytes {
    // A struct of strings and numbers always serializes.
    Bytes::from(serde_json::to_vec(state).unwrap_or_default())
}

fn decode(key: &str, entry: &Entry) -> Result<DeliveryState, StageError> {
    serde_json::from_slice(&entry.value)
        .map_err(|e| StageError::from(PortError::decode("delivery state", format!("{key} holds an unreadable state: {e}"))))
}

fn contention(key: &str) -> StageError {
    StageError::transient("state_contention", format!("{key} kept changing under {MAX_CONFLICTS} compare-and-swaps in a row"))
}

impl<K: KeyValue> States<K> {
    pub fn new(kv: K) -> Self {
        States { kv }
    }

    /// Dedupe: claims the delivery for the dedupe message with stream sequence `sequence`.
    pub async fn claim(&self, delivery_id: Uuid, sequence: u64) -> Result<Claim, StageError> {
        let key = key(delivery_id);
        let mine = DeliveryState { claim: sequence, phase: Phase::Claimed };
        let won = |revision| Claim::Won(Some(ClaimRef { sequence, revision }));
        for _ in 0..MAX_CONFLICTS {
            let entry = match self.kv.create(&key, encode(&mine)).await? {
                Created::Created(revision) => return Ok(won(revision)),
                Created::Exists(entry) => entry,
            };
            let state = decode(&key, &entry)?;
            if state.claim == sequence && !matches!(state.phase, Phase::Failed { .. }) {
                // Our own claim, redelivered. Only a state still `claimed` may be swapped blind.
                let claimed = state.phase == Phase::Claimed;
                return Ok(if claimed { won(entry.revision) } else { Claim::Won(None) });
            }
            if state.claim == sequence {
                // Our own claim, and it failed downstream: redelivering this message is no replay.
                return Ok(Claim::Taken(state));
            }
            if !matches!(state.phase, Phase::Failed { .. }) {
                return Ok(Claim::Taken(state));
            }
            // A failed delivery may be sent again: a replay takes the claim over.
            match self.kv.swap(&key, encode(&mine), entry.revision).await? {
                Swapped::Done(revision) => return Ok(won(revision)),
                Swapped::Conflict => continue,
            }
        }
        Err(contention(&key))
    }

    /// Deliver: reads the state and, when the delivery may be sent, marks it `sending` by
    /// attempt `attempt` of the deliver message `by`, leased for `lease` from `now`. With the
    /// claim dedupe passed along, it first tries one blind compare-and-swap at the claim's
    /// revision: it succeeds only while the state is still exactly that claim.
    pub async fn begin(
        &self,
        delivery_id: Uuid,
        claim: Option<ClaimRef>,
        by: u64,
        attempt: u32,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Begin, StageError> {
        let key = key(delivery_id);
        let until = now.checked_add(lease).unwrap_or(now);
        let sending = |claim: u64| DeliveryState { claim, phase: Phase::Sending { by, attempt, until } };
        if let Some(ClaimRef { sequence, revision }) = claim
            && let Swapped::Done(revision) = self.kv.swap(&key, encode(&sending(sequence)), revision).await?
        {
            return Ok(Begin::Send(Ticket { key, revision, claim: sequence, took_over: false }));
        }
        for _ in 0..MAX_CONFLICTS {
            let Some(entry) = self.kv.entry(&key).await? else {
                // No claim: the copy bypassed dedupe or its claim expired. Open the record.
                match self.kv.create(&key, encode(&sending(0))).await? {
                    Created::Created(revision) => return Ok(Begin::Send(Ticket { key, revision, claim: 0, took_over: false })),
                    Created::Exists(_) => continue,
                }
            };
            let state = decode(&key, &entry)?;
            let took_over = match &state.phase {
                Phase::Claimed => false,
                Phase::Sending { by: holder, attempt: held, until } => {
                    let same_attempt = *holder == by && *held == attempt;
                    if !same_attempt && *until > now {
                        return Ok(Begin::Busy { until: *until, by: *holder });
                    }
                    !same_attempt
                }
                Phase::Sent { by: sender, provider, provider_message_id, .. } => {
                    return Ok(Begin::Sent {
                        mine: *sender == by,
                        by: *sender,
                        provider: provider.clone(),
                        provider_message_id: provider_message_id.clone(),
                    });
                }
                Phase::Failed { by: failer, reason, detail, .. } => {
                    return Ok(Begin::Failed { mine: *failer == by, reason: reason.clone(), detail: detail.clone() });
                }
            };
            match self.kv.swap(&key, encode(&sending(state.claim)), entry.revision).await? {
                Swapped::Done(revision) => return Ok(Begin::Send(Ticket { key, revision, claim: state.claim, took_over })),
                Swapped::Conflict => continue,
            }
        }
        Err(contention(&key))
    }

    /// Deliver: writes the outcome of the provider call the ticket was for. Only this write is
    /// ever retried after a provider accepted, never the call.
    pub async fn finish(&self, ticket: &Ticket, phase: Phase) -> Result<Finished, PortError> {
        let state = DeliveryState { claim: ticket.claim, phase };
        match self.kv.swap(&ticket.key, encode(&state), ticket.revision).await? {
            Swapped::Done(_) => Ok(Finished::Written),
            Swapped::Conflict => Ok(Finished::Overtaken),
        }
    }

    /// Deliver: the provider accepted, but another attempt took the delivery over (this one's
    /// lease ran out while the state could not be written). The acceptance is the truth: write
    /// `sent` over whatever the other attempt left, unless it says `sent` already, so no later
    /// copy sends it a third time.
    pub async fn settle_sent(&self, ticket: &Ticket, phase: Phase) -> Result<(), StageError> {
        let state = DeliveryState { claim: ticket.claim, phase };
        for _ in 0..MAX_CONFLICTS {
            let Some(entry) = self.kv.entry(&ticket.key).await? else {
                return match self.kv.create(&ticket.key, encode(&state)).await? {
                    Created::Created(_) => Ok(()),
                    Created::Exists(_) => continue,
                };
            };
            if matches!(decode(&ticket.key, &entry)?.phase, Phase::Sent { .. }) {
                return Ok(());
            }
            if let Swapped::Done(_) = self.kv.swap(&ticket.key, encode(&state), entry.revision).await? {
                return Ok(());
            }
        }
        Err(contention(&ticket.key))
    }

    /// Deliver: the provider did not take the delivery (a retryable error): back to `claimed`,
    /// so the next attempt need not wait for the lease.
    pub async fn release(&self, ticket: &Ticket) -> Result<Finished, PortError> {
        self.finish(ticket, Phase::Claimed).await
    }

    /// The stored state of a delivery (for tests and operators).
    pub async fn get(&self, delivery_id: Uuid) -> Result<Option<DeliveryState>, StageError> {
        let key = key(delivery_id);
        match self.kv.entry(&key).await? {
            Some(entry) => decode(&key, &entry).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_stage::memory::MemoryKv;

    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn sent(by: u64) -> Phase {
        Phase::Sent { by, provider: "log".into(), provider_message_id: "m-1".into(), at: at(0) }
    }

    #[tokio::test]
    async fn a_claim_is_won_once_and_by_its_own_redelivery() {
        let states = States::new(MemoryKv::new());
        let Claim::Won(Some(claim)) = states.claim(id(), 10).await.unwrap() else { panic!("won") };
        assert_eq!(claim.sequence, 10);
        assert_eq!(states.claim(id(), 10).await.unwrap(), Claim::Won(Some(claim)), "the same message redelivered");
        assert!(matches!(states.claim(id(), 11).await.unwrap(), Claim::Taken(_)), "another copy");
    }

    #[tokio::test]
    async fn the_life_of_a_delivery() {
        let states = States::new(MemoryKv::new());
        states.claim(id(), 10).await.unwrap();
        let Begin::Send(ticket) = states.begin(id(), None, 500, 1, LEASE, at(0)).await.unwrap() else { panic!("may send") };
        assert!(!ticket.took_over);
        // Another copy while the first is calling the provider: wait.
        assert_eq!(states.begin(id(), None, 501, 1, LEASE, at(1)).await.unwrap(), Begin::Busy { until: at(60), by: 500 });
        assert_eq!(states.finish(&ticket, sent(500)).await.unwrap(), Finished::Written);
        // The sender redelivered: report again. Any other copy: a duplicate. Dedupe too.
        assert!(matches!(states.begin(id(), None, 500, 2, LEASE, at(2)).await.unwrap(), Begin::Sent { mine: true, .. }));
        assert!(matches!(states.begin(id(), None, 501, 1, LEASE, at(2)).await.unwrap(), Begin::Sent { mine: false, by: 500, .. }));
        assert!(matches!(states.claim(id(), 12).await.unwrap(), Claim::Taken(_)));
        assert_eq!(states.get(id()).await.unwrap().unwrap().claim, 10);
    }

    #[tokio::test]
    async fn a_dead_holder_is_taken_over_after_its_lease() {
        let states = States::new(MemoryKv::new());
        states.claim(id(), 10).await.unwrap();
        let Begin::Send(first) = states.begin(id(), None, 500, 1, LEASE, at(0)).await.unwrap() else { panic!() };
        // The holder crashed; its message comes back as attempt 2 before the lease ran out: wait.
        assert!(matches!(states.begin(id(), None, 500, 2, LEASE, at(30)).await.unwrap(), Begin::Busy { .. }));
        let Begin::Send(second) = states.begin(id(), None, 500, 2, LEASE, at(61)).await.unwrap() else { panic!("lease over") };
        assert!(second.took_over);
        // The presumed-dead holder comes back: its outcome no longer counts.
        assert_eq!(states.finish(&first, sent(500)).await.unwrap(), Finished::Overtaken);
        assert_eq!(states.finish(&second, sent(500)).await.unwrap(), Finished::Written);
    }

    #[tokio::test]
    async fn a_retryable_failure_releases_and_a_permanent_one_may_be_replayed() {
        let states = States::new(MemoryKv::new());
        states.claim(id(), 10).await.unwrap();
        let Begin::Send(ticket) = states.begin(id(), None, 500, 1, LEASE, at(0)).await.unwrap() else { panic!() };
        states.release(&ticket).await.unwrap();
        let Begin::Send(ticket) = states.begin(id(), None, 500, 2, LEASE, at(1)).await.unwrap() else { panic!("no lease to wait for") };
        let failed = Phase::Failed { by: 500, reason: "bad_address".into(), detail: "no".into(), at: at(1) };
        states.finish(&ticket, failed).await.unwrap();
        assert!(
            matches!(states.begin(id(), None, 500, 3, LEASE, at(2)).await.unwrap(), Begin::Failed { mine: true, .. }),
            "reported again"
        );
        assert!(
            matches!(states.begin(id(), None, 501, 1, LEASE, at(2)).await.unwrap(), Begin::Failed { mine: false, .. }),
            "final for copies"
        );
        assert!(matches!(states.claim(id(), 10).await.unwrap(), Claim::Taken(_)), "dedupe's own redelivery is no replay");
        assert!(matches!(states.claim(id(), 99).await.unwrap(), Claim::Won(Some(_))), "a replay takes a failed delivery over");
        assert!(matches!(states.begin(id(), None, 777, 1, LEASE, at(3)).await.unwrap(), Begin::Send(_)));
    }

    #[tokio::test]
    async fn a_claim_passed_along_saves_the_read_and_cannot_undo_a_sent_state() {
        let states = States::new(MemoryKv::new());
        let Claim::Won(claim) = states.claim(id(), 10).await.unwrap() else { panic!("won") };
        let Begin::Send(ticket) = states.begin(id(), claim, 500, 1, LEASE, at(0)).await.unwrap() else { panic!("may send") };
        assert_eq!(ticket.claim, 10);
        states.finish(&ticket, sent(500)).await.unwrap();
        // A second copy carrying the same (now stale) claim: the blind swap fails, the read decides.
        assert!(matches!(states.begin(id(), claim, 501, 1, LEASE, at(1)).await.unwrap(), Begin::Sent { mine: false, .. }));
        // Dedupe's own message redelivered after deliver moved on passes no claim along.
        assert_eq!(states.claim(id(), 10).await.unwrap(), Claim::Won(None));
    }

    #[tokio::test]
    async fn an_overtaken_holder_that_was_accepted_settles_sent() {
        let states = States::new(MemoryKv::new());
        states.claim(id(), 10).await.unwrap();
        let Begin::Send(first) = states.begin(id(), None, 500, 1, LEASE, at(0)).await.unwrap() else { panic!() };
        // The holder's lease runs out; another attempt takes over and the provider fails it
        // retryably, so it releases the delivery.
        let Begin::Send(second) = states.begin(id(), None, 500, 2, LEASE, at(61)).await.unwrap() else { panic!() };
        states.release(&second).await.unwrap();
        // The first holder's acceptance finally arrives at the store.
        assert_eq!(states.finish(&first, sent(500)).await.unwrap(), Finished::Overtaken);
        states.settle_sent(&first, sent(500)).await.unwrap();
        assert!(matches!(states.begin(id(), None, 500, 3, LEASE, at(62)).await.unwrap(), Begin::Sent { .. }), "never sent a third time");
    }

    #[tokio::test]
    async fn deliver_opens_the_record_when_no_claim_exists() {
        let states = States::new(MemoryKv::new());
        let Begin::Send(ticket) = states.begin(id(), None, 500, 1, LEASE, at(0)).await.unwrap() else { panic!() };
        states.finish(&ticket, sent(500)).await.unwrap();
        assert!(matches!(states.claim(id(), 10).await.unwrap(), Claim::Taken(_)), "dedupe sees it sent");
    }

    #[tokio::test]
    async fn an_unreadable_state_is_permanent() {
        let kv = MemoryKv::new();
        kv.set(&key(id()), Bytes::from_static(b"{not json"));
        let err = States::new(kv).begin(id(), None, 1, 1, LEASE, at(0)).await.unwrap_err();
        assert_eq!(err.kind, herald_stage::ErrorKind::Permanent);
        assert_eq!(err.reason, "store_decode_failed");
    }
}
