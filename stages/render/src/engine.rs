//! The sandboxed template engine: compiling a template version's parts for one channel and
//! locale, rendering them for a delivery, and checking uploads.
//!
//! The sandbox: there is no loader, so templates cannot read files or reach the network (an
//! `include` can only name another part of the same channel); every render has a fuel budget
//! that bounds both the instructions it runs and the memory it allocates (an endless loop or
//! `"x" * 10**9` stops with an error instead of hanging or exhausting memory); recursion is
//! capped; undefined variables are errors, not empty strings; and the rendered size is capped.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use herald_schemas::directory::Platform;
use herald_schemas::template::{Parts, channel_parts};
use herald_schemas::{Channel, Content, Delivery, JsonObject, TemplateSpec, TemplateVersion};
use lru::LruCache;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use serde::{Deserialize, Serialize};

use crate::hook::{LinkContext, LinkHook};
use crate::limits::{self, ChannelLimits, Unfit};

/// Limits of the sandbox and the channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// Fuel one part may burn: roughly instructions plus bytes allocated. Bounds the time and
    /// memory of a render.
    pub fuel: u64,
    /// Largest total size of a delivery's rendered parts, in bytes.
    pub max_output_bytes: usize,
    /// Deepest nesting of loops, macros and includes.
    pub recursion_limit: usize,
    /// Compiled (template, version, locale, channel) entries kept.
    pub cache_capacity: usize,
    /// Channel limits checked after rendering.
    pub limits: ChannelLimits,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            fuel: 200_000,
            max_output_bytes: 128 * 1024,
            recursion_limit: 64,
            cache_capacity: 1024,
            limits: ChannelLimits::default(),
        }
    }
}

/// Why a delivery cannot be rendered; `reason` is the `failed` event's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub detail: String,
}

impl Failure {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Failure { reason, detail: detail.into() }
    }
}

/// Parts whose printed values are JSON-encoded (`{"id": {{ data.id }}}`).
fn is_json_part(channel: Channel, part: &str) -> bool {
    matches!((channel, part), (Channel::Push | Channel::InApp, "data") | (Channel::Webhook, "body"))
}

/// One channel's parts of one template version in one locale, compiled.
#[derive(Debug)]
pub struct Compiled {
    env: Environment<'static>,
    parts: Vec<String>,
    /// The locale the parts came from.
    pub locale: String,
    /// The channel whose parts these are (a `log` delivery borrows another channel's).
    pub channel: Channel,
}

/// A template source that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub locale: String,
    pub channel: Channel,
    pub part: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.locale, self.channel, self.part)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

fn problem(locale: &str, channel: Channel, part: &str, source: Option<&str>, error: &minijinja::Error) -> Problem {
    let column = match (source, error.range()) {
        (Some(source), Some(range)) => {
            let before = &source[..range.start.min(source.len())];
            Some(before.rsplit('\n').next().unwrap_or(before).chars().count() + 1)
        }
        _ => None,
    };
    let message = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    Problem { locale: locale.to_owned(), channel, part: part.to_owned(), line: error.line(), column, message }
}

impl Compiled {
    /// Compiles `parts` of `channel` from `locale`. Every source that does not compile is a
    /// problem, with its line and column.
    pub fn new(
        locale: &str,
        channel: Channel,
        parts: &Parts,
        config: &RenderConfig,
        hook: Arc<dyn LinkHook>,
        debug: bool,
    ) -> Result<Self, Vec<Problem>> {
        let mut env = Environment::new();
        env.set_debug(debug);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(config.fuel));
        env.set_recursion_limit(config.recursion_limit);
        env.set_auto_escape_callback(move |name| {
            if channel == Channel::Email && name == "html" {
                AutoEscape::Html
            } else if is_json_part(channel, name) {
                AutoEscape::Json
            } else {
                AutoEscape::None
            }
        });
        crate::filters::register(&mut env, hook);
        let mut problems = Vec::new();
        for (part, source) in parts {
            if let Err(error) = env.add_template_owned(part.clone(), source.clone()) {
                problems.push(problem(locale, channel, part, Some(source), &error));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Compiled { env, parts: parts.keys().cloned().collect(), locale: locale.to_owned(), channel })
    }

    /// Renders every part with `ctx`; stops at the first error or when the output passes
    /// `max_output_bytes`.
    pub fn render(&self, ctx: &Value, max_output_bytes: usize) -> Result<Parts, Failure> {
        let mut out = Parts::new();
        let mut size = 0;
        for part in &self.parts {
            let text =
                self.env.get_template(part).and_then(|t| t.render(ctx)).map_err(|e| Failure::new("render_error", describe(part, &e)))?;
            size += text.len();
            if size > max_output_bytes {
                return Err(Failure::new("payload_too_large", format!("rendered output passes {max_output_bytes} bytes at part `{part}`")));
            }
            out.insert(part.clone(), text);
        }
        Ok(out)
    }

    /// Variables the parts use that `sample` does not have, as `data.x.y` paths.
    fn missing_in(&self, sample: &Value) -> BTreeMap<String, Vec<String>> {
        let globals: HashSet<String> = self.env.globals().map(|(name, _)| name.to_owned()).collect();
        let mut missing = BTreeMap::new();
        for part in &self.parts {
            let Ok(template) = self.env.get_template(part) else { continue };
            let mut vars: Vec<String> =
                template.undeclared_variables(true).into_iter().filter(|v| !globals.contains(v) && !has_path(sample, v)).collect();
            vars.sort();
            if !vars.is_empty() {
                missing.insert(part.clone(), vars);
            }
        }
        missing
    }
}

/// A render error in one line: `part `body` line 2: undefined value: `data.vip` is undefined`.
fn describe(part: &str, error: &minijinja::Error) -> String {
    let mut text = format!("part `{part}`");
    if let Some(line) = error.line() {
        text.push_str(&format!(" line {line}"));
    }
    text.push_str(&format!(": {}", error.kind()));
    if let Some(detail) = error.detail() {
        text.push_str(&format!(": {detail}"));
    }
    text
}

/// Whether `value` has the dotted `path`; paths into lists or other non-maps count as present.
fn has_path(value: &Value, path: &str) -> bool {
    let mut current = value.clone();
    for key in path.split('.') {
        if current.kind() != minijinja::value::ValueKind::Map {
            return true;
        }
        match current.get_attr(key) {
            Ok(next) if !next.is_undefined() => current = next,
            _ => return false,
        }
    }
    true
}

fn no_content(version: &TemplateVersion, channel: Channel) -> Failure {
    Failure::new(
        "no_channel_content",
        format!("template `{}` version {} has no parts for channel `{channel}`", version.spec.id, version.version),
    )
}

/// The values a template sees.
pub fn context_for(delivery: &Delivery, version: Option<u32>) -> Value {
    context! {
        data => Value::from(Serde(&delivery.data)),
        tenant => &delivery.tenant,
        user_id => &delivery.user_id,
        channel => delivery.channel.as_str(),
        locale => &delivery.locale,
        timezone => &delivery.timezone,
        notification_id => delivery.notification_id.to_string(),
        delivery_id => delivery.delivery_id.to_string(),
        template => context! { id => &delivery.template, version => version },
    }
}

type Key = (String, String, u32, String, Channel);

/// Renders deliveries from template versions, with a bounded cache of compiled templates keyed
/// by (tenant, template, version, locale, channel). Versions are immutable, so entries never go
/// stale; the cache only bounds memory.
pub struct Engine {
    config: RenderConfig,
    hook: Arc<dyn LinkHook>,
    cache: Option<Mutex<LruCache<Key, Arc<Compiled>>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).field("hook", &self.hook).finish()
    }
}

impl Engine {
    pub fn new(config: RenderConfig, hook: Arc<dyn LinkHook>) -> Self {
        let cache = NonZeroUsize::new(config.cache_capacity).map(|n| Mutex::new(LruCache::new(n)));
        Engine { config, hook, cache }
    }

    pub fn config(&self) -> &RenderConfig {
        &self.config
    }

    /// Compiled entries held.
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).len()).unwrap_or(0)
    }

    /// The compiled parts for a delivery of `channel` in `locale`, from the cache when there.
    fn compiled(&self, tenant: &str, version: &TemplateVersion, channel: Channel, locale: Option<&str>) -> Result<Arc<Compiled>, Failure> {
        let Some(cache) = &self.cache else { return self.compile(version, channel, locale, false).map(Arc::new) };
        let (found, source) = self.source_of(version, channel, locale)?;
        let key: Key = (tenant.to_owned(), version.spec.id.clone(), version.version, found, source);
        if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(hit.clone());
        }
        let compiled = Arc::new(self.compile(version, channel, locale, false)?);
        cache.lock().unwrap_or_else(|e| e.into_inner()).put(key, compiled.clone());
        Ok(compiled)
    }

    /// The locale and channel whose parts a delivery of `channel` in `locale` renders.
    fn source_of(&self, version: &TemplateVersion, channel: Channel, locale: Option<&str>) -> Result<(String, Channel), Failure> {
        version.spec.parts_for(channel, locale).map(|(found, source, _)| (found, source)).ok_or_else(|| no_content(version, channel))
    }

    /// Compiles the parts a delivery of `channel` in `locale` renders.
    fn compile(&self, version: &TemplateVersion, channel: Channel, locale: Option<&str>, debug: bool) -> Result<Compiled, Failure> {
        let spec = &version.spec;
        let (found, source, parts) = spec.parts_for(channel, locale).ok_or_else(|| no_content(version, channel))?;
        Compiled::new(&found, source, parts, &self.config, self.hook.clone(), debug).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Failure::new(
                "render_error",
                format!("template `{}` version {} does not compile: {}", spec.id, version.version, list.join("; ")),
            )
        })
    }

    /// Puts the open pixel into an e-mail's HTML when the hook tracks opens and the template did
    /// not place it (`{{ tracking_pixel() }}`): before `</body>`, or at the end.
    fn add_open_pixel(&self, parts: &mut herald_schemas::template::Parts, delivery: &Delivery) {
        let Some(html) = parts.get_mut("html") else { return };
        let Some(url) = self.hook.open_pixel_url(&link_context(delivery)) else { return };
        let url = crate::filters::html_attribute(&url);
        if html.contains(&url) {
            return;
        }
        let img = format!(r#"<img src="{url}" width="1" height="1" alt="" style="display:none">"#);
        match html.rfind("</body>") {
            Some(at) => html.insert_str(at, &img),
            None => html.push_str(&img),
        }
    }

    /// Renders `delivery` from `version` and checks the channel's limits.
    pub fn render(&self, version: &TemplateVersion, delivery: &Delivery) -> Result<Content, Failure> {
        let compiled = self.compiled(&delivery.tenant, version, delivery.channel, delivery.locale.as_deref())?;
        self.finish(&compiled, version, delivery)
    }

    /// Like [`Engine::render`], compiling afresh: for versions that are not published (checks
    /// and previews of uploads).
    pub fn render_uncached(&self, version: &TemplateVersion, delivery: &Delivery) -> Result<Content, Failure> {
        let compiled = self.compile(version, delivery.channel, delivery.locale.as_deref(), true)?;
        self.finish(&compiled, version, delivery)
    }

    fn finish(&self, compiled: &Compiled, version: &TemplateVersion, delivery: &Delivery) -> Result<Content, Failure> {
        let ctx = context_for(delivery, Some(version.version));
        let mut parts = compiled.render(&ctx, self.config.max_output_bytes)?;
        if delivery.channel == Channel::Email {
            self.add_open_pixel(&mut parts, delivery);
        }
        let fitted = limits::fit(delivery.channel, delivery.platform, delivery.voip, parts, version.spec.truncate, &self.config.limits)
            .map_err(|unfit| match unfit {
                Unfit::TooLarge(detail) => Failure::new("payload_too_large", detail),
                Unfit::Invalid(detail) => Failure::new("render_error", detail),
            })?;
        let mut headers = BTreeMap::new();
        if delivery.channel == Channel::Email
            && let Some(url) = self.hook.unsubscribe_url(&link_context(delivery))
        {
            headers.insert("List-Unsubscribe".to_owned(), format!("<{url}>"));
            headers.insert("List-Unsubscribe-Post".to_owned(), "List-Unsubscribe=One-Click".to_owned());
        }
        Ok(Content {
            parts: fitted.parts,
            template_version: Some(version.version),
            locale: Some(compiled.locale.clone()),
            headers,
            sms: fitted.sms,
            truncated: fitted.truncated,
        })
    }

    /// Checks an upload: the structure, every source compiles (problems with line and column),
    /// and every channel renders with the sample data. Returns the warnings (variables the
    /// sample lacks that the templates guard against) or every problem found.
    pub fn check(&self, spec: &TemplateSpec) -> Result<Vec<String>, Vec<String>> {
        spec.validate().map_err(|e| vec![e.detail])?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let sample = Value::from(Serde(&spec.sample));
        let version = TemplateVersion { version: 0, published_at: jiff::Timestamp::UNIX_EPOCH, spec: spec.clone() };
        for (locale, channels) in &spec.locales {
            for (channel, parts) in channels {
                let compiled = match Compiled::new(locale, *channel, parts, &self.config, self.hook.clone(), true) {
                    Ok(compiled) => compiled,
                    Err(problems) => {
                        errors.extend(problems.iter().map(ToString::to_string));
                        continue;
                    }
                };
                let data = context! { data => sample.clone() };
                for (part, vars) in compiled.missing_in(&data) {
                    let vars: Vec<String> = vars.into_iter().filter(|v| v.starts_with("data")).collect();
                    if !vars.is_empty() {
                        warnings.push(format!("{locale}/{channel}/{part}: uses {} which the sample data does not have", vars.join(", ")));
                    }
                }
                let delivery = sample_delivery(spec, *channel, locale, spec.sample.clone(), None);
                if let Err(failure) = self.finish(&compiled, &version, &delivery) {
                    errors.push(format!("{locale}/{channel}: with the sample data: {} ({})", failure.detail, failure.reason));
                }
            }
        }
        if errors.is_empty() { Ok(warnings) } else { Err(errors) }
    }
}

/// A delivery to render a template with outside the pipeline (checks and previews).
pub fn sample_delivery(spec: &TemplateSpec, channel: Channel, locale: &str, data: JsonObject, platform: Option<Platform>) -> Delivery {
    let platform = platform.or(match channel {
        Channel::Push => Some(Platform::Ios),
        Channel::WebPush => Some(Platform::Web),
        _ => None,
    });
    Delivery {
        v: herald_schemas::WIRE_VERSION,
        delivery_id: uuid::Uuid::nil(),
        notification_id: uuid::Uuid::nil(),
        tenant: String::new(),
        user_id: Some("sample-user".into()),
        channel,
        address: "preview".into(),
        platform,
        voip: false,
        device: None,
        locale: Some(locale.to_owned()),
        timezone: None,
        template: spec.id.clone(),
        template_version: None,
        data,
        category: spec.category.clone(),
        priority: herald_schemas::Priority::Normal,
        accepted_at: jiff::Timestamp::UNIX_EPOCH,
        expires_at: None,
        content: None,
        attachments: Vec::new(),
        scheduled_for: None,
        deferred_until: None,
        quiet_hours: None,
        dedupe: None,
        claim: None,
        redial_of: None,
        redial: 0,
    }
}

/// Channels a spec defines, for previews.
pub fn channels_of(spec: &TemplateSpec) -> Vec<Channel> {
    spec.locales.get(herald_schemas::template::DEFAULT_LOCALE).map(|c| c.keys().copied().collect()).unwrap_or_default()
}

/// Part names in the order a channel lists them, for display.
pub fn ordered_parts(channel: Channel, parts: &Parts) -> Vec<(String, String)> {
    let (allowed, _) = channel_parts(channel);
    let mut out: Vec<(String, String)> =
        allowed.iter().filter_map(|name| parts.get(*name).map(|v| ((*name).to_owned(), v.clone()))).collect();
    out.extend(parts.iter().filter(|(k, _)| !allowed.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Who a delivery's links are for.
fn link_context(delivery: &Delivery) -> LinkContext {
    LinkContext {
        tenant: delivery.tenant.clone(),
        delivery_id: delivery.delivery_id.to_string(),
        notification_id: delivery.notification_id.to_string(),
        channel: delivery.channel.as_str().to_owned(),
        user_id: delivery.user_id.clone(),
    }
}
