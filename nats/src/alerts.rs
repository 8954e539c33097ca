//! The [`Alerts`] port on the `ALERTS` stream: `<p>.alerts.<kind>`, kept like every stream for
//! operators to read back (`herald events` style tools, dashboards).

use std::sync::Arc;

use async_nats::jetstream;
use herald_schemas::Alert;
use herald_stage::Alerts;
use tracing::warn;

use crate::Topology;

/// Publishes alerts, best effort (an alert that cannot be stored is logged).
#[derive(Clone)]
pub struct NatsAlerts {
    js: jetstream::Context,
    topology: Arc<Topology>,
}

impl std::fmt::Debug for NatsAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAlerts").finish_non_exhaustive()
    }
}

impl NatsAlerts {
    pub(crate) fn new(js: jetstream::Context, topology: Arc<Topology>) -> Self {
        NatsAlerts { js, topology }
    }
}

impl Alerts for NatsAlerts {
    fn alert(&self, alert: Alert) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let subject = self.topology.alerts_subject(alert.kind.as_str());
            let payload = match serde_json::to_vec(&alert) {
                Ok(payload) => payload,
                Err(error) => return warn!(%error, "Could not encode an alert."),
            };
            let stored = match self.js.publish(subject.clone(), payload.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stored {
                Ok(()) => tracing::info!(kind = alert.kind.as_str(), detail = %alert.detail, "Alert raised."),
                Err(error) => warn!(%error, subject, detail = %alert.detail, "Could not publish an alert; it is only in this log."),
            }
        })
    }
}
