//! Users' marks on their inbox messages (read, seen, archived), by the message's sequence in the
//! inbox stream. The inbox API joins them to the messages it lists and counts unread ones.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Store, StoreError};

/// What a user did with one message; unset fields are not done (yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

/// A mark a user sets or clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxMark {
    Read,
    Seen,
    Archived,
}

impl InboxMark {
    fn field(self) -> &'static str {
        match self {
            InboxMark::Read => "read_at",
            InboxMark::Seen => "seen_at",
            InboxMark::Archived => "archived_at",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Row {
    seq: u64,
    #[serde(flatten)]
    state: InboxState,
}

impl Store {
    /// The marks of the user's messages `seqs`.
    pub async fn inbox_states(&self, tenant: &str, user: &str, seqs: &[u64]) -> Result<HashMap<u64, InboxState>, StoreError> {
        let sql = "SELECT seq, read_at, seen_at, archived_at FROM inbox_state WHERE tenant = $t AND user = $u AND seq IN $s";
        let rows: Vec<Row> = self.rows("read inbox states", sql, json!({ "t": tenant, "u": user, "s": seqs })).await?;
        Ok(rows.into_iter().map(|r| (r.seq, r.state)).collect())
    }

    /// Sets (`on`) or clears a mark on one message; returns its marks after.
    pub async fn inbox_mark(
        &self,
        tenant: &str,
        user: &str,
        seq: u64,
        mark: InboxMark,
        on: bool,
        at: &str,
    ) -> Result<InboxState, StoreError> {
        let field = mark.field();
        let sql = format!(
            "UPSERT type::record('inbox_state', [$t, $u, $s]) MERGE {{ tenant: $t, user: $u, seq: $s, {field}: $v }} RETURN read_at, seen_at, archived_at"
        );
        let value = if on { Some(at) } else { None };
        let rows: Vec<InboxState> = self.rows("mark inbox message", &sql, json!({ "t": tenant, "u": user, "s": seq, "v": value })).await?;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    /// How many of the user's messages from sequence `from` on are read.
    pub async fn inbox_read_count(&self, tenant: &str, user: &str, from: u64) -> Result<u64, StoreError> {
        let sql = "SELECT count() AS n FROM inbox_state WHERE tenant = $t AND user = $u AND seq >= $f AND read_at != NONE GROUP ALL";
        let rows: Vec<serde_json::Value> =
            self.rows("count read inbox messages", sql, json!({ "t": tenant, "u": user, "f": from })).await?;
        Ok(rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0))
    }
}
