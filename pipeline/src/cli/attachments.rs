//! `herald attachments`: upload a file to a tenant's attachment store (through the admin API,
//! streamed, with progress), or delete one. Requests then attach it by its key.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use reqwest::Method;
use tokio::io::AsyncReadExt;

use super::client::{Client, print};
use super::parse_tenant;
use crate::config::Config;

/// Arguments of `herald attachments`.
#[derive(Debug, clap::Args)]
pub struct AttachmentsArgs {
    /// The tenant.
    #[arg(long, default_value = "acme", value_parser = parse_tenant, global = true)]
    tenant: String,
    #[command(subcommand)]
    command: AttachmentsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AttachmentsCommand {
    /// Upload a file; prints its `ref`, size and SHA-256. Attach it with `herald send --attach
    /// KEY` or `{"filename": ..., "ref": KEY}` in a request.
    Put {
        /// The file.
        file: PathBuf,
        /// The key to store it under (letters, digits, `._-/`). Default: the file's name.
        #[arg(long)]
        key: Option<String>,
    },
    /// Delete a file now instead of after `attachments.retention`.
    Delete {
        /// Its key.
        key: String,
    },
}

/// `herald attachments`.
pub async fn run(config: &Config, args: AttachmentsArgs) -> anyhow::Result<()> {
    let client = Client::new(config, &args.tenant)?;
    match args.command {
        AttachmentsCommand::Put { file, key } => {
            let key = match key {
                Some(key) => key,
                None => file.file_name().map(|n| n.to_string_lossy().into_owned()).context("the file has no name; give --key")?,
            };
            herald_schemas::request::check_attachment_key(&key).map_err(|e| anyhow::anyhow!("{e}; give another --key"))?;
            let opened = tokio::fs::File::open(&file).await.with_context(|| format!("cannot open {}", file.display()))?;
            let size = opened.metadata().await?.len();
            let bar = indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(format!("uploading {key}"));
            let progress = bar.clone();
            let chunks = futures::stream::try_unfold(opened, move |mut file| {
                let progress = progress.clone();
                async move {
                    let mut buffer = vec![0u8; 256 * 1024];
                    let n = file.read(&mut buffer).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(None);
                    }
                    buffer.truncate(n);
                    progress.inc(n as u64);
                    Ok(Some((Bytes::from(buffer), file)))
                }
            });
            let answer = client
                .send(
                    Method::PUT,
                    &format!("/attachments/{key}"),
                    Some(super::client::RequestBody::Stream(reqwest::Body::wrap_stream(chunks))),
                )
                .await;
            bar.finish_and_clear();
            print(answer?)
        }
        AttachmentsCommand::Delete { key } => print(client.send(Method::DELETE, &format!("/attachments/{key}"), None).await?),
    }
}
