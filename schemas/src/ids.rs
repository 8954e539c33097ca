//! Deterministic ids.
//!
//! Exactly-once effects in an at-least-once pipeline rest on one rule: processing the same
//! input twice must produce the same ids. A redelivered request yields the same notification id,
//! the same notification the same delivery ids, the same state change the same event id, and the
//! stream's `Nats-Msg-Id` window and the dedupe stage's key claims do the rest.

use uuid::Uuid;

use crate::{Channel, Status};

/// Namespace of every name-based id Herald derives.
const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_2a3e_0c55_4c7e_9d0b_8e4f_52a1_7c10);

/// The notification id of the request stored at `sequence` in the requests stream at
/// `stored_at_ms` (Unix ms). A redelivery has the same position; a new publish (or a replay) a
/// new one. Time-ordered (UUIDv7 layout), so ids sort by arrival.
///
/// An idempotency key does not enter the id: it only decides whether a request is admitted. A
/// key reused after its TTL therefore yields a new notification, delivered like any other,
/// rather than one whose deliveries are still remembered as sent.
pub fn notification_id(tenant: &str, sequence: u64, stored_at_ms: u64) -> Uuid {
    let hash = Uuid::new_v5(&NAMESPACE, format!("seq\0{tenant}\0{sequence}").as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&hash.as_bytes()[6..]);
    uuid::Builder::from_unix_timestamp_millis(stored_at_ms, &random).into_uuid()
}

/// The id under which a producer's idempotency key is claimed (one per tenant and key).
pub fn idempotency_key_id(tenant: &str, key: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("idem\0{tenant}\0{key}").as_bytes())
}

/// The id of page `page` of the fan-out of `notification_id` to `group`. The page number, not
/// the cursor, names it: a page redone after the group changed still has its id, so its
/// successor does too, and the chain of pages never forks.
pub fn fanout_page_id(notification_id: Uuid, group: &str, page: u32) -> Uuid {
    Uuid::new_v5(&notification_id, format!("fanout\0{group}\0{page}").as_bytes())
}

/// The delivery id of (notification, recipient, channel, address).
pub fn delivery_id(notification_id: Uuid, recipient_key: &str, channel: Channel, address: &str) -> Uuid {
    Uuid::new_v5(&notification_id, format!("{recipient_key}\0{channel}\0{address}").as_bytes())
}

/// The delivery id of redial `redial` (1, 2 …) of the call `first` (the first call's delivery
/// id): the same busy receipt reported twice schedules one redial, never two.
pub fn redial_id(first: Uuid, redial: u32) -> Uuid {
    Uuid::new_v5(&first, format!("redial\0{redial}").as_bytes())
}

/// The id of a provider's receipt: `provider`'s report of `status` for its message
/// `provider_message_id`. A receipt the provider posts again has the same id.
pub fn receipt_id(provider: &str, provider_message_id: &str, status: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("receipt\0{provider}\0{provider_message_id}\0{status}").as_bytes())
}

/// The event id of a state change reported by `stage` about `subject` (a delivery id, or the
/// notification id for notification-level events) on delivery attempt `attempt` of its input.
pub fn event_id(subject: Uuid, stage: &str, status: Status, attempt: u32) -> Uuid {
    Uuid::new_v5(&subject, format!("{stage}\0{status}\0{attempt}").as_bytes())
}

/// The id of an event about a request that never got a notification id (rejected at ingest).
pub fn rejection_id(tenant: &str, sequence: u64) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("rejected\0{tenant}\0{sequence}").as_bytes())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn notification_ids_are_deterministic_and_distinct(tenant in "[a-z]{1,8}", a in 1u64..u64::MAX/2, b in 1u64..u64::MAX/2, ms in 0u64..(1u64<<47)) {
            let id = |seq| notification_id(&tenant, seq, ms);
            prop_assert_eq!(id(a), id(a));
            if a != b { prop_assert_ne!(id(a), id(b)); }
            prop_assert_eq!(id(a).get_version_num(), 7);
        }

        #[test]
        fn idempotency_keys_map_to_one_id_per_tenant(key in ".{1,40}", t1 in "[a-z]{1,8}", t2 in "[a-z]{1,8}") {
            let id = |t: &str| idempotency_key_id(t, &key);
            prop_assert_eq!(id(&t1), id(&t1));
            if t1 != t2 { prop_assert_ne!(id(&t1), id(&t2)); }
        }

        #[test]
        fn delivery_ids_separate_channels_and_addresses(r in "user:[a-z]{1,6}", addr in "[a-z@.]{1,12}") {
            let n = Uuid::from_u128(42);
            prop_assert_eq!(delivery_id(n, &r, Channel::Email, &addr), delivery_id(n, &r, Channel::Email, &addr));
            prop_assert_ne!(delivery_id(n, &r, Channel::Email, &addr), delivery_id(n, &r, Channel::Sms, &addr));
            prop_assert_ne!(delivery_id(n, &r, Channel::Email, &addr), delivery_id(Uuid::from_u128(43), &r, Channel::Email, &addr));
        }
    }

    #[test]
    fn fanout_pages_are_named_by_number() {
        let n = Uuid::from_u128(42);
        assert_eq!(fanout_page_id(n, "staff", 3), fanout_page_id(n, "staff", 3));
        assert_ne!(fanout_page_id(n, "staff", 3), fanout_page_id(n, "staff", 4));
        assert_ne!(fanout_page_id(n, "staff", 3), fanout_page_id(n, "beta", 3));
    }

    #[test]
    fn notification_ids_sort_by_arrival() {
        let early = notification_id("acme", 9, 1_000);
        let late = notification_id("acme", 1, 2_000);
        assert!(early < late);
    }
}
