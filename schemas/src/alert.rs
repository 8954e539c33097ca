//! Alerts: what operators must hear about at once, on `herald.alerts.<kind>` — a provider's
//! circuit breaker opening and closing, a queue growing, dead letters, a provider failing too
//! often.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Route, Timestamp};

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Alert", extend("$id" = "urn:herald:schema:v1:alert"))]
pub struct Alert {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    pub kind: AlertKind,
    /// The deliver route concerned, for provider alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// The provider concerned, e.g. `apns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The consumer concerned, for queue-depth alerts (`deliver-sms`, `enrich-critical` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// What happened, readable by a person.
    pub detail: String,
    /// Which process saw it (`host:pid`): breakers are per process.
    pub source: String,
    pub at: Timestamp,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A provider failed too often in a row: calls stop for a while (deliveries wait).
    BreakerOpened,
    /// The pause is over: one probe call at a time tests the provider.
    BreakerHalfOpen,
    /// A probe succeeded: calls flow again.
    BreakerClosed,
    /// A consumer's backlog kept growing (`consumer` names it): its stage is down or cannot
    /// keep up.
    QueueDepthGrowing,
    /// A backlog that was growing is small again.
    QueueDepthRecovered,
    /// Messages were dead-lettered since the last look.
    DeadLetters,
    /// A provider's share of failed calls over the last window is above the limit.
    FailureRate,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "breaker_opened",
            AlertKind::BreakerHalfOpen => "breaker_half_open",
            AlertKind::BreakerClosed => "breaker_closed",
            AlertKind::QueueDepthGrowing => "queue_depth_growing",
            AlertKind::QueueDepthRecovered => "queue_depth_recovered",
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::FailureRate => "failure_rate",
        }
    }
}
