//! The in-app inbox against `herald up` on a real NATS server: in-app deliveries stored on each
//! user's inbox subject; an app reading its user's history, unread count and live feed (SSE)
//! with a user token its tenant's backend minted (an HS256 JWT made here with the tenant's
//! secret, as a backend would); marks; and every other token refused.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use futures::StreamExt;
use herald_schemas::Status;
use herald_tests::{Options, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const SECRET: &str = "inbox-signing-secret-of-acme-0123456789abcdef";

/// What a tenant's backend does to let its user's app in: five lines with any JWT library.
fn mint(secret: &str, tenant: &str, user: &str) -> String {
    let exp = jiff::Timestamp::now().as_second() + 3600;
    let claims = json!({ "sub": user, "tenant": tenant, "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("a token")
}

async fn call(env: &TestEnv, method: Method, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let base = env.api_url("acme")?.replace("/v1/tenants/acme", "");
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

fn titles(page: &Value) -> Vec<String> {
    page["messages"].as_array().into_iter().flatten().map(|m| m["message"]["title"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn an_app_reads_history_gets_live_messages_marks_them_and_no_other_token_reads_them() -> anyhow::Result<()> {
    let extra_config = "\n[enrich]\nenabled_channels = [\"in_app\"]\ndefault_channels = [\"in_app\"]\n".to_owned();
    let env = TestEnv::with(Options { extra_config, ..Options::default() }).await?;
    let users = [json!({ "id": "ada.l", "name": "Ada" }), json!({ "id": "bob", "name": "Bob" })];
    env.import_users(&users).await?;
    env.push_template(
        "notice",
        "description = \"A notice.\"\n\n[sample]\nn = 1\n\n[in_app]\ntitle = \"Notice {{ data.n }}\"\nbody = \"Order {{ data.n }}\"\ndata = \"{\\\"n\\\": {{ data.n }}}\"\n",
    )
    .await?;
    let _up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    let (status, answer) =
        env.api(Method::PUT, "/providers/inbox/default", Some(json!({ "provider": "inbox", "signing_secret": SECRET }))).await?;
    ensure!(status == 200, "PUT inbox secret: {status} {answer}");
    let send = |n: u32, user: &str| json!({ "template": "notice", "recipients": [{ "user_id": user }], "data": { "n": n } }).to_string();
    for n in 1..=3 {
        env.publish("acme", send(n, "ada.l")).await?;
    }
    env.publish("acme", send(100, "bob")).await?;
    env.wait_for_events("acme", Status::Sent, 4, PATIENCE).await?;

    // History, with the user's own token.
    let ada = mint(SECRET, "acme", "ada.l");
    let (status, page) = call(&env, Method::GET, "/v1/inbox/acme/messages", Some(&ada)).await?;
    ensure!(status == 200, "{status} {page}");
    let mut history = titles(&page);
    history.sort();
    assert_eq!(history, ["Notice 1", "Notice 2", "Notice 3"], "{page}");
    assert!(page["messages"][0]["message"]["body"].as_str().is_some_and(|b| b.starts_with("Order ")), "{page}");
    assert_eq!(page["messages"][0]["message"]["data"]["n"].as_u64().map(|n| n > 0), Some(true), "{page}");
    assert_eq!(call(&env, Method::GET, "/v1/inbox/acme/unread", Some(&ada)).await?.1, json!({ "unread": 3, "total": 3 }));
    let (_, page) = call(&env, Method::GET, "/v1/inbox/acme/messages?limit=2", Some(&ada)).await?;
    let next = page["next"].as_u64().context("a cursor after a full page")?;
    let (_, rest) = call(&env, Method::GET, &format!("/v1/inbox/acme/messages?after={next}"), Some(&ada)).await?;
    assert_eq!(titles(&page).len() + titles(&rest).len(), 3, "the cursor pages through without gaps or repeats");

    // Live: a message arrives on the feed within 100 ms of its `sent` event.
    let base = env.api_url("acme")?.replace("/v1/tenants/acme", "");
    let response = reqwest::Client::new().get(format!("{base}/v1/inbox/acme/feed?token={ada}")).send().await?;
    ensure!(response.status() == 200, "feed: {}", response.status());
    let mut feed = response.bytes_stream();
    env.publish("acme", send(4, "ada.l")).await?;
    let mut buffer = String::new();
    let deadline = Instant::now() + PATIENCE;
    let (live, arrived) = loop {
        ensure!(Instant::now() < deadline, "no live message; the feed said {buffer:?}");
        let chunk = tokio::time::timeout(PATIENCE, feed.next()).await?.context("the feed ended")??;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(data) =
            buffer.split("\n\n").find(|e| e.contains("event: message")).and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        {
            break (serde_json::from_str::<Value>(data)?, SystemTime::now());
        }
    };
    assert_eq!(live["message"]["title"], "Notice 4");
    let id = live["message"]["id"].as_str().context("the message id")?.to_owned();
    let events = env.wait_for_events("acme", Status::Sent, 5, PATIENCE).await?;
    let sent = events
        .iter()
        .find(|e| e.status == Status::Sent && e.delivery_id.map(|d| d.to_string()) == Some(id.clone()))
        .context("its sent event")?;
    let sent_at = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(sent.at.as_nanosecond()).unwrap_or_default());
    let after_sent = arrived.duration_since(sent_at).unwrap_or_default();
    eprintln!("live message {after_sent:?} after its sent event");
    assert!(after_sent < Duration::from_millis(100), "the live message came {after_sent:?} after `sent`");

    // Marks: read lowers the unread count; archived hides it from the default list.
    let seq = live["seq"].as_u64().context("seq")?;
    let (status, marked) = call(&env, Method::POST, &format!("/v1/inbox/acme/messages/{seq}/read"), Some(&ada)).await?;
    ensure!(status == 200 && marked["read_at"].is_string(), "{status} {marked}");
    assert_eq!(call(&env, Method::GET, "/v1/inbox/acme/unread", Some(&ada)).await?.1, json!({ "unread": 3, "total": 4 }));
    call(&env, Method::POST, &format!("/v1/inbox/acme/messages/{seq}/seen"), Some(&ada)).await?;
    call(&env, Method::POST, &format!("/v1/inbox/acme/messages/{seq}/archived"), Some(&ada)).await?;
    let (_, page) = call(&env, Method::GET, "/v1/inbox/acme/messages", Some(&ada)).await?;
    assert_eq!(titles(&page).len(), 3, "archived is hidden: {page}");
    let (_, page) = call(&env, Method::GET, "/v1/inbox/acme/messages?archived=true", Some(&ada)).await?;
    let archived = page["messages"].as_array().into_iter().flatten().find(|m| m["seq"] == seq).context("listed with archived=true")?;
    assert!(archived["read_at"].is_string() && archived["seen_at"].is_string() && archived["archived_at"].is_string(), "{archived}");
    assert_eq!(titles(&page).len(), 4, "each message stored once: {page}");

    // Nobody else reads or marks it.
    let bob = mint(SECRET, "acme", "bob");
    let (_, theirs) = call(&env, Method::GET, "/v1/inbox/acme/messages", Some(&bob)).await?;
    assert_eq!(titles(&theirs), ["Notice 100"], "bob sees only his own");
    assert_eq!(call(&env, Method::POST, &format!("/v1/inbox/acme/messages/{seq}/unread"), Some(&bob)).await?.0, 404);
    let forged = mint("not-the-tenant-secret-0123456789abcdefghij", "acme", "ada.l");
    let other_tenant = mint(SECRET, "globex", "ada.l");
    for (what, token) in [("forged", Some(forged.as_str())), ("admin", Some(herald_tests::ADMIN_TOKEN)), ("none", None)] {
        assert_eq!(call(&env, Method::GET, "/v1/inbox/acme/messages", token).await?.0, 401, "{what} token");
    }
    assert_eq!(call(&env, Method::GET, "/v1/inbox/acme/messages", Some(&other_tenant)).await?.0, 401, "a token of another tenant");
    assert_eq!(call(&env, Method::GET, "/v1/inbox/globex/messages", Some(&ada)).await?.0, 401, "acme's token on globex");
    Ok(())
}
