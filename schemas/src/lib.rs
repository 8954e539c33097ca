//! Herald's wire types, version 1.
//!
//! Every message that crosses a NATS subject is one of the types here, serialized as JSON. The
//! JSON Schema files under `schemas/json/` are generated from these types (`make schemas`) and
//! committed; a test fails when they are stale, so the published contract and the code cannot
//! drift apart.
//!
//! This crate does no I/O. It holds the types, their validation rules, the deterministic id
//! derivations every stage relies on for idempotency, and the header names of the wire protocol.

pub mod alert;
pub mod api;
pub mod caps;
pub mod channel;
pub mod delivery;
pub mod directory;
pub mod event;
pub mod fanout;
pub mod headers;
pub mod ids;
pub mod inbox;
pub mod log;
pub mod notification;
pub mod providers;
pub mod receipt;
pub mod request;
mod schema;
pub mod secret;
pub mod template;

pub use alert::{Alert, AlertKind};
pub use caps::{Cap, CapPolicy, CapScope, TenantCaps, WindowKind};
pub use channel::{Channel, Route};
pub use delivery::{ClaimRef, Content, DedupeKey, Delivery, DeviceRef, SmsEncoding, SmsInfo};
pub use event::{Status, TrackEvent};
pub use fanout::FanoutPage;
pub use notification::{CancelRequest, Notification};
pub use providers::{CredentialKey, Credentials};
pub use receipt::Receipt;
pub use request::{Attachment, NotificationRequest, Priority, Recipient, ValidationError, parse_duration};
pub use schema::{SchemaFile, schema_files};
pub use secret::Secret;
pub use template::{TemplateSpec, TemplateVersion};

/// The version of the wire format these types describe. Every envelope carries it as `v`.
pub const WIRE_VERSION: u32 = 1;

/// A point in time on the wire: RFC 3339 in UTC.
pub type Timestamp = jiff::Timestamp;

/// Free-form JSON object used for template data and producer metadata.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

fn wire_version() -> u32 {
    WIRE_VERSION
}
