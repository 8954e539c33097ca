//! Render: fills each delivery's message from its template with minijinja.
//!
//! In: a [`Delivery`] without content, from enrich.
//! Out: the delivery with `content` to dedupe; or `failed` with `unknown_template`,
//! `render_error` (the template's error, with its line) or `payload_too_large`.
//! Side effects: none.
//! Invariants: templates run sandboxed: no file or network access (there is no loader), a fuel
//! limit stops endless loops, undefined variables are errors rather than empty strings, and
//! the rendered size is capped. HTML parts are auto-escaped.

use std::collections::BTreeMap;

use herald_schemas::{Content, Delivery, Status};
use herald_stage::{EventBuilder, Hop, Meta, Outcome, Stage, StageError};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use serde::{Deserialize, Serialize};

/// Templates by id; each template is its parts by name (`title`, `body`, `subject`, `html`…).
pub type TemplateSet = BTreeMap<String, BTreeMap<String, String>>;

/// Limits of the render sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// Instructions one part may execute before it is stopped.
    pub fuel: u64,
    /// Largest total size of a delivery's rendered parts, in bytes.
    pub max_output_bytes: usize,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig { fuel: 100_000, max_output_bytes: 64 * 1024 }
    }
}

/// A template that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("template `{template}` part `{part}` does not compile: {source:#}")]
pub struct TemplateError {
    pub template: String,
    pub part: String,
    #[source]
    pub source: minijinja::Error,
}

/// The render stage, with every template compiled once at start.
pub struct Render {
    env: Environment<'static>,
    parts: BTreeMap<String, Vec<String>>,
    config: RenderConfig,
}

impl std::fmt::Debug for Render {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Render").field("templates", &self.parts.keys().collect::<Vec<_>>()).finish()
    }
}

impl Render {
    /// Compiles every template; the first that does not compile is the error.
    pub fn new(templates: TemplateSet, config: RenderConfig) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(config.fuel));
        env.set_recursion_limit(64);
        env.set_auto_escape_callback(|name| if name.ends_with("/html") { AutoEscape::Html } else { AutoEscape::None });
        let mut parts = BTreeMap::new();
        for (template, sources) in templates {
            let mut names = Vec::new();
            for (part, source) in sources {
                let name = format!("{template}/{part}");
                env.add_template_owned(name, source).map_err(|source| TemplateError {
                    template: template.clone(),
                    part: part.clone(),
                    source,
                })?;
                names.push(part);
            }
            parts.insert(template, names);
        }
        Ok(Render { env, parts, config })
    }
}

impl Stage for Render {
    const NAME: &'static str = "render";
    type Input = Delivery;

    async fn process(&self, mut delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        let fail = |delivery: &Delivery, reason: &str, detail: String| {
            Outcome::new().event(EventBuilder::delivery(Self::NAME, meta, delivery, Status::Failed).reason(reason, detail).build())
        };
        let Some(part_names) = self.parts.get(&delivery.template) else {
            let detail = format!("no template `{}`; add it to the templates file", delivery.template);
            return fail(&delivery, "unknown_template", detail);
        };
        let ctx = context! {
            data => Value::from(Serde(&delivery.data)),
            user_id => &delivery.user_id,
            channel => delivery.channel.as_str(),
            locale => &delivery.locale,
            timezone => &delivery.timezone,
            notification_id => delivery.notification_id.to_string(),
        };
        let mut parts = BTreeMap::new();
        let mut size = 0;
        for part in part_names {
            let name = format!("{}/{part}", delivery.template);
            let rendered = self.env.get_template(&name).and_then(|t| t.render(&ctx));
            match rendered {
                Ok(text) => {
                    size += text.len();
                    parts.insert(part.clone(), text);
                }
                Err(error) => return fail(&delivery, "render_error", format!("part `{part}`: {error:#}")),
            }
            if size > self.config.max_output_bytes {
                let detail = format!("rendered output exceeds {} bytes at part `{part}`", self.config.max_output_bytes);
                return fail(&delivery, "payload_too_large", detail);
            }
        }
        delivery.content = Some(Content { parts, template_version: None });
        Outcome::new().forward(Hop::Dedupe, &delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(template: &str, data: serde_json::Value) -> Delivery {
        Delivery { template: template.into(), data: data.as_object().cloned().unwrap_or_default(), ..herald_stage::memory::delivery(2) }
    }

    fn templates(pairs: &[(&str, &str, &str)]) -> TemplateSet {
        let mut set = TemplateSet::new();
        for (t, part, source) in pairs {
            set.entry((*t).to_owned()).or_default().insert((*part).to_owned(), (*source).to_owned());
        }
        set
    }

    async fn render(set: TemplateSet, d: Delivery) -> Outcome {
        Render::new(set, RenderConfig::default()).unwrap().process(d, &Meta::for_tests()).await.unwrap()
    }

    #[tokio::test]
    async fn renders_every_part_and_escapes_html() {
        let set = templates(&[("welcome", "title", "Hi {{ data.name }}"), ("welcome", "html", "<p>{{ data.name }}</p>")]);
        let out = render(set, delivery("welcome", serde_json::json!({"name": "<Bob>"}))).await;
        let d: Vec<Delivery> = out.forwarded(Hop::Dedupe);
        let parts = &d[0].content.as_ref().unwrap().parts;
        assert_eq!(parts["title"], "Hi <Bob>");
        assert_eq!(parts["html"], "<p>&lt;Bob&gt;</p>");
    }

    async fn failure(set: TemplateSet, d: Delivery) -> (String, String) {
        let out = render(set, d).await;
        assert!(out.forwarded::<Delivery>(Hop::Dedupe).is_empty());
        let e = &out.events()[0];
        assert_eq!(e.status, Status::Failed);
        (e.reason.clone().unwrap(), e.detail.clone().unwrap())
    }

    #[tokio::test]
    async fn failures_name_their_cause() {
        let (reason, _) = failure(templates(&[("a", "body", "x")]), delivery("missing", serde_json::json!({}))).await;
        assert_eq!(reason, "unknown_template");
        let (reason, detail) = failure(templates(&[("a", "body", "{{ data.nope }}")]), delivery("a", serde_json::json!({}))).await;
        assert_eq!(reason, "render_error");
        assert!(detail.contains("undefined"), "{detail}");
        let (reason, _) =
            failure(templates(&[("a", "body", "{% for i in range(100000) %}{% endfor %}")]), delivery("a", serde_json::json!({}))).await;
        assert_eq!(reason, "render_error");
        let (reason, _) = failure(templates(&[("a", "body", "{{ 'x' * 100000 }}")]), delivery("a", serde_json::json!({}))).await;
        assert_eq!(reason, "payload_too_large");
    }

    #[test]
    fn a_broken_template_is_refused_at_start() {
        let err = Render::new(templates(&[("a", "body", "{% if %}")]), RenderConfig::default()).unwrap_err();
        assert!(err.to_string().contains("`a` part `body`"), "{err}");
    }
}
