//! The deliver stage against scripted providers and an in-memory state bucket.

use std::sync::Mutex;

use herald_stage::ErrorKind;
use herald_stage::memory::MemoryKv;

use super::*;

/// A provider that answers from a script and counts its calls.
#[derive(Default)]
struct Scripted {
    answers: Mutex<Vec<Result<Receipt, ProviderError>>>,
    calls: Mutex<u32>,
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn send<'a>(&'a self, _delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(async move {
            *self.calls.lock().unwrap() += 1;
            self.answers.lock().unwrap().remove(0)
        })
    }
}

fn delivery() -> Delivery {
    herald_stage::memory::delivery(2)
}

fn ok(id: &str) -> Result<Receipt, ProviderError> {
    Ok(Receipt { provider_message_id: id.into(), duplicate: false })
}

fn refused(retryable: bool) -> Result<Receipt, ProviderError> {
    Err(ProviderError {
        retryable,
        code: if retryable { "unavailable" } else { "bad_address" }.into(),
        detail: "no".into(),
        retry_after: None,
    })
}

struct Setup {
    stage: Deliver<MemoryKv>,
    provider: Arc<Scripted>,
    kv: MemoryKv,
}

fn setup(answers: Vec<Result<Receipt, ProviderError>>) -> Setup {
    let provider = Arc::new(Scripted { answers: Mutex::new(answers), ..Scripted::default() });
    let providers = Arc::new(Providers::new().with(Channel::Log, provider.clone(), 4));
    let kv = MemoryKv::new();
    Setup { stage: Deliver::new(Channel::Log, providers, kv.clone(), DeliverConfig::default()), provider, kv }
}

impl Setup {
    fn calls(&self) -> u32 {
        *self.provider.calls.lock().unwrap()
    }
}

fn meta(sequence: u64, attempt: u32) -> Meta {
    Meta { sequence, attempt, ..Meta::for_tests() }
}

fn status(out: &Outcome) -> Status {
    out.events()[0].status
}

#[tokio::test]
async fn sends_and_records_sent() {
    let s = setup(vec![ok("m-1")]);
    let out = s.stage.process(delivery(), &meta(1, 1)).await.unwrap();
    assert_eq!(status(&out), Status::Sent);
    let state = s.stage.states.get(delivery().delivery_id).await.unwrap().unwrap();
    assert!(matches!(state.phase, Phase::Sent { by: 1, ref provider_message_id, .. } if provider_message_id == "m-1"));
}

#[tokio::test]
async fn a_sent_delivery_is_never_sent_again_whichever_copy_arrives() {
    let s = setup(vec![ok("m-1")]);
    s.stage.process(delivery(), &meta(1, 1)).await.unwrap();
    // The same message redelivered (crash after the state write): `sent` again, same event id.
    let again = s.stage.process(delivery(), &meta(1, 2)).await.unwrap();
    assert_eq!(status(&again), Status::Sent);
    // A second copy on its first attempt (republished after the duplicate window, replayed).
    let copy = s.stage.process(delivery(), &meta(9, 1)).await.unwrap();
    assert_eq!(status(&copy), Status::Deduplicated);
    assert_eq!(copy.events()[0].reason.as_deref(), Some("already_sent"));
    assert_eq!(s.calls(), 1);
}

#[tokio::test]
async fn when_the_state_write_fails_after_the_provider_accepted_only_the_write_is_retried() {
    let s = setup(vec![ok("m-1"), ok("m-2")]);
    // No claim yet: `begin` creates the record, so the first three compare-and-swaps to fail are
    // the writes of `sent` after the provider accepted.
    s.kv.fail_swaps(3);
    let out = s.stage.process(delivery(), &meta(1, 1)).await.unwrap();
    assert_eq!(status(&out), Status::Sent);
    assert_eq!(s.calls(), 1, "one provider call, however often the write failed");
    let state = s.stage.states.get(delivery().delivery_id).await.unwrap().unwrap();
    assert!(matches!(state.phase, Phase::Sent { .. }));
}

#[tokio::test]
async fn a_copy_waits_while_another_is_calling_the_provider() {
    let s = setup(vec![]);
    s.stage.states.begin(delivery().delivery_id, None, 1, 1, Duration::from_secs(60), Timestamp::now()).await.unwrap();
    let err = s.stage.process(delivery(), &meta(2, 1)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Outage, "held, no attempt spent");
    assert_eq!(err.reason, "delivery_in_flight");
    assert!(err.retry_after.is_some_and(|d| d <= Duration::from_secs(60)));
    assert_eq!(s.calls(), 0);
}

#[tokio::test]
async fn errors_are_classified() {
    let s = setup(vec![refused(true), refused(false)]);
    let err = s.stage.process(delivery(), &meta(1, 1)).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.reason, "unavailable");
    // Released: the next attempt does not wait for a lease.
    let out = s.stage.process(delivery(), &meta(1, 2)).await.unwrap();
    assert_eq!(status(&out), Status::Failed);
    assert_eq!(out.events()[0].reason.as_deref(), Some("bad_address"));
    // Redelivered after the failure was recorded: reported again, not sent again.
    let again = s.stage.process(delivery(), &meta(1, 3)).await.unwrap();
    assert_eq!(status(&again), Status::Failed);
    assert_eq!(s.calls(), 2);
}

#[tokio::test]
async fn the_last_attempt_records_failed_so_a_replay_may_retry() {
    let s = setup(vec![refused(true), ok("m-9")]);
    let last = Meta { sequence: 1, attempt: 5, max_attempts: 5, ..Meta::for_tests() };
    assert!(s.stage.process(delivery(), &last).await.unwrap_err().is_transient());
    let state = s.stage.states.get(delivery().delivery_id).await.unwrap().unwrap();
    assert!(matches!(state.phase, Phase::Failed { .. }));
    // A copy that did not pass dedupe again (republished after the duplicate window) is a
    // duplicate; a replay through dedupe re-opens the delivery and sends it.
    let copy = s.stage.process(delivery(), &meta(40, 1)).await.unwrap();
    assert_eq!((status(&copy), copy.events()[0].reason.as_deref()), (Status::Deduplicated, Some("already_failed")));
    let herald_dedupe::Claim::Won(claim) = s.stage.states.claim(delivery().delivery_id, 77).await.unwrap() else { panic!("replay") };
    let replay = s.stage.process(Delivery { claim, ..delivery() }, &meta(41, 1)).await.unwrap();
    assert_eq!(status(&replay), Status::Sent);
    assert_eq!(s.calls(), 2);
}

#[tokio::test]
async fn a_channel_without_a_provider_fails_with_a_reason() {
    let kv = MemoryKv::new();
    let stage = Deliver::new(Channel::Log, Arc::new(Providers::new()), kv, DeliverConfig::default());
    let out = stage.process(delivery(), &meta(1, 1)).await.unwrap();
    assert_eq!(status(&out), Status::Failed);
    assert_eq!(out.events()[0].reason.as_deref(), Some("no_provider"));
}

#[tokio::test]
async fn a_tenant_may_have_its_own_provider() {
    let shared = Arc::new(Scripted { answers: Mutex::new(vec![ok("shared")]), ..Scripted::default() });
    let own = Arc::new(Scripted { answers: Mutex::new(vec![ok("own")]), ..Scripted::default() });
    let providers = Providers::new().with(Channel::Log, shared.clone(), 1).with_tenant("acme", Channel::Log, own.clone(), 1);
    let stage = Deliver::new(Channel::Log, Arc::new(providers), MemoryKv::new(), DeliverConfig::default());
    stage.process(delivery(), &meta(1, 1)).await.unwrap();
    let other = Delivery { tenant: "globex".into(), delivery_id: uuid::Uuid::from_u128(3), ..delivery() };
    stage.process(other, &meta(2, 1)).await.unwrap();
    assert_eq!((*own.calls.lock().unwrap(), *shared.calls.lock().unwrap()), (1, 1));
}

#[tokio::test]
async fn an_expired_delivery_is_not_sent() {
    let s = setup(vec![]);
    let expired = Delivery { expires_at: Some(jiff::Timestamp::UNIX_EPOCH), ..delivery() };
    let out = s.stage.process(expired.clone(), &meta(1, 1)).await.unwrap();
    assert_eq!(status(&out), Status::Expired);
    let again = s.stage.process(expired, &meta(1, 2)).await.unwrap();
    let key = |o: &Outcome| o.events().iter().map(|e| (e.event_id, e.status, e.reason.clone())).collect::<Vec<_>>();
    assert_eq!(key(&again), key(&out), "a redelivery reports the same event (same id, so stored once)");
    assert_eq!(s.calls(), 0);
}

/// The permits of one route: urgent calls never wait behind the bulk, `low` never holds more
/// than half the shared pool, and the total never exceeds the concurrency.
#[tokio::test]
async fn permits_keep_room_for_urgent_and_normal() {
    use herald_schemas::Priority;
    let route = Route::new(std::sync::Arc::new(Scripted::default()), 16); // 14 shared + 2 reserved
    let quick = std::time::Duration::from_millis(50);
    let take = |priority| {
        let route = route.clone();
        async move { tokio::time::timeout(quick, route.permit(priority)).await.ok().map(Result::unwrap) }
    };
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(take(Priority::Low).await.expect("low gets its half of the shared pool"));
    }
    assert!(take(Priority::Low).await.is_none(), "an eighth low call waits: its share is used up");
    for _ in 0..7 {
        held.push(take(Priority::Normal).await.expect("normal still finds the other half"));
    }
    assert!(take(Priority::Normal).await.is_none(), "the shared pool is used up");
    held.push(take(Priority::Critical).await.expect("critical takes the reserve"));
    held.push(take(Priority::High).await.expect("and so does high"));
    assert!(take(Priority::Critical).await.is_none(), "16 calls in flight: the concurrency, no more");
    held.pop();
    assert!(take(Priority::Critical).await.is_some(), "a freed permit goes to the next call");
}
