//! The directory on SurrealDB: users with their devices and preferences, groups and members.
//!
//! One code path for every deployment: an embedded `surrealkv://` file by default, `mem://` in
//! tests, a remote `ws://` server (TiKV-backed for scale) by configuration. The schema is applied
//! as numbered migrations at start-up, each once, in a transaction.
//!
//! Every record id starts with the tenant: `user:[tenant, id]`, `user_group:[tenant, id]`,
//! `member:[tenant, group, user]`. A user and all their devices are one read; a group's members
//! are one key range, read a page at a time, so a million members never sit in memory at once.

use std::path::PathBuf;

use herald_schemas::directory::{Contact, Device, Group, ImportLine, Preferences, User, check_id};
use herald_schemas::{TemplateSpec, TemplateVersion, Timestamp, ValidationError};
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
    pub password: Option<crate::config::Secret>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "surrealkv://data/store".into(),
            namespace: "herald".into(),
            database: "herald".into(),
            username: None,
            password: None,
        }
    }
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {url}: {detail}. Check `store.url` (surrealkv://dir, mem://, ws://host:port)")]
    Open { url: String, detail: String },
    #[error("store query failed ({what}): {detail}")]
    Query { what: &'static str, detail: String },
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
}

impl StoreError {
    fn query(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Query { what, detail: detail.to_string() }
    }
}

/// The schema, in order. A migration is never edited once released: add a new one.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "directory", include_str!("../migrations/0001_directory.surql")),
    (2, "templates", include_str!("../migrations/0002_templates.surql")),
];

/// Rows per statement for bulk writes.
const BATCH: usize = 500;

/// The directory store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Surreal<Any>,
}

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
    /// Connects, signs in when credentials are configured, and applies pending migrations.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let open_error = |detail: String| StoreError::Open { url: config.url.clone(), detail };
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
        let store = Store { db };
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
        let mut response = query.await.map_err(|e| StoreError::query(what, e))?;
        // In a failed transaction every statement reports an error; the one to show is the
        // statement that failed, not the others' "not executed".
        let mut errors: Vec<(usize, surrealdb::Error)> = response.take_errors().into_iter().collect();
        errors.sort_by_key(|(i, e)| (e.to_string().contains("not executed due to a failed transaction"), *i));
        if let Some((_, error)) = errors.into_iter().next() {
            return Err(StoreError::query(what, error));
        }
        Ok(response)
    }

    async fn run(&self, what: &'static str, sql: &str, vars: Value) -> Result<(), StoreError> {
        self.query(what, sql, vars).await.map(|_| ())
    }

    /// The rows of the last statement.
    async fn rows<T: DeserializeOwned>(&self, what: &'static str, sql: &str, vars: Value) -> Result<Vec<T>, StoreError> {
        let mut response = self.query(what, sql, vars).await?;
        let last = response.num_statements().saturating_sub(1);
        let rows: Vec<Value> = response.take(last).map_err(|e| StoreError::query(what, e))?;
        rows.into_iter().map(|row| serde_json::from_value(row).map_err(|e| StoreError::query(what, e))).collect()
    }

    /// Creates or replaces a user's own fields; their devices and preferences stay.
    pub async fn put_user(&self, tenant: &str, user: &User) -> Result<(), StoreError> {
        check_id("tenant", tenant)?;
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
        check_id("tenant", tenant)?;
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

/// What publishing a template did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub id: String,
    pub version: u32,
    /// False when the upload equals the latest version, which then stays current.
    pub created: bool,
}

/// A template in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub id: String,
    pub latest: u32,
    #[serde(default)]
    pub description: Option<String>,
    pub updated_at: String,
}

#[derive(Deserialize)]
struct VersionRow {
    version: u32,
    published_at: String,
    spec: String,
}

impl VersionRow {
    fn parse(self) -> Result<TemplateVersion, StoreError> {
        let published_at = self.published_at.parse().map_err(|e| StoreError::query("read template", e))?;
        let spec = serde_json::from_str(&self.spec).map_err(|e| StoreError::query("read template", e))?;
        Ok(TemplateVersion { version: self.version, published_at, spec })
    }
}

impl Store {
    /// Publishes `spec` as a new version of its template, unless it equals the latest version.
    /// The caller has checked it (see `herald_render::Engine::check`).
    pub async fn publish_template(&self, tenant: &str, spec: &TemplateSpec) -> Result<Published, StoreError> {
        check_id("tenant", tenant)?;
        spec.validate()?;
        let latest = self.template_versions(tenant, &spec.id).await?.pop();
        if let Some(latest) = &latest
            && latest.spec == *spec
        {
            return Ok(Published { id: spec.id.clone(), version: latest.version, created: false });
        }
        let version = latest.map_or(1, |l| l.version + 1);
        let now = jiff::Timestamp::now().to_string();
        // CREATE fails when the version exists: two concurrent publishers cannot both win.
        let sql = "BEGIN TRANSACTION;
            CREATE type::record('template_version', [$t, $id, $v]) SET tenant = $t, template_id = $id, version = $v,
                published_at = $now, spec = $spec RETURN NONE;
            UPSERT type::record('template', [$t, $id]) SET tenant = $t, template_id = $id, latest = $v,
                description = $description, updated_at = $now RETURN NONE;
            COMMIT TRANSACTION;";
        let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::query("publish template", e))?;
        let mut vars = json!({ "t": tenant, "id": spec.id, "v": version, "now": now, "spec": spec_json });
        if let Some(description) = &spec.description {
            vars["description"] = json!(description);
        }
        self.run("publish template", sql, vars).await?;
        Ok(Published { id: spec.id.clone(), version, created: true })
    }

    /// Every version of a template, oldest first.
    pub async fn template_versions(&self, tenant: &str, id: &str) -> Result<Vec<TemplateVersion>, StoreError> {
        let sql = "SELECT version, published_at, spec FROM template_version:[$t, $id, 0]..=[$t, $id, 2147483647] ORDER BY version";
        let rows: Vec<VersionRow> = self.rows("read template versions", sql, json!({ "t": tenant, "id": id })).await?;
        rows.into_iter().map(VersionRow::parse).collect()
    }

    /// When each version of a template was published, oldest first.
    pub async fn template_index(&self, tenant: &str, id: &str) -> Result<Vec<(u32, Timestamp)>, StoreError> {
        #[derive(Deserialize)]
        struct IndexRow {
            version: u32,
            published_at: String,
        }
        let sql = "SELECT version, published_at FROM template_version:[$t, $id, 0]..=[$t, $id, 2147483647] ORDER BY version";
        let rows: Vec<IndexRow> = self.rows("read template index", sql, json!({ "t": tenant, "id": id })).await?;
        rows.into_iter()
            .map(|r| Ok((r.version, r.published_at.parse().map_err(|e| StoreError::query("read template index", e))?)))
            .collect()
    }

    /// One version of a template.
    pub async fn template_version(&self, tenant: &str, id: &str, version: u32) -> Result<Option<TemplateVersion>, StoreError> {
        let sql = "SELECT version, published_at, spec FROM type::record('template_version', [$t, $id, $v])";
        let rows: Vec<VersionRow> = self.rows("read template version", sql, json!({ "t": tenant, "id": id, "v": version })).await?;
        rows.into_iter().next().map(VersionRow::parse).transpose()
    }

    /// The tenant's templates, by id.
    pub async fn templates(&self, tenant: &str) -> Result<Vec<TemplateSummary>, StoreError> {
        let sql = "SELECT template_id AS id, latest, description, updated_at FROM template:[$t, '']..[$t, {}] ORDER BY id";
        self.rows("list templates", sql, json!({ "t": tenant })).await
    }
}

/// The enrich stage reads the directory through this port.
impl herald_enrich::Directory for Store {
    async fn contacts(&self, tenant: &str, ids: &[String]) -> Result<Vec<Contact>, herald_stage::PortError> {
        Store::contacts(self, tenant, ids).await.map_err(port_error)
    }

    async fn members(&self, tenant: &str, group: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, herald_stage::PortError> {
        Store::members(self, tenant, group, after, limit).await.map_err(port_error)
    }
}

fn port_error(error: StoreError) -> herald_stage::PortError {
    herald_stage::PortError { store: "directory store".into(), detail: error.to_string() }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herald_schemas::Channel;
    use herald_schemas::directory::{Environment, Platform};

    use super::*;

    async fn memory() -> Store {
        Store::open(&StoreConfig { url: "mem://".into(), ..StoreConfig::default() }).await.unwrap()
    }

    fn ios(id: &str) -> Device {
        Device {
            id: id.into(),
            platform: Platform::Ios,
            token: Some("ab".repeat(32)),
            subscription: None,
            app_id: Some("com.example.app".into()),
            environment: Environment::Production,
            voip: false,
            last_seen: None,
            disabled_at: None,
            disabled_reason: None,
        }
    }

    #[tokio::test]
    async fn users_devices_and_preferences_round_trip() {
        let store = memory().await;
        let alice = User { id: "alice".into(), email: Some("alice@example.com".into()), ..User::default() };
        store.put_user("acme", &alice).await.unwrap();
        store.put_device("acme", "alice", &ios("phone")).await.unwrap();
        store.put_device("acme", "alice", &ios("tablet")).await.unwrap();
        store.put_device("acme", "alice", &ios("phone")).await.unwrap();
        let prefs = Preferences { channels: BTreeMap::from([(Channel::Sms, false)]), ..Preferences::default() };
        store.put_preferences("acme", "alice", &prefs).await.unwrap();
        // Replacing the user keeps devices and preferences.
        store.put_user("acme", &User { name: Some("Alice".into()), ..alice.clone() }).await.unwrap();

        let contact = store.contact("acme", "alice").await.unwrap().unwrap();
        assert_eq!(contact.user.name.as_deref(), Some("Alice"));
        assert_eq!(contact.devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["tablet", "phone"]);
        assert_eq!(contact.preferences, prefs);
        assert!(store.contact("globex", "alice").await.unwrap().is_none(), "tenants are separate");

        assert!(store.delete_device("acme", "alice", "tablet").await.unwrap());
        assert!(!store.delete_device("acme", "alice", "tablet").await.unwrap());
        assert!(store.delete_user("acme", "alice").await.unwrap());
        assert!(store.contact("acme", "alice").await.unwrap().is_none());
        assert!(matches!(store.put_device("acme", "alice", &ios("x")).await, Err(StoreError::NotFound { .. })));
    }

    #[tokio::test]
    async fn invalid_input_is_refused_before_the_store() {
        let store = memory().await;
        let bad = User { id: "bob".into(), phone: Some("555-1234".into()), ..User::default() };
        assert!(matches!(store.put_user("acme", &bad).await, Err(StoreError::Invalid(e)) if e.code == "invalid_phone"));
    }

    #[tokio::test]
    async fn members_come_in_pages_in_id_order() {
        let store = memory().await;
        let users: Vec<String> = (0..1234).map(|i| format!("u{i:05}")).collect();
        store.add_members("acme", "staff", &users).await.unwrap();
        store.add_members("acme", "staff", &users[..10]).await.unwrap();
        store.add_members("acme", "other", &users[..5]).await.unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.members("acme", "staff", after.as_deref(), 500).await.unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            seen.extend(page);
        }
        assert_eq!(seen, users, "every member once, in order, across pages");
        assert!(store.remove_member("acme", "staff", "u00003").await.unwrap());
        assert_eq!(store.members("acme", "staff", Some("u00002"), 1).await.unwrap(), ["u00004"]);
        assert!(store.delete_group("acme", "staff").await.unwrap());
        assert!(store.members("acme", "staff", None, 10).await.unwrap().is_empty());
        assert_eq!(store.members("acme", "other", None, 10).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn the_file_store_keeps_its_data_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { url: format!("surrealkv://{}", dir.path().join("store").display()), ..StoreConfig::default() };
        {
            let store = Store::open(&config).await.unwrap();
            store.put_user("acme", &User { id: "alice".into(), email: Some("alice@example.com".into()), ..User::default() }).await.unwrap();
            store.put_device("acme", "alice", &ios("phone")).await.unwrap();
            store.add_members("acme", "staff", &["alice".to_owned()]).await.unwrap();
        }
        // The closed store releases its file lock from a background task: give it a moment.
        let mut reopened = Store::open(&config).await;
        for _ in 0..50 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            reopened = Store::open(&config).await;
        }
        let store = reopened.unwrap();
        let contact = store.contact("acme", "alice").await.unwrap().expect("alice survived");
        assert_eq!(contact.devices.len(), 1);
        assert_eq!(store.members("acme", "staff", None, 10).await.unwrap(), ["alice"]);
        assert!(store.migrate().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn migrations_apply_once() {
        let store = memory().await;
        assert!(store.migrate().await.unwrap().is_empty(), "already applied at open");
    }

    #[tokio::test]
    async fn template_versions_cannot_be_changed_once_published() {
        let store = memory().await;
        let spec: TemplateSpec =
            serde_json::from_value(json!({ "id": "t", "locales": { "default": { "sms": { "body": "one" } } } })).unwrap();
        assert_eq!(store.publish_template("acme", &spec).await.unwrap().version, 1);
        let tamper = "UPDATE type::record('template_version', ['acme', 't', 1]) SET spec = 'changed'";
        let err = store.run("tamper", tamper, json!({})).await.unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
        let again = store.template_version("acme", "t", 1).await.unwrap().unwrap();
        assert_eq!(again.spec, spec);
    }
}
