//! Webhooks end to end: `herald up` on a real nats-server POSTing to a receiver written here
//! that verifies each `Herald-Signature` with only the algorithm the README documents; counts
//! are the receiver's own, every call included. Producer-supplied URLs that reach a private,
//! loopback or link-local address are refused and never called.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use herald_schemas::Status;
use herald_tests::{Options, Process, TestEnv, count_statuses};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::json;
use sha2::Sha256;

const PATIENCE: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec-acme-7Hq2m9Xv4LpZ0aTb8Ns3Kd6Wf1Ry5Ue";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HashMap<String, String>,
    body: Bytes,
}

/// An HTTP receiver: records every request and answers each path from its script (then 200).
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<u16>>>>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1; returns it.
    async fn start(&self) -> anyhow::Result<u16> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let receiver = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let receiver = receiver.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let receiver = receiver.clone();
                        async move { Ok::<_, Infallible>(receiver.answer(request).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(port)
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let headers = request.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned())).collect();
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Call { path: path.clone(), headers, body });
        let status = self
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .unwrap_or(200);
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        match status {
            429 => {
                response.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            }
            300..=399 => {
                response.headers_mut().insert("location", hyper::header::HeaderValue::from_static("/redirected-to"));
            }
            _ => {}
        }
        response
    }

    fn answer_with(&self, path: &str, statuses: &[u16]) {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(path.to_owned(), statuses.iter().copied().collect());
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The README's verification, and nothing else: HMAC-SHA256 keyed with the secret over
/// `<Herald-Timestamp>.<body>`, hex, after `v1=`; the timestamp within five minutes.
fn verify(secret: &str, call: &Call) -> anyhow::Result<()> {
    let timestamp = call.headers.get("herald-timestamp").context("no Herald-Timestamp")?;
    let given = call.headers.get("herald-signature").context("no Herald-Signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&call.body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    ensure!(&expected == given, "signature {given} is not {expected} for {}", call.path);
    let age = jiff::Timestamp::now().as_second() - timestamp.parse::<i64>()?;
    ensure!((0..300).contains(&age), "timestamp {timestamp} is {age} s old");
    Ok(())
}

struct World {
    env: TestEnv,
    receiver: Receiver,
    port: u16,
    _up: Process,
}

/// `herald up` with webhooks enabled, `127.0.0.1:<the receiver's port>` the one private address
/// allowed, fast retries, tenant acme's secret set through `herald providers set`.
async fn world() -> anyhow::Result<World> {
    let receiver = Receiver::default();
    let port = receiver.start().await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["log", "webhook"]

[deliver.webhook]
allow_private = ["127.0.0.1:{port}"]
timeout = "3s"

[deliver.webhook.retry]
attempts = 5
initial = "200ms"
max = "1s"
"#
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let dir = env.dir.path().join("templates/order_event");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        r#"description = "Order events for integrators."
category = "orders"

[sample]
order_id = "A-1"
n = 1

[webhook]
body = '{"event": "order_shipped", "order": {{ data.order_id }}, "n": {{ data.n }}}'
"#,
    )?;
    let templates = env.dir.path().join("templates");
    env.run(&["templates", "push", &templates.to_string_lossy(), "--offline"]).await?;
    let up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    let secret_file = env.dir.path().join("webhook.json");
    std::fs::write(&secret_file, json!({ "secret": SECRET }).to_string())?;
    env.run(&["providers", "set", "webhook", &secret_file.to_string_lossy()]).await?;
    Ok(World { env, receiver, port, _up: up })
}

impl World {
    async fn send(&self, url: &str, n: usize) -> anyhow::Result<()> {
        let body = json!({ "template": "order_event", "recipients": [{ "webhook": url }], "channels": ["webhook"], "data": { "order_id": format!("A-{n}"), "n": n } });
        self.env.publish("acme", body.to_string()).await?;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

#[tokio::test]
async fn signed_webhooks_arrive_once_each_and_every_signature_verifies() -> anyhow::Result<()> {
    let world = world().await?;
    // A receiver that fails twice, and one that asks to slow down once: retried, same id.
    world.receiver.answer_with("/flaky", &[503, 503]);
    world.receiver.answer_with("/busy", &[429]);
    for n in 0..20 {
        world.send(&world.url(&format!("/hooks/{n}")), n).await?;
    }
    world.send(&world.url("/flaky"), 20).await?;
    world.send(&world.url("/busy"), 21).await?;
    world.env.wait_for_events("acme", Status::Sent, 22, PATIENCE).await?;
    world.env.wait_idle(PATIENCE).await?;

    let calls = world.receiver.calls();
    for call in &calls {
        verify(SECRET, call)?;
    }
    let mut per_path: HashMap<&str, Vec<&Call>> = HashMap::new();
    for call in &calls {
        per_path.entry(call.path.as_str()).or_default().push(call);
    }
    for n in 0..20 {
        let path = format!("/hooks/{n}");
        let theirs = per_path.get(path.as_str()).map_or(0, Vec::len);
        ensure!(theirs == 1, "{path} received {theirs} calls, not one");
        let body: serde_json::Value = serde_json::from_slice(&per_path[path.as_str()][0].body)?;
        assert_eq!(body, json!({ "event": "order_shipped", "order": format!("A-{n}"), "n": n }), "the rendered body, as sent");
    }
    let flaky = &per_path["/flaky"];
    assert_eq!(flaky.len(), 3, "two 503s, then accepted");
    let busy = &per_path["/busy"];
    assert_eq!(busy.len(), 2, "one 429, then accepted");
    for retried in [flaky, busy] {
        let ids: std::collections::HashSet<&str> = retried.iter().map(|c| c.headers["herald-delivery-id"].as_str()).collect();
        assert_eq!(ids.len(), 1, "every retry carries the same Herald-Delivery-Id");
    }
    let ids: std::collections::HashSet<&str> = calls.iter().map(|c| c.headers["herald-delivery-id"].as_str()).collect();
    assert_eq!(ids.len(), 22, "one delivery id per webhook");
    assert_eq!(calls.len(), 20 + 3 + 2, "nothing else was called");
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!(statuses.get(&Status::Failed), None, "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn private_addresses_redirects_and_gone_endpoints_are_never_called_twice() -> anyhow::Result<()> {
    let world = world().await?;
    // Another port of this host, not allowed: a receiver there counts what it gets (nothing).
    let internal = Receiver::default();
    let internal_port = internal.start().await?;
    let refused = [
        format!("http://127.0.0.1:{internal_port}/admin"),
        format!("http://localhost:{internal_port}/admin"),
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_owned(),
        "http://[::ffff:127.0.0.1]:9/".to_owned(),
    ];
    for (n, url) in refused.iter().enumerate() {
        world.send(url, n).await?;
    }
    world.receiver.answer_with("/moved", &[302]);
    world.receiver.answer_with("/gone", &[410]);
    world.send(&world.url("/moved"), 10).await?;
    world.send(&world.url("/gone"), 11).await?;
    let events = world.env.wait_for_events("acme", Status::Failed, refused.len() + 2, PATIENCE).await?;
    world.env.wait_idle(PATIENCE).await?;

    let reasons: Vec<&str> = events.iter().filter(|e| e.status == Status::Failed).filter_map(|e| e.reason.as_deref()).collect();
    assert_eq!(reasons.iter().filter(|r| **r == "address_refused").count(), refused.len(), "{reasons:?}");
    assert!(reasons.contains(&"redirect_refused") && reasons.contains(&"http_410"), "{reasons:?}");
    let invalidated = events.iter().filter(|e| e.status == Status::TokenInvalidated).count();
    assert_eq!(invalidated, 1, "the 410 says the endpoint is gone");
    assert!(internal.calls().is_empty(), "the internal service was called: {:?}", internal.calls());
    let calls = world.receiver.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths.iter().filter(|p| **p == "/moved").count(), 1, "a redirect is not retried: {paths:?}");
    assert_eq!(paths.iter().filter(|p| **p == "/gone").count(), 1, "a 410 is not retried: {paths:?}");
    assert!(!paths.contains(&"/redirected-to"), "the redirect was followed: {paths:?}");
    for call in &calls {
        verify(SECRET, call)?;
    }

    // The 410 disabled the endpoint: the next webhook to it is refused without a call, until
    // the tenant enables it again.
    let gone = world.url("/gone");
    let invalidated = events.iter().find(|e| e.status == Status::TokenInvalidated).context("token_invalidated")?;
    assert!(invalidated.detail.as_deref().is_some_and(|d| d.contains("disabled")), "{invalidated:?}");
    let listed = world.env.run(&["webhooks", "disabled"]).await?;
    assert!(listed.contains(&gone) && listed.contains("http_410"), "{listed}");
    world.send(&gone, 12).await?;
    let events = world.env.wait_for_events("acme", Status::Failed, refused.len() + 3, PATIENCE).await?;
    let last = events.iter().rfind(|e| e.status == Status::Failed).context("failed")?;
    assert_eq!(last.reason.as_deref(), Some("endpoint_disabled"), "{last:?}");
    assert_eq!(world.receiver.calls().iter().filter(|c| c.path == "/gone").count(), 1, "a disabled endpoint is not called");
    world.env.run(&["webhooks", "enable", &gone]).await?;
    assert!(!world.env.run(&["webhooks", "disabled"]).await?.contains(&gone), "enabled again");
    world.send(&gone, 13).await?;
    world.env.wait_for_events("acme", Status::Sent, 1, PATIENCE).await?;
    assert_eq!(world.receiver.calls().iter().filter(|c| c.path == "/gone").count(), 2, "called again once enabled");
    Ok(())
}
