//! `herald sandbox`: the APNs, FCM, web push, Twilio, Vonage, SMTP and SendGrid sandboxes as a
//! process beside Herald, for trying real push, SMS, calls and e-mail without Apple's, Google's,
//! a browser vendor's, Twilio's, Vonage's or SendGrid's accounts. It generates one tenant's
//! accounts, writes everything Herald needs into a directory (the CA, the credential files
//! `herald providers set` takes, a browser subscription, a config file) and serves until
//! Ctrl-C or SIGTERM, then prints what each sandbox received.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use herald_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::parse_tenant;
use crate::app;

/// Options of `herald sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Where to write the CA, the credential files, a browser subscription and the config file
    /// (`ca.pem`, `apns.json`, `fcm.json`, `web_push.json`, `twilio.json`, `vonage.json`,
    /// `smtp.json`, `sendgrid.json`, `subscription.json`, `herald.toml`, and `sandbox.json` with the
    /// URLs, written last).
    #[arg(long, default_value = "data/sandbox")]
    dir: PathBuf,
    /// The tenant whose accounts are generated (the credential files are its).
    #[arg(long, default_value = "acme", value_parser = parse_tenant)]
    tenant: String,
    /// The iOS app's bundle id, the APNs topic of the generated key (the default is the one
    /// of the sample directory's iPhone).
    #[arg(long, default_value = "com.example.acme")]
    topic: String,
    /// The address the servers listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The APNs sandbox's port (HTTP/2 over TLS only); 0: any free port.
    #[arg(long, default_value_t = 47443)]
    apns_port: u16,
    /// The FCM sandbox's port (messages:send and the OAuth token endpoint); 0: any free port.
    #[arg(long, default_value_t = 47444)]
    fcm_port: u16,
    /// The web push service's port; 0: any free port.
    #[arg(long, default_value_t = 47445)]
    web_push_port: u16,
    /// The Twilio sandbox's port (Messages and Calls, status callbacks posted back); 0: any free port.
    #[arg(long, default_value_t = 47446)]
    twilio_port: u16,
    /// The Vonage SMS sandbox's port; 0: any free port.
    #[arg(long, default_value_t = 47447)]
    vonage_port: u16,
    /// The SMTP server's port (STARTTLS, AUTH); 0: any free port.
    #[arg(long, default_value_t = 47525)]
    smtp_port: u16,
    /// The SendGrid Mail Send sandbox's port; 0: any free port.
    #[arg(long, default_value_t = 47448)]
    sendgrid_port: u16,
    /// Herald's API, where receipts go: SendGrid's signed events are posted to
    /// `<url>/v1/receipts/sendgrid/<tenant>`, and the written herald.toml names
    /// `<url>/v1/receipts/twilio` as Twilio's status callback. Empty: no receipts.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    receipts_to: String,
    /// Added to every answer, as a real service's round trip (e.g. `5ms`).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
}

/// `herald sandbox`.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let options = SandboxOptions {
        bind: args.bind,
        apns_port: args.apns_port,
        fcm_port: args.fcm_port,
        web_push_port: args.web_push_port,
        twilio_port: args.twilio_port,
        vonage_port: args.vonage_port,
        smtp_port: args.smtp_port,
        sendgrid_port: args.sendgrid_port,
        latency: args.latency,
        ..SandboxOptions::default()
    };
    let sandbox = Sandbox::start(options).await.with_context(|| {
        format!(
            "cannot start the sandboxes on {} ports {}, {}, {}, {}, {}, {} and {} (another sandbox running? pick other ports with --apns-port, --fcm-port, --web-push-port, --twilio-port, --vonage-port, --smtp-port, --sendgrid-port, or 0 for any)",
            args.bind,
            args.apns_port,
            args.fcm_port,
            args.web_push_port,
            args.twilio_port,
            args.vonage_port,
            args.smtp_port,
            args.sendgrid_port
        )
    })?;
    let receipts = args.receipts_to.trim_end_matches('/').to_owned();
    if !receipts.is_empty() {
        sandbox.sendgrid_event_webhook(&format!("{receipts}/v1/receipts/sendgrid/{}", args.tenant));
    }
    let written = write_files(&sandbox, &args)?;

    println!("Provider sandboxes for tenant {} (each run makes new accounts):", args.tenant);
    println!("  APNs      {}  (HTTP/2, topic {})", sandbox.apns_url(), args.topic);
    println!("  FCM       {}  (OAuth tokens at {})", sandbox.fcm_url(), sandbox.fcm_token_url());
    println!("  web push  {}", sandbox.web_push_origin());
    println!("  Twilio    {}  (SMS and calls; number +15005550006)", sandbox.twilio_url());
    println!("  Vonage    {}  (SMS)", sandbox.vonage_url());
    println!("  SMTP      localhost:{}  (STARTTLS, AUTH; messages kept whole)", sandbox.smtp_port());
    println!("  SendGrid  {}  (v3 Mail Send; e-mail failover)", sandbox.sendgrid_url());
    println!("\nWritten to {}:", args.dir.display());
    for (file, what) in &written {
        println!("  {:<18} {what}", file);
    }
    let dir = args.dir.display();
    let tenant = &args.tenant;
    println!("\nPoint Herald at them and give it the credentials:");
    println!("  herald --config {dir}/herald.toml up");
    for provider in ["apns", "fcm", "web_push", "twilio", "vonage", "smtp", "sendgrid"] {
        println!("  herald --config {dir}/herald.toml providers set {provider} {dir}/{provider}.json --tenant {tenant}");
    }
    println!("\nEach server also answers the control API (trust {dir}/ca.pem):");
    println!("  GET    /_sandbox/received[?provider=apns|fcm|web_push|twilio|twilio_voice|vonage|smtp|sendgrid]");
    println!("                                                            every request, accepted or refused, repeats included");
    println!("  DELETE /_sandbox/received                                 forget them");
    println!("  PUT    /_sandbox/faults                                   inject failures (a fault plan, JSON)");
    println!("  GET    /_sandbox/stats                                    connections, provider tokens, access tokens");
    println!("  POST   /_sandbox/subscriptions  (web push)                another browser: {{\"application_server_key\": …}}");
    println!("  POST   /_sandbox/stop           (Twilio)                  {{\"number\": …}} replied STOP: SMS to it answer 21610");
    println!("  POST   /_sandbox/call-outcomes  (Twilio)                  {{\"number\": …, \"outcome\": \"busy\"|\"no-answer\"}}");
    println!("  GET    /_sandbox/callbacks      (Twilio)                  the status callbacks posted, with their X-Twilio-Signature");
    println!("\nServing until Ctrl-C.");

    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    cancel.cancelled().await;
    println!("\nReceived:");
    for (provider, accepted, refused) in crate::sandboxes::counts(&sandbox) {
        println!("  {:<9} {accepted} accepted, {refused} refused", provider.as_str());
    }
    Ok(())
}

/// Writes the files; returns each one's name and what it is for. `sandbox.json` comes last, so
/// a script that waits for it finds the others in place.
fn write_files(sandbox: &Sandbox, args: &SandboxArgs) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, text).with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))
    };
    let accounts = sandbox.accounts(&args.tenant, &args.topic)?;
    let ca = dir.join("ca.pem");
    write("ca.pem", sandbox.ca_pem())?;
    for (provider, credentials) in accounts.each() {
        write(&format!("{provider}.json"), serde_json::to_string_pretty(credentials)?)?;
    }
    let browser = sandbox.web_push_subscribe(Some(&accounts.vapid_public_key));
    let device = json!({ "platform": "web", "subscription": browser.subscription_json() });
    write("subscription.json", serde_json::to_string_pretty(&device)?)?;
    write("herald.toml", config_file(sandbox, &absolute(&ca), args.receipts_to.trim_end_matches('/')))?;
    let urls = json!({
        "tenant": args.tenant,
        "topic": args.topic,
        "apns_url": sandbox.apns_url(),
        "fcm_url": sandbox.fcm_url(),
        "fcm_token_url": sandbox.fcm_token_url(),
        "web_push_origin": sandbox.web_push_origin(),
        "twilio_url": sandbox.twilio_url(),
        "vonage_url": sandbox.vonage_url(),
        "smtp_port": sandbox.smtp_port(),
        "sendgrid_url": sandbox.sendgrid_url(),
        "apns_credential": accounts.apns_credential,
        "vapid_public_key": accounts.vapid_public_key,
    });
    write("sandbox.json", serde_json::to_string_pretty(&urls)?)?;
    Ok(vec![
        ("ca.pem", "the CA that signed the servers' certificate (deliver.tls.extra_ca_file)"),
        ("apns.json", "the tenant's APNs team key, for `herald providers set apns`"),
        ("fcm.json", "its FCM service account, for `herald providers set fcm`"),
        ("web_push.json", "its VAPID key pair, for `herald providers set web_push`"),
        ("twilio.json", "its Twilio account (SMS and calls), for `herald providers set twilio`"),
        ("vonage.json", "its Vonage account (SMS failover), for `herald providers set vonage`"),
        ("smtp.json", "its SMTP relay login (STARTTLS, AUTH), for `herald providers set smtp`"),
        ("sendgrid.json", "its SendGrid API key (e-mail failover), for `herald providers set sendgrid`"),
        ("subscription.json", "a browser subscribed with that VAPID key: `herald directory device put <user> browser --file …`"),
        ("herald.toml", "a config file that points Herald at the sandboxes (push, web push, SMS, voice and e-mail enabled)"),
        ("sandbox.json", "the URLs, for scripts"),
    ])
}

/// The config file: the embedded defaults plus the sandboxes' endpoints and CA, and Twilio's
/// status callback on Herald's API at `receipts` (unless empty).
fn config_file(sandbox: &Sandbox, ca: &Path, receipts: &str) -> String {
    format!(
        r#"# Written by `herald sandbox`: Herald's defaults, delivering push, SMS and calls to the local
# sandboxes.
[enrich]
enabled_channels = ["log", "push", "web_push", "sms", "voice", "email"]
default_channels = ["push", "web_push"]

[deliver.tls]
extra_ca_file = {ca}

[deliver.apns]
production_url = "{apns}"
development_url = "{apns}"

[deliver.fcm]
url = "{fcm}"

[deliver.twilio]
url = "{twilio}"
{callback}
[deliver.vonage]
url = "{vonage}"

[deliver.sendgrid]
url = "{sendgrid}"
eu_url = "{sendgrid}"
"#,
        ca = toml::Value::String(ca.display().to_string()),
        apns = sandbox.apns_url(),
        fcm = sandbox.fcm_url(),
        twilio = sandbox.twilio_url(),
        callback = if receipts.is_empty() { String::new() } else { format!("status_callback = \"{receipts}/v1/receipts/twilio\"\n") },
        vonage = sandbox.vonage_url(),
        sendgrid = sandbox.sendgrid_url(),
    )
}

/// `path` from the working directory, so the config works wherever Herald is started.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
