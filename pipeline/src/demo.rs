//! `herald demo`: the whole pipeline end to end on the embedded defaults, with visible results:
//! the `log` channel's records, push delivered to the APNs, FCM and web push sandboxes, SMS and
//! calls to the Twilio sandbox (Vonage standing by as SMS failover), e-mail to the SMTP sandbox
//! (one recipient's failing over to the SendGrid sandbox), in-app messages to users' inboxes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use herald_sandbox::{Answer, FaultPlan, ProviderKind, Sandbox};
use herald_schemas::Channel;
use herald_schemas::directory::ImportLine;

use crate::app::{self, Resources, StageKind};
use crate::config::Config;

/// The sample directory, imported by the demo.
pub const SAMPLE_DIRECTORY: &str = include_str!("../../config/directory.jsonl");

/// The sample requests the demo cycles through: most are fine; a few show what happens to a
/// malformed request, an unknown user, a channel the deployment does not deliver, a group, and
/// users who opted out.
fn sample(i: usize) -> serde_json::Value {
    let users = ["alice", "bob", "carol", "dave"];
    match i % 50 {
        17 => serde_json::json!({ "template": "welcome" }),
        33 => serde_json::json!({ "template": "welcome", "recipients": [{ "user_id": "mallory" }] }),
        41 => serde_json::json!({ "template": "welcome", "recipients": [{ "user_id": "bob" }], "channels": ["log", "sms"] }),
        // Every other one to carol, whose address the demo's SMTP relay refuses for now (451):
        // her e-mail fails over to SendGrid.
        43 => serde_json::json!({
            "template": "security_alert",
            "recipients": [{ "user_id": if (i / 50).is_multiple_of(2) { "alice" } else { "carol" } }],
            "channels": ["sms", "voice", "email", "in_app"],
            "data": { "device": "an unknown phone", "at": "03:12" },
            "priority": "critical",
            // A small file rides inline; a large one would go by `ref` (`herald attachments put`).
            "attachments": [{ "filename": "sign-in.txt", "content_type": "text/plain", "content": "U2lnbi1pbjogYW4gdW5rbm93biBwaG9uZSBhdCAwMzoxMgo=" }],
        }),
        45 => {
            serde_json::json!({ "template": "security_alert", "recipients": [{ "group": "staff" }], "data": { "device": "a new laptop", "at": "08:15" } })
        }
        47 => serde_json::json!({ "template": "welcome", "recipients": [{ "user_id": "carol" }], "category": "marketing" }),
        49 => serde_json::json!({ "template": "welcome", "recipients": [{ "user_id": "erin" }] }),
        n if n % 3 == 0 => serde_json::json!({
            "template": "order_shipped",
            "recipients": [{ "user_id": users[i % 4] }],
            "data": { "order_id": format!("A-{i:05}"), "items": 1 + i % 3, "eta": "Thursday" },
            "category": "orders",
        }),
        n if n % 3 == 1 => serde_json::json!({
            "template": "security_alert",
            "recipients": [{ "user_id": users[i % 4] }],
            "data": { "device": "Firefox on Linux", "at": "09:41" },
            "priority": "critical",
        }),
        _ => serde_json::json!({
            "template": "welcome",
            "recipients": [{ "user_id": users[i % 4] }, { "user_id": users[(i + 1) % 4] }],
            "data": { "plan": "team" },
        }),
    }
}

/// The address the demo's SMTP relay refuses with a 451, so her e-mail goes through SendGrid.
const FAILOVER_ADDRESS: &str = "carol@example.com";

/// The iOS app of the sample tenant (alice's iPhone in config/directory.jsonl has it).
const DEMO_APP: &str = "com.example.acme";

/// The sample users' other devices, on top of config/directory.jsonl: Android phones for bob and
/// dave, and a browser subscribed to the web push sandbox for everyone but erin.
fn add_demo_devices(lines: &mut [ImportLine], sandbox: &Sandbox, vapid_public_key: &str) -> anyhow::Result<()> {
    for line in lines.iter_mut() {
        if matches!(line.id.as_str(), "bob" | "dave") {
            let token = format!("demo:APA91b-{}-android-registration-token", line.id);
            let phone = serde_json::json!({ "id": "pixel", "platform": "android", "token": token, "app_id": DEMO_APP });
            line.devices.push(serde_json::from_value(phone)?);
        }
        if line.id != "erin" {
            let browser = sandbox.web_push_subscribe(Some(vapid_public_key));
            let device = serde_json::json!({ "id": "browser", "platform": "web", "subscription": browser.subscription_json() });
            line.devices.push(serde_json::from_value(device)?);
        }
    }
    Ok(())
}

pub async fn run(config: &Config, count: usize) -> anyhow::Result<()> {
    // Push, SMS and calls go to the provider sandboxes in this process, over TLS.
    let scratch = tempfile::tempdir()?;
    let mut config = config.clone();
    let sandbox = crate::sandboxes::start(&mut config, scratch.path(), Duration::ZERO).await?;
    for channel in [Channel::Push, Channel::WebPush, Channel::Sms, Channel::Voice, Channel::Email, Channel::InApp] {
        if !config.enrich.enabled_channels.contains(&channel) {
            config.enrich.enabled_channels.push(channel);
        }
    }
    config.enrich.default_channels = vec![Channel::Log, Channel::Push, Channel::WebPush];
    // The API on a free port, for Twilio's status callbacks (receipts) to come back to.
    let api =
        anyhow::Context::context(tokio::net::TcpListener::bind("127.0.0.1:0").await, "cannot listen on 127.0.0.1 for the demo's API")?;
    config.deliver.twilio.status_callback = Some(format!("http://{}/v1/receipts/twilio", api.local_addr()?));
    config.api.admin_token = Some(herald_schemas::Secret::new(uuid::Uuid::new_v4().simple().to_string()));
    let config = &config;
    println!(
        "Provider sandboxes in this process: APNs {}, FCM {}, web push {}, Twilio {}, Vonage {}, SMTP localhost:{}, SendGrid {} (what `herald sandbox` runs on its own).",
        sandbox.apns_url(),
        sandbox.fcm_url(),
        sandbox.web_push_origin(),
        sandbox.twilio_url(),
        sandbox.vonage_url(),
        sandbox.smtp_port(),
        sandbox.sendgrid_url()
    );
    let mut relay = FaultPlan::default();
    relay.tokens.insert(FAILOVER_ADDRESS.into(), Answer::new(451, "4.3.0").with_message("Local error in processing, try again later"));
    sandbox.set_faults(ProviderKind::Smtp, relay);
    println!("The SMTP relay answers 451 for {FAILOVER_ADDRESS}: e-mail to her fails over to SendGrid.");

    let connection = app::connect(config, true).await?;
    let nats = &connection.nats;
    let report = nats.provision().await?;
    let created = report.changes.iter().filter(|c| matches!(c.action, herald_nats::Action::Created)).count();
    println!("Topology provisioned ({created} objects created, {} already in place).", report.changes.len() - created);

    let cancel = CancellationToken::new();
    app::cancel_on_signals(cancel.clone());
    let resources = Resources::load(config, &StageKind::ALL, None).await?;
    if let Some(store) = &resources.store {
        let (mut lines, errors) = herald_schemas::api::parse_import(SAMPLE_DIRECTORY, 1);
        anyhow::ensure!(errors.is_empty(), "the sample directory is invalid: {errors:?}");
        let accounts = crate::sandboxes::register(store, &sandbox, "acme", DEMO_APP).await?;
        add_demo_devices(&mut lines, &sandbox, &accounts.vapid_public_key)?;
        store.import("acme", &lines).await?;
        println!(
            "Directory seeded with {} sample users of tenant acme (config/directory.jsonl, plus Android phones and browsers).",
            lines.len()
        );
        println!(
            "Tenant acme's APNs key, FCM service account, VAPID keys, Twilio, Vonage, SMTP and SendGrid accounts generated and stored (sealed)."
        );
        for published in crate::template_files::publish_samples(store, config, "acme").await? {
            let what = if published.created { "published" } else { "unchanged" };
            println!("Template {} version {} ({what}; config/templates/{}).", published.id, published.version, published.id);
        }
    }
    if let Some(store) = &resources.store {
        crate::cli::serve::serve_api(config, api, store.clone(), nats.clone(), &cancel)?;
        let api = config.deliver.twilio.status_callback.as_deref().unwrap_or_default().trim_end_matches("/v1/receipts/twilio");
        sandbox.sendgrid_event_webhook(&format!("{api}/v1/receipts/sendgrid/acme"));
        println!("Twilio's status callbacks and SendGrid's signed events come back to the API at {api}/v1/receipts.");
    }
    let running = app::start(nats, config, resources, &StageKind::ALL, None, &cancel).await?;
    println!("All {} stage consumers running in this process.", running.stats.len());
    let inbox_before = inbox_total(nats).await?;

    // Follow the tracking stream from now on, so earlier runs' events are not counted.
    let mut events = Box::pin(nats.tail_events("acme", "*", false).await?);
    let bar = ProgressBar::new(count as u64).with_style(
        ProgressStyle::with_template("Publishing {bar:40} {pos}/{len} requests ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let bodies = (0..count).map(|i| Bytes::from(sample(i).to_string()));
    nats.publish_requests("acme", bodies, 256, || bar.inc(1)).await?;
    bar.finish();

    // Two scheduled sends three seconds ahead, held by the NATS server's scheduler; the second
    // is cancelled before it fires.
    let send_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let scheduled = |user: &str| {
        let body = serde_json::json!({ "template": "welcome", "recipients": [{ "user_id": user }], "send_at": send_at.to_string(), "data": { "plan": "team" } });
        Bytes::from(body.to_string())
    };
    let kept = nats.notification_id_of("acme", nats.publish_request("acme", scheduled("alice"), None).await?).await?;
    let dropped = nats.notification_id_of("acme", nats.publish_request("acme", scheduled("dave"), None).await?).await?;
    let cancel_request =
        herald_schemas::CancelRequest { v: herald_schemas::WIRE_VERSION, notification_id: dropped, by: Some("demo".into()) };
    nats.publish_cancel("acme", Bytes::from(serde_json::to_vec(&cancel_request)?)).await?;
    println!("Scheduled notification {kept} for {send_at}, and {dropped} too, then cancelled it.");
    let scheduled_done = send_at + jiff::SignedDuration::from_secs(2);

    let spinner = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} Processing: {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut quiet = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            Ok(Some(event)) => {
                let event = event?;
                *counts.entry(event.status.to_string()).or_default() += 1;
                if let Some(reason) = event.reason.filter(|_| event.status != herald_schemas::Status::Sent) {
                    *reasons.entry(format!("{} / {reason}", event.status)).or_default() += 1;
                }
                quiet = 0;
                spinner.set_message(format!("{} events", counts.values().sum::<u64>()));
            }
            Ok(None) => break,
            Err(_) => {
                quiet += 1;
                if quiet >= 2 && jiff::Timestamp::now() > scheduled_done && app::wait_idle(nats, Duration::ZERO).await? {
                    break;
                }
                if quiet > 120 {
                    anyhow::bail!("the pipeline did not finish within a minute; see `herald status`");
                }
            }
        }
    }
    spinner.finish_and_clear();
    cancel.cancel();
    running.wait(&cancel).await?;
    nats.flush().await?;

    println!("\nWhat the tracking stream reported for the {count} requests and the two scheduled ones:");
    for (status, n) in &counts {
        println!("  {status:<14} {n:>6}");
    }
    if !reasons.is_empty() {
        println!("\nReasons given for everything not sent:");
        for (reason, n) in &reasons {
            println!("  {reason:<40} {n:>6}");
        }
    }
    let dir = &config.deliver.log.dir;
    let records = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0);
    println!("\nThe log channel holds {records} delivery records in {} (one file per delivery).", dir.display());
    if let Some(example) =
        std::fs::read_dir(dir).ok().and_then(|mut d| d.find_map(|e| e.ok().filter(|e| e.path().extension().is_some_and(|x| x == "json"))))
    {
        println!("For example {}:\n  {}", example.path().display(), std::fs::read_to_string(example.path())?.trim());
    }
    println!("\nWhat the provider sandboxes received (their own count, repeats included):");
    for (provider, accepted, refused) in crate::sandboxes::counts(&sandbox) {
        println!("  {:<12} {accepted:>6} accepted {refused:>6} refused", provider.as_str());
    }
    if let Some(push) = sandbox.accepted(ProviderKind::Apns).first() {
        println!("For example, APNs received for device {}…:\n  {}", &push.target[..16.min(push.target.len())], push.payload);
    }
    if let Some(mail) = sandbox.accepted(ProviderKind::Sendgrid).first() {
        println!(
            "SendGrid took over {}'s e-mail {:?} after the relay's 451.",
            mail.target,
            mail.payload["subject"].as_str().unwrap_or_default()
        );
    }
    if let Some(call) = sandbox.accepted(ProviderKind::TwilioVoice).first() {
        println!("And Twilio was asked to call {} with:\n  {}", call.target, call.payload["Twiml"].as_str().unwrap_or_default());
    }
    let inbox = inbox_total(nats).await?.saturating_sub(inbox_before);
    println!("\nIn-app inboxes received {inbox} messages (apps read them with /v1/inbox/acme and a user token).");
    println!("\nNext: `herald up` keeps the pipeline running; `herald send --to alice --template welcome` sends one;");
    println!("      `herald events tail --from-start` follows the tracking stream; `herald status` shows queue depths;");
    println!("      `herald templates preview welcome --dir config/templates --locale ko-KR` renders a template;");
    println!("      `herald sandbox` runs the provider sandboxes for `herald up` (see its --help).");
    Ok(())
}

/// How many messages the sample users' in-app inboxes hold.
async fn inbox_total(nats: &herald_nats::Nats) -> anyhow::Result<u64> {
    let mut total = 0;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        total += nats.inbox_count("acme", user).await?.0;
    }
    Ok(total)
}
