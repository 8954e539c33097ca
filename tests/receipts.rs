//! Receipts: `herald up` on a real nats-server gives each Twilio message and call its own
//! status-callback URL on Herald's API; the Twilio sandbox posts the callbacks signed as Twilio
//! signs them. SMS receipts end as `delivered`; a busy or unanswered call is `undelivered` and
//! redialled per `receipts.redial`, each redial once. A callback whose `X-Twilio-Signature` is
//! wrong is refused with 401 and changes nothing; one the test signs itself with Twilio's
//! documented algorithm is applied, and posting it again adds nothing. Calls are counted in the
//! sandbox's own record.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine;
use herald_sandbox::{ProviderKind, Sandbox, SandboxOptions};
use herald_schemas::{Status, TrackEvent};
use herald_tests::{Options, Process, TestEnv, count_statuses};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

fn phone(n: usize) -> String {
    format!("+1415555{:04}", 2000 + n)
}

/// `herald up` sending SMS and calls through the Twilio sandbox, its callbacks going to Herald.
struct World {
    env: TestEnv,
    sandbox: Sandbox,
    /// `<api>/v1/receipts/twilio`.
    receipts: String,
    auth_token: String,
    account_sid: String,
    _up: Process,
    _ca: tempfile::TempDir,
}

async fn world(users: usize, callback_delay: Duration) -> anyhow::Result<World> {
    let (sandbox, ca_file, ca) = herald_tests::sandbox_with_ca(SandboxOptions { callback_delay, ..SandboxOptions::default() }).await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["sms", "voice"]
default_channels = ["sms"]

[deliver.tls]
extra_ca_file = "{ca}"

[deliver.twilio]
url = "{twilio}"

[receipts.redial]
attempts = 2
after = "3s"
on = ["busy", "no-answer"]
"#,
        ca = ca_file.display(),
        twilio = sandbox.twilio_url(),
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let users: Vec<_> = (0..users).map(|n| json!({ "id": format!("u-{n}"), "phone": phone(n) })).collect();
    env.import_users(&users).await?;
    env.push_template(
        "parcel",
        "description = \"A parcel is on its way.\"\n\n[sample]\nn = 1\n\n[sms]\nbody = \"Acme: parcel {{ data.n }} ships today\"\n\n[voice]\nbody = \"Your parcel {{ data.n }} ships today.\"\n",
    )
    .await?;
    let api = env.api_url("acme")?.trim_end_matches("/v1/tenants/acme").to_owned();
    let receipts = format!("{api}/v1/receipts/twilio");
    let up = env.spawn_with_env("up", &["up"], &[("HERALD__DELIVER__TWILIO__STATUS_CALLBACK", &receipts)])?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    env.put_provider("twilio", &accounts.twilio).await?;
    let field = |name: &str| {
        accounts.twilio[name].as_str().map(str::to_owned).with_context(|| format!("the sandbox's twilio account has no {name}"))
    };
    let (auth_token, account_sid) = (field("auth_token")?, field("account_sid")?);
    Ok(World { env, sandbox, receipts, auth_token, account_sid, _up: up, _ca: ca })
}

impl World {
    async fn send(&self, users: std::ops::Range<usize>, channel: &str) -> anyhow::Result<()> {
        for n in users {
            let body =
                json!({ "template": "parcel", "recipients": [{ "user_id": format!("u-{n}") }], "channels": [channel], "data": { "n": n } });
            self.env.publish("acme", body.to_string()).await?;
        }
        Ok(())
    }

    /// Calls (or SMS) the sandbox accepted per phone number.
    fn accepted(&self, kind: ProviderKind) -> HashMap<String, usize> {
        let mut per = HashMap::new();
        for r in self.sandbox.accepted(kind) {
            *per.entry(r.target).or_default() += 1;
        }
        per
    }

    async fn events_with(&self, status: Status, n: usize) -> anyhow::Result<Vec<TrackEvent>> {
        events_with(&self.env, status, n).await
    }

    /// Posts a Twilio callback to Herald: the status Herald answered.
    async fn post(&self, url: &str, params: &BTreeMap<String, String>, signature: &str) -> anyhow::Result<u16> {
        let answer = reqwest::Client::new().post(url).header("X-Twilio-Signature", signature).form(params).send().await?;
        Ok(answer.status().as_u16())
    }

    async fn stored_receipts(&self) -> anyhow::Result<u64> {
        stored_receipts(&self.env).await
    }
}

/// The `status` events on the tracking stream, once at least `n` of them are there.
async fn events_with(env: &TestEnv, status: Status, n: usize) -> anyhow::Result<Vec<TrackEvent>> {
    let events = env.wait_for_events("acme", status, n, PATIENCE).await?;
    Ok(events.into_iter().filter(|e| e.status == status).collect())
}

/// Messages stored in the receipts stream.
async fn stored_receipts(env: &TestEnv) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(env.server.url()).await?);
    Ok(js.get_stream("HERALD_RECEIPTS").await?.info().await?.state.messages)
}

/// Twilio's documented signature, and nothing else: base64(HMAC-SHA1(auth token, the full URL
/// followed by each POST parameter's name and value, sorted by name)).
fn twilio_signature(auth_token: &str, url: &str, params: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut data = url.to_owned();
    for (name, value) in params {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())?;
    mac.update(data.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn sms_receipts_end_delivered_and_busy_or_unanswered_calls_are_redialled_per_policy_once_each() -> anyhow::Result<()> {
    let world = world(3, Duration::from_millis(30)).await?;
    // u-0 answers; u-1 is busy every time; u-2 does not answer the first call, then does.
    world.sandbox.twilio_call_outcome(&phone(1), "busy");
    world.sandbox.twilio_call_outcome(&phone(2), "no-answer");
    world.send(0..3, "sms").await?;
    world.send(0..3, "voice").await?;

    // The first call to u-2 goes unanswered; the redial three seconds later is answered (the test switches the outcome in between).
    let undelivered = world.events_with(Status::Undelivered, 2).await?;
    let first = undelivered.iter().find(|e| e.user_id.as_deref() == Some("u-2")).context("u-2's unanswered call")?;
    assert_eq!(first.reason.as_deref(), Some("no_answer"), "{first:?}");
    world.sandbox.twilio_call_outcome(&phone(2), "completed");

    // 3 SMS + u-0's call + u-2's redial delivered; u-1's call and both its redials busy.
    let delivered = world.events_with(Status::Delivered, 5).await?;
    let undelivered = world.events_with(Status::Undelivered, 4).await?;
    // Past the time a third redial of u-1 would have been placed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    world.env.wait_idle(PATIENCE).await?;

    let calls = world.accepted(ProviderKind::TwilioVoice);
    assert_eq!(calls.get(&phone(0)), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&phone(1)), Some(&3), "the first call and receipts.redial.attempts = 2 redials: {calls:?}");
    assert_eq!(calls.get(&phone(2)), Some(&2), "one redial, answered: {calls:?}");
    let texts = world.accepted(ProviderKind::Twilio);
    assert!((0..3).all(|n| texts.get(&phone(n)) == Some(&1)), "each SMS once: {texts:?}");

    let events = world.env.events("acme").await?;
    let statuses = count_statuses(&events);
    assert_eq!(statuses.get(&Status::Delivered), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&Status::Undelivered), Some(&4), "{statuses:?}");
    assert_eq!(statuses.get(&Status::Sent), Some(&(3 + 6)), "3 SMS, 3 first calls and 3 redials: {statuses:?}");
    let redials: Vec<&TrackEvent> =
        events.iter().filter(|e| e.status == Status::Deferred && e.reason.as_deref() == Some("redial")).collect();
    assert_eq!(redials.len(), 3, "{redials:?}");
    assert!(redials.iter().all(|e| e.deferred_until.is_some() && e.stage == "receipts"), "{redials:?}");
    let busy: Vec<_> = undelivered.iter().filter(|e| e.user_id.as_deref() == Some("u-1")).collect();
    assert_eq!(busy.len(), 3, "{undelivered:?}");
    assert!(busy.iter().all(|e| e.reason.as_deref() == Some("busy")), "{busy:?}");
    let last = busy.iter().filter_map(|e| e.detail.as_deref()).filter(|d| d.contains("no redial left")).count();
    assert_eq!(last, 1, "the third busy call says no redial is left: {busy:?}");
    let sms_delivered = delivered.iter().filter(|e| e.channel == Some(herald_schemas::Channel::Sms)).count();
    assert_eq!(sms_delivered, 3, "{delivered:?}");
    // The tracking stream carries ids, never the phone numbers.
    let text = serde_json::to_string(&events)?;
    assert!(!text.contains("+1415555"), "a phone number reached the tracking stream");

    // `herald trace` tells u-2's call as it happened: sent, unanswered, redialled, answered.
    let notification = first.notification_id.context("a notification id")?;
    let trace = world.env.run(&["trace", &notification.to_string()]).await?;
    let order: Vec<&str> =
        ["accepted", "deliver   sent", "undelivered (no_answer)", "deferred (redial)", "deliver   sent", "delivered"].to_vec();
    let mut at = 0;
    for step in &order {
        let found = trace[at..].find(step).with_context(|| format!("`{step}` after position {at} of the trace:\n{trace}"))?;
        at += found + step.len();
    }
    assert_eq!(trace.matches("  delivery ").count(), 2, "the first call and its redial:\n{trace}");
    let json: Vec<TrackEvent> = serde_json::from_str(&world.env.run(&["trace", &notification.to_string(), "--json"]).await?)?;
    let expected = events.iter().filter(|e| e.notification_id == Some(notification)).count();
    assert_eq!(json.len(), expected, "every event of the notification, and only those");

    // The events' schema is published by the API, versioned, exactly as committed.
    let api = world.receipts.trim_end_matches("/v1/receipts/twilio");
    let names: Vec<String> = reqwest::get(format!("{api}/v1/schemas")).await?.json().await?;
    assert!(names.iter().any(|n| n == "track-event.v1.schema.json") && names.iter().any(|n| n == "receipt.v1.schema.json"), "{names:?}");
    let served = reqwest::get(format!("{api}/v1/schemas/track-event.v1.schema.json")).await?.text().await?;
    let committed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/json/track-event.v1.schema.json"))?;
    assert_eq!(served, committed);
    assert_eq!(reqwest::get(format!("{api}/v1/schemas/nothing.v9.schema.json")).await?.status().as_u16(), 404);
    Ok(())
}

#[tokio::test]
async fn a_callback_with_a_bad_signature_is_refused_and_a_valid_one_is_applied_once_however_often_posted() -> anyhow::Result<()> {
    // The sandbox's own callbacks would come an hour late: every callback here is the test's.
    let world = world(2, Duration::from_secs(3600)).await?;
    world.send(0..1, "sms").await?;
    world.send(1..2, "voice").await?;
    world.events_with(Status::Sent, 2).await?;
    world.env.wait_idle(PATIENCE).await?;
    let sent = |kind| world.sandbox.accepted(kind).into_iter().next().context("a sent message");
    let (text, call) = (sent(ProviderKind::Twilio)?, sent(ProviderKind::TwilioVoice)?);
    let callback = |r: &herald_sandbox::Received| r.payload["StatusCallback"].as_str().map(str::to_owned).context("StatusCallback");
    let (text_url, call_url) = (callback(&text)?, callback(&call)?);
    assert!(text_url.starts_with(&world.receipts) && text_url.contains("/acme/"), "{text_url}");
    let params = |sid_name: &str, sid: &str, status_name: &str, status: &str| -> BTreeMap<String, String> {
        [
            ("AccountSid", world.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            (sid_name, sid),
            (status_name, status),
            ("From", "+15005550006"),
            ("To", "+14155552000"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
    };
    let delivered = params("MessageSid", text.message_id.as_deref().unwrap_or_default(), "MessageStatus", "delivered");
    let signature = twilio_signature(&world.auth_token, &text_url, &delivered)?;
    let before = (world.stored_receipts().await?, world.env.events("acme").await?.len());

    // Refused, each with 401, and nothing stored or reported: a signature under another token,
    // a parameter changed after signing, another delivery's URL, no signature at all.
    let mut altered = delivered.clone();
    altered.insert("MessageStatus".into(), "undelivered".into());
    let other_url = format!("{}/acme/{}", world.receipts, uuid::Uuid::from_u128(7));
    let refusals = [
        world.post(&text_url, &delivered, &twilio_signature("not-the-auth-token", &text_url, &delivered)?).await?,
        world.post(&text_url, &altered, &signature).await?,
        world.post(&other_url, &delivered, &signature).await?,
        world.post(&text_url, &delivered, "").await?,
    ];
    assert_eq!(refusals, [401; 4]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.env.wait_idle(PATIENCE).await?;
    assert_eq!((world.stored_receipts().await?, world.env.events("acme").await?.len()), before, "a refused callback changes nothing");

    // Signed as Twilio documents it: applied. Posted three times: stored once, reported once.
    for _ in 0..3 {
        assert_eq!(world.post(&text_url, &delivered, &signature).await?, 204);
    }
    let events = world.events_with(Status::Delivered, 1).await?;
    assert_eq!(events[0].user_id.as_deref(), Some("u-0"), "{events:?}");
    // A busy call, posted twice: one redial, so the sandbox sees two calls in all.
    let busy = params("CallSid", call.message_id.as_deref().unwrap_or_default(), "CallStatus", "busy");
    let signature = twilio_signature(&world.auth_token, &call_url, &busy)?;
    for _ in 0..2 {
        assert_eq!(world.post(&call_url, &busy, &signature).await?, 204);
    }
    let deadline = Instant::now() + PATIENCE;
    while world.sandbox.accepted(ProviderKind::TwilioVoice).len() < 2 {
        ensure!(Instant::now() < deadline, "the busy call was not redialled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.env.wait_idle(PATIENCE).await?;
    assert_eq!(world.sandbox.accepted(ProviderKind::TwilioVoice).len(), 2, "one redial however often the receipt came");
    assert_eq!(world.stored_receipts().await? - before.0, 2, "one stored receipt per (message, status)");
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!((statuses.get(&Status::Delivered), statuses.get(&Status::Undelivered)), (Some(&1), Some(&1)), "{statuses:?}");
    Ok(())
}

/// `herald up` sending e-mail through the SendGrid sandbox, whose signed Event Webhook posts to
/// Herald's `/v1/receipts/sendgrid/acme`.
struct Mail {
    env: TestEnv,
    sandbox: Sandbox,
    webhook: String,
    account: serde_json::Value,
    _up: Process,
    _ca: tempfile::TempDir,
}

fn address(n: usize) -> String {
    format!("u-{n}@example.com")
}

async fn mail_world(users: usize) -> anyhow::Result<Mail> {
    let (sandbox, ca_file, ca) =
        herald_tests::sandbox_with_ca(SandboxOptions { callback_delay: Duration::from_millis(30), ..SandboxOptions::default() }).await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["email"]
default_channels = ["email"]

[deliver.tls]
extra_ca_file = "{ca}"

[deliver.sendgrid]
url = "{sendgrid}"

[deliver.failover]
email = ["sendgrid"]
"#,
        ca = ca_file.display(),
        sendgrid = sandbox.sendgrid_url(),
    );
    let env = TestEnv::with(Options { max_deliveries: 8, extra_config, ..Options::default() }).await?;
    let users: Vec<_> = (0..users).map(|n| json!({ "id": format!("u-{n}"), "email": address(n) })).collect();
    env.import_users(&users).await?;
    env.push_template(
        "receipt",
        "description = \"A receipt.\"\n\n[sample]\nn = 1\n\n[email]\nsubject = \"Receipt {{ data.n }}\"\ntext = \"Thanks for order {{ data.n }}.\"\n",
    )
    .await?;
    let up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    let accounts = sandbox.accounts("acme", "com.example.acme")?;
    env.put_provider("sendgrid", &accounts.sendgrid).await?;
    let webhook = format!("{}/v1/receipts/sendgrid/acme", env.api_url("acme")?.trim_end_matches("/v1/tenants/acme"));
    sandbox.sendgrid_event_webhook(&webhook);
    Ok(Mail { env, sandbox, webhook, account: accounts.sendgrid.clone(), _up: up, _ca: ca })
}

impl Mail {
    async fn send(&self, users: std::ops::Range<usize>) -> anyhow::Result<()> {
        for n in users {
            let body = json!({ "template": "receipt", "recipients": [{ "user_id": format!("u-{n}") }], "data": { "n": n } });
            self.env.publish("acme", body.to_string()).await?;
        }
        Ok(())
    }

    /// The message id SendGrid answered for the (first) e-mail to `n`.
    fn message_id(&self, n: usize) -> anyhow::Result<String> {
        self.sandbox
            .accepted(ProviderKind::Sendgrid)
            .into_iter()
            .find(|r| r.target == address(n))
            .and_then(|r| r.message_id)
            .with_context(|| format!("SendGrid accepted nothing for {}", address(n)))
    }

    fn accepted_for(&self, n: usize) -> usize {
        self.sandbox.accepted(ProviderKind::Sendgrid).iter().filter(|r| r.target == address(n)).count()
    }

    async fn events_with(&self, status: Status, n: usize) -> anyhow::Result<Vec<TrackEvent>> {
        events_with(&self.env, status, n).await
    }

    /// Posts `body` to the webhook with SendGrid's two headers: the status Herald answered.
    async fn post(&self, body: &str, timestamp: &str, signature: &str) -> anyhow::Result<u16> {
        let answer = reqwest::Client::new()
            .post(&self.webhook)
            .header("Content-Type", "application/json")
            .header("X-Twilio-Email-Event-Webhook-Signature", signature)
            .header("X-Twilio-Email-Event-Webhook-Timestamp", timestamp)
            .body(body.to_owned())
            .send()
            .await?;
        Ok(answer.status().as_u16())
    }

    async fn stored_receipts(&self) -> anyhow::Result<u64> {
        stored_receipts(&self.env).await
    }
}

/// SendGrid's documented Signed Event Webhook signature, and nothing else: ECDSA P-256 with
/// SHA-256 over the timestamp followed by the raw body, base64 of the DER signature.
fn sendgrid_signature(key: &p256::ecdsa::SigningKey, timestamp: &str, body: &str) -> String {
    use p256::ecdsa::signature::Signer;
    let signature: p256::ecdsa::Signature = key.sign(format!("{timestamp}{body}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

#[tokio::test]
async fn sendgrid_events_report_delivery_bounces_complaints_and_engagement_and_suppress_the_addresses() -> anyhow::Result<()> {
    let world = mail_world(4).await?;
    world.send(0..4).await?;
    // The sandbox posts `processed` then `delivered` for each: one `delivered` event each.
    world.events_with(Status::Delivered, 4).await?;
    // u-0's mail server bounces it for good; u-1 reports it as spam; u-2 opens it and clicks.
    let post = |n: usize, event: &'static str, extra: serde_json::Value| {
        let world = &world;
        async move { world.sandbox.sendgrid_post_event(&world.message_id(n)?, event, extra).await }
    };
    let answers = [
        post(0, "bounce", json!({ "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 <u-0@example.com>: user unknown" })).await?,
        post(1, "spamreport", json!({})).await?,
        post(2, "open", json!({})).await?,
        post(2, "click", json!({ "url": "https://acme.example/orders/2" })).await?,
        post(3, "bounce", json!({ "type": "blocked", "status": "4.7.1" })).await?,
    ];
    assert_eq!(answers, [204; 5], "Herald took each signed post");
    let bounced = world.events_with(Status::Bounced, 2).await?;
    let complained = world.events_with(Status::Complained, 1).await?;
    let clicked = world.events_with(Status::Clicked, 1).await?;
    world.events_with(Status::Opened, 1).await?;
    let user = |e: &TrackEvent| e.user_id.clone().unwrap_or_default();
    let mut reasons: Vec<(String, String)> = bounced.iter().map(|e| (user(e), e.reason.clone().unwrap_or_default())).collect();
    reasons.sort();
    assert_eq!(reasons, [("u-0".into(), "bounce".into()), ("u-3".into(), "blocked".into())]);
    assert_eq!(user(&complained[0]), "u-1");
    assert!(clicked[0].detail.as_deref().unwrap_or_default().contains("https://acme.example/orders/2"), "{clicked:?}");

    // The hard bounce and the complaint suppressed those two addresses in the store; a block did not.
    let (status, opt_outs) = world.env.api(Method::GET, "/opt-outs", None).await?;
    ensure!(status == 200, "{status} {opt_outs}");
    let mut suppressed: Vec<&str> = opt_outs["opt_outs"].as_array().into_iter().flatten().filter_map(|o| o["address"].as_str()).collect();
    suppressed.sort_unstable();
    assert_eq!(suppressed, [address(0), address(1)], "{opt_outs}");
    // The next e-mail to each: the suppressed two are opted_out without a call, the others sent.
    world.send(0..4).await?;
    let opted_out = world.events_with(Status::OptedOut, 2).await?;
    world.events_with(Status::Delivered, 6).await?;
    world.env.wait_idle(PATIENCE).await?;
    let mut whom: Vec<String> = opted_out.iter().map(user).collect();
    whom.sort();
    assert_eq!(whom, ["u-0", "u-1"]);
    assert_eq!((0..4).map(|n| world.accepted_for(n)).collect::<Vec<_>>(), [1, 1, 2, 2], "SendGrid's own count per address");
    // Ids only on the tracking stream: no address, no SendGrid bounce text.
    let text = serde_json::to_string(&world.env.events("acme").await?)?;
    assert!(!text.contains("@example.com"), "an address reached the tracking stream");
    Ok(())
}

#[tokio::test]
async fn a_sendgrid_post_with_a_bad_signature_is_refused_and_one_signed_as_documented_is_applied_once() -> anyhow::Result<()> {
    let world = mail_world(2).await?;
    world.send(0..2).await?;
    world.events_with(Status::Delivered, 2).await?;
    world.env.wait_idle(PATIENCE).await?;
    let message = world.message_id(1)?;
    let sent = world.sandbox.accepted(ProviderKind::Sendgrid).into_iter().find(|r| r.target == address(1)).context("u-1's e-mail")?;
    let args = sent.payload["custom_args"].clone();
    let event = json!([{
        "email": address(1), "timestamp": 1_800_000_000, "event": "open", "sg_event_id": "test-open-1",
        "sg_message_id": format!("{message}.filter0001.16648.5515E0B88.0"),
        "herald_delivery_id": args["herald_delivery_id"], "herald_notification_id": args["herald_notification_id"], "herald_tenant": "acme",
    }])
    .to_string();
    let timestamp = "1800000000";
    // A key of the test's own: Herald checks against the stored key, which is the sandbox's.
    let own = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let before = (world.stored_receipts().await?, world.env.events("acme").await?.len());
    let signed = sendgrid_signature(&own, timestamp, &event);
    let refusals = [
        world.post(&event, timestamp, &signed).await?,
        world.post(&event, timestamp, "MEUCIQDnot-a-signature").await?,
        world.post(&event, timestamp, "").await?,
    ];
    assert_eq!(refusals, [401; 3]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.env.wait_idle(PATIENCE).await?;
    assert_eq!((world.stored_receipts().await?, world.env.events("acme").await?.len()), before, "a refused post changes nothing");

    // The tenant's stored verification key becomes the test's: the same post, signed as SendGrid
    // documents, is applied; its body altered after signing or its timestamp changed is refused.
    use p256::pkcs8::EncodePublicKey;
    let public = base64::engine::general_purpose::STANDARD.encode(own.verifying_key().to_public_key_der()?.as_bytes());
    let mut account = world.account.clone();
    account["event_webhook_public_key"] = json!(public);
    world.env.put_provider("sendgrid", &account).await?;
    assert_eq!(world.post(&event.replace("open", "click"), timestamp, &signed).await?, 401, "the body altered after signing");
    assert_eq!(world.post(&event, "1800000001", &signed).await?, 401, "another timestamp");
    for _ in 0..3 {
        assert_eq!(world.post(&event, timestamp, &signed).await?, 204);
    }
    let opened = world.events_with(Status::Opened, 1).await?;
    assert_eq!(opened[0].user_id.as_deref(), Some("u-1"), "{opened:?}");
    world.env.wait_idle(PATIENCE).await?;
    assert_eq!(world.stored_receipts().await? - before.0, 1, "posted three times, stored once");
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!(statuses.get(&Status::Opened), Some(&1), "{statuses:?}");
    Ok(())
}
