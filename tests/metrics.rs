//! `/metrics`: every stage but deliver runs in one `herald stage` process serving Prometheus
//! metrics; notifications are published in rounds while no deliver runs. Each scrape parses as
//! the Prometheus text format, and deliver's queue depth rises round after round (with the age
//! of its oldest message), raising `queue_depth_growing` on `herald.alerts`; once a deliver
//! process starts, the depth falls to nothing and `queue_depth_recovered` follows. The per-stage
//! counters, the processing-time histogram, the message sizes, the provider calls (scraped
//! from the deliver process: one per delivery) and the process's memory are there too, and
//! every series is one Herald documents.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use herald_schemas::{Alert, AlertKind, Status};
use herald_tests::{TestEnv, welcome};
use prometheus_parse::{Sample, Scrape, Value};

const PATIENCE: Duration = Duration::from_secs(60);

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One scrape of `port`'s `/metrics`, parsed.
async fn scrape(port: u16) -> anyhow::Result<Scrape> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?;
    anyhow::ensure!(response.status() == 200, "GET /metrics: {}", response.status());
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await?;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).context("not the Prometheus text format")?;
    Ok(scrape)
}

fn samples<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape.samples.iter().filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).collect()
}

fn value(sample: &Sample) -> f64 {
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    }
}

/// Sum of `name` over the samples matching `labels`.
fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, name, labels).iter().map(|s| value(s)).sum()
}

/// deliver-log's backlog as the process last sampled it.
fn deliver_backlog(scrape: &Scrape) -> f64 {
    total(scrape, "herald_consumer_pending", &[("consumer", "deliver-log")])
        + total(scrape, "herald_consumer_ack_pending", &[("consumer", "deliver-log")])
}

/// Scrapes until `done` holds for a scrape.
async fn scrape_until(port: u16, what: &str, done: impl Fn(&Scrape) -> bool) -> anyhow::Result<Scrape> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(scrape) = scrape(port).await
            && done(&scrape)
        {
            return Ok(scrape);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_parse_and_show_the_queue_depth_rise_while_deliver_is_stopped_and_fall_after() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.provision().await?;
    env.seed().await?;
    let js = async_nats::jetstream::new(async_nats::connect(env.server.url()).await?);
    let mut alerts = js
        .get_stream("HERALD_ALERTS")
        .await?
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?
        .messages()
        .await?;

    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let sampling = [
        ("HERALD__METRICS__LISTEN", listen.as_str()),
        ("HERALD__METRICS__SAMPLE_EVERY", "200ms"),
        ("HERALD__METRICS__WATCH__GROWING_SAMPLES", "2"),
        ("HERALD__METRICS__WATCH__MIN_BACKLOG", "20"),
    ];
    let mut upstream =
        env.spawn_with_env("upstream", &["stage", "ingest", "enrich", "fanout", "render", "dedupe", "throttle", "track"], &sampling)?;
    scrape_until(port, "the first sample", |s| !samples(s, "herald_consumer_pending", &[]).is_empty()).await?;

    // Three rounds of 15 notifications, nobody delivering: each scrape sees more waiting.
    let users = ["alice", "bob", "carol", "dave"];
    let mut depths = Vec::new();
    for round in 1..=3 {
        for i in 0..15 {
            env.publish("acme", welcome(users[i % users.len()])).await?;
        }
        let expected = (round * 15) as f64;
        let scrape = scrape_until(port, &format!("deliver-log at {expected}"), |s| deliver_backlog(s) >= expected).await?;
        depths.push(deliver_backlog(&scrape));
        let oldest = total(&scrape, "herald_consumer_oldest_pending_seconds", &[("consumer", "deliver-log")]);
        assert!(oldest > 0.0, "the oldest waiting delivery has an age");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(depths.windows(2).all(|w| w[1] > w[0]), "the queue depth rose with every round: {depths:?}");
    assert_eq!(depths.last(), Some(&45.0));
    upstream.assert_running()?;

    let alert = next_alert(&mut alerts, AlertKind::QueueDepthGrowing, "deliver-log").await?;
    assert_eq!(alert.consumer.as_deref(), Some("deliver-log"), "{alert:?}");
    assert!(alert.detail.contains("deliver-log") && alert.detail.contains("HERALD_DELIVER"), "{}", alert.detail);

    let stopped = scrape(port).await?;
    // The stages that ran counted what they did, labelled by stage and lane.
    for stage in ["ingest", "enrich", "render", "dedupe", "throttle", "track"] {
        assert!(total(&stopped, "herald_stage_received_total", &[("stage", stage)]) >= 45.0, "{stage} received");
        assert!(total(&stopped, "herald_stage_acked_total", &[("stage", stage)]) >= 45.0, "{stage} acked");
    }
    assert_eq!(total(&stopped, "herald_stage_received_total", &[("stage", "ingest"), ("priority", "normal")]), 45.0);
    let histogram = samples(&stopped, "herald_stage_processing_seconds", &[("stage", "render")]);
    assert!(
        histogram.iter().any(|s| matches!(&s.value, Value::Histogram(b) if b.last().is_some_and(|b| b.count >= 45.0))),
        "render's processing-time histogram counts every message: {histogram:?}"
    );
    assert!(total(&stopped, "herald_message_bytes", &[("stage", "enrich")]) >= 45.0);
    assert!(total(&stopped, "herald_events_total", &[("status", "accepted")]) >= 45.0);
    assert!(total(&stopped, "herald_stream_messages", &[("stream", "HERALD_DELIVER")]) >= 45.0);
    assert!(total(&stopped, "process_resident_memory_bytes", &[]) > 1e6, "the process's memory");
    assert!(!samples(&stopped, "process_cpu_seconds_total", &[]).is_empty());

    // Deliver starts: the queue drains, the depth falls to nothing.
    let deliver_port = free_port()?;
    let deliver_listen = format!("127.0.0.1:{deliver_port}");
    let deliver = env.spawn_with_env("deliver", &["stage", "deliver"], &[("HERALD__METRICS__LISTEN", deliver_listen.as_str())])?;
    // Nothing new arrives, so the depth only falls: from 45 to nothing.
    let mut falling = vec![45.0];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while falling.last() != Some(&0.0) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "deliver-log did not drain: {falling:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let backlog = deliver_backlog(&scrape(port).await?);
        if falling.last() != Some(&backlog) {
            falling.push(backlog);
        }
    }
    assert!(falling.windows(2).all(|w| w[1] < w[0]), "the queue depth fell once deliver ran: {falling:?}");
    env.wait_for_events("acme", Status::Sent, 45, PATIENCE).await?;
    let recovered = next_alert(&mut alerts, AlertKind::QueueDepthRecovered, "deliver-log").await?;
    assert_eq!(recovered.consumer.as_deref(), Some("deliver-log"));

    // The deliver process counted one provider call per delivery, all sent, with their times.
    let delivered = scrape_until(deliver_port, "45 provider calls", |s| total(s, "herald_provider_requests_total", &[]) >= 45.0).await?;
    assert_eq!(total(&delivered, "herald_provider_requests_total", &[("route", "log"), ("outcome", "sent")]), 45.0);
    assert_eq!(total(&delivered, "herald_provider_requests_total", &[]), 45.0, "no call but the 45");
    assert_eq!(total(&delivered, "herald_provider_request_seconds", &[("route", "log")]), 45.0);
    assert_eq!(total(&delivered, "herald_stage_acked_total", &[("stage", "deliver"), ("channel", "log")]), 45.0);
    assert_eq!(env.calls().len(), 45, "the provider itself saw 45 calls");

    // Every series either process serves is one Herald documents (its HELP text comes from
    // the table the dashboard is checked against).
    for scrape in [&stopped, &delivered] {
        let served: BTreeSet<&str> = scrape
            .samples
            .iter()
            .map(|s| s.metric.as_str())
            .map(|m| ["_bucket", "_sum", "_count"].iter().find_map(|x| m.strip_suffix(x)).unwrap_or(m))
            .filter(|m| m.starts_with("herald_"))
            .collect();
        let undocumented: Vec<_> = served.iter().filter(|m| !scrape.docs.contains_key(**m)).collect();
        assert!(undocumented.is_empty(), "series without HELP: {undocumented:?}");
        assert!(served.len() >= 10, "{served:?}");
    }

    for process in [deliver, upstream] {
        assert!(process.terminate(PATIENCE).await?);
    }
    Ok(())
}

/// The next alert of `kind` about `consumer` on the alerts stream (others are skipped: the log
/// writer's own backlog may grow and shrink as the rounds go).
async fn next_alert(alerts: &mut async_nats::jetstream::consumer::pull::Ordered, kind: AlertKind, consumer: &str) -> anyhow::Result<Alert> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message =
            tokio::time::timeout(left, alerts.next()).await.with_context(|| format!("no {kind:?} alert"))?.context("alerts ended")??;
        let alert: Alert = serde_json::from_slice(&message.payload)?;
        if alert.kind == kind && alert.consumer.as_deref() == Some(consumer) {
            return Ok(alert);
        }
    }
}
