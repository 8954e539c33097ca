//! `herald caps`: a tenant's frequency caps, through the admin API.

use anyhow::Context;
use reqwest::Method;

use super::client::{Client, RequestBody, print};
use super::parse_tenant;
use crate::config::Config;

/// Arguments of `herald caps`.
#[derive(Debug, clap::Args)]
pub struct CapsArgs {
    /// The tenant.
    #[arg(long, default_value = "acme", value_parser = parse_tenant, global = true)]
    tenant: String,
    #[command(subcommand)]
    command: CapsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CapsCommand {
    /// Print the caps that apply to the tenant and whether they are its own or the defaults.
    Show,
    /// Replace the tenant's caps with a JSON file: {"caps": [{"name": "hourly", "scope": "user",
    /// "limit": 5, "window": "1h", "kind": "fixed", "policy": "defer"}, ...]}. An empty list
    /// means no caps at all.
    Set {
        /// The caps document (`-` for standard input).
        file: String,
    },
    /// Remove the tenant's own caps: the configured defaults apply again.
    Reset,
}

/// `herald caps`.
pub async fn run(config: &Config, args: CapsArgs) -> anyhow::Result<()> {
    let client = Client::new(config, &args.tenant)?;
    match args.command {
        CapsCommand::Show => print(client.send(Method::GET, "/caps", None).await?),
        CapsCommand::Set { file } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the caps from standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let caps: herald_schemas::TenantCaps =
                serde_json::from_str(&text).with_context(|| format!("{file} is not a caps document ({{\"caps\": [...]}})"))?;
            caps.validate().with_context(|| format!("{file} has a cap that would be refused"))?;
            print(client.send(Method::PUT, "/caps", Some(RequestBody::Json(serde_json::to_value(&caps)?))).await?)
        }
        CapsCommand::Reset => print(client.send(Method::DELETE, "/caps", None).await?),
    }
}
