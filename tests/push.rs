//! Real push end to end: the `herald` binary on a real nats-server delivering to the APNs, FCM
//! and web push sandboxes over TLS (HTTP/2 for APNs). Every count is the sandbox's own record of
//! the calls it received, refusals and repeats included — never Herald's events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use herald_sandbox::{Accounts, Burst, FaultPlan, ProviderKind, Received, Sandbox, SandboxOptions};
use herald_schemas::Status;
use herald_tests::{Options, Process, TestEnv, count_statuses};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const TOPIC: &str = "com.example.acme";

/// A test's world: NATS, `herald up` configured for the sandboxes, tenant `acme`'s accounts
/// registered on both sides, and users with one device each.
struct World {
    env: TestEnv,
    sandbox: Sandbox,
    _up: Process,
    _ca: tempfile::TempDir,
}

fn ios_token(n: usize) -> String {
    format!("{:064x}", 0xA000_0000 + n)
}

fn android_token(n: usize) -> String {
    format!("fcm:APA91b-registration-token-{n:06}")
}

/// The template every test sends: a push part and a web push part.
fn write_template(root: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = root.join("templates/parcel");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("template.toml"),
        r#"description = "A parcel is on its way."
category = "orders"

[sample]
n = 1

[push]
title = "Parcel {{ data.n }} shipped"
body = "It arrives tomorrow."

[web_push]
title = "Parcel {{ data.n }} shipped"
body = "It arrives tomorrow."
"#,
    )?;
    Ok(root.join("templates"))
}

/// `users` per platform: `ios-<n>`, `android-<n>`, `web-<n>`.
async fn world(users: usize, deliver_extra: &str, env_vars: &[(&str, &str)]) -> anyhow::Result<World> {
    let (sandbox, ca_file, ca) = herald_tests::sandbox_with_ca(SandboxOptions::default()).await?;
    let extra_config = format!(
        r#"
[enrich]
enabled_channels = ["push", "web_push"]
default_channels = ["push", "web_push"]

[deliver.tls]
extra_ca_file = "{ca}"

[deliver.apns]
production_url = "{apns}"
development_url = "{apns}"

[deliver.fcm]
url = "{fcm}"
{deliver_extra}
"#,
        ca = ca_file.display(),
        apns = sandbox.apns_url(),
        fcm = sandbox.fcm_url(),
    );
    let env = TestEnv::with(Options { max_deliveries: 12, extra_config, ..Options::default() }).await?;
    let accounts = sandbox.accounts("acme", TOPIC)?;
    let mut jsonl = String::new();
    for n in 0..users {
        let subscriber = sandbox.web_push_subscribe(Some(&accounts.vapid_public_key));
        for (user, device) in [
            (format!("ios-{n}"), json!({ "id": "phone", "platform": "ios", "token": ios_token(n), "app_id": TOPIC })),
            (format!("android-{n}"), json!({ "id": "phone", "platform": "android", "token": android_token(n), "app_id": TOPIC })),
            (format!("web-{n}"), json!({ "id": "browser", "platform": "web", "subscription": subscriber.subscription_json() })),
        ] {
            jsonl.push_str(&json!({ "id": user, "devices": [device] }).to_string());
            jsonl.push('\n');
        }
    }
    let directory = env.dir.path().join("users.jsonl");
    std::fs::write(&directory, jsonl)?;
    let imported = env.import(&directory, true).await?;
    ensure!(imported.contains("; 0 lines rejected"), "the directory import refused users:\n{imported}");
    let templates = write_template(env.dir.path())?;
    env.run(&["templates", "push", &templates.to_string_lossy(), "--offline"]).await?;
    let up = env.spawn_with_env("up", &["up"], env_vars)?;
    env.wait_for_api().await?;
    register(&env, &accounts).await?;
    Ok(World { env, sandbox, _up: up, _ca: ca })
}

/// Gives Herald the tenant's credentials through the admin API.
async fn register(env: &TestEnv, accounts: &Accounts) -> anyhow::Result<()> {
    for (provider, credentials) in accounts.each() {
        let (status, answer) = env.api(Method::PUT, &format!("/providers/{provider}/default"), Some(credentials.clone())).await?;
        ensure!(status == 200, "PUT {provider} credentials: {status} {answer}");
    }
    Ok(())
}

impl World {
    /// Sends the template to each user (one notification each) and returns how many.
    async fn send(&self, users: impl IntoIterator<Item = String>) -> anyhow::Result<usize> {
        let mut sent = 0;
        for (n, user) in users.into_iter().enumerate() {
            let channel = if user.starts_with("web-") { "web_push" } else { "push" };
            let body = json!({ "template": "parcel", "recipients": [{ "user_id": user }], "channels": [channel], "data": { "n": n } });
            self.env.publish("acme", body.to_string()).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Waits until `provider` accepted `n` calls; returns them.
    async fn accepted(&self, provider: ProviderKind, n: usize, patience: Duration) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + patience;
        loop {
            let accepted = self.sandbox.accepted(provider);
            if accepted.len() >= n {
                return Ok(accepted);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "waited {patience:?} for {n} {provider:?} acceptances, saw {}; Herald reported: {}",
                    accepted.len(),
                    self.outcomes().await?
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Herald's events summarised by status and reason, for a failure message.
    async fn outcomes(&self) -> anyhow::Result<String> {
        let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for event in self.env.events("acme").await? {
            let key = format!("{:?}/{}/{}", event.status, event.reason.as_deref().unwrap_or("-"), event.detail.as_deref().unwrap_or("-"));
            *seen.entry(key).or_default() += 1;
        }
        Ok(format!("{seen:?}"))
    }

    /// Calls the sandbox received for `provider`, per target, repeats and refusals included.
    fn calls_per_target(&self, provider: ProviderKind) -> HashMap<String, Vec<Received>> {
        let mut calls: HashMap<String, Vec<Received>> = HashMap::new();
        for call in self.sandbox.received().into_iter().filter(|r| r.provider == provider) {
            calls.entry(call.target.clone()).or_default().push(call);
        }
        calls
    }
}

/// Every target was accepted exactly once (and nothing else was accepted).
fn once_each(accepted: &[Received], expected: usize) -> anyhow::Result<()> {
    let mut per_target: HashMap<&str, usize> = HashMap::new();
    for call in accepted {
        *per_target.entry(call.target.as_str()).or_default() += 1;
    }
    ensure!(per_target.len() == expected, "{} distinct targets accepted, expected {expected}", per_target.len());
    let twice: Vec<_> = per_target.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "accepted more than once: {twice:?}");
    Ok(())
}

#[tokio::test]
async fn a_token_answered_410_is_disabled_and_never_called_again() -> anyhow::Result<()> {
    let world = world(2, "", &[]).await?;
    let gone = ios_token(0);
    let mut plan = FaultPlan::default();
    plan.tokens.insert(gone.clone(), herald_sandbox::Answer::new(410, "Unregistered"));
    world.sandbox.set_faults(ProviderKind::Apns, plan);

    world.send(["ios-0".to_owned(), "ios-1".to_owned()]).await?;
    let events = world.env.wait_for_events("acme", Status::TokenInvalidated, 1, PATIENCE).await?;
    let invalidated = events.iter().find(|e| e.status == Status::TokenInvalidated).context("token_invalidated")?;
    assert_eq!(invalidated.reason.as_deref(), Some("Unregistered"), "Apple's reason");
    world.accepted(ProviderKind::Apns, 1, PATIENCE).await?;

    // The directory says so, with the reason and the time.
    let (status, devices) = world.env.api(Method::GET, "/users/ios-0/devices", None).await?;
    assert_eq!(status, 200, "{devices}");
    let device = &devices[0];
    assert_eq!(device["disabled_reason"], "Unregistered", "{device}");
    assert!(device["disabled_at"].is_string(), "{device}");

    // Three more notifications to the same user: the disabled device is not tried.
    world.send(["ios-0".to_owned(), "ios-0".to_owned(), "ios-0".to_owned()]).await?;
    world.env.wait_for_events("acme", Status::Accepted, 5, PATIENCE).await?;
    world.env.wait_idle(PATIENCE).await?;
    let calls = world.calls_per_target(ProviderKind::Apns);
    assert_eq!(calls[&gone].len(), 1, "exactly one call ever reached the sandbox for the dead token");
    assert_eq!(calls[&gone][0].status, 410);
    let events = world.env.events("acme").await?;
    let statuses = count_statuses(&events);
    assert_eq!(statuses.get(&Status::Sent), Some(&1), "only ios-1 was sent: {statuses:?}");
    let skipped = events.iter().filter(|e| e.status == Status::Skipped && e.user_id.as_deref() == Some("ios-0")).count();
    assert_eq!(skipped, 3, "each later notification to ios-0 says why nothing went: {statuses:?}");

    // The app registers the token again: the device is enabled and gets pushes.
    world.sandbox.set_faults(ProviderKind::Apns, FaultPlan::default());
    let device = json!({ "id": "phone", "platform": "ios", "token": gone, "app_id": TOPIC });
    let (status, answer) = world.env.api(Method::PUT, "/users/ios-0/devices/phone", Some(device)).await?;
    assert_eq!(status, 204, "{answer}");
    world.send(["ios-0".to_owned()]).await?;
    world.accepted(ProviderKind::Apns, 2, PATIENCE).await?;
    assert_eq!(world.calls_per_target(ProviderKind::Apns)[&gone].len(), 2, "re-registered, so called once more");
    Ok(())
}

#[tokio::test]
async fn a_burst_of_429_with_retry_after_2_delays_retries_by_2_s_and_loses_nothing() -> anyhow::Result<()> {
    let world = world(30, "", &[]).await?;
    world
        .sandbox
        .set_faults(ProviderKind::Fcm, FaultPlan { burst: Some(Burst { count: 20, retry_after_secs: 2 }), ..FaultPlan::default() });

    let sent = world.send((0..30).map(|n| format!("android-{n}"))).await?;
    let accepted = world.accepted(ProviderKind::Fcm, sent, PATIENCE).await?;
    once_each(&accepted, sent)?;
    let calls = world.calls_per_target(ProviderKind::Fcm);
    let throttled: Vec<_> = calls.values().filter(|c| c.iter().any(|r| r.status == 429)).collect();
    assert!(throttled.len() >= 5, "the burst refused several distinct deliveries ({})", throttled.len());
    let refusals: usize = calls.values().map(|c| c.iter().filter(|r| r.status == 429).count()).sum();
    assert_eq!(refusals, 20, "the whole burst was used");
    for target in throttled {
        for pair in target.windows(2) {
            if pair[0].status == 429 {
                let waited = pair[1].at.duration_since(pair[0].at);
                assert!(
                    waited >= jiff::SignedDuration::from_millis(1990),
                    "{}: retried {waited:?} after a 429 with Retry-After: 2",
                    pair[0].target
                );
            }
        }
    }
    world.env.wait_idle(PATIENCE).await?;
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!(statuses.get(&Status::Sent), Some(&sent), "{statuses:?}");
    assert_eq!(statuses.get(&Status::DeadLettered), None, "{statuses:?}");
    Ok(())
}

/// The (route, kind) of every breaker alert received so far.
async fn breaker_alerts(mut alerts: async_nats::Subscriber) -> anyhow::Result<Vec<(String, String)>> {
    use futures::StreamExt;
    let mut kinds = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), alerts.next()).await {
        let alert: Value = serde_json::from_slice(&message.payload)?;
        kinds.push((alert["route"].as_str().unwrap_or_default().to_owned(), alert["kind"].as_str().unwrap_or_default().to_owned()));
    }
    Ok(kinds)
}

/// Time for every call of `count` users of two routes to be accepted.
async fn flow(world: &World, first: usize, count: usize) -> anyhow::Result<Duration> {
    let (fcm_before, web_before) = (world.sandbox.accepted(ProviderKind::Fcm).len(), world.sandbox.accepted(ProviderKind::WebPush).len());
    let started = Instant::now();
    world.send((first..first + count).map(|n| format!("android-{n}"))).await?;
    world.send((first..first + count).map(|n| format!("web-{n}"))).await?;
    world.accepted(ProviderKind::Fcm, fcm_before + count, PATIENCE).await?;
    world.accepted(ProviderKind::WebPush, web_before + count, PATIENCE).await?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn an_apns_outage_of_60_s_leaves_fcm_and_web_push_at_full_speed_and_loses_no_apns_delivery() -> anyhow::Result<()> {
    // Short retry delays, so recovery after the outage is quick; holds may last the outage.
    let deliver = r#"
[deliver.apns.retry]
attempts = 10
initial = "1s"
max = "5s"

[deliver.apns.breaker]
failures_to_open = 5
open_for = "3s"
"#;
    let world = world(200, deliver, &[("HERALD__RUNNER__HOLD_MAX", "2m")]).await?;
    // A warm-up and the baseline: FCM and web push with APNs healthy.
    flow(&world, 0, 20).await?;
    let baseline = flow(&world, 20, 80).await?;

    let alerts = async_nats::connect(world.env.server.url()).await?.subscribe("herald.alerts.>").await?;
    world.sandbox.set_faults(ProviderKind::Apns, FaultPlan { outage: true, ..FaultPlan::default() });
    let outage = Instant::now();
    let apns = world.send((0..100).map(|n| format!("ios-{n}"))).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = flow(&world, 100, 80).await?;
    assert!(
        during <= baseline * 2 + Duration::from_secs(1),
        "FCM and web push took {during:?} during the APNs outage, {baseline:?} before it"
    );
    assert!(world.sandbox.accepted(ProviderKind::Apns).is_empty(), "nothing accepted during the outage");

    let remaining = Duration::from_secs(60).saturating_sub(outage.elapsed());
    tokio::time::sleep(remaining).await;
    let refused_during_outage = world.sandbox.received().iter().filter(|r| r.provider == ProviderKind::Apns).count();
    world.sandbox.set_faults(ProviderKind::Apns, FaultPlan::default());

    let accepted = world.accepted(ProviderKind::Apns, apns, Duration::from_secs(90)).await?;
    once_each(&accepted, apns)?;
    assert!(
        refused_during_outage < apns,
        "the breaker held deliveries instead of calling a dead provider for each ({refused_during_outage} calls for {apns})"
    );
    world.env.wait_idle(PATIENCE).await?;
    let statuses = count_statuses(&world.env.events("acme").await?);
    assert_eq!(statuses.get(&Status::Sent), Some(&(100 + 2 * 180)), "{statuses:?}");
    // The breaker's changes were alerts on herald.alerts: opened, probing, closed — for apns only.
    let kinds = breaker_alerts(alerts).await?;
    assert!(kinds.iter().all(|(route, _)| route == "apns"), "{kinds:?}");
    let kinds: Vec<&str> = kinds.iter().map(|(_, kind)| kind.as_str()).collect();
    assert!(kinds.contains(&"breaker_opened") && kinds.contains(&"breaker_half_open"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"breaker_closed"), "{kinds:?}");
    assert_eq!(statuses.get(&Status::DeadLettered), None, "{statuses:?}");
    Ok(())
}

/// `herald sandbox` as a user runs it beside Herald: the files it writes are all `herald up`
/// needs (its config file, the credential files through `herald providers set`, the browser
/// subscription through `herald directory device put`), and its control API reports each call.
#[tokio::test]
async fn herald_sandbox_writes_what_herald_needs_and_reports_each_call() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("sandbox");
    let output = scratch.path().join("sandbox.out");
    let mut sandbox = tokio::process::Command::new(herald_tests::herald_bin())
        .arg("sandbox")
        .arg("--dir")
        .arg(&dir)
        .args(["--tenant", "acme", "--topic", TOPIC, "--apns-port", "0", "--fcm-port", "0", "--web-push-port", "0"])
        .stdout(std::fs::File::create(&output)?)
        .stderr(std::fs::File::create(scratch.path().join("sandbox.log"))?)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("sandbox.json").exists() {
        ensure!(sandbox.try_wait()?.is_none(), "herald sandbox exited: {}", std::fs::read_to_string(scratch.path().join("sandbox.log"))?);
        ensure!(Instant::now() < deadline, "herald sandbox wrote no sandbox.json in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let urls: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let config = std::fs::read_to_string(dir.join("herald.toml"))?;
    let env = TestEnv::with(Options { max_deliveries: 12, extra_config: config, ..Options::default() }).await?;
    let users = [
        json!({ "id": "ios-0", "devices": [{ "id": "phone", "platform": "ios", "token": ios_token(0), "app_id": TOPIC }] }),
        json!({ "id": "android-0", "devices": [{ "id": "phone", "platform": "android", "token": android_token(0), "app_id": TOPIC }] }),
        json!({ "id": "web-0" }),
    ];
    let directory = env.dir.path().join("users.jsonl");
    std::fs::write(&directory, users.iter().map(|u| format!("{u}\n")).collect::<String>())?;
    let imported = env.import(&directory, true).await?;
    ensure!(imported.contains("; 0 lines rejected"), "the directory import refused users:\n{imported}");
    let templates = write_template(env.dir.path())?;
    env.run(&["templates", "push", &templates.to_string_lossy(), "--offline"]).await?;
    let _up = env.spawn("up", &["up"])?;
    env.wait_for_api().await?;
    for provider in ["apns", "fcm", "web_push"] {
        let file = dir.join(format!("{provider}.json"));
        env.run(&["providers", "set", provider, &file.to_string_lossy()]).await?;
    }
    let subscription = dir.join("subscription.json");
    env.run(&["directory", "device", "put", "web-0", "browser", "--file", &subscription.to_string_lossy()]).await?;

    for (n, (user, channel)) in [("ios-0", "push"), ("android-0", "push"), ("web-0", "web_push")].into_iter().enumerate() {
        let body = json!({ "template": "parcel", "recipients": [{ "user_id": user }], "channels": [channel], "data": { "n": n } });
        env.publish("acme", body.to_string()).await?;
    }

    // Counted by the sandboxes' control API, from outside their process, trusting their CA.
    let client =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem"))?)?).build()?;
    let url = |key: &str| urls[key].as_str().map(str::to_owned).with_context(|| format!("sandbox.json has no {key}"));
    let (apns, fcm, web) = (url("apns_url")?, url("fcm_url")?, url("web_push_origin")?);
    let received = || async {
        let mut all = Vec::new();
        for (base, provider) in [(&apns, "apns"), (&fcm, "fcm"), (&web, "web_push")] {
            let answer = client.get(format!("{base}/_sandbox/received?provider={provider}")).send().await?.error_for_status()?;
            all.extend(answer.json::<Vec<Received>>().await?);
        }
        anyhow::Ok(all)
    };
    let deadline = Instant::now() + PATIENCE;
    while received().await?.iter().filter(|c| c.accepted()).count() < 3 {
        ensure!(Instant::now() < deadline, "the sandboxes accepted fewer than 3 calls in {PATIENCE:?}: {:?}", received().await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let anything extra arrive, then count every call, refusals and repeats included.
    env.wait_idle(PATIENCE).await?;
    let calls = received().await?;
    for (provider, title) in
        [(ProviderKind::Apns, "Parcel 0 shipped"), (ProviderKind::Fcm, "Parcel 1 shipped"), (ProviderKind::WebPush, "Parcel 2 shipped")]
    {
        let theirs: Vec<&Received> = calls.iter().filter(|c| c.provider == provider).collect();
        ensure!(theirs.len() == 1 && theirs[0].accepted(), "{provider:?}: expected one accepted call, the sandbox received {theirs:?}");
        let payload = &theirs[0].payload;
        let shown = [&payload["aps"]["alert"]["title"], &payload["notification"]["title"], &payload["title"]];
        ensure!(shown.iter().any(|t| t.as_str() == Some(title)), "{provider:?} got {payload}, not {title:?}");
    }
    let apns_call = calls.iter().find(|c| c.provider == ProviderKind::Apns).context("the APNs call")?;
    assert_eq!(apns_call.credential.as_deref(), urls["apns_credential"].as_str(), "signed with the key in apns.json");

    // SIGTERM: it stops and says what it received.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(sandbox.id().context("running")?)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status =
        tokio::time::timeout(Duration::from_secs(10), sandbox.wait()).await.context("herald sandbox did not stop on SIGTERM")??;
    ensure!(status.success(), "herald sandbox exited with {status}");
    let printed = std::fs::read_to_string(&output)?;
    for line in ["apns      1 accepted, 0 refused", "fcm       1 accepted, 0 refused", "web_push  1 accepted, 0 refused"] {
        ensure!(printed.contains(line), "herald sandbox did not print {line:?}:\n{printed}");
    }
    Ok(())
}
