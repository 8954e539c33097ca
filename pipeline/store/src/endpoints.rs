//! Webhook endpoints a receiver said are gone (410), per tenant and URL: deliver disables them
//! and checks before every call; the admin API lists them and enables them again.

use herald_schemas::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use herald_schemas::directory::check_tenant;

use crate::{Store, StoreError};

/// A disabled webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledEndpoint {
    pub url: String,
    /// The receiver's answer, e.g. `http_410`.
    pub reason: String,
    pub disabled_at: String,
}

impl Store {
    /// Disables `url` for `tenant`; returns whether it was enabled until now.
    pub async fn disable_endpoint(&self, tenant: &str, url: &str, reason: &str, at: Timestamp) -> Result<bool, StoreError> {
        let was = self.disabled_endpoint(tenant, url).await?;
        if was.is_some() {
            return Ok(false);
        }
        let sql = "UPSERT type::record('webhook_endpoint', [$t, $u]) CONTENT { tenant: $t, url: $u, reason: $r, disabled_at: $at }";
        self.run("disable webhook endpoint", sql, json!({ "t": tenant, "u": url, "r": reason, "at": at.to_string() })).await?;
        Ok(true)
    }

    /// Whether (why and since when) `url` is disabled for `tenant`.
    pub async fn disabled_endpoint(&self, tenant: &str, url: &str) -> Result<Option<DisabledEndpoint>, StoreError> {
        let sql = "SELECT url, reason, disabled_at FROM type::record('webhook_endpoint', [$t, $u])";
        let rows: Vec<DisabledEndpoint> = self.rows("read webhook endpoint", sql, json!({ "t": tenant, "u": url })).await?;
        Ok(rows.into_iter().next())
    }

    /// Every disabled endpoint of `tenant`, oldest first.
    pub async fn disabled_endpoints(&self, tenant: &str) -> Result<Vec<DisabledEndpoint>, StoreError> {
        check_tenant(tenant)?;
        let sql = "SELECT url, reason, disabled_at FROM webhook_endpoint WHERE tenant = $t ORDER BY disabled_at, url";
        self.rows("list webhook endpoints", sql, json!({ "t": tenant })).await
    }

    /// Enables `url` again; returns whether it was disabled.
    pub async fn enable_endpoint(&self, tenant: &str, url: &str) -> Result<bool, StoreError> {
        let sql = "DELETE type::record('webhook_endpoint', [$t, $u]) RETURN BEFORE";
        let rows: Vec<serde_json::Value> = self.rows("enable webhook endpoint", sql, json!({ "t": tenant, "u": url })).await?;
        Ok(!rows.is_empty())
    }
}
