//! The runner's verdicts against a real nats-server: a hold that runs out, an output no stream
//! can store, and the deliver stage on the real state bucket when its state write fails after the
//! provider accepted. Events are read where analysts read them: the track stage runs too.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_deliver::{Deliver, DeliverConfig, Provider, Providers, Receipt, SendFuture};
use herald_nats::server::NatsServer;
use herald_nats::{Nats, NatsKv, RunnerConfig, StageStats, Topology, TopologyConfig};
use herald_schemas::{Delivery, Route, Status, TrackEvent};
use herald_stage::{Created, Entry, Hop, KeyValue, Meta, Outcome, PortError, RawRequest, Stage, StageError, Swapped};
use herald_track::Track;
use tokio_util::sync::CancellationToken;

async fn setup(topology: TopologyConfig) -> (NatsServer, Nats) {
    let server = NatsServer::start_temp().await.unwrap();
    let nats = Nats::connect(server.url(), "outcomes-test", Topology::new(topology).unwrap()).await.unwrap();
    nats.provision().await.unwrap();
    (server, nats)
}

/// Runs `stage` on `consumer` and the track stage beside it until `cancel` fires.
fn run<S: Stage>(nats: &Nats, stage: S, consumer: (&str, Option<Route>), config: RunnerConfig, cancel: &CancellationToken) {
    let consumer = nats.topology().consumer(consumer.0, consumer.1).unwrap();
    let (n, c, cfg) = (nats.clone(), cancel.clone(), config.clone());
    tokio::spawn(async move { n.run_stage(stage, consumer, cfg, Arc::new(StageStats::default()), c).await });
    let track = nats.topology().consumer("track", None).unwrap();
    let (n, c) = (nats.clone(), cancel.clone());
    tokio::spawn(async move { n.run_stage(Track, track, config, Arc::new(StageStats::default()), c).await });
}

/// Waits until the tracking stream holds an event with `status`; returns all events.
async fn wait_for(nats: &Nats, status: Status) -> Vec<TrackEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = nats.events_snapshot("acme").await.unwrap();
        if events.iter().any(|e| e.status == status) {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "no `{status}` event: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stage whose dependency never comes back.
struct Stuck;

impl Stage for Stuck {
    const NAME: &'static str = "enrich";
    type Input = RawRequest;

    async fn process(&self, _input: RawRequest, _meta: &Meta) -> Result<Outcome, StageError> {
        Err(StageError::outage("store_unavailable", "the store does not answer"))
    }
}

#[tokio::test]
async fn a_hold_is_reported_once_and_bounded_then_retries_count() {
    let (_server, nats) = setup(TopologyConfig { max_deliveries: 2, ..TopologyConfig::default() }).await;
    let subject = nats.topology().hop_subject(Hop::Enrich, "acme", None);
    nats.publish_raw(&subject, Bytes::from_static(b"{}")).await.unwrap();
    let config = RunnerConfig {
        hold_max: Duration::from_millis(600),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..RunnerConfig::default()
    };
    let cancel = CancellationToken::new();
    run(&nats, Stuck, ("enrich", None), config, &cancel);
    let events = wait_for(&nats, Status::DeadLettered).await;
    cancel.cancel();
    let kinds: Vec<(Status, u32)> = events.iter().map(|e| (e.status, e.attempt)).collect();
    assert_eq!(
        kinds,
        [(Status::Held, 1), (Status::Retrying, 1), (Status::Held, 2), (Status::DeadLettered, 2)],
        "one hold per attempt, each bounded; then the retry budget"
    );
    assert!(events.iter().all(|e| e.reason.as_deref() == Some("store_unavailable")), "{events:?}");
    let letters = nats.dead_letters("enrich", "acme").await.unwrap();
    assert_eq!(letters.len(), 1);
}

/// A stage whose output is larger than the streams take.
struct Bulky;

impl Stage for Bulky {
    const NAME: &'static str = "enrich";
    type Input = RawRequest;

    async fn process(&self, _input: RawRequest, _meta: &Meta) -> Result<Outcome, StageError> {
        let mut delivery = herald_stage::memory::delivery(5);
        delivery.data.insert("blob".into(), "x".repeat(20_000).into());
        Outcome::new().forward(Hop::Render, &delivery)
    }
}

#[tokio::test]
async fn an_output_no_stream_can_store_fails_before_publishing() {
    let (_server, nats) = setup(TopologyConfig { max_message_size: 16 * 1024, ..TopologyConfig::default() }).await;
    let subject = nats.topology().hop_subject(Hop::Enrich, "acme", None);
    nats.publish_raw(&subject, Bytes::from_static(b"{\"notification_id\":\"00000000-0000-0000-0000-000000000009\"}")).await.unwrap();
    let cancel = CancellationToken::new();
    run(&nats, Bulky, ("enrich", None), RunnerConfig::default(), &cancel);
    let events = wait_for(&nats, Status::Failed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let failed: Vec<_> = events.iter().filter(|e| e.status == Status::Failed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("payload_too_large"));
    assert!(failed[0].detail.as_deref().unwrap().contains("15360"), "names the limit: {failed:?}");
    assert!(!events.iter().any(|e| e.status == Status::Held), "never held: {events:?}");
    let status = nats.status().await.unwrap();
    let enrich = status.iter().find(|c| c.consumer == "enrich").unwrap();
    assert_eq!((enrich.pending, enrich.ack_pending, enrich.redelivered), (0, 0, 0), "terminated, not held: {enrich:?}");
    let render = nats.stream_sizes().await.unwrap().into_iter().find(|(s, _)| s == "HERALD_RENDER").unwrap().1;
    assert_eq!(render, 0, "nothing was published");
}

/// A render stage whose output fits the streams but leaves no room for what dedupe and
/// throttle add to a delivery.
struct Snug(usize);

impl Stage for Snug {
    const NAME: &'static str = "render";
    type Input = RawRequest;

    async fn process(&self, _input: RawRequest, _meta: &Meta) -> Result<Outcome, StageError> {
        let mut delivery = herald_stage::memory::delivery(6);
        delivery.data.insert("blob".into(), String::new().into());
        let empty = serde_json::to_vec(&delivery).unwrap().len();
        delivery.data.insert("blob".into(), "x".repeat(self.0 - empty).into());
        assert_eq!(serde_json::to_vec(&delivery).unwrap().len(), self.0);
        Outcome::new().forward(Hop::Dedupe, &delivery)
    }
}

#[tokio::test]
async fn a_rendered_delivery_must_leave_room_to_grow() {
    let topology = TopologyConfig { max_message_size: 16 * 1024, ..TopologyConfig::default() };
    let limit = Topology::new(topology.clone()).unwrap().max_payload();
    let (_server, nats) = setup(topology).await;
    let subject = nats.topology().hop_subject(Hop::Render, "acme", None);
    nats.publish_raw(&subject, Bytes::from_static(b"{}")).await.unwrap();
    let cancel = CancellationToken::new();
    // 100 bytes under the streams' limit: it would be stored, but its claim could not be.
    run(&nats, Snug(limit - 100), ("render", None), RunnerConfig::default(), &cancel);
    let events = wait_for(&nats, Status::Failed).await;
    cancel.cancel();
    let failed: Vec<_> = events.iter().filter(|e| e.status == Status::Failed).collect();
    assert_eq!(failed[0].reason.as_deref(), Some("payload_too_large"));
    assert!(failed[0].detail.as_deref().unwrap().contains("what dedupe and throttle add"), "{failed:?}");
    let dedupe = nats.stream_sizes().await.unwrap().into_iter().find(|(s, _)| s == "HERALD_DEDUPE").unwrap().1;
    assert_eq!(dedupe, 0, "failed before anything was claimed or published");
}

/// The real KV bucket, whose compare-and-swaps fail while `failing` counts down: the store
/// going away for a moment right after the provider accepted.
#[derive(Clone)]
struct Flaky {
    inner: NatsKv,
    failing: Arc<AtomicU32>,
}

impl KeyValue for Flaky {
    async fn create(&self, key: &str, value: Bytes) -> Result<Created, PortError> {
        self.inner.create(key, value).await
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>, PortError> {
        self.inner.entry(key).await
    }

    async fn swap(&self, key: &str, value: Bytes, revision: u64) -> Result<Swapped, PortError> {
        if self.failing.load(Ordering::SeqCst) > 0 {
            self.failing.fetch_sub(1, Ordering::SeqCst);
            return Err(PortError::unavailable("kv bucket herald-dedupe", "connection lost"));
        }
        self.inner.swap(key, value, revision).await
    }
}

/// Accepts everything, counts its calls, and breaks the state store as it answers.
struct Counting {
    calls: Mutex<u32>,
    break_store: Arc<AtomicU32>,
}

impl Provider for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(async move {
            *self.calls.lock().unwrap() += 1;
            self.break_store.store(3, Ordering::SeqCst);
            Ok(Receipt { provider_message_id: format!("c-{}", delivery.delivery_id), duplicate: false })
        })
    }
}

#[tokio::test]
async fn when_the_state_write_fails_after_the_provider_accepted_the_provider_is_called_once() {
    let (_server, nats) = setup(TopologyConfig { ack_wait: Duration::from_secs(1), ..TopologyConfig::default() }).await;
    // Claimed by dedupe first, as in the pipeline, which passes its claim along to deliver.
    let kv = nats.kv(&nats.topology().dedupe_bucket()).await.unwrap();
    let delivery = herald_stage::memory::delivery(11);
    let herald_dedupe::Claim::Won(claim) = herald_dedupe::States::new(kv.clone()).claim(delivery.delivery_id, 1).await.unwrap() else {
        panic!("the claim is ours")
    };
    let delivery = Delivery { claim, ..delivery };

    let failing = Arc::new(AtomicU32::new(0));
    let provider = Arc::new(Counting { calls: Mutex::new(0), break_store: failing.clone() });
    let providers = Arc::new(Providers::new().with(Route::Log, provider.clone(), 4));
    let stage = Deliver::new(Route::Log, providers, Flaky { inner: kv.clone(), failing: failing.clone() }, DeliverConfig::default());
    let deliver_subject = nats.topology().hop_subject(Hop::Deliver(Route::Log), "acme", None);
    nats.publish_raw(&deliver_subject, Bytes::from(serde_json::to_vec(&delivery).unwrap())).await.unwrap();
    let cancel = CancellationToken::new();
    run(&nats, stage, ("deliver", Some(Route::Log)), RunnerConfig::default(), &cancel);
    let events = wait_for(&nats, Status::Sent).await;
    // Longer than the ack wait: a redelivery, had there been one, would have come by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cancel.cancel();

    assert_eq!(*provider.calls.lock().unwrap(), 1, "one provider call, however often the state write failed");
    assert_eq!(failing.load(Ordering::SeqCst), 0, "the three failed writes were retried");
    let state = herald_dedupe::States::new(kv).get(delivery.delivery_id).await.unwrap().unwrap();
    assert!(matches!(state.phase, herald_dedupe::Phase::Sent { .. }), "{state:?}");
    assert_eq!(events.iter().filter(|e| e.status == Status::Sent).count(), 1, "{events:?}");
    let status = nats.status().await.unwrap();
    let deliver = status.iter().find(|c| c.consumer == "deliver-log").unwrap();
    assert_eq!((deliver.pending, deliver.ack_pending, deliver.redelivered), (0, 0, 0), "{deliver:?}");
}

/// Defers each delivery to throttle at the time the test wrote in its `deferred_until`.
struct Later;

impl Stage for Later {
    const NAME: &'static str = "dedupe";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, _meta: &Meta) -> Result<Outcome, StageError> {
        let at = delivery.deferred_until.unwrap();
        Outcome::new().defer(Hop::Throttle, &delivery, at)
    }
}

/// What waits for throttle's `normal` lane now.
async fn throttle_pending(nats: &Nats) -> u64 {
    nats.status().await.unwrap().into_iter().find(|c| c.consumer == "throttle").map(|c| c.pending).unwrap_or(0)
}

#[tokio::test]
async fn a_deferred_output_is_published_when_due_and_a_due_one_at_once_under_its_own_id() {
    let (_server, nats) = setup(TopologyConfig::default()).await;
    let cancel = CancellationToken::new();
    run(&nats, Later, ("dedupe", None), RunnerConfig::default(), &cancel);
    let now = jiff::Timestamp::now();
    let subject = nats.topology().hop_subject(Hop::Dedupe, "acme", None);
    // The same delivery deferred three times: twice to a time already past (published at once,
    // each under an id of its own, so the second is not taken for a repeat of the first), once
    // to two seconds from now (held by the server until then).
    for at in
        [now - jiff::SignedDuration::from_secs(10), now - jiff::SignedDuration::from_secs(5), now + jiff::SignedDuration::from_secs(2)]
    {
        let delivery = Delivery { deferred_until: Some(at), ..herald_stage::memory::delivery(7) };
        nats.publish_raw(&subject, Bytes::from(serde_json::to_vec(&delivery).unwrap())).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while throttle_pending(&nats).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the due deferrals were not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(throttle_pending(&nats).await, 2, "the future one waits with the server");
    while throttle_pending(&nats).await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the scheduled deferral never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(jiff::Timestamp::now() >= now + jiff::SignedDuration::from_secs(2), "not before its time");
    cancel.cancel();
}
