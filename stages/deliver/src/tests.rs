//! The deliver stage against scripted providers and an in-memory state bucket.

use std::sync::Mutex;

use herald_stage::ErrorKind;
use herald_stage::memory::MemoryKv;

use super::*;
use crate::breaker::BreakerConfig;
use crate::ports::memory::MemoryDevices;
use crate::providers::GateConfig;
use herald_schemas::{Channel, DeviceRef};
use herald_stage::memory::MemoryAlerts;

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
    Err(if retryable { ProviderError::outage("unavailable", "no") } else { ProviderError::permanent("bad_address", "no") })
}

struct Setup {
    stage: Deliver<MemoryKv>,
    provider: Arc<Scripted>,
    kv: MemoryKv,
}

fn setup(answers: Vec<Result<Receipt, ProviderError>>) -> Setup {
    let provider = Arc::new(Scripted { answers: Mutex::new(answers), ..Scripted::default() });
    let providers = Arc::new(Providers::new().with(Route::Log, provider.clone(), 4));
    let kv = MemoryKv::new();
    Setup { stage: Deliver::new(Route::Log, providers, kv.clone(), DeliverConfig::default()), provider, kv }
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
    assert_eq!(err.retry_after, None, "a gate without a policy leaves the backoff to the runner");
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
    let err = s.stage.process(delivery(), &last).await.unwrap_err();
    assert_eq!((err.kind, err.reason.as_str()), (ErrorKind::Permanent, "unavailable"), "dead-lettered with the provider's code");
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
async fn a_route_without_a_provider_fails_with_a_reason() {
    let kv = MemoryKv::new();
    let stage = Deliver::new(Route::Log, Arc::new(Providers::new()), kv, DeliverConfig::default());
    let out = stage.process(delivery(), &meta(1, 1)).await.unwrap();
    assert_eq!(status(&out), Status::Failed);
    assert_eq!(out.events()[0].reason.as_deref(), Some("no_provider"));
}

#[tokio::test]
async fn a_tenant_may_have_its_own_provider() {
    let shared = Arc::new(Scripted { answers: Mutex::new(vec![ok("shared")]), ..Scripted::default() });
    let own = Arc::new(Scripted { answers: Mutex::new(vec![ok("own")]), ..Scripted::default() });
    let providers = Providers::new().with(Route::Log, shared.clone(), 1).with_tenant("acme", Route::Log, own.clone(), 1);
    let stage = Deliver::new(Route::Log, Arc::new(providers), MemoryKv::new(), DeliverConfig::default());
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
    let route = Arc::new(Gate::with_concurrency(Arc::new(Scripted::default()), 16)); // 14 shared + 2 reserved
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

fn push(id: u128) -> Delivery {
    Delivery {
        channel: Channel::Push,
        platform: Some(herald_schemas::directory::Platform::Ios),
        address: "ab".repeat(32),
        device: Some(DeviceRef { id: "phone".into(), app_id: Some("com.example.app".into()), environment: Default::default() }),
        ..herald_stage::memory::delivery(id)
    }
}

#[tokio::test]
async fn a_token_the_provider_calls_gone_disables_its_device() {
    let gone = ProviderError::new(Class::TokenInvalid, "Unregistered", "APNs answered 410 Unregistered");
    let provider = Arc::new(Scripted { answers: Mutex::new(vec![Err(gone)]), ..Scripted::default() });
    let devices = Arc::new(MemoryDevices::default());
    let mut providers = Providers::new().with(Route::Apns, provider.clone(), 4);
    providers.devices = Some(devices.clone());
    let stage = Deliver::new(Route::Apns, Arc::new(providers), MemoryKv::new(), DeliverConfig::default());
    let out = stage.process(push(5), &meta(1, 1)).await.unwrap();
    let events: Vec<_> = out.events().iter().map(|e| (e.status, e.reason.clone())).collect();
    assert_eq!(events, [(Status::Failed, Some("Unregistered".into())), (Status::TokenInvalidated, Some("Unregistered".into()))]);
    let disabled = devices.disabled.lock().unwrap().clone();
    assert_eq!(disabled.len(), 1);
    assert_eq!(
        (disabled[0].user.as_str(), disabled[0].device.as_str(), disabled[0].address.as_str()),
        ("alice", "phone", push(5).address.as_str())
    );
    // Redelivered: reported, not sent again, not disabled again.
    let again = stage.process(push(5), &meta(1, 2)).await.unwrap();
    assert_eq!(status(&again), Status::Failed);
    assert_eq!((*provider.calls.lock().unwrap(), devices.disabled.lock().unwrap().len()), (1, 1));
}

#[tokio::test]
async fn a_delivery_on_another_route_is_refused() {
    let s = setup(vec![]);
    let err = s.stage.process(push(1), &meta(1, 1)).await.unwrap_err();
    assert_eq!((err.kind, err.reason.as_str()), (ErrorKind::Permanent, "wrong_route"));
}

#[tokio::test]
async fn a_providers_policy_backs_off_obeys_retry_after_and_bounds_the_attempts() {
    let slow_down = ProviderError::new(Class::Throttled, "TooManyRequests", "429").with_retry_after(Some(Duration::from_secs(2)));
    let answers = vec![Err(slow_down), refused(true), refused(true)];
    let provider = Arc::new(Scripted { answers: Mutex::new(answers), ..Scripted::default() });
    let policy = crate::retry::RetryPolicy { attempts: 3, ..Default::default() };
    let gate = Gate::new(provider, GateConfig { concurrency: 4, retry: Some(policy.clone()), ..GateConfig::default() });
    let stage = Deliver::new(Route::Log, Arc::new(Providers::new().with_gate(Route::Log, gate)), MemoryKv::new(), DeliverConfig::default());
    let err = stage.process(delivery(), &meta(1, 1)).await.unwrap_err();
    assert_eq!((err.kind, err.reason.as_str(), err.retry_after), (ErrorKind::Transient, "TooManyRequests", Some(Duration::from_secs(2))));
    let err = stage.process(delivery(), &meta(1, 2)).await.unwrap_err();
    let second = policy.initial * 2;
    assert!(err.retry_after.is_some_and(|d| d >= second.mul_f64(0.8) && d <= second.mul_f64(1.2)), "the policy's backoff: {err:?}");
    let last = Meta { max_attempts: 12, ..meta(1, 3) };
    let err = stage.process(delivery(), &last).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "the policy's last attempt dead-letters, below the consumer's limit");
}

#[tokio::test]
async fn an_open_breaker_holds_deliveries_without_calling_and_alerts_once_per_change() {
    let answers = vec![refused(true), refused(true), ok("probe")];
    let provider = Arc::new(Scripted { answers: Mutex::new(answers), ..Scripted::default() });
    let breaker = BreakerConfig { failures_to_open: 2, open_for: Duration::from_millis(100) };
    let gate = Gate::new(provider.clone(), GateConfig { concurrency: 4, breaker, ..GateConfig::default() });
    let alerts = MemoryAlerts::default();
    let mut providers = Providers::new().with_gate(Route::Log, gate);
    providers.alerts = Some(Arc::new(alerts.clone()));
    let stage = Deliver::new(Route::Log, Arc::new(providers), MemoryKv::new(), DeliverConfig::default());
    let other = |id| Delivery { delivery_id: uuid::Uuid::from_u128(id), ..delivery() };
    assert!(stage.process(other(1), &meta(1, 1)).await.unwrap_err().is_transient());
    assert!(stage.process(other(2), &meta(2, 1)).await.unwrap_err().is_transient());
    let held = stage.process(other(3), &meta(3, 1)).await.unwrap_err();
    assert_eq!((held.kind, held.reason.as_str()), (ErrorKind::Outage, "circuit_open"), "held without spending an attempt");
    assert_eq!(*provider.calls.lock().unwrap(), 2, "no call while open");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(status(&stage.process(other(3), &meta(3, 2)).await.unwrap()), Status::Sent, "the probe goes through");
    let kinds: Vec<_> = alerts.raised().iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::BreakerOpened, AlertKind::BreakerHalfOpen, AlertKind::BreakerClosed]);
    assert!(alerts.raised().iter().all(|a| a.route == Some(Route::Log) && a.provider.as_deref() == Some("scripted")));
}

/// A provider that takes its time to answer each call with an outage.
struct SlowOutage(Arc<Scripted>);

impl Provider for SlowOutage {
    fn name(&self) -> &str {
        "slow"
    }
    fn send<'a>(&'a self, _delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(async move {
            *self.0.calls.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(ProviderError::outage("unavailable", "503"))
        })
    }
}

/// Deliveries queued behind the route's permits while its breaker opens are held when their
/// turn comes, not sent to the provider just found down: the breaker is asked after the permit.
#[tokio::test]
async fn deliveries_waiting_for_a_permit_when_the_breaker_opens_are_held_not_sent() {
    let counter = Arc::new(Scripted::default());
    let breaker = BreakerConfig { failures_to_open: 2, open_for: Duration::from_secs(60) };
    let gate = Gate::new(Arc::new(SlowOutage(counter.clone())), GateConfig { concurrency: 2, breaker, ..GateConfig::default() });
    let stage = Arc::new(Deliver::new(
        Route::Log,
        Arc::new(Providers::new().with_gate(Route::Log, gate)),
        MemoryKv::new(),
        DeliverConfig::default(),
    ));
    let waves: Vec<_> = (0..20u64)
        .map(|n| {
            let stage = stage.clone();
            tokio::spawn(async move {
                let d = Delivery { delivery_id: uuid::Uuid::from_u128(100 + u128::from(n)), ..delivery() };
                stage.process(d, &meta(n + 1, 1)).await.unwrap_err()
            })
        })
        .collect();
    let mut held = 0;
    for wave in waves {
        let error = wave.await.unwrap();
        held += usize::from(error.reason == "circuit_open");
    }
    assert_eq!(*counter.calls.lock().unwrap(), 2, "two calls (the permits) found the outage; no other delivery called");
    assert_eq!(held, 18, "the other 18 were held by the open breaker");
}

/// A provider of its own name, for chains.
struct Named(&'static str, Arc<Scripted>);

impl Provider for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        self.1.send(delivery)
    }
}

/// An SMS route served by `first`, failing over to `second`.
fn chain(
    first: Vec<Result<Receipt, ProviderError>>,
    second: Vec<Result<Receipt, ProviderError>>,
) -> (Deliver<MemoryKv>, Arc<Scripted>, Arc<Scripted>, Arc<MemoryDevices>) {
    let (a, b) = (
        Arc::new(Scripted { answers: Mutex::new(first), ..Scripted::default() }),
        Arc::new(Scripted { answers: Mutex::new(second), ..Scripted::default() }),
    );
    let breaker = BreakerConfig { failures_to_open: 2, open_for: Duration::from_secs(60) };
    let gate = |name, p: &Arc<Scripted>| {
        Gate::new(Arc::new(Named(name, p.clone())), GateConfig { concurrency: 4, breaker: breaker.clone(), ..GateConfig::default() })
    };
    let devices = Arc::new(MemoryDevices::default());
    let mut providers = Providers::new().with_gate(Route::Sms, gate("twilio", &a)).with_gate(Route::Sms, gate("vonage", &b));
    providers.devices = Some(devices.clone());
    (Deliver::new(Route::Sms, Arc::new(providers), MemoryKv::new(), DeliverConfig::default()), a, b, devices)
}

fn text(id: u128) -> Delivery {
    Delivery {
        delivery_id: uuid::Uuid::from_u128(id),
        channel: Channel::Sms,
        address: "+14155550100".into(),
        user_id: Some("u-1".into()),
        ..delivery()
    }
}

fn calls(p: &Scripted) -> u32 {
    *p.calls.lock().unwrap()
}

#[tokio::test]
async fn an_outage_or_a_missing_account_fails_over_to_the_next_provider_once() {
    let (stage, twilio, vonage, _) =
        chain(vec![refused(true), Err(ProviderError::permanent("no_credentials", "none"))], vec![ok("v-1"), ok("v-2")]);
    for id in [1, 2] {
        let out = stage.process(text(id), &meta(id as u64, 1)).await.unwrap();
        assert_eq!(status(&out), Status::Sent);
        assert!(out.events()[0].detail.as_deref().is_some_and(|d| d.starts_with("vonage accepted")), "{:?}", out.events());
        let state = stage.states.get(text(id).delivery_id).await.unwrap().unwrap();
        assert!(matches!(state.phase, Phase::Sent { ref provider, .. } if provider == "vonage"));
    }
    assert_eq!((calls(&twilio), calls(&vonage)), (2, 2), "one call each per delivery");
    // A redelivery of a sent one calls nobody.
    assert_eq!(status(&stage.process(text(1), &meta(1, 2)).await.unwrap()), Status::Sent);
    assert_eq!((calls(&twilio), calls(&vonage)), (2, 2));
}

#[tokio::test]
async fn a_failover_provider_without_an_account_leaves_the_first_ones_outage_to_retry() {
    let no_account = || Err(ProviderError::permanent("no_credentials", "tenant `acme` has no Vonage account"));
    let (stage, twilio, vonage, _) = chain(vec![refused(true), ok("t-1")], vec![no_account()]);
    let err = stage.process(text(1), &meta(1, 1)).await.unwrap_err();
    assert_eq!(
        (err.kind, err.reason.as_str()),
        (ErrorKind::Outage, "unavailable"),
        "held for Twilio's outage, not failed for Vonage's missing account: {err:?}"
    );
    assert!(err.detail.contains("vonage: tenant `acme` has no Vonage account"), "{err:?}");
    assert_eq!(status(&stage.process(text(1), &meta(1, 2)).await.unwrap()), Status::Sent, "Twilio back: sent there");
    assert_eq!((calls(&twilio), calls(&vonage)), (2, 1));
    // No account anywhere is no outage: it fails, for good.
    let (stage, _, _, _) = chain(vec![no_account()], vec![no_account()]);
    let out = stage.process(text(2), &meta(2, 1)).await.unwrap();
    assert_eq!((status(&out), out.events()[0].reason.as_deref()), (Status::Failed, Some("no_credentials")));
}

#[tokio::test]
async fn no_answer_is_retried_on_the_same_provider_never_failed_over() {
    let timeout = ProviderError::outage("timeout", "no answer in 10 s");
    let (stage, twilio, vonage, _) = chain(vec![Err(timeout), ok("t-1")], vec![]);
    let err = stage.process(text(1), &meta(1, 1)).await.unwrap_err();
    assert_eq!((err.kind, err.reason.as_str()), (ErrorKind::Transient, "timeout"), "Twilio may have sent it: retried there");
    assert_eq!(calls(&vonage), 0);
    assert_eq!(status(&stage.process(text(1), &meta(1, 2)).await.unwrap()), Status::Sent);
    assert_eq!((calls(&twilio), calls(&vonage)), (2, 0));
}

#[tokio::test]
async fn an_open_breaker_passes_the_delivery_to_the_next_provider_without_a_call() {
    let (stage, twilio, vonage, _) = chain(vec![refused(true), refused(true)], vec![ok("v-1"), ok("v-2"), ok("v-3")]);
    for id in 1..=3 {
        assert_eq!(status(&stage.process(text(id), &meta(id as u64, 1)).await.unwrap()), Status::Sent);
    }
    assert_eq!((calls(&twilio), calls(&vonage)), (2, 3), "the third skipped Twilio: its breaker opened after two");
}

#[tokio::test]
async fn a_stop_records_the_opt_out_and_later_texts_to_the_number_are_opted_out_unsent() {
    let stop = ProviderError::new(Class::OptedOut, "21610", "Attempt to send to unsubscribed recipient");
    let (stage, twilio, vonage, devices) = chain(vec![Err(stop)], vec![]);
    let out = stage.process(text(1), &meta(1, 1)).await.unwrap();
    let statuses: Vec<_> = out.events().iter().map(|e| (e.status, e.reason.clone().unwrap_or_default())).collect();
    assert_eq!(statuses, [(Status::OptedOut, OPTED_OUT.to_owned()), (Status::Unsubscribed, "21610".to_owned())]);
    assert_eq!(calls(&vonage), 0, "a STOP is not failed over");
    let recorded = devices.opt_outs.lock().unwrap().values().cloned().collect::<Vec<_>>();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].user.as_deref(), recorded[0].address.as_str(), recorded[0].channel),
        (Some("u-1"), "+14155550100", Channel::Sms)
    );
    // A redelivery reports the same; another text to the number calls nobody.
    assert_eq!(status(&stage.process(text(1), &meta(1, 2)).await.unwrap()), Status::OptedOut);
    let out = stage.process(text(2), &meta(2, 1)).await.unwrap();
    assert_eq!((status(&out), out.events().len()), (Status::OptedOut, 1));
    assert_eq!((calls(&twilio), calls(&vonage)), (1, 0));
}

#[tokio::test]
async fn failover_orders_come_from_config_per_route_and_tenant() {
    use crate::config::{Failover, TenantFailover};
    use crate::providers::ProviderPorts;
    let ports = || ProviderPorts {
        credentials: Arc::new(crate::ports::memory::MemoryCredentials::default()),
        devices: Arc::new(MemoryDevices::default()),
        alerts: Arc::new(MemoryAlerts::default()),
        attachments: None,
        inbox: None,
        rates: Arc::new(|_, _| panic!("no rate limit is configured")),
    };
    let build = |failover: Failover| {
        let config = DeliverConfig { failover, ..DeliverConfig::default() };
        Providers::from_config(&config, Some(ports()))
    };
    let names = |providers: &Providers, tenant: &str, route: Route| -> Vec<String> {
        providers.chain(tenant, route).iter().map(|g| g.provider.name().to_owned()).collect()
    };
    let defaults = build(Failover::default()).unwrap();
    assert_eq!(names(&defaults, "acme", Route::Sms), ["twilio", "vonage"]);
    assert_eq!(names(&defaults, "acme", Route::Email), ["smtp", "sendgrid"]);
    let acme = TenantFailover { sms: None, email: Some(vec!["sendgrid".into()]) };
    let failover =
        Failover { email: vec!["sendgrid".into(), "smtp".into()], tenants: [("acme".into(), acme)].into(), ..Failover::default() };
    let providers = build(failover).unwrap();
    assert_eq!(names(&providers, "globex", Route::Email), ["sendgrid", "smtp"], "the deployment's order");
    assert_eq!(names(&providers, "acme", Route::Email), ["sendgrid"], "the tenant's own");
    assert_eq!(names(&providers, "acme", Route::Sms), ["twilio", "vonage"], "a channel the tenant left out follows the deployment");

    let unknown = build(Failover { email: vec!["smtp".into(), "mailgun".into()], ..Failover::default() }).unwrap_err();
    assert!(
        unknown.to_string().contains("deliver.failover.email names `mailgun`, which is no email provider (sendgrid, smtp)"),
        "{unknown}"
    );
    let empty = build(Failover { sms: vec![], ..Failover::default() }).unwrap_err();
    assert!(empty.to_string().contains("deliver.failover.sms is empty"), "{empty}");
}
