//! Webhook settings (`[deliver.webhook]`). The signing secret is per tenant, in the store; the
//! URL is the producer's (a recipient's `webhook`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct WebhookConfig {
        /// Longest a receiver may take to answer (connect included); then the call is retried.
        #[serde(with = "humantime_serde")]
        pub timeout: Duration,
        /// Hosts on private, loopback or link-local addresses that may be called anyway, as
        /// `host` or `host:port` (e.g. `"10.0.0.7:8443"`, `"hooks.internal"`). Every other URL
        /// that names or resolves to such an address is refused (`address_refused`): a
        /// producer-supplied URL must not reach the deployment's own network or a cloud metadata
        /// service.
        pub allow_private: Vec<String>,
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout: Duration::from_secs(10),
            allow_private: Vec::new(),
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}
