//! The in-app inbox: a delivery becomes an [`InboxMessage`] (the rendered `title`, `body` and
//! `data`) stored on the user's inbox subject, where the inbox API lists it and its live feed
//! pushes it. The delivery id is the message's `Nats-Msg-Id`, so a retried store is kept once.

use std::sync::Arc;

use herald_schemas::inbox::InboxMessage;
use herald_schemas::{Delivery, JsonObject};

use crate::ports::InboxSink;
use crate::providers::{Provider, ProviderError, Receipt, SendFuture};

/// The inbox provider.
pub struct Inbox {
    sink: Arc<dyn InboxSink>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    pub fn new(sink: Arc<dyn InboxSink>) -> Self {
        Inbox { sink }
    }
}

/// The message a delivery becomes.
pub fn message(delivery: &Delivery, now: herald_schemas::Timestamp) -> Result<InboxMessage, ProviderError> {
    let part = |name: &str| delivery.content.as_ref().and_then(|c| c.parts.get(name)).filter(|p| !p.trim().is_empty()).cloned();
    let data: JsonObject = match part("data") {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            ProviderError::permanent(
                "invalid_data",
                format!("template `{}` rendered an in_app `data` that is not a JSON object: {e}", delivery.template),
            )
        })?,
        None => JsonObject::new(),
    };
    let (title, body) = (part("title"), part("body"));
    if title.is_none() && body.is_none() {
        return Err(ProviderError::permanent(
            "no_body",
            format!("template `{}` rendered neither `title` nor `body` for in_app", delivery.template),
        ));
    }
    Ok(InboxMessage {
        v: herald_schemas::WIRE_VERSION,
        id: delivery.delivery_id,
        notification_id: delivery.notification_id,
        template: delivery.template.clone(),
        category: delivery.category.clone(),
        title,
        body,
        data,
        sent_at: now,
    })
}

impl Inbox {
    async fn call(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let user = delivery.user_id.as_deref().ok_or_else(|| {
            ProviderError::permanent("no_user", "an in-app message needs a directory user; this recipient has no account")
        })?;
        let message = message(delivery, jiff::Timestamp::now())?;
        let payload = serde_json::to_vec(&message).map_err(|e| ProviderError::permanent("invalid_message", e.to_string()))?;
        let id = delivery.delivery_id.to_string();
        let seq = self
            .sink
            .store(&delivery.tenant, user, &id, payload.into())
            .await
            .map_err(|e| ProviderError::outage("inbox_unavailable", format!("cannot store the inbox message: {e}")))?;
        Ok(Receipt { provider_message_id: seq.to_string(), duplicate: false })
    }
}

impl Provider for Inbox {
    fn name(&self) -> &str {
        "inbox"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.call(delivery))
    }
}
