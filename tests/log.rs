//! The notification log: `herald up` on a real nats-server writes every event of the tracking
//! stream into the store, and the status API reads it back. An SMS deferred by a frequency cap,
//! refused once by the Twilio sandbox (a 500, retried), then sent and delivered (the sandbox's
//! signed status callback) shows in `GET /notifications/{id}` with exactly the events the
//! tracking stream holds about it, in time order, and the delivery's status, attempts and
//! provider ids. Reading the whole stream into the log again (`herald log replay`), and
//! publishing every event into track again, leave every row as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use herald_sandbox::{Answer, FaultPlan, ProviderKind, SandboxOptions};
use herald_schemas::{Status, TrackEvent};
use herald_tests::{Options, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(60);

fn phone(n: usize) -> String {
    format!("+1415555{:04}", 3000 + n)
}

/// Every page of `path` (a delivery listing), newest first.
async fn all_pages(env: &TestEnv, path: &str) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=2&cursor={c}"),
            None => format!("{path}{sep}limit=2"),
        };
        let (status, page) = env.api(Method::GET, &url, None).await?;
        anyhow::ensure!(status == 200, "GET {url}: {status} {page}");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(items),
        }
    }
}

/// What the log shows: the whole listing and each notification's record.
async fn snapshot(env: &TestEnv, notifications: &[Uuid]) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let listing = all_pages(env, "/notifications").await?;
    let mut records = Vec::new();
    for n in notifications {
        let (status, record) = env.api(Method::GET, &format!("/notifications/{n}"), None).await?;
        anyhow::ensure!(status == 200, "GET /notifications/{n}: {status} {record}");
        records.push(record);
    }
    Ok((listing, records))
}

#[tokio::test]
async fn a_deferred_retried_then_delivered_sms_has_its_events_as_its_timeline_and_replays_change_nothing() -> anyhow::Result<()> {
    let (sandbox, ca_file, _ca) =
        herald_tests::sandbox_with_ca(SandboxOptions { callback_delay: Duration::from_millis(50), ..SandboxOptions::default() }).await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["sms"]
default_channels = ["sms"]

[deliver.tls]
extra_ca_file = "{ca}"

[deliver.twilio]
url = "{twilio}"

# Twilio alone: its 500 is retried on Twilio, not handed to another provider.
[deliver.failover]
sms = ["twilio"]

# One SMS per tenant every 4 s; the next waits for the window.
[[throttle.caps]]
name = "digest-burst"
scope = "tenant"
limit = 1
window = "4s"
policy = "defer"
"#,
        ca = ca_file.display(),
        twilio = sandbox.twilio_url(),
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    env.import_users(&[json!({ "id": "u-0", "phone": phone(0) }), json!({ "id": "u-1", "phone": phone(1) })]).await?;
    env.push_template("digest", "description = \"A digest.\"\n\n[sample]\nn = 1\n\n[sms]\nbody = \"Acme digest {{ data.n }}\"\n").await?;
    let api = env.api_url("acme")?.trim_end_matches("/v1/tenants/acme").to_owned();
    let receipts = format!("{api}/v1/receipts/twilio");
    let _up = env.spawn_with_env("up", &["up"], &[("HERALD__DELIVER__TWILIO__STATUS_CALLBACK", &receipts)])?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    env.put_provider("twilio", &accounts.twilio).await?;
    let send = |user: &str, n: u32| {
        json!({ "template": "digest", "recipients": [{ "user_id": user }], "category": "digest", "data": { "n": n } }).to_string()
    };

    // A takes the window's one slot; B, right behind it, is deferred to the next window, and
    // Twilio answers B's number 500 until the test sees B retried.
    env.publish("acme", send("u-1", 1)).await?;
    env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    let mut refusing = FaultPlan::default();
    refusing.tokens.insert(phone(0), Answer::new(500, "20500").with_message("Internal Server Error"));
    sandbox.set_faults(ProviderKind::Twilio, refusing);
    env.publish("acme", send("u-0", 2)).await?;
    env.wait_for_events("acme", Status::Deferred, 1, PATIENCE).await?;
    env.wait_for_events("acme", Status::Retrying, 1, PATIENCE).await?;
    sandbox.set_faults(ProviderKind::Twilio, FaultPlan::default());
    env.wait_for_events("acme", Status::Delivered, 2, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let events = env.events("acme").await?;
    let b = events.iter().find(|e| e.status == Status::Deferred).and_then(|e| e.notification_id).context("the deferred notification")?;
    let a = events
        .iter()
        .find(|e| e.status == Status::Accepted && e.notification_id != Some(b))
        .and_then(|e| e.notification_id)
        .context("the first notification")?;
    // The provider saw B refused once and accepted once.
    let to_b: Vec<_> = sandbox.received().into_iter().filter(|r| r.target == phone(0)).collect();
    let accepted: Vec<_> = to_b.iter().filter(|r| r.status < 300).collect();
    assert_eq!(accepted.len(), 1, "B reached Twilio's accepted messages once: {to_b:?}");
    assert!(to_b.iter().any(|r| r.status == 500), "B was refused first: {to_b:?}");

    // The status API: B's timeline is exactly the tracking stream's events about B.
    let (status, record) = env.api(Method::GET, &format!("/notifications/{b}"), None).await?;
    assert_eq!(status, 200, "{record}");
    let timeline: Vec<TrackEvent> = serde_json::from_value(record["timeline"].clone())?;
    let mut streamed: Vec<TrackEvent> = events.iter().filter(|e| e.notification_id == Some(b)).cloned().collect();
    let by_id = |v: &mut Vec<TrackEvent>| v.sort_by_key(|e| e.event_id);
    let mut logged = timeline.clone();
    by_id(&mut logged);
    by_id(&mut streamed);
    assert_eq!(logged, streamed, "the log holds each of B's events once, as the stream has it");
    assert!(timeline.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    let order: Vec<Status> = timeline.iter().map(|e| e.status).filter(|s| *s != Status::Held).collect();
    let story = [Status::Accepted, Status::Deferred, Status::Retrying, Status::Sent, Status::Delivered];
    let mut at = 0;
    for step in story {
        at += order[at..].iter().position(|s| *s == step).with_context(|| format!("{step} after {:?} in {order:?}", &order[..at]))? + 1;
    }
    let deliveries = record["deliveries"].as_array().context("deliveries")?;
    assert_eq!(deliveries.len(), 1, "{record}");
    let sms = &deliveries[0];
    let sent = timeline.iter().find(|e| e.status == Status::Sent).context("sent")?;
    let sid = accepted[0].message_id.clone().context("the sandbox's message sid")?;
    assert_eq!(sms["status"], "delivered", "{sms}");
    assert_eq!(sms["provider"], "twilio", "{sms}");
    assert_eq!(sms["provider_message_id"].as_str(), Some(sid.as_str()), "the sid Twilio gave: {sms}");
    assert_eq!(sent.provider_message_id.as_deref(), Some(sid.as_str()));
    assert!(sms["attempts"].as_u64() >= Some(2), "refused once, then sent: {sms}");
    // The log keeps times to the microsecond.
    let sent_at: jiff::Timestamp = sms["sent_at"].as_str().context("sent_at")?.parse()?;
    assert_eq!(sent_at.as_microsecond(), sent.at.as_microsecond(), "{sms}");
    assert!(sms["delivered_at"].is_string() && sms["user_id"] == "u-0" && sms["template"] == "digest", "{sms}");
    assert_eq!((record["status"].as_str(), record["template"].as_str()), (Some("accepted"), Some("digest")), "{record}");

    // Listings: filtered by status and user, paged with cursors.
    let delivered = all_pages(&env, "/notifications?status=delivered&channel=sms").await?;
    assert_eq!(delivered.len(), 2, "A and B: {delivered:?}");
    assert!(delivered[0]["first_at"].as_str() >= delivered[1]["first_at"].as_str(), "newest first");
    let history = all_pages(&env, "/users/u-0/notifications").await?;
    assert_eq!(history.iter().map(|d| d["notification_id"].as_str()).collect::<Vec<_>>(), [Some(b.to_string().as_str())]);
    assert!(all_pages(&env, "/notifications?status=failed").await?.is_empty());
    let (status, missing) = env.api(Method::GET, &format!("/notifications/{}", Uuid::from_u128(1)), None).await?;
    assert_eq!(status, 404, "{missing}");
    let (status, bad) = env.api(Method::GET, "/notifications/not-an-id", None).await?;
    assert_eq!(status, 400, "{bad}");

    // Replays: the whole stream read into the log again, then every event published into
    // track again. Neither adds or changes a row.
    let before = snapshot(&env, &[a, b]).await?;
    let js = async_nats::jetstream::new(async_nats::connect(env.server.url()).await?);
    let created_before = js.get_stream("HERALD_EVENTS").await?.consumer_info("log").await?.created;
    let replay = env.run(&["log", "replay"]).await?;
    let to_read: usize = replay.split_whitespace().find_map(|w| w.parse().ok()).context("the count `log replay` printed")?;
    assert_eq!(to_read, events.len(), "{replay}");
    env.wait_idle(PATIENCE).await?;
    // A new consumer, which the writer read every event through and acked.
    let mut stream = js.get_stream("HERALD_EVENTS").await?;
    let last = stream.info().await?.state.last_sequence;
    let log = stream.consumer_info("log").await?;
    assert_ne!(log.created, created_before, "the consumer was created anew");
    assert_eq!((log.ack_floor.stream_sequence, log.ack_floor.consumer_sequence), (last, events.len() as u64), "every event read again");
    assert_eq!(snapshot(&env, &[a, b]).await?, before, "reading the stream again changed the log");
    let track_before = js.get_stream("HERALD_TRACK").await?.info().await?.state.messages;
    for event in &events {
        js.publish("herald.stage.track.acme", serde_json::to_vec(event)?.into()).await?.await?;
    }
    assert_eq!(js.get_stream("HERALD_TRACK").await?.info().await?.state.messages, track_before + events.len() as u64);
    env.wait_idle(PATIENCE).await?;
    assert_eq!(env.events("acme").await?.len(), events.len(), "track published nothing twice");
    assert_eq!(snapshot(&env, &[a, b]).await?, before, "events replayed into track changed the log");
    let statuses: BTreeMap<String, usize> = before.0.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d["status"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        m
    });
    assert_eq!(statuses, BTreeMap::from([("delivered".to_owned(), 2)]), "{:?}", before.0);
    Ok(())
}
