//! The [`Scheduler`] port on the broker's message scheduling.
//!
//! Scheduled copies (a `send_at`, a deferral) are messages stored on
//! `<p>.schedule.<stage>.<tenant>.<notification>.<key>` with a `Nats-Schedule` header; cancelling
//! a notification purges every such subject of it from the streams that hold them, so none of
//! them fires.

use std::sync::Arc;

use async_nats::jetstream;
use herald_stage::{PortError, Scheduler};
use uuid::Uuid;

use crate::Topology;

/// Cancels scheduled copies by purging their subjects.
#[derive(Clone)]
pub struct NatsScheduler {
    js: jetstream::Context,
    topology: Arc<Topology>,
}

impl std::fmt::Debug for NatsScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsScheduler").finish_non_exhaustive()
    }
}

impl NatsScheduler {
    pub(crate) fn new(js: jetstream::Context, topology: Arc<Topology>) -> Self {
        NatsScheduler { js, topology }
    }
}

impl Scheduler for NatsScheduler {
    async fn cancel(&self, tenant: &str, notification: Uuid) -> Result<u64, PortError> {
        let mut removed = 0;
        for (stream_name, filter) in self.topology.schedule_filters(tenant, notification) {
            let error = |e: &dyn std::fmt::Display| PortError::unavailable(format!("stream {stream_name}"), e);
            let stream = self.js.get_stream(&stream_name).await.map_err(|e| error(&e))?;
            let purged = stream.purge().filter(filter).await.map_err(|e| error(&e))?;
            removed += purged.purged;
        }
        Ok(removed)
    }
}
