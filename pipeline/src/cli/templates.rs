//! `herald templates …`: check and publish a directory of templates, list, show, preview.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herald_render::engine::ordered_parts;
use herald_render::{Engine, NoTracking, preview};
use herald_schemas::api::PreviewRequest;
use herald_schemas::directory::Platform;
use herald_schemas::template::Parts;
use herald_schemas::{Channel, JsonObject, TemplateVersion};
use reqwest::Method;
use serde_json::Value;

use super::client::{Client, RequestBody, print};
use super::parse_tenant;
use crate::config::Config;
use crate::template_files::load_dir;

/// Options every templates command takes.
#[derive(Debug, Args)]
pub struct TemplatesArgs {
    /// The tenant.
    #[arg(long, global = true, default_value = "acme", value_parser = parse_tenant)]
    tenant: String,
    #[command(subcommand)]
    command: TemplatesCommand,
}

#[derive(Debug, Subcommand)]
enum TemplatesCommand {
    /// Check and publish every template of a directory (layout: <dir>/<id>/template.toml,
    /// <dir>/<id>/<locale>.toml; see README). Each template that changed becomes a new
    /// immutable version; unchanged ones keep theirs. Errors name the file, part, line and
    /// column; nothing is published when any template has errors.
    Push {
        /// The templates directory, or one template's directory.
        dir: PathBuf,
        /// Only check; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write straight into the store instead of through the admin API (no `herald up` may
        /// hold an embedded store then).
        #[arg(long)]
        offline: bool,
    },
    /// List the tenant's templates with their latest versions.
    List,
    /// Show a published template version (the latest by default).
    Show {
        id: String,
        /// The version (default: the latest).
        #[arg(long, value_name = "N")]
        template_version: Option<u32>,
    },
    /// Render a template with sample data, for every channel it has or the ones named, and show
    /// each channel's parts and payload size.
    Preview {
        /// A published template id, or with --dir a template in that directory.
        id: String,
        /// Render from the files in this directory instead of the published version.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Version to render (published templates; default: latest).
        #[arg(long, value_name = "N")]
        template_version: Option<u32>,
        /// Locale, e.g. ko-KR (falls back to ko, then default).
        #[arg(long)]
        locale: Option<String>,
        /// Channels to render (default: every channel of the template).
        #[arg(long = "channel", value_name = "CHANNEL")]
        channels: Vec<Channel>,
        /// The recipient's time zone for dates, e.g. Asia/Seoul.
        #[arg(long)]
        timezone: Option<String>,
        /// Template data as JSON, or @file (default: the template's sample data).
        #[arg(long)]
        data: Option<String>,
        /// Render push for an android device (FCM) instead of ios (APNs).
        #[arg(long)]
        android: bool,
    },
}

/// Runs a `herald templates` command.
pub async fn run(config: &Config, args: TemplatesArgs) -> anyhow::Result<()> {
    let engine = Engine::new(config.render.clone(), Arc::new(NoTracking));
    match args.command {
        TemplatesCommand::Push { dir, dry_run, offline } => push(config, &engine, &args.tenant, &dir, dry_run, offline).await,
        TemplatesCommand::List => print(Client::new(config, &args.tenant)?.send(Method::GET, "/templates", None).await?),
        TemplatesCommand::Show { id, template_version: version } => {
            let path = match version {
                Some(v) => format!("/templates/{id}?version={v}"),
                None => format!("/templates/{id}"),
            };
            print(Client::new(config, &args.tenant)?.send(Method::GET, &path, None).await?)
        }
        TemplatesCommand::Preview { id, dir, template_version: version, locale, channels, timezone, data, android } => {
            let data = match data {
                Some(text) => Some(read_data(&text)?),
                None => None,
            };
            let request = PreviewRequest { data, locale, channels, timezone, platform: android.then_some(Platform::Android), version };
            let answer = match dir {
                Some(dir) => {
                    let spec = load_dir(&dir)?
                        .into_iter()
                        .find(|s| s.id == id)
                        .with_context(|| format!("no template `{id}` in {}", dir.display()))?;
                    let version = TemplateVersion { version: 0, published_at: jiff::Timestamp::now(), spec };
                    preview(&engine, &version, &request)
                }
                None => {
                    let client = Client::new(config, &args.tenant)?;
                    client
                        .send(Method::POST, &format!("/templates/{id}/preview"), Some(RequestBody::Json(serde_json::to_value(&request)?)))
                        .await?
                        .unwrap_or_default()
                }
            };
            show_preview(&answer);
            Ok(())
        }
    }
}

fn read_data(text: &str) -> anyhow::Result<JsonObject> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
        None => text.to_owned(),
    };
    serde_json::from_str(&text).context("--data must be a JSON object")
}

async fn push(config: &Config, engine: &Engine, tenant: &str, dir: &Path, dry_run: bool, offline: bool) -> anyhow::Result<()> {
    let specs = load_dir(dir)?;
    let mut failed = false;
    for spec in &specs {
        match engine.check(spec) {
            Ok(warnings) => {
                for warning in warnings {
                    println!("{}: warning: {warning}", spec.id);
                }
            }
            Err(errors) => {
                failed = true;
                for error in errors {
                    println!("{}: error: {error}", spec.id);
                }
            }
        }
    }
    if failed {
        bail!("nothing published: fix the errors above");
    }
    if dry_run {
        println!("{} templates checked; nothing published (--dry-run)", specs.len());
        return Ok(());
    }
    if offline {
        let store = herald_store::Store::open(&config.store).await?;
        for spec in &specs {
            let published = store.publish_template(tenant, spec).await?;
            report(&published.id, published.version, published.created);
        }
    } else {
        let client = Client::new(config, tenant)?;
        for spec in &specs {
            let answer = client
                .send(Method::PUT, &format!("/templates/{}", spec.id), Some(RequestBody::Json(serde_json::to_value(spec)?)))
                .await?
                .unwrap_or_default();
            report(&spec.id, answer["version"].as_u64().unwrap_or_default() as u32, answer["created"].as_bool().unwrap_or_default());
        }
    }
    Ok(())
}

fn report(id: &str, version: u32, created: bool) {
    if created {
        println!("{id}: published version {version}");
    } else {
        println!("{id}: unchanged (version {version})");
    }
}

fn show_preview(answer: &Value) {
    let template = answer["template"].as_str().unwrap_or("?");
    match answer["version"].as_u64() {
        Some(0) | None => println!("{template} (draft, from files)"),
        Some(version) => println!("{template} version {version}"),
    }
    let Some(channels) = answer["channels"].as_object() else { return };
    for (channel, result) in channels {
        println!();
        if let Some(reason) = result["failed"].as_str() {
            println!("── {channel}: FAILED {reason}: {}", result["detail"].as_str().unwrap_or_default());
            continue;
        }
        let mut notes = vec![format!("locale {}", result["locale"].as_str().unwrap_or("?"))];
        if let Some(bytes) = result["payload_bytes"].as_u64() {
            notes.push(format!("payload {bytes} bytes"));
        }
        if let Some(sms) = result["sms"].as_object() {
            notes.push(format!("{} × {} segments ({} units)", sms["encoding"].as_str().unwrap_or("?"), sms["segments"], sms["units"]));
        }
        if result["truncated"].as_bool() == Some(true) {
            notes.push("truncated".into());
        }
        println!("── {channel} ({})", notes.join(", "));
        let parts: Parts = serde_json::from_value(result["parts"].clone()).unwrap_or_default();
        if let Ok(channel) = channel.parse::<Channel>() {
            for (part, text) in ordered_parts(channel, &parts) {
                if text.contains('\n') {
                    println!("{part}:\n  {}", text.replace('\n', "\n  "));
                } else {
                    println!("{part}: {text}");
                }
            }
        }
    }
}
