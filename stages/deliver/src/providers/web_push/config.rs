//! Web push settings (`[deliver.web_push]`). VAPID keys are per tenant and app, in the store;
//! the push service's URL is each subscription's own endpoint.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebPushConfig {
    /// How long a VAPID JWT is valid (RFC 8292 allows at most 24 hours); one is signed per push
    /// service origin and reused for half of this.
    #[serde(with = "humantime_serde")]
    pub vapid_expiry: Duration,
    /// The `TTL` of a notification without `expires_at`: how long the push service keeps it
    /// for a browser that is offline.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Calls in flight per process (default: `deliver.concurrency`).
    pub concurrency: Option<usize>,
    /// Calls started per second by all replicas together (counted in NATS); unset: no limit.
    pub rate_limit: Option<u32>,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
}

impl Default for WebPushConfig {
    fn default() -> Self {
        WebPushConfig {
            vapid_expiry: Duration::from_secs(12 * 3600),
            default_ttl: Duration::from_secs(28 * 24 * 3600),
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl WebPushConfig {
    /// The gate's settings.
    pub fn guards(&self) -> crate::providers::Guards {
        crate::providers::Guards {
            concurrency: self.concurrency,
            rate_limit: self.rate_limit,
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
        }
    }
}
