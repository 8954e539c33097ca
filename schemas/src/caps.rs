//! Frequency caps: how many deliveries a user (or a tenant) gets per window.
//!
//! Defaults come from the configuration (`[[throttle.caps]]`); a tenant's own list, set through
//! the admin API (`PUT /v1/tenants/{t}/caps`), replaces them for that tenant. Throttle counts
//! every delivery a cap applies to in NATS, so all its replicas share one count.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::request::parse_duration;
use crate::{Channel, ValidationError};

/// Most deliveries a sliding window may count: it remembers each one.
pub const MAX_SLIDING_LIMIT: u32 = 1_000;

/// Longest window of a cap.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// One frequency cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// Named in the `throttled` and `deferred` events it causes, e.g. `user-hourly`.
    pub name: String,
    /// What is counted together.
    pub scope: CapScope,
    /// The channels it applies to, each counted on its own; empty means every channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// For `user_category`: the categories it applies to, each counted on its own; empty means
    /// every category. Deliveries without a category are not counted by `user_category` caps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Deliveries let through per window.
    pub limit: u32,
    /// The window, e.g. `1h`, `24h`, `10m` (1 s to 7 days).
    pub window: String,
    /// Fixed windows start on multiples of the window (since the Unix epoch, UTC); a sliding
    /// window is the last `window` before now.
    #[serde(default)]
    pub kind: WindowKind,
    /// What happens to a delivery over the cap.
    #[serde(default)]
    pub policy: CapPolicy,
}

/// What a cap counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapScope {
    /// Per user and channel. `critical` deliveries are not counted.
    User,
    /// Per user, category and channel. `critical` deliveries are not counted.
    UserCategory,
    /// Per tenant and channel, every priority included.
    Tenant,
}

/// How a cap's window moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    #[default]
    Fixed,
    Sliding,
}

/// What happens to a delivery over a cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapPolicy {
    /// Dropped: a `throttled` event names the cap.
    #[default]
    Throttle,
    /// Deferred to when the window lets it through: a `deferred` event with `deferred_until`.
    Defer,
}

/// A tenant's caps, as set through the admin API. They replace the configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "TenantCaps", extend("$id" = "urn:herald:schema:v1:tenant-caps"))]
pub struct TenantCaps {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// The caps; an empty list means no caps at all for the tenant.
    pub caps: Vec<Cap>,
}

impl Cap {
    /// The window as a duration (validated by [`Cap::validate`]).
    pub fn window(&self) -> Duration {
        parse_duration("window", &self.window).unwrap_or(MAX_WINDOW)
    }

    /// Whether the cap counts a delivery on `channel` with `category`, sent with `priority`.
    pub fn applies(&self, channel: Channel, category: Option<&str>, critical: bool) -> bool {
        if critical && self.scope != CapScope::Tenant {
            return false;
        }
        if !self.channels.is_empty() && !self.channels.contains(&channel) {
            return false;
        }
        match self.scope {
            CapScope::UserCategory => category.is_some_and(|c| self.categories.is_empty() || self.categories.iter().any(|k| k == c)),
            CapScope::User | CapScope::Tenant => true,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |detail: String| Err(ValidationError::new("invalid_cap", detail));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return bad(format!("cap name {:?} must be 1–64 letters, digits, `_` or `-`", self.name));
        }
        let window = parse_duration("window", &self.window).map_err(|e| ValidationError::new("invalid_cap", e.detail))?;
        if window < Duration::from_secs(1) || window > MAX_WINDOW {
            return bad(format!("cap {}: window {:?} must be between 1s and 7 days", self.name, self.window));
        }
        if self.limit == 0 {
            return bad(format!(
                "cap {}: limit must be at least 1 (remove the channel from the user's preferences to send none)",
                self.name
            ));
        }
        if self.kind == WindowKind::Sliding && self.limit > MAX_SLIDING_LIMIT {
            return bad(format!(
                "cap {}: a sliding window remembers every delivery it counts, so its limit is at most {MAX_SLIDING_LIMIT}; use a fixed window",
                self.name
            ));
        }
        if !self.categories.is_empty() && self.scope != CapScope::UserCategory {
            return bad(format!("cap {}: `categories` only applies to scope `user_category`", self.name));
        }
        Ok(())
    }
}

impl TenantCaps {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut names = std::collections::BTreeSet::new();
        for cap in &self.caps {
            cap.validate()?;
            if !names.insert(cap.name.as_str()) {
                return Err(ValidationError::new("invalid_cap", format!("two caps are named {:?}", cap.name)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(json: &str) -> Result<Cap, String> {
        let cap: Cap = serde_json::from_str(json).map_err(|e| e.to_string())?;
        cap.validate().map_err(|e| e.code.to_owned())?;
        Ok(cap)
    }

    #[test]
    fn validation() {
        assert!(cap(r#"{"name":"hourly","scope":"user","limit":5,"window":"1h"}"#).is_ok());
        assert!(cap(r#"{"name":"promo","scope":"user_category","categories":["marketing"],"limit":1,"window":"24h","kind":"sliding","policy":"defer"}"#).is_ok());
        assert_eq!(cap(r#"{"name":"x","scope":"user","limit":0,"window":"1h"}"#).unwrap_err(), "invalid_cap");
        assert_eq!(cap(r#"{"name":"x","scope":"user","limit":1,"window":"8d"}"#).unwrap_err(), "invalid_cap");
        assert_eq!(cap(r#"{"name":"x","scope":"user","limit":1,"window":"often"}"#).unwrap_err(), "invalid_cap");
        assert_eq!(cap(r#"{"name":"x y","scope":"user","limit":1,"window":"1h"}"#).unwrap_err(), "invalid_cap");
        assert_eq!(cap(r#"{"name":"x","scope":"user","limit":5000,"window":"1h","kind":"sliding"}"#).unwrap_err(), "invalid_cap");
        assert_eq!(cap(r#"{"name":"x","scope":"tenant","categories":["a"],"limit":1,"window":"1h"}"#).unwrap_err(), "invalid_cap");
        assert!(cap(r#"{"name":"x","scope":"user","limit":1,"window":"1h","colour":"red"}"#).is_err());
        let two = TenantCaps { v: 1, caps: vec![cap(r#"{"name":"a","scope":"user","limit":1,"window":"1h"}"#).unwrap(); 2] };
        assert_eq!(two.validate().unwrap_err().code, "invalid_cap");
    }

    #[test]
    fn which_deliveries_a_cap_counts() {
        let user = cap(r#"{"name":"u","scope":"user","channels":["sms"],"limit":1,"window":"1h"}"#).unwrap();
        assert!(user.applies(Channel::Sms, None, false));
        assert!(!user.applies(Channel::Email, None, false), "other channel");
        assert!(!user.applies(Channel::Sms, None, true), "critical bypasses user caps");
        let tenant = cap(r#"{"name":"t","scope":"tenant","limit":1,"window":"1h"}"#).unwrap();
        assert!(tenant.applies(Channel::Sms, None, true), "nothing bypasses a tenant cap");
        let category = cap(r#"{"name":"c","scope":"user_category","categories":["marketing"],"limit":1,"window":"1h"}"#).unwrap();
        assert!(category.applies(Channel::Email, Some("marketing"), false));
        assert!(!category.applies(Channel::Email, Some("billing"), false));
        assert!(!category.applies(Channel::Email, None, false));
    }
}
