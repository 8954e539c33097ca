//! `herald directory …`: users, devices, preferences, groups and JSONL import, through the
//! admin API (or `--offline` straight into the store).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use herald_schemas::api::{ImportReport, parse_import};

use super::client::{Client, RequestBody, print};
use super::parse_tenant;
use crate::config::Config;

/// Options every directory command takes.
#[derive(Debug, Args)]
pub struct DirectoryArgs {
    /// The tenant.
    #[arg(long, global = true, default_value = "acme", value_parser = parse_tenant)]
    tenant: String,
    #[command(subcommand)]
    command: DirectoryCommand,
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Users: create or replace, read (with devices and preferences), delete.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// A user's devices: add or replace, list, delete.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// A user's preferences: read or replace.
    Prefs {
        #[command(subcommand)]
        command: PrefsCommand,
    },
    /// Groups and their members.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Import users (with devices, preferences and groups) from a JSONL file, one user per line
    /// (schema: schemas/json/import-line.v1.schema.json). Bad lines are reported with their
    /// number and reason; the good ones are applied.
    Import {
        /// The JSONL file, or `-` for standard input.
        file: PathBuf,
        /// Lines per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Write to the store directly instead of through the API (to seed a store no running
        /// process holds, e.g. before the first `herald up`).
        #[arg(long)]
        offline: bool,
    },
}

/// A JSON document given inline or as a file.
#[derive(Debug, Args)]
struct Body {
    /// The JSON document.
    #[arg(long, conflicts_with = "file")]
    json: Option<String>,
    /// A file holding the JSON document.
    #[arg(long)]
    file: Option<PathBuf>,
}

impl Body {
    fn read(&self) -> anyhow::Result<Value> {
        let text = match (&self.json, &self.file) {
            (Some(json), _) => json.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            (None, None) => "{}".to_owned(),
        };
        serde_json::from_str(&text).context("the body is not valid JSON")
    }
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create or replace a user's own fields (devices and preferences stay).
    Put {
        id: String,
        #[command(flatten)]
        body: Body,
    },
    Get {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Add or replace a device, e.g. `--json '{"platform":"ios","token":"…"}'`.
    Put {
        user: String,
        id: String,
        #[command(flatten)]
        body: Body,
    },
    List {
        user: String,
    },
    Delete {
        user: String,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PrefsCommand {
    Get {
        user: String,
    },
    /// Replace, e.g. `--json '{"channels":{"sms":false}}'`.
    Put {
        user: String,
        #[command(flatten)]
        body: Body,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create or rename a group.
    Put {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    Get {
        id: String,
    },
    /// Delete a group and its memberships (not the users).
    Delete {
        id: String,
    },
    /// Add users to a group.
    Add {
        id: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove a user from a group.
    Remove {
        id: String,
        user: String,
    },
    /// List members, a page at a time.
    Members {
        id: String,
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Runs a `herald directory` command.
pub async fn run(config: &Config, args: DirectoryArgs) -> anyhow::Result<()> {
    if let DirectoryCommand::Import { file, batch, offline: true } = &args.command {
        let store = herald_store::Store::open(&config.store).await?;
        return import(Target::Store(&store, &args.tenant), file, (*batch).max(1)).await;
    }
    let client = Client::new(config, &args.tenant)?;
    let json = |v: Value| Some(RequestBody::Json(v));
    match args.command {
        DirectoryCommand::User { command } => match command {
            UserCommand::Put { id, body } => print(client.send(Method::PUT, &format!("/users/{id}"), json(body.read()?)).await?),
            UserCommand::Get { id } => print(client.send(Method::GET, &format!("/users/{id}"), None).await?),
            UserCommand::Delete { id } => print(client.send(Method::DELETE, &format!("/users/{id}"), None).await?),
        },
        DirectoryCommand::Device { command } => match command {
            DeviceCommand::Put { user, id, body } => {
                print(client.send(Method::PUT, &format!("/users/{user}/devices/{id}"), json(body.read()?)).await?)
            }
            DeviceCommand::List { user } => print(client.send(Method::GET, &format!("/users/{user}/devices"), None).await?),
            DeviceCommand::Delete { user, id } => print(client.send(Method::DELETE, &format!("/users/{user}/devices/{id}"), None).await?),
        },
        DirectoryCommand::Prefs { command } => match command {
            PrefsCommand::Get { user } => print(client.send(Method::GET, &format!("/users/{user}/preferences"), None).await?),
            PrefsCommand::Put { user, body } => {
                print(client.send(Method::PUT, &format!("/users/{user}/preferences"), json(body.read()?)).await?)
            }
        },
        DirectoryCommand::Group { command } => match command {
            GroupCommand::Put { id, name } => {
                print(client.send(Method::PUT, &format!("/groups/{id}"), json(json!({ "name": name }))).await?)
            }
            GroupCommand::Get { id } => print(client.send(Method::GET, &format!("/groups/{id}"), None).await?),
            GroupCommand::Delete { id } => print(client.send(Method::DELETE, &format!("/groups/{id}"), None).await?),
            GroupCommand::Add { id, users } => {
                print(client.send(Method::POST, &format!("/groups/{id}/members"), json(json!({ "users": users }))).await?)
            }
            GroupCommand::Remove { id, user } => print(client.send(Method::DELETE, &format!("/groups/{id}/members/{user}"), None).await?),
            GroupCommand::Members { id, after, limit } => {
                let mut path = format!("/groups/{id}/members?limit={limit}");
                if let Some(after) = after {
                    path.push_str(&format!("&after={after}"));
                }
                print(client.send(Method::GET, &path, None).await?)
            }
        },
        DirectoryCommand::Import { file, batch, .. } => import(Target::Api(&client), &file, batch.max(1)).await,
    }
}

/// Where an import goes.
enum Target<'a> {
    Api(&'a Client),
    Store(&'a herald_store::Store, &'a str),
}

async fn import(target: Target<'_>, file: &PathBuf, batch: usize) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let lines: Vec<&str> = text.lines().collect();
    let bar = ProgressBar::new(lines.len() as u64).with_style(
        ProgressStyle::with_template("Importing {bar:40} {pos}/{len} lines ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut report = ImportReport::default();
    for (i, chunk) in lines.chunks(batch).enumerate() {
        let first_line = i * batch + 1;
        let part = match &target {
            Target::Api(client) => {
                let answer = client
                    .send(Method::POST, &format!("/import?first_line={first_line}"), Some(RequestBody::Text(chunk.join("\n"))))
                    .await?;
                serde_json::from_value::<ImportReport>(answer.unwrap_or_default())?
            }
            Target::Store(store, tenant) => {
                let (lines, errors) = parse_import(&chunk.join("\n"), first_line);
                store.import(tenant, &lines).await?;
                ImportReport { imported: lines.len(), errors }
            }
        };
        report.imported += part.imported;
        report.errors.extend(part.errors);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    for error in &report.errors {
        println!("line {}: {}: {}", error.line, error.code, error.detail);
    }
    println!("imported {} users; {} lines rejected", report.imported, report.errors.len());
    Ok(())
}
