//! The `log` sandbox provider's settings (`[deliver.log]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the `log` channel records deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Directory where each delivery is recorded as `<delivery_id>.json`.
    pub dir: PathBuf,
    /// Also append every call the provider receives, repeated ones included, to `calls.jsonl`
    /// in `dir`: what a real provider's request log would show. Tests count these.
    pub record_calls: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { dir: PathBuf::from("data/deliveries"), record_calls: false }
    }
}
