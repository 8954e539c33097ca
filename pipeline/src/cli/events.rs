//! Watching the pipeline: `herald events tail` (the tracking stream), `herald trace` (one
//! notification's timeline from it), `herald status` (queue depths) and `herald log replay`.

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

/// `herald log replay`.
pub async fn replay_log(config: &Config) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let pending = connection.nats.reset_consumer("log").await?;
    println!("The notification log's consumer starts over: {pending} events to read again (watch `herald status`, consumer `log`).");
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

/// `herald trace`: one notification's whole timeline from the tracking stream, for a person
/// (or as JSON).
pub async fn trace(config: &Config, tenant: &str, notification: uuid::Uuid, json: bool) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} Reading the tracking stream: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let events = connection
        .nats
        .notification_events(tenant, notification, |read, left| bar.set_message(format!("{read} events read, {left} to go")))
        .await?;
    bar.finish_and_clear();
    anyhow::ensure!(
        !events.is_empty(),
        "no event of notification {notification} on tenant `{tenant}`'s tracking stream: check --tenant, and that the notification is younger than topology.max_age"
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else {
        print!("{}", timeline(notification, tenant, &events));
    }
    Ok(())
}

/// The timeline as text: the notification's own events, then each delivery's, times relative to
/// the first event.
fn timeline(notification: uuid::Uuid, tenant: &str, events: &[herald_schemas::TrackEvent]) -> String {
    use std::fmt::Write;
    let start = events.iter().map(|e| e.at).min().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Notification {notification} of tenant {tenant}: {} events from {start}", events.len());
    let line = |out: &mut String, e: &herald_schemas::TrackEvent| {
        let offset = e.at.duration_since(start).as_secs_f64();
        let reason = e.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        let detail = e.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        let attempt = if e.attempt > 1 { format!(" [attempt {}]", e.attempt) } else { String::new() };
        let _ = writeln!(out, "    {offset:>9.3}s  {:<8}  {}{reason}{attempt}{detail}", e.stage, e.status);
    };
    let mut sorted: Vec<&herald_schemas::TrackEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at);
    let own: Vec<_> = sorted.iter().filter(|e| e.delivery_id.is_none()).collect();
    if !own.is_empty() {
        let _ = writeln!(out, "  the notification");
        for e in own {
            line(&mut out, e);
        }
    }
    let mut deliveries: Vec<uuid::Uuid> = Vec::new();
    for e in &sorted {
        if let Some(d) = e.delivery_id
            && !deliveries.contains(&d)
        {
            deliveries.push(d);
        }
    }
    for delivery in deliveries {
        let mine: Vec<_> = sorted.iter().filter(|e| e.delivery_id == Some(delivery)).collect();
        let first = mine[0];
        let user = first.user_id.as_deref().unwrap_or("-");
        let channel = first.channel.map(|c| c.to_string()).unwrap_or_default();
        let last = mine.last().map(|e| e.status.to_string()).unwrap_or_default();
        let _ = writeln!(out, "  delivery {delivery} to {user} on {channel}: {last}");
        for e in mine {
            line(&mut out, e);
        }
    }
    out
}

/// A time on the command line: an RFC 3339 time (`2026-12-01T00:00:00Z`) or a duration back
/// from now (`90m`, `24h`, `7days`).
pub fn parse_time(s: &str) -> Result<herald_schemas::Timestamp, String> {
    if let Ok(at) = s.parse::<herald_schemas::Timestamp>() {
        return Ok(at);
    }
    let ago = humantime::parse_duration(s)
        .map_err(|_| format!("`{s}` is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration back from now (24h, 7days)"))?;
    let ago = jiff::SignedDuration::try_from(ago).map_err(|e| format!("`{s}`: {e}"))?;
    herald_schemas::Timestamp::now().checked_sub(ago).map_err(|e| format!("`{s}`: {e}"))
}

/// `herald stats`: the events of `[since, until)` folded into per-group figures.
pub async fn stats(
    config: &Config,
    tenant: &str,
    since: herald_schemas::Timestamp,
    until: Option<herald_schemas::Timestamp>,
    by: Vec<herald_track::stats::GroupBy>,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(until.is_none_or(|u| u > since), "--until must be later than --since");
    let connection = app::connect(config, false).await?;
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} Reading the tracking stream: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut stats = herald_track::stats::Stats::new(by.clone());
    let started = std::time::Instant::now();
    let scan = connection
        .nats
        .scan_events(
            tenant,
            "*",
            Some(since),
            |event| {
                if event.at >= since && until.is_none_or(|u| event.at < u) {
                    stats.add(&event);
                }
            },
            |read, left| bar.set_message(format!("{read} events read, {left} to go")),
        )
        .await?;
    bar.finish_and_clear();
    let report = stats.report();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", stats_table(&report, &by));
        let until = until.map_or_else(|| "now".to_owned(), |u| u.to_string());
        println!(
            "{} events of tenant {tenant} from {since} to {until} ({} read in {:.1} s{})",
            report.events,
            scan.read,
            started.elapsed().as_secs_f64(),
            if scan.undecodable > 0 { format!(", {} undecodable skipped", scan.undecodable) } else { String::new() }
        );
    }
    Ok(())
}

/// The report as a table: one row per group, then the total.
fn stats_table(report: &herald_track::stats::Report, by: &[herald_track::stats::GroupBy]) -> String {
    use std::fmt::Write;
    let percent = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let latency =
        |l: Option<herald_track::stats::Latency>| l.map_or_else(|| "-".to_owned(), |l| format!("{:.0}/{:.0}", l.p50_ms, l.p99_ms));
    let dims: Vec<String> = by.iter().map(|b| b.as_str().to_owned()).collect();
    let header: Vec<String> = dims
        .iter()
        .map(|d| d.to_uppercase())
        .chain(
            [
                "DELIVERIES",
                "SENT",
                "DELIVERED",
                "UNDELIVERED",
                "FAILED",
                "OPENED",
                "CLICKED",
                "DELIVERY",
                "FAILURE",
                "OPEN",
                "CLICK",
                "SENT MS p50/p99",
                "DELIVERED MS p50/p99",
            ]
            .map(str::to_owned),
        )
        .collect();
    let cells = |row: &herald_track::stats::Row, total: bool| -> Vec<String> {
        let group = dims.iter().enumerate().map(|(i, d)| {
            if total { if i == 0 { "(all)".to_owned() } else { String::new() } } else { row.group.get(d).cloned().unwrap_or_default() }
        });
        group
            .chain([
                row.deliveries.to_string(),
                row.sent.to_string(),
                row.delivered.to_string(),
                row.undelivered.to_string(),
                row.failed.to_string(),
                row.opened.to_string(),
                row.clicked.to_string(),
                percent(row.delivery_rate),
                percent(row.failure_rate),
                percent(row.open_rate),
                percent(row.click_rate),
                latency(row.accepted_to_sent),
                latency(row.accepted_to_delivered),
            ])
            .collect()
    };
    let mut table = vec![header];
    table.extend(report.rows.iter().map(|r| cells(r, false)));
    table.push(cells(&report.total, true));
    let widths: Vec<usize> = (0..table[0].len()).map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| if i < dims.len() { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
