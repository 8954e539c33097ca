//! The directory aggregate: users with their devices and preferences, groups and members.
//! Implements the enrich stage's [`Directory`] port.

use herald_enrich::Directory;
use herald_schemas::directory::{Contact, Device, Group, ImportLine, Preferences, User, check_id, check_tenant};
use herald_stage::PortError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{BATCH, Store, StoreError};

/// A user row as the store returns it.
#[derive(Deserialize)]
struct Row {
    id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    preferences: Option<Preferences>,
}

impl Row {
    fn into_contact(self) -> Contact {
        Contact {
            user: User { id: self.id, name: self.name, email: self.email, phone: self.phone, locale: self.locale, timezone: self.timezone },
            devices: self.devices,
            preferences: self.preferences.unwrap_or_default(),
        }
    }
}

const USER_FIELDS: &str = "user_id AS id, name, email, phone, locale, timezone, devices, preferences";

impl Store {
    /// Creates or replaces a user's own fields; their devices and preferences stay.
    pub async fn put_user(&self, tenant: &str, user: &User) -> Result<(), StoreError> {
        check_tenant(tenant)?;
        user.validate()?;
        let sql = "UPSERT type::record('user', [$t, $u.id]) SET tenant = $t, user_id = $u.id, name = $u.name, email = $u.email, \
                   phone = $u.phone, locale = $u.locale, timezone = $u.timezone RETURN NONE";
        self.run("put user", sql, json!({ "t": tenant, "u": user })).await
    }

    /// A user with devices and preferences.
    pub async fn contact(&self, tenant: &str, id: &str) -> Result<Option<Contact>, StoreError> {
        Ok(self.contacts(tenant, &[id.to_owned()]).await?.pop())
    }

    /// The users among `ids` that exist, with devices and preferences, in one read.
    pub async fn contacts(&self, tenant: &str, ids: &[String]) -> Result<Vec<Contact>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {USER_FIELDS} FROM array::map($ids, |$i| type::record('user', [$t, $i]))");
        let rows: Vec<Row> = self.rows("read users", &sql, json!({ "t": tenant, "ids": ids })).await?;
        Ok(rows.into_iter().map(Row::into_contact).collect())
    }

    /// Deletes a user and their group memberships. Returns whether the user existed.
    pub async fn delete_user(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE member WHERE tenant = $t AND user_id = $u; DELETE type::record('user', [$t, $u]) RETURN BEFORE";
        let deleted: Vec<Value> = self.rows("delete user", sql, json!({ "t": tenant, "u": id })).await?;
        Ok(!deleted.is_empty())
    }

    /// Adds or replaces one of a user's devices.
    pub async fn put_device(&self, tenant: &str, user: &str, device: &Device) -> Result<(), StoreError> {
        device.validate()?;
        let sql = "UPDATE type::record('user', [$t, $u]) SET devices = array::filter(devices, |$d| $d.id != $device.id) + [$device] RETURN user_id";
        let updated: Vec<Value> = self.rows("put device", sql, json!({ "t": tenant, "u": user, "device": device })).await?;
        if updated.is_empty() {
            return Err(StoreError::NotFound { what: "user", id: user.to_owned() });
        }
        Ok(())
    }

    /// Removes one of a user's devices. Returns whether it existed.
    pub async fn delete_device(&self, tenant: &str, user: &str, device: &str) -> Result<bool, StoreError> {
        let before = self.contact(tenant, user).await?.ok_or_else(|| StoreError::NotFound { what: "user", id: user.to_owned() })?;
        let sql = "UPDATE type::record('user', [$t, $u]) SET devices = array::filter(devices, |$d| $d.id != $id) RETURN NONE";
        self.run("delete device", sql, json!({ "t": tenant, "u": user, "id": device })).await?;
        Ok(before.devices.iter().any(|d| d.id == device))
    }

    /// Replaces a user's preferences.
    pub async fn put_preferences(&self, tenant: &str, user: &str, preferences: &Preferences) -> Result<(), StoreError> {
        let sql = "UPDATE type::record('user', [$t, $u]) SET preferences = $p RETURN user_id";
        let updated: Vec<Value> = self.rows("put preferences", sql, json!({ "t": tenant, "u": user, "p": preferences })).await?;
        if updated.is_empty() {
            return Err(StoreError::NotFound { what: "user", id: user.to_owned() });
        }
        Ok(())
    }

    /// Creates or renames a group.
    pub async fn put_group(&self, tenant: &str, group: &Group) -> Result<(), StoreError> {
        check_tenant(tenant)?;
        check_id("group", &group.id)?;
        let sql = "UPSERT type::record('user_group', [$t, $g.id]) SET tenant = $t, group_id = $g.id, name = $g.name RETURN NONE";
        self.run("put group", sql, json!({ "t": tenant, "g": group })).await
    }

    pub async fn group(&self, tenant: &str, id: &str) -> Result<Option<Group>, StoreError> {
        let sql = "SELECT group_id AS id, name FROM type::record('user_group', [$t, $g])";
        Ok(self.rows("read group", sql, json!({ "t": tenant, "g": id })).await?.pop())
    }

    /// Deletes a group and its memberships. Returns whether it existed.
    pub async fn delete_group(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE member:[$t, $g, '']..[$t, $g, {}]; DELETE type::record('user_group', [$t, $g]) RETURN BEFORE";
        let deleted: Vec<Value> = self.rows("delete group", sql, json!({ "t": tenant, "g": id })).await?;
        Ok(!deleted.is_empty())
    }

    /// Adds users to a group (creating the group when missing), a batch per statement.
    pub async fn add_members(&self, tenant: &str, group: &str, users: &[String]) -> Result<(), StoreError> {
        check_tenant(tenant)?;
        check_id("group", group)?;
        for user in users {
            check_id("user", user)?;
        }
        let sql = "UPSERT type::record('user_group', [$t, $g]) SET tenant = $t, group_id = $g RETURN NONE; \
                   INSERT IGNORE INTO member $rows RETURN NONE";
        for chunk in users.chunks(BATCH) {
            let rows: Vec<Value> =
                chunk.iter().map(|u| json!({ "id": [tenant, group, u], "tenant": tenant, "group_id": group, "user_id": u })).collect();
            self.run("add members", sql, json!({ "t": tenant, "g": group, "rows": rows })).await?;
        }
        Ok(())
    }

    /// Removes a user from a group. Returns whether they were a member.
    pub async fn remove_member(&self, tenant: &str, group: &str, user: &str) -> Result<bool, StoreError> {
        let sql = "DELETE type::record('member', [$t, $g, $u]) RETURN BEFORE";
        let deleted: Vec<Value> = self.rows("remove member", sql, json!({ "t": tenant, "g": group, "u": user })).await?;
        Ok(!deleted.is_empty())
    }

    /// A page of a group's members in id order, strictly after `after`.
    pub async fn members(&self, tenant: &str, group: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        // The range starts at `after` inclusive; ask for one more and drop it.
        let sql = "SELECT VALUE user_id FROM member:[$t, $g, $after]..[$t, $g, {}] LIMIT $n";
        let vars = json!({ "t": tenant, "g": group, "after": after.unwrap_or(""), "n": limit + 1 });
        let mut ids: Vec<String> = self.rows("read members", sql, vars).await?;
        if let Some(after) = after
            && ids.first().is_some_and(|first| first == after)
        {
            ids.remove(0);
        }
        ids.truncate(limit);
        Ok(ids)
    }

    /// Writes validated import lines: users (with devices and preferences when given) and their
    /// group memberships, a batch per statement.
    pub async fn import(&self, tenant: &str, lines: &[ImportLine]) -> Result<(), StoreError> {
        check_tenant(tenant)?;
        let sql = "FOR $l IN $lines {
            UPSERT type::record('user', [$t, $l.id]) SET tenant = $t, user_id = $l.id, name = $l.name, email = $l.email,
                phone = $l.phone, locale = $l.locale, timezone = $l.timezone,
                devices = $l.devices ?? devices, preferences = $l.preferences ?? preferences RETURN NONE;
            FOR $g IN $l.groups ?? [] {
                UPSERT type::record('user_group', [$t, $g]) SET tenant = $t, group_id = $g RETURN NONE;
                UPSERT type::record('member', [$t, $g, $l.id]) SET tenant = $t, group_id = $g, user_id = $l.id RETURN NONE;
            };
        }";
        for chunk in lines.chunks(BATCH) {
            self.run("import", sql, json!({ "t": tenant, "lines": chunk })).await?;
        }
        Ok(())
    }
}

/// The enrich stage reads the directory through this port.
impl Directory for Store {
    async fn contacts(&self, tenant: &str, ids: &[String]) -> Result<Vec<Contact>, PortError> {
        Store::contacts(self, tenant, ids).await.map_err(port_error)
    }

    async fn members(&self, tenant: &str, group: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, PortError> {
        Store::members(self, tenant, group, after, limit).await.map_err(port_error)
    }
}

fn port_error(error: StoreError) -> PortError {
    error.into_port("directory store")
}
