//! `herald opt-outs`: a tenant's recorded opt-outs (SMS STOPs), through the admin API.

use herald_schemas::Channel;
use reqwest::Method;

use super::client::{Client, print};
use super::parse_tenant;
use crate::config::Config;

/// Arguments of `herald opt-outs`.
#[derive(Debug, clap::Args)]
pub struct OptOutsArgs {
    /// The tenant.
    #[arg(long, default_value = "acme", value_parser = parse_tenant, global = true)]
    tenant: String,
    #[command(subcommand)]
    command: OptOutsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OptOutsCommand {
    /// List the addresses that told a provider to stop (Twilio 21610), with who reported it and when.
    List,
    /// Remove an opt-out (the recipient texted START): the next messages to the address are sent.
    /// The user's preferences are left as they are; change them with `herald directory`.
    Remove {
        /// The phone number, in E.164 (e.g. +14155550100).
        address: String,
        /// The channel it opted out of.
        #[arg(long, default_value = "sms")]
        channel: Channel,
    },
}

/// `herald opt-outs`.
pub async fn run(config: &Config, args: OptOutsArgs) -> anyhow::Result<()> {
    let client = Client::new(config, &args.tenant)?;
    match args.command {
        OptOutsCommand::List => print(client.send(Method::GET, "/opt-outs", None).await?),
        OptOutsCommand::Remove { address, channel } => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("channel", channel.as_str())
                .append_pair("address", &address)
                .finish();
            print(client.send(Method::DELETE, &format!("/opt-outs?{query}"), None).await?)
        }
    }
}
