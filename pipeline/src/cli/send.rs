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

/// Parses `low|normal|high|critical`.
fn parse_priority(s: &str) -> Result<Priority, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("`{s}` is not one of low, normal, high, critical"))
}
