//! When a notification goes out: idempotency, frequency caps across throttle replicas, quiet
//! hours, scheduled sends through a `kill -9`, cancels, and priority lanes. Real `herald`
//! processes against a real nats-server; what a provider saw is counted in the log sink's
//! `calls.jsonl`, repeats included.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use herald_schemas::{Priority, Status, TrackEvent};
use herald_tests::{Options, TestEnv, welcome};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(30);

/// The provider calls for `user`, with when each was made.
fn calls_for(env: &TestEnv, user: &str) -> Vec<Timestamp> {
    env.calls().iter().filter(|c| c["user_id"] == user).filter_map(|c| c["at"].as_str().and_then(|t| t.parse().ok())).collect()
}

fn with_status(events: &[TrackEvent], status: Status) -> Vec<&TrackEvent> {
    events.iter().filter(|e| e.status == status).collect()
}

#[tokio::test]
async fn an_idempotency_key_admits_one_request_names_the_original_and_refuses_another_payload() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    let body = json!({ "template": "welcome", "recipients": [{ "user_id": "alice" }], "idempotency_key": "signup-42" }).to_string();
    // The first request, then its repeats (a producer retrying) and a different request under
    // the same key. (Requests racing in one stage at once are admitted in whatever order they
    // finish; the key still admits exactly one.)
    let mut ids = vec![env.publish_in("acme", Priority::Normal, body.clone()).await?];
    env.wait_for_events("acme", Status::Accepted, 1, PATIENCE).await?;
    for _ in 0..2 {
        ids.push(env.publish_in("acme", Priority::Normal, body.clone()).await?);
    }
    let other = json!({ "template": "welcome", "recipients": [{ "user_id": "dave" }], "idempotency_key": "signup-42" }).to_string();
    let conflicting = env.publish_in("acme", Priority::Normal, other).await?;

    env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let events = env.events("acme").await?;
    let duplicates = with_status(&events, Status::Deduplicated);
    assert_eq!(duplicates.len(), 2, "{events:?}");
    let mut repeats: Vec<_> = duplicates.iter().filter_map(|d| d.notification_id).collect();
    repeats.sort();
    let mut expected = ids[1..].to_vec();
    expected.sort();
    assert_eq!(repeats, expected, "each repeat is reported under its own id");
    assert!(duplicates.iter().all(|d| d.original_notification_id == Some(ids[0])), "and names the original");
    let rejected = with_status(&events, Status::Rejected);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason.as_deref(), Some("idempotency_conflict"));
    assert_eq!(rejected[0].notification_id, Some(conflicting));
    assert_eq!(rejected[0].original_notification_id, Some(ids[0]));
    assert_eq!(env.calls().len(), 1, "one delivery reached the provider");
    assert_eq!(calls_for(&env, "dave").len(), 0);
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

/// Two throttle processes share one count: a cap of N lets exactly N through however the
/// deliveries race, and deferred deliveries go out when the window opens, N per window.
#[tokio::test]
async fn two_throttle_replicas_let_exactly_the_cap_through() -> anyhow::Result<()> {
    const N: usize = 5;
    let caps = format!(
        r#"
[[throttle.caps]]
name = "promo-daily"
scope = "user_category"
categories = ["promo"]
limit = {N}
window = "1h"
kind = "sliding"
policy = "throttle"

[[throttle.caps]]
name = "digest-burst"
scope = "user_category"
categories = ["digest"]
limit = {N}
window = "2s"
policy = "defer"
"#
    );
    let env = TestEnv::with(Options { extra_config: caps, ..Options::default() }).await?;
    env.provision().await?;
    env.seed().await?;
    let rest = env.spawn("rest", &["stage", "ingest", "enrich", "fanout", "render", "dedupe", "deliver", "track"])?;
    // The embedded file store is held by `rest`; the throttles read no tenant caps (the
    // configured defaults apply) from stores of their own.
    let memory = [("HERALD__STORE__URL", "mem://")];
    let first = env.spawn_with_env("throttle-1", &["stage", "throttle"], &memory)?;
    let second = env.spawn_with_env("throttle-2", &["stage", "throttle"], &memory)?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Start right after a 2 s window opens, so the first window's calls cannot spill over.
    while Timestamp::now().as_millisecond() % 2000 > 150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = |user: &str, category: &str| {
        json!({ "template": "welcome", "recipients": [{ "user_id": user }], "category": category, "data": { "plan": "team" } }).to_string()
    };
    let bodies: Vec<String> = (0..10 * N).flat_map(|_| [request("alice", "promo"), request("dave", "digest")]).collect();
    let publishes = bodies.into_iter().map(|b| env.publish("acme", b));
    futures::future::try_join_all(publishes).await?;

    let events = env.wait_for_events("acme", Status::Throttled, 9 * N, PATIENCE).await?;
    let throttled = with_status(&events, Status::Throttled);
    assert!(
        throttled.iter().all(|e| e.user_id.as_deref() == Some("alice") && e.detail.as_deref().unwrap_or_default().contains("promo-daily"))
    );
    env.wait_for_events("acme", Status::Sent, 10 * N + N, Duration::from_secs(60)).await?;
    env.wait_idle(PATIENCE).await?;

    assert_eq!(calls_for(&env, "alice").len(), N, "exactly the cap of the `throttle` policy went out");
    let dave = calls_for(&env, "dave");
    assert_eq!(dave.len(), 10 * N, "every deferred delivery went out in the end");
    let events = env.events("acme").await?;
    let deferred = with_status(&events, Status::Deferred);
    assert!(deferred.len() >= 9 * N, "{} deferrals", deferred.len());
    assert!(deferred.iter().all(|e| e.deferred_until.is_some() && e.reason.as_deref() == Some("frequency_cap")));
    // The window each delivery went out in: the time of its last deferral (when it came back and
    // was let through), or the first window for those let through at once.
    let mut released: BTreeMap<_, Timestamp> = BTreeMap::new();
    for event in &deferred {
        let (Some(id), Some(until)) = (event.delivery_id, event.deferred_until) else { continue };
        let last = released.entry(id).or_insert(until);
        *last = (*last).max(until);
    }
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for until in released.values() {
        *per_window.entry(until.as_millisecond().div_euclid(2000)).or_default() += 1;
    }
    let first_window = 10 * N - released.len();
    assert_eq!(first_window, N, "{N} went out at once, the rest were deferred");
    assert!(per_window.values().all(|n| *n <= N), "never more than {N} per window: {per_window:?}");
    assert!(per_window.len() >= 9, "nine more windows' worth: {per_window:?}");
    // Where the provider sees it: no 2 s window of calls holds more than two windows' worth
    // (a call may land just after its window while the next window's calls start).
    let mut call_windows: BTreeMap<i64, usize> = BTreeMap::new();
    for at in &dave {
        *call_windows.entry(at.as_millisecond().div_euclid(2000)).or_default() += 1;
    }
    assert!(call_windows.values().all(|n| *n <= 2 * N), "{call_windows:?}");
    assert_eq!(env.second_calls(), 0);
    for process in [first, second, rest] {
        assert!(process.terminate(PATIENCE).await?);
    }
    Ok(())
}

#[tokio::test]
async fn quiet_hours_defer_to_their_end_and_critical_goes_at_once() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    // Quinn, in Seoul, is in quiet hours that end 8 seconds from now.
    let tz = jiff::tz::TimeZone::get("Asia/Seoul")?;
    let end = (Timestamp::now() + SignedDuration::from_secs(8)).round(jiff::Unit::Second)?;
    let local_end = end.to_zoned(tz.clone()).time();
    let local_start = (end - SignedDuration::from_hours(1)).to_zoned(tz).time();
    let quinn = json!({
        "id": "quinn", "timezone": "Asia/Seoul",
        "preferences": { "quiet_hours": { "start": local_start.strftime("%H:%M:%S").to_string(), "end": local_end.strftime("%H:%M:%S").to_string() } }
    });
    let file = env.dir.path().join("quinn.jsonl");
    std::fs::write(&file, format!("{quinn}\n"))?;
    env.import(&file, true).await?;
    let up = env.spawn("up", &["up"])?;

    let normal = env.publish_in("acme", Priority::Normal, welcome("quinn")).await?;
    let urgent = json!({ "template": "welcome", "recipients": [{ "user_id": "quinn" }], "priority": "critical" }).to_string();
    let critical = env.publish_in("acme", Priority::Critical, urgent).await?;

    let events = env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    let first_sent = with_status(&events, Status::Sent);
    assert_eq!(first_sent[0].notification_id, Some(critical), "critical went first");
    assert!(Timestamp::now() < end, "and before the quiet hours ended");
    let deferred = with_status(&events, Status::Deferred);
    assert_eq!(deferred.len(), 1, "{events:?}");
    assert_eq!(deferred[0].notification_id, Some(normal));
    assert_eq!(deferred[0].deferred_until, Some(end), "deferred to the end of the quiet hours");
    assert_eq!(deferred[0].reason.as_deref(), Some("quiet_hours"));

    env.wait_for_events("acme", Status::Sent, 2, PATIENCE).await?;
    let calls = calls_for(&env, "quinn");
    assert_eq!(calls.len(), 2);
    assert!(calls[0] < end, "the critical one during the quiet hours");
    assert!(calls[1] >= end, "the normal one not before they ended: {} < {end}", calls[1]);
    assert!(calls[1] < end + SignedDuration::from_secs(5), "and soon after: {}", calls[1]);
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

#[tokio::test]
async fn a_scheduled_send_survives_kill_9_and_a_cancel_before_it_fires_sends_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    let send_at = (Timestamp::now() + SignedDuration::from_secs(10)).round(jiff::Unit::Millisecond)?;
    let scheduled =
        |user: &str| json!({ "template": "welcome", "recipients": [{ "user_id": user }], "send_at": send_at.to_string() }).to_string();
    // One through the command line, as a producer would type it.
    let said = env.run(&["send", "--tenant", "acme", "--template", "welcome", "--to", "alice", "--send-at", &send_at.to_string()]).await?;
    let kept: uuid::Uuid = said.split_whitespace().skip_while(|w| *w != "notification").nth(1).context("no id printed")?.parse()?;
    let cancelled = env.publish_in("acme", Priority::Normal, scheduled("dave")).await?;
    let events = env.wait_for_events("acme", Status::Scheduled, 2, PATIENCE).await?;
    assert!(with_status(&events, Status::Scheduled).iter().all(|e| e.scheduled_for == Some(send_at)));

    let answer = env.run(&["cancel", &cancelled.to_string(), "--tenant", "acme", "--by", "test"]).await?;
    assert!(answer.contains("1 scheduled copy removed"), "{answer}");

    // Every Herald process dies without a chance to drain, and comes back before the time.
    up.kill().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.calls().is_empty(), "nothing went out early");
    let up = env.spawn("up-again", &["up"])?;

    let events = env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    let sent = with_status(&events, Status::Sent);
    assert_eq!(sent[0].notification_id, Some(kept));
    let calls = calls_for(&env, "alice");
    assert_eq!(calls.len(), 1);
    assert!(calls[0] >= send_at, "not before send_at: {} < {send_at}", calls[0]);
    assert!(calls[0] < send_at + SignedDuration::from_secs(1), "within a second after it: {} vs {send_at}", calls[0]);
    // Give the cancelled one every chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.wait_idle(PATIENCE).await?;
    assert!(calls_for(&env, "dave").is_empty(), "the cancelled notification sent nothing");
    let events = env.events("acme").await?;
    let cancels = with_status(&events, Status::Cancelled);
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0].notification_id, Some(cancelled));
    assert_eq!(env.calls().len(), 1);
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

/// A copy that fired before the cancel reached the broker (here: a deferral the cancel could
/// not find because the scheduler had already published it) is stopped by throttle's check.
#[tokio::test]
async fn a_cancel_also_stops_a_scheduled_copy_that_already_fired() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    // Everything but throttle runs: the fired copy waits in throttle's stream.
    let rest = env.spawn("rest", &["stage", "ingest", "enrich", "fanout", "render", "dedupe", "deliver", "track"])?;
    let send_at = Timestamp::now() + SignedDuration::from_secs(2);
    let body = json!({ "template": "welcome", "recipients": [{ "user_id": "alice" }], "send_at": send_at.to_string() }).to_string();
    let id = env.publish_in("acme", Priority::Normal, body).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let answer = env.run(&["cancel", &id.to_string(), "--tenant", "acme"]).await?;
    assert!(answer.contains("0 scheduled copies removed"), "it had fired already: {answer}");
    let throttle = env.spawn_with_env("throttle", &["stage", "throttle"], &[("HERALD__STORE__URL", "mem://")])?;
    let events = env.wait_for_events("acme", Status::Cancelled, 2, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let cancels = with_status(&events, Status::Cancelled);
    assert!(cancels.iter().any(|e| e.stage == "throttle" && e.delivery_id.is_some()), "{cancels:?}");
    assert!(env.calls().is_empty(), "nothing sent");
    for process in [throttle, rest] {
        assert!(process.terminate(PATIENCE).await?);
    }
    Ok(())
}

/// A tenant's own caps, set through the admin API, replace the defaults in throttle at once; bad
/// caps and bad quiet hours are refused with a code; a reset brings the defaults back.
#[tokio::test]
async fn a_tenants_caps_are_managed_through_the_admin_api_and_enforced() -> anyhow::Result<()> {
    use reqwest::Method;
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;

    let (status, shown) = env.api(Method::GET, "/caps", None).await?;
    assert_eq!((status, shown["source"].as_str()), (200, Some("default")), "{shown}");
    let bad = json!({ "caps": [{ "name": "x", "scope": "user", "limit": 0, "window": "1h" }] });
    let (status, error) = env.api(Method::PUT, "/caps", Some(bad)).await?;
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_cap")), "{error}");
    let quiet = json!({ "quiet_hours": { "start": "22:00", "end": "25:00" } });
    let (status, error) = env.api(Method::PUT, "/users/alice/preferences", Some(quiet)).await?;
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_quiet_hours")), "{error}");

    // Sliding, so no window boundary can fall between the three sends.
    let caps = json!({ "caps": [{ "name": "one-a-minute", "scope": "user", "limit": 1, "window": "1m", "kind": "sliding" }] });
    let (status, _) = env.api(Method::PUT, "/caps", Some(caps)).await?;
    assert_eq!(status, 204);
    let shown = env.run(&["caps", "show", "--tenant", "acme"]).await?;
    assert!(shown.contains("\"tenant\"") && shown.contains("one-a-minute"), "{shown}");

    for _ in 0..3 {
        env.publish("acme", welcome("alice")).await?;
    }
    let events = env.wait_for_events("acme", Status::Throttled, 2, PATIENCE).await?;
    assert!(with_status(&events, Status::Throttled).iter().all(|e| e.detail.as_deref().unwrap_or_default().contains("one-a-minute")));
    env.wait_idle(PATIENCE).await?;
    assert_eq!(calls_for(&env, "alice").len(), 1, "the tenant's cap of one let one through");

    let (status, _) = env.api(Method::DELETE, "/caps", None).await?;
    assert_eq!(status, 204);
    let (status, shown) = env.api(Method::GET, "/caps", None).await?;
    assert_eq!((status, shown["source"].as_str()), (200, Some("default")));
    let (status, _) = env.api(Method::DELETE, "/caps", None).await?;
    assert_eq!(status, 404, "nothing left to reset");
    // With the defaults (no caps) back, alice is not held any more.
    env.publish("acme", welcome("alice")).await?;
    env.wait_for_events("acme", Status::Sent, 2, PATIENCE).await?;
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

/// "One order update per user per 10 minutes": a producer dedupe key lets the first delivery
/// per recipient through and reports the rest, counted at the provider.
#[tokio::test]
async fn a_producer_dedupe_key_sends_one_per_recipient_within_its_window() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    let update = |user: &str, n: u32| {
        json!({
            "template": "welcome", "recipients": [{ "user_id": user }], "data": { "plan": format!("update {n}") },
            "dedupe_key": "order-42-status", "dedupe_window": "10m",
        })
        .to_string()
    };
    for n in 0..3 {
        env.publish("acme", update("alice", n)).await?;
    }
    env.publish("acme", update("dave", 0)).await?;
    let events = env.wait_for_events("acme", Status::Deduplicated, 2, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let events = env.events("acme").await.unwrap_or(events);
    let repeats = with_status(&events, Status::Deduplicated);
    assert_eq!(repeats.len(), 2, "{repeats:?}");
    assert!(repeats.iter().all(|e| e.reason.as_deref() == Some("dedupe_key") && e.user_id.as_deref() == Some("alice")));
    assert_eq!(calls_for(&env, "alice").len(), 1, "one update reached alice");
    assert_eq!(calls_for(&env, "dave").len(), 1, "dave has a window of his own");
    assert_eq!(env.second_calls(), 0);
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

/// Queues `backlog` requests in the `bulk` lane, then `probes` in the `urgent` lane, starts the
/// pipeline and returns where the probes' provider calls came among all calls.
async fn probe_positions(bulk: Priority, backlog: usize, urgent: Priority, probes: usize) -> anyhow::Result<Vec<usize>> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let request = |user: &str, priority: Priority| {
        json!({ "template": "welcome", "recipients": [{ "user_id": user }], "priority": priority }).to_string()
    };
    let users = ["alice", "dave", "carol"];
    let publishes = (0..backlog).map(|i| env.publish_in("acme", bulk, request(users[i % users.len()], bulk)));
    futures::future::try_join_all(publishes).await?;
    for _ in 0..probes {
        env.publish_in("acme", urgent, request("bob", urgent)).await?;
    }
    let up = env.spawn("up", &["up"])?;
    env.wait_for_events("acme", Status::Sent, backlog + probes, Duration::from_secs(240)).await?;
    let calls = env.calls();
    assert_eq!(calls.len(), backlog + probes);
    let positions: Vec<usize> = calls.iter().enumerate().filter(|(_, c)| c["user_id"] == "bob").map(|(i, _)| i).collect();
    assert_eq!(positions.len(), probes);
    assert!(up.terminate(PATIENCE).await?);
    Ok(positions)
}

/// Critical probes published behind a backlog of normal notifications are delivered long before
/// the backlog drains: every stage reads the critical lane on its own consumer. (The benchmark
/// measures the same with 50 000 queued; see README.)
#[tokio::test]
async fn critical_notifications_overtake_a_normal_backlog() -> anyhow::Result<()> {
    const BACKLOG: usize = 5_000;
    let positions = probe_positions(Priority::Normal, BACKLOG, Priority::Critical, 20).await?;
    let last = *positions.last().context("no probe")?;
    assert!(last < BACKLOG / 10, "every probe went out within the first tenth of the backlog; the last was call #{last}");
    Ok(())
}

/// A flood of `low` cannot starve `normal`: normal requests published behind thousands of low
/// ones go out among the first deliveries, on consumers of their own.
#[tokio::test]
async fn a_low_flood_does_not_starve_normal() -> anyhow::Result<()> {
    const FLOOD: usize = 3_000;
    let positions = probe_positions(Priority::Low, FLOOD, Priority::Normal, 20).await?;
    let last = *positions.last().context("no probe")?;
    assert!(last < FLOOD / 4, "every normal request went out within the first quarter of the low flood; the last was call #{last}");
    Ok(())
}
