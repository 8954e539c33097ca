//! Configuration: defaults in code, then a TOML file, then `HERALD__SECTION__KEY` variables.
//!
//! Every key is documented in `config/herald.example.toml`, which a test parses.

use std::fmt;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use herald_enrich::EnrichConfig;
use herald_nats::{RunnerConfig, TopologyConfig};
use herald_render::RenderConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub topology: TopologyConfig,
    pub runner: RunnerConfig,
    pub store: crate::store::StoreConfig,
    pub cache: crate::cache::CacheConfig,
    pub api: crate::api::ApiConfig,
    pub render: RenderConfig,
    pub enrich: EnrichConfig,
    pub deliver: DeliverConfig,
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

/// A secret: never printed, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverConfig {
    /// Directory where the `log` sandbox channel records each delivery as `<delivery_id>.json`.
    pub log_dir: PathBuf,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        DeliverConfig { log_dir: PathBuf::from("data/deliveries") }
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
        assert_eq!(config.api.admin_token.as_ref().map(Secret::expose), Some("hunter2"));
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
