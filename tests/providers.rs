//! Herald's push clients against the protocol sandboxes, in-process, over real TLS (and HTTP/2
//! for APNs): each provider's success, its answers table (answer → retry / permanent / token
//! invalid, with the provider's code), credential reuse and refresh (counted by the sandbox), and
//! per-tenant keys.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use herald_deliver::http::TlsConfig;
use herald_deliver::ports::memory::MemoryCredentials;
use herald_deliver::providers::apns::{Apns, ApnsConfig};
use herald_deliver::providers::fcm::{Fcm, FcmConfig};
use herald_deliver::providers::web_push::{WebPush, WebPushConfig};
use herald_deliver::providers::{Class, Provider};
use herald_sandbox::keys::{apns_key, fcm_service_account, vapid_key};
use herald_sandbox::{Answer, FaultPlan, ProviderKind, Sandbox, SandboxOptions};
use herald_schemas::directory::{Environment, Platform};
use herald_schemas::providers::{ApnsCredentials, FcmCredentials, ServiceAccount, VapidCredentials};
use herald_schemas::{Channel, Content, Credentials, Delivery, DeviceRef, Secret};

/// A sandbox, its CA written where the clients read it, and credentials registered on both sides.
struct World {
    sandbox: Sandbox,
    credentials: Arc<MemoryCredentials>,
    tls: TlsConfig,
    _dir: tempfile::TempDir,
}

async fn world(options: SandboxOptions) -> anyhow::Result<World> {
    let sandbox = Sandbox::start(options).await?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sandbox.ca_pem())?;
    let credentials = Arc::new(MemoryCredentials::default());
    for (tenant, team, kid) in [("acme", "ACMETEAM01", "ACMEKEY001"), ("globex", "GLOBEXTEAM", "GLOBEXKEY1")] {
        let key = apns_key(team, kid)?;
        sandbox.apns_add_key(team, kid, &key.public_key_pem)?;
        credentials.put(
            tenant,
            "default",
            Credentials::Apns(ApnsCredentials {
                team_id: team.into(),
                key_id: kid.into(),
                private_key: Secret::new(key.private_key_pem),
                topic: "com.example.app".into(),
            }),
        );
    }
    let account = fcm_service_account("acme-prod", &sandbox.fcm_token_url())?;
    sandbox.fcm_add_service_account(&account.project_id, &account.client_email, &account.private_key_id, &account.public_key_pem)?;
    let service_account: ServiceAccount = serde_json::from_value(account.json.clone())?;
    credentials.put("acme", "default", Credentials::Fcm(FcmCredentials { service_account }));
    let vapid = vapid_key();
    credentials.put(
        "acme",
        "default",
        Credentials::WebPush(VapidCredentials {
            subject: "mailto:ops@acme.example".into(),
            public_key: vapid.public_key.clone(),
            private_key: Secret::new(vapid.private_key),
        }),
    );
    Ok(World { sandbox, credentials, tls: TlsConfig { extra_ca_file: Some(ca) }, _dir: dir })
}

impl World {
    fn apns(&self, token_refresh: Duration) -> anyhow::Result<Apns> {
        let config = ApnsConfig {
            production_url: self.sandbox.apns_url(),
            development_url: self.sandbox.apns_url(),
            token_refresh,
            ..ApnsConfig::default()
        };
        Ok(Apns::new(&config, &self.tls, Duration::from_secs(5), self.credentials.clone())?)
    }

    fn fcm(&self) -> anyhow::Result<Fcm> {
        let config = FcmConfig { url: self.sandbox.fcm_url(), ..FcmConfig::default() };
        Ok(Fcm::new(&config, &self.tls, Duration::from_secs(5), self.credentials.clone())?)
    }

    fn web_push(&self) -> anyhow::Result<WebPush> {
        Ok(WebPush::new(&WebPushConfig::default(), &self.tls, Duration::from_secs(5), self.credentials.clone())?)
    }
}

fn content() -> Option<Content> {
    let parts = [("title", "Order shipped"), ("body", "Your order #1234 is on its way")];
    Some(Content { parts: parts.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), ..Content::default() })
}

fn ios(n: u128, tenant: &str) -> Delivery {
    Delivery {
        tenant: tenant.into(),
        channel: Channel::Push,
        platform: Some(Platform::Ios),
        address: format!("{n:064x}"),
        device: Some(DeviceRef { id: format!("d{n}"), app_id: Some("com.example.app".into()), environment: Environment::Production }),
        content: content(),
        ..herald_stage::memory::delivery(n)
    }
}

fn android(n: u128) -> Delivery {
    Delivery { platform: Some(Platform::Android), address: format!("fcm-token-{n:040}"), ..ios(n, "acme") }
}

fn web(n: u128, subscription: &serde_json::Value) -> Delivery {
    Delivery { channel: Channel::WebPush, platform: Some(Platform::Web), address: subscription.to_string(), ..ios(n, "acme") }
}

#[tokio::test]
async fn apns_calls_share_one_http2_connection_and_one_jwt_with_every_header() -> anyhow::Result<()> {
    let world = world(SandboxOptions::default()).await?;
    let apns = Arc::new(world.apns(Duration::from_secs(50 * 60))?);
    let sends: Vec<_> = (1..=20u128)
        .map(|n| {
            let apns = apns.clone();
            tokio::spawn(async move { apns.send(&ios(n, "acme")).await })
        })
        .collect();
    for send in sends {
        send.await??;
    }
    let accepted = world.sandbox.accepted(ProviderKind::Apns);
    assert_eq!(accepted.len(), 20);
    let first = accepted.iter().find(|r| r.target == format!("{:064x}", 1)).context("the first push")?;
    assert_eq!(first.headers["apns-id"], uuid::Uuid::from_u128(1).hyphenated().to_string(), "the delivery id, so a retry is recognisable");
    assert_eq!(first.headers["apns-topic"], "com.example.app");
    assert_eq!(first.headers["apns-push-type"], "alert");
    assert_eq!(first.headers["apns-priority"], "10");
    assert_eq!(first.payload["aps"]["alert"]["title"], "Order shipped");
    assert_eq!(first.credential.as_deref(), Some("ACMETEAM01/ACMEKEY001"));
    let stats = world.sandbox.stats();
    assert_eq!(stats.connections["apns"], 1, "20 concurrent calls, one HTTP/2 connection");
    assert_eq!(stats.apns_tokens["ACMEKEY001"], 1, "one JWT for all of them");
    assert_eq!(apns.tokens_signed(), 1);
    Ok(())
}

/// Scripts `answer` for a target, sends once, and checks what the client made of it.
async fn check(
    world: &World,
    provider: &dyn Provider,
    kind: ProviderKind,
    delivery: &Delivery,
    target: &str,
    answer: Answer,
    expected: Class,
) {
    let mut plan = FaultPlan::default();
    plan.tokens.insert(target.to_owned(), answer.clone());
    world.sandbox.set_faults(kind, plan);
    let error = provider.send(delivery).await.expect_err("a scripted refusal");
    assert_eq!((error.class, error.code.as_str()), (expected, answer.reason.as_str()), "{kind:?} {} {}", answer.status, answer.reason);
    if let Some(secs) = answer.retry_after_secs {
        assert_eq!(error.retry_after, Some(Duration::from_secs(secs)));
    }
}

#[tokio::test]
async fn apns_answers_are_classified_with_apples_reason() -> anyhow::Result<()> {
    use Class::*;
    let world = world(SandboxOptions::default()).await?;
    let apns = world.apns(Duration::from_secs(50 * 60))?;
    let delivery = ios(7, "acme");
    let token = delivery.address.clone();
    for (status, reason, class) in [
        (410, "Unregistered", TokenInvalid),
        (400, "BadDeviceToken", TokenInvalid),
        (400, "DeviceTokenNotForTopic", TokenInvalid),
        (400, "BadTopic", Permanent),
        (403, "InvalidProviderToken", Permanent),
        (413, "PayloadTooLarge", Permanent),
        (429, "TooManyRequests", Throttled),
        (500, "InternalServerError", Outage),
        (503, "ServiceUnavailable", Outage),
    ] {
        let answer = Answer { retry_after_secs: (status == 429).then_some(2), ..Answer::new(status, reason) };
        check(&world, &apns, ProviderKind::Apns, &delivery, &token, answer, class).await;
    }
    // The sandbox's own checks, unscripted: a payload over 4096 bytes, a token that is not hex.
    world.sandbox.set_faults(ProviderKind::Apns, FaultPlan::default());
    let big = Delivery {
        content: Some(Content { parts: [("body".to_owned(), "x".repeat(5000))].into(), ..Content::default() }),
        ..ios(8, "acme")
    };
    let error = apns.send(&big).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "PayloadTooLarge"));
    let error = apns.send(&Delivery { address: "z".repeat(64), ..ios(9, "acme") }).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (TokenInvalid, "BadDeviceToken"));
    Ok(())
}

#[tokio::test]
async fn fcm_answers_are_classified_by_their_fcm_error_code() -> anyhow::Result<()> {
    use Class::*;
    let world = world(SandboxOptions::default()).await?;
    let fcm = world.fcm()?;
    let delivery = android(3);
    fcm.send(&delivery).await.expect("sent");
    let sent = world.sandbox.accepted(ProviderKind::Fcm);
    assert_eq!(sent[0].payload["token"], delivery.address.as_str());
    assert_eq!(sent[0].payload["notification"]["title"], "Order shipped");
    assert_eq!(sent[0].payload["android"]["priority"], "HIGH");
    let token = delivery.address.clone();
    for (status, code, class) in [
        (404, "UNREGISTERED", TokenInvalid),
        (403, "SENDER_ID_MISMATCH", TokenInvalid),
        (400, "INVALID_ARGUMENT", Permanent),
        (401, "THIRD_PARTY_AUTH_ERROR", Permanent),
        (429, "QUOTA_EXCEEDED", Throttled),
        (503, "UNAVAILABLE", Outage),
        (500, "INTERNAL", Outage),
    ] {
        let answer = Answer { retry_after_secs: (status == 429).then_some(3), ..Answer::new(status, code) };
        check(&world, &fcm, ProviderKind::Fcm, &delivery, &token, answer, class).await;
    }
    Ok(())
}

#[tokio::test]
async fn web_push_is_encrypted_for_the_subscriber_and_signed_with_vapid() -> anyhow::Result<()> {
    use Class::*;
    let world = world(SandboxOptions::default()).await?;
    let web_push = world.web_push()?;
    let Credentials::WebPush(vapid) = world.credentials_for("web_push")? else { unreachable!() };
    let subscriber = world.sandbox.web_push_subscribe(Some(&vapid.public_key));
    let delivery = web(4, &subscriber.subscription_json());
    web_push.send(&delivery).await.expect("sent");
    let sent = world.sandbox.accepted(ProviderKind::WebPush);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].payload["title"], "Order shipped", "the sandbox decrypted it with the subscriber's keys");
    assert_eq!(sent[0].credential.as_deref(), Some(vapid.public_key.as_str()), "and verified the VAPID JWT");
    // The test itself, not only the sandbox: the body decrypts with the subscriber's private key
    // and auth secret (RFC 8291, step by step below), and the VAPID JWT verifies (RFC 8292).
    let plaintext = browser::decrypt(&sent[0], &subscriber)?;
    let message: serde_json::Value = serde_json::from_slice(&plaintext).context("the plaintext is the JSON message")?;
    assert_eq!((message["title"].as_str(), message["body"].as_str()), (Some("Order shipped"), Some("Your order #1234 is on its way")));
    let claims = browser::verify_vapid(&sent[0], &vapid.public_key, &world.sandbox.web_push_origin())?;
    assert_eq!(claims["sub"], "mailto:ops@acme.example");
    assert_eq!(sent[0].headers["urgency"], "normal");
    assert!(sent[0].headers["ttl"].parse::<u64>()? > 0);
    for (status, reason, class) in [
        (410, "gone", TokenInvalid),
        (404, "not found", TokenInvalid),
        (413, "too large", Permanent),
        (429, "slow down", Throttled),
        (503, "down", Outage),
    ] {
        let answer = Answer { retry_after_secs: (status == 429).then_some(2), ..Answer::new(status, reason) };
        let mut plan = FaultPlan::default();
        plan.tokens.insert(subscriber.id.clone(), answer);
        world.sandbox.set_faults(ProviderKind::WebPush, plan);
        let error = web_push.send(&delivery).await.expect_err("refused");
        assert_eq!((error.class, error.code.clone()), (class, format!("http_{status}")), "{status}");
    }
    // Signed with another key than the subscription was made with: refused.
    world.sandbox.set_faults(ProviderKind::WebPush, FaultPlan::default());
    let other = world.sandbox.web_push_subscribe(Some(&vapid_key().public_key));
    let error = web_push.send(&web(5, &other.subscription_json())).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Permanent, "http_403"));
    Ok(())
}

impl World {
    fn credentials_for(&self, provider: &str) -> anyhow::Result<Credentials> {
        use herald_deliver::ports::CredentialStore;
        let found = futures::executor::block_on(self.credentials.credentials("acme", provider, None))?.context("acme's credentials")?;
        Ok(found.credentials.clone())
    }
}

#[tokio::test]
async fn tokens_are_reused_then_refreshed_when_they_expire() -> anyhow::Result<()> {
    let options = SandboxOptions {
        apns_min_token_age: Duration::from_millis(500),
        fcm_token_lifetime: Duration::from_secs(2),
        ..SandboxOptions::default()
    };
    let world = world(options).await?;
    let apns = world.apns(Duration::from_secs(1))?;
    let fcm = world.fcm()?;
    for n in 0..5 {
        apns.send(&ios(n, "acme")).await?;
        fcm.send(&android(n)).await?;
    }
    assert_eq!((world.sandbox.stats().apns_tokens["ACMEKEY001"], world.sandbox.stats().fcm_tokens_issued), (1, 1), "reused");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for n in 5..10 {
        apns.send(&ios(n, "acme")).await?;
        fcm.send(&android(n)).await?;
    }
    let stats = world.sandbox.stats();
    assert_eq!((stats.apns_tokens["ACMEKEY001"], stats.fcm_tokens_issued), (2, 2), "refreshed once each after expiry");
    assert_eq!((apns.tokens_signed(), fcm.tokens_obtained()), (2, 2));
    Ok(())
}

#[tokio::test]
async fn each_tenants_pushes_are_signed_with_its_own_key() -> anyhow::Result<()> {
    let world = world(SandboxOptions::default()).await?;
    let apns = world.apns(Duration::from_secs(50 * 60))?;
    for n in 0..3 {
        apns.send(&ios(n, "acme")).await?;
        apns.send(&ios(100 + n, "globex")).await?;
    }
    let signed: Vec<(String, String)> =
        world.sandbox.accepted(ProviderKind::Apns).iter().map(|r| (r.target.clone(), r.credential.clone().unwrap_or_default())).collect();
    assert_eq!(signed.len(), 6);
    for (target, credential) in signed {
        let n = u128::from_str_radix(&target, 16)?;
        let expected = if n >= 100 { "GLOBEXTEAM/GLOBEXKEY1" } else { "ACMETEAM01/ACMEKEY001" };
        assert_eq!(credential, expected, "token {target}");
    }
    // A tenant without credentials: a clear permanent `no_credentials`, no call.
    let before = world.sandbox.received().len();
    let error = apns.send(&ios(9, "initech")).await.expect_err("refused");
    assert_eq!((error.class, error.code.as_str()), (Class::Permanent, "no_credentials"));
    assert_eq!(world.sandbox.received().len(), before);
    Ok(())
}

/// What a browser does with a push message, written from the RFCs, independent of the crates
/// Herald and the sandbox use for it.
mod browser {
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::{Aes128Gcm, Nonce};
    use anyhow::{Context, ensure};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use herald_sandbox::{Received, WebPushSubscriber};
    use hkdf::Hkdf;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use sha2::Sha256;

    fn b64(text: &str) -> anyhow::Result<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).with_context(|| format!("not base64url: {text}"))
    }

    /// RFC 8291 §3.4 over RFC 8188's aes128gcm framing: the plaintext of the one record.
    pub fn decrypt(received: &Received, subscriber: &WebPushSubscriber) -> anyhow::Result<Vec<u8>> {
        let body = b64(received.body.as_deref().context("the sandbox kept the body")?)?;
        ensure!(received.headers.get("content-encoding").map(String::as_str) == Some("aes128gcm"), "Content-Encoding aes128gcm");
        // Header: salt (16) | record size (4) | key id length (1) | key id (the sender's public key).
        ensure!(body.len() > 21, "the body is shorter than its header");
        let (salt, record_size, id_len) = (&body[..16], u32::from_be_bytes(body[16..20].try_into()?), usize::from(body[20]));
        ensure!(id_len == 65, "the key id is the sender's uncompressed P-256 key (65 bytes), not {id_len}");
        let (sender_public, ciphertext) = (&body[21..21 + id_len], &body[21 + id_len..]);
        ensure!(ciphertext.len() <= record_size as usize, "one record");
        let ua_secret = p256::SecretKey::from_slice(&b64(&subscriber.private_key)?)?;
        let ua_public = ua_secret.public_key().to_encoded_point(false);
        ensure!(b64(&subscriber.p256dh)? == ua_public.as_bytes(), "p256dh is the subscriber's public key");
        let sender = p256::PublicKey::from_sec1_bytes(sender_public)?;
        let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), sender.as_affine());
        // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(ua_public.as_bytes());
        key_info.extend_from_slice(sender_public);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&b64(&subscriber.auth)?), shared.raw_secret_bytes())
            .expand(&key_info, &mut ikm)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // CEK and nonce from HKDF(salt, IKM).
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|e| anyhow::anyhow!("{e}"))?;
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut padded = Aes128Gcm::new_from_slice(&cek)?
            .decrypt(Nonce::from_slice(&nonce), ciphertext)
            .map_err(|_| anyhow::anyhow!("AES-GCM refused the record: not encrypted for this subscriber"))?;
        // The last record: the plaintext, the delimiter 0x02, then zero padding.
        while padded.last() == Some(&0) {
            padded.pop();
        }
        ensure!(padded.pop() == Some(2), "the last record ends with the 0x02 delimiter");
        Ok(padded)
    }

    /// RFC 8292: `Authorization: vapid t=<JWT>, k=<public key>`; the JWT is ES256 by `k`, `aud`
    /// the push service's origin, `exp` within 24 hours, `sub` a contact. Returns its claims.
    pub fn verify_vapid(received: &Received, public_key: &str, origin: &str) -> anyhow::Result<serde_json::Value> {
        let header = received.headers.get("authorization").context("the sandbox kept the Authorization header")?;
        let params = header.strip_prefix("vapid ").with_context(|| format!("not the vapid scheme: {header}"))?;
        let param = |name: &str| {
            params.split(',').find_map(|p| p.trim().strip_prefix(name).map(str::to_owned)).with_context(|| format!("no {name} in {header}"))
        };
        let (token, key) = (param("t=")?, param("k=")?);
        ensure!(b64(&key)? == b64(public_key)?, "k is the tenant's VAPID public key");
        let point = p256::PublicKey::from_sec1_bytes(&b64(&key)?)?.to_encoded_point(false);
        let (x, y) = (point.x().context("x")?, point.y().context("y")?);
        let decoding = DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.set_audience(&[origin]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)?.claims;
        let exp = claims["exp"].as_i64().context("exp")?;
        let now = jiff::Timestamp::now().as_second();
        ensure!(exp > now && exp <= now + 24 * 3600, "exp {exp} is not within 24 hours of {now}");
        let sub = claims["sub"].as_str().context("sub")?;
        ensure!(sub.starts_with("mailto:") || sub.starts_with("https:"), "sub {sub} is a contact");
        Ok(claims)
    }
}
