//! What a stage asks the runner to publish.

use herald_schemas::{Delivery, FanoutPage, Notification, Priority, Route, Timestamp, TrackEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::StageError;

/// Where an output goes. The runner maps a hop to its subject; stages never see subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    Enrich,
    /// The next page of a group fan-out.
    Fanout,
    Render,
    Dedupe,
    Throttle,
    /// The deliver consumers of one route (provider queue).
    Deliver(Route),
    /// The track stage (stage events on their way to the tracking stream).
    Track,
    /// The public tracking stream itself (only the track stage publishes here).
    Events,
}

/// A wire type that can be forwarded: it knows its tenant, the id its `Nats-Msg-Id` is built
/// from, the notification it belongs to and the priority lane it travels in.
pub trait Envelope: Serialize {
    fn tenant(&self) -> &str;
    fn key(&self) -> Uuid;
    /// The notification it belongs to (names its scheduled copies, so a cancel finds them).
    fn notification(&self) -> Uuid;
    /// Its priority lane; `None` for what travels outside the lanes (tracking events).
    fn lane(&self) -> Option<Priority>;
}

impl Envelope for Notification {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn key(&self) -> Uuid {
        self.notification_id
    }
    fn notification(&self) -> Uuid {
        self.notification_id
    }
    fn lane(&self) -> Option<Priority> {
        Some(self.request.priority)
    }
}

impl Envelope for FanoutPage {
    fn tenant(&self) -> &str {
        &self.notification.tenant
    }
    fn key(&self) -> Uuid {
        self.id()
    }
    fn notification(&self) -> Uuid {
        self.notification.notification_id
    }
    fn lane(&self) -> Option<Priority> {
        Some(self.notification.request.priority)
    }
}

impl Envelope for Delivery {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn key(&self) -> Uuid {
        self.delivery_id
    }
    fn notification(&self) -> Uuid {
        self.notification_id
    }
    fn lane(&self) -> Option<Priority> {
        Some(self.priority)
    }
}

impl Envelope for TrackEvent {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn key(&self) -> Uuid {
        self.event_id
    }
    fn notification(&self) -> Uuid {
        self.notification_id.unwrap_or(self.event_id)
    }
    fn lane(&self) -> Option<Priority> {
        None
    }
}

/// One serialized output, ready to publish.
#[derive(Debug, Clone)]
pub struct Emit {
    pub hop: Hop,
    pub tenant: String,
    /// Extra subject tokens after the tenant (e.g. the status of a tracking event).
    pub suffix: Option<String>,
    /// The id part of the `Nats-Msg-Id`; the runner appends `:<stage>`.
    pub key: Uuid,
    /// The notification the output belongs to.
    pub notification: Uuid,
    /// The priority lane of the target; `None` for hops without lanes.
    pub lane: Option<Priority>,
    /// Deliver to the hop no earlier than this: the runner stores the output with the broker's
    /// message scheduling and the broker publishes it then. No consumer waits meanwhile.
    pub at: Option<Timestamp>,
    pub payload: Vec<u8>,
}

/// The result of processing one message: outputs to forward and events to report. An empty
/// outcome is only valid when the stage reported why in `events`: nothing is dropped silently.
#[derive(Debug, Default)]
pub struct Outcome {
    pub emits: Vec<Emit>,
}

impl Outcome {
    pub fn new() -> Self {
        Outcome::default()
    }

    /// Forwards `envelope` to `hop`.
    pub fn forward<E: Envelope>(mut self, hop: Hop, envelope: &E) -> Result<Self, StageError> {
        self.push(hop, envelope, None)?;
        Ok(self)
    }

    /// Forwards `envelope` to `hop` at `until` (a scheduled send, a deferral). The stage ends
    /// with the message now; nothing waits in a consumer until then.
    pub fn defer<E: Envelope>(mut self, hop: Hop, envelope: &E, until: Timestamp) -> Result<Self, StageError> {
        self.push(hop, envelope, None)?;
        if let Some(emit) = self.emits.last_mut() {
            emit.at = Some(until);
        }
        Ok(self)
    }

    /// Reports a state change to the track stage.
    pub fn event(mut self, event: TrackEvent) -> Result<Self, StageError> {
        self.push(Hop::Track, &event, None)?;
        Ok(self)
    }

    /// Appends an output, for stages that build outcomes in a loop.
    pub fn push<E: Envelope>(&mut self, hop: Hop, envelope: &E, suffix: Option<String>) -> Result<(), StageError> {
        self.emits.push(Emit {
            hop,
            tenant: envelope.tenant().to_owned(),
            suffix,
            key: envelope.key(),
            notification: envelope.notification(),
            lane: envelope.lane(),
            at: None,
            payload: serde_json::to_vec(envelope)?,
        });
        Ok(())
    }

    /// The tracking events in this outcome, decoded (for tests).
    pub fn events(&self) -> Vec<TrackEvent> {
        self.emits
            .iter()
            .filter(|e| matches!(e.hop, Hop::Track | Hop::Events))
            .filter_map(|e| serde_json::from_slice(&e.payload).ok())
            .collect()
    }

    /// The outputs to `hop` scheduled for later, decoded with their time (for tests).
    pub fn deferred<T: serde::de::DeserializeOwned>(&self, hop: Hop) -> Vec<(T, Timestamp)> {
        self.emits.iter().filter(|e| e.hop == hop).filter_map(|e| Some((serde_json::from_slice(&e.payload).ok()?, e.at?))).collect()
    }

    /// The outputs forwarded to `hop` now (not scheduled for later), decoded (for tests).
    pub fn forwarded<T: serde::de::DeserializeOwned>(&self, hop: Hop) -> Vec<T> {
        self.emits.iter().filter(|e| e.hop == hop && e.at.is_none()).filter_map(|e| serde_json::from_slice(&e.payload).ok()).collect()
    }
}
