//! What a stage asks the runner to publish.

use herald_schemas::{Channel, Delivery, FanoutPage, Notification, TrackEvent};
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
    /// The deliver consumer of one channel.
    Deliver(Channel),
    /// The track stage (stage events on their way to the tracking stream).
    Track,
    /// The public tracking stream itself (only the track stage publishes here).
    Events,
}

/// A wire type that can be forwarded: it knows its tenant and the id its `Nats-Msg-Id` is
/// built from.
pub trait Envelope: Serialize {
    fn tenant(&self) -> &str;
    fn key(&self) -> Uuid;
}

impl Envelope for Notification {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn key(&self) -> Uuid {
        self.notification_id
    }
}

impl Envelope for FanoutPage {
    fn tenant(&self) -> &str {
        &self.notification.tenant
    }
    fn key(&self) -> Uuid {
        self.id()
    }
}

impl Envelope for Delivery {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn key(&self) -> Uuid {
        self.delivery_id
    }
}

impl Envelope for TrackEvent {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn key(&self) -> Uuid {
        self.event_id
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

    /// The forwarded outputs to `hop`, decoded (for tests).
    pub fn forwarded<T: serde::de::DeserializeOwned>(&self, hop: Hop) -> Vec<T> {
        self.emits.iter().filter(|e| e.hop == hop).filter_map(|e| serde_json::from_slice(&e.payload).ok()).collect()
    }
}
