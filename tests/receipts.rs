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
after = "1s"
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
    let (status, answer) = env.api(Method::PUT, "/providers/twilio/default", Some(accounts.twilio.clone())).await?;
    ensure!(status == 200, "PUT twilio credentials: {status} {answer}");
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
        let events = self.env.wait_for_events("acme", status, n, PATIENCE).await?;
        Ok(events.into_iter().filter(|e| e.status == status).collect())
    }

    /// Posts a Twilio callback to Herald: the status Herald answered.
    async fn post(&self, url: &str, params: &BTreeMap<String, String>, signature: &str) -> anyhow::Result<u16> {
        let answer = reqwest::Client::new().post(url).header("X-Twilio-Signature", signature).form(params).send().await?;
        Ok(answer.status().as_u16())
    }

    /// Messages stored in the receipts stream.
    async fn stored_receipts(&self) -> anyhow::Result<u64> {
        let js = async_nats::jetstream::new(async_nats::connect(self.env.server.url()).await?);
        Ok(js.get_stream("HERALD_RECEIPTS").await?.info().await?.state.messages)
    }
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

    // The first call to u-2 goes unanswered; the redial a second later is answered.
    let undelivered = world.events_with(Status::Undelivered, 2).await?;
    let first = undelivered.iter().find(|e| e.user_id.as_deref() == Some("u-2")).context("u-2's unanswered call")?;
    assert_eq!(first.reason.as_deref(), Some("no_answer"), "{first:?}");
    world.sandbox.twilio_call_outcome(&phone(2), "completed");

    // 3 SMS + u-0's call + u-2's redial delivered; u-1's call and both its redials busy.
    let delivered = world.events_with(Status::Delivered, 5).await?;
    let undelivered = world.events_with(Status::Undelivered, 4).await?;
    // Past the time a third redial of u-1 would have been placed.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
