//! Watching the pipeline: `herald events tail` and `export` (the tracking stream, live or a time
//! range to JSON lines, CSV or Parquet), `herald stats` (figures folded from it), `herald trace`
//! (one notification's timeline from it), `herald status` (queue depths) and `herald log replay`.

use std::io::Write as _;

use anyhow::Context as _;
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

/// What `herald events export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    Parquet,
}

/// The exported columns, in order: every field of an event (`v` aside).
const COLUMNS: [&str; 19] = [
    "event_id",
    "notification_id",
    "delivery_id",
    "tenant",
    "user_id",
    "channel",
    "status",
    "reason",
    "detail",
    "original_notification_id",
    "scheduled_for",
    "deferred_until",
    "template",
    "category",
    "provider",
    "provider_message_id",
    "stage",
    "attempt",
    "at",
];

/// An event's text columns (all but `attempt` and the three times), in [`COLUMNS`] order.
fn text_columns(e: &herald_schemas::TrackEvent) -> [Option<String>; 15] {
    let id = |u: Option<uuid::Uuid>| u.map(|u| u.to_string());
    [
        Some(e.event_id.to_string()),
        id(e.notification_id),
        id(e.delivery_id),
        Some(e.tenant.clone()),
        e.user_id.clone(),
        e.channel.map(|c| c.as_str().to_owned()),
        Some(e.status.as_str().to_owned()),
        e.reason.clone(),
        e.detail.clone(),
        id(e.original_notification_id),
        e.template.clone(),
        e.category.clone(),
        e.provider.clone(),
        e.provider_message_id.clone(),
        Some(e.stage.clone()),
    ]
}

/// Where exported events go.
enum Sink {
    Jsonl(Box<dyn std::io::Write>),
    Csv(Box<csv::Writer<Box<dyn std::io::Write>>>),
    Parquet(Box<ParquetSink>),
}

/// Events buffered into Arrow columns, a row group at a time.
struct ParquetSink {
    writer: parquet::arrow::ArrowWriter<std::fs::File>,
    schema: std::sync::Arc<arrow_schema::Schema>,
    text: Vec<Vec<Option<String>>>,
    attempts: Vec<u32>,
    times: [Vec<Option<i64>>; 3],
}

/// Rows per Parquet row group.
const ROW_GROUP: usize = 65_536;

impl ParquetSink {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        use arrow_schema::{DataType, Field, Schema, TimeUnit};
        let time = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let fields: Vec<Field> = COLUMNS
            .iter()
            .map(|name| match *name {
                "attempt" => Field::new(*name, DataType::UInt32, false),
                "at" => Field::new(*name, time(), false),
                "scheduled_for" | "deferred_until" => Field::new(*name, time(), true),
                "event_id" | "tenant" | "status" | "stage" => Field::new(*name, DataType::Utf8, false),
                _ => Field::new(*name, DataType::Utf8, true),
            })
            .collect();
        let schema = std::sync::Arc::new(Schema::new(fields));
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let properties =
            parquet::file::properties::WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build();
        let writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
        Ok(ParquetSink { writer, schema, text: vec![Vec::new(); 15], attempts: Vec::new(), times: [Vec::new(), Vec::new(), Vec::new()] })
    }

    fn push(&mut self, e: &herald_schemas::TrackEvent) -> anyhow::Result<()> {
        for (column, value) in self.text.iter_mut().zip(text_columns(e)) {
            column.push(value);
        }
        self.attempts.push(e.attempt);
        let us = |t: Option<herald_schemas::Timestamp>| t.map(|t| t.as_microsecond());
        for (column, value) in self.times.iter_mut().zip([us(e.scheduled_for), us(e.deferred_until), Some(e.at.as_microsecond())]) {
            column.push(value);
        }
        if self.attempts.len() >= ROW_GROUP { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        use arrow_array::{ArrayRef, StringArray, TimestampMicrosecondArray, UInt32Array};
        if self.attempts.is_empty() {
            return Ok(());
        }
        let mut text = self.text.iter_mut().map(|c| std::sync::Arc::new(StringArray::from(std::mem::take(c))) as ArrayRef);
        let mut times = self
            .times
            .iter_mut()
            .map(|c| std::sync::Arc::new(TimestampMicrosecondArray::from(std::mem::take(c)).with_timezone("UTC")) as ArrayRef);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(COLUMNS.len());
        for name in COLUMNS {
            let column = match name {
                "attempt" => Some(std::sync::Arc::new(UInt32Array::from(std::mem::take(&mut self.attempts))) as ArrayRef),
                "scheduled_for" | "deferred_until" | "at" => times.next(),
                _ => text.next(),
            };
            columns.push(column.context("a column for every field")?);
        }
        let batch = arrow_array::RecordBatch::try_new(self.schema.clone(), columns)?;
        self.writer.write(&batch)?;
        Ok(())
    }
}

impl Sink {
    fn write(&mut self, e: &herald_schemas::TrackEvent) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, e)?;
                out.write_all(b"\n")?;
            }
            Sink::Csv(out) => {
                let text = text_columns(e);
                let time = |t: Option<herald_schemas::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
                let mut row: Vec<String> = text[..10].iter().map(|v| v.clone().unwrap_or_default()).collect();
                row.extend([time(e.scheduled_for), time(e.deferred_until)]);
                row.extend(text[10..].iter().map(|v| v.clone().unwrap_or_default()));
                row.extend([e.attempt.to_string(), e.at.to_string()]);
                out.write_record(&row)?;
            }
            Sink::Parquet(out) => out.push(e)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(mut out) => out.flush()?,
            Sink::Csv(mut out) => out.flush()?,
            Sink::Parquet(mut out) => {
                out.flush()?;
                out.writer.close()?;
            }
        }
        Ok(())
    }
}

/// `herald events export`.
pub async fn export(
    config: &Config,
    tenant: &str,
    since: herald_schemas::Timestamp,
    until: Option<herald_schemas::Timestamp>,
    status: &str,
    format: ExportFormat,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(until.is_none_or(|u| u > since), "--until must be later than --since");
    let connection = app::connect(config, false).await?;
    let output = || -> anyhow::Result<Box<dyn std::io::Write>> {
        Ok(match out {
            Some(path) => {
                Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?))
            }
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        })
    };
    let mut sink = match format {
        ExportFormat::Jsonl => Sink::Jsonl(output()?),
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(output()?);
            writer.write_record(COLUMNS)?;
            Sink::Csv(Box::new(writer))
        }
        ExportFormat::Parquet => {
            let path = out.context("Parquet is binary: give the file to write with --out")?;
            Sink::Parquet(Box::new(ParquetSink::create(path)?))
        }
    };
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} Reading the tracking stream: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut written = 0u64;
    let mut failure = None;
    connection
        .nats
        .scan_events(
            tenant,
            status,
            Some(since),
            |event| {
                if failure.is_some() || event.at < since || until.is_some_and(|u| event.at >= u) {
                    return;
                }
                match sink.write(&event) {
                    Ok(()) => written += 1,
                    Err(e) => failure = Some(e),
                }
            },
            |read, left| bar.set_message(format!("{read} events read, {left} to go")),
        )
        .await?;
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e.context("writing the export"));
    }
    sink.finish()?;
    eprintln!("{written} events of tenant {tenant} exported{}", out.map(|p| format!(" to {}", p.display())).unwrap_or_default());
    Ok(())
}
