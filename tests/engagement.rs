//! Engagement end to end: `herald up` with `engagement.base_url` on its own API renders an
//! e-mail with a tracked link, the open pixel and the unsubscribe link; the SMTP sandbox
//! receives it over STARTTLS. Read back from the message as it arrived (parsed by an
//! independent MIME parser), the pixel answers a GIF and reports `opened`, the link redirects
//! to exactly the template's target and reports `clicked`, and the `List-Unsubscribe` URL taken
//! with RFC 8058's one-click POST reports `unsubscribed` and turns the user's e-mail off, so
//! their next e-mail is `opted_out` with no call. An altered link, one signed with another key,
//! and a pixel token used as a click are refused with 403, redirect nowhere and report nothing.

use std::time::Duration;

use anyhow::{Context, ensure};
use herald_render::SignedLinks;
use herald_render::links::{Link, LinkKind};
use herald_sandbox::smtp::header;
use herald_sandbox::{ProviderKind, SandboxOptions};
use herald_schemas::Status;
use herald_tests::{Options, TestEnv};
use reqwest::Method;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);
const SECRET: &str = "an engagement secret of at least thirty-two characters";
const OFFER: &str = "https://shop.example/offer?id=7&utm=mail";

/// The value of `attribute="…"` of every tag in `html` that has it.
fn attributes(html: &str, attribute: &str) -> Vec<String> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].replace("&amp;", "&"))
        })
        .collect()
}

#[tokio::test]
async fn opens_clicks_and_one_click_unsubscribe_work_from_the_delivered_email_and_forged_links_are_refused() -> anyhow::Result<()> {
    let (sandbox, ca_file, _ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        "\n[enrich]\nenabled_channels = [\"email\"]\ndefault_channels = [\"email\"]\n\n[deliver.tls]\nextra_ca_file = \"{}\"\n",
        ca_file.display()
    );
    let env = TestEnv::with(Options { extra_config, ..Options::default() }).await?;
    let base = env.api_url("acme")?.trim_end_matches("/v1/tenants/acme").to_owned();
    env.import_users(&[json!({ "id": "alice", "email": "alice@example.com" })]).await?;
    env.push_template(
        "offer",
        r#"description = "An offer."

[email]
subject = "An offer"
text = '''See {{ "https://shop.example/offer?id=7&utm=mail" | track }}'''
html = '''<html><body><p>See <a href="{{ "https://shop.example/offer?id=7&utm=mail" | track }}">the offer</a>, or <a href="{{ unsubscribe_url() }}">unsubscribe</a>.</p></body></html>'''
"#,
    )
    .await?;
    // `herald up` signs the links with the secret from its environment; its API is where they point.
    let _up =
        env.spawn_with_env("up", &["up"], &[("HERALD__ENGAGEMENT__BASE_URL", base.as_str()), ("HERALD__ENGAGEMENT__SECRET", SECRET)])?;
    env.wait_for_api().await?;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    let (status, answer) = env.api(Method::PUT, "/providers/smtp/default", Some(accounts.smtp.clone())).await?;
    ensure!(status == 200, "PUT smtp: {status} {answer}");

    env.publish("acme", json!({ "template": "offer", "recipients": [{ "user_id": "alice" }] }).to_string()).await?;
    let events = env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    let sent = events.iter().find(|e| e.status == Status::Sent).context("the sent event")?.clone();
    let delivery = sent.delivery_id.context("a delivery id")?;
    let accepted = sandbox.accepted(ProviderKind::Smtp);
    assert_eq!(accepted.len(), 1, "one e-mail");
    let raw = accepted[0].body.clone().unwrap_or_default();
    let message = mail_parser::MessageParser::default().parse(raw.as_bytes()).context("a MIME message")?;
    let html = message.body_html(0).context("an HTML part")?.into_owned();
    let text = message.body_text(0).context("a text part")?.into_owned();

    // What the e-mail carries: a tracked link (the same in both parts), the pixel Herald added,
    // the unsubscribe link and its RFC 8058 headers.
    let hrefs = attributes(&html, "href");
    let click = hrefs.first().context("the offer's link")?.clone();
    assert!(click.starts_with(&format!("{base}/v1/links/")), "the offer's link is tracked: {click}");
    assert!(text.contains(&click), "the text part has the same tracked link");
    assert!(!html.contains(OFFER) && !text.contains(OFFER), "the target is only inside the signed token");
    let pixel = attributes(&html, "src").into_iter().find(|s| s.ends_with("/open.gif")).context("the open pixel")?;
    let list_unsubscribe = header(&raw, "List-Unsubscribe").context("List-Unsubscribe")?;
    let unsubscribe = list_unsubscribe.trim_matches(['<', '>']).to_owned();
    assert_eq!(header(&raw, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    assert_eq!(hrefs.get(1), Some(&unsubscribe), "the body's unsubscribe link is the header's");

    // The open pixel.
    let opened = http.get(&pixel).send().await?;
    assert_eq!(opened.status(), 200);
    assert_eq!(opened.headers()["content-type"], "image/gif");
    assert!(opened.bytes().await?.starts_with(b"GIF89a"));
    let events = env.wait_for_events("acme", Status::Opened, 1, PATIENCE).await?;
    let opened: Vec<_> = events.iter().filter(|e| e.status == Status::Opened).collect();
    assert_eq!(opened.iter().map(|e| e.delivery_id).collect::<Vec<_>>(), [Some(delivery)]);

    // The click: a redirect to the template's target, nowhere else.
    let clicked = http.get(&click).send().await?;
    assert_eq!(clicked.status(), 302);
    assert_eq!(clicked.headers()["location"], OFFER);
    let events = env.wait_for_events("acme", Status::Clicked, 1, PATIENCE).await?;
    let clicked: Vec<_> = events.iter().filter(|e| e.status == Status::Clicked).collect();
    assert_eq!(clicked.iter().map(|e| (e.delivery_id, e.detail.as_deref())).collect::<Vec<_>>(), [(Some(delivery), Some(OFFER))]);

    // Forgeries: the payload re-signed by another key with another target, one signature
    // character changed, the pixel's token used as a click.
    let token = click.rsplit('/').next().context("a token")?;
    let (payload, signature) = token.split_once('.').context("payload.signature")?;
    let foreign = SignedLinks::new(&base, b"another deployment's secret, also long enough");
    let mut evil: Link = foreign.verify(&foreign.sign(&Link {
        kind: LinkKind::Click,
        tenant: "acme".into(),
        delivery_id: delivery.to_string(),
        notification_id: sent.notification_id.map(|n| n.to_string()).unwrap_or_default(),
        channel: "email".into(),
        user_id: Some("alice".into()),
        url: Some("https://evil.example/".into()),
    }))?;
    evil.url = Some("https://evil.example/login".into());
    let flipped = {
        let mut s = signature.to_owned().into_bytes();
        s[3] = if s[3] == b'x' { b'y' } else { b'x' };
        format!("{base}/v1/links/{payload}.{}", String::from_utf8(s)?)
    };
    let pixel_token = pixel.trim_end_matches("/open.gif").rsplit('/').next().context("the pixel's token")?;
    for forged in [foreign.url(&evil), flipped, format!("{base}/v1/links/{pixel_token}"), format!("{base}/v1/links/garbage")] {
        let answer = http.get(&forged).send().await?;
        assert_eq!(answer.status(), 403, "{forged}");
        assert!(answer.headers().get("location").is_none(), "no redirect for {forged}");
    }

    // One-click unsubscribe (RFC 8058): the page does nothing, the POST unsubscribes.
    let page = http.get(&unsubscribe).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("method=post"));
    let (status, preferences) = env.api(Method::GET, "/users/alice/preferences", None).await?;
    assert_eq!((status, preferences.get("channels")), (200, None), "a GET changes nothing: {preferences}");
    let posted = http
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await?;
    assert_eq!(posted.status(), 200);
    env.wait_for_events("acme", Status::Unsubscribed, 1, PATIENCE).await?;
    let (_, preferences) = env.api(Method::GET, "/users/alice/preferences", None).await?;
    assert_eq!(preferences["channels"]["email"], json!(false), "{preferences}");
    env.publish("acme", json!({ "template": "offer", "recipients": [{ "user_id": "alice" }] }).to_string()).await?;
    env.wait_for_events("acme", Status::OptedOut, 1, PATIENCE).await?;
    env.wait_idle(PATIENCE).await?;
    assert_eq!(sandbox.accepted(ProviderKind::Smtp).len(), 1, "no second e-mail reached the relay");

    // Nothing but the real link, pixel and unsubscribe reported anything.
    let events = env.events("acme").await?;
    let engagement: Vec<_> = events.iter().filter(|e| e.stage == "engagement").map(|e| e.status).collect();
    assert_eq!(engagement, [Status::Opened, Status::Clicked, Status::Unsubscribed], "{events:?}");
    Ok(())
}
