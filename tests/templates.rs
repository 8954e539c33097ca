//! Templates end to end: publishing through the CLI and the admin API (checked, versioned,
//! immutable), previews, rendering in the pipeline, and templates that fail at render time:
//! an oversized APNs payload and a runaway loop, neither retried nor holding up other messages.

use std::time::Duration;

use herald_schemas::Status;
use herald_tests::{Options, TestEnv, count_statuses, samples_dir};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn templates_are_checked_versioned_previewed_and_rendered() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    let seeded = env.seed().await?;
    assert!(seeded.contains("order_shipped: published version 1"), "{seeded}");
    let up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;

    // Pushing the same directory again through the API publishes nothing new.
    let again = env.run(&["templates", "push", &samples_dir().to_string_lossy()]).await?;
    assert!(again.contains("order_shipped: unchanged (version 1)"), "{again}");

    // A broken template is refused with its file, part, line and column; nothing is published.
    let broken = env.dir.path().join("broken");
    std::fs::create_dir_all(broken.join("receipt"))?;
    std::fs::write(broken.join("receipt/template.toml"), "[sample]\nn = 1\n\n[sms]\nbody = \"\"\"\nTotal:\n{% for x in %}\n\"\"\"\n")?;
    let refused = env.herald(&["templates", "push", &broken.to_string_lossy()]).output().await?;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(said.contains("receipt: error: default/sms/body:2:") && said.contains("syntax error"), "{said}");
    let (status, answer) = env
        .api(
            reqwest::Method::PUT,
            "/templates/receipt",
            Some(json!({ "locales": { "default": { "sms": { "body": "{{ data.total }" } } } })),
        )
        .await?;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_template");
    assert!(answer["error"]["problems"][0].as_str().unwrap_or_default().starts_with("default/sms/body:1:"), "{answer}");
    let (status, _) = env.api(reqwest::Method::GET, "/templates/receipt", None).await?;
    assert_eq!(status, 404, "nothing was published");

    // Preview: Alice's locale (ko-KR) falls back to `ko`; e-mail has no `ko` parts, so default.
    let preview = env.run(&["templates", "preview", "order_shipped", "--locale", "ko-KR"]).await?;
    assert!(preview.contains("── push (locale ko, payload ") && preview.contains("title: 주문 A-1001 발송 완료"), "{preview}");
    assert!(preview.contains("── email (locale default)"), "{preview}");
    assert!(preview.contains("── sms (locale ko, ucs2 × 1 segments"), "{preview}");

    // v1 renders the first notification; publishing v2 changes only later ones.
    let send = |id: &str| json!({ "template": "welcome", "recipients": [{ "user_id": "bob" }], "idempotency_key": id }).to_string();
    env.publish("acme", send("first")).await?;
    env.wait_for_records(1, PATIENCE).await?;
    let (_, v1) = env.api(reqwest::Method::GET, "/templates/welcome", None).await?;
    let mut spec = v1["spec"].clone();
    spec["locales"]["default"]["push"]["title"] = json!("Hello again, {{ data.name | default(user_id) }}");
    let (status, published) = env.api(reqwest::Method::PUT, "/templates/welcome", Some(spec)).await?;
    assert_eq!((status, published["version"].as_u64(), published["created"].as_bool()), (200, Some(2), Some(true)), "{published}");
    env.publish("acme", send("second")).await?;
    env.wait_for_records(2, PATIENCE).await?;
    let mut titles: Vec<(u64, String)> = env
        .records()
        .iter()
        .map(|r| (r["template_version"].as_u64().unwrap_or_default(), r["parts"]["title"].as_str().unwrap_or_default().to_owned()))
        .collect();
    titles.sort();
    assert_eq!(titles, [(1, "Welcome to Acme, bob!".to_owned()), (2, "Hello again, bob".to_owned())]);
    let (_, old) = env.api(reqwest::Method::GET, "/templates/welcome?version=1", None).await?;
    assert_eq!(old["spec"]["locales"]["default"]["push"]["title"], v1["spec"]["locales"]["default"]["push"]["title"], "v1 is immutable");
    let (_, versions) = env.api(reqwest::Method::GET, "/templates/welcome/versions", None).await?;
    assert_eq!(versions.as_array().map(Vec::len), Some(2));

    // A notification for a template that does not exist fails once, at enrich.
    env.publish("acme", json!({ "template": "nope", "recipients": [{ "user_id": "bob" }] }).to_string()).await?;
    let events = env.wait_for_events("acme", Status::Failed, 1, PATIENCE).await?;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("unknown_template") && e.stage == "enrich"), "{events:?}");
    up.terminate(PATIENCE).await?;
    Ok(())
}

/// Push is enabled (so enrich makes push deliveries for Alice's iPhone) but only the log channel
/// is delivered: what render fails is an event, and nothing may reach the push queue.
#[tokio::test]
async fn oversized_and_runaway_renders_fail_once_and_do_not_hold_up_others() -> anyhow::Result<()> {
    let env = TestEnv::with(Options {
        extra_config: "[enrich]\ndefault_channels = [\"log\"]\nenabled_channels = [\"log\", \"push\"]\n".into(),
        ..Options::default()
    })
    .await?;
    env.provision().await?;
    env.seed().await?;
    let risky = env.dir.path().join("risky");
    std::fs::create_dir_all(risky.join("risky"))?;
    std::fs::write(
        risky.join("risky/template.toml"),
        r#"
[sample]
note = "short"
n = 2

[push]
title = "Note"
body = "{{ data.note }}"

[log]
body = "{% for a in range(data.n) %}{% for b in range(data.n) %}.{% endfor %}{% endfor %}"
"#,
    )?;
    let pushed = env.run(&["templates", "push", &risky.to_string_lossy(), "--offline"]).await?;
    assert!(pushed.contains("risky: published version 1"), "{pushed}");
    let upstream = env.spawn("upstream", &["stage", "ingest", "enrich", "render", "dedupe", "throttle", "track"])?;
    let deliver = env.spawn("deliver", &["stage", "deliver", "--channel", "log"])?;

    // Alice has an iPhone: a 5 000-character note passes the sample check but not APNs' 4 096 bytes.
    let big = "x".repeat(5_000);
    env.publish(
        "acme",
        json!({ "template": "risky", "recipients": [{ "user_id": "alice" }], "channels": ["push"], "data": { "note": big, "n": 1 } })
            .to_string(),
    )
    .await?;
    // A runaway loop (10^10 iterations) on the log channel, among 100 normal notifications.
    env.publish(
        "acme",
        json!({ "template": "risky", "recipients": [{ "user_id": "bob" }], "channels": ["log"], "data": { "note": "x", "n": 100000 } })
            .to_string(),
    )
    .await?;
    for i in 0..100 {
        env.publish(
            "acme",
            json!({ "template": "welcome", "recipients": [{ "user_id": "bob" }], "idempotency_key": format!("n{i}") }).to_string(),
        )
        .await?;
    }
    env.wait_for_records(100, PATIENCE).await?;
    let events = env.wait_for_events("acme", Status::Failed, 2, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;

    let failed: Vec<_> = events.iter().filter(|e| e.status == Status::Failed).collect();
    assert_eq!(failed.len(), 2, "{:?}", count_statuses(&events));
    let too_large = failed.iter().find(|e| e.reason.as_deref() == Some("payload_too_large")).expect("payload_too_large");
    assert!(too_large.detail.as_deref().unwrap_or_default().contains("over the 4096-byte limit"), "{too_large:?}");
    assert_eq!(too_large.attempt, 1, "failed on the first attempt");
    let runaway = failed.iter().find(|e| e.reason.as_deref() == Some("render_error")).expect("render_error");
    assert!(runaway.detail.as_deref().unwrap_or_default().contains("fuel"), "{runaway:?}");
    // Neither was retried: the render consumer redelivered nothing and the DLQ is empty.
    let status = env.nats.status().await?;
    let render = status.iter().find(|c| c.consumer == "render").expect("render consumer");
    assert_eq!(render.redelivered, 0, "{render:?}");
    assert_eq!(env.records().len(), 100, "every normal notification was delivered");
    assert!(env.nats.dead_letters("render", "acme").await?.is_empty(), "nothing dead-lettered");
    upstream.terminate(PATIENCE).await?;
    deliver.terminate(PATIENCE).await?;
    Ok(())
}
