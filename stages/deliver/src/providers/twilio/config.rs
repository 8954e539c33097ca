//! Twilio settings (`[deliver.twilio]`), shared by SMS and voice. Accounts are per tenant, in
//! the store.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

crate::providers::provider_config! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct TwilioConfig {
        /// The REST API's base: `POST <url>/2010-04-01/Accounts/<sid>/Messages.json` and `…/Calls.json`.
        pub url: String,
        /// The base of Herald's public Twilio receipt URL, e.g.
        /// `https://herald.example.com/v1/receipts/twilio`: each message and call gets
        /// `<base>/<tenant>/<delivery id>` as its `StatusCallback`, and the receiver checks
        /// `X-Twilio-Signature` over exactly that URL. Unset: no callbacks (no `delivered`, no
        /// redials).
        pub status_callback: Option<String>,
        /// Voice: the `<Say>` voice (`alice`, `Polly.Seoyeon`, `Google.ko-KR-Standard-A` …).
        /// Unset: Twilio's default for the language.
        pub voice: Option<String>,
        /// Voice: answering machine detection (`MachineDetection`): `Enable` or
        /// `DetectMessageEnd` (speak after the beep). Unset: off.
        pub machine_detection: Option<String>,
        /// Voice: seconds to let the phone ring before the call is `no-answer` (Twilio: 5–600,
        /// default 60).
        pub ring_timeout: Option<u32>,
    }
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            url: "https://api.twilio.com".into(),
            status_callback: None,
            voice: None,
            machine_detection: None,
            ring_timeout: None,
            concurrency: None,
            rate_limit: None,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}
