//! The file directory: users from a TOML file, held in memory. It stands in until the store
//! capability brings SurrealDB.

use std::collections::HashMap;
use std::path::Path;

use herald_enrich::{Directory, User};
use herald_stage::PortError;
use serde::Deserialize;

/// The built-in sample directory.
pub const SAMPLE: &str = include_str!("../../config/directory.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    users: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    tenant: String,
    id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
}

/// Users by (tenant, id).
#[derive(Debug, Clone, Default)]
pub struct FileDirectory {
    users: HashMap<(String, String), User>,
}

impl FileDirectory {
    /// Parses a directory document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut directory = FileDirectory::default();
        for Entry { tenant, id, name, email, phone, locale, timezone } in file.users {
            let user = User { id, name, email, phone, locale, timezone };
            let key = (tenant.clone(), user.id.clone());
            if directory.users.insert(key, user).is_some() {
                return Err(format!("user listed twice in tenant `{tenant}`"));
            }
        }
        Ok(directory)
    }

    /// Loads a directory file, or the sample when `path` is `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (text, name) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read directory file {}: {e}", path.display()))?,
                path.display().to_string(),
            ),
            None => (SAMPLE.to_owned(), "the sample directory".to_owned()),
        };
        Self::parse(&text).map_err(|e| anyhow::anyhow!("directory {name} is invalid: {e}"))
    }

    /// A directory of `count` users `user-0`… in `tenant` (for the benchmark and the demo).
    pub fn generated(tenant: &str, count: usize) -> Self {
        let users = (0..count)
            .map(|i| {
                let id = format!("user-{i}");
                let user = User { id: id.clone(), name: Some(format!("User {i}")), locale: Some("en-US".into()), ..User::default() };
                ((tenant.to_owned(), id), user)
            })
            .collect();
        FileDirectory { users }
    }
}

impl Directory for FileDirectory {
    async fn user(&self, tenant: &str, id: &str) -> Result<Option<User>, PortError> {
        Ok(self.users.get(&(tenant.to_owned(), id.to_owned())).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sample_parses_and_scopes_users_by_tenant() {
        let directory = FileDirectory::load(None).unwrap();
        assert!(directory.user("acme", "alice").await.unwrap().is_some());
        assert!(directory.user("globex", "alice").await.unwrap().is_none());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let twice = "[[users]]\ntenant='a'\nid='x'\n[[users]]\ntenant='a'\nid='x'\n";
        assert!(FileDirectory::parse(twice).unwrap_err().contains("twice"));
        assert!(FileDirectory::parse("[[users]]\ntenant='a'\nid='x'\nshoe=1").unwrap_err().contains("shoe"));
    }
}
