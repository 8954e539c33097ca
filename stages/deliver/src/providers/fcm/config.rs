//! FCM settings (`[deliver.fcm]`). Service accounts are per tenant and app, in the store.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct FcmConfig {
        /// Base of `POST <url>/v1/projects/<project>/messages:send`.
        pub url: String,
        /// Where access tokens are obtained. Unset: the service account's own `token_uri`.
        pub token_url: Option<String>,
    }
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
