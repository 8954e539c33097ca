//! Configuration: defaults in code, then a TOML file, then `HERALD__SECTION__KEY` variables.
//!
//! Every key is documented in `config/herald.example.toml`, which a test parses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use herald_attachments::AttachmentsConfig;
use herald_deliver::DeliverConfig;
use herald_enrich::EnrichConfig;
use herald_http::ApiConfig;
use herald_nats::depth::WatchConfig;
use herald_nats::{RunnerConfig, TopologyConfig};
use herald_render::RenderConfig;
use herald_store::{CacheConfig, LogConfig, StoreConfig};
use herald_throttle::ThrottleConfig;
use herald_track::ReceiptsConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub topology: TopologyConfig,
    pub runner: RunnerConfig,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    pub api: ApiConfig,
    pub render: RenderConfig,
    pub enrich: EnrichConfig,
    pub deliver: DeliverConfig,
    pub throttle: ThrottleConfig,
    pub attachments: AttachmentsConfig,
    pub receipts: ReceiptsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub engagement: EngagementConfig,
}

/// Engagement tracking in rendered messages (`[engagement]`): tracked links (`{{ url | track }}`),
/// the open pixel in e-mail HTML and the unsubscribe link with its `List-Unsubscribe` headers, all
/// pointing at Herald's API (`/v1/links/…`) and signed with `secret`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngagementConfig {
    /// Herald's API as recipients reach it, e.g. `https://herald.example.com`; empty: links stay
    /// as written, no pixel, no unsubscribe link.
    pub base_url: String,
    /// The key links are signed with (at least 32 characters): the same in every render and
    /// API process. Best given as `HERALD__ENGAGEMENT__SECRET`.
    pub secret: Option<herald_schemas::Secret>,
}

impl EngagementConfig {
    /// The links' signer, when engagement tracking is on.
    pub fn links(&self) -> Option<herald_render::SignedLinks> {
        let secret = self.secret.as_ref()?;
        (!self.base_url.is_empty()).then(|| herald_render::SignedLinks::new(&self.base_url, secret.expose().as_bytes()))
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served; empty turns it off. Each process on a host needs its
    /// own port (`HERALD__METRICS__LISTEN=127.0.0.1:9465 herald stage deliver`).
    pub listen: String,
    /// How often queue depths, stream sizes and the process's figures are sampled.
    #[serde(with = "humantime_serde")]
    pub sample_every: Duration,
    /// When a backlog counts as growing, for `queue_depth_growing` alerts.
    pub watch: WatchConfig,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".into(), sample_every: Duration::from_secs(5), watch: WatchConfig::default() }
    }
}

/// Where NATS is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated for a cluster. When unset, `herald up` uses
    /// `nats://127.0.0.1:<embedded_port>` and starts a server there if none answers.
    pub url: Option<String>,
    /// Store directory of the server `herald up` starts when none is reachable.
    pub embedded_store: PathBuf,
    /// Client port of that server.
    pub embedded_port: u16,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig { url: None, embedded_store: PathBuf::from("data/nats"), embedded_port: 4222 }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist; create it (see config/herald.example.toml) or drop --config")]
    Missing { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
}

impl Config {
    /// Loads defaults, then `file` (or `herald.toml` in the working directory when present), then
    /// `HERALD__…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::Missing { path: path.to_owned() }),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("herald.toml").exists() => figment = figment.merge(Toml::file_exact("herald.toml")),
            None => {}
        }
        figment = figment.merge(Env::prefixed("HERALD__").split("__"));
        figment.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    /// Parses a TOML document on top of the defaults.
    #[cfg(test)]
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    /// Refuses settings that contradict each other, each problem with its fix. Herald checks
    /// this at start-up, before it touches anything.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let t = &self.topology;
        let r = &self.runner;
        let mut problems = Vec::new();
        let show = |d: Duration| humantime::format_duration(d).to_string();
        // A publish that crashed before its ack can be retried this late (a redelivery may also
        // be held through an outage before it publishes again): the server must still
        // recognise its `Nats-Msg-Id`.
        let longest_retry = t.ack_wait.saturating_mul(t.max_deliveries).saturating_add(r.backoff_max).saturating_add(r.hold_max);
        if t.duplicate_window < longest_retry {
            problems.push(format!(
                "topology.duplicate_window ({}) is shorter than topology.ack_wait × topology.max_deliveries + runner.backoff_max + runner.hold_max ({}): a publish retried after a crash would be stored twice. Raise duplicate_window to at least {}, or lower ack_wait, max_deliveries, backoff_max or hold_max",
                show(t.duplicate_window),
                show(longest_retry),
                show(longest_retry)
            ));
        }
        if t.duplicate_window > t.max_age {
            problems.push(format!(
                "topology.duplicate_window ({}) is longer than topology.max_age ({}); the server refuses such streams. Lower duplicate_window or raise max_age",
                show(t.duplicate_window),
                show(t.max_age)
            ));
        }
        if t.dedupe_ttl < t.max_age {
            problems.push(format!(
                "topology.dedupe_ttl ({}) is shorter than topology.max_age ({}): a replay of a delivery still in the streams would find no state and be sent again. Raise dedupe_ttl to at least max_age",
                show(t.dedupe_ttl),
                show(t.max_age)
            ));
        }
        if t.idempotency_ttl < Duration::from_secs(1) || t.dedupe_ttl < Duration::from_secs(1) {
            problems.push("topology.idempotency_ttl and topology.dedupe_ttl must be at least 1s (the servers' granularity)".to_owned());
        }
        if t.max_deliveries == 0 || t.deliver_max_deliveries == 0 {
            problems.push("topology.max_deliveries and topology.deliver_max_deliveries must be at least 1".to_owned());
        }
        let d = &self.deliver;
        if d.apns.token_refresh > Duration::from_secs(3600) {
            problems.push(format!(
                "deliver.apns.token_refresh ({}) is over an hour: APNs refuses such tokens (ExpiredProviderToken). Use 20 to 60 minutes",
                show(d.apns.token_refresh)
            ));
        }
        if d.web_push.vapid_expiry > Duration::from_secs(24 * 3600) {
            problems.push(format!(
                "deliver.web_push.vapid_expiry ({}) is over 24 hours, which RFC 8292 forbids and push services refuse. Use at most 24h",
                show(d.web_push.vapid_expiry)
            ));
        }
        let lease = self.deliver.lease();
        if r.hold_max < lease {
            problems.push(format!(
                "runner.hold_max ({}) is shorter than a provider call's lease (2 × deliver.send_timeout = {}): a copy waiting for a live call would start spending attempts. Raise hold_max or lower send_timeout",
                show(r.hold_max),
                show(lease)
            ));
        }
        if r.shutdown_grace <= self.deliver.send_timeout {
            problems.push(format!(
                "runner.shutdown_grace ({}) is not longer than deliver.send_timeout ({}): a clean stop could abandon a provider call the provider accepted, and the delivery would be sent again after its lease. Raise shutdown_grace or lower send_timeout",
                show(r.shutdown_grace),
                show(self.deliver.send_timeout)
            ));
        }
        if t.max_message_size < 4 * 1024 {
            problems
                .push(format!("topology.max_message_size ({} bytes) is too small for any message; use at least 4096", t.max_message_size));
        }
        let caps = herald_schemas::TenantCaps { v: 1, caps: self.throttle.caps.clone() };
        if let Err(e) = caps.validate() {
            problems.push(format!("throttle.caps: {}", e.detail));
        }
        // A counter must outlive its window, or a quiet user's count would vanish mid-window.
        if let Some(cap) = self.throttle.caps.iter().find(|c| c.window() > t.dedupe_ttl) {
            problems.push(format!(
                "throttle.caps: cap {} has a window of {}, longer than topology.dedupe_ttl ({}), which keeps its counter: shorten the window or raise dedupe_ttl",
                cap.name,
                cap.window,
                show(t.dedupe_ttl)
            ));
        }
        if let Err(e) = self.receipts.redial.check() {
            problems.push(e);
        }
        if let Some(callback) = &self.deliver.twilio.status_callback
            && !(callback.starts_with("https://") || callback.starts_with("http://"))
        {
            problems.push(format!(
                "deliver.twilio.status_callback ({callback:?}) is not an http(s) URL: give Herald's public receipt URL, e.g. https://herald.example.com/v1/receipts/twilio"
            ));
        }
        if let Err(e) = herald_schemas::directory::check_timezone(&self.throttle.default_timezone) {
            problems.push(format!("throttle.default_timezone: {}", e.detail));
        }
        if t.max_age < Duration::from_secs(2 * 24 * 3600) {
            problems.push(format!(
                "topology.max_age ({}) is under 2 days: quiet hours defer deliveries for up to a day, and a deferred delivery waits in a stream. Raise max_age",
                show(t.max_age)
            ));
        }
        let e = &self.engagement;
        if !e.base_url.is_empty() {
            if !(e.base_url.starts_with("https://") || e.base_url.starts_with("http://")) {
                problems.push(format!("engagement.base_url ({}) must be an http(s) URL: Herald's API as recipients reach it", e.base_url));
            }
            if e.secret.as_ref().is_none_or(|s| s.expose().len() < 32) {
                problems.push("engagement.base_url is set but engagement.secret is missing or shorter than 32 characters: every render and API process signs and checks links with it; set HERALD__ENGAGEMENT__SECRET to a long random string (e.g. `openssl rand -hex 32`)".to_owned());
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// How far ahead a `send_at` may be: the streams' max age less an hour of margin.
    pub fn schedule_horizon(&self) -> Duration {
        self.topology.max_age.saturating_sub(Duration::from_secs(3600))
    }

    /// The URL to connect to, and whether it was configured explicitly.
    pub fn nats_url(&self) -> (String, bool) {
        match &self.nats.url {
            Some(url) => (url.clone(), true),
            None => (format!("nats://127.0.0.1:{}", self.nats.embedded_port), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        let text = include_str!("../../config/herald.example.toml");
        let config = Config::from_toml(text).expect("config/herald.example.toml must parse");
        assert_eq!(config, Config::default(), "the example documents the defaults; keep them in step");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_toml("[nats]\nurll = \"nats://x\"").unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::from_toml("[api]\nadmin_token = \"hunter2\"").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.api.admin_token.as_ref().map(herald_schemas::Secret::expose), Some("hunter2"));
    }

    #[test]
    fn the_defaults_and_the_example_are_consistent() {
        assert_eq!(Config::default().check(), Ok(()));
    }

    /// Contradicting settings → the words the refusal must contain.
    #[test]
    fn contradictions_are_refused_with_their_fix() {
        let cases = [
            ("[topology]\nduplicate_window = \"1m\"", "Raise duplicate_window to at least 4m 30s"),
            ("[topology]\nack_wait = \"2m\"", "topology.duplicate_window (5m) is shorter"),
            ("[runner]\nbackoff_max = \"10m\"", "or lower ack_wait, max_deliveries, backoff_max or hold_max"),
            ("[runner]\nshutdown_grace = \"5s\"", "Raise shutdown_grace or lower send_timeout"),
            ("[topology]\ndedupe_ttl = \"1day\"", "Raise dedupe_ttl to at least max_age"),
            ("[topology]\nmax_age = \"1m\"\ndedupe_ttl = \"1m\"", "the server refuses such streams"),
            ("[runner]\nhold_max = \"15s\"", "Raise hold_max or lower send_timeout"),
            ("[topology]\nmax_message_size = 100", "use at least 4096"),
            ("[topology]\nidempotency_ttl = \"0s\"", "at least 1s"),
            ("[topology]\nmax_age = \"1day\"\ndedupe_ttl = \"1day\"", "quiet hours defer deliveries for up to a day"),
            ("[throttle]\ndefault_timezone = \"Mars/Olympus\"", "not an IANA name"),
            ("[engagement]\nbase_url = \"https://herald.example\"", "set HERALD__ENGAGEMENT__SECRET"),
            ("[engagement]\nbase_url = \"https://herald.example\"\nsecret = \"short\"", "shorter than 32 characters"),
            ("[engagement]\nbase_url = \"herald.example\"\nsecret = \"0123456789abcdef0123456789abcdef\"", "must be an http(s) URL"),
            ("[deliver.apns]\ntoken_refresh = \"2h\"", "APNs refuses such tokens"),
            ("[deliver.web_push]\nvapid_expiry = \"2days\"", "Use at most 24h"),
            ("[[throttle.caps]]\nname = \"x\"\nscope = \"user\"\nlimit = 0\nwindow = \"1h\"", "limit must be at least 1"),
            (
                "[topology]\nmax_age = \"3days\"\ndedupe_ttl = \"3days\"\n[[throttle.caps]]\nname = \"long\"\nscope = \"user\"\nlimit = 1\nwindow = \"4days\"",
                "longer than topology.dedupe_ttl",
            ),
        ];
        for (toml, expected) in cases {
            let problems = Config::from_toml(toml).unwrap().check().unwrap_err();
            assert!(problems.iter().any(|p| p.contains(expected)), "{toml}: {problems:#?}");
        }
    }

    #[test]
    fn durations_are_written_like_30s() {
        let config = Config::from_toml("[topology]\nack_wait = \"45s\"\nmax_age = \"3days\"").unwrap();
        assert_eq!(config.topology.ack_wait, Duration::from_secs(45));
        assert_eq!(config.topology.max_age, Duration::from_secs(3 * 86400));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("herald.toml", "[topology]\nprefix = \"fromfile\"\nmax_deliveries = 3")?;
            jail.set_env("HERALD__TOPOLOGY__PREFIX", "fromenv");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.topology.prefix, "fromenv");
            assert_eq!(config.topology.max_deliveries, 3);
            Ok(())
        });
    }
}
