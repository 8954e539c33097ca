//! SMS and voice: Herald's Twilio and Vonage clients against their sandboxes over TLS (each
//! provider's answers table; a call's TwiML and its status callbacks, whose `X-Twilio-Signature`
//! this file verifies with only Twilio's documented algorithm), then `herald up` on a real
//! nats-server: failover from Twilio to Vonage in a Twilio outage and back after the breaker's
//! probe, and a STOP that opts the recipient out. Counts are the sandboxes' own records of the
//! calls they received, refusals and repeats included.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine;
use bytes::Bytes;
use herald_deliver::http::TlsConfig;
use herald_deliver::ports::memory::MemoryCredentials;
use herald_deliver::providers::twilio::{TwilioConfig, twilio};
use herald_deliver::providers::vonage::{Vonage, VonageConfig};
use herald_deliver::providers::{Class, Provider};
use herald_sandbox::{Answer, Burst, FaultPlan, ProviderKind, Sandbox, SandboxOptions};
use herald_schemas::providers::{TwilioCredentials, VonageCredentials};
use herald_schemas::{Channel, Content, Credentials, Delivery, Secret, Status};
use herald_tests::{Options, Process, TestEnv, count_statuses};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use reqwest::Method;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);
const FROM: &str = "+15005550006";
const SMS_PROVIDERS: [ProviderKind; 2] = [ProviderKind::Twilio, ProviderKind::Vonage];

fn phone(n: usize) -> String {
    format!("+1415555{:04}", 1000 + n)
}

/// A status callback as the receiver got it.
#[derive(Debug, Clone)]
struct Posted {
    url: String,
    signature: String,
    params: BTreeMap<String, String>,
}

/// Receives Twilio's status callbacks on a free port of 127.0.0.1.
#[derive(Clone, Default)]
struct Receiver {
    posted: Arc<Mutex<Vec<Posted>>>,
}

impl Receiver {
    async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let (receiver, url) = (self.clone(), base.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (receiver, url) = (receiver.clone(), url.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (receiver, url) = (receiver.clone(), url.clone());
                        async move {
                            let full = format!("{url}{}", request.uri());
                            let signature =
                                request.headers().get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let params = url_form(&body);
                            receiver.posted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Posted {
                                url: full,
                                signature,
                                params,
                            });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(format!("{base}/twilio/status"))
    }

    fn posted(&self) -> Vec<Posted> {
        self.posted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// `application/x-www-form-urlencoded`, decoded.
fn url_form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Twilio's documented check, and nothing else: base64(HMAC-SHA1(auth token, the full URL
/// followed by each POST parameter's name and value, sorted by name)).
fn twilio_signature_valid(auth_token: &str, posted: &Posted) -> anyhow::Result<bool> {
    let mut data = posted.url.clone();
    for (name, value) in &posted.params {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())?;
    mac.update(data.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()) == posted.signature)
}

/// A sandbox with one Twilio and one Vonage account for acme, the clients' TLS trusting it.
struct Providers {
    sandbox: Sandbox,
    credentials: Arc<MemoryCredentials>,
    tls: TlsConfig,
    auth_token: String,
    _dir: tempfile::TempDir,
}

async fn providers() -> anyhow::Result<Providers> {
    let options = SandboxOptions { callback_delay: Duration::from_millis(10), ..SandboxOptions::default() };
    let (sandbox, ca, dir) = herald_tests::sandbox_with_ca(options).await?;
    let (sid, auth_token) = (format!("AC{}", "5e".repeat(16)), "twilio-auth-token-acme".to_owned());
    sandbox.twilio_add_account(&sid, &auth_token);
    sandbox.vonage_add_account("acmekey", "acme-vonage-secret");
    let credentials = Arc::new(MemoryCredentials::default());
    let twilio =
        TwilioCredentials { account_sid: sid, auth_token: Secret::new(&auth_token), from: Some(FROM.into()), messaging_service_sid: None };
    credentials.put("acme", "default", Credentials::Twilio(twilio));
    let vonage = VonageCredentials { api_key: "acmekey".into(), api_secret: Secret::new("acme-vonage-secret"), from: "Acme".into() };
    credentials.put("acme", "default", Credentials::Vonage(vonage));
    Ok(Providers { sandbox, credentials, tls: TlsConfig { extra_ca_file: Some(ca) }, auth_token, _dir: dir })
}

fn sms(n: usize, text: &str) -> Delivery {
    Delivery {
        channel: Channel::Sms,
        address: phone(n),
        content: Some(Content { parts: [("body".to_owned(), text.to_owned())].into(), ..Content::default() }),
        ..herald_stage::memory::delivery(n as u128)
    }
}

/// Scripts `answer` for `target` and checks the client's reading of it.
async fn check(
    world: &Providers,
    provider: &dyn Provider,
    kind: ProviderKind,
    delivery: &Delivery,
    answer: Answer,
    class: Class,
    code: &str,
) {
    let mut plan = FaultPlan::default();
    plan.tokens.insert(delivery.address.clone(), answer.clone());
    world.sandbox.set_faults(kind, plan);
    let error = provider.send(delivery).await.expect_err("a scripted refusal");
    assert_eq!((error.class, error.code.as_str()), (class, code), "{kind:?} {answer:?}");
    if let Some(secs) = answer.retry_after_secs {
        assert_eq!(error.retry_after, Some(Duration::from_secs(secs)));
    }
}

#[tokio::test]
async fn twilio_sms_answers_are_classified_by_twilio_code() -> anyhow::Result<()> {
    use Class::*;
    let world = providers().await?;
    let (sms_client, _) = twilio(
        &TwilioConfig { url: world.sandbox.twilio_url(), ..TwilioConfig::default() },
        &world.tls,
        Duration::from_secs(5),
        world.credentials.clone(),
    )?;

    let receipt = sms_client.send(&sms(1, "Your code is 1234")).await?;
    let accepted = world.sandbox.accepted(ProviderKind::Twilio);
    assert_eq!(accepted.len(), 1);
    assert!(receipt.provider_message_id.starts_with("SM") && receipt.provider_message_id.len() == 34, "{receipt:?}");
    assert_eq!(accepted[0].message_id.as_deref(), Some(receipt.provider_message_id.as_str()));
    assert_eq!(accepted[0].payload, json!({ "To": phone(1), "From": FROM, "Body": "Your code is 1234" }));
    assert_eq!(accepted[0].credential.as_deref(), Some(format!("AC{}", "5e".repeat(16)).as_str()));

    let delivery = sms(2, "hello");
    for (status, code, class) in [
        (400, "21211", Permanent),
        (400, "21614", Permanent),
        (400, "21612", Permanent),
        (400, "21610", OptedOut),
        (429, "20429", Throttled),
        (500, "20500", Outage),
        (503, "20503", Outage),
    ] {
        let answer = Answer { retry_after_secs: (status == 429).then_some(2), ..Answer::new(status, code) };
        check(&world, &sms_client, ProviderKind::Twilio, &delivery, answer, class, code).await;
    }
    world.sandbox.set_faults(ProviderKind::Twilio, FaultPlan::default());
    // The sandbox's own checks, unscripted: a number that is not E.164, a number that replied
    // STOP, a wrong auth token.
    let error = sms_client.send(&Delivery { address: "+0123".into(), ..sms(3, "x") }).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "21211"));
    world.sandbox.twilio_stop(&phone(4));
    let error = sms_client.send(&sms(4, "x")).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (OptedOut, "21610"));
    world.sandbox.twilio_add_account(&format!("AC{}", "5e".repeat(16)), "another-token");
    let error = sms_client.send(&sms(5, "x")).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "20003"));
    Ok(())
}

#[tokio::test]
async fn a_twilio_call_says_the_text_in_the_recipients_language_and_its_outcome_is_posted_back_signed() -> anyhow::Result<()> {
    let world = providers().await?;
    let receiver = Receiver::default();
    let callback = receiver.start().await?;
    let config = TwilioConfig {
        url: world.sandbox.twilio_url(),
        status_callback: Some(callback.clone()),
        machine_detection: Some("Enable".into()),
        ..TwilioConfig::default()
    };
    let (_, voice) = twilio(&config, &world.tls, Duration::from_secs(5), world.credentials.clone())?;
    let call = |n: usize| Delivery {
        channel: Channel::Voice,
        locale: Some("ko-KR".into()),
        content: Some(Content {
            parts: [("body".to_owned(), "주문하신 상품이 발송되었습니다".to_owned())].into(),
            locale: Some("ko".into()),
            ..Content::default()
        }),
        ..sms(n, "")
    };
    world.sandbox.twilio_call_outcome(&phone(2), "busy");
    let answered = voice.send(&call(1)).await?;
    let busy = voice.send(&call(2)).await?;
    assert!(answered.provider_message_id.starts_with("CA") && busy.provider_message_id.starts_with("CA"));

    let calls = world.sandbox.accepted(ProviderKind::TwilioVoice);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].payload["Twiml"],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say language=\"ko-KR\">주문하신 상품이 발송되었습니다</Say></Response>"
    );
    assert_eq!(calls[0].payload["MachineDetection"], "Enable");
    let own = format!("{callback}/acme/{}", call(1).delivery_id);
    assert_eq!(calls[0].payload["StatusCallback"], own.as_str(), "the delivery's own callback URL");

    // initiated, ringing, in-progress, completed for the first; initiated, ringing, busy for the other.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.posted().len() < 7 {
        ensure!(Instant::now() < deadline, "only {} callbacks arrived", receiver.posted().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let posted = receiver.posted();
    for p in &posted {
        ensure!(twilio_signature_valid(&world.auth_token, p)?, "a callback's X-Twilio-Signature does not verify: {p:?}");
        ensure!(!twilio_signature_valid("not-the-token", p)?, "a signature that verifies under any key proves nothing");
    }
    let statuses = |sid: &str| -> Vec<String> {
        posted.iter().filter(|p| p.params.get("CallSid").is_some_and(|s| s == sid)).map(|p| p.params["CallStatus"].clone()).collect()
    };
    assert_eq!(statuses(&answered.provider_message_id), ["initiated", "ringing", "in-progress", "completed"]);
    assert_eq!(statuses(&busy.provider_message_id), ["initiated", "ringing", "busy"]);
    // A call without a number to call from is refused before Twilio is called.
    world.credentials.put(
        "acme",
        "default",
        Credentials::Twilio(TwilioCredentials {
            account_sid: format!("AC{}", "5e".repeat(16)),
            auth_token: Secret::new(&world.auth_token),
            from: None,
            messaging_service_sid: Some(format!("MG{}", "1f".repeat(16))),
        }),
    );
    let error = voice.send(&call(3)).await.expect_err("no number");
    assert_eq!((error.class, error.code.as_str()), (Class::Permanent, "no_sender"));
    assert_eq!(world.sandbox.received().iter().filter(|r| r.provider == ProviderKind::TwilioVoice).count(), 2, "not called");
    Ok(())
}

#[tokio::test]
async fn vonage_answers_are_classified_by_their_status() -> anyhow::Result<()> {
    use Class::*;
    let world = providers().await?;
    let vonage = Vonage::new(
        &VonageConfig { url: world.sandbox.vonage_url(), ..VonageConfig::default() },
        &world.tls,
        Duration::from_secs(5),
        world.credentials.clone(),
    )?;
    let delivery = sms(1, "Your code is 1234");
    let receipt = vonage.send(&delivery).await?;
    let accepted = world.sandbox.accepted(ProviderKind::Vonage);
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].message_id.as_deref(), Some(receipt.provider_message_id.as_str()));
    assert_eq!(accepted[0].target, phone(1), "recorded in E.164");
    assert_eq!(accepted[0].payload["to"], phone(1).trim_start_matches('+'));
    assert_eq!(accepted[0].payload["client-ref"], delivery.delivery_id.to_string());
    assert_eq!(accepted[0].payload.get("api_secret"), None, "the sandbox does not keep the secret");

    for (answer, class, code) in [
        (Answer::new(200, "1"), Throttled, "throttled"),
        (Answer::new(200, "5"), Outage, "internal_error"),
        (Answer::new(200, "9"), Permanent, "partner_quota_violation"),
        (Answer::new(200, "15"), Permanent, "invalid_sender_address"),
        (Answer::new(503, "503"), Outage, "http_503"),
        (Answer::new(429, "429"), Throttled, "http_429"),
    ] {
        check(&world, &vonage, ProviderKind::Vonage, &delivery, answer, class, code).await;
    }
    world
        .sandbox
        .set_faults(ProviderKind::Vonage, FaultPlan { burst: Some(Burst { count: 1, retry_after_secs: 1 }), ..FaultPlan::default() });
    let error = vonage.send(&delivery).await.expect_err("throttled");
    assert_eq!((error.class, error.code.as_str()), (Throttled, "throttled"));
    world.sandbox.set_faults(ProviderKind::Vonage, FaultPlan::default());
    let error = vonage.send(&Delivery { address: "+1-415".into(), ..sms(2, "x") }).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "invalid_parameters"));
    world.sandbox.vonage_add_account("acmekey", "rotated");
    let error = vonage.send(&sms(3, "x")).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "invalid_credentials"));
    Ok(())
}

/// `herald up` sending SMS to the Twilio and Vonage sandboxes, `users` directory users with a
/// phone each (`u-<n>`), Twilio's breaker opening after 3 outage answers for 3 s.
struct World {
    env: TestEnv,
    sandbox: Sandbox,
    _up: Process,
    _ca: tempfile::TempDir,
}

async fn world(users: usize) -> anyhow::Result<World> {
    let (sandbox, ca_file, ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["sms"]
default_channels = ["sms"]

[deliver.tls]
extra_ca_file = "{ca}"

[deliver.twilio]
url = "{twilio}"

[deliver.twilio.breaker]
failures_to_open = 3
open_for = "3s"

[deliver.twilio.retry]
attempts = 5
initial = "200ms"
max = "1s"

[deliver.vonage]
url = "{vonage}"

[deliver.vonage.retry]
attempts = 5
initial = "200ms"
max = "1s"
"#,
        ca = ca_file.display(),
        twilio = sandbox.twilio_url(),
        vonage = sandbox.vonage_url(),
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let users: Vec<_> = (0..users).map(|n| json!({ "id": format!("u-{n}"), "phone": phone(n) })).collect();
    env.import_users(&users).await?;
    env.push_template(
        "code",
        "description = \"A sign-in code.\"\n\n[sample]\nn = 1\n\n[sms]\nbody = \"Acme: your code is {{ data.n }}\"\n",
    )
    .await?;
    let up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    for (provider, credentials) in accounts.each().into_iter().filter(|(p, _)| ["twilio", "vonage"].contains(p)) {
        let (status, answer) = env.api(Method::PUT, &format!("/providers/{provider}/default"), Some(credentials.clone())).await?;
        ensure!(status == 200, "PUT {provider} credentials: {status} {answer}");
    }
    Ok(World { env, sandbox, _up: up, _ca: ca })
}

impl World {
    async fn send(&self, users: std::ops::Range<usize>) -> anyhow::Result<()> {
        for n in users {
            let body = json!({ "template": "code", "recipients": [{ "user_id": format!("u-{n}") }], "data": { "n": n } });
            self.env.publish("acme", body.to_string()).await?;
        }
        Ok(())
    }

    /// Accepted SMS per phone number, over both providers.
    fn accepted_per_phone(&self) -> HashMap<String, Vec<ProviderKind>> {
        herald_tests::accepted_per_target(&self.sandbox, &SMS_PROVIDERS)
    }

    async fn wait_accepted(&self, n: usize) -> anyhow::Result<HashMap<String, Vec<ProviderKind>>> {
        herald_tests::wait_accepted(&self.sandbox, &SMS_PROVIDERS, n, PATIENCE).await
    }
}

#[tokio::test]
async fn sms_fails_over_to_vonage_while_twilio_is_down_and_returns_after_the_probe() -> anyhow::Result<()> {
    let world = world(32).await?;
    // Twilio answers every request 503: each SMS goes out through Vonage instead, once.
    world.sandbox.set_faults(ProviderKind::Twilio, FaultPlan { outage: true, ..FaultPlan::default() });
    let twilio_calls = || world.sandbox.received().iter().filter(|r| r.provider == ProviderKind::Twilio).count();
    world.send(0..10).await?;
    world.env.wait_for_events("acme", Status::Sent, 10, PATIENCE).await?;
    let first_wave = twilio_calls();
    assert!(first_wave >= 3, "Twilio was tried until its breaker opened ({first_wave} calls)");
    // The breaker is open now: the next wave goes straight to Vonage, Twilio is not called.
    world.send(10..20).await?;
    world.env.wait_for_events("acme", Status::Sent, 20, PATIENCE).await?;
    assert_eq!(twilio_calls(), first_wave, "the open breaker spared Twilio the second wave");
    let accepted = world.wait_accepted(20).await?;
    for n in 0..20 {
        assert_eq!(accepted.get(&phone(n)).map(Vec::as_slice), Some(&[ProviderKind::Vonage][..]), "u-{n}: {accepted:?}");
    }
    let events = world.env.events("acme").await?;
    let sent_by: Vec<&str> = events.iter().filter(|e| e.status == Status::Sent).filter_map(|e| e.detail.as_deref()).collect();
    assert!(sent_by.iter().all(|d| d.starts_with("vonage accepted")), "{sent_by:?}");

    // Twilio recovers. After `open_for` one SMS is the half-open probe; it succeeds, the breaker
    // closes and traffic returns to Twilio.
    world.sandbox.set_faults(ProviderKind::Twilio, FaultPlan::default());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    world.send(20..21).await?;
    world.wait_accepted(21).await?;
    world.send(21..32).await?;
    world.env.wait_for_events("acme", Status::Sent, 32, PATIENCE).await?;
    let accepted = world.wait_accepted(32).await?;
    for n in 20..32 {
        assert_eq!(accepted.get(&phone(n)).map(Vec::as_slice), Some(&[ProviderKind::Twilio][..]), "u-{n}: {accepted:?}");
    }
    world.env.wait_idle(PATIENCE).await?;
    let total: usize = world.accepted_per_phone().values().map(Vec::len).sum();
    assert_eq!(total, 32, "each SMS exactly once across both providers");
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!(statuses.get(&Status::Failed), None, "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn a_stop_opts_the_recipient_out_and_their_next_sms_is_opted_out_without_a_call() -> anyhow::Result<()> {
    let world = world(3).await?;
    world.sandbox.twilio_stop(&phone(1));
    world.send(0..3).await?;
    let events = world.env.wait_for_events("acme", Status::Unsubscribed, 1, PATIENCE).await?;
    world.env.wait_for_events("acme", Status::Sent, 2, PATIENCE).await?;
    let unsubscribed = events.iter().find(|e| e.status == Status::Unsubscribed).context("unsubscribed")?;
    assert_eq!((unsubscribed.reason.as_deref(), unsubscribed.user_id.as_deref()), (Some("21610"), Some("u-1")), "{unsubscribed:?}");
    let opted_out = events.iter().find(|e| e.status == Status::OptedOut).context("opted_out")?;
    assert_eq!(opted_out.reason.as_deref(), Some("recipient_opted_out"), "{opted_out:?}");

    // Recorded in the store: the user's SMS preference is off.
    let (status, preferences) = world.env.api(Method::GET, "/users/u-1/preferences", None).await?;
    ensure!(status == 200, "{status} {preferences}");
    assert_eq!(preferences["channels"]["sms"], json!(false), "{preferences}");

    // The next SMS to them is opted out, and no provider is called for it.
    world.send(1..2).await?;
    let events = world.env.wait_for_events("acme", Status::OptedOut, 2, PATIENCE).await?;
    world.env.wait_idle(PATIENCE).await?;
    let calls_to_them: Vec<_> = world.sandbox.received().into_iter().filter(|r| r.target == phone(1)).collect();
    assert_eq!(calls_to_them.len(), 1, "only the call Twilio answered 21610: {calls_to_them:?}");
    assert_eq!(calls_to_them[0].reason.as_deref(), Some("21610"));
    let statuses = count_statuses(&events);
    assert_eq!(statuses.get(&Status::Unsubscribed), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&Status::Sent), Some(&2), "{statuses:?}");
    assert_eq!(world.accepted_per_phone().len(), 2, "the other two got theirs");

    // The operator sees it, and removes it when the recipient opts back in.
    let listed = world.env.run(&["opt-outs", "list"]).await?;
    assert!(listed.contains(&phone(1)) && listed.contains("21610") && listed.contains("twilio"), "{listed}");
    let removed = world.env.run(&["opt-outs", "remove", &phone(1)]).await?;
    assert!(removed.contains("\"removed\": true"), "{removed}");
    assert!(!world.env.run(&["opt-outs", "list"]).await?.contains(&phone(1)), "removed");
    Ok(())
}
