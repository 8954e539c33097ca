//! APNs settings (`[deliver.apns]`). Credentials are per tenant and app, in the store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct ApnsConfig {
        /// The host production device tokens are sent to.
        pub production_url: String,
        /// The host development (sandbox) device tokens are sent to.
        pub development_url: String,
        /// How long a provider JWT is used before a new one is signed. Apple refuses a token older
        /// than an hour (`ExpiredProviderToken`) and new ones more often than every 20 minutes
        /// (`TooManyProviderTokenUpdates`): keep it between the two (shorter only against a sandbox).
        #[serde(with = "humantime_serde")]
        pub token_refresh: Duration,
    }
}

impl Default for ApnsConfig {
    fn default() -> Self {
        ApnsConfig {
            production_url: "https://api.push.apple.com".into(),
            development_url: "https://api.sandbox.push.apple.com".into(),
            token_refresh: Duration::from_secs(50 * 60),
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}
