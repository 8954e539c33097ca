//! The stage runner: the loop that drives one stage on one durable pull consumer.
//!
//! For every message: decode, call the stage, publish its outputs with `Nats-Msg-Id =
//! <id>:<stage>`, wait for every publish ack, and only then ack the input. Hence at-least-once
//! between stages, and with deterministic ids exactly-once effects.
//!
//! - Transient errors are naked with exponential backoff and jitter (or the error's
//!   `retry_after`); on the last attempt they are dead-lettered instead.
//! - Outages (a store or the broker itself unavailable, publishes failing, another replica's
//!   provider call in flight) are not the message's fault and cost it no attempt: the runner
//!   keeps the message (with progress acks), reports one `held` event, pauses, and tries again
//!   until the dependency is back — for at most `hold_max`, after which the error is treated as
//!   transient (a `retrying` event and the normal retry budget). Publishing again is safe because
//!   every publish carries the same `Nats-Msg-Id`.
//! - An output larger than the stream's `max_message_size` can never be stored: the input is
//!   `failed` with `payload_too_large` and terminated, before anything is published. A rendered
//!   delivery (render's output) must leave 256 bytes for what dedupe and throttle add to it, so it
//!   fails at render rather than after its claim.
//! - A message without JetStream metadata cannot be acked by sequence: it is terminated with an
//!   error log line.
//! - An output with a time (`Outcome::defer`: a `send_at`, a deferral) is stored on its hop's
//!   schedule subject with `Nats-Schedule: @at <time>` and `Nats-Schedule-Target: <the hop's
//!   subject>`; the server publishes it when due. Nothing waits in a consumer meanwhile. Its
//!   `Nats-Msg-Id` carries the time, so deferring the same delivery again later is never taken
//!   for a repeated publish; a time already past is published at once.
//! - Permanent errors (including undecodable input) are dead-lettered at once: the original
//!   body goes to `<prefix>.dlq.<stage>.<tenant>` with the reason in headers, a `dead_lettered`
//!   event goes to track, and the input is terminated.
//! - A message delivered more often than `max_deliveries` (its earlier attempts crashed or timed
//!   out) is dead-lettered without being processed, so nothing stays stuck at the server's limit.
//! - While a message is being worked on, progress acks (`+WPI`) keep the server from
//!   redelivering it to another replica.
//! - At most `max_in_flight` messages are in the stage at once; the runner pulls only as many as
//!   it has room for.
//! - On cancellation it stops pulling, finishes every message it holds, waits for their publish
//!   acks, acks them and flushes the connection, so nothing is redelivered after a clean stop.
//! - Every step is counted through the `metrics` facade (`herald_stage_*`, `herald_message_bytes`,
//!   labelled with the stage, its priority lane and, for deliver, route and channel): free when
//!   no recorder is installed, a Prometheus exporter's series when `herald` serves `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use herald_schemas::{Channel, Status, TrackEvent, headers, ids};
use herald_stage::{Decode, Emit, ErrorKind, Hop, Meta, Stage, StageError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::{ConsumerRef, Error, Topology};

/// How a stage is driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Most messages asked for in one pull request.
    pub batch: usize,
    /// Most messages one stage process works on at once.
    pub max_in_flight: usize,
    /// First retry delay after a transient error; doubles each attempt.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long one pull request waits for messages before it is renewed.
    #[serde(with = "humantime_serde")]
    pub pull_expiry: Duration,
    /// How long a stopping stage waits for its in-flight messages.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Longest a message is held through an outage without spending an attempt; after that its
    /// retries count toward `topology.max_deliveries`.
    #[serde(with = "humantime_serde")]
    pub hold_max: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch: 256,
            max_in_flight: 1024,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            pull_expiry: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            hold_max: Duration::from_secs(60),
        }
    }
}

/// Counters of one running stage, shared with whoever wants to watch it.
#[derive(Debug, Default)]
pub struct StageStats {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub published: AtomicU64,
    pub retried: AtomicU64,
    pub held: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl StageStats {
    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The runner's series for one consumer: handles registered once, reason-labelled ones on use.
struct RunnerMetrics {
    labels: Vec<metrics::Label>,
    received: metrics::Counter,
    acked: metrics::Counter,
    emitted: metrics::Counter,
    processing: metrics::Histogram,
    bytes: metrics::Histogram,
}

impl RunnerMetrics {
    fn new(stage: &'static str, topology: &Topology, consumer: &ConsumerRef) -> Self {
        let spec = topology.consumer_specs().into_iter().find(|c| c.durable() == consumer.durable);
        let mut labels = vec![metrics::Label::new("stage", stage)];
        if let Some(spec) = &spec {
            labels.push(metrics::Label::new("priority", spec.lane.as_str()));
            if let Some(route) = spec.route {
                labels.push(metrics::Label::new("route", route.as_str()));
                labels.push(metrics::Label::new("channel", route.channel().as_str()));
            }
        }
        RunnerMetrics {
            received: metrics::counter!("herald_stage_received_total", labels.clone()),
            acked: metrics::counter!("herald_stage_acked_total", labels.clone()),
            emitted: metrics::counter!("herald_stage_emitted_total", labels.clone()),
            processing: metrics::histogram!("herald_stage_processing_seconds", labels.clone()),
            bytes: metrics::histogram!("herald_message_bytes", labels.clone()),
            labels,
        }
    }

    /// A counter of `name` with the consumer's labels and `reason`.
    fn because(&self, name: &'static str, reason: &str) -> metrics::Counter {
        let mut labels = self.labels.clone();
        labels.push(metrics::Label::new("reason", reason.to_owned()));
        metrics::counter!(name, labels)
    }

    fn error(&self, error: &StageError) {
        let mut labels = self.labels.clone();
        let kind = match error.kind {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Outage => "outage",
        };
        labels.push(metrics::Label::new("kind", kind));
        labels.push(metrics::Label::new("reason", error.reason.clone()));
        metrics::counter!("herald_stage_errors_total", labels).increment(1);
    }
}

/// Everything a running stage shares between its messages.
struct Shared<S> {
    stage: S,
    cancel: CancellationToken,
    js: jetstream::Context,
    topology: Arc<Topology>,
    config: RunnerConfig,
    stats: Arc<StageStats>,
    metrics: RunnerMetrics,
    /// Attempts before a transient failure is dead-lettered.
    max_attempts: u32,
}

/// Runs `stage` on `consumer` until `cancel` fires, then drains.
pub async fn run<S: Stage>(
    stage: S,
    js: jetstream::Context,
    topology: Arc<Topology>,
    consumer_ref: ConsumerRef,
    config: RunnerConfig,
    stats: Arc<StageStats>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let what = || format!("consumer {}/{}", consumer_ref.stream, consumer_ref.durable);
    let stream = js.get_stream(&consumer_ref.stream).await.map_err(|e| Error::NotProvisioned { what: what(), detail: e.to_string() })?;
    let consumer: PullConsumer =
        stream.get_consumer(&consumer_ref.durable).await.map_err(|e| Error::NotProvisioned { what: what(), detail: e.to_string() })?;
    // The consumer's own limit (one more than the runner's, see `Topology::consumers`): deliver
    // consumers allow more attempts than the others.
    let max_deliver = consumer.cached_info().config.max_deliver;
    let max_attempts = if max_deliver > 1 { u32::try_from(max_deliver - 1).unwrap_or(u32::MAX) } else { topology.config.max_deliveries };
    let metrics = RunnerMetrics::new(S::NAME, &topology, &consumer_ref);
    let shared =
        Arc::new(Shared { stage, cancel: cancel.clone(), js: js.clone(), topology, config: config.clone(), stats, metrics, max_attempts });
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    info!(stage = S::NAME, consumer = %consumer_ref.durable, "Stage started.");

    let mut pull_failures = 0u32;
    'pull: while !cancel.is_cancelled() {
        // Wait for room for at least one message, then take all the room there is (up to a batch).
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = cancel.cancelled() => break,
        };
        let mut room = vec![first];
        while room.len() < config.batch {
            match permits.clone().try_acquire_owned() {
                Ok(p) => room.push(p),
                Err(_) => break,
            }
        }
        let request = consumer.batch().max_messages(room.len()).expires(config.pull_expiry).messages();
        let mut batch = match request.await {
            Ok(batch) => {
                pull_failures = 0;
                batch
            }
            Err(error) => {
                pull_failures += 1;
                warn!(%error, stage = S::NAME, "Pull request failed; retrying.");
                let pause = backoff(Duration::from_millis(100), Duration::from_secs(5), pull_failures);
                tokio::select! { () = tokio::time::sleep(pause) => continue 'pull, () = cancel.cancelled() => break 'pull }
            }
        };
        // Every message of a pull request is ours once it arrives, so the batch is always read to
        // its end (at most `pull_expiry`), even when stopping: what we hold we finish.
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => {
                    let Some(permit) = room.pop() else {
                        error!(stage = S::NAME, "Received more messages than requested; it will be redelivered.");
                        break;
                    };
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        handle(&shared, message).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    debug!(%error, stage = S::NAME, "Pull request ended early.");
                    break;
                }
            }
        }
        drop(room);
        while tasks.try_join_next().is_some() {}
    }

    info!(stage = S::NAME, in_flight = tasks.len(), "Stage stopping: finishing in-flight messages.");
    let drained = tokio::time::timeout(config.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(stage = S::NAME, left = tasks.len(), "Shutdown grace ran out; unfinished messages will be redelivered.");
        tasks.abort_all();
    }
    // Acks are buffered publishes: flush them before the connection goes away.
    if let Err(error) = js.client().flush().await {
        warn!(%error, stage = S::NAME, "Could not flush acks; some messages may be redelivered.");
    }
    info!(stage = S::NAME, "Stage stopped.");
    Ok(())
}

/// Processes one message to its end: acked, naked or terminated.
async fn handle<S: Stage>(shared: &Shared<S>, message: jetstream::Message) {
    StageStats::bump(&shared.stats.received, 1);
    shared.metrics.received.increment(1);
    shared.metrics.bytes.record(message.payload.len() as f64);
    let Ok(info) = message.info() else {
        error!(stage = S::NAME, subject = %message.subject, "Message without JetStream metadata (was it published with core NATS to a stage subject?); terminating it.");
        ack(&message, AckKind::Term).await;
        return;
    };
    let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
    let sequence = info.stream_sequence;
    let stored_at = jiff::Timestamp::from_nanosecond(info.published.unix_timestamp_nanos()).unwrap_or_else(|_| jiff::Timestamp::now());
    let tenant = shared.topology.tenant_of(&message.subject).unwrap_or("unknown").to_owned();
    let meta = Meta { tenant, sequence, attempt, max_attempts: shared.max_attempts, stored_at, received_at: jiff::Timestamp::now() };
    let span = info_span!("message", stage = S::NAME, subject = %message.subject, sequence, attempt);
    async {
        if attempt > meta.max_attempts {
            let error = StageError::permanent(
                "max_deliveries_exceeded",
                format!("delivered {attempt} times without being acknowledged (limit {})", meta.max_attempts),
            );
            return dead_letter(shared, &message, &meta, &error).await;
        }
        let mut outages = 0;
        let held_since = tokio::time::Instant::now();
        let result = loop {
            let started = std::time::Instant::now();
            let result = match S::Input::decode(&message.payload) {
                Ok(input) => process_with_progress(shared, &message, input, &meta).await,
                Err(error) => Err(StageError::from(error)),
            };
            shared.metrics.processing.record(started.elapsed().as_secs_f64());
            if let Err(error) = &result {
                shared.metrics.error(error);
            }
            match result {
                Err(error) if error.kind == ErrorKind::Outage => {
                    outages += 1;
                    if outages == 1 {
                        hold_reported(shared, &message, &meta, &error).await;
                    }
                    if held_since.elapsed() >= shared.config.hold_max {
                        warn!(reason = %error.reason, detail = %error.detail, held = ?held_since.elapsed(), "Held as long as runner.hold_max allows; retrying with backoff instead.");
                        break Err(StageError { kind: ErrorKind::Transient, ..error });
                    }
                    warn!(reason = %error.reason, detail = %error.detail, outages, "A dependency is not ready; holding the message.");
                    if !pause(shared, &message, outages, error.retry_after).await {
                        return;
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(outcome) => {
                if let Some(error) = oversized(shared, &outcome.emits) {
                    return fail(shared, &message, &meta, &error).await;
                }
                if publish_until_done(shared, &message, &meta, outcome.emits).await {
                    ack(&message, AckKind::Ack).await;
                    StageStats::bump(&shared.stats.acked, 1);
                    shared.metrics.acked.increment(1);
                }
            }
            Err(error) if error.is_transient() => retry_or_dead_letter(shared, &message, &meta, error).await,
            Err(error) => dead_letter(shared, &message, &meta, &error).await,
        }
    }
    .instrument(span)
    .await
}

/// Reports the start of a hold: one `held` event per attempt and a counter. Best effort, and
/// never longer than a third of the ack wait: the broker may be what is down, and the message
/// must stay ours meanwhile.
async fn hold_reported<S: Stage>(shared: &Shared<S>, message: &jetstream::Message, meta: &Meta, error: &StageError) {
    StageStats::bump(&shared.stats.held, 1);
    shared.metrics.because("herald_stage_held_total", &error.reason).increment(1);
    let event = event_about(S::NAME, message, meta, Status::Held, error);
    let patience = (shared.topology.config.ack_wait / 3).max(Duration::from_millis(100));
    match tokio::time::timeout(patience, publish_all(shared, vec![event])).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "Could not report the hold."),
        Err(_) => debug!("Could not report the hold in time."),
    }
}

/// Bytes a delivery may still grow by after render: its dedupe claim and a deferral's time.
const DELIVERY_GROWTH: usize = 256;

/// The error for the first output no stream could store, if any: too large, or scheduled for a
/// hop whose stream takes no scheduled messages.
fn oversized<S: Stage>(shared: &Shared<S>, emits: &[Emit]) -> Option<StageError> {
    if let Some(emit) =
        emits.iter().find(|e| e.at.is_some() && shared.topology.schedule_subject(e.hop, &e.tenant, e.notification, e.key).is_none())
    {
        return Some(StageError::permanent(
            "not_schedulable",
            format!("{:?} takes no scheduled messages; only enrich and throttle do", emit.hop),
        ));
    }
    let limit = shared.topology.max_payload();
    // A rendered delivery still grows on its way (its dedupe claim, a deferral's time): it must
    // fail here, before it is claimed, rather than after.
    let limit_for = |hop: Hop| if hop == Hop::Dedupe { limit.saturating_sub(DELIVERY_GROWTH) } else { limit };
    emits.iter().find(|e| e.payload.len() > limit_for(e.hop)).map(|emit| {
        let subject = shared.topology.lane_subject(emit.hop, emit.lane, &emit.tenant, emit.suffix.as_deref());
        let limit = limit_for(emit.hop);
        StageError::permanent(
            "payload_too_large",
            format!(
                "the output for {subject} is {} bytes; the streams take at most {limit} (topology.max_message_size, less room for headers{})",
                emit.payload.len(),
                if emit.hop == Hop::Dedupe { " and for what dedupe and throttle add" } else { "" }
            ),
        )
    })
}

/// Ends a message that can never succeed as `failed` with the reason, without a dead letter:
/// retrying or redriving it would fail the same way.
async fn fail<S: Stage>(shared: &Shared<S>, message: &jetstream::Message, meta: &Meta, error: &StageError) {
    error!(reason = %error.reason, detail = %error.detail, "Failing the message.");
    let event = event_about(S::NAME, message, meta, Status::Failed, error);
    if publish_until_done(shared, message, meta, vec![event]).await {
        StageStats::bump(&shared.stats.failed, 1);
        shared.metrics.because("herald_stage_failed_total", &error.reason).increment(1);
        ack(message, AckKind::Term).await;
    }
}

/// Runs the stage, sending progress acks while it works so the server does not redeliver.
async fn process_with_progress<S: Stage>(
    shared: &Shared<S>,
    message: &jetstream::Message,
    input: S::Input,
    meta: &Meta,
) -> Result<herald_stage::Outcome, StageError> {
    let work = shared.stage.process(input, meta);
    tokio::pin!(work);
    let period = (shared.topology.config.ack_wait / 3).max(Duration::from_millis(100));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = progress.tick() => ack(message, AckKind::Progress).await,
        }
    }
}

/// Publishes every output, then waits for all their acks.
async fn publish_all<S: Stage>(shared: &Shared<S>, emits: Vec<Emit>) -> Result<(), StageError> {
    let count = emits.len() as u64;
    let mut pending = Vec::with_capacity(emits.len());
    let now = jiff::Timestamp::now();
    for emit in emits {
        let target = shared.topology.lane_subject(emit.hop, emit.lane, &emit.tenant, emit.suffix.as_deref());
        let schedule = emit
            .at
            .filter(|at| *at > now)
            .and_then(|at| Some((at, shared.topology.schedule_subject(emit.hop, &emit.tenant, emit.notification, emit.key)?)));
        // An output meant for a time carries the time in its id, even when that time has come
        // by now: the same delivery deferred again later must not look like a repeated publish.
        let message_id = match emit.at {
            Some(at) => format!("{}:{}@{}", emit.key, S::NAME, at.as_millisecond()),
            None => format!("{}:{}", emit.key, S::NAME),
        };
        let (subject, publish) = match schedule {
            None => (target, PublishMessage::build().payload(emit.payload.into()).message_id(message_id)),
            Some((at, subject)) => {
                // Stored now, published to `target` by the server at `at`. One schedule per
                // subject: a redelivered deferral replaces its earlier schedule instead of adding
                // one, and the time in the id keeps a later deferral from being deduplicated.
                let at_text = at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                let publish = PublishMessage::build()
                    .payload(emit.payload.into())
                    .message_id(message_id)
                    .header(headers::SCHEDULE, format!("@at {at_text}").as_str())
                    .header(headers::SCHEDULE_TARGET, target.as_str());
                (subject, publish)
            }
        };
        let ack = shared.js.send_publish(subject.clone(), publish).await.map_err(|e| publish_error(&subject, e))?;
        pending.push((subject, ack));
    }
    for (subject, ack) in pending {
        ack.await.map_err(|e| publish_error(&subject, e))?;
    }
    StageStats::bump(&shared.stats.published, count);
    shared.metrics.emitted.increment(count);
    Ok(())
}

/// Publishes until every publish is acked, holding the message through broker outages for at
/// most `hold_max`. Returns false when the stage is stopping first or the hold ran out (the
/// message is then left to be redelivered; its outputs keep their ids).
async fn publish_until_done<S: Stage>(shared: &Shared<S>, message: &jetstream::Message, meta: &Meta, emits: Vec<Emit>) -> bool {
    let mut failures = 0;
    let held_since = tokio::time::Instant::now();
    loop {
        match publish_all(shared, emits.clone()).await {
            Ok(()) => return true,
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    hold_reported(shared, message, meta, &error).await;
                }
                if held_since.elapsed() >= shared.config.hold_max {
                    warn!(detail = %error.detail, "Publishing failed for as long as runner.hold_max allows; leaving the message to be redelivered.");
                    ack(message, AckKind::Nak(Some(backoff(shared.config.backoff_initial, shared.config.backoff_max, meta.attempt)))).await;
                    return false;
                }
                warn!(detail = %error.detail, failures, "Publishing failed; holding the message and trying again.");
                if !pause(shared, message, failures, None).await {
                    return false;
                }
            }
        }
    }
}

/// Waits before another try at an outage, keeping the message ours with a progress ack: the
/// error's own hint when it gave one, else a growing backoff, never longer than a third of the
/// ack wait. Returns false when the stage is stopping instead.
async fn pause<S: Stage>(shared: &Shared<S>, message: &jetstream::Message, failures: u32, hint: Option<Duration>) -> bool {
    let longest = (shared.topology.config.ack_wait / 3).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let delay = match hint {
        Some(hint) => hint.clamp(Duration::from_millis(50), longest),
        None => backoff(Duration::from_millis(100), longest, failures),
    };
    ack(message, AckKind::Progress).await;
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shared.cancel.cancelled() => false,
    }
}

fn publish_error(subject: &str, error: impl std::fmt::Display) -> StageError {
    StageError::transient("publish_failed", format!("publishing to {subject} failed: {error}"))
}

async fn retry_or_dead_letter<S: Stage>(shared: &Shared<S>, message: &jetstream::Message, meta: &Meta, error: StageError) {
    if meta.is_last_attempt() {
        return dead_letter(shared, message, meta, &error).await;
    }
    let delay = error.retry_after.unwrap_or_else(|| backoff(shared.config.backoff_initial, shared.config.backoff_max, meta.attempt));
    warn!(reason = %error.reason, detail = %error.detail, delay = ?delay, "Transient failure; will retry.");
    let event = event_about(S::NAME, message, meta, Status::Retrying, &error);
    // The retry happens whether or not its event could be published.
    if let Err(e) = publish_all(shared, vec![event]).await {
        warn!(error = %e, "Could not report the retry.");
    }
    StageStats::bump(&shared.stats.retried, 1);
    shared.metrics.because("herald_stage_retries_total", &error.reason).increment(1);
    ack(message, AckKind::Nak(Some(delay))).await;
}

/// Moves a message to the dead-letter stream with an event, then terminates it. While the
/// dead-letter stream cannot be reached, the message is held and dead-lettering tried again.
async fn dead_letter<S: Stage>(shared: &Shared<S>, message: &jetstream::Message, meta: &Meta, error: &StageError) {
    error!(reason = %error.reason, detail = %error.detail, "Dead-lettering the message.");
    let mut headers = HeaderMap::new();
    let info_stream = message.info().map(|i| i.stream.to_owned()).unwrap_or_default();
    headers.insert(headers::MSG_ID, format!("{info_stream}:{}:dlq", meta.sequence).as_str());
    headers.insert(headers::DLQ_STAGE, S::NAME);
    headers.insert(headers::DLQ_SUBJECT, message.subject.as_str());
    headers.insert(headers::DLQ_SEQUENCE, meta.sequence.to_string().as_str());
    headers.insert(headers::DLQ_DELIVERED, meta.attempt.to_string().as_str());
    headers.insert(headers::DLQ_REASON, error.reason.as_str());
    headers.insert(headers::DLQ_DETAIL, error.detail.replace(['\r', '\n'], " ").as_str());
    let subject = shared.topology.dlq_subject(S::NAME, &meta.tenant);
    let mut failures = 0;
    loop {
        let stored = async {
            let publish = PublishMessage::build().payload(message.payload.clone()).headers(headers.clone());
            let ack = shared.js.send_publish(subject.clone(), publish).await.map_err(|e| publish_error(&subject, e))?;
            ack.await.map_err(|e| publish_error(&subject, e))?;
            publish_all(shared, vec![event_about(S::NAME, message, meta, Status::DeadLettered, error)]).await
        };
        match stored.await {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                warn!(error = %e, "Could not dead-letter the message yet; holding it and trying again.");
                if !pause(shared, message, failures, None).await {
                    return;
                }
            }
        }
    }
    StageStats::bump(&shared.stats.dead_lettered, 1);
    shared.metrics.because("herald_stage_dead_letters_total", &error.reason).increment(1);
    ack(message, AckKind::Term).await;
}

/// The event for a message the runner (not the stage) reports on. The runner does not know the
/// stage's input type, so it reads the ids any Herald envelope carries, when there are any.
fn event_about(stage: &str, message: &jetstream::Message, meta: &Meta, status: Status, error: &StageError) -> Emit {
    #[derive(Deserialize, Default)]
    struct Ids {
        notification_id: Option<Uuid>,
        delivery_id: Option<Uuid>,
        user_id: Option<String>,
        channel: Option<Channel>,
        template: Option<String>,
        category: Option<String>,
    }
    let found: Ids = serde_json::from_slice(&message.payload).unwrap_or_default();
    let subject = found.delivery_id.or(found.notification_id).unwrap_or_else(|| ids::rejection_id(&meta.tenant, meta.sequence));
    let attempt = if status.is_per_attempt() { meta.attempt } else { 0 };
    let event = TrackEvent {
        v: herald_schemas::WIRE_VERSION,
        event_id: ids::event_id(subject, stage, status, attempt),
        notification_id: found.notification_id,
        delivery_id: found.delivery_id,
        tenant: meta.tenant.clone(),
        user_id: found.user_id,
        channel: found.channel,
        status,
        reason: Some(error.reason.clone()),
        detail: Some(error.detail.clone()),
        original_notification_id: None,
        scheduled_for: None,
        deferred_until: None,
        template: found.template,
        category: found.category,
        provider: None,
        provider_message_id: None,
        stage: stage.to_owned(),
        attempt: meta.attempt,
        at: jiff::Timestamp::now(),
    };
    Emit {
        hop: Hop::Track,
        tenant: meta.tenant.clone(),
        suffix: None,
        key: event.event_id,
        notification: found.notification_id.unwrap_or(event.event_id),
        lane: None,
        at: None,
        payload: serde_json::to_vec(&event).unwrap_or_default(),
    }
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        warn!(%error, ?kind, "Could not acknowledge the message; it will be redelivered.");
    }
}

/// Exponential backoff with jitter: `initial * 2^(attempt-1)`, capped, then scaled by a random
/// factor in [0.5, 1.0) so that retries of a burst of failures spread out.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << exponent).min(max);
    base.mul_f64(rand::rng().random_range(0.5..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let initial = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempt in 1..20 {
            let d = backoff(initial, max, attempt);
            let ceiling = initial.saturating_mul(1 << (attempt - 1).min(30)).min(max);
            assert!(d < ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
    }
}
