//! Stage errors, classified by what the runner should do next.

use std::time::Duration;

use crate::DecodeError;

/// What the runner does with a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Try again later: nak with backoff (or `retry_after`), dead-letter after the last attempt.
    Transient,
    /// Trying again cannot help: dead-letter now with a `dead_lettered` event.
    Permanent,
    /// Something every message needs is down (a store, the broker): not this message's fault,
    /// so it costs no attempt. The runner holds the message and runs it again after a pause,
    /// until the dependency is back.
    Outage,
}

/// A failure to process a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct StageError {
    pub kind: ErrorKind,
    /// Machine-readable reason, the `reason` of the resulting event.
    pub reason: String,
    /// What went wrong, naming the thing and the fix where there is one.
    pub detail: String,
    /// The earliest useful retry, when the cause said so (e.g. a provider's `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl StageError {
    pub fn transient(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        StageError { kind: ErrorKind::Transient, reason: reason.into(), detail: detail.into(), retry_after: None }
    }

    pub fn permanent(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        StageError { kind: ErrorKind::Permanent, reason: reason.into(), detail: detail.into(), retry_after: None }
    }

    pub fn outage(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        StageError { kind: ErrorKind::Outage, reason: reason.into(), detail: detail.into(), retry_after: None }
    }

    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl From<DecodeError> for StageError {
    fn from(error: DecodeError) -> Self {
        StageError::permanent("invalid_message", error.to_string())
    }
}

impl From<crate::PortError> for StageError {
    /// A store that is down holds the message; a row that does not decode or a query the store
    /// refuses would fail the same way on every try, so it is dead-lettered with the reason.
    fn from(error: crate::PortError) -> Self {
        match error.kind {
            crate::PortErrorKind::Unavailable => StageError::outage("store_unavailable", error.to_string()),
            crate::PortErrorKind::Decode => StageError::permanent("store_decode_failed", error.to_string()),
            crate::PortErrorKind::Query => StageError::permanent("store_query_failed", error.to_string()),
        }
    }
}

impl From<serde_json::Error> for StageError {
    fn from(error: serde_json::Error) -> Self {
        StageError::permanent("encode_failed", error.to_string())
    }
}
