//! SendGrid settings (`[deliver.sendgrid]`). Accounts (API keys) are per tenant, in the store.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct SendgridConfig {
        /// The v3 API's base for `global` accounts: `POST <url>/v3/mail/send`.
        pub url: String,
        /// The base for accounts whose `region` is `eu`.
        pub eu_url: String,
    }
}

impl Default for SendgridConfig {
    fn default() -> Self {
        SendgridConfig {
            url: "https://api.sendgrid.com".into(),
            eu_url: "https://api.eu.sendgrid.com".into(),
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}
