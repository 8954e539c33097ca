//! The contract between a stage and the runner that drives it.
//!
//! A stage is a type with a `NAME`, a typed input decoded from the wire, and one async
//! `process(input, meta) -> Result<Outcome, StageError>`. It never sees a subject, an ack or a
//! NATS client: the runner (in `herald-nats`) pulls, decodes, calls `process`, publishes what the
//! outcome says with `Nats-Msg-Id`s, and only then acks. Whatever a stage needs from the outside
//! world (a key-value store, a provider, a directory) arrives as a port trait, so its unit tests
//! use the in-memory fakes in [`memory`].

pub mod decode;
pub mod error;
pub mod events;
pub mod memory;
pub mod outcome;
pub mod ports;

use std::future::Future;

pub use decode::{Decode, DecodeError, RawRequest};
pub use error::{ErrorKind, StageError};
pub use events::EventBuilder;
pub use outcome::{Emit, Envelope, Hop, Outcome};
pub use ports::{Alerts, Created, Entry, KeyValue, PortError, PortErrorKind, Scheduler, Swapped, TemplateSource, version_at};

use herald_schemas::Timestamp;

/// What the runner knows about the message being processed.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The tenant, from the subject the message arrived on.
    pub tenant: String,
    /// The message's sequence in the stream it was consumed from. Stable across redeliveries.
    pub sequence: u64,
    /// Which delivery of this message this is: 1 the first time, 2 after one redelivery…
    pub attempt: u32,
    /// The attempt after which the runner gives up on transient errors and dead-letters.
    pub max_attempts: u32,
    /// When the message was stored in the stream.
    pub stored_at: Timestamp,
    /// When this delivery of the message was received. Stages use it as "now".
    pub received_at: Timestamp,
}

impl Meta {
    /// A meta for unit tests: tenant `acme`, sequence 1, first attempt, stored at a fixed
    /// instant (2026-01-01) and received now.
    pub fn for_tests() -> Meta {
        let now = jiff::Timestamp::now();
        let stored_at = jiff::Timestamp::from_second(1_767_225_600).unwrap_or(now);
        Meta { tenant: "acme".into(), sequence: 1, attempt: 1, max_attempts: 5, stored_at, received_at: now }
    }

    /// Whether this is the last attempt the runner will make.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// One step of the pipeline.
pub trait Stage: Send + Sync + 'static {
    /// The stage's name: the durable consumer's name, the `:<stage>` of `Nats-Msg-Id`s, the
    /// `stage` of tracking events and the label of its metrics.
    const NAME: &'static str;

    /// What the stage consumes.
    type Input: Decode + Send + 'static;

    /// Processes one message. `Ok` outcomes are published, then the input is acked; errors are
    /// retried (transient) or dead-lettered (permanent) by the runner.
    fn process(&self, input: Self::Input, meta: &Meta) -> impl Future<Output = Result<Outcome, StageError>> + Send;
}

/// The key of a notification's cancel marker in the dedupe bucket: written by the cancel stage,
/// read by throttle for every scheduled or deferred delivery.
pub fn cancel_marker_key(tenant: &str, notification: uuid::Uuid) -> String {
    format!("cancel.{tenant}.{notification}")
}

/// One stage value can serve several consumers at once (one per priority lane).
impl<S: Stage> Stage for std::sync::Arc<S> {
    const NAME: &'static str = S::NAME;
    type Input = S::Input;

    fn process(&self, input: Self::Input, meta: &Meta) -> impl Future<Output = Result<Outcome, StageError>> + Send {
        S::process(self, input, meta)
    }
}
