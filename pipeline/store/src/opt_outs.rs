//! Opt-outs recipients sent through a provider (an SMS STOP, Twilio 21610), per tenant, channel
//! and address: deliver records them and checks before every SMS; the user's preferences turn
//! the channel off as well, so enrich stops planning it. The admin API lists and removes them
//! (a recipient who texts START again).

use herald_deliver::ports::OptOutRequest;
use herald_schemas::Channel;
use herald_schemas::directory::check_tenant;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Store, StoreError};

/// A recorded opt-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    pub channel: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Who reported it, e.g. `twilio`.
    pub provider: String,
    /// The provider's code, e.g. `21610`.
    pub reason: String,
    pub at: String,
}

impl Store {
    /// Records that the request's address opted out of its channel; with a user, turns the
    /// channel off in their preferences. Returns whether the opt-out is new.
    pub async fn record_opt_out(&self, request: &OptOutRequest) -> Result<bool, StoreError> {
        let OptOutRequest { tenant, user, channel, address, provider, reason, at } = request;
        let (channel, user) = (*channel, user.as_deref());
        let new = self.opt_out(tenant, channel, address).await?.is_none();
        if new {
            let sql = "UPSERT type::record('opt_out', [$t, $c, $a]) CONTENT { tenant: $t, channel: $c, address: $a, user: $u, provider: $p, reason: $r, at: $at }";
            let vars =
                json!({ "t": tenant, "c": channel.as_str(), "a": address, "u": user, "p": provider, "r": reason, "at": at.to_string() });
            self.run("record opt-out", sql, vars).await?;
        }
        if let Some(user) = user
            && let Some(contact) = self.contact(tenant, user).await?
            && contact.preferences.channels.get(&channel) != Some(&false)
        {
            let mut preferences = contact.preferences;
            preferences.channels.insert(channel, false);
            self.put_preferences(tenant, user, &preferences).await?;
        }
        Ok(new)
    }

    /// The opt-out of `address` from `channel`, if there is one.
    pub async fn opt_out(&self, tenant: &str, channel: Channel, address: &str) -> Result<Option<OptOut>, StoreError> {
        let sql = "SELECT channel, address, user, provider, reason, at FROM type::record('opt_out', [$t, $c, $a])";
        let rows: Vec<OptOut> = self.rows("read opt-out", sql, json!({ "t": tenant, "c": channel.as_str(), "a": address })).await?;
        Ok(rows.into_iter().next())
    }

    /// Every opt-out of `tenant`, oldest first.
    pub async fn opt_outs(&self, tenant: &str) -> Result<Vec<OptOut>, StoreError> {
        check_tenant(tenant)?;
        let sql = "SELECT channel, address, user, provider, reason, at FROM opt_out WHERE tenant = $t ORDER BY at, address";
        self.rows("list opt-outs", sql, json!({ "t": tenant })).await
    }

    /// Removes an opt-out (the user's preferences are theirs to change back); returns whether
    /// there was one.
    pub async fn remove_opt_out(&self, tenant: &str, channel: Channel, address: &str) -> Result<bool, StoreError> {
        let sql = "DELETE type::record('opt_out', [$t, $c, $a]) RETURN BEFORE";
        let rows: Vec<serde_json::Value> =
            self.rows("remove opt-out", sql, json!({ "t": tenant, "c": channel.as_str(), "a": address })).await?;
        Ok(!rows.is_empty())
    }
}
