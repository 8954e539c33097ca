//! E-mail over real SMTP: Herald's SMTP client against the SMTP sandbox on TCP (STARTTLS with the
//! sandbox's certificate, AUTH), each reply class as the client reads it, then `herald up`
//! sending e-mail that arrives once per recipient, as the raw messages the sandbox kept show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use herald_deliver::http::TlsConfig;
use herald_deliver::ports::memory::MemoryCredentials;
use herald_deliver::providers::smtp::{Smtp, SmtpConfig};
use herald_deliver::providers::{Class, Provider};
use herald_sandbox::smtp::header;
use herald_sandbox::{Answer, FaultPlan, ProviderKind, SandboxOptions};
use herald_schemas::providers::{SmtpCredentials, SmtpSecurity};
use herald_schemas::{Channel, Content, Credentials, Delivery, Secret, Status};
use herald_tests::{Options, TestEnv};
use reqwest::Method;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

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

#[tokio::test]
async fn herald_up_sends_each_email_once_through_the_tenants_relay() -> anyhow::Result<()> {
    let (sandbox, ca_file, _ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        "\n[enrich]\nenabled_channels = [\"email\"]\ndefault_channels = [\"email\"]\n\n[deliver.tls]\nextra_ca_file = \"{}\"\n\n[deliver.smtp.retry]\nattempts = 5\ninitial = \"200ms\"\nmax = \"1s\"\n",
        ca_file.display()
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let users: String =
        (0..10).map(|n| format!("{}\n", json!({ "id": format!("u-{n}"), "email": format!("user{n}@example.com") }))).collect();
    let directory = env.dir.path().join("users.jsonl");
    std::fs::write(&directory, users)?;
    env.import(&directory, true).await?;
    let dir = env.dir.path().join("templates/receipt");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        "description = \"A receipt.\"\n\n[sample]\nn = 1\n\n[email]\nsubject = \"Receipt {{ data.n }}\"\ntext = \"Thanks for order {{ data.n }}.\"\nhtml = \"<p>Thanks for order <b>{{ data.n }}</b>.</p>\"\n",
    )?;
    env.run(&["templates", "push", &env.dir.path().join("templates").to_string_lossy(), "--offline"]).await?;
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
