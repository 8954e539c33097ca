//! SMTP settings (`[deliver.smtp]`). Relays and their accounts are per tenant, in the store.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct SmtpConfig {
        /// Connections kept open per relay account and process (each sends one message at a time).
        pub pool_size: u32,
        /// The name said in `EHLO`. Unset: this host's name.
        pub hello_name: Option<String>,
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            pool_size: 8,
            hello_name: None,
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}
