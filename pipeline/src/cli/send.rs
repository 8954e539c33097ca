//! `herald send`: publish a notification request.

use std::io::Read;

use anyhow::{Context, bail};
use bytes::Bytes;
use herald_schemas::{Channel, NotificationRequest, Priority, Recipient};

use super::parse_tenant;
use crate::app;
use crate::config::Config;

/// Arguments of `herald send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The tenant to publish for.
    #[arg(long, default_value = "acme", value_parser = parse_tenant)]
    tenant: String,
    /// A whole request as JSON, from a file or `-` for standard input; the other options are
    /// then not allowed.
    #[arg(long, conflicts_with_all = ["template", "to", "group", "email", "phone", "attach"])]
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
    /// A producer dedupe key: one delivery per recipient and channel within --dedupe-window.
    #[arg(long, requires = "dedupe_window")]
    dedupe_key: Option<String>,
    /// How long --dedupe-key holds, e.g. 10m.
    #[arg(long, requires = "dedupe_key")]
    dedupe_window: Option<String>,
    /// Send at this instant (RFC 3339, e.g. 2030-01-01T09:00:00Z) or after this long (e.g. 10m).
    #[arg(long, value_parser = parse_when)]
    send_at: Option<herald_schemas::Timestamp>,
    /// Do not send after this instant (RFC 3339) or after this long from now (e.g. 1h).
    #[arg(long, value_parser = parse_when)]
    expires_at: Option<herald_schemas::Timestamp>,
    /// Attach a file of the attachment store to the e-mails (repeatable): its key, as `herald
    /// attachments put` printed it, optionally `=FILENAME` for the name the recipient sees
    /// (default: the key's last segment).
    #[arg(long = "attach", value_name = "KEY[=FILENAME]", value_parser = parse_attach)]
    attach: Vec<herald_schemas::Attachment>,
}

/// Parses `KEY[=FILENAME]`.
fn parse_attach(s: &str) -> Result<herald_schemas::Attachment, String> {
    let (key, filename) = match s.split_once('=') {
        Some((key, filename)) => (key, filename.to_owned()),
        None => (s, s.rsplit('/').next().unwrap_or(s).to_owned()),
    };
    herald_schemas::request::check_attachment_key(key)?;
    Ok(herald_schemas::Attachment { filename, content_type: None, reference: Some(key.to_owned()), content: None, size: None })
}

/// Parses an RFC 3339 instant, or a duration from now (`10m`, `1h 30m`).
fn parse_when(s: &str) -> Result<herald_schemas::Timestamp, String> {
    if let Ok(at) = s.parse::<herald_schemas::Timestamp>() {
        return Ok(at);
    }
    let after =
        herald_schemas::parse_duration("time", s).map_err(|_| format!("`{s}` is neither an RFC 3339 instant nor a duration like 10m"))?;
    let after = jiff::SignedDuration::try_from(after).map_err(|e| e.to_string())?;
    herald_schemas::Timestamp::now().checked_add(after).map_err(|e| e.to_string())
}

/// `herald send`.
pub async fn send(config: &Config, args: SendArgs) -> anyhow::Result<()> {
    let (body, priority) = match &args.file {
        Some(path) => {
            let mut text = String::new();
            if path == "-" {
                std::io::stdin().read_to_string(&mut text).context("cannot read the request from standard input")?;
            } else {
                text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            }
            let request = NotificationRequest::parse(text.as_bytes()).with_context(|| format!("{path} is not a valid request"))?;
            (text.into_bytes(), request.priority)
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
                dedupe_key: args.dedupe_key.clone(),
                dedupe_window: args.dedupe_window.clone(),
                send_at: args.send_at,
                expires_at: args.expires_at,
                metadata: Default::default(),
                attachments: args.attach.clone(),
            };
            request.validate().context("the request would be rejected")?;
            (serde_json::to_vec(&request)?, request.priority)
        }
    };
    let connection = app::connect(config, false).await?;
    // Each priority has its own ingest lane, so urgent requests never queue behind bulk.
    let sequence = connection.nats.publish_request_in(&args.tenant, priority, Bytes::from(body), None).await?;
    let id = connection.nats.notification_id_of(&args.tenant, sequence).await?;
    println!("accepted for processing as notification {id} (request #{sequence}, {priority} lane)");
    Ok(())
}

/// Parses `low|normal|high|critical`.
fn parse_priority(s: &str) -> Result<Priority, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("`{s}` is not one of low, normal, high, critical"))
}

/// Arguments of `herald cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The notification to cancel (its id, as `herald send` printed it or its events carry).
    notification: uuid::Uuid,
    /// The tenant it belongs to.
    #[arg(long, default_value = "acme", value_parser = parse_tenant)]
    tenant: String,
    /// Who asks, recorded in the `cancelled` event.
    #[arg(long)]
    by: Option<String>,
    /// How long to wait for the `cancelled` event (0: do not wait).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    wait: std::time::Duration,
}

/// `herald cancel`: publishes a cancel on `<prefix>.cancel.<tenant>` and waits for its event.
pub async fn cancel(config: &Config, args: CancelArgs) -> anyhow::Result<()> {
    let connection = app::connect(config, false).await?;
    // Listen before publishing, so the event cannot slip past.
    let mut events = Box::pin(connection.nats.tail_events(&args.tenant, herald_schemas::Status::Cancelled.as_str(), false).await?);
    let request =
        herald_schemas::CancelRequest { v: herald_schemas::WIRE_VERSION, notification_id: args.notification, by: args.by.clone() };
    let sequence = connection.nats.publish_cancel(&args.tenant, Bytes::from(serde_json::to_vec(&request)?)).await?;
    println!("cancel of {} accepted as #{sequence} on {}", args.notification, connection.nats.topology().cancel_subject(&args.tenant));
    if args.wait.is_zero() {
        return Ok(());
    }
    let waited = tokio::time::timeout(args.wait, async {
        while let Some(event) = futures::StreamExt::next(&mut events).await {
            let event = event?;
            if event.notification_id == Some(args.notification) && event.delivery_id.is_none() {
                return anyhow::Ok(event);
            }
        }
        bail!("the tracking stream ended")
    })
    .await;
    match waited {
        Ok(event) => {
            println!("{}", event?.detail.unwrap_or_else(|| "cancelled".into()));
            Ok(())
        }
        Err(_) => bail!(
            "no `cancelled` event within {}; is the ingest stage running (`herald up` or `herald stage ingest`)? The cancel stays queued",
            humantime::format_duration(args.wait)
        ),
    }
}
