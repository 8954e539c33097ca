//! The template directory layout (read by `herald templates push` and `preview --dir`) and
//! the built-in sample templates the demo, the benchmark and the tests publish.
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
use herald_render::{Engine, NoTracking};
use herald_schemas::api::Published;
use herald_schemas::template::{DEFAULT_LOCALE, Parts};
use herald_schemas::{Channel, TemplateSpec};
use herald_store::Store;
use serde_json::{Value, json};

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
pub async fn publish_samples(store: &Store, config: &Config, tenant: &str) -> anyhow::Result<Vec<Published>> {
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
