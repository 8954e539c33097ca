//! E-mail over real SMTP and SendGrid: Herald's SMTP client against the SMTP sandbox on TCP
//! (STARTTLS with the sandbox's certificate, AUTH) and its SendGrid client against the Mail Send
//! sandbox over TLS, each answer class as the clients read it; then `herald up` sending e-mail that
//! arrives once per recipient, failing over to SendGrid while the relay is down and returning after
//! the breaker's probe, and a 10 MB attachment by reference. Counts are the sandboxes' own records
//! of what they received, refusals and repeats included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use herald_deliver::http::TlsConfig;
use herald_deliver::ports::memory::MemoryCredentials;
use herald_deliver::providers::sendgrid::{Sendgrid, SendgridConfig};
use herald_deliver::providers::smtp::{Smtp, SmtpConfig};
use herald_deliver::providers::{Class, Provider};
use herald_sandbox::smtp::header;
use herald_sandbox::{Answer, Burst, FaultPlan, ProviderKind, Sandbox, SandboxOptions};
use herald_schemas::providers::{SendgridCredentials, SendgridRegion, SmtpCredentials, SmtpSecurity};
use herald_schemas::{Channel, Content, Credentials, Delivery, Secret, Status};
use herald_tests::{Options, Process, TestEnv, count_statuses};
use reqwest::Method;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);
const MAIL_PROVIDERS: [ProviderKind; 2] = [ProviderKind::Smtp, ProviderKind::Sendgrid];

fn relay(port: u16, password: &str) -> Credentials {
    Credentials::Smtp(SmtpCredentials {
        host: "localhost".into(),
        port: Some(port),
        security: SmtpSecurity::Starttls,
        username: Some("acme-mailer".into()),
        password: Some(Secret::new(password)),
        from: "Acme <no-reply@acme.example>".into(),
    })
}

fn email(n: u128, to: &str) -> Delivery {
    let parts = [("subject", "Your order shipped"), ("text", "It ships today."), ("html", "<p>It ships <b>today</b>.</p>")];
    let headers = [
        ("List-Unsubscribe".to_owned(), "<https://acme.example/u/1>".to_owned()),
        ("List-Unsubscribe-Post".to_owned(), "List-Unsubscribe=One-Click".to_owned()),
    ];
    Delivery {
        channel: Channel::Email,
        address: to.into(),
        content: Some(Content {
            parts: parts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            headers: headers.into(),
            ..Content::default()
        }),
        ..herald_stage::memory::delivery(n)
    }
}

#[tokio::test]
async fn smtp_sends_over_starttls_with_auth_and_reads_every_reply_class() -> anyhow::Result<()> {
    use Class::*;
    let (sandbox, ca, _dir) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    sandbox.smtp_add_account("acme-mailer", "s3cret-password");
    let credentials = Arc::new(MemoryCredentials::default());
    credentials.put("acme", "default", relay(sandbox.smtp_port(), "s3cret-password"));
    let tls = TlsConfig { extra_ca_file: Some(ca) };
    let smtp = Smtp::new(&SmtpConfig::default(), &tls, Duration::from_secs(5), credentials.clone())?;

    let delivery = email(1, "ada@example.com");
    let receipt = smtp.send(&delivery).await?;
    let accepted = sandbox.accepted(ProviderKind::Smtp);
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].message_id.as_deref(), Some(receipt.provider_message_id.as_str()), "the relay's queue id");
    assert_eq!(accepted[0].credential.as_deref(), Some("acme-mailer"), "authenticated");
    let raw = accepted[0].body.clone().unwrap_or_default();
    assert_eq!(header(&raw, "Message-ID"), Some(format!("<{}@acme.example>", delivery.delivery_id)));
    assert_eq!(header(&raw, "Subject").as_deref(), Some("Your order shipped"));
    assert_eq!(header(&raw, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    assert!(header(&raw, "Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")), "{raw}");
    assert!(raw.contains("It ships today.") && raw.contains("<b>today</b>"), "{raw}");
    assert_eq!(sandbox.stats().connections.get("smtp"), Some(&1), "one connection so far");
    // The pool takes a connection back in a task of its own once a send is done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    smtp.send(&email(2, "grace@example.com")).await?;
    assert_eq!(sandbox.stats().connections.get("smtp"), Some(&1), "the pooled connection is reused");

    for (answer, class, code) in [
        (Answer::new(550, "5.1.1").with_message("No such user"), Permanent, "smtp_550"),
        (Answer::new(552, "5.2.2").with_message("Mailbox full"), Permanent, "smtp_552"),
        (Answer::new(452, "4.2.2").with_message("Mailbox over quota, try later"), Outage, "smtp_452"),
        (Answer::new(451, "4.3.0").with_message("Local error"), Outage, "smtp_451"),
    ] {
        let mut plan = FaultPlan::default();
        plan.tokens.insert("bounce@example.com".into(), answer.clone());
        sandbox.set_faults(ProviderKind::Smtp, plan);
        let error = smtp.send(&email(3, "bounce@example.com")).await.expect_err("refused");
        assert_eq!((error.class, error.code.as_str()), (class, code), "{answer:?}: {error}");
    }
    // The relay closing at the greeting (421), a wrong password (535), nobody listening.
    sandbox.set_faults(ProviderKind::Smtp, FaultPlan { outage: true, ..FaultPlan::default() });
    let fresh = Smtp::new(&SmtpConfig::default(), &tls, Duration::from_secs(5), credentials.clone())?;
    let error = fresh.send(&email(4, "ada@example.com")).await.expect_err("outage");
    assert_eq!((error.class, error.code.as_str()), (Outage, "smtp_421"), "{error}");
    sandbox.set_faults(ProviderKind::Smtp, FaultPlan::default());
    credentials.put("acme", "default", relay(sandbox.smtp_port(), "wrong"));
    let error = smtp.send(&email(5, "ada@example.com")).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "smtp_535"), "{error}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    credentials.put("acme", "default", relay(closed, "s3cret-password"));
    let error = smtp.send(&email(6, "ada@example.com")).await.expect_err("nobody there");
    assert_eq!((error.class, error.code.as_str()), (Outage, "connect_error"), "{error}");
    assert_eq!(sandbox.accepted(ProviderKind::Smtp).len(), 2, "only the two good messages were taken");
    Ok(())
}

const SENDGRID_KEY: &str = "SG.acme-key-0000000000.ZmFrZS1zZWNyZXQtZm9yLXRoZS1zYW5kYm94";

fn sendgrid_account(key: &str, from: &str) -> Credentials {
    Credentials::Sendgrid(SendgridCredentials {
        api_key: Secret::new(key),
        from: from.into(),
        region: SendgridRegion::Global,
        event_webhook_public_key: None,
    })
}

#[tokio::test]
async fn sendgrid_sends_through_mail_send_and_reads_every_answer_class() -> anyhow::Result<()> {
    use Class::*;
    let (sandbox, ca, _dir) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    sandbox.sendgrid_add_key(SENDGRID_KEY, "no-reply@acme.example");
    let credentials = Arc::new(MemoryCredentials::default());
    credentials.put("acme", "default", sendgrid_account(SENDGRID_KEY, "Acme <no-reply@acme.example>"));
    let tls = TlsConfig { extra_ca_file: Some(ca) };
    let config = SendgridConfig { url: sandbox.sendgrid_url(), eu_url: "https://eu.invalid".into(), ..SendgridConfig::default() };
    let sendgrid = Sendgrid::new(&config, &tls, Duration::from_secs(5), credentials.clone())?;

    // Accepted: the sandbox checked the body as SendGrid does and answered 202 + X-Message-Id.
    let mut delivery = email(1, "ada@example.com");
    delivery.attachments = vec![herald_schemas::Attachment {
        filename: "label.txt".into(),
        content_type: Some("text/plain".into()),
        reference: None,
        content: Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"ship to: Ada")),
        size: None,
    }];
    let receipt = sendgrid.send(&delivery).await?;
    let accepted = sandbox.accepted(ProviderKind::Sendgrid);
    assert_eq!(accepted.len(), 1);
    let got = &accepted[0];
    assert_eq!((got.status, got.message_id.as_deref()), (202, Some(receipt.provider_message_id.as_str())), "SendGrid's X-Message-Id");
    assert_eq!(got.target, "ada@example.com");
    assert_eq!(got.credential.as_deref(), Some("acme-key-0000000000"), "the key's id, never its secret");
    assert_eq!(got.headers.get("Message-ID"), Some(&format!("<{}@acme.example>", delivery.delivery_id)), "the id SMTP would send");
    assert_eq!(got.headers.get("List-Unsubscribe-Post").map(String::as_str), Some("List-Unsubscribe=One-Click"));
    assert_eq!(got.payload["subject"], "Your order shipped");
    assert_eq!(got.payload["from"], json!({ "email": "no-reply@acme.example", "name": "Acme" }));
    assert_eq!(got.payload["custom_args"]["herald_delivery_id"], delivery.delivery_id.to_string());
    assert_eq!(got.payload["attachments"][0]["filename"], "label.txt");
    assert_eq!(got.payload["attachments"][0]["sha256"], sha256_hex(b"ship to: Ada"), "the file as the sandbox decoded it");

    // Scripted refusals, each read as the table in the provider's classify module says.
    for (answer, class, code) in [
        (Answer::new(400, "personalizations.0.to.0.email").with_message("Does not contain a valid address."), Permanent, "bad_request"),
        (Answer::new(413, "").with_message("Request body too large"), Permanent, "payload_too_large"),
        (Answer::new(500, "").with_message("Internal Server Error"), Outage, "server_error"),
        (Answer::new(503, "").with_message("Service Unavailable"), Outage, "server_error"),
    ] {
        let mut plan = FaultPlan::default();
        plan.tokens.insert("bounce@example.com".into(), answer.clone());
        sandbox.set_faults(ProviderKind::Sendgrid, plan);
        let error = sendgrid.send(&email(2, "bounce@example.com")).await.expect_err("refused");
        assert_eq!((error.class, error.code.as_str()), (class, code), "{answer:?}: {error}");
        if answer.status == 400 {
            assert!(error.detail.contains("(personalizations.0.to.0.email)"), "the field SendGrid named: {error}");
        }
    }
    // A slow-down: SendGrid gives no Retry-After, only when its rate limit resets.
    let burst = FaultPlan { burst: Some(Burst { count: 1, retry_after_secs: 5 }), ..FaultPlan::default() };
    sandbox.set_faults(ProviderKind::Sendgrid, burst);
    let error = sendgrid.send(&email(3, "ada@example.com")).await.expect_err("throttled");
    assert_eq!((error.class, error.code.as_str()), (Throttled, "too_many_requests"), "{error}");
    assert!(
        error.retry_after.is_some_and(|d| d >= Duration::from_secs(3) && d <= Duration::from_secs(6)),
        "from X-RateLimit-Reset: {error:?}"
    );
    sandbox.set_faults(ProviderKind::Sendgrid, FaultPlan::default());

    // The sandbox's own checks: a sender that is not the key's verified identity, a revoked key.
    credentials.put("acme", "default", sendgrid_account(SENDGRID_KEY, "someone@elsewhere.example"));
    let error = sendgrid.send(&email(4, "ada@example.com")).await.expect_err("unverified sender");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "forbidden"), "{error}");
    assert!(error.detail.contains("verified Sender Identity"), "{error}");
    credentials.put("acme", "default", sendgrid_account("SG.revoked-key-000000.c2VjcmV0", "no-reply@acme.example"));
    let error = sendgrid.send(&email(5, "ada@example.com")).await.expect_err("unknown key");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "unauthorized"), "{error}");
    // An EU account is sent to the EU base; nobody listening there is an outage that may fail over.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let eu = SendgridConfig { eu_url: format!("https://localhost:{closed}"), ..config.clone() };
    let eu_client = Sendgrid::new(&eu, &tls, Duration::from_secs(5), credentials.clone())?;
    let account = SendgridCredentials {
        api_key: Secret::new(SENDGRID_KEY),
        from: "no-reply@acme.example".into(),
        region: SendgridRegion::Eu,
        event_webhook_public_key: None,
    };
    credentials.put("acme", "default", Credentials::Sendgrid(account));
    let error = eu_client.send(&email(6, "ada@example.com")).await.expect_err("nobody there");
    assert_eq!((error.class, error.code.as_str()), (Outage, "connect_error"), "{error}");
    let refused = sandbox.received().iter().filter(|r| r.provider == ProviderKind::Sendgrid && !r.accepted()).count();
    assert_eq!((sandbox.accepted(ProviderKind::Sendgrid).len(), refused), (1, 7), "one accepted; the EU call never reached this server");
    Ok(())
}

/// `herald up` sending e-mail through the SMTP sandbox and failing over to SendGrid's, `users`
/// directory users with an address each (`u-<n>`), the relay's breaker opening after 3 outage
/// answers for 3 s.
struct MailWorld {
    env: TestEnv,
    sandbox: Sandbox,
    _up: Process,
    _ca: tempfile::TempDir,
}

async fn mail_world(users: usize) -> anyhow::Result<MailWorld> {
    let (sandbox, ca_file, ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["email"]
default_channels = ["email"]

[deliver.tls]
extra_ca_file = "{ca}"

[deliver.smtp.breaker]
failures_to_open = 3
open_for = "3s"

[deliver.smtp.retry]
attempts = 5
initial = "200ms"
max = "1s"

[deliver.sendgrid]
url = "{sendgrid}"

[deliver.sendgrid.retry]
attempts = 5
initial = "200ms"
max = "1s"
"#,
        ca = ca_file.display(),
        sendgrid = sandbox.sendgrid_url(),
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let users: Vec<_> = (0..users).map(|n| json!({ "id": format!("u-{n}"), "email": format!("user{n}@example.com") })).collect();
    env.import_users(&users).await?;
    env.push_template(
        "receipt",
        "description = \"A receipt.\"\n\n[sample]\nn = 1\n\n[email]\nsubject = \"Receipt {{ data.n }}\"\ntext = \"Thanks for order {{ data.n }}.\"\n",
    )
    .await?;
    let up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    for (provider, credentials) in [("smtp", &accounts.smtp), ("sendgrid", &accounts.sendgrid)] {
        let (status, answer) = env.api(Method::PUT, &format!("/providers/{provider}/default"), Some(credentials.clone())).await?;
        ensure!(status == 200, "PUT {provider} credentials: {status} {answer}");
    }
    Ok(MailWorld { env, sandbox, _up: up, _ca: ca })
}

impl MailWorld {
    async fn send(&self, users: std::ops::Range<usize>) -> anyhow::Result<()> {
        for n in users {
            let body = json!({ "template": "receipt", "recipients": [{ "user_id": format!("u-{n}") }], "data": { "n": n } });
            self.env.publish("acme", body.to_string()).await?;
        }
        Ok(())
    }

    /// Accepted e-mails per address, over both providers.
    fn accepted_per_address(&self) -> HashMap<String, Vec<ProviderKind>> {
        herald_tests::accepted_per_target(&self.sandbox, &MAIL_PROVIDERS)
    }

    async fn wait_accepted(&self, n: usize) -> anyhow::Result<HashMap<String, Vec<ProviderKind>>> {
        herald_tests::wait_accepted(&self.sandbox, &MAIL_PROVIDERS, n, PATIENCE).await
    }
}

#[tokio::test]
async fn email_fails_over_to_sendgrid_while_the_relay_is_down_and_returns_after_the_probe() -> anyhow::Result<()> {
    let world = mail_world(32).await?;
    let address = |n: usize| format!("user{n}@example.com");
    // The relay closes every connection at the greeting (421): each e-mail goes through SendGrid.
    world.sandbox.set_faults(ProviderKind::Smtp, FaultPlan { outage: true, ..FaultPlan::default() });
    let relay_calls = || world.sandbox.received().iter().filter(|r| r.provider == ProviderKind::Smtp).count();
    world.send(0..10).await?;
    world.env.wait_for_events("acme", Status::Sent, 10, PATIENCE).await?;
    let first_wave = relay_calls();
    assert!(first_wave >= 3, "the relay was tried until its breaker opened ({first_wave} sessions)");
    world.send(10..20).await?;
    world.env.wait_for_events("acme", Status::Sent, 20, PATIENCE).await?;
    assert_eq!(relay_calls(), first_wave, "the open breaker spared the relay the second wave");
    let accepted = world.wait_accepted(20).await?;
    for n in 0..20 {
        assert_eq!(accepted.get(&address(n)).map(Vec::as_slice), Some(&[ProviderKind::Sendgrid][..]), "u-{n}: {accepted:?}");
    }
    let events = world.env.events("acme").await?;
    let sent_by: Vec<&str> = events.iter().filter(|e| e.status == Status::Sent).filter_map(|e| e.detail.as_deref()).collect();
    assert!(sent_by.iter().all(|d| d.starts_with("sendgrid accepted")), "{sent_by:?}");
    let subjects: Vec<_> = world.sandbox.accepted(ProviderKind::Sendgrid).iter().map(|r| r.payload["subject"].clone()).collect();
    assert!(subjects.contains(&json!("Receipt 7")), "rendered per recipient: {subjects:?}");

    // The relay recovers. After `open_for` one e-mail is the half-open probe; it succeeds, the
    // breaker closes and traffic returns to SMTP.
    world.sandbox.set_faults(ProviderKind::Smtp, FaultPlan::default());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    world.send(20..21).await?;
    world.wait_accepted(21).await?;
    world.send(21..32).await?;
    world.env.wait_for_events("acme", Status::Sent, 32, PATIENCE).await?;
    let accepted = world.wait_accepted(32).await?;
    for n in 20..32 {
        assert_eq!(accepted.get(&address(n)).map(Vec::as_slice), Some(&[ProviderKind::Smtp][..]), "u-{n}: {accepted:?}");
    }
    world.env.wait_idle(PATIENCE).await?;
    let total: usize = world.accepted_per_address().values().map(Vec::len).sum();
    assert_eq!(total, 32, "each e-mail exactly once across both providers");
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!(statuses.get(&Status::Failed), None, "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn herald_up_sends_each_email_once_through_the_tenants_relay() -> anyhow::Result<()> {
    let (sandbox, ca_file, _ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        "\n[enrich]\nenabled_channels = [\"email\"]\ndefault_channels = [\"email\"]\n\n[deliver.tls]\nextra_ca_file = \"{}\"\n\n[deliver.smtp.retry]\nattempts = 5\ninitial = \"200ms\"\nmax = \"1s\"\n",
        ca_file.display()
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let users: Vec<_> = (0..10).map(|n| json!({ "id": format!("u-{n}"), "email": format!("user{n}@example.com") })).collect();
    env.import_users(&users).await?;
    env.push_template(
        "receipt",
        "description = \"A receipt.\"\n\n[sample]\nn = 1\n\n[email]\nsubject = \"Receipt {{ data.n }}\"\ntext = \"Thanks for order {{ data.n }}.\"\nhtml = \"<p>Thanks for order <b>{{ data.n }}</b>.</p>\"\n",
    )
    .await?;
    let _up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    let (status, answer) = env.api(Method::PUT, "/providers/smtp/default", Some(accounts.smtp.clone())).await?;
    ensure!(status == 200, "PUT smtp: {status} {answer}");
    // One relay hiccup on the way: a 451 for one recipient, retried.
    let mut plan = FaultPlan::default();
    plan.tokens.insert("user3@example.com".into(), Answer::new(451, "4.3.0").with_message("try again"));
    sandbox.set_faults(ProviderKind::Smtp, plan);
    for n in 0..10 {
        env.publish(
            "acme",
            json!({ "template": "receipt", "recipients": [{ "user_id": format!("u-{n}") }], "data": { "n": n } }).to_string(),
        )
        .await?;
    }
    let deadline = Instant::now() + PATIENCE;
    while sandbox.accepted(ProviderKind::Smtp).len() < 9 {
        ensure!(Instant::now() < deadline, "only {} e-mails arrived", sandbox.accepted(ProviderKind::Smtp).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox.set_faults(ProviderKind::Smtp, FaultPlan::default());
    env.wait_for_events("acme", Status::Sent, 10, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    let accepted = sandbox.accepted(ProviderKind::Smtp);
    for n in 0..10 {
        let to = format!("user{n}@example.com");
        let theirs: Vec<_> = accepted.iter().filter(|r| r.target == to).collect();
        assert_eq!(theirs.len(), 1, "{to} got {} messages", theirs.len());
        let raw = theirs[0].body.clone().unwrap_or_default();
        assert_eq!(header(&raw, "Subject"), Some(format!("Receipt {n}")), "{raw}");
    }
    let refused = sandbox.received().iter().filter(|r| r.provider == ProviderKind::Smtp && !r.accepted()).count();
    assert!(refused >= 1, "the 451 was answered and retried");
    Ok(())
}

/// Bytes that do not compress and are the same on every run.
fn pseudo_random(len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(b"herald attachment");
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The attachments of a raw message, by file name, decoded by an independent MIME parser.
fn attachments_of(raw: &str) -> Vec<(String, Vec<u8>)> {
    use mail_parser::MimeHeaders as _;
    let message = mail_parser::MessageParser::default().parse(raw.as_bytes()).expect("a MIME message");
    message.attachments().map(|a| (a.attachment_name().unwrap_or_default().to_owned(), a.contents().to_vec())).collect()
}

/// Watches every message on the server (requests, stage hops, KV writes, events, acks, and
/// consumers' deliveries, keyed by their stream) and records the largest payload per subject.
async fn watch_sizes(url: &str) -> anyhow::Result<Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>> {
    let client = async_nats::connect(url).await?;
    let mut all = client.subscribe(">").await?;
    client.flush().await?;
    let sizes = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let record = sizes.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(message) = futures::StreamExt::next(&mut all).await {
            let size = message.payload.len();
            // A consumer's delivery goes to an inbox; its ack subject names the stream.
            let key = match message.reply.as_deref().and_then(|r| r.strip_prefix("$JS.ACK.")) {
                Some(ack) => format!("{} delivery", ack.split('.').next().unwrap_or_default()),
                None => message.subject.to_string(),
            };
            let mut sizes = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = sizes.entry(key).or_default();
            *entry = (*entry).max(size);
        }
    });
    Ok(sizes)
}

#[tokio::test]
async fn a_10_mb_attachment_arrives_intact_while_no_nats_message_exceeds_64_kib() -> anyhow::Result<()> {
    const LIMIT: usize = 64 * 1024;
    let (sandbox, ca_file, _ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        "\n[enrich]\nenabled_channels = [\"email\"]\ndefault_channels = [\"email\"]\n\n[deliver.tls]\nextra_ca_file = \"{}\"\n",
        ca_file.display()
    );
    let env = TestEnv::with(Options { extra_config, ..Options::default() }).await?;
    env.import_users(&[json!({ "id": "ada", "email": "ada@example.com" })]).await?;
    env.push_template("report", "description = \"A report.\"\n\n[email]\nsubject = \"Your report\"\ntext = \"Attached.\"\n").await?;
    // The sweep runs every second; a file lives 15 s.
    let retention = [("HERALD__ATTACHMENTS__RETENTION", "15s"), ("HERALD__ATTACHMENTS__SWEEP_EVERY", "1s")];
    let _up = env.spawn_with_env("up", &["up"], &retention)?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    let (status, answer) = env.api(Method::PUT, "/providers/smtp/default", Some(accounts.smtp.clone())).await?;
    ensure!(status == 200, "PUT smtp: {status} {answer}");

    // The producer uploads 10 MB (streamed through the admin API), then names it by key.
    let big = pseudo_random(10 * 1024 * 1024);
    let file = env.dir.path().join("q3-report.bin");
    std::fs::write(&file, &big)?;
    let sizes = watch_sizes(env.server.url()).await?;
    let uploaded = env.run(&["attachments", "put", &file.to_string_lossy(), "--key", "reports/q3.bin"]).await?;
    assert!(uploaded.contains(&sha256_hex(&big)), "the upload reports the file's SHA-256: {uploaded}");
    let stored_at = env.dir.path().join("data/attachments/acme/reports/q3.bin");
    assert_eq!(std::fs::metadata(&stored_at)?.len(), big.len() as u64, "stored under data/attachments/<tenant>/<key>");
    env.run(&["send", "--template", "report", "--to", "ada", "--attach", "reports/q3.bin=q3-report.bin"]).await?;
    env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    let accepted = sandbox.accepted(ProviderKind::Smtp);
    assert_eq!(accepted.len(), 1, "one message");
    let files = attachments_of(accepted[0].body.as_deref().unwrap_or_default());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "q3-report.bin");
    assert_eq!(files[0].1.len(), big.len());
    assert_eq!(sha256_hex(&files[0].1), sha256_hex(&big), "the attachment arrived intact");
    env.wait_idle(PATIENCE).await?;
    {
        let sizes = sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(sizes.keys().any(|s| s.contains(".stage.deliver.email.")), "the watch saw the deliver hop: {:?}", sizes.keys());
        let over: Vec<_> = sizes.iter().filter(|(_, n)| **n > LIMIT).collect();
        assert!(over.is_empty(), "NATS messages over 64 KiB: {over:?}");
    }

    // Inline over `inline_max`: ingest moves it to the store; only the request itself is large.
    sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    let inline = pseudo_random(150 * 1024);
    let content = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &inline);
    let request = json!({ "template": "report", "recipients": [{ "user_id": "ada" }],
        "attachments": [{ "filename": "inline.bin", "content": content }] });
    env.publish("acme", request.to_string()).await?;
    let events = env.wait_for_events("acme", Status::Sent, 2, PATIENCE).await?;
    let sent: Vec<_> = events.iter().filter(|e| e.status == Status::Sent).collect();
    let notification = sent[1].notification_id.unwrap_or_default();
    let stored = env.dir.path().join(format!("data/attachments/acme/inline/{notification}/0"));
    assert_eq!(std::fs::read(&stored)?, inline, "ingest stored the inline file under its notification");
    let accepted = sandbox.accepted(ProviderKind::Smtp);
    let files = attachments_of(accepted[1].body.as_deref().unwrap_or_default());
    assert_eq!((files[0].0.as_str(), sha256_hex(&files[0].1)), ("inline.bin", sha256_hex(&inline)));
    env.wait_idle(PATIENCE).await?;
    {
        let sizes = sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let over: Vec<_> = sizes.iter().filter(|(_, n)| **n > LIMIT).map(|(s, _)| s.clone()).collect();
        assert!(
            over.iter().all(|s| s == "herald.requests.acme" || s == "HERALD_REQUESTS delivery"),
            "only the producer's request (published, and delivered to ingest) is over 64 KiB: {over:?}"
        );
    }

    // After its retention the sweep deletes the file; a delivery naming it then fails, clearly.
    let deadline = Instant::now() + Duration::from_secs(40);
    while stored_at.exists() {
        ensure!(Instant::now() < deadline, "the sweep did not delete {} after its retention", stored_at.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.run(&["send", "--template", "report", "--to", "ada", "--attach", "reports/q3.bin"]).await?;
    let events = env.wait_for_events("acme", Status::Failed, 1, PATIENCE).await?;
    let failed: Vec<_> = events.iter().filter(|e| e.status == Status::Failed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("attachment_missing"), "{:?}", failed[0]);
    assert!(failed[0].detail.as_deref().unwrap_or_default().contains("reports/q3.bin"), "{:?}", failed[0].detail);
    assert_eq!(sandbox.received().iter().filter(|r| r.provider == ProviderKind::Smtp).count(), 2, "no call for the missing file");
    Ok(())
}
