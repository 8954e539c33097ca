//! "Never twice", counted where a provider would see it: the `log` provider's call log
//! (`calls.jsonl`, repeats included), never the records it already deduplicates. And the
//! failures that used to hold messages forever or send twice: an unreadable store row, an
//! oversized output, an idempotency key reused after its TTL, a group that changes during a
//! crash, a configuration that contradicts itself, a tenant that cannot be a subject token.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use herald_nats::server::NatsServer;
use herald_nats::{Nats, Topology, TopologyConfig};
use herald_schemas::Status;
use herald_tests::{ADMIN_TOKEN, Options, TestEnv, count_statuses, welcome};

const PATIENCE: Duration = Duration::from_secs(60);
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Two users: `herald` may do anything; `noack` may not acknowledge messages — its acks are
/// dropped by the server, exactly as if it died after publishing and before acking.
const AUTHORIZATION: &str = r#"
authorization {
  users = [
    { user: herald, password: herald }
    { user: noack, password: noack, permissions: { publish: { deny: ["$JS.ACK.>"] } } }
  ]
}
"#;

#[tokio::test]
async fn a_stage_killed_before_acking_and_back_after_the_duplicate_window_sends_nothing_twice() -> anyhow::Result<()> {
    let server = NatsServer::start_temp_with_config(AUTHORIZATION).await?;
    let port = server.url().rsplit(':').next().unwrap_or_default().to_owned();
    let url = format!("nats://herald:herald@127.0.0.1:{port}");
    let noack = format!("nats://noack:noack@127.0.0.1:{port}");
    let env = TestEnv::on(server, &url, Options::default()).await?;
    env.provision().await?;
    env.seed().await?;
    // The streams remember `Nats-Msg-Id`s for 2 s only (the herald processes keep the safe
    // default in their own configuration, which is what they check).
    let short = TopologyConfig { duplicate_window: Duration::from_secs(2), ..env.topology.clone() };
    let report = Nats::connect(&url, "short-window", Topology::new(short)?).await?.provision().await?;
    assert!(report.changes.iter().any(|c| c.to_string().contains("duplicate_window")), "{:?}", report.changes);

    let rest = env.spawn("rest", &["stage", "ingest", "enrich", "fanout", "render", "dedupe", "deliver", "track"])?;
    // Throttle reads tenants' caps from the store; the embedded file store is held by `rest`, so
    // the throttle processes use an empty one of their own (no tenant caps: the defaults).
    let forgetful =
        env.spawn_with_env("throttle-noack", &["stage", "throttle"], &[("HERALD__NATS__URL", &noack), ("HERALD__STORE__URL", "mem://")])?;
    let n = 20;
    for i in 0..n {
        env.publish("acme", welcome(USERS[i % 4])).await?;
    }
    // Throttle published every delivery on to deliver, which sent them; it acked none.
    env.wait_for_records(n, PATIENCE).await?;
    forgetful.kill().await?;
    let throttle = env.nats.status().await?.into_iter().find(|c| c.consumer == "throttle").expect("throttle consumer");
    assert_eq!(throttle.ack_pending, n as u64, "the killed stage acked nothing: {throttle:?}");

    // Back after the duplicate window (and the ack wait): every throttle message is processed
    // again and its output published again, now stored as a new message.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = env.spawn_with_env("throttle", &["stage", "throttle"], &[("HERALD__STORE__URL", "mem://")])?;
    let events = env.wait_for_events("acme", Status::Deduplicated, n, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let deliver_copies = env.nats.stream_sizes().await?.into_iter().find(|(s, _)| s == "HERALD_DELIVER").map(|(_, m)| m).unwrap_or(0);
    assert!(deliver_copies >= 2 * n as u64, "each delivery reached deliver twice ({deliver_copies} messages)");
    let repeats: Vec<_> = events.iter().filter(|e| e.status == Status::Deduplicated).collect();
    assert!(repeats.iter().all(|e| e.stage == "deliver" && e.reason.as_deref() == Some("already_sent")), "{repeats:?}");
    assert_eq!(env.calls().len(), n, "the provider saw each delivery once");
    assert_eq!(env.second_calls(), 0, "zero duplicate provider calls");
    assert_eq!(env.records().len(), n);
    assert_eq!(count_statuses(&events).get(&Status::Sent), Some(&n));
    for process in [again, rest] {
        assert!(process.terminate(PATIENCE).await?);
    }
    Ok(())
}

#[tokio::test]
async fn a_row_that_does_not_decode_is_dead_lettered_at_once_and_the_rest_flow() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    // Erin's record gains a device no version of Herald can read (as a buggy writer or a newer
    // schema would leave it), written through the database's own client before Herald opens it.
    {
        let path = env.dir.path().join("data/store");
        let db = surrealdb::engine::any::connect(format!("surrealkv://{}", path.display())).await?;
        db.use_ns("herald").use_db("herald").await?;
        db.query("UPDATE type::record('user', ['acme', 'erin']) SET devices = [{ id: 'loft', platform: 'carrier-pigeon' }]")
            .await?
            .check()?;
    }
    let mut up = env.spawn("up", &["up"])?;
    // The embedded store's lock is released by a background task of the closed client.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !up.log().contains("Herald is up") {
        up.assert_running()?;
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "herald did not start: {}", up.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = 20;
    for i in 0..n {
        env.publish("acme", welcome(USERS[i % 4])).await?;
        if i % 10 == 4 {
            env.publish("acme", welcome("erin")).await?;
        }
    }
    env.wait_for_events("acme", Status::Sent, n, PATIENCE).await?;
    env.wait_for_events("acme", Status::DeadLettered, 2, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let events = env.events("acme").await?;

    let dead: Vec<_> = events.iter().filter(|e| e.status == Status::DeadLettered).collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let accepted: HashMap<_, _> = events.iter().filter(|e| e.status == Status::Accepted).map(|e| (e.notification_id, e.at)).collect();
    for event in &dead {
        assert_eq!((event.stage.as_str(), event.reason.as_deref()), ("enrich", Some("store_decode_failed")));
        assert!(event.detail.as_deref().unwrap_or_default().contains("carrier-pigeon"), "the reason names the bad value: {event:?}");
        assert_eq!(event.attempt, 1, "not retried: a row reads the same every time");
        let since = event.at.duration_since(accepted[&event.notification_id]);
        assert!(since.as_secs_f64() < 1.0, "dead-lettered {since:?} after it was accepted");
    }
    let letters = env.nats.dead_letters("enrich", "acme").await?;
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|(reason, _)| reason == "store_decode_failed"));
    assert_eq!(env.records().len(), n, "every other notification was delivered");

    // A tenant that cannot be a subject token is refused where it enters: the API and the CLI.
    let client = reqwest::Client::new();
    let answer =
        client.put(format!("{}/users/zed", env.api_url("acme.eu")?)).bearer_auth(ADMIN_TOKEN).json(&serde_json::json!({})).send().await?;
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await?;
    assert_eq!(body["error"]["code"], "invalid_tenant", "{body}");
    let refused = env.herald(&["send", "--tenant", "acme.eu", "--template", "welcome", "--to", "alice"]).output().await?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("subject token"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

#[tokio::test]
async fn an_output_over_the_max_message_size_fails_and_is_not_held() -> anyhow::Result<()> {
    let env = TestEnv::with(Options { topology_extra: "max_message_size = 16384".into(), ..Options::default() }).await?;
    env.provision().await?;
    env.seed().await?;
    let dir = env.dir.path().join("bulky");
    std::fs::create_dir_all(dir.join("bulky"))?;
    std::fs::write(dir.join("bulky/template.toml"), "[sample]\na = \"x\"\nb = \"y\"\n\n[log]\nbody = \"{{ data.a }}{{ data.b }}\"\n")?;
    env.run(&["templates", "push", &dir.to_string_lossy(), "--offline"]).await?;
    let up = env.spawn("up", &["up"])?;

    // 12 KB of data fits every stream on its way in; rendered into the body as well, the
    // delivery render would publish is twice that: over the 16 KiB the streams take.
    let big = serde_json::json!({
        "template": "bulky",
        "recipients": [{ "user_id": "alice" }],
        "data": { "a": "x".repeat(6_000), "b": "y".repeat(6_000) },
    });
    env.publish("acme", big.to_string()).await?;
    env.publish("acme", welcome("bob")).await?;
    let events = env.wait_for_events("acme", Status::Failed, 1, PATIENCE).await?;
    env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let failed = events.iter().find(|e| e.status == Status::Failed).expect("failed");
    assert_eq!((failed.stage.as_str(), failed.reason.as_deref()), ("render", Some("payload_too_large")), "{failed:?}");
    assert!(failed.detail.as_deref().unwrap_or_default().contains("topology.max_message_size"), "{failed:?}");
    let all = env.events("acme").await?;
    assert!(!all.iter().any(|e| matches!(e.status, Status::Held | Status::Retrying | Status::DeadLettered)), "failed once, never held");
    let render = env.nats.status().await?.into_iter().find(|c| c.consumer == "render").expect("render consumer");
    assert_eq!(render.redelivered, 0, "{render:?}");
    assert!(env.nats.dead_letters("render", "acme").await?.is_empty());
    let records = env.records();
    assert_eq!(records.len(), 1, "the message beside it went through");
    assert_eq!(records[0]["user_id"], "bob");
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

#[tokio::test]
async fn an_idempotency_key_reused_after_its_ttl_is_a_new_notification_that_is_delivered() -> anyhow::Result<()> {
    let env = TestEnv::with(Options { topology_extra: "idempotency_ttl = \"2s\"".into(), ..Options::default() }).await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    let request = serde_json::json!({
        "template": "welcome", "recipients": [{ "user_id": "alice" }], "data": { "plan": "team" }, "idempotency_key": "signup-alice",
    })
    .to_string();
    env.publish("acme", request.clone()).await?;
    env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    env.publish("acme", request.clone()).await?;
    let events = env.wait_for_events("acme", Status::Deduplicated, 1, PATIENCE).await?;
    let repeat = events.iter().find(|e| e.status == Status::Deduplicated).expect("deduplicated");
    assert_eq!(repeat.reason.as_deref(), Some("duplicate_idempotency_key"));

    // The key's TTL passes: the same key is a new notification, and it is delivered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.publish("acme", request).await?;
    let events = env.wait_for_events("acme", Status::Sent, 2, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let notifications: HashSet<_> = events.iter().filter(|e| e.status == Status::Accepted).filter_map(|e| e.notification_id).collect();
    assert_eq!(notifications.len(), 2, "two notifications accepted");
    assert_eq!(env.records().len(), 2, "both delivered");
    assert_eq!(env.second_calls(), 0);
    assert_eq!(count_statuses(&events).get(&Status::Deduplicated), Some(&1), "only the repeat within the TTL was dropped");
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

#[tokio::test]
async fn a_fanout_whose_group_changed_during_a_crash_delivers_each_member_once() -> anyhow::Result<()> {
    const MEMBERS: usize = 3_000;
    let env = TestEnv::with(Options { extra_config: "[enrich]\nfanout_page = 50\n".into(), ..Options::default() }).await?;
    env.provision().await?;
    let write = |name: &str, ids: &mut dyn Iterator<Item = String>| -> anyhow::Result<std::path::PathBuf> {
        let path = env.dir.path().join(name);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for id in ids {
            writeln!(file, r#"{{"id":"{id}","groups":["crowd"]}}"#)?;
        }
        file.flush()?;
        Ok(path)
    };
    let original: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:05}")).collect();
    env.import(&write("crowd.jsonl", &mut original.iter().cloned())?, true).await?;
    env.push_sample_templates().await?;
    let up = env.spawn("up-1", &["up"])?;
    env.publish("acme", serde_json::json!({ "template": "welcome", "recipients": [{ "group": "crowd" }], "data": {} }).to_string()).await?;
    env.wait_for_records(MEMBERS / 5, PATIENCE).await?;
    up.kill().await?;
    let at_kill = env.records().len();
    assert!(at_kill < MEMBERS, "the kill came too late to test anything ({at_kill} of {MEMBERS} done)");

    // While it is down the group changes: new members sort between the old ones, so every page
    // after the crash point covers other members than it did before.
    let joined: Vec<String> = (0..MEMBERS).step_by(10).map(|i| format!("m{i:05}a")).collect();
    env.import(&write("joined.jsonl", &mut joined.iter().cloned())?, true).await?;
    let up = env.spawn("up-2", &["up"])?;
    env.wait_for_records(MEMBERS, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let mut per_user: HashMap<String, usize> = HashMap::new();
    for call in env.calls() {
        *per_user.entry(call["user_id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let second = env.second_calls();
    let original_set: HashSet<&String> = original.iter().collect();
    let missing: Vec<_> = original.iter().filter(|u| !per_user.contains_key(*u)).take(5).collect();
    assert!(missing.is_empty(), "every member of the group before and after the crash was delivered: missing {missing:?}");
    let records_per_user = env.records().iter().fold(HashMap::<String, usize>::new(), |mut m, r| {
        *m.entry(r["user_id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        m
    });
    assert!(records_per_user.values().all(|&n| n == 1), "no member received it twice");
    assert!(per_user.keys().all(|u| original_set.contains(u) || joined.contains(u)), "only members were called");
    eprintln!("crashed at {at_kill}/{MEMBERS}; {} members called, {second} second calls (in flight at the kill)", per_user.len());
    assert!(second <= 64, "only the calls in flight at the kill may repeat, not {second}");
    let events = env.events("acme").await?;
    assert_eq!(count_statuses(&events).get(&Status::Accepted), Some(&1));
    assert!(up.terminate(PATIENCE).await?);
    Ok(())
}

#[tokio::test]
async fn a_configuration_that_contradicts_itself_is_refused_at_start_up_with_the_fix() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let output = env.herald(&["up"]).env("HERALD__TOPOLOGY__DUPLICATE_WINDOW", "10s").output().await?;
    assert!(!output.status.success(), "refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the configuration contradicts itself"), "{stderr}");
    assert!(stderr.contains("Raise duplicate_window to at least"), "the message names the fix: {stderr}");
    let streams = env.nats.stream_sizes().await;
    assert!(streams.is_err(), "nothing was provisioned before the refusal: {streams:?}");
    Ok(())
}
