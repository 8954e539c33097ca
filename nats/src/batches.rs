//! Reading a stream in batches for a sink that writes many rows a statement (the notification
//! log): pull up to `batch` messages, wait at most `linger` for more, hand them over together,
//! ack them all once the sink has them. A sink's failure naks the whole batch after a pause;
//! nothing is dropped, and the sink must be idempotent (the batch may come again, whole or in
//! part). A message that does not decode can never be written: it is logged with its sequence
//! and terminated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{ConsumerRef, Error};

/// How batches are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most messages handed over at once.
    pub batch: usize,
    /// Longest a partial batch waits for more messages.
    pub linger: Duration,
    /// Pause after the sink fails, before the batch comes again.
    pub retry_after: Duration,
}

/// Counters of a batch reader.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub received: AtomicU64,
    pub written: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    pub undecodable: AtomicU64,
}

/// Reads `consumer` in batches into `sink` until `cancel` fires; the batch in hand is finished
/// first.
pub async fn run<T, F, Fut>(
    js: jetstream::Context,
    consumer_ref: ConsumerRef,
    config: BatchConfig,
    stats: Arc<BatchStats>,
    cancel: CancellationToken,
    mut sink: F,
) -> Result<(), Error>
where
    T: DeserializeOwned,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let what = || format!("consumer {}/{}", consumer_ref.stream, consumer_ref.durable);
    let stream = js.get_stream(&consumer_ref.stream).await.map_err(|e| Error::NotProvisioned { what: what(), detail: e.to_string() })?;
    let consumer: PullConsumer =
        stream.get_consumer(&consumer_ref.durable).await.map_err(|e| Error::NotProvisioned { what: what(), detail: e.to_string() })?;
    info!(consumer = %consumer_ref.durable, "Batch reader started.");
    let batch = config.batch.max(1);
    while !cancel.is_cancelled() {
        let started = Instant::now();
        let mut messages = Vec::with_capacity(batch);
        // One pull for up to a batch; then, while it is partial and time is left, another.
        while messages.len() < batch && !cancel.is_cancelled() {
            let left = config.linger.saturating_sub(started.elapsed());
            let expires = if messages.is_empty() { Duration::from_secs(1) } else { left };
            if expires < Duration::from_millis(10) {
                break;
            }
            let request = consumer.batch().max_messages(batch - messages.len()).expires(expires).messages();
            let mut pulled = match tokio::select! { r = request => r, () = cancel.cancelled() => break } {
                Ok(pulled) => pulled,
                Err(e) => {
                    warn!(consumer = %consumer_ref.durable, error = %e, "Pull failed; trying again.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            };
            let before = messages.len();
            while let Some(message) = pulled.next().await {
                match message {
                    Ok(message) => messages.push(message),
                    Err(e) => warn!(consumer = %consumer_ref.durable, error = %e, "A pulled message was lost in transit; it comes again."),
                }
            }
            if messages.len() == before && !messages.is_empty() {
                break;
            }
        }
        if messages.is_empty() {
            continue;
        }
        stats.received.fetch_add(messages.len() as u64, Ordering::Relaxed);
        let mut items = Vec::with_capacity(messages.len());
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match serde_json::from_slice::<T>(&message.payload) {
                Ok(item) => {
                    items.push(item);
                    decoded.push(message);
                }
                Err(e) => {
                    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
                    error!(consumer = %consumer_ref.durable, sequence, subject = %message.subject, error = %e,
                        "A message does not decode and can never be written; terminated (read it by its sequence).");
                    stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        let n = items.len() as u64;
        let started = std::time::Instant::now();
        let written = sink(items).await;
        metrics::histogram!("herald_sink_write_seconds", "consumer" => consumer_ref.durable.clone())
            .record(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                metrics::counter!("herald_sink_written_total", "consumer" => consumer_ref.durable.clone()).increment(n);
                metrics::counter!("herald_sink_batches_total", "consumer" => consumer_ref.durable.clone()).increment(1);
                // Acks go out together; one flush confirms the connection took them.
                for message in &decoded {
                    if let Err(e) = message.ack().await {
                        warn!(consumer = %consumer_ref.durable, error = %e, "An ack was lost; the message comes again and is written once more (idempotently).");
                    }
                }
                stats.written.fetch_add(n, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("herald_sink_failures_total", "consumer" => consumer_ref.durable.clone()).increment(1);
                warn!(consumer = %consumer_ref.durable, messages = n, error = %e, retry_in = ?config.retry_after,
                    "The sink refused a batch; it comes again.");
                for message in &decoded {
                    let _ = message.ack_with(AckKind::Nak(Some(config.retry_after))).await;
                }
                tokio::select! { () = tokio::time::sleep(config.retry_after) => {}, () = cancel.cancelled() => {} }
            }
        }
    }
    info!(consumer = %consumer_ref.durable, "Batch reader stopped.");
    Ok(())
}
