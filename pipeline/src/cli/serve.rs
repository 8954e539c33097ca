//! Running Herald: `herald up` (everything), `herald stage` (some stages), `herald api`, and
//! `herald provision`.

use std::sync::Arc;

use anyhow::{Context, bail};
use herald_http::AppState;
use herald_schemas::{Channel, Route};
use tokio_util::sync::CancellationToken;

use crate::app::{self, Resources, StageKind};
use crate::config::Config;

/// `herald up`.
pub async fn up(config: &Config) -> anyhow::Result<()> {
    let connection = app::connect(config, true).await?;
    let report = connection.nats.provision().await?;
    for change in report.changes.iter().filter(|c| !matches!(c.action, herald_nats::Action::Unchanged)) {
        eprintln!("{change}");
    }
    let resources = Resources::load(config, &StageKind::ALL, None).await?;
    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    let api = match resources.store.clone() {
        Some(store) if !config.api.listen.is_empty() => Some(start_api(config, store, connection.nats.clone(), &cancel).await?),
        _ => None,
    };
    crate::metrics::start(&config.metrics, &connection.nats, true, &cancel).await?;
    let running = app::start(&connection.nats, config, resources, &StageKind::ALL, None, &cancel).await?;
    eprintln!("Herald is up: {} stages on {}. Ctrl-C to stop.", running.stats.len(), herald_nats::redact_url(&config.nats_url().0));
    let stats = running.wait(&cancel).await;
    cancel.cancel();
    if let Some(api) = api {
        api.await??;
    }
    let stats = stats?;
    connection.nats.flush().await?;
    for (name, stats) in stats {
        tracing::info!(
            stage = %name,
            received = stats.received.load(std::sync::atomic::Ordering::Relaxed),
            acked = stats.acked.load(std::sync::atomic::Ordering::Relaxed),
            retried = stats.retried.load(std::sync::atomic::Ordering::Relaxed),
            dead_lettered = stats.dead_lettered.load(std::sync::atomic::Ordering::Relaxed),
            "Stage totals."
        );
    }
    Ok(())
}

/// Starts the admin API in the background; the task ends when `cancel` fires.
async fn start_api(
    config: &Config,
    store: herald_store::Store,
    nats: herald_nats::Nats,
    cancel: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(&config.api.listen).await.with_context(|| {
        format!("cannot listen on {} for the admin API; change api.listen (empty turns the API off)", config.api.listen)
    })?;
    serve_api(config, listener, store, nats, cancel)
}

/// Serves the API (admin, inbox, receipts) on `listener` in the background until `cancel` fires.
pub fn serve_api(
    config: &Config,
    listener: tokio::net::TcpListener,
    store: herald_store::Store,
    nats: herald_nats::Nats,
    cancel: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let token = config.api.token_or_generate()?;
    if config.api.admin_token.is_none() {
        eprintln!("Admin API on http://{}; its token is in {}.", listener.local_addr()?, config.api.token_file.display());
    } else {
        eprintln!("Admin API on http://{}.", listener.local_addr()?);
    }
    let engine = Arc::new(herald_render::Engine::new(config.render.clone(), Arc::new(herald_render::NoTracking)));
    let attachments = herald_attachments::Attachments::open(&config.attachments)?;
    let receipts = herald_http::ReceiptUrls { twilio: config.deliver.twilio.status_callback.clone() };
    let links = config.engagement.links();
    let state = AppState { store, nats, token, engine, default_caps: Arc::new(config.throttle.caps.clone()), attachments, receipts, links };
    let cancel = cancel.clone();
    Ok(tokio::spawn(async move { Ok(herald_http::serve(listener, state, cancel).await?) }))
}

/// `herald api`: only the admin API.
pub async fn api(config: &Config) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let store = herald_store::Store::open(&config.store).await?;
    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    crate::metrics::start(&config.metrics, &connection.nats, false, &cancel).await?;
    start_api(config, store, connection.nats.clone(), &cancel).await?.await??;
    Ok(())
}

/// `herald stage <name>`.
pub async fn stage(config: &Config, names: &[StageKind], channels: Vec<Channel>, routes: Vec<Route>) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let mut routes: Vec<Route> = routes.into_iter().chain(channels.into_iter().flat_map(Route::of_channel)).collect();
    routes.sort();
    routes.dedup();
    let routes = (!routes.is_empty()).then_some(routes);
    let resources = Resources::load(config, &names, routes.as_deref()).await?;
    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    crate::metrics::start(&config.metrics, &connection.nats, names.contains(&StageKind::Track), &cancel).await?;
    let running = app::start(&connection.nats, config, resources, &names, routes.as_deref(), &cancel).await?;
    running.wait(&cancel).await?;
    connection.nats.flush().await?;
    Ok(())
}

/// `herald provision`.
pub async fn provision(config: &Config) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let report = connection.nats.provision().await?;
    for change in &report.changes {
        println!("{change}");
    }
    if report.has_drift() {
        bail!("the servers differ from the configured topology in ways provisioning cannot fix (lines marked DRIFT)");
    }
    Ok(())
}
