//! The pipeline end to end: the real `herald` binary against a real nats-server.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use herald_schemas::Status;
use herald_tests::{TestEnv, count_statuses, welcome};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_request_yields_a_sent_event_and_one_record_per_recipient() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let mut up = env.spawn("up", &["up"])?;
    let request = serde_json::json!({
        "template": "order_shipped",
        "recipients": [{ "user_id": "alice" }, { "user_id": "bob" }, { "user_id": "carol" }],
        "data": { "order_id": "A-1", "items": 2, "eta": "Friday" },
    });
    env.publish("acme", request.to_string()).await?;
    let events = env.wait_for_events("acme", Status::Sent, 3, PATIENCE).await?;
    up.assert_running()?;

    let counts = count_statuses(&events);
    assert_eq!(counts.get(&Status::Accepted), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&Status::Sent), Some(&3), "{counts:?}");
    let notification = events.iter().find(|e| e.status == Status::Accepted).and_then(|e| e.notification_id);
    assert!(notification.is_some());
    assert!(events.iter().all(|e| e.notification_id == notification && e.tenant == "acme"));

    let records = env.records();
    let mut users: Vec<_> = records.iter().map(|r| r["user_id"].as_str().unwrap_or_default().to_owned()).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob", "carol"]);
    // Bob (en-US) gets the default locale; Alice (ko-KR) the `ko` one, by fallback.
    let record = |user: &str| records.iter().find(|r| r["user_id"] == user).cloned().expect("a record");
    let bob = record("bob");
    assert_eq!(bob["parts"]["title"], "Order A-1 has shipped");
    assert_eq!(bob["parts"]["body"], "2 items on the way; arriving Friday.");
    let alice = record("alice");
    assert_eq!(alice["parts"]["title"], "주문 A-1 발송 완료");
    assert_eq!((alice["locale"].as_str(), alice["template_version"].as_u64()), (Some("ko"), Some(1)));
    up.terminate(PATIENCE).await?;
    Ok(())
}

#[tokio::test]
async fn a_malformed_request_is_rejected_with_a_reason_and_not_retried() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    env.publish("acme", "this is not json").await?;
    env.publish("acme", r#"{"template":"welcome","recipients":[]}"#).await?;
    env.publish("acme", r#"{"template":"welcome","recipients":[{"user_id":"alice"}],"colour":"blue"}"#).await?;
    let events = env.wait_for_events("acme", Status::Rejected, 3, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    // Give a retry every chance to show up, then look again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = env.events("acme").await?;
    assert_eq!(again.len(), events.len(), "no new events after the rejections: {:?}", count_statuses(&again));

    let mut reasons: Vec<_> =
        events.iter().filter(|e| e.status == Status::Rejected).map(|e| e.reason.clone().unwrap_or_default()).collect();
    reasons.sort();
    assert_eq!(reasons, ["invalid_json", "invalid_json", "no_recipients"]);
    let colour = events.iter().find(|e| e.detail.as_deref().is_some_and(|d| d.contains("colour")));
    assert!(colour.is_some(), "the rejection names the unknown field");
    assert!(events.iter().all(|e| e.status == Status::Rejected), "{:?}", count_statuses(&events));

    let ingest = env.nats.status().await?.into_iter().find(|c| c.consumer == "ingest").expect("ingest consumer");
    assert_eq!(ingest.redelivered, 0, "rejections are not retried");
    assert!(env.nats.dead_letters("ingest", "acme").await?.is_empty(), "rejections are not dead letters");
    assert!(env.records().is_empty());
    up.terminate(PATIENCE).await?;
    Ok(())
}

#[tokio::test]
async fn send_and_status_commands_work_end_to_end() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    let out = env
        .run(&["send", "--tenant", "acme", "--template", "welcome", "--to", "alice", "--to", "dave", "--data", r#"{"plan":"pro"}"#])
        .await?;
    assert!(out.contains("(request #1, normal lane)"), "{out}");
    // The id it prints is the one ingest gives the notification.
    let id = out.split_whitespace().skip_while(|w| *w != "notification").nth(1).context("no notification id printed")?.to_owned();
    let sent = env.wait_for_events("acme", Status::Sent, 2, PATIENCE).await?;
    assert!(
        sent.iter().filter(|e| e.status == Status::Sent).all(|e| e.notification_id.map(|n| n.to_string()) == Some(id.clone())),
        "{id}: {sent:?}"
    );
    env.wait_idle(PATIENCE).await?;
    let status: serde_json::Value = serde_json::from_str(&env.run(&["status", "--json"]).await?)?;
    let consumers = status["consumers"].as_array().expect("consumers");
    assert!(consumers.iter().all(|c| c["pending"] == 0 && c["ack_pending"] == 0), "{status}");
    assert_eq!(status["streams"]["HERALD_REQUESTS"], 1);
    let lanes = env.run(&["status"]).await?;
    assert!(lanes.contains("enrich-critical") && lanes.contains("deliver-log-low"), "every lane has its consumer:\n{lanes}");
    let busy = env.run(&["status", "--busy"]).await?;
    assert!(busy.contains("idle consumers not shown") && !busy.contains("enrich-critical"), "{busy}");
    let tail = env.run(&["events", "tail", "--tenant", "acme", "--status", "sent", "--from-start", "--count", "2"]).await?;
    assert_eq!(tail.lines().count(), 2, "{tail}");
    for line in tail.lines() {
        let event: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(event["status"], "sent");
    }
    up.terminate(PATIENCE).await?;
    Ok(())
}

#[tokio::test]
async fn two_deliver_processes_share_one_consumer_and_deliver_each_once() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    // Both deliver processes are up and asking for work before any arrives, so neither can
    // drain the queue while the other is still starting.
    let a = env.spawn("deliver-a", &["stage", "deliver"])?;
    let b = env.spawn("deliver-b", &["stage", "deliver"])?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = env.nats.status().await?;
        if status.iter().find(|c| c.consumer == "deliver-log").is_some_and(|c| c.waiting >= 2) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the deliver processes did not start pulling: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let upstream = env.spawn("upstream", &["stage", "ingest", "enrich", "render", "dedupe", "throttle", "track"])?;
    let n = 1_000;
    for i in 0..n {
        env.publish("acme", welcome(["alice", "bob", "carol", "dave"][i % 4])).await?;
    }
    env.wait_for_events("acme", Status::Sent, n, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let records = env.records();
    assert_eq!(records.len(), n, "one record per delivery");
    let ids: HashSet<_> = records.iter().map(|r| r["delivery_id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(ids.len(), n);
    let senders: HashSet<_> = records.iter().map(|r| r["sender_pid"].as_u64().unwrap_or_default()).collect();
    assert_eq!(senders.len(), 2, "both deliver processes did part of the work");
    assert_eq!(env.calls().len(), n, "the provider was called once per delivery");
    assert_eq!(env.second_calls(), 0, "no delivery reached the provider twice");
    assert_eq!(env.absorbed_duplicates(), 0, "no delivery was sent twice");
    let events = env.events("acme").await?;
    assert_eq!(count_statuses(&events).get(&Status::Sent), Some(&n));
    for process in [a, b, upstream] {
        assert!(process.terminate(PATIENCE).await?);
    }
    Ok(())
}

#[tokio::test]
async fn provisioning_is_idempotent_and_reports_what_changed() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let first = env.provision().await?;
    assert!(first.lines().all(|l| l.starts_with("created")), "{first}");
    assert!(first.contains("stream HERALD_REQUESTS") && first.contains("consumer HERALD_DELIVER/deliver-log"), "{first}");
    let second = env.provision().await?;
    assert!(second.lines().all(|l| l.starts_with("unchanged")), "{second}");
    // A changed knob is applied in place and named.
    let mut command = env.herald(&["provision"]);
    command.env("HERALD__TOPOLOGY__MAX_AGE", "3days");
    let output = command.output().await?;
    let third = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{third}");
    assert!(third.contains("updated    stream HERALD_EVENTS: max_age: 7days → 3days"), "{third}");
    Ok(())
}

#[tokio::test]
async fn the_demo_starts_its_own_nats_server_when_none_is_configured() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        dir.path().join("herald.toml"),
        format!("[nats]\nembedded_port = {port}\nembedded_store = \"nats-store\"\n\n[deliver.log]\ndir = \"records\"\n"),
    )?;
    let output = tokio::process::Command::new(herald_tests::herald_bin())
        .args(["demo", "--count", "100"])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("No NATS server at nats://127.0.0.1:{port}; starting nats-server")), "{stderr}");
    assert!(dir.path().join("nats-store").is_dir(), "the embedded server keeps its data where configured");
    // 100 sample requests: 2 malformed, 2 to an unknown user, the rest reach someone.
    assert!(stdout.contains("rejected"), "{stdout}");
    let sent = stdout.lines().find_map(|l| l.trim().strip_prefix("sent").map(|n| n.trim().parse::<usize>())).transpose()?.unwrap_or(0);
    let records = std::fs::read_dir(dir.path().join("records"))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        .count();
    // Push, SMS, calls and e-mail went to the sandboxes in the demo's process; their own counts, repeats
    // included. Vonage stands by for SMS (Twilio is up), so it may have received nothing; the
    // relay refuses carol's e-mail (451) and each such refusal is one e-mail SendGrid sent.
    let mut pushed = 0;
    let mut refused = std::collections::HashMap::new();
    for provider in ["apns", "fcm", "web_push", "twilio", "twilio_voice", "vonage", "smtp", "sendgrid"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{provider} ")))
            .with_context(|| format!("no {provider} count:\n{stdout}"))?;
        let numbers: Vec<usize> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert_eq!(numbers.len(), 2, "{line}");
        assert!(numbers[0] > 0 || provider == "vonage", "{provider} received messages: {line}");
        if provider != "smtp" {
            assert_eq!(numbers[1], 0, "{provider} refused nothing: {line}");
        }
        refused.insert(provider, numbers[1]);
        pushed += numbers[0];
    }
    let line = |p: &str| stdout.lines().find(|l| l.trim_start().starts_with(&format!("{p} "))).unwrap_or_default().to_owned();
    let accepted_by_sendgrid: usize = line("sendgrid").split_whitespace().find_map(|w| w.parse().ok()).unwrap_or(0);
    assert_eq!(refused["smtp"], accepted_by_sendgrid, "each relay refusal failed over once: {}\n{}", line("smtp"), line("sendgrid"));
    assert!(stdout.contains("SendGrid took over carol@example.com's e-mail"), "{stdout}");
    // Twilio's signed status callbacks and SendGrid's signed events came back to the demo's API:
    // one `delivered` per text, call and e-mail they accepted (every sandbox call is answered).
    let delivered = stdout.lines().find_map(|l| l.trim().strip_prefix("delivered ").map(|n| n.trim().parse::<usize>())).transpose()?;
    let twilio: usize = ["twilio", "twilio_voice", "sendgrid"]
        .iter()
        .filter_map(|p| line(p).split_whitespace().find_map(|w| w.parse::<usize>().ok()))
        .sum();
    assert_eq!(delivered, Some(twilio), "a delivered receipt per Twilio message and call and SendGrid e-mail:\n{stdout}");
    let inbox = stdout
        .lines()
        .find_map(|l| l.strip_prefix("In-app inboxes received ").and_then(|r| r.split_whitespace().next()).map(str::parse::<usize>))
        .with_context(|| format!("no inbox count:\n{stdout}"))??;
    assert!(inbox > 0, "the in-app sample reached an inbox: {stdout}");
    assert!(sent > 90, "{stdout}");
    assert_eq!(records + pushed + inbox, sent, "one log record, accepted provider call or inbox message per sent event");
    // The server it started is gone with it.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the embedded server stopped with the demo");
    Ok(())
}
