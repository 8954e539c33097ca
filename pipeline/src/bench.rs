//! `herald bench`: the pipeline driven flat out, next to the raw JetStream limit measured in
//! the same run on the same fresh server.
//!
//! Pipeline: N requests, each to its own user, with up to 4 096 between publish and `sent`; a
//! notification is done when its `sent` event is read back from the tracking stream. That is
//! seven consumer hops (ingest, enrich, render, dedupe, throttle, deliver, track), so the raw
//! chain runs seven hops too, with messages of the size of a delivery. Then the latency floor:
//! the same, one message at a time. Then priorities: a backlog of `normal` notifications is
//! queued and `critical` probes are sent while it drains; each probe's latency runs from its
//! publish to the provider call (the log sink's call record), and the backlog's last call shows
//! whether every probe overtook it.
//!
//! `--providers sandbox` delivers to the APNs and FCM sandboxes instead (half the users on iOS,
//! half on Android; each answer delayed by `--sandbox-latency`, a real service's round trip): the
//! HTTP/2 and HTTP/1.1 clients, the token caches and the provider guards under load, and the
//! sandboxes' own record of what they accepted — each notification exactly once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use herald_nats::server::NatsServer;
use herald_nats::{Nats, Topology};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Resources, StageKind};
use crate::config::Config;
use herald_sandbox::{Sandbox, Stats};
use herald_schemas::Channel;
use herald_schemas::directory::{Device, ImportLine};

/// Options of `herald bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Notifications to push through the pipeline (and messages through the raw chain).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Size of a raw-chain message in bytes (a rendered delivery is about this size).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Messages sent one at a time for the latency floor.
    #[arg(long, default_value_t = 300)]
    latency_samples: usize,
    /// `normal` notifications queued for the priority phase (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    backlog: usize,
    /// `critical` probes sent while the backlog drains.
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Where deliveries go: the `log` file sink, or the APNs and FCM sandboxes over TLS.
    #[arg(long, value_enum, default_value_t = Providers::Log)]
    providers: Providers,
    /// Added to every sandbox answer with `--providers sandbox` (e.g. `5ms`).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    sandbox_latency: Duration,
    /// Tracking events generated for timing `herald stats`' fold over them (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    stats_events: usize,
    /// Run without the metrics recorder (every metrics call a no-op), to see what recording
    /// costs the message path.
    #[arg(long)]
    without_metrics: bool,
}

/// The providers `herald bench` delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Providers {
    /// The `log` file sink.
    Log,
    /// The APNs and FCM sandboxes (push over HTTP/2 and TLS).
    Sandbox,
}

/// The app every bench device belongs to (the APNs topic).
const BENCH_APP: &str = "com.example.bench";

const HOPS: usize = 7;

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; `make bench` builds with --release for real figures.");
    }
    let n = args.requests.max(1);
    let m = args.latency_samples.max(1);
    println!("Benchmark on a fresh nats-server (file storage), {HOPS} hops end to end.");
    println!("Throughput: {n} messages flat out (4 096 in flight). Latency floor: {m} messages one at a time.\n");

    let server = NatsServer::start_temp().await?;
    let in_flight = config.runner.max_in_flight;
    let raw = herald_nats::bench::raw_chain(server.url(), HOPS, n, args.size, in_flight, 4096).await?;
    let raw_floor = herald_nats::bench::raw_chain(server.url(), HOPS, m, args.size, in_flight, 1).await?;

    let temp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.deliver.log.dir = temp.path().join("deliveries");
    config.topology = herald_nats::TopologyConfig { prefix: "bench".into(), ..config.topology.clone() };
    let nats = Nats::connect(server.url(), "herald-bench", Topology::new(config.topology.clone())?).await?;
    nats.provision().await?;
    config.store =
        herald_store::StoreConfig { url: "mem://".into(), secret_key_file: temp.path().join("secret.key"), ..config.store.clone() };
    let sandbox = match args.providers {
        Providers::Log => None,
        Providers::Sandbox => Some(point_at_sandboxes(&mut config, temp.path(), args.sandbox_latency).await?),
    };
    let resources = Resources::load(&config, &StageKind::ALL, None).await?;
    if let Some(store) = &resources.store {
        let users: Vec<ImportLine> = (0..n.max(m))
            .map(|i| {
                Ok(ImportLine {
                    id: format!("user-{i}"),
                    locale: Some("en-US".into()),
                    devices: if sandbox.is_some() { vec![bench_device(i)?] } else { Vec::new() },
                    ..ImportLine::default()
                })
            })
            .collect::<anyhow::Result<_>>()?;
        store.import("bench", &users).await?;
        crate::template_files::publish_samples(store, &config, "bench").await?;
        if let Some(sandbox) = &sandbox {
            crate::sandboxes::register(store, sandbox, "bench", BENCH_APP).await?;
        }
    }
    // Metrics recorded as `herald up` records them (the exporter installed, nobody scraping).
    if !args.without_metrics {
        crate::metrics::handle()?;
    }
    let cancel = CancellationToken::new();
    let running = app::start(&nats, &config, resources, &StageKind::ALL, None, &cancel).await?;
    let log_writer = running.log.clone();
    let log_watch = LogWatch::start(&nats);
    let flat_out = herald_run(&nats, n, 4096, "throughput").await;
    let log = log_watch.finish(&nats).await;
    let floor = herald_run(&nats, m, 1, "latency").await;
    cancel.cancel();
    running.wait(&cancel).await?;
    let (flat_out, floor) = (flat_out?, floor?);
    // With the sandboxes: what they accepted from the pipeline, then the push clients alone.
    let mut sandbox_notes = Vec::new();
    let clients = match &sandbox {
        Some(sandbox) => {
            sandbox_notes.push(report_sandbox(sandbox, n + m, "from the pipeline", &Stats::default())?);
            sandbox.clear();
            let before = sandbox.stats();
            let clients = clients_run(sandbox, &config, n).await?;
            sandbox_notes.push(report_sandbox(sandbox, n, "from the clients alone", &before)?);
            Some(clients)
        }
        None => None,
    };
    let priorities = if args.backlog > 0 && sandbox.is_none() {
        Some(priority_run(server.url(), &config, n, args.backlog, args.probes.max(1)).await?)
    } else {
        None
    };

    let raw_rate = n as f64 / raw.elapsed.as_secs_f64();
    let rate = n as f64 / flat_out.0.as_secs_f64();
    println!("{:<34} {:>12} {:>22} {:>22}", "", "per second", "latency flat out", "latency floor");
    println!("{:<34} {:>12} {:>22} {:>22}", "", "", "p50 / p99 ms", "p50 / p99 ms");
    let row = |name: &str, rate: f64, busy: &[Duration], idle: &[Duration]| -> anyhow::Result<()> {
        let idle = if idle.is_empty() { "-".to_owned() } else { quantiles(idle)? };
        println!("{name:<34} {rate:>12.0} {:>22} {idle:>22}", quantiles(busy)?);
        Ok(())
    };
    row(&format!("raw JetStream ({} B messages)", args.size), raw_rate, &raw.latencies, &raw_floor.latencies)?;
    let name = match args.providers {
        Providers::Log => "herald pipeline (notifications)".to_owned(),
        Providers::Sandbox => format!("herald → APNs + FCM ({} ms)", args.sandbox_latency.as_millis()),
    };
    row(&name, rate, &flat_out.1, &floor.1)?;
    if let Some(clients) = &clients {
        let in_flight = config.deliver.apns.concurrency.unwrap_or(config.deliver.concurrency);
        row(&format!("push clients alone ({in_flight} in flight)"), n as f64 / clients.0.as_secs_f64(), &clients.1, &[])?;
    }
    println!("\nherald / raw JetStream: {:.1} % of the throughput", 100.0 * rate / raw_rate);
    println!("(the requirements' baseline: ~185 notifications/s on average, ~1 850/s at a 10x peak)");
    match (&log, &log_writer) {
        (Ok(log), Some(writer)) => println!(
            "
notification log, flat out: its consumer's backlog at most {} events (sampled every 100 ms), empty {} ms after the last delivery was reported; {} events written in {} batches ({} refused)",
            log.max_backlog,
            log.caught_up.as_millis(),
            writer.written.load(std::sync::atomic::Ordering::Relaxed),
            writer.batches.load(std::sync::atomic::Ordering::Relaxed),
            writer.failures.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (Err(e), _) => println!("
notification log: could not watch its backlog: {e}"),
        (_, None) => println!("
notification log: off (log.enabled = false)"),
    }
    for note in &sandbox_notes {
        println!("\n{note}");
    }
    if let Some(p) = priorities {
        println!(
            "\npriorities: {} critical probes sent while {} normal drained ({:.1} s): publish → provider p50 / p99 {} ms, max {:.2} ms; {} of {} probes before the backlog's last call",
            p.latencies.len(),
            args.backlog,
            p.backlog_drain.as_secs_f64(),
            quantiles(&p.latencies)?,
            p.latencies.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            p.before_drain,
            p.latencies.len(),
        );
    }
    if args.stats_events > 0 {
        let (elapsed, report) = stats_run(server.url(), &nats, args.stats_events).await?;
        println!(
            "\nherald stats: {} events ({} deliveries, {} groups) read from the tracking stream and folded in {:.2} s ({:.0} events/s)",
            report.events,
            report.total.deliveries,
            report.rows.len(),
            elapsed.as_secs_f64(),
            report.events as f64 / elapsed.as_secs_f64()
        );
    }
    drop(server);
    Ok(())
}

/// Puts `n` generated tracking events of tenant `stats` on the stream (a third each
/// `accepted`, `sent` and `delivered`, over five templates and two channels), then times what
/// `herald stats` does: the scan and the fold, by template and channel.
async fn stats_run(url: &str, nats: &Nats, n: usize) -> anyhow::Result<(Duration, herald_track::stats::Report)> {
    use herald_schemas::{Status, Timestamp, TrackEvent, ids};
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("     stats {bar:40} {pos}/{len} events stored ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Timestamp::now();
    let event = |i: usize| -> (String, Vec<u8>) {
        let (k, step) = (i / 3, i % 3);
        let notification = uuid::Uuid::from_u128(k as u128 + 1);
        let delivery = uuid::Uuid::from_u128((1 << 64) + k as u128);
        let status = [Status::Accepted, Status::Sent, Status::Delivered][step];
        let at = start.checked_add(jiff::SignedDuration::from_millis((k * 10 + step * 40) as i64)).unwrap_or(start);
        let event = TrackEvent {
            event_id: ids::event_id(delivery, "bench", status, 0),
            notification_id: Some(notification),
            delivery_id: (step > 0).then_some(delivery),
            user_id: Some(format!("user-{k}")),
            channel: (step > 0).then_some(if k % 2 == 0 { Channel::Email } else { Channel::Sms }),
            template: Some(format!("template-{}", k % 5)),
            provider: (step > 0).then(|| "log".to_owned()),
            ..TrackEvent::new("stats", status, "bench", at)
        };
        (format!("bench.events.stats.{status}"), serde_json::to_vec(&event).unwrap_or_default())
    };
    herald_nats::bench::publish_all(url, (0..n).map(event), 4096, || bar.inc(1)).await?;
    bar.finish_and_clear();
    let started = Instant::now();
    let mut stats = herald_track::stats::Stats::new(vec![herald_track::stats::GroupBy::Template, herald_track::stats::GroupBy::Channel]);
    nats.scan_events("stats", "*", None, |event| stats.add(&event), |_, _| {}).await?;
    let report = stats.report();
    Ok((started.elapsed(), report))
}

/// The notification log's consumer watched during the flat-out run: its largest backlog, and
/// how long it took to empty once the run was over.
struct LogWatch {
    stop: CancellationToken,
    sampler: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

struct LogFigures {
    max_backlog: u64,
    caught_up: Duration,
}

impl LogWatch {
    fn start(nats: &Nats) -> Self {
        let stop = CancellationToken::new();
        let (nats, token) = (nats.clone(), stop.clone());
        let sampler = tokio::spawn(async move {
            let mut max = 0;
            while !token.is_cancelled() {
                max = max.max(nats.backlog("log").await?);
                tokio::select! { () = tokio::time::sleep(Duration::from_millis(100)) => {}, () = token.cancelled() => {} }
            }
            Ok(max)
        });
        LogWatch { stop, sampler }
    }

    async fn finish(self, nats: &Nats) -> anyhow::Result<LogFigures> {
        let over = Instant::now();
        let deadline = over + Duration::from_secs(120);
        while nats.backlog("log").await? > 0 {
            anyhow::ensure!(Instant::now() < deadline, "the notification log did not catch up within 2 minutes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let caught_up = over.elapsed();
        self.stop.cancel();
        let max_backlog = self.sampler.await??;
        Ok(LogFigures { max_backlog, caught_up })
    }
}

/// Starts the APNs and FCM sandboxes and points `config` at them, push the only channel.
async fn point_at_sandboxes(config: &mut Config, dir: &std::path::Path, latency: Duration) -> anyhow::Result<Sandbox> {
    let sandbox = crate::sandboxes::start(config, dir, latency).await?;
    config.enrich.enabled_channels = vec![Channel::Push];
    config.enrich.default_channels = vec![Channel::Push];
    println!(
        "Providers: the APNs sandbox ({}) and the FCM sandbox ({}), {} ms added to each answer.\n",
        sandbox.apns_url(),
        sandbox.fcm_url(),
        latency.as_millis()
    );
    Ok(sandbox)
}

/// Bench user `i`'s one device: an iPhone for even `i`, an Android phone for odd.
fn bench_device(i: usize) -> anyhow::Result<Device> {
    let device = if i.is_multiple_of(2) {
        serde_json::json!({ "id": "phone", "platform": "ios", "token": format!("{:064x}", i), "app_id": BENCH_APP })
    } else {
        serde_json::json!({ "id": "phone", "platform": "android", "token": format!("bench:APA91b-registration-{i:012}"), "app_id": BENCH_APP })
    };
    Ok(serde_json::from_value(device)?)
}

/// The APNs and FCM clients alone, without the pipeline: `n` sends, half to each, with as many in
/// flight per provider as deliver allows (its permits), against the same sandboxes. Returns the
/// elapsed time and each call's latency.
async fn clients_run(sandbox: &Sandbox, config: &Config, n: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
    use herald_deliver::providers::Provider;
    let credentials = Arc::new(herald_deliver::ports::memory::MemoryCredentials::default());
    for stored in crate::sandboxes::credentials(&sandbox.accounts("bench", BENCH_APP)?)? {
        credentials.put("bench", "default", stored);
    }
    let deliver = &config.deliver;
    let apns = herald_deliver::providers::apns::Apns::new(&deliver.apns, &deliver.tls, deliver.send_timeout, credentials.clone())?;
    let fcm = herald_deliver::providers::fcm::Fcm::new(&deliver.fcm, &deliver.tls, deliver.send_timeout, credentials)?;
    let in_flight = |limit: Option<usize>| limit.unwrap_or(deliver.concurrency).max(1);
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("   clients {bar:40} {pos}/{len} sent ({per_sec})").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let calls = |provider: Arc<dyn Provider>, parity: usize, limit: usize| {
        let bar = bar.clone();
        futures::stream::iter((0..n).filter(move |i| i % 2 == parity))
            .map(move |i| {
                let (bar, provider) = (bar.clone(), provider.clone());
                async move {
                    let delivery = bench_delivery(i)?;
                    let start = Instant::now();
                    provider.send(&delivery).await.map_err(|e| anyhow::anyhow!("push {i}: {} ({})", e.code, e.detail))?;
                    bar.inc(1);
                    anyhow::Ok(start.elapsed())
                }
            })
            .buffer_unordered(limit)
            .collect::<Vec<_>>()
    };
    let (apns, fcm): (Arc<dyn Provider>, Arc<dyn Provider>) = (Arc::new(apns), Arc::new(fcm));
    let (ios, android) =
        tokio::join!(calls(apns, 0, in_flight(deliver.apns.concurrency)), calls(fcm, 1, in_flight(deliver.fcm.concurrency)));
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let latencies = ios.into_iter().chain(android).collect::<anyhow::Result<Vec<_>>>()?;
    Ok((elapsed, latencies))
}

/// The delivery deliver would hand the provider for bench user `i`'s phone.
fn bench_delivery(i: usize) -> anyhow::Result<herald_schemas::Delivery> {
    let device = bench_device(i)?;
    let parts = [("title", "Bench"), ("body", "A push of the benchmark")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    Ok(herald_schemas::Delivery {
        delivery_id: uuid::Uuid::from_u128(0xbe9c_0000_0000 + i as u128),
        tenant: "bench".into(),
        user_id: Some(format!("user-{i}")),
        channel: Channel::Push,
        address: device.token.clone().unwrap_or_default(),
        platform: Some(device.platform),
        device: Some(herald_schemas::DeviceRef { id: device.id.clone(), app_id: device.app_id.clone(), environment: device.environment }),
        content: Some(herald_schemas::Content { parts: parts.into_iter().collect(), ..herald_schemas::Content::default() }),
        ..herald_stage::memory::delivery(i as u128)
    })
}

/// What the sandboxes accepted (`what`: from whom) since they were cleared: every notification
/// once, nothing refused; and the connections and tokens it took since `before`.
fn report_sandbox(sandbox: &Sandbox, expected: usize, what: &str, before: &Stats) -> anyhow::Result<String> {
    let [(_, apns, apns_refused), (_, fcm, fcm_refused), ..] = crate::sandboxes::counts(sandbox);
    let refused = apns_refused + fcm_refused;
    let after = sandbox.stats();
    let connections = |provider: &str| {
        after.connections.get(provider).copied().unwrap_or_default() - before.connections.get(provider).copied().unwrap_or_default()
    };
    let apns_tokens = after.apns_tokens.values().sum::<u64>() - before.apns_tokens.values().sum::<u64>();
    anyhow::ensure!(
        apns + fcm == expected && refused == 0,
        "the sandboxes accepted {} calls {what} for {expected} notifications ({refused} refused): a push was lost or sent twice",
        apns + fcm
    );
    Ok(format!(
        "sandboxes, {what}: APNs accepted {apns}, FCM {fcm} ({} of {expected} pushes), {refused} refused; \
         TLS connections: APNs {}, FCM {}; new APNs provider tokens {}, FCM access tokens {}",
        apns + fcm,
        connections("apns"),
        connections("fcm"),
        apns_tokens,
        after.fcm_tokens_issued - before.fcm_tokens_issued,
    ))
}

/// Pushes `n` notifications through the running pipeline with at most `window` between publish
/// and `sent` event; returns the elapsed time and each notification's latency.
async fn herald_run(nats: &Nats, n: usize, window: usize, label: &str) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let mut sent_events = Box::pin(nats.tail_events("bench", "sent", false).await?);
    let published_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
    let room = Arc::new(Semaphore::new(window.max(1)));
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template(&format!("{label:>10} {{bar:40}} {{pos}}/{{len}} sent ({{per_sec}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let publisher = {
        let (nats, published_at, room) = (nats.clone(), published_at.clone(), room.clone());
        tokio::spawn(async move {
            let mut acks = JoinSet::new();
            for i in 0..n {
                room.acquire().await?.forget();
                if let Ok(mut times) = published_at.lock() {
                    times[i] = Some(Instant::now());
                }
                let body = serde_json::json!({
                    "template": "order_shipped",
                    "recipients": [{ "user_id": format!("user-{i}") }],
                    "data": { "order_id": format!("B-{i:07}"), "items": 2, "eta": "tomorrow" },
                });
                let nats = nats.clone();
                acks.spawn(async move { nats.publish_request("bench", Bytes::from(body.to_string()), None).await });
                while let Some(done) = acks.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = acks.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
    };
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        let event = match tokio::time::timeout(Duration::from_secs(60), sent_events.next()).await {
            Ok(Some(event)) => event?,
            _ => anyhow::bail!("the pipeline stalled after {} of {n} notifications; see `herald status`", latencies.len()),
        };
        let index = event.user_id.as_deref().and_then(|u| u.strip_prefix("user-")).and_then(|i| i.parse::<usize>().ok());
        let sent = index.and_then(|i| published_at.lock().ok().and_then(|t| t.get(i).copied().flatten()));
        if let Some(sent) = sent {
            latencies.push(sent.elapsed());
            room.add_permits(1);
            bar.inc(1);
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    publisher.await??;
    Ok((elapsed, latencies))
}

/// What the priority phase measured.
struct Priorities {
    /// Each probe's publish → provider call.
    latencies: Vec<Duration>,
    /// From the first backlog publish to the backlog's last provider call.
    backlog_drain: Duration,
    /// Probes called before the backlog's last call.
    before_drain: usize,
}

/// Queues `backlog` normal notifications (to the `users` bench users) and sends `probes`
/// critical ones while they drain, on a fresh topology whose log sink records every call.
async fn priority_run(url: &str, base: &Config, users: usize, backlog: usize, probes: usize) -> anyhow::Result<Priorities> {
    let temp = tempfile::tempdir()?;
    let mut config = base.clone();
    config.deliver.log.dir = temp.path().join("deliveries");
    config.deliver.log.record_calls = true;
    config.topology = herald_nats::TopologyConfig { prefix: "benchp".into(), ..config.topology.clone() };
    let nats = Nats::connect(url, "herald-bench-priorities", Topology::new(config.topology.clone())?).await?;
    nats.provision().await?;
    let resources = Resources::load(&config, &StageKind::ALL, None).await?;
    if let Some(store) = &resources.store {
        let mut lines: Vec<ImportLine> =
            (0..users).map(|i| ImportLine { id: format!("user-{i}"), locale: Some("en-US".into()), ..ImportLine::default() }).collect();
        lines.extend((0..probes).map(|i| ImportLine { id: format!("probe-{i}"), locale: Some("en-US".into()), ..ImportLine::default() }));
        store.import("bench", &lines).await?;
        crate::template_files::publish_samples(store, &config, "bench").await?;
    }
    let cancel = CancellationToken::new();
    let running = app::start(&nats, &config, resources, &StageKind::ALL, None, &cancel).await?;
    let bar = ProgressBar::new(backlog as u64).with_style(
        ProgressStyle::with_template("  backlog {bar:40} {pos}/{len} queued ({per_sec})").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let started = jiff::Timestamp::now();
    let body = |user: String, priority: &str| {
        Bytes::from(
            serde_json::json!({
                "template": "order_shipped",
                "recipients": [{ "user_id": user }],
                "priority": priority,
                "data": { "order_id": "P-1", "items": 1, "eta": "today" },
            })
            .to_string(),
        )
    };
    let bodies = (0..backlog).map(|i| body(format!("user-{}", i % users.max(1)), "normal"));
    nats.publish_requests("bench", bodies, 4096, || bar.inc(1)).await?;
    bar.finish_and_clear();
    // Probes go while the backlog drains, a few milliseconds apart, from a producer's own
    // connection (the stages' connection is this process's bulk traffic).
    let producer = nats.another("herald-bench-producer").await?;
    let mut published = Vec::with_capacity(probes);
    for i in 0..probes {
        published.push(jiff::Timestamp::now());
        producer.publish_request_in("bench", herald_schemas::Priority::Critical, body(format!("probe-{i}"), "critical"), None).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls_file = config.deliver.log.dir.join(herald_deliver::CALLS_FILE);
    let total = backlog + probes;
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("  draining {bar:40} {pos}/{len} delivered").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let calls = loop {
        let text = std::fs::read_to_string(&calls_file).unwrap_or_default();
        let calls: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        bar.set_position(calls.len() as u64);
        if calls.len() >= total {
            break calls;
        }
        if start.elapsed() > Duration::from_secs(900) {
            anyhow::bail!("the priority phase stalled at {} of {total} calls; see `herald status`", calls.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    cancel.cancel();
    running.wait(&cancel).await?;
    let at = |c: &serde_json::Value| c["at"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let last_backlog = calls.iter().filter(|c| c["user_id"].as_str().is_some_and(|u| u.starts_with("user-"))).filter_map(at).max();
    let mut latencies = Vec::with_capacity(probes);
    let mut before_drain = 0;
    for call in calls.iter().filter(|c| c["user_id"].as_str().is_some_and(|u| u.starts_with("probe-"))) {
        let index = call["user_id"].as_str().and_then(|u| u.strip_prefix("probe-")).and_then(|i| i.parse::<usize>().ok());
        let (Some(index), Some(called)) = (index, at(call)) else { continue };
        let Some(sent) = published.get(index) else { continue };
        latencies.push(Duration::try_from(called.duration_since(*sent)).unwrap_or_default());
        if last_backlog.is_some_and(|last| called < last) {
            before_drain += 1;
        }
    }
    let drained_at = last_backlog.unwrap_or_else(jiff::Timestamp::now);
    let backlog_drain = Duration::try_from(drained_at.duration_since(started)).unwrap_or_default();
    Ok(Priorities { latencies, backlog_drain, before_drain })
}

/// `p50 / p99` in milliseconds.
fn quantiles(latencies: &[Duration]) -> anyhow::Result<String> {
    let mut hist = Histogram::<u64>::new(3)?;
    for l in latencies {
        hist.record(l.as_micros() as u64)?;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(format!("{:.2} / {:.2}", ms(0.5), ms(0.99)))
}
