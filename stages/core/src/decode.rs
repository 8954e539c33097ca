//! Turning message bytes into a stage's input.

use herald_schemas::{CancelRequest, Delivery, FanoutPage, Notification, TrackEvent};
use serde::de::DeserializeOwned;

/// A message body that is not a valid input for the stage: permanent, never retried.
#[derive(Debug, thiserror::Error)]
#[error("the message is not a valid {type_name}: {source}")]
pub struct DecodeError {
    pub type_name: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Decodes a stage input from a message body.
pub trait Decode: Sized {
    fn decode(body: &[u8]) -> Result<Self, DecodeError>;
}

fn json<T: DeserializeOwned>(type_name: &'static str, body: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|source| DecodeError { type_name, source })
}

impl Decode for Notification {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        json("Notification", body)
    }
}

impl Decode for FanoutPage {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        json("FanoutPage", body)
    }
}

impl Decode for Delivery {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        json("Delivery", body)
    }
}

impl Decode for TrackEvent {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        json("TrackEvent", body)
    }
}

impl Decode for herald_schemas::Receipt {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        json("Receipt", body)
    }
}

impl Decode for CancelRequest {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        json("CancelRequest", body)
    }
}

/// The untouched body of a producer's request. Ingest validates it itself so that every
/// malformed request becomes a `rejected` event with a reason rather than a dead letter.
#[derive(Debug, Clone)]
pub struct RawRequest(pub bytes::Bytes);

impl Decode for RawRequest {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        Ok(RawRequest(bytes::Bytes::copy_from_slice(body)))
    }
}
