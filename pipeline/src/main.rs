//! `herald`: the notification pipeline's command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use herald_schemas::{Channel, Route};

use herald::app::StageKind;
use herald::cli::{attachments, caps, directory, events, opt_outs, providers, sandbox, send, serve, templates, webhooks};
use herald::{bench, config, demo};

/// Every message allocates its buffers and JSON; mimalloc keeps that off the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Herald: notifications to push, SMS, voice, e-mail, web push, webhooks and in-app inboxes,
/// never lost, never sent twice, through stateless stages on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Configuration file. Default: `herald.toml` in the working directory, when present.
    /// Every key can also be set as HERALD__<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,

    /// Log filter, e.g. `info`, `herald_nats=debug`. Default: `info` for `up` and `stage`,
    /// `warn` for the other commands.
    #[arg(long, global = true, env = "HERALD_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run every stage in this process. Provisions the topology first; when no NATS URL is
    /// configured and none answers locally, starts the installed nats-server with its data
    /// under ./data. Stops gracefully on Ctrl-C or SIGTERM.
    Up,

    /// Run some stages (one or more), to scale out: any number of processes may run the same
    /// stage; they share its durable consumer and each message goes to one of them.
    Stage {
        /// Which stages.
        #[arg(value_enum, required = true, num_args = 1..)]
        names: Vec<StageKind>,
        /// For `deliver`: only these channels' routes (repeatable). Default: every enabled channel.
        #[arg(long = "channel", value_name = "CHANNEL")]
        channels: Vec<Channel>,
        /// For `deliver`: only these routes (repeatable): apns, fcm, web_push, sms, voice, email,
        /// webhook, in_app, log. An APNs outage then stalls only the processes serving apns.
        #[arg(long = "route", value_name = "ROUTE")]
        routes: Vec<Route>,
    },

    /// Run only the admin API (the directory: users, devices, preferences, groups, import; and
    /// templates).
    Api,

    /// Manage the directory through the admin API: users, devices, preferences, groups,
    /// members, and JSONL import.
    Directory(directory::DirectoryArgs),

    /// Templates: check and publish a directory of them as new immutable versions, list, show,
    /// and preview with sample data.
    Templates(templates::TemplatesArgs),

    /// Create or update every stream, consumer and KV bucket, and report drift.
    /// Safe to run any number of times.
    Provision,

    /// Publish a notification request (in its priority's lane) and print its notification id.
    Send(send::SendArgs),

    /// Cancel a scheduled or deferred notification before it is sent: a `cancelled` event,
    /// nothing sent. Deliveries already past throttle are not stopped.
    Cancel(send::CancelArgs),

    /// A tenant's frequency caps through the admin API: show (its own or the defaults), set
    /// from a JSON file, reset to the defaults.
    Caps(caps::CapsArgs),

    /// A tenant's provider credentials through the admin API (APNs keys, FCM service accounts,
    /// VAPID keys, the webhook signing secret, Twilio and Vonage accounts, SMTP relays, SendGrid
    /// API keys, the inbox signing secret): list (secrets redacted), set from a JSON file,
    /// delete. Stored sealed.
    Providers(providers::ProvidersArgs),

    /// A tenant's disabled webhook endpoints (their receiver answered 410 Gone) through the admin
    /// API: list them, enable one again.
    Webhooks(webhooks::WebhooksArgs),

    /// A tenant's recorded opt-outs (recipients who replied STOP to an SMS) through the admin
    /// API: list them, remove one when the recipient opts back in.
    OptOuts(opt_outs::OptOutsArgs),

    /// A tenant's attachment store through the admin API: upload a file (streamed, with
    /// progress) to attach by its key, or delete one before its retention ends.
    Attachments(attachments::AttachmentsArgs),

    /// Run the APNs, FCM, web push, Twilio, Vonage, SMTP and SendGrid sandboxes (local servers
    /// speaking the real protocols over TLS) and write what Herald needs to use them: the CA, a tenant's credential files, a
    /// browser subscription and a config file. Serves until Ctrl-C, then prints what it received.
    Sandbox(sandbox::SandboxArgs),

    /// Read the tracking stream.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },

    /// One notification's whole timeline, read from the tracking stream: its own events
    /// (accepted, scheduled, rejected …) and each delivery's, stage by stage, retries, receipts
    /// and redials included, with times from the first event.
    Trace {
        /// The notification id (what `herald send` printed, or an event's `notification_id`).
        notification: uuid::Uuid,
        /// The notification's tenant.
        #[arg(long, default_value = "acme", value_parser = herald::cli::parse_tenant)]
        tenant: String,
        /// Print the events as a JSON array instead.
        #[arg(long)]
        json: bool,
    },

    /// Delivery figures per template, channel, provider or category over a time range, folded
    /// from the tracking stream: deliveries, sent, delivered, undelivered (or bounced), failed,
    /// opened and clicked; delivery, failure, open and click rates; latency from accepted to
    /// sent and to delivered (p50/p99, ms). A delivery counts once however often it was
    /// reported.
    Stats {
        /// The tenant.
        #[arg(long, default_value = "acme", value_parser = herald::cli::parse_tenant)]
        tenant: String,
        /// Events from this time: RFC 3339 (`2026-12-01T00:00:00Z`) or a duration back from now
        /// (`90m`, `24h`, `7days`).
        #[arg(long, default_value = "24h", value_parser = events::parse_time)]
        since: herald_schemas::Timestamp,
        /// Events before this time (same forms); now when absent.
        #[arg(long, value_parser = events::parse_time)]
        until: Option<herald_schemas::Timestamp>,
        /// What to group by, comma-separated: template, channel, provider, category.
        #[arg(long, value_delimiter = ',', default_value = "template,channel")]
        by: Vec<herald_track::stats::GroupBy>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// The notification log in the store.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },

    /// Queue depth per stage and priority lane: pending, ack-pending and redelivered messages per
    /// consumer, and messages per stream (the dead-letter stream included).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only consumers with something pending, unacknowledged or redelivered.
        #[arg(long)]
        busy: bool,
    },

    /// The end-to-end demo: start NATS if needed, provision, run every stage, send sample
    /// notifications with a progress bar and print what the tracking stream reports.
    Demo {
        /// How many notifications to send.
        #[arg(long, default_value_t = 200)]
        count: usize,
    },

    /// Drive the pipeline flat out on a fresh temporary nats-server and compare it with raw
    /// JetStream through the same number of hops, measured in the same run.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Read the whole tracking stream into the log again (its `log` consumer starts over from
    /// the oldest event kept): after restoring the store from a backup, or to check the log.
    /// Writes are idempotent, so rows already there stay as they are. Track must be running.
    Replay,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Follow the tracking stream, one JSON event per line.
    Tail {
        /// Only this tenant (`*` for every tenant).
        #[arg(long, default_value = "*", value_parser = parse_tenant_filter)]
        tenant: String,
        /// Only this status (accepted, rejected, sent, failed, dead_lettered, …).
        #[arg(long, default_value = "*")]
        status: String,
        /// Only events of this notification.
        #[arg(long)]
        notification: Option<uuid::Uuid>,
        /// Start from the oldest event the stream holds instead of new ones.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Write a tenant's events over a time range to a file (or stdout) as JSON lines, CSV or
    /// Parquet, for analysts' tools; progress on stderr.
    Export {
        /// The tenant.
        #[arg(long, default_value = "acme", value_parser = herald::cli::parse_tenant)]
        tenant: String,
        /// Events from this time: RFC 3339 or a duration back from now (`24h`, `7days`).
        #[arg(long, default_value = "24h", value_parser = events::parse_time)]
        since: herald_schemas::Timestamp,
        /// Events before this time (same forms); now when absent.
        #[arg(long, value_parser = events::parse_time)]
        until: Option<herald_schemas::Timestamp>,
        /// Only this status (accepted, sent, delivered, failed, …).
        #[arg(long, default_value = "*")]
        status: String,
        /// `jsonl` (one event per line, as on the stream), `csv` (a header, one row per event)
        /// or `parquet` (one column per field; needs --out).
        #[arg(long, value_enum, default_value_t = events::ExportFormat::Jsonl)]
        format: events::ExportFormat,
        /// The file to write; stdout when absent.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::Up | Command::Stage { .. } | Command::Api) { "info" } else { "warn" };
    let filter = cli.log.as_deref().unwrap_or(default_filter);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Blocking work (the log channel's file writes) gets a small pool: hundreds of threads
    // contending for two cores help nobody.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(32).build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => Err(anyhow::anyhow!("cannot start the async runtime: {error}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A tenant filter: `*`, or a tenant id.
fn parse_tenant_filter(tenant: &str) -> Result<String, String> {
    if tenant == "*" { Ok(tenant.to_owned()) } else { herald::cli::parse_tenant(tenant) }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::Config::load(cli.config.as_deref())?;
    if let Err(problems) = config.check() {
        anyhow::bail!("the configuration contradicts itself:\n  - {}", problems.join("\n  - "));
    }
    match cli.command {
        Command::Up => serve::up(&config).await,
        Command::Stage { names, channels, routes } => serve::stage(&config, &names, channels, routes).await,
        Command::Api => serve::api(&config).await,
        Command::Directory(args) => directory::run(&config, args).await,
        Command::Templates(args) => templates::run(&config, args).await,
        Command::Provision => serve::provision(&config).await,
        Command::Send(args) => send::send(&config, args).await,
        Command::Cancel(args) => send::cancel(&config, args).await,
        Command::Caps(args) => caps::run(&config, args).await,
        Command::Providers(args) => providers::run(&config, args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Webhooks(args) => webhooks::run(&config, args).await,
        Command::OptOuts(args) => opt_outs::run(&config, args).await,
        Command::Attachments(args) => attachments::run(&config, args).await,
        Command::Events { command: EventsCommand::Tail { tenant, status, notification, from_start, count } } => {
            events::tail(&config, &tenant, &status, notification, from_start, count).await
        }
        Command::Events { command: EventsCommand::Export { tenant, since, until, status, format, out } } => {
            events::export(&config, &tenant, since, until, &status, format, out.as_deref()).await
        }
        Command::Stats { tenant, since, until, by, json } => events::stats(&config, &tenant, since, until, by, json).await,
        Command::Log { command: LogCommand::Replay } => events::replay_log(&config).await,
        Command::Status { json, busy } => events::status(&config, json, busy).await,
        Command::Trace { notification, tenant, json } => events::trace(&config, &tenant, notification, json).await,
        Command::Demo { count } => demo::run(&config, count).await,
        Command::Bench(args) => bench::run(&config, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every subcommand's arguments are consistent (clap checks names, conflicts and help).
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
