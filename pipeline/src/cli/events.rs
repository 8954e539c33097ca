//! Watching the pipeline: `herald events tail` (the tracking stream) and `herald status`
//! (queue depths).

use futures::StreamExt;

use crate::app;
use crate::config::Config;

/// `herald events tail`.
pub async fn tail(
    config: &Config,
    tenant: &str,
    status: &str,
    notification: Option<uuid::Uuid>,
    from_start: bool,
    count: Option<usize>,
) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let mut events = Box::pin(connection.nats.tail_events(tenant, status, from_start).await?);
    let mut printed = 0;
    while let Some(event) = events.next().await {
        let event = event?;
        if notification.is_some_and(|n| event.notification_id != Some(n)) {
            continue;
        }
        println!("{}", serde_json::to_string(&event)?);
        printed += 1;
        if count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    Ok(())
}

/// `herald status`.
pub async fn status(config: &Config, json: bool, busy: bool) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let consumers = connection.nats.status().await?;
    let streams = connection.nats.stream_sizes().await?;
    if json {
        let streams: serde_json::Map<_, _> = streams.into_iter().map(|(name, n)| (name, n.into())).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "consumers": consumers, "streams": streams }))?);
        return Ok(());
    }
    // One row per consumer: a stage has one per priority lane (`enrich`, `enrich-critical` …).
    let shown: Vec<_> = consumers.iter().filter(|c| !busy || c.pending + c.ack_pending + c.redelivered > 0).collect();
    let width = shown.iter().map(|c| c.consumer.len()).max().unwrap_or(0).max("CONSUMER".len());
    println!("{:<20} {:<width$} {:>10} {:>12} {:>12} {:>8}", "STREAM", "CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING");
    for c in &shown {
        println!("{:<20} {:<width$} {:>10} {:>12} {:>12} {:>8}", c.stream, c.consumer, c.pending, c.ack_pending, c.redelivered, c.waiting);
    }
    if busy && shown.len() < consumers.len() {
        println!("({} idle consumers not shown)", consumers.len() - shown.len());
    }
    println!();
    println!("{:<20} {:>10}", "STREAM", "MESSAGES");
    for (name, messages) in &streams {
        println!("{name:<20} {messages:>10}");
    }
    Ok(())
}
