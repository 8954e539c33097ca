//! Prometheus metrics of a Herald process (`herald up`, `herald stage`, `herald api`):
//! `GET /metrics` on `metrics.listen`, in the Prometheus text format.
//!
//! The stages record their own series through the `metrics` facade (the runner, deliver, track,
//! the log writer); this module installs the exporter, serves it and samples what no stage
//! sees: every consumer's backlog and oldest waiting message, stream sizes, and the process's
//! CPU and memory. Where this process runs track (the one writer of the tracking stream), the
//! samples also feed [`DepthWatch`], whose alerts go to `herald.alerts` — one process raises
//! them, however many sample.
//!
//! The series ([`SERIES`]), all prefixed `herald_` but the process ones:
//! - `stage_received_total`, `stage_acked_total`, `stage_emitted_total`, `stage_retries_total`,
//!   `stage_held_total`, `stage_failed_total{reason}`, `stage_dead_letters_total{reason}`,
//!   `stage_errors_total{kind, reason}`, `stage_processing_seconds` (histogram),
//!   `message_bytes` (histogram of input sizes): labelled `stage`, `priority`, and for deliver
//!   `route` and `channel`.
//! - `events_total{status}` and `dropped_total{stage, status, reason}` (every rejection, dedupe,
//!   skip, opt-out, expiry, throttle, cancel and failure, by the stage that reported it), from
//!   track.
//! - `consumer_pending`, `consumer_ack_pending`, `consumer_redelivered`,
//!   `consumer_oldest_pending_seconds`: per `stream`, `consumer`, `stage`, `priority`, `route`.
//!   Every process samples every consumer: aggregate with `max by (consumer)`.
//! - `stream_messages{stream}` (the dead-letter stream included).
//! - `provider_requests_total{route, provider, outcome}`, `provider_request_seconds{route,
//!   provider}` (histogram), `breaker_state{route, provider}` (0 closed, 1 half-open, 2 open).
//! - `sink_written_total`, `sink_batches_total`, `sink_failures_total`, `sink_write_seconds`
//!   (histogram): the batch writers, by `consumer` (`log`: the notification log).
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes` … (metrics-process).

use std::sync::OnceLock;

use anyhow::Context;
use herald_nats::Nats;
use herald_nats::depth::DepthWatch;
use herald_schemas::{Alert, Timestamp};
use herald_stage::Alerts;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::MetricsConfig;

/// Seconds buckets for processing and provider times: 1 ms to 30 s.
const SECONDS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Byte buckets for message sizes: 256 B to 1 MiB.
const BYTES: [f64; 8] = [256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 524288.0, 1048576.0];

/// The process's recorder, installed on first use.
pub fn handle() -> anyhow::Result<&'static PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &BYTES)?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    metrics_process::Collector::default().describe();
    describe();
    Ok(HANDLE.get_or_init(|| handle))
}

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every series Herald records (the process ones come from metrics-process): the dashboard
/// under `docker/grafana/` and the rules under `docker/prometheus/` use exactly these.
pub const SERIES: [(&str, Kind, &str); 26] = [
    ("herald_stage_received_total", Kind::Counter, "Messages a stage received (redeliveries included)"),
    ("herald_stage_acked_total", Kind::Counter, "Messages a stage finished and acknowledged"),
    ("herald_stage_emitted_total", Kind::Counter, "Messages a stage published (outputs and events)"),
    ("herald_stage_retries_total", Kind::Counter, "Transient failures a stage will retry, by reason"),
    ("herald_stage_held_total", Kind::Counter, "Messages held through an outage (no attempt spent), by reason"),
    ("herald_stage_failed_total", Kind::Counter, "Messages failed for good without a dead letter, by reason"),
    ("herald_stage_dead_letters_total", Kind::Counter, "Messages moved to the dead-letter stream, by reason"),
    ("herald_stage_errors_total", Kind::Counter, "Errors a stage returned, by kind and reason"),
    ("herald_stage_processing_seconds", Kind::Histogram, "Time a stage took over one message"),
    ("herald_message_bytes", Kind::Histogram, "Sizes of the messages a stage received"),
    ("herald_events_total", Kind::Counter, "Tracking events written, by status"),
    ("herald_dropped_total", Kind::Counter, "Requests and deliveries that ended unsent, by reporting stage, status and reason"),
    ("herald_consumer_pending", Kind::Gauge, "Messages stored and not yet handed to the consumer's stage"),
    ("herald_consumer_ack_pending", Kind::Gauge, "Messages handed to the stage and not yet acknowledged"),
    ("herald_consumer_redelivered", Kind::Gauge, "Messages handed out more than once and not yet acknowledged"),
    ("herald_consumer_oldest_pending_seconds", Kind::Gauge, "Age of the consumer's oldest unacknowledged message"),
    ("herald_stream_messages", Kind::Gauge, "Messages a stream holds"),
    ("herald_provider_requests_total", Kind::Counter, "Provider calls by outcome (sent, refused, throttled, outage, timeout …)"),
    ("herald_provider_request_seconds", Kind::Histogram, "Provider call times"),
    ("herald_breaker_state", Kind::Gauge, "A provider route's circuit breaker: 0 closed, 1 half-open, 2 open"),
    ("herald_sink_written_total", Kind::Counter, "Messages a batch writer wrote (consumer `log`: the notification log)"),
    ("herald_sink_batches_total", Kind::Counter, "Batches a batch writer wrote"),
    ("herald_sink_failures_total", Kind::Counter, "Batches a batch writer's sink refused (they come again)"),
    ("herald_sink_write_seconds", Kind::Histogram, "Time one batch took to write"),
    ("process_cpu_seconds_total", Kind::Counter, "CPU time the process used"),
    ("process_resident_memory_bytes", Kind::Gauge, "The process's resident memory"),
];

fn describe() {
    for (name, kind, help) in SERIES {
        if name.starts_with("process_") {
            continue;
        }
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Serves `/metrics` on `config.listen` and samples every `sample_every` until `cancel` fires;
/// with `raise_alerts`, the samples also feed the queue-depth watch. Nothing is started when
/// `listen` is empty.
pub async fn start(config: &MetricsConfig, nats: &Nats, raise_alerts: bool, cancel: &CancellationToken) -> anyhow::Result<()> {
    if config.listen.is_empty() {
        return Ok(());
    }
    let handle = handle()?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} for /metrics: another process has it? Give each process its own (metrics.listen, or HERALD__METRICS__LISTEN); empty turns it off",
            config.listen
        )
    })?;
    tracing::info!(listen = %listener.local_addr()?, "Metrics on /metrics.");
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { handle.render() }));
    let stop = cancel.clone();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await {
            warn!(%error, "The metrics endpoint stopped.");
        }
    });
    let (nats, config, cancel) = (nats.clone(), config.clone(), cancel.clone());
    tokio::spawn(async move {
        let process = metrics_process::Collector::default();
        let mut watch = raise_alerts.then(|| DepthWatch::new(config.watch.clone()));
        let alerts = nats.alerts();
        let mut every = tokio::time::interval(config.sample_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = cancel.cancelled() => break,
            }
            handle.run_upkeep();
            process.collect();
            if let Err(error) = sample(&nats, watch.as_mut(), &alerts).await {
                warn!(%error, "Could not sample queue depths for /metrics.");
            }
        }
    });
    Ok(())
}

async fn sample(nats: &Nats, watch: Option<&mut DepthWatch>, alerts: &herald_nats::NatsAlerts) -> anyhow::Result<()> {
    let depths = nats.queue_depths().await?;
    for d in &depths {
        let mut labels = vec![
            ("stream", d.stream.clone()),
            ("consumer", d.consumer.clone()),
            ("stage", d.stage.clone()),
            ("priority", d.lane.as_str().to_owned()),
        ];
        if let Some(route) = d.route {
            labels.push(("route", route.as_str().to_owned()));
        }
        metrics::gauge!("herald_consumer_pending", &labels).set(d.pending as f64);
        metrics::gauge!("herald_consumer_ack_pending", &labels).set(d.ack_pending as f64);
        metrics::gauge!("herald_consumer_redelivered", &labels).set(d.redelivered as f64);
        metrics::gauge!("herald_consumer_oldest_pending_seconds", &labels).set(d.oldest.map_or(0.0, |o| o.as_secs_f64()));
    }
    let sizes = nats.stream_sizes().await?;
    let dlq = nats.topology().stream_name(herald_nats::topology::role::DLQ);
    let dead_letters = sizes.iter().find(|(stream, _)| *stream == dlq).map_or(0, |(_, n)| *n);
    for (stream, messages) in &sizes {
        metrics::gauge!("herald_stream_messages", "stream" => stream.clone()).set(*messages as f64);
    }
    if let Some(watch) = watch {
        let source = format!("{}:{}", herald_deliver::hostname(), std::process::id());
        for raised in watch.observe(&depths, dead_letters) {
            warn!(alert = raised.kind.as_str(), "{}", raised.detail);
            let alert = Alert {
                v: herald_schemas::WIRE_VERSION,
                kind: raised.kind,
                route: None,
                provider: None,
                consumer: raised.consumer,
                detail: raised.detail,
                source: source.clone(),
                at: Timestamp::now(),
            };
            alerts.alert(alert).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The series names an expression file mentions (`_bucket`, `_sum`, `_count` folded into
    /// their histogram).
    fn mentioned(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find(['h', 'p']) {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let word = &tail[..end];
            let before = rest[..at].chars().last();
            if before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
                && (word.starts_with("herald_") || word.starts_with("process_"))
            {
                let word = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                names.insert(word.to_owned());
            }
            rest = &tail[end.max(1)..];
        }
        names
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
    }

    #[test]
    fn the_dashboard_uses_exactly_the_series_herald_records_and_the_rules_only_those() {
        let known: BTreeSet<String> = SERIES.iter().map(|(name, ..)| (*name).to_owned()).collect();
        let dashboard: serde_json::Value = serde_json::from_str(&read("docker/grafana/herald-dashboard.json")).unwrap();
        let exprs: String = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned()))
            .collect::<Vec<_>>()
            .join("\n");
        let on_dashboard = mentioned(&exprs);
        assert_eq!(on_dashboard, known, "the dashboard's series and SERIES differ");
        let rules = mentioned(&read("docker/prometheus/alerts.yml"));
        assert!(
            !rules.is_empty() && rules.is_subset(&known),
            "series the rules use that Herald does not record: {:?}",
            rules.difference(&known)
        );
        assert_eq!(mentioned("rate(herald_x_bucket[5m]) / process_y"), BTreeSet::from(["herald_x".to_owned(), "process_y".to_owned()]));
    }
}
