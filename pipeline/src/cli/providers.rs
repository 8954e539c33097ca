//! `herald providers`: a tenant's provider credentials, through the admin API.

use anyhow::Context;
use reqwest::Method;

use super::client::{Client, RequestBody, print};
use super::parse_tenant;
use crate::config::Config;

/// Arguments of `herald providers`.
#[derive(Debug, clap::Args)]
pub struct ProvidersArgs {
    /// The tenant.
    #[arg(long, default_value = "acme", value_parser = parse_tenant, global = true)]
    tenant: String,
    #[command(subcommand)]
    command: ProvidersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ProvidersCommand {
    /// List the tenant's credentials (secrets redacted).
    List,
    /// Store credentials for a provider and app. The file is JSON:
    /// apns: {"team_id": "ABCDE12345", "key_id": "KEY1234567", "topic": "com.example.app", "private_key": "<the .p8 file>"};
    /// fcm: {"service_account": <the service-account JSON file Google gives out>};
    /// web_push: {"subject": "mailto:ops@example.com", "public_key": "<base64url>", "private_key": "<base64url>"};
    /// webhook: {"secret": "<at least 32 characters, e.g. from `openssl rand -base64 32`>"};
    /// twilio: {"account_sid": "AC…", "auth_token": "…", "from": "+15005550006"} (or "messaging_service_sid": "MG…");
    /// vonage: {"api_key": "…", "api_secret": "…", "from": "Acme"};
    /// smtp: {"host": "smtp.example.com", "port": 587, "security": "starttls"|"tls"|"none", "username": "…", "password": "…", "from": "Acme <no-reply@acme.example>"};
    /// sendgrid: {"api_key": "SG.…", "from": "Acme <no-reply@acme.example>", "region": "global"|"eu"};
    /// inbox: {"signing_secret": "<at least 32 characters>"}.
    Set {
        /// `apns`, `fcm`, `web_push`, `webhook`, `twilio`, `vonage`, `smtp`, `sendgrid` or `inbox`.
        provider: String,
        /// The credentials file (`-` for standard input).
        file: String,
        /// The app they serve: a bundle id or package name devices name in `app_id`, or
        /// `default` for every app without its own.
        #[arg(long, default_value = "default")]
        app: String,
        /// For APNs: read `private_key` from this .p8 file instead of the JSON.
        #[arg(long)]
        p8: Option<String>,
    },
    /// Remove the credentials of a provider and app.
    Delete {
        provider: String,
        #[arg(long, default_value = "default")]
        app: String,
    },
}

/// `herald providers`.
pub async fn run(config: &Config, args: ProvidersArgs) -> anyhow::Result<()> {
    let client = Client::new(config, &args.tenant)?;
    match args.command {
        ProvidersCommand::List => print(client.send(Method::GET, "/providers", None).await?),
        ProvidersCommand::Set { provider, file, app, p8 } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the credentials from standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let mut body: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))?;
            if let Some(p8) = p8 {
                let key = std::fs::read_to_string(&p8).with_context(|| format!("cannot read the .p8 file {p8}"))?;
                body["private_key"] = serde_json::Value::String(key);
            }
            body["provider"] = serde_json::Value::String(provider.clone());
            let credentials: herald_schemas::Credentials =
                serde_json::from_value(body).with_context(|| format!("{file} is not {provider} credentials (see --help)"))?;
            credentials.validate().with_context(|| format!("{file} would be refused"))?;
            let path = format!("/providers/{provider}/{app}");
            print(client.send(Method::PUT, &path, Some(RequestBody::Json(serde_json::to_value(&credentials)?))).await?)
        }
        ProvidersCommand::Delete { provider, app } => {
            print(client.send(Method::DELETE, &format!("/providers/{provider}/{app}"), None).await?)
        }
    }
}
