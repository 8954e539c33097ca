//! Faults: crashes, graceful stops and provider outages must lose nothing and send nothing twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use herald_schemas::Status;
use herald_tests::{Options, TestEnv, count_statuses, welcome};

const PATIENCE: Duration = Duration::from_secs(60);
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Every notification id that was accepted, from the tracking stream.
fn accepted(events: &[herald_schemas::TrackEvent]) -> HashSet<uuid::Uuid> {
    events.iter().filter(|e| e.status == Status::Accepted).filter_map(|e| e.notification_id).collect()
}

#[tokio::test]
async fn sigkill_mid_run_then_restart_delivers_every_request_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let n = 1_000;
    let up = env.spawn("up-1", &["up"])?;
    let publisher = {
        let nats = env.nats.clone();
        tokio::spawn(async move {
            for i in 0..n {
                nats.publish_request("acme", welcome(USERS[i % 4]).into(), None).await?;
            }
            anyhow::Ok(())
        })
    };
    // Kill it in the middle: some delivered, many not.
    env.wait_for_records(n / 5, PATIENCE).await?;
    up.kill().await?;
    let at_kill = env.records().len();
    publisher.await??;
    assert!(at_kill < n, "the kill came too late to test anything ({at_kill} of {n} done)");

    let up = env.spawn("up-2", &["up"])?;
    env.wait_for_records(n, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let events = env.wait_for_events("acme", Status::Sent, n, PATIENCE).await?;

    let records = env.records();
    assert_eq!(records.len(), n, "every request delivered, none twice");
    let per_notification: HashMap<String, usize> = records.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r["notification_id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        m
    });
    assert_eq!(per_notification.len(), n, "one record for each of the {n} notifications");
    assert!(per_notification.values().all(|&c| c == 1));
    let counts = count_statuses(&events);
    assert_eq!(counts.get(&Status::Accepted), Some(&n), "{counts:?}");
    assert_eq!(counts.get(&Status::Sent), Some(&n), "one sent event per delivery: {counts:?}");
    assert_eq!(accepted(&events).len(), n);
    assert!(!counts.contains_key(&Status::DeadLettered), "{counts:?}");
    let status = env.nats.status().await?;
    assert!(status.iter().all(|c| c.pending == 0 && c.ack_pending == 0), "nothing left pending: {status:?}");
    // What the provider saw, repeats included: only the calls in flight at the kill (a call
    // holds one of `deliver.concurrency` = 64 permits until its outcome is recorded) may have
    // been made a second time, after their lease, with the same idempotency key.
    let calls = env.calls().len();
    let second = env.second_calls();
    eprintln!(
        "killed with {at_kill}/{n} delivered; the provider received {calls} calls, {second} of them a second call for a delivery; the log sink absorbed {}",
        env.absorbed_duplicates()
    );
    assert!(second <= 64, "at most the calls in flight at the kill are repeated, not {second}");
    assert_eq!(calls, n + second, "every other delivery reached the provider exactly once");
    up.terminate(PATIENCE).await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_nothing_is_redelivered() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let n = 600;
    for i in 0..n {
        env.publish("acme", welcome(USERS[i % 4])).await?;
    }
    let up = env.spawn("up-1", &["up"])?;
    env.wait_for_records(n / 10, PATIENCE).await?;
    assert!(up.terminate(PATIENCE).await?, "a clean exit after SIGTERM");
    let status = env.nats.status().await?;
    assert!(status.iter().all(|c| c.ack_pending == 0), "everything taken was finished and acked: {status:?}");

    let up = env.spawn("up-2", &["up"])?;
    env.wait_for_records(n, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let status = env.nats.status().await?;
    assert!(status.iter().all(|c| c.redelivered == 0), "nothing was redelivered: {status:?}");
    assert_eq!(env.records().len(), n);
    assert_eq!(env.calls().len(), n, "the provider was called once per delivery");
    assert_eq!(env.second_calls(), 0);
    assert_eq!(env.absorbed_duplicates(), 0);
    up.terminate(PATIENCE).await?;
    Ok(())
}

/// Breaks the log channel's directory (a file where the directory was) until `repair` says so.
struct BrokenSink {
    dir: std::path::PathBuf,
    aside: std::path::PathBuf,
}

impl BrokenSink {
    fn break_it(env: &TestEnv) -> anyhow::Result<Self> {
        let dir = env.deliveries_dir();
        let aside = env.dir.path().join("deliveries.aside");
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(&dir, &aside)?;
        std::fs::write(&dir, b"not a directory")?;
        Ok(BrokenSink { dir, aside })
    }

    fn repair(self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.dir)?;
        std::fs::rename(&self.aside, &self.dir)?;
        Ok(())
    }
}

#[tokio::test]
async fn a_transient_provider_failure_is_retried_with_backoff() -> anyhow::Result<()> {
    let env = TestEnv::with(Options { max_deliveries: 8, ..Options::default() }).await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    // The directory must exist before breaking it: up creates it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broken = BrokenSink::break_it(&env)?;
    env.publish("acme", welcome("alice")).await?;
    let events = env.wait_for_events("acme", Status::Retrying, 3, PATIENCE).await?;
    broken.repair()?;
    let events = env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await.map(|_| events)?;
    let all = env.events("acme").await?;

    let retries: Vec<_> = events.iter().filter(|e| e.status == Status::Retrying).collect();
    assert!(retries.iter().all(|e| e.reason.as_deref() == Some("io_error") && e.stage == "deliver"), "{retries:?}");
    let attempts: Vec<u32> = retries.iter().map(|e| e.attempt).collect();
    assert_eq!(&attempts[..3], &[1, 2, 3], "one retry event per attempt");
    // Backoff: 200 ms doubling, with jitter in [0.5, 1): gaps of at least 100 ms, then 200 ms.
    let gap = |a: usize, b: usize| retries[b].at.duration_since(retries[a].at).as_secs_f64();
    assert!(gap(0, 1) >= 0.1, "first gap {}", gap(0, 1));
    assert!(gap(1, 2) >= 0.2, "second gap {}", gap(1, 2));
    let sent = all.iter().find(|e| e.status == Status::Sent).expect("sent");
    assert!(sent.attempt >= 4, "sent on a later attempt: {}", sent.attempt);
    assert_eq!(env.records().len(), 1);
    assert!(env.nats.dead_letters("deliver", "acme").await?.is_empty());
    up.terminate(PATIENCE).await?;
    Ok(())
}

#[tokio::test]
async fn a_persistent_failure_is_dead_lettered_after_max_deliveries() -> anyhow::Result<()> {
    let env = TestEnv::with(Options { max_deliveries: 3, ..Options::default() }).await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _broken = BrokenSink::break_it(&env)?;
    env.publish("acme", welcome("bob")).await?;
    let events = env.wait_for_events("acme", Status::DeadLettered, 1, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let retries: Vec<u32> = events.iter().filter(|e| e.status == Status::Retrying).map(|e| e.attempt).collect();
    assert_eq!(retries, [1, 2], "retried until the last of 3 attempts");
    let dead = events.iter().find(|e| e.status == Status::DeadLettered).expect("dead_lettered event");
    assert_eq!(dead.reason.as_deref(), Some("io_error"));
    assert_eq!(dead.attempt, 3);
    assert_eq!(dead.stage, "deliver");
    assert!(dead.delivery_id.is_some() && dead.user_id.as_deref() == Some("bob"));
    let letters = env.nats.dead_letters("deliver", "acme").await?;
    assert_eq!(letters.len(), 1, "the delivery sits in the dead-letter stream");
    assert_eq!(letters[0].0, "io_error");
    let body: serde_json::Value = serde_json::from_slice(&letters[0].1)?;
    assert_eq!(body["user_id"], "bob", "the original message is kept for redrive");
    assert!(!events.iter().any(|e| e.status == Status::Sent));
    up.terminate(PATIENCE).await?;
    Ok(())
}
