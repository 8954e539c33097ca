//! The store on SurrealDB, split by aggregate: [`directory`] (users with their devices and
//! preferences, groups and members) and [`templates`] (immutable template versions), each
//! implementing the port its stage defines; [`cache`] puts bounded, invalidated caches in front.
//! [`policies`] (tenants' caps) and [`credentials`] (tenants' provider credentials, sealed at
//! rest by [`sealed`]). The notification log and producer keys will be modules beside them.
//!
//! One code path for every deployment: an embedded `surrealkv://` file by default, `mem://` in
//! tests, a remote `ws://` server (TiKV-backed for scale) by configuration. The schema is applied
//! as numbered migrations at start-up, each once, in a transaction.
//!
//! Every record id starts with the tenant: `user:[tenant, id]`, `user_group:[tenant, id]`,
//! `member:[tenant, group, user]`. A user and all their devices are one read; a group's members
//! are one key range, read a page at a time, so a million members never sit in memory at once.

pub mod cache;
pub mod credentials;
pub mod directory;
pub mod endpoints;
pub mod inbox;
pub mod log;
pub mod opt_outs;
pub mod policies;
pub mod sealed;
pub mod templates;
#[cfg(test)]
mod tests;

pub use cache::{CacheConfig, CachedDirectory, CachedTemplates, TEMPLATE_CHANGE_PREFIX};
pub use credentials::{CachedCredentials, CredentialSummary, PROVIDERS_CHANGE, StoreDevices};
pub use endpoints::DisabledEndpoint;
pub use inbox::{InboxMark, InboxState};
pub use log::{LogConfig, LogCounts};
pub use opt_outs::OptOut;
pub use policies::{CAPS_CHANGE, CachedCaps};

use std::path::PathBuf;

use herald_schemas::{Secret, ValidationError};
use herald_stage::PortError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;

/// Where the directory lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `surrealkv://<dir>` (embedded file), `mem://` (in memory), or `ws://host:port` (a
    /// SurrealDB server, shared by every replica of every stage).
    pub url: String,
    pub namespace: String,
    pub database: String,
    /// Credentials for a remote server (root user).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The server key that seals tenants' provider secrets at rest: 32 random bytes, base64
    /// (`openssl rand -base64 32`). Every process sharing a store needs the same one. Unset:
    /// read from `secret_key_file`.
    pub secret_key: Option<Secret>,
    /// Where the server key is kept when `secret_key` is unset; created (mode 0600) with a new
    /// random key the first time. Back it up with the store: without it the secrets are lost.
    pub secret_key_file: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "surrealkv://data/store".into(),
            namespace: "herald".into(),
            database: "herald".into(),
            username: None,
            password: None,
            secret_key: None,
            secret_key_file: PathBuf::from("data/secret.key"),
        }
    }
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {url}: {detail}. Check `store.url` (surrealkv://dir, mem://, ws://host:port)")]
    Open { url: String, detail: String },
    #[error("the store is unavailable ({what}): {detail}")]
    Unavailable { what: &'static str, detail: String },
    #[error("store query failed ({what}): {detail}")]
    Query { what: &'static str, detail: String },
    #[error("a stored record does not decode ({what}): {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
}

impl StoreError {
    pub(crate) fn query(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Query { what, detail: detail.to_string() }
    }

    pub(crate) fn decode(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Decode { what, detail: detail.to_string() }
    }

    /// A SurrealDB error: a lost connection (or the engine's own trouble) is an outage, anything
    /// else a refusal of the query.
    fn surreal(what: &'static str, error: surrealdb::Error) -> Self {
        if error.is_connection() || error.is_internal() {
            StoreError::Unavailable { what, detail: error.to_string() }
        } else {
            StoreError::Query { what, detail: error.to_string() }
        }
    }

    /// As a stage port's error: the kind decides whether the message is held or dead-lettered.
    pub fn into_port(self, store: &str) -> PortError {
        match self {
            StoreError::Unavailable { .. } | StoreError::Open { .. } => PortError::unavailable(store, self),
            StoreError::Decode { .. } => PortError::decode(store, self),
            _ => PortError::query(store, self),
        }
    }
}

/// The schema, in order. A migration is never edited once released: add a new one.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "directory", include_str!("../migrations/0001_directory.surql")),
    (2, "templates", include_str!("../migrations/0002_templates.surql")),
    (3, "policies", include_str!("../migrations/0003_policies.surql")),
    (4, "providers", include_str!("../migrations/0004_providers.surql")),
    (5, "webhooks", include_str!("../migrations/0005_webhooks.surql")),
    (6, "opt-outs", include_str!("../migrations/0006_opt_outs.surql")),
    (7, "inbox", include_str!("../migrations/0007_inbox.surql")),
    (8, "log", include_str!("../migrations/0008_log.surql")),
];

/// Rows per statement for bulk writes.
pub(crate) const BATCH: usize = 500;

/// The directory store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Surreal<Any>,
    sealer: sealed::Sealer,
}

impl Store {
    /// Connects, signs in when credentials are configured, and applies pending migrations.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let open_error = |detail: String| StoreError::Open { url: config.url.clone(), detail };
        let sealer = sealed::Sealer::from_config(config)?;
        if let Some(path) = config.url.strip_prefix("surrealkv://") {
            std::fs::create_dir_all(PathBuf::from(path).parent().unwrap_or(std::path::Path::new(".")))
                .map_err(|e| open_error(e.to_string()))?;
        }
        let db = surrealdb::engine::any::connect(config.url.as_str()).await.map_err(|e| open_error(e.to_string()))?;
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            db.signin(surrealdb::opt::auth::Root { username: username.clone(), password: password.expose().to_owned() })
                .await
                .map_err(|e| open_error(format!("sign-in failed: {e}")))?;
        }
        db.use_ns(&config.namespace).use_db(&config.database).await.map_err(|e| open_error(e.to_string()))?;
        let store = Store { db, sealer };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every migration not applied yet; returns the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.run("migrations", "DEFINE TABLE IF NOT EXISTS migration SCHEMALESS", json!({})).await?;
        let applied: Vec<u32> = self.rows("migrations", "SELECT VALUE version FROM migration", json!({})).await?;
        let mut done = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let statement = format!(
                "BEGIN TRANSACTION;\n{sql}\nCREATE type::record('migration', $version) SET version = $version, name = $name, applied_at = time::now();\nCOMMIT TRANSACTION;"
            );
            self.run("migration", &statement, json!({ "version": version, "name": name })).await?;
            tracing::info!(version, name, "Applied store migration.");
            done.push(*version);
        }
        Ok(done)
    }

    /// Runs a query with `$`-variables from `vars` (a JSON object); fails on any statement error.
    async fn query(&self, what: &'static str, sql: &str, vars: Value) -> Result<surrealdb::IndexedResults, StoreError> {
        let mut query = self.db.query(sql);
        if let Value::Object(vars) = vars {
            for (name, value) in vars {
                query = query.bind((name, value));
            }
        }
        let mut response = query.await.map_err(|e| StoreError::surreal(what, e))?;
        // In a failed transaction every statement reports an error; the one to show is the
        // statement that failed, not the others' "not executed".
        let mut errors: Vec<(usize, surrealdb::Error)> = response.take_errors().into_iter().collect();
        errors.sort_by_key(|(i, e)| (e.to_string().contains("not executed due to a failed transaction"), *i));
        if let Some((_, error)) = errors.into_iter().next() {
            return Err(StoreError::surreal(what, error));
        }
        Ok(response)
    }

    pub(crate) async fn run(&self, what: &'static str, sql: &str, vars: Value) -> Result<(), StoreError> {
        self.query(what, sql, vars).await.map(|_| ())
    }

    /// The rows of the last statement.
    pub(crate) async fn rows<T: DeserializeOwned>(&self, what: &'static str, sql: &str, vars: Value) -> Result<Vec<T>, StoreError> {
        let mut response = self.query(what, sql, vars).await?;
        let last = response.num_statements().saturating_sub(1);
        let rows: Vec<Value> = response.take(last).map_err(|e| StoreError::decode(what, e))?;
        rows.into_iter().map(|row| serde_json::from_value(row).map_err(|e| StoreError::decode(what, e))).collect()
    }
}
