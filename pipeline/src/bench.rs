//! `herald bench`: the pipeline driven flat out, next to the raw JetStream limit measured in
//! the same run on the same fresh server.
//!
//! Pipeline: N requests, each to its own user, published with 4 096 acks in flight; a
//! notification is done when its `sent` event is read back from the tracking stream. That is
//! seven consumer hops (ingest, enrich, render, dedupe, throttle, deliver, track), so the raw
//! chain runs seven hops too, with messages of the size of a delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use herald_nats::server::NatsServer;
use herald_nats::{Nats, Topology};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::app::{self, Resources, StageKind};
use crate::config::Config;
use crate::directory::FileDirectory;

/// Options of `herald bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Notifications to push through the pipeline (and messages through the raw chain).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Size of a raw-chain message in bytes (a rendered delivery is about this size).
    #[arg(long, default_value_t = 512)]
    size: usize,
}

const HOPS: usize = 7;

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; `make bench` builds with --release for real figures.");
    }
    let n = args.requests.max(1);
    println!("Benchmark: {n} notifications, {HOPS} hops, on a fresh nats-server with file storage.\n");

    let server = NatsServer::start_temp().await?;
    let raw = herald_nats::bench::raw_chain(server.url(), HOPS, n, args.size, config.runner.max_in_flight).await?;
    let raw_rate = n as f64 / raw.elapsed.as_secs_f64();
    let raw_hist = histogram(&raw.latencies)?;
    println!(
        "raw JetStream, {HOPS} hops ({} B):   {:>9.0} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        args.size,
        raw_rate,
        ms(raw_hist.value_at_quantile(0.5)),
        ms(raw_hist.value_at_quantile(0.99))
    );

    let temp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.deliver.log_dir = temp.path().join("deliveries");
    config.topology = herald_nats::TopologyConfig { prefix: "bench".into(), ..config.topology.clone() };
    let nats = Nats::connect(server.url(), "herald-bench", Topology::new(config.topology.clone())?).await?;
    nats.provision().await?;
    let mut resources = Resources::load(&config)?;
    resources.directory = FileDirectory::generated("bench", n);
    let cancel = CancellationToken::new();
    let running = app::start(&nats, &config, resources, &StageKind::ALL, None, &cancel).await?;

    let mut sent_events = Box::pin(nats.tail_events("bench", "sent", false).await?);
    let published_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> = Arc::new(std::sync::Mutex::new(vec![None; n]));
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("pipeline {bar:40} {pos}/{len} sent ({per_sec})").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let publisher = {
        let nats = nats.clone();
        let published_at = published_at.clone();
        tokio::spawn(async move {
            let bodies = (0..n).map(move |i| {
                if let Ok(mut times) = published_at.lock() {
                    times[i] = Some(Instant::now());
                }
                let body = serde_json::json!({
                    "template": "order_shipped",
                    "recipients": [{ "user_id": format!("user-{i}") }],
                    "data": { "order_id": format!("B-{i:07}"), "items": 2, "eta": "tomorrow" },
                });
                Bytes::from(body.to_string())
            });
            nats.publish_requests("bench", bodies, 4096, || {}).await
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
            bar.inc(1);
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    publisher.await??;
    cancel.cancel();
    running.wait(&cancel).await?;

    let rate = n as f64 / elapsed.as_secs_f64();
    let hist = histogram(&latencies)?;
    println!(
        "herald pipeline, {HOPS} hops:         {:>9.0} notif/s p50 {:>7.2} ms   p99 {:>7.2} ms",
        rate,
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99))
    );
    println!("\nratio herald / raw JetStream: {:.1} % of the raw throughput", 100.0 * rate / raw_rate);
    println!("(baseline volume of the requirements: ~185 notifications/s average, ~1 850/s at a 10x peak)");
    drop(server);
    Ok(())
}

fn histogram(latencies: &[Duration]) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    for l in latencies {
        hist.record(l.as_micros() as u64)?;
    }
    Ok(hist)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}
