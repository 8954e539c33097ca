//! The runner against a real nats-server, with stages made for the purpose.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_nats::server::NatsServer;
use herald_nats::{Nats, RunnerConfig, StageStats, Topology, TopologyConfig};
use herald_stage::{Meta, Outcome, RawRequest, Stage, StageError};
use tokio_util::sync::CancellationToken;

/// Sleeps `work` per message, counting calls per message and the most running at once.
#[derive(Clone, Default)]
struct Probe {
    work: Duration,
    calls: Arc<Mutex<HashMap<u64, u32>>>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Stage for Probe {
    const NAME: &'static str = "probe";
    type Input = RawRequest;

    async fn process(&self, _input: RawRequest, meta: &Meta) -> Result<Outcome, StageError> {
        *self.calls.lock().unwrap().entry(meta.sequence).or_default() += 1;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(Outcome::new())
    }
}

async fn setup(ack_wait: Duration) -> (NatsServer, Nats) {
    let server = NatsServer::start_temp().await.unwrap();
    let topology = Topology::new(TopologyConfig { ack_wait, ..TopologyConfig::default() }).unwrap();
    let nats = Nats::connect(server.url(), "runner-test", topology).await.unwrap();
    nats.provision().await.unwrap();
    (server, nats)
}

/// Publishes `n` messages to the enrich stream, which the probe consumes.
async fn feed(nats: &Nats, n: usize) {
    let subject = nats.topology().hop_subject(herald_stage::Hop::Enrich, "acme", None);
    for i in 0..n {
        nats.publish_raw(&subject, Bytes::from(format!("message {i}"))).await.unwrap();
    }
}

async fn run_until(nats: &Nats, probe: Probe, config: RunnerConfig, done: impl Fn(&Probe) -> bool) -> Arc<StageStats> {
    let cancel = CancellationToken::new();
    let stats = Arc::new(StageStats::default());
    let consumer = nats.topology().consumer("enrich", None).unwrap();
    let task = tokio::spawn({
        let (nats, probe, stats, cancel) = (nats.clone(), probe.clone(), stats.clone(), cancel.clone());
        async move { nats.run_stage(probe, consumer, config, stats, cancel).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&probe) {
        assert!(tokio::time::Instant::now() < deadline, "the runner did not finish the work");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    stats
}

#[tokio::test]
async fn slow_work_is_kept_alive_with_progress_acks_and_not_redelivered() {
    let (_server, nats) = setup(Duration::from_secs(1)).await;
    feed(&nats, 3).await;
    let probe = Probe { work: Duration::from_millis(2_500), ..Probe::default() };
    let stats = run_until(&nats, probe.clone(), RunnerConfig::default(), |p| {
        p.calls.lock().unwrap().len() == 3 && p.running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(stats.acked.load(Ordering::SeqCst), 3);
    assert!(probe.calls.lock().unwrap().values().all(|&c| c == 1), "each message processed once: {:?}", probe.calls.lock().unwrap());
    let status = nats.status().await.unwrap();
    let enrich = status.iter().find(|c| c.consumer == "enrich").unwrap();
    assert_eq!((enrich.redelivered, enrich.ack_pending, enrich.pending), (0, 0, 0), "{enrich:?}");
}

#[tokio::test]
async fn in_flight_work_is_bounded() {
    let (_server, nats) = setup(Duration::from_secs(30)).await;
    feed(&nats, 60).await;
    let probe = Probe { work: Duration::from_millis(30), ..Probe::default() };
    let config = RunnerConfig { max_in_flight: 4, batch: 16, ..RunnerConfig::default() };
    run_until(&nats, probe.clone(), config, |p| p.calls.lock().unwrap().len() == 60 && p.running.load(Ordering::SeqCst) == 0).await;
    let most = probe.most.load(Ordering::SeqCst);
    assert!(most <= 4, "at most 4 at once, saw {most}");
    assert!(most >= 2, "work does run concurrently, saw {most}");
}

#[tokio::test]
async fn stopping_finishes_what_was_taken() {
    let (_server, nats) = setup(Duration::from_secs(30)).await;
    feed(&nats, 40).await;
    let probe = Probe { work: Duration::from_millis(300), ..Probe::default() };
    let config = RunnerConfig { max_in_flight: 8, batch: 8, ..RunnerConfig::default() };
    // Stop as soon as the first messages are being worked on.
    let stats = run_until(&nats, probe.clone(), config, |p| p.running.load(Ordering::SeqCst) > 0).await;
    let started = probe.calls.lock().unwrap().len() as u64;
    assert!(started > 0 && started < 40);
    assert_eq!(stats.acked.load(Ordering::SeqCst), started, "everything started was finished and acked");
    let status = nats.status().await.unwrap();
    let enrich = status.iter().find(|c| c.consumer == "enrich").unwrap();
    assert_eq!(enrich.ack_pending, 0, "nothing left unacknowledged: {enrich:?}");
    assert_eq!(enrich.pending, 40 - started);
}
