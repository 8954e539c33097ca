//! Render: fills each delivery's message from its template version with minijinja.
//!
//! In: a [`Delivery`] without content, from enrich (which chose the template version).
//! Out: the delivery with `content` to dedupe; or `failed` with `unknown_template`,
//! `no_channel_content`, `render_error` (the template's error, with its line) or
//! `payload_too_large` (over a channel limit, see [`limits`]). Failures are final: a template
//! does not get better by retrying, so none of them is retried.
//! Side effects: none (template reads only).
//! Invariants: templates run sandboxed ([`engine`]): no file or network access, fuel and
//! recursion limits, undefined variables are errors, the output size is capped, e-mail HTML is
//! auto-escaped and JSON parts JSON-encode what they print. Renders run on the blocking pool, so
//! a template that burns its whole fuel budget never holds up the messages beside it. A version
//! once published never changes, so a redelivered message renders the same content.

pub mod engine;
mod filters;
pub mod hook;
pub mod limits;
pub mod links;
pub mod preview;
pub mod sms;

use std::sync::Arc;

use herald_schemas::{Delivery, Status};
use herald_stage::{EventBuilder, Hop, Meta, Outcome, Stage, StageError, TemplateSource};

pub use engine::{Engine, Failure, RenderConfig};
pub use hook::{LinkContext, LinkHook, NoTracking};
pub use links::SignedLinks;
pub use preview::preview;

/// The render stage over a template source.
#[derive(Debug)]
pub struct Render<T> {
    templates: T,
    engine: Arc<Engine>,
}

impl<T: TemplateSource> Render<T> {
    pub fn new(templates: T, config: RenderConfig, hook: Arc<dyn LinkHook>) -> Self {
        Render { templates, engine: Arc::new(Engine::new(config, hook)) }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl<T: TemplateSource> Stage for Render<T> {
    const NAME: &'static str = "render";
    type Input = Delivery;

    async fn process(&self, delivery: Delivery, meta: &Meta) -> Result<Outcome, StageError> {
        let fail = |delivery: &Delivery, failure: Failure| {
            Outcome::new()
                .event(EventBuilder::delivery(Self::NAME, meta, delivery, Status::Failed).reason(failure.reason, failure.detail).build())
        };
        let version = match delivery.template_version {
            Some(n) => self.templates.version(&delivery.tenant, &delivery.template, n).await?,
            None => self.templates.resolve(&delivery.tenant, &delivery.template, delivery.accepted_at).await?,
        };
        let Some(version) = version else {
            let detail = match delivery.template_version {
                Some(n) => format!("template `{}` has no version {n}", delivery.template),
                None => format!("no template `{}`; publish it with `herald templates push`", delivery.template),
            };
            return fail(&delivery, Failure { reason: "unknown_template", detail });
        };
        let engine = self.engine.clone();
        let (mut delivery, rendered) = tokio::task::spawn_blocking(move || {
            let rendered = engine.render(&version, &delivery);
            (delivery, rendered)
        })
        .await
        .map_err(|e| StageError::transient("render_task_failed", format!("the render task failed: {e}")))?;
        match rendered {
            Ok(content) => {
                delivery.content = Some(content);
                Outcome::new().forward(Hop::Dedupe, &delivery)
            }
            Err(failure) => fail(&delivery, failure),
        }
    }
}

#[cfg(test)]
mod tests;
