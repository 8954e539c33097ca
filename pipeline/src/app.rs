//! Wiring: connecting to NATS (or starting the embedded server), and running stages on the
//! runner with their ports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use herald_attachments::Attachments;
use herald_dedupe::Dedupe;
use herald_deliver::rate::{SendRate, SharedRate};
use herald_deliver::{Deliver, ProviderPorts, Providers};
use herald_enrich::{Enrich, Fanout};
use herald_ingest::{Cancel, Ingest};
use herald_nats::batches::{BatchConfig, BatchStats};
use herald_nats::server::{NatsServer, ServerOptions};
use herald_nats::{Nats, StageStats, Topology};
use herald_render::{NoTracking, Render};
use herald_schemas::{Priority, Route, TrackEvent};
use herald_stage::Stage;
use herald_throttle::Throttle;
use herald_track::{DeliveryArchive, Receipts, Track};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use herald_store::{
    CAPS_CHANGE, CachedCaps, CachedCredentials, CachedDirectory, CachedTemplates, LogConfig, PROVIDERS_CHANGE, Store, StoreDevices,
    TEMPLATE_CHANGE_PREFIX,
};

use crate::config::Config;

/// A stage, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum StageKind {
    Ingest,
    Enrich,
    Fanout,
    Render,
    Dedupe,
    Throttle,
    Deliver,
    Track,
}

impl StageKind {
    pub const ALL: [StageKind; 8] = [
        StageKind::Ingest,
        StageKind::Enrich,
        StageKind::Fanout,
        StageKind::Render,
        StageKind::Dedupe,
        StageKind::Throttle,
        StageKind::Deliver,
        StageKind::Track,
    ];

    /// Whether the stage reads the store (the directory, the templates, tenants' caps, for
    /// deliver on `routes` tenants' provider credentials).
    pub fn needs_store(self, routes: &[Route]) -> bool {
        match self {
            // Track's receipts stage records the addresses a receipt suppresses.
            StageKind::Enrich | StageKind::Fanout | StageKind::Render | StageKind::Throttle | StageKind::Track => true,
            // Every provider but `log` reads tenants' credentials (or, for in_app, is wired
            // with the ports built beside the store).
            StageKind::Deliver => routes.iter().any(|r| *r != Route::Log),
            _ => false,
        }
    }
}

/// A connection, and the server `herald` started when there was none.
#[derive(Debug)]
pub struct Connection {
    pub nats: Nats,
    /// Held so the embedded server lives exactly as long as the connection.
    _embedded: Option<NatsServer>,
}

/// Connects to the configured NATS. With `embedded_allowed` and no URL configured, starts the
/// installed nats-server when nothing answers at the default address.
pub async fn connect(config: &Config, embedded_allowed: bool) -> anyhow::Result<Connection> {
    let (url, explicit) = config.nats_url();
    let topology = Topology::new(config.topology.clone())?;
    let mut embedded = None;
    if !explicit && embedded_allowed && !Nats::reachable(&url).await {
        let store_dir = config.nats.embedded_store.clone();
        eprintln!("No NATS server at {url}; starting nats-server there with its store in {}.", store_dir.display());
        let server = NatsServer::start(ServerOptions {
            store_dir,
            port: Some(config.nats.embedded_port),
            name: None,
            cluster: None,
            config_file: None,
        })
        .await?;
        embedded = Some(server);
    }
    let nats = Nats::connect(&url, "herald", topology).await?;
    nats.wait_for_jetstream(std::time::Duration::from_secs(10)).await?;
    Ok(Connection { nats, _embedded: embedded })
}

/// What the stages read besides NATS.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The directory and templates, when a stage of this process needs them.
    pub store: Option<Store>,
    /// The attachment store, for ingest (the claim check) and deliver (e-mail attachments).
    pub attachments: Option<Attachments>,
}

impl Resources {
    /// Opens the store when `which` needs it (deliver on `routes`, default: every enabled one).
    pub async fn load(config: &Config, which: &[StageKind], routes: Option<&[Route]>) -> anyhow::Result<Self> {
        let routes = deliver_routes(config, routes);
        let store = if which.iter().any(|k| k.needs_store(&routes)) { Some(Store::open(&config.store).await?) } else { None };
        let attachments = if which.iter().any(|k| matches!(k, StageKind::Ingest | StageKind::Deliver)) {
            Some(Attachments::open(&config.attachments)?)
        } else {
            None
        };
        Ok(Resources { store, attachments })
    }
}

/// The deliver routes a process runs: `routes`, or every route of the enabled channels.
pub fn deliver_routes(config: &Config, routes: Option<&[Route]>) -> Vec<Route> {
    match routes {
        Some(routes) => routes.to_vec(),
        None => config.enrich.enabled_channels.iter().flat_map(|&c| Route::of_channel(c)).collect(),
    }
}

/// Counters of every running stage, by consumer name.
pub type Stats = BTreeMap<String, Arc<StageStats>>;

/// Running stages.
#[derive(Debug)]
pub struct Running {
    tasks: JoinSet<(String, Result<(), herald_nats::Error>)>,
    pub stats: Stats,
    /// The notification log writer's counters, when this process writes it.
    pub log: Option<Arc<BatchStats>>,
}

impl Running {
    /// Waits until every stage has stopped; the first stage error is returned (after the
    /// others were cancelled and drained).
    pub async fn wait(mut self, cancel: &CancellationToken) -> anyhow::Result<Stats> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(error))) => {
                    warn!(%error, stage = %name, "Stage failed; stopping the others.");
                    cancel.cancel();
                    first_error.get_or_insert(anyhow::anyhow!("stage {name}: {error}"));
                }
                Err(error) => {
                    cancel.cancel();
                    first_error.get_or_insert(anyhow::anyhow!("a stage task panicked: {error}"));
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.stats),
        }
    }
}

/// Starts the chosen stages. `routes` narrows deliver to some routes (default: every route of
/// the enabled channels).
pub async fn start(
    nats: &Nats,
    config: &Config,
    resources: Resources,
    which: &[StageKind],
    routes: Option<&[Route]>,
    cancel: &CancellationToken,
) -> anyhow::Result<Running> {
    let mut running = Running { tasks: JoinSet::new(), stats: Stats::new(), log: None };
    let topology = nats.topology().clone();
    // One cache each of contacts, templates, tenants' caps and provider credentials for the
    // process, in front of the store, evicted by change messages: a user id, `*` for the whole
    // tenant, `template/<id>`, `caps/` or `providers/`.
    let caches = match &resources.store {
        Some(store) => {
            let contacts = CachedDirectory::new(store.clone(), &config.cache);
            let templates = CachedTemplates::new(store.clone(), &config.cache);
            let caps = CachedCaps::new(store.clone(), &config.cache);
            let credentials = CachedCredentials::new(store.clone(), &config.cache);
            let mut changes = Box::pin(nats.directory_changes().await?);
            let (evict_contacts, evict_templates, evict_caps, evict_credentials) =
                (contacts.clone(), templates.clone(), caps.clone(), credentials.clone());
            tokio::spawn(async move {
                while let Some((tenant, what)) = futures::StreamExt::next(&mut changes).await {
                    match what.as_deref() {
                        Some(CAPS_CHANGE) => evict_caps.invalidate(&tenant),
                        Some(PROVIDERS_CHANGE) => evict_credentials.invalidate(&tenant),
                        Some(what) => match what.strip_prefix(TEMPLATE_CHANGE_PREFIX) {
                            Some(template) => evict_templates.invalidate(&tenant, Some(template)),
                            None => evict_contacts.invalidate(&tenant, Some(what)),
                        },
                        None => {
                            evict_contacts.invalidate(&tenant, None);
                            evict_templates.invalidate(&tenant, None);
                            evict_caps.invalidate(&tenant);
                            evict_credentials.invalidate(&tenant);
                        }
                    }
                }
            });
            Some((contacts, templates, caps, credentials))
        }
        None => None,
    };
    let directory = || caches.as_ref().map(|c| c.0.clone()).context("the store is not open in this process");
    let templates = || caches.as_ref().map(|c| c.1.clone()).context("the store is not open in this process");
    let tenant_caps = || caches.as_ref().map(|c| c.2.clone()).context("the store is not open in this process");
    // The registry, its permits and breakers are shared by every lane: one concurrency budget
    // and one breaker per route. Push providers read tenants' credentials from the store.
    let ports = match (&resources.store, &caches) {
        (Some(store), Some(caches)) => {
            let announcer = nats.clone();
            let announce = move |tenant: String, user: String| {
                let nats = announcer.clone();
                async move {
                    if let Err(error) = nats.publish_directory_change(&tenant, Some(&user)).await {
                        warn!(%error, tenant, user, "Could not announce a disabled device; caches forget it within their TTL.");
                    }
                }
            };
            let rates_kv = nats.kv(&topology.rates_bucket()).await?;
            let rates = move |route: Route, per_second: u32| -> Arc<dyn SendRate> {
                Arc::new(SharedRate::new(rates_kv.clone(), route, per_second))
            };
            Some(ProviderPorts {
                credentials: Arc::new(caches.3.clone()),
                devices: Arc::new(StoreDevices { store: store.clone(), announce }),
                alerts: Arc::new(nats.alerts()),
                rates: Arc::new(rates),
                attachments: resources.attachments.clone(),
                inbox: Some(Arc::new(NatsInbox(nats.clone()))),
            })
        }
        _ => None,
    };
    let providers = Arc::new(Providers::from_config(&config.deliver, ports)?);
    // Urgent lanes run on a connection and a thread of their own: nothing of theirs queues in a
    // socket behind the bulk lanes' traffic, or in a scheduler behind their tasks.
    let urgent_runtime = urgent_runtime()?;
    let urgent = {
        let nats = nats.clone();
        urgent_runtime.spawn(async move { nats.another("herald-urgent").await }).await??
    };
    let bulk_runtime = tokio::runtime::Handle::current();
    let connections = [
        (nats, &[Priority::Normal, Priority::Low][..], &bulk_runtime),
        (&urgent, &[Priority::Critical, Priority::High][..], urgent_runtime.handle()),
    ];
    // Whoever runs ingest (which writes attachments) deletes them after their retention.
    if let Some(attachments) = resources.attachments.clone().filter(|_| which.contains(&StageKind::Ingest)) {
        tokio::spawn(sweep_attachments(attachments, cancel.clone()));
    }
    for (nats, lanes, runtime) in connections {
        for kind in which {
            match kind {
                StageKind::Ingest => {
                    // The front door: requests, and producers' cancels.
                    let kv = nats.kv(&topology.idempotency_bucket()).await?;
                    let mut ingest = Ingest::new(kv).with_schedule_horizon(config.schedule_horizon());
                    if let Some(attachments) = &resources.attachments {
                        ingest = ingest.with_attachments(attachments.clone());
                    }
                    spawn(&mut running, (nats, lanes, runtime), config, ingest, None, cancel);
                    let markers = nats.kv(&topology.dedupe_bucket()).await?;
                    spawn(&mut running, (nats, lanes, runtime), config, Cancel::new(markers, nats.scheduler()), None, cancel);
                }
                StageKind::Enrich => {
                    let enrich = Enrich::new(directory()?, templates()?, config.enrich.clone());
                    spawn(&mut running, (nats, lanes, runtime), config, enrich, None, cancel);
                }
                StageKind::Fanout => {
                    let claims = nats.kv(&topology.dedupe_bucket()).await?;
                    let fanout = Fanout::new(directory()?, templates()?, claims, config.enrich.clone());
                    spawn(&mut running, (nats, lanes, runtime), config, fanout, None, cancel);
                }
                StageKind::Render => {
                    // Tracked links, the open pixel and unsubscribe URLs point at the API when
                    // engagement tracking is on.
                    let hook: Arc<dyn herald_render::LinkHook> = match config.engagement.links() {
                        Some(links) => Arc::new(links),
                        None => Arc::new(NoTracking),
                    };
                    let render = Render::new(templates()?, config.render.clone(), hook);
                    spawn(&mut running, (nats, lanes, runtime), config, render, None, cancel);
                }
                StageKind::Dedupe => {
                    let kv = nats.kv(&topology.dedupe_bucket()).await?;
                    spawn(&mut running, (nats, lanes, runtime), config, Dedupe::new(kv), None, cancel);
                }
                StageKind::Throttle => {
                    let kv = nats.kv(&topology.dedupe_bucket()).await?;
                    let throttle =
                        Throttle::new(kv, tenant_caps()?, config.throttle.clone()).with_defer_horizon(config.topology.max_age / 2);
                    spawn(&mut running, (nats, lanes, runtime), config, throttle, None, cancel);
                }
                StageKind::Deliver => {
                    // The registry decides which provider serves each (tenant, route); the stage
                    // never names one.
                    for route in deliver_routes(config, routes) {
                        anyhow::ensure!(
                            providers.routes().contains(&route),
                            "route `{route}` (channel `{}`) has no provider in this process (providers serve {:?}); remove the channel from enrich.enabled_channels{}",
                            route.channel(),
                            providers.routes().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                            if route != Route::Log { ", or run deliver where the store is open" } else { "" }
                        );
                        let kv = nats.kv(&topology.dedupe_bucket()).await?;
                        let deliver = Deliver::new(route, providers.clone(), kv, config.deliver.clone());
                        spawn(&mut running, (nats, lanes, runtime), config, deliver, Some(route), cancel);
                    }
                }
                StageKind::Track => {
                    spawn(&mut running, (nats, lanes, runtime), config, Track, None, cancel);
                    // Providers' receipts, beside the tracking stream they report to.
                    let kv = nats.kv(&topology.dedupe_bucket()).await?;
                    let store = resources.store.clone().context("the store is not open in this process")?;
                    let receipts = Receipts::new(kv, NatsArchive(nats.clone()), StoreSuppressions(store.clone()), config.receipts.clone());
                    spawn(&mut running, (nats, lanes, runtime), config, receipts, None, cancel);
                    if config.log.enabled && lanes.contains(&Priority::Normal) {
                        spawn_log(&mut running, nats, store, &config.log, cancel);
                    }
                }
            }
        }
    }
    Ok(running)
}

/// Runs `stage` on its consumers of `lanes` (track, cancel and receipts, which have one, with the `normal`
/// lane). The lanes share the stage value and its ports; each has its own runner, so a backlog in
/// one lane never delays another.
fn spawn<S: Stage>(
    running: &mut Running,
    (nats, lanes, runtime): (&Nats, &[Priority], &tokio::runtime::Handle),
    config: &Config,
    stage: S,
    route: Option<Route>,
    cancel: &CancellationToken,
) {
    let stage = Arc::new(stage);
    let topology = nats.topology();
    let consumers: Vec<_> = if topology.is_laned(S::NAME) {
        lanes.iter().filter_map(|&lane| topology.lane_consumer(S::NAME, route, lane)).collect()
    } else if lanes.contains(&Priority::Normal) {
        topology.consumer(S::NAME, route).into_iter().collect()
    } else {
        Vec::new()
    };
    for consumer in consumers {
        let stats = Arc::new(StageStats::default());
        running.stats.insert(consumer.durable.clone(), stats.clone());
        let nats = nats.clone();
        let runner = config.runner.clone();
        let cancel = cancel.clone();
        let name = consumer.durable.clone();
        let stage = stage.clone();
        running.tasks.spawn_on(async move { (name, nats.run_stage(stage, consumer, runner, stats, cancel).await) }, runtime);
    }
}

/// The notification log's writer (the tracking stream read in batches into the store) and its
/// pruning.
fn spawn_log(running: &mut Running, nats: &Nats, store: Store, config: &LogConfig, cancel: &CancellationToken) {
    let Some(consumer) = nats.topology().consumer("log", None) else { return };
    let batches = BatchConfig { batch: config.batch, linger: config.linger, retry_after: Duration::from_secs(1) };
    let stats = Arc::new(BatchStats::default());
    running.log = Some(stats.clone());
    let (nats, writer, cancel) = (nats.clone(), store.clone(), cancel.clone());
    let name = consumer.durable.clone();
    running.tasks.spawn(async move {
        let sink = move |events: Vec<TrackEvent>| {
            let store = writer.clone();
            async move { store.write_log(&events).await.map_err(|e| e.to_string()) }
        };
        (name, nats.run_batches(consumer, batches, stats, cancel, sink).await)
    });
    let (retention, every) = (config.retention, config.prune_every);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        loop {
            tick.tick().await;
            let cut = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX));
            let Ok(cut) = cut else { continue };
            if let Err(error) = store.prune_log(cut).await {
                warn!(%error, "Could not prune the notification log; trying again at the next round.");
            }
        }
    });
}

/// The runtime of the urgent lanes: one worker thread of their own for the life of the process,
/// which the OS schedules beside the bulk lanes' threads.
fn urgent_runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    // Built under the lock and never dropped (dropping a runtime inside another panics).
    static RUNTIME: std::sync::Mutex<Option<&'static tokio::runtime::Runtime>> = std::sync::Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(runtime) = *slot {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(8)
        .thread_name("herald-urgent")
        .enable_all()
        .build()
        .context("cannot start the urgent lanes' runtime")?;
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    *slot = Some(runtime);
    Ok(runtime)
}

/// Cancels `cancel` on SIGINT or SIGTERM.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops gracefully.");
                let _ = tokio::signal::ctrl_c().await;
                cancel.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("Interrupted; draining."),
            _ = term.recv() => info!("Terminated; draining."),
        }
        cancel.cancel();
    });
}

/// Waits until no consumer has pending or unacknowledged messages, checking every 100 ms;
/// gives up after `patience`. Returns whether the pipeline went idle.
pub async fn wait_idle(nats: &Nats, patience: std::time::Duration) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let busy: u64 = nats.status().await?.iter().map(|c| c.pending + c.ack_pending).sum();
        if busy == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Deletes the attachments past `attachments.retention`, every `attachments.sweep_every`,
/// until `cancel` fires. Replicas sweeping at once delete the same files: harmless.
async fn sweep_attachments(attachments: Attachments, cancel: CancellationToken) {
    let every = attachments.config().sweep_every.max(std::time::Duration::from_secs(1));
    loop {
        match attachments.sweep(jiff::Timestamp::now()).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "Deleted attachments past attachments.retention."),
            Err(error) => warn!(%error, "Could not sweep the attachment store; trying again in attachments.sweep_every."),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Users' inboxes on their NATS subjects.
struct NatsInbox(Nats);

impl herald_deliver::ports::InboxSink for NatsInbox {
    fn store<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        msg_id: &'a str,
        payload: bytes::Bytes,
    ) -> herald_deliver::ports::PortFuture<'a, u64> {
        Box::pin(async move {
            self.0.publish_inbox(tenant, user, msg_id, payload).await.map_err(|e| herald_stage::PortError::unavailable("inbox stream", e))
        })
    }
}

/// The addresses receipts suppress, as opt-outs in the store (deliver checks them).
struct StoreSuppressions(Store);

impl herald_track::Suppressions for StoreSuppressions {
    async fn suppress(&self, s: herald_track::Suppression) -> Result<bool, herald_stage::PortError> {
        let request = herald_deliver::ports::OptOutRequest {
            tenant: s.tenant,
            user: s.user,
            channel: s.channel,
            address: s.address,
            provider: s.provider,
            reason: s.reason,
            at: s.at,
        };
        self.0.record_opt_out(&request).await.map_err(|e| herald_stage::PortError::unavailable("store opt-outs", e))
    }
}

/// The deliveries deliver read, in the deliver stream.
struct NatsArchive(Nats);

impl DeliveryArchive for NatsArchive {
    async fn delivery(&self, sequence: u64) -> Result<Option<herald_schemas::Delivery>, herald_stage::PortError> {
        let store = "deliver stream";
        let Some(payload) = self.0.deliver_message(sequence).await.map_err(|e| herald_stage::PortError::unavailable(store, e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&payload).map(Some).map_err(|e| herald_stage::PortError::decode(store, format!("message #{sequence}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_opens_the_store_for_every_route_but_log() {
        assert!(!StageKind::Deliver.needs_store(&[Route::Log]));
        for route in [Route::Sms, Route::Voice, Route::Email, Route::Webhook, Route::InApp, Route::Apns] {
            assert!(StageKind::Deliver.needs_store(&[Route::Log, route]), "{route}");
        }
        assert!(!StageKind::Ingest.needs_store(&[Route::Sms]));
    }
}
