//! The API's settings (`[api]`) and its admin token.

use std::path::{Path, PathBuf};

use herald_schemas::Secret;
use serde::{Deserialize, Serialize};

/// The admin API's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address `herald up` and `herald api` listen on; empty turns the API off.
    pub listen: String,
    /// Where the `herald directory` commands find the API.
    pub url: String,
    /// The bearer token. When unset, the server makes one at start and writes it to
    /// `token_file`, where the `herald directory` commands read it.
    pub admin_token: Option<Secret>,
    pub token_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            url: "http://127.0.0.1:8080".into(),
            admin_token: None,
            token_file: PathBuf::from("data/admin-token"),
        }
    }
}

impl ApiConfig {
    /// The configured token, or the one in `token_file`.
    pub fn token(&self) -> std::io::Result<Secret> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let text = std::fs::read_to_string(&self.token_file).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "no admin token: set api.admin_token (HERALD__API__ADMIN_TOKEN) or start `herald up`, which writes one to {} ({e})",
                    self.token_file.display()
                ),
            )
        })?;
        Ok(Secret::new(text.trim()))
    }

    /// The configured token, or a new random one written to `token_file` (mode 0600).
    pub fn token_or_generate(&self) -> std::io::Result<Secret> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        write_private(&self.token_file, &token)?;
        Ok(Secret::new(token))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}
