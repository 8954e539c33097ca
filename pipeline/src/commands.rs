//! The small commands: up, stage, provision, send, events tail, status.

use std::io::Read;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use herald_schemas::{Channel, NotificationRequest, Priority, Recipient};
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
    let resources = Resources::load(config, &StageKind::ALL).await?;
    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    let api = match resources.store.clone() {
        Some(store) if !config.api.listen.is_empty() => Some(start_api(config, store, connection.nats.clone(), &cancel).await?),
        _ => None,
    };
    let running = app::start(&connection.nats, config, resources, &StageKind::ALL, None, &cancel).await?;
    eprintln!("Herald is up: {} stages on {}. Ctrl-C to stop.", running.stats.len(), config.nats_url().0);
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
    store: crate::store::Store,
    nats: herald_nats::Nats,
    cancel: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(&config.api.listen).await.with_context(|| {
        format!("cannot listen on {} for the admin API; change api.listen (empty turns the API off)", config.api.listen)
    })?;
    let token = config.api.token_or_generate()?;
    if config.api.admin_token.is_none() {
        eprintln!("Admin API on http://{}; its token is in {}.", listener.local_addr()?, config.api.token_file.display());
    } else {
        eprintln!("Admin API on http://{}.", listener.local_addr()?);
    }
    let engine = std::sync::Arc::new(herald_render::Engine::new(config.render.clone(), std::sync::Arc::new(herald_render::NoTracking)));
    Ok(tokio::spawn(crate::api::serve(listener, store, nats, token, engine, cancel.clone())))
}

/// `herald api`: only the admin API.
pub async fn api(config: &Config) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let store = crate::store::Store::open(&config.store).await?;
    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    start_api(config, store, connection.nats.clone(), &cancel).await?.await??;
    Ok(())
}

/// `herald stage <name>`.
pub async fn stage(config: &Config, names: &[StageKind], channels: Vec<Channel>) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let resources = Resources::load(config, &names).await?;
    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    let channels = (!channels.is_empty()).then_some(channels);
    let running = app::start(&connection.nats, config, resources, &names, channels.as_deref(), &cancel).await?;
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

/// Arguments of `herald send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The tenant to publish for.
    #[arg(long, default_value = "acme")]
    tenant: String,
    /// A whole request as JSON, from a file or `-` for standard input; the other options are
    /// then not allowed.
    #[arg(long, conflicts_with_all = ["template", "to", "group", "email", "phone"])]
    file: Option<String>,
    /// Template id.
    #[arg(long, required_unless_present = "file")]
    template: Option<String>,
    /// A user id to notify (repeatable).
    #[arg(long)]
    to: Vec<String>,
    /// A group whose members to notify (repeatable).
    #[arg(long)]
    group: Vec<String>,
    /// An e-mail address to notify (repeatable).
    #[arg(long)]
    email: Vec<String>,
    /// A phone number (E.164) to notify (repeatable).
    #[arg(long)]
    phone: Vec<String>,
    /// A channel to use (repeatable); default: the deployment's default channels.
    #[arg(long = "channel")]
    channels: Vec<Channel>,
    /// Template data as a JSON object.
    #[arg(long, default_value = "{}")]
    data: String,
    /// Category, for preferences and caps.
    #[arg(long)]
    category: Option<String>,
    /// low, normal, high or critical.
    #[arg(long, default_value = "normal", value_parser = parse_priority)]
    priority: Priority,
    /// The producer's idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `herald send`.
pub async fn send(config: &Config, args: SendArgs) -> anyhow::Result<()> {
    let body = match &args.file {
        Some(path) => {
            let mut text = String::new();
            if path == "-" {
                std::io::stdin().read_to_string(&mut text).context("cannot read the request from standard input")?;
            } else {
                text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            }
            NotificationRequest::parse(text.as_bytes()).with_context(|| format!("{path} is not a valid request"))?;
            text.into_bytes()
        }
        None => {
            let data = match serde_json::from_str::<serde_json::Value>(&args.data) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => bail!("--data must be a JSON object, e.g. '{{\"name\":\"Ada\"}}'"),
            };
            let mut recipients: Vec<Recipient> = args.to.iter().map(Recipient::user).collect();
            recipients.extend(args.group.iter().map(|g| Recipient { group: Some(g.clone()), ..Recipient::default() }));
            recipients.extend(args.email.iter().map(|e| Recipient { email: Some(e.clone()), ..Recipient::default() }));
            recipients.extend(args.phone.iter().map(|p| Recipient { phone: Some(p.clone()), ..Recipient::default() }));
            let request = NotificationRequest {
                v: herald_schemas::WIRE_VERSION,
                template: args.template.clone().unwrap_or_default(),
                data,
                recipients,
                channels: (!args.channels.is_empty()).then(|| args.channels.clone()),
                category: args.category.clone(),
                priority: args.priority,
                idempotency_key: args.idempotency_key.clone(),
                send_at: None,
                expires_at: None,
                metadata: Default::default(),
            };
            request.validate().context("the request would be rejected")?;
            serde_json::to_vec(&request)?
        }
    };
    let connection = app::connect(config, false).await?;
    let sequence = connection.nats.publish_request(&args.tenant, Bytes::from(body), None).await?;
    println!("accepted for processing as request #{sequence} on {}", connection.nats.topology().requests_subject(&args.tenant));
    Ok(())
}

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

/// `herald status`.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    let consumers = connection.nats.status().await?;
    let streams = connection.nats.stream_sizes().await?;
    if json {
        let streams: serde_json::Map<_, _> = streams.into_iter().map(|(name, n)| (name, n.into())).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "consumers": consumers, "streams": streams }))?);
        return Ok(());
    }
    println!("{:<20} {:<18} {:>10} {:>12} {:>12} {:>8}", "STREAM", "CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED", "WAITING");
    for c in &consumers {
        println!("{:<20} {:<18} {:>10} {:>12} {:>12} {:>8}", c.stream, c.consumer, c.pending, c.ack_pending, c.redelivered, c.waiting);
    }
    println!();
    println!("{:<20} {:>10}", "STREAM", "MESSAGES");
    for (name, messages) in &streams {
        println!("{name:<20} {messages:>10}");
    }
    Ok(())
}

/// Parses `low|normal|high|critical`.
fn parse_priority(s: &str) -> Result<Priority, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("`{s}` is not one of low, normal, high, critical"))
}
