//! `herald webhooks`: a tenant's disabled webhook endpoints, through the admin API.

use reqwest::Method;

use super::client::{Client, print};
use super::parse_tenant;
use crate::config::Config;

/// Arguments of `herald webhooks`.
#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    /// The tenant.
    #[arg(long, default_value = "acme", value_parser = parse_tenant, global = true)]
    tenant: String,
    #[command(subcommand)]
    command: WebhooksCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WebhooksCommand {
    /// List the endpoints disabled because their receiver answered 410 Gone, with when and why.
    Disabled,
    /// Enable a disabled endpoint again: its next webhooks are sent.
    Enable {
        /// The endpoint's URL, exactly as the requests name it.
        url: String,
    },
}

/// `herald webhooks`.
pub async fn run(config: &Config, args: WebhooksArgs) -> anyhow::Result<()> {
    let client = Client::new(config, &args.tenant)?;
    match args.command {
        WebhooksCommand::Disabled => print(client.send(Method::GET, "/webhooks/disabled", None).await?),
        WebhooksCommand::Enable { url } => {
            let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("url", &url).finish();
            print(client.send(Method::DELETE, &format!("/webhooks/disabled?{query}"), None).await?)
        }
    }
}
