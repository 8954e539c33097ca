//! The only code in Herald that knows async-nats.
//!
//! - [`topology`]: every stream, consumer, bucket and subject, declared once;
//! - [`provision`]: making the servers match it, with a drift report;
//! - [`runner`]: the loop that drives a stage on its durable pull consumer;
//! - [`Nats`]: the connection handle the `herald` binary wires everything through (publishing
//!   requests, reading the tracking stream, queue depths, KV ports);
//! - [`server`]: starting real `nats-server` processes (the embedded default and tests).

pub mod alerts;
pub mod batches;
pub mod bench;
pub mod depth;
mod error;
pub mod inbox;
pub mod kv;
pub mod provision;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod topology;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald_schemas::{TrackEvent, headers};
use herald_stage::Stage;
use tokio_util::sync::CancellationToken;

pub use alerts::NatsAlerts;
pub use error::Error;
pub use kv::NatsKv;
pub use provision::{Action, Change, Report};
pub use runner::{RunnerConfig, StageStats};
pub use schedule::NatsScheduler;
pub use topology::{ConsumerRef, ConsumerSpec, Topology, TopologyConfig};

/// A connection to NATS with the topology it works in.
#[derive(Clone)]
pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Arc<Topology>,
    url: Arc<str>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats").field("prefix", &self.topology.prefix()).finish()
    }
}

impl Nats {
    /// Connects to `url` (a comma-separated list for a cluster). Fails fast when nothing answers.
    pub async fn connect(url: &str, name: &str, topology: Topology) -> Result<Self, Error> {
        let connect_error = |detail: String| Error::Connect { url: redact_url(url), detail };
        let servers = server_addrs(url).map_err(connect_error)?;
        let options = with_url_credentials(async_nats::ConnectOptions::new(), &servers)
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None);
        let client = tokio::time::timeout(Duration::from_secs(5), options.connect(servers))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(16_384)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Nats { client, js, topology: Arc::new(topology), url: url.into() })
    }

    /// A second connection to the same servers with the same topology. Urgent lanes run on
    /// their own, so their publishes, acks and pulls never queue in a socket behind bulk traffic.
    pub async fn another(&self, name: &str) -> Result<Self, Error> {
        Nats::connect(&self.url, name, (*self.topology).clone()).await
    }

    /// Whether a NATS server answers at `url`.
    pub async fn reachable(url: &str) -> bool {
        let Ok(servers) = server_addrs(url) else { return false };
        let options = with_url_credentials(async_nats::ConnectOptions::new(), &servers).connection_timeout(Duration::from_millis(500));
        matches!(tokio::time::timeout(Duration::from_secs(1), options.connect(servers)).await, Ok(Ok(_)))
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Waits until JetStream answers (a fresh cluster needs a moment to elect a leader).
    pub async fn wait_for_jetstream(&self, patience: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.js.query_account().await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(Error::jetstream("account info", e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Creates or updates the topology; see [`provision::provision`].
    pub async fn provision(&self) -> Result<Report, Error> {
        provision::provision(&self.js, &self.topology).await
    }

    /// Runs `stage` on `consumer` until `cancel` fires; see [`runner`].
    pub async fn run_stage<S: Stage>(
        &self,
        stage: S,
        consumer: ConsumerRef,
        config: RunnerConfig,
        stats: Arc<StageStats>,
        cancel: CancellationToken,
    ) -> Result<(), Error> {
        runner::run(stage, self.js.clone(), self.topology.clone(), consumer, config, stats, cancel).await
    }

    /// Reads `consumer` in batches into `sink` until `cancel` fires; see [`batches`].
    pub async fn run_batches<T, F, Fut>(
        &self,
        consumer: ConsumerRef,
        config: batches::BatchConfig,
        stats: Arc<batches::BatchStats>,
        cancel: CancellationToken,
        sink: F,
    ) -> Result<(), Error>
    where
        T: serde::de::DeserializeOwned,
        F: FnMut(Vec<T>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        batches::run(self.js.clone(), consumer, config, stats, cancel, sink).await
    }

    /// A KV bucket as a stage port.
    pub async fn kv(&self, bucket: &str) -> Result<NatsKv, Error> {
        let store = self
            .js
            .get_key_value(bucket)
            .await
            .map_err(|e| Error::NotProvisioned { what: format!("kv bucket {bucket}"), detail: e.to_string() })?;
        Ok(NatsKv::new(store, bucket.to_owned()))
    }

    /// The operators' alerts port.
    pub fn alerts(&self) -> NatsAlerts {
        NatsAlerts::new(self.js.clone(), self.topology.clone())
    }

    /// The scheduled-message port (cancels).
    pub fn scheduler(&self) -> NatsScheduler {
        NatsScheduler::new(self.js.clone(), self.topology.clone())
    }

    /// Publishes a cancel of `notification` on `<prefix>.cancel.<tenant>` and waits for the
    /// stream's ack.
    pub async fn publish_cancel(&self, tenant: &str, body: Bytes) -> Result<u64, Error> {
        herald_schemas::directory::check_tenant(tenant).map_err(|e| Error::Invalid(e.detail))?;
        let subject = self.topology.cancel_subject(tenant);
        let ack = self.js.publish(subject.clone(), body).await.map_err(|e| Error::jetstream(&subject, e))?;
        let ack = ack.await.map_err(|e| Error::jetstream(&subject, e))?;
        Ok(ack.sequence)
    }

    /// The requests subject of `tenant`, refused when the tenant cannot be a subject token.
    fn requests_subject(&self, tenant: &str) -> Result<String, Error> {
        herald_schemas::directory::check_tenant(tenant).map_err(|e| Error::Invalid(e.detail))?;
        Ok(self.topology.requests_subject(tenant))
    }

    /// Publishes a producer's request on `<prefix>.requests.<tenant>` and waits for the stream's
    /// ack: once this returns, the request is accepted for processing. `msg_id` makes a retried
    /// publish a no-op within the duplicate window.
    pub async fn publish_request(&self, tenant: &str, body: Bytes, msg_id: Option<&str>) -> Result<u64, Error> {
        self.publish_request_in(tenant, herald_schemas::Priority::Normal, body, msg_id).await
    }

    /// The notification id ingest gives (or gave) the request stored at `sequence`: it is a
    /// function of the stream position, so a producer can know it before ingest runs.
    pub async fn notification_id_of(&self, tenant: &str, sequence: u64) -> Result<uuid::Uuid, Error> {
        let name = self.topology.stream_name(topology::role::REQUESTS);
        let stream = self.js.get_stream(&name).await.map_err(|e| Error::jetstream(&name, e))?;
        let message = stream.get_raw_message(sequence).await.map_err(|e| Error::jetstream(&name, e))?;
        let stored_at_ms = u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        Ok(herald_schemas::ids::notification_id(tenant, sequence, stored_at_ms))
    }

    /// The payload of the deliver stream's message at `sequence` (a delivery as deliver read
    /// it), or `None` once the stream's max age removed it.
    pub async fn deliver_message(&self, sequence: u64) -> Result<Option<Bytes>, Error> {
        let name = self.topology.stream_name(topology::role::DELIVER);
        let stream = self.js.get_stream(&name).await.map_err(|e| Error::jetstream(&name, e))?;
        match stream.get_raw_message(sequence).await {
            Ok(message) => Ok(Some(message.payload)),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(Error::jetstream(&name, e)),
        }
    }

    /// Publishes a provider's verified receipt on `<prefix>.receipts.<tenant>.<provider>` with
    /// `Nats-Msg-Id = <receipt id>` (a receipt posted twice is stored once) and waits for the ack.
    pub async fn publish_receipt(&self, receipt: &herald_schemas::Receipt) -> Result<u64, Error> {
        herald_schemas::directory::check_tenant(&receipt.tenant).map_err(|e| Error::Invalid(e.detail))?;
        let subject = self.topology.receipts_subject(&receipt.tenant, &receipt.provider);
        let body = Bytes::from(serde_json::to_vec(receipt).map_err(|e| Error::Invalid(e.to_string()))?);
        let publish = jetstream::message::PublishMessage::build().payload(body).message_id(receipt.receipt_id.to_string());
        let ack = self.js.send_publish(subject.clone(), publish).await.map_err(|e| Error::jetstream(&subject, e))?;
        let ack = ack.await.map_err(|e| Error::jetstream(&subject, e))?;
        Ok(ack.sequence)
    }

    /// Hands an event to track (`<prefix>.stage.track.<tenant>`), stored once per event id
    /// (`Nats-Msg-Id`), as a stage's report would be: for what Herald's API sees itself, e.g. an
    /// open or a click on an engagement link.
    pub async fn report_event(&self, event: &TrackEvent) -> Result<u64, Error> {
        herald_schemas::directory::check_tenant(&event.tenant).map_err(|e| Error::Invalid(e.detail))?;
        let subject = self.topology.lane_subject(herald_stage::Hop::Track, None, &event.tenant, None);
        let body = Bytes::from(serde_json::to_vec(event).map_err(|e| Error::Invalid(e.to_string()))?);
        let publish = jetstream::message::PublishMessage::build().payload(body).message_id(format!("{}:{}", event.event_id, event.stage));
        let ack = self.js.send_publish(subject.clone(), publish).await.map_err(|e| Error::jetstream(&subject, e))?;
        let ack = ack.await.map_err(|e| Error::jetstream(&subject, e))?;
        Ok(ack.sequence)
    }

    /// Like [`publish_request`](Self::publish_request), on ingest's `lane`
    /// (`<prefix>.requests.<tenant>.<lane>`; the plain subject for `normal`).
    pub async fn publish_request_in(
        &self,
        tenant: &str,
        lane: herald_schemas::Priority,
        body: Bytes,
        msg_id: Option<&str>,
    ) -> Result<u64, Error> {
        let mut subject = self.requests_subject(tenant)?;
        if lane != herald_schemas::Priority::Normal {
            subject = self.topology.requests_lane_subject(tenant, lane);
        }
        let mut publish = jetstream::message::PublishMessage::build().payload(body);
        if let Some(id) = msg_id {
            publish = publish.message_id(id);
        }
        let ack = self.js.send_publish(subject.clone(), publish).await.map_err(|e| Error::jetstream(&subject, e))?;
        let ack = ack.await.map_err(|e| Error::jetstream(&subject, e))?;
        Ok(ack.sequence)
    }

    /// Publishes many requests with up to `window` acks outstanding; returns when all are acked.
    /// `on_ack` is called once per acked request (for progress bars).
    pub async fn publish_requests(
        &self,
        tenant: &str,
        bodies: impl IntoIterator<Item = Bytes>,
        window: usize,
        mut on_ack: impl FnMut(),
    ) -> Result<(), Error> {
        let subject = self.requests_subject(tenant)?;
        let mut acks = futures::stream::FuturesUnordered::new();
        let mut outstanding = 0usize;
        for body in bodies {
            let publish = jetstream::message::PublishMessage::build().payload(body);
            let ack = self.js.send_publish(subject.clone(), publish).await.map_err(|e| Error::jetstream(&subject, e))?;
            acks.push(ack.into_future());
            outstanding += 1;
            while outstanding >= window.max(1) {
                let Some(ack) = acks.next().await else { break };
                outstanding -= 1;
                ack.map_err(|e| Error::jetstream(&subject, e))?;
                on_ack();
            }
        }
        while let Some(ack) = acks.next().await {
            ack.map_err(|e| Error::jetstream(&subject, e))?;
            on_ack();
        }
        Ok(())
    }

    /// Publishes raw bytes on a subject with the core protocol, without waiting for a stream
    /// ack (for tests that need to send what a well-behaved client would not).
    pub async fn publish_raw(&self, subject: &str, body: Bytes) -> Result<(), Error> {
        self.client.publish(subject.to_owned(), body).await.map_err(|e| Error::jetstream(subject, e))?;
        self.client.flush().await.map_err(|e| Error::jetstream(subject, e))
    }

    /// Announces that a tenant's directory changed (one user, or with `None` any number), so
    /// every process's directory cache evicts it. Core NATS: a cache that misses it still
    /// expires the entry by its TTL.
    pub async fn publish_directory_change(&self, tenant: &str, user: Option<&str>) -> Result<(), Error> {
        let subject = self.topology.directory_changes_subject(tenant);
        self.client
            .publish(subject.clone(), Bytes::from(user.unwrap_or("*").to_owned()))
            .await
            .map_err(|e| Error::jetstream(&subject, e))?;
        self.client.flush().await.map_err(|e| Error::jetstream(&subject, e))
    }

    /// Directory changes as (tenant, user or `None` for the whole tenant).
    pub async fn directory_changes(&self) -> Result<impl Stream<Item = (String, Option<String>)> + use<>, Error> {
        let subject = self.topology.directory_changes_subject("*");
        let subscription = self.client.subscribe(subject.clone()).await.map_err(|e| Error::jetstream(&subject, e))?;
        Ok(subscription.map(|message| {
            let tenant = message.subject.rsplit('.').next().unwrap_or_default().to_owned();
            let user = String::from_utf8_lossy(&message.payload).into_owned();
            (tenant, (user != "*").then_some(user))
        }))
    }

    /// Follows the tracking stream. `filter` narrows the subject (`tenant` and `status`, `*` for
    /// any); `from_start` replays what the stream holds before following new events.
    pub async fn tail_events(
        &self,
        tenant: &str,
        status: &str,
        from_start: bool,
    ) -> Result<impl Stream<Item = Result<TrackEvent, Error>> + use<>, Error> {
        let name = self.topology.stream_name(topology::role::EVENTS);
        let stream =
            self.js.get_stream(&name).await.map_err(|e| Error::NotProvisioned { what: format!("stream {name}"), detail: e.to_string() })?;
        let config = consumer::pull::OrderedConfig {
            filter_subject: self.topology.events_subject(tenant, status),
            deliver_policy: if from_start { consumer::DeliverPolicy::All } else { consumer::DeliverPolicy::New },
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(|e| Error::jetstream(format!("ordered consumer on {name}"), e))?;
        let messages = consumer.messages().await.map_err(|e| Error::jetstream(format!("ordered consumer on {name}"), e))?;
        Ok(messages.map(|message| {
            let message = message.map_err(|e| Error::jetstream("tracking stream", e))?;
            serde_json::from_slice(&message.payload).map_err(|e| Error::jetstream("tracking stream", format!("undecodable event: {e}")))
        }))
    }

    /// Every event the tracking stream holds about `notification` of `tenant`, in stream order.
    /// Notification ids are time-ordered (UUIDv7), so the scan starts a minute before the
    /// notification was accepted rather than at the stream's start. `progress(read, left)` is
    /// called as the scan goes.
    pub async fn notification_events(
        &self,
        tenant: &str,
        notification: uuid::Uuid,
        progress: impl FnMut(u64, u64),
    ) -> Result<Vec<TrackEvent>, Error> {
        let since = notification.get_timestamp().map(|t| {
            let (seconds, _) = t.to_unix();
            herald_schemas::Timestamp::from_second(i64::try_from(seconds).unwrap_or(i64::MAX).saturating_sub(60))
                .unwrap_or(herald_schemas::Timestamp::UNIX_EPOCH)
        });
        let mut events = Vec::new();
        self.scan_events(
            tenant,
            "*",
            since,
            |event| {
                if event.notification_id == Some(notification) {
                    events.push(event);
                }
            },
            progress,
        )
        .await?;
        Ok(events)
    }

    /// Reads what the tracking stream holds for `tenant` (`status` narrows the subject, `*` for
    /// any) from the first event stored at or after `since` (the stream's start when `None`) to
    /// the last one stored when the scan began, through an ordered consumer: `visit` sees each
    /// event in stream order, `progress(read, left)` is called every thousand messages and at
    /// the end. Events that do not decode are counted in the summary, not visited.
    pub async fn scan_events(
        &self,
        tenant: &str,
        status: &str,
        since: Option<herald_schemas::Timestamp>,
        mut visit: impl FnMut(TrackEvent),
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Scan, Error> {
        let name = self.topology.stream_name(topology::role::EVENTS);
        let stream =
            self.js.get_stream(&name).await.map_err(|e| Error::NotProvisioned { what: format!("stream {name}"), detail: e.to_string() })?;
        let config = consumer::pull::OrderedConfig {
            filter_subject: self.topology.events_subject(tenant, status),
            deliver_policy: match since {
                Some(since) => consumer::DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp_nanos(since.as_nanosecond())
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                },
                None => consumer::DeliverPolicy::All,
            },
            ..Default::default()
        };
        let mut consumer = stream.create_consumer(config).await.map_err(|e| Error::jetstream(format!("ordered consumer on {name}"), e))?;
        let info = consumer.info().await.map_err(|e| Error::jetstream(format!("ordered consumer on {name}"), e))?;
        let mut scan = Scan::default();
        if info.num_pending == 0 {
            progress(0, 0);
            return Ok(scan);
        }
        let mut messages = consumer.messages().await.map_err(|e| Error::jetstream(format!("ordered consumer on {name}"), e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| Error::jetstream("tracking stream", e))?;
            scan.read += 1;
            let left = message.info().map(|i| i.pending).unwrap_or(0);
            match serde_json::from_slice::<TrackEvent>(&message.payload) {
                Ok(event) => visit(event),
                Err(_) => scan.undecodable += 1,
            }
            if scan.read % 1000 == 0 || left == 0 {
                progress(scan.read, left);
            }
            if left == 0 {
                break;
            }
        }
        Ok(scan)
    }

    /// Every event the tracking stream holds for `tenant` right now (for tests and the demo).
    pub async fn events_snapshot(&self, tenant: &str) -> Result<Vec<TrackEvent>, Error> {
        let name = self.topology.stream_name(topology::role::EVENTS);
        let stream =
            self.js.get_stream(&name).await.map_err(|e| Error::NotProvisioned { what: format!("stream {name}"), detail: e.to_string() })?;
        let filter = self.topology.events_subject(tenant, "*");
        let info = stream.info_with_subjects(&filter).await.map_err(|e| Error::jetstream(format!("stream {name}"), e))?;
        let total: usize = info.map(|r| r.map(|(_, n)| n).unwrap_or(0)).fold(0, |a, b| async move { a + b }).await;
        let mut events = Vec::with_capacity(total);
        if total == 0 {
            return Ok(events);
        }
        let mut tail = Box::pin(self.tail_events(tenant, "*", true).await?);
        while events.len() < total {
            match tokio::time::timeout(Duration::from_secs(5), tail.next()).await {
                Ok(Some(event)) => events.push(event?),
                _ => break,
            }
        }
        Ok(events)
    }

    /// The dead letters a stage left for `tenant`: (reason header, body).
    pub async fn dead_letters(&self, stage: &str, tenant: &str) -> Result<Vec<(String, Bytes)>, Error> {
        let name = self.topology.stream_name(topology::role::DLQ);
        let stream =
            self.js.get_stream(&name).await.map_err(|e| Error::NotProvisioned { what: format!("stream {name}"), detail: e.to_string() })?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.topology.dlq_subject(stage, tenant),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::jetstream(format!("ordered consumer on {name}"), e))?;
        let pending = consumer.cached_info().num_pending as usize;
        let mut messages = consumer.messages().await.map_err(|e| Error::jetstream(format!("consumer on {name}"), e))?;
        let mut letters = Vec::with_capacity(pending);
        while letters.len() < pending {
            match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(message))) => {
                    let reason =
                        message.headers.as_ref().and_then(|h| h.get(headers::DLQ_REASON)).map(|v| v.to_string()).unwrap_or_default();
                    letters.push((reason, message.payload.clone()));
                }
                _ => break,
            }
        }
        Ok(letters)
    }

    /// Deletes the durable consumer `durable` and creates it again as the topology declares it,
    /// so it reads its stream from the oldest message kept (the notification log's `log`, to
    /// rebuild the log). Returns how many messages the stream holds for it to read.
    pub async fn reset_consumer(&self, durable: &str) -> Result<u64, Error> {
        let (stream_name, config) =
            self.topology.consumers().into_iter().find(|(_, c)| c.durable_name.as_deref() == Some(durable)).ok_or_else(|| {
                Error::NotProvisioned { what: format!("consumer {durable}"), detail: "the topology has no such consumer".into() }
            })?;
        let what = format!("consumer {stream_name}/{durable}");
        let stream =
            self.js.get_stream(&stream_name).await.map_err(|e| Error::NotProvisioned { what: what.clone(), detail: e.to_string() })?;
        // Gone already is as good as deleted.
        let _ = stream.delete_consumer(durable).await;
        provision::ensure_consumer(&self.js, &stream_name, config).await?;
        // Every message the stream keeps (its readers may have taken some already).
        let mut stream = stream;
        let info = stream.info().await.map_err(|e| Error::jetstream(what, e))?;
        Ok(info.state.messages)
    }

    /// Queue depth of every consumer of the topology.
    pub async fn status(&self) -> Result<Vec<ConsumerStatus>, Error> {
        let mut rows = Vec::new();
        for (stream_name, config) in self.topology.consumers() {
            let durable = config.durable_name.unwrap_or_default();
            let stream = self
                .js
                .get_stream(&stream_name)
                .await
                .map_err(|e| Error::NotProvisioned { what: format!("stream {stream_name}"), detail: e.to_string() })?;
            let info = stream.consumer_info(&durable).await.map_err(|e| {
                let what = format!("consumer {stream_name}/{durable}");
                match e.kind() {
                    async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => {
                        Error::NotProvisioned { what, detail: e.to_string() }
                    }
                    _ => Error::jetstream(what, e),
                }
            })?;
            rows.push(ConsumerStatus {
                stream: stream_name,
                consumer: durable,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
                waiting: info.num_waiting as u64,
            });
        }
        Ok(rows)
    }

    /// What the durable consumer `durable` has not finished: pending and unacknowledged.
    pub async fn backlog(&self, durable: &str) -> Result<u64, Error> {
        let spec = self
            .topology
            .consumer_specs()
            .into_iter()
            .find(|c| c.durable() == durable)
            .ok_or_else(|| Error::Invalid(format!("no consumer `{durable}` in the topology")))?;
        let stream = self
            .js
            .get_stream(&spec.stream)
            .await
            .map_err(|e| Error::NotProvisioned { what: format!("stream {}", spec.stream), detail: e.to_string() })?;
        let info = stream.consumer_info(durable).await.map_err(|e| Error::jetstream(format!("consumer {}/{durable}", spec.stream), e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Message counts of every stream (by name).
    pub async fn stream_sizes(&self) -> Result<Vec<(String, u64)>, Error> {
        let mut sizes = Vec::new();
        for config in self.topology.streams() {
            let mut stream: stream::Stream = self
                .js
                .get_stream(&config.name)
                .await
                .map_err(|e| Error::NotProvisioned { what: format!("stream {}", config.name), detail: e.to_string() })?;
            let info = stream.info().await.map_err(|e| Error::jetstream(format!("stream {}", config.name), e))?;
            sizes.push((config.name, info.state.messages));
        }
        Ok(sizes)
    }

    /// Flushes everything buffered on the connection (acks included).
    pub async fn flush(&self) -> Result<(), Error> {
        self.client.flush().await.map_err(|e| Error::jetstream("flush", e))
    }
}

/// Applies `user:password@` from the server URLs, which the client library itself ignores, so
/// `nats.url = "nats://herald:secret@host:4222"` signs in as written.
fn with_url_credentials(options: async_nats::ConnectOptions, servers: &[async_nats::ServerAddr]) -> async_nats::ConnectOptions {
    match servers.iter().find_map(|s| Some((s.username()?, s.password()?))) {
        Some((user, password)) => options.user_and_password(user.to_owned(), password.to_owned()),
        None => options,
    }
}

/// A server URL list fit to print: passwords replaced by `***`.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => match u[scheme + 3..at].split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &u[..scheme + 3], &u[at..]),
                None => u.to_owned(),
            },
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a comma-separated list of server URLs.
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse::<async_nats::ServerAddr>().map_err(|e| format!("`{u}` is not a NATS URL: {e}")))
        .collect()
}

/// One row of `herald status`.
/// What [`Nats::scan_events`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Messages read.
    pub read: u64,
    /// Messages that were not a tracking event (and so were not visited).
    pub undecodable: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerStatus {
    pub stream: String,
    pub consumer: String,
    /// Messages in the stream not yet delivered to the consumer: the queue depth.
    pub pending: u64,
    /// Delivered but not yet acknowledged.
    pub ack_pending: u64,
    /// Delivered more than once.
    pub redelivered: u64,
    /// Pull requests waiting (replicas idle and asking for work).
    pub waiting: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_print() {
        assert_eq!(
            super::redact_url("nats://herald:s3cret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://herald:***@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        assert_eq!(super::redact_url("nats://token@host:4222"), "nats://token@host:4222");
    }
}
