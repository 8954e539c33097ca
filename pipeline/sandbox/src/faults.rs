//! The fault plan: what a sandbox answers instead of the truth, per provider — error rates,
//! latency, scripted answers for chosen targets (410 for a token), bursts of 429 with
//! `Retry-After`, total outages. Set it in-process or with `PUT /_sandbox/faults`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An answer to give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    /// APNs `reason`, FCM `errorCode`, or a web push text.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// The provider's human-readable text beside its code (Twilio `message`, Vonage
    /// `error-text`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Answer {
    pub fn new(status: u16, reason: &str) -> Self {
        Answer { status, reason: reason.to_owned(), retry_after_secs: None, message: None }
    }

    pub fn with_message(mut self, message: &str) -> Self {
        self.message = (!message.is_empty()).then(|| message.to_owned());
        self
    }
}

/// The next `count` requests are answered 429 with `Retry-After: retry_after_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    pub count: u32,
    pub retry_after_secs: u64,
}

/// What to do instead of answering truthfully.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultPlan {
    /// The fraction of requests answered with `error`.
    pub error_rate: f64,
    /// The answer `error_rate` gives (default: the provider's 500).
    pub error: Option<Answer>,
    /// Added to every answer, overriding the sandbox's latency.
    pub latency_ms: Option<u64>,
    /// A scripted answer per target (device token, registration token, subscription id, phone
    /// number).
    pub tokens: BTreeMap<String, Answer>,
    pub burst: Option<Burst>,
    /// Every request is answered 503: a total outage.
    pub outage: bool,
}

impl FaultPlan {
    /// The answer a fault gives to a request for `target`, if any (a burst is used up by it).
    /// `unavailable` and `internal` are the provider's own 503 and 500 answers.
    pub fn decide(&mut self, target: &str, unavailable: &Answer, internal: &Answer, throttled: &Answer) -> Option<Answer> {
        if self.outage {
            return Some(unavailable.clone());
        }
        if let Some(burst) = &mut self.burst
            && burst.count > 0
        {
            burst.count -= 1;
            return Some(Answer { retry_after_secs: Some(burst.retry_after_secs), ..throttled.clone() });
        }
        if let Some(answer) = self.tokens.get(target) {
            return Some(answer.clone());
        }
        if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            return Some(self.error.clone().unwrap_or_else(|| internal.clone()));
        }
        None
    }
}
