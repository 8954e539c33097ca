//! Web push settings (`[deliver.web_push]`). VAPID keys are per tenant and app, in the store;
//! the push service's URL is each subscription's own endpoint.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
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
    }
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
