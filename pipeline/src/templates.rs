//! `herald templates …` and the template directory layout.
//!
//! A templates directory holds one directory per template:
//!
//! ```text
//! templates/
//!   order_shipped/
//!     template.toml     # settings, sample data, and the `default` locale's parts
//!     ko.toml           # the `ko` locale's parts (any language tag: ko-KR.toml, pt-BR.toml…)
//!     email.html        # a part kept in its own file: html = { file = "email.html" }
//! ```
//!
//! `template.toml` has `description`, `category`, `channels` (defaults for requests that name
//! none), `truncate`, a `[sample]` table (data to check and preview with), and one table per
//! channel (`[push]`, `[sms]`, `[voice]`, `[email]`, `[web_push]`, `[webhook]`, `[in_app]`,
//! `[log]`) of part = minijinja source. A locale file has only channel tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herald_render::engine::{channels_of, ordered_parts, sample_delivery};
use herald_render::{Engine, NoTracking};
use herald_schemas::directory::Platform;
use herald_schemas::template::{DEFAULT_LOCALE, Parts};
use herald_schemas::{Channel, JsonObject, TemplateSpec, TemplateVersion};
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{Client, RequestBody, print};
use crate::config::Config;

/// The sample templates, built into the binary (`config/templates/`).
pub const SAMPLES: &[(&str, &str)] = &[
    ("welcome/template.toml", include_str!("../../config/templates/welcome/template.toml")),
    ("welcome/ko.toml", include_str!("../../config/templates/welcome/ko.toml")),
    ("welcome/email.html", include_str!("../../config/templates/welcome/email.html")),
    ("order_shipped/template.toml", include_str!("../../config/templates/order_shipped/template.toml")),
    ("order_shipped/ko.toml", include_str!("../../config/templates/order_shipped/ko.toml")),
    ("security_alert/template.toml", include_str!("../../config/templates/security_alert/template.toml")),
];

const SETTINGS: &[&str] = &["description", "category", "channels", "truncate", "sample"];

/// Reads the templates of a directory: every subdirectory with a `template.toml`, or the
/// directory itself when it has one.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<TemplateSpec>> {
    let mut files = Vec::new();
    let single = dir.join("template.toml").is_file();
    let template_dirs: Vec<PathBuf> = if single {
        vec![dir.to_path_buf()]
    } else {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the templates directory {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("template.toml").is_file())
            .collect();
        dirs.sort();
        dirs
    };
    if template_dirs.is_empty() {
        bail!("{} has no templates: expected <id>/template.toml inside it (see `herald templates push --help`)", dir.display());
    }
    for template_dir in template_dirs {
        let id = template_dir.file_name().and_then(|n| n.to_str()).context("a template directory name is not UTF-8")?.to_owned();
        for entry in std::fs::read_dir(&template_dir)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                files.push((format!("{id}/{name}"), text));
            }
        }
    }
    load_files(&files)
}

/// Builds templates from (`<id>/<file>`, contents) pairs: the layout of [`load_dir`].
pub fn load_files<S: AsRef<str>>(files: &[(S, S)]) -> anyhow::Result<Vec<TemplateSpec>> {
    let mut by_id: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (path, text) in files {
        let (id, file) = path.as_ref().split_once('/').with_context(|| format!("{} is not <template>/<file>", path.as_ref()))?;
        by_id.entry(id).or_default().insert(file, text.as_ref());
    }
    by_id.into_iter().filter(|(_, files)| files.contains_key("template.toml")).map(|(id, files)| spec_from(id, &files)).collect()
}

fn spec_from(id: &str, files: &BTreeMap<&str, &str>) -> anyhow::Result<TemplateSpec> {
    let parse = |file: &str| -> anyhow::Result<toml::Table> {
        toml::from_str(files.get(file).copied().unwrap_or_default()).with_context(|| format!("{id}/{file} is not valid TOML"))
    };
    let settings = parse("template.toml")?;
    let mut locales = BTreeMap::new();
    locales.insert(DEFAULT_LOCALE.to_owned(), channels_from(id, "template.toml", &settings, files, true)?);
    for file in files.keys().filter(|f| f.ends_with(".toml") && **f != "template.toml") {
        let locale = file.trim_end_matches(".toml");
        locales.insert(locale.to_owned(), channels_from(id, file, &parse(file)?, files, false)?);
    }
    let mut meta = toml::Table::new();
    for key in SETTINGS {
        if let Some(value) = settings.get(*key) {
            meta.insert((*key).to_owned(), value.clone());
        }
    }
    let mut spec: Value = serde_json::to_value(&meta)?;
    spec["id"] = json!(id);
    spec["locales"] = serde_json::to_value(&locales)?;
    serde_json::from_value(spec).with_context(|| format!("{id}/template.toml has an invalid setting"))
}

fn channels_from(
    id: &str,
    file: &str,
    table: &toml::Table,
    files: &BTreeMap<&str, &str>,
    settings_allowed: bool,
) -> anyhow::Result<BTreeMap<Channel, Parts>> {
    let mut channels = BTreeMap::new();
    for (key, value) in table {
        if settings_allowed && SETTINGS.contains(&key.as_str()) {
            continue;
        }
        let channel: Channel = key.parse().with_context(|| format!("{id}/{file}: `[{key}]` is neither a channel nor a setting"))?;
        let toml::Value::Table(parts) = value else { bail!("{id}/{file}: `{key}` must be a table of parts") };
        let mut out = Parts::new();
        for (part, source) in parts {
            let text = match source {
                toml::Value::String(text) => text.clone(),
                toml::Value::Table(t) if t.len() == 1 && t.get("file").is_some_and(toml::Value::is_str) => {
                    let name = t["file"].as_str().unwrap_or_default();
                    files
                        .get(name)
                        .map(|s| (*s).to_owned())
                        .with_context(|| format!("{id}/{file}: `{key}.{part}` names missing file {name}"))?
                }
                _ => bail!("{id}/{file}: `{key}.{part}` must be a string or {{ file = \"name\" }}"),
            };
            out.insert(part.clone(), text);
        }
        channels.insert(channel, out);
    }
    Ok(channels)
}

/// Checks and publishes the built-in sample templates for `tenant` (the demo and the benchmark).
pub async fn publish_samples(store: &crate::store::Store, config: &Config, tenant: &str) -> anyhow::Result<Vec<crate::store::Published>> {
    let engine = Engine::new(config.render.clone(), Arc::new(NoTracking));
    let mut published = Vec::new();
    for spec in load_files(SAMPLES)? {
        if let Err(errors) = engine.check(&spec) {
            bail!("the sample template `{}` is invalid: {errors:?}", spec.id);
        }
        published.push(store.publish_template(tenant, &spec).await?);
    }
    Ok(published)
}

/// Options every templates command takes.
#[derive(Debug, Args)]
pub struct TemplatesArgs {
    /// The tenant.
    #[arg(long, global = true, default_value = "acme")]
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
        let store = crate::store::Store::open(&config.store).await?;
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

/// What to preview.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewRequest {
    /// Template data; the template's sample data when absent.
    pub data: Option<JsonObject>,
    pub locale: Option<String>,
    /// Channels to render; every channel of the template when empty.
    pub channels: Vec<Channel>,
    pub timezone: Option<String>,
    /// Push platform (default ios).
    pub platform: Option<Platform>,
    /// Published version (API only; default latest).
    pub version: Option<u32>,
}

/// Renders `version` for each requested channel: the parts, the locale they came from, and the
/// measured size, or the failure a delivery would get.
pub fn preview(engine: &Engine, version: &TemplateVersion, request: &PreviewRequest) -> Value {
    let spec = &version.spec;
    let channels = if request.channels.is_empty() { channels_of(spec) } else { request.channels.clone() };
    let data = request.data.clone().unwrap_or_else(|| spec.sample.clone());
    let mut out = serde_json::Map::new();
    for channel in channels {
        let platform = if channel == Channel::Push { request.platform } else { None };
        let mut delivery = sample_delivery(spec, channel, request.locale.as_deref().unwrap_or(DEFAULT_LOCALE), data.clone(), platform);
        delivery.timezone = request.timezone.clone();
        let result = match engine.render_uncached(version, &delivery) {
            Ok(content) => json!({
                "locale": content.locale,
                "parts": content.parts,
                "sms": content.sms,
                "truncated": content.truncated,
                "payload_bytes": payload_bytes(channel, delivery.platform, &content.parts),
            }),
            Err(failure) => json!({ "failed": failure.reason, "detail": failure.detail }),
        };
        out.insert(channel.as_str().to_owned(), result);
    }
    json!({ "template": spec.id, "version": version.version, "channels": out })
}

fn payload_bytes(channel: Channel, platform: Option<Platform>, parts: &Parts) -> Option<usize> {
    use herald_render::limits;
    let payload = match (channel, platform) {
        (Channel::Push, Some(Platform::Android)) => limits::fcm_payload(parts).ok()?,
        (Channel::Push, _) => limits::apns_payload(parts).ok()?,
        (Channel::WebPush, _) => limits::web_push_payload(parts).ok()?,
        _ => return None,
    };
    serde_json::to_vec(&payload).ok().map(|v| v.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_templates_load_and_pass_their_checks() {
        let specs = load_files(SAMPLES).unwrap();
        assert_eq!(specs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["order_shipped", "security_alert", "welcome"]);
        let engine = Engine::new(Default::default(), Arc::new(NoTracking));
        for spec in &specs {
            assert_eq!(engine.check(spec), Ok(vec![]), "{}", spec.id);
        }
        let welcome = &specs[2];
        assert!(welcome.locales["default"][&Channel::Email]["html"].contains("<h1>"), "html = {{ file = … }} is read");
        assert!(welcome.locales.contains_key("ko"));
    }

    #[test]
    fn layout_mistakes_are_named() {
        let err = |files: &[(&str, &str)]| load_files(files).unwrap_err().to_string();
        assert!(
            err(&[("a/template.toml", "[pigeon]\nbody = 'x'")]).contains("a/template.toml: `[pigeon]` is neither a channel nor a setting")
        );
        assert!(err(&[("a/template.toml", "[sms]\nbody = { file = 'gone.txt' }")]).contains("names missing file gone.txt"));
        assert!(err(&[("a/template.toml", "[sms\nbody = 'x'")]).contains("a/template.toml is not valid TOML"));
    }
}
