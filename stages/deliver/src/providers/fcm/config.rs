//! FCM settings (`[deliver.fcm]`). Service accounts are per tenant and app, in the store.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FcmConfig {
    /// Base of `POST <url>/v1/projects/<project>/messages:send`.
    pub url: String,
    /// Where access tokens are obtained. Unset: the service account's own `token_uri`.
    pub token_url: Option<String>,
    /// Calls in flight per process (default: `deliver.concurrency`).
    pub concurrency: Option<usize>,
    /// Calls started per second by all replicas together (counted in NATS); unset: no limit.
    pub rate_limit: Option<u32>,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
}

impl Default for FcmConfig {
    fn default() -> Self {
        FcmConfig {
            url: "https://fcm.googleapis.com".into(),
            token_url: None,
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl FcmConfig {
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
