//! Vonage settings (`[deliver.vonage]`). Accounts are per tenant, in the store.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct VonageConfig {
        /// The SMS API's base: `POST <url>/sms/json`.
        pub url: String,
        /// Where Vonage posts delivery receipts (`callback`). Unset: the account's default.
        pub status_callback: Option<String>,
    }
}

impl Default for VonageConfig {
    fn default() -> Self {
        VonageConfig {
            url: "https://rest.nexmo.com".into(),
            status_callback: None,
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}
