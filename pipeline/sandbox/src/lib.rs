//! Herald's provider sandboxes: local servers that speak APNs, FCM HTTP v1, web push, Twilio,
//! Vonage, SMTP and SendGrid as the real services do — over TLS, APNs over HTTP/2 only — verify
//! the credentials they do (provider JWTs, OAuth assertions and tokens, VAPID, API keys, AUTH),
//! enforce their limits, decrypt web push payloads,
//! record every request ([`Received`], accepted or refused, duplicates included) and inject
//! faults on request ([`FaultPlan`]). Tests run them in-process; `herald sandbox` and `make
//! demo` run them beside Herald.
//!
//! One module per provider over one recorder ([`record`]) and one fault plan ([`faults`]);
//! [`control`] is the `/_sandbox/…` HTTP API every server also answers.

pub mod accounts;
pub mod apns;
pub mod control;
pub mod faults;
pub mod fcm;
pub mod keys;
pub mod record;
pub mod sendgrid;
mod server;
pub mod smtp;
mod tls;
pub mod twilio;
pub mod vonage;
pub mod web_push;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use accounts::Accounts;
pub use faults::{Answer, Burst, FaultPlan};
pub use record::{ProviderKind, Received};
pub use web_push::WebPushSubscriber;

/// How the sandboxes run.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub bind: IpAddr,
    /// 0: a free port.
    pub apns_port: u16,
    pub fcm_port: u16,
    pub web_push_port: u16,
    pub twilio_port: u16,
    pub vonage_port: u16,
    /// The SMTP server's port (STARTTLS on the plain connection).
    pub smtp_port: u16,
    pub sendgrid_port: u16,
    /// Added to every provider answer (a real service's round trip).
    pub latency: Duration,
    /// A new provider token for a key sooner than this after the last new one: 429
    /// `TooManyProviderTokenUpdates` (Apple: 20 minutes).
    pub apns_min_token_age: Duration,
    /// A provider token older than this: 403 `ExpiredProviderToken` (Apple: an hour).
    pub apns_max_token_age: Duration,
    /// How long FCM access tokens live (Google: an hour).
    pub fcm_token_lifetime: Duration,
    /// The pause before each status callback Twilio posts (`sent`, then `delivered` …).
    pub callback_delay: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            apns_port: 0,
            fcm_port: 0,
            web_push_port: 0,
            twilio_port: 0,
            vonage_port: 0,
            smtp_port: 0,
            sendgrid_port: 0,
            latency: Duration::ZERO,
            apns_min_token_age: Duration::from_secs(20 * 60),
            apns_max_token_age: Duration::from_secs(3600),
            fcm_token_lifetime: Duration::from_secs(3600),
            callback_delay: Duration::from_millis(50),
        }
    }
}

/// Counters: how the clients used the services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Distinct provider tokens accepted, per APNs key id.
    pub apns_tokens: HashMap<String, u64>,
    /// FCM access tokens issued.
    pub fcm_tokens_issued: u64,
    /// TLS connections accepted, per provider (HTTP/2 reuse shows as few).
    pub connections: HashMap<String, u64>,
}

/// Everything the servers share.
pub struct Shared {
    options: SandboxOptions,
    ports: Mutex<Ports>,
    received: Mutex<Vec<Received>>,
    faults: Mutex<HashMap<ProviderKind, FaultPlan>>,
    apns_keys: Mutex<HashMap<String, apns::TeamKey>>,
    fcm_accounts: Mutex<HashMap<String, fcm::Account>>,
    fcm_tokens: Mutex<HashMap<String, fcm::Granted>>,
    fcm_tokens_issued: AtomicU64,
    subscribers: Mutex<HashMap<String, web_push::Subscriber>>,
    /// Twilio account SID → auth token.
    twilio_accounts: Mutex<HashMap<String, String>>,
    /// Numbers that replied STOP: Twilio refuses SMS to them with 21610.
    stop_list: Mutex<HashSet<String>>,
    /// Number → how a call to it ends (`completed` unless set: `busy`, `no-answer`, `failed`).
    call_outcomes: Mutex<HashMap<String, twilio::CallOutcome>>,
    twilio_callbacks: Mutex<Vec<twilio::Callback>>,
    /// Vonage API key → secret.
    vonage_accounts: Mutex<HashMap<String, String>>,
    /// SMTP user → password (none registered: no AUTH needed).
    smtp_accounts: Mutex<HashMap<String, String>>,
    /// SendGrid API key → its verified sender address.
    sendgrid_keys: Mutex<HashMap<String, String>>,
    /// Where SendGrid posts its events (the Event Webhook), when set.
    sendgrid_webhook: Mutex<Option<String>>,
    /// Signs the event webhook's posts (the Signed Event Webhook).
    sendgrid_signing: p256::ecdsa::SigningKey,
    /// The event posts and what the receiver answered (0: no answer).
    sendgrid_events: Mutex<Vec<(Value, u16)>>,
    /// Per server: APNs, FCM, web push, Twilio, Vonage, SMTP, SendGrid.
    connections: [Arc<AtomicU64>; 7],
}

/// The servers' ports.
#[derive(Debug, Clone, Copy)]
struct Ports {
    apns: u16,
    fcm: u16,
    web_push: u16,
    twilio: u16,
    vonage: u16,
    smtp: u16,
    sendgrid: u16,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn lock_apns(&self) -> MutexGuard<'_, HashMap<String, apns::TeamKey>> {
        lock(&self.apns_keys)
    }

    fn lock_fcm_accounts(&self) -> MutexGuard<'_, HashMap<String, fcm::Account>> {
        lock(&self.fcm_accounts)
    }

    fn fcm_token_url(&self) -> String {
        format!("https://localhost:{}/token", lock(&self.ports).fcm)
    }

    fn web_push_origin(&self) -> String {
        format!("https://localhost:{}", lock(&self.ports).web_push)
    }

    fn grant_fcm_token(&self, token: String, granted: fcm::Granted) {
        self.fcm_tokens_issued.fetch_add(1, Ordering::Relaxed);
        lock(&self.fcm_tokens).insert(token, granted);
    }

    fn fcm_token(&self, token: &str) -> Option<(String, String, std::time::Instant)> {
        lock(&self.fcm_tokens).get(token).map(|g| (g.project_id.clone(), g.client_email.clone(), g.expires))
    }

    fn add_subscriber(&self, id: String, subscriber: web_push::Subscriber) {
        lock(&self.subscribers).insert(id, subscriber);
    }

    fn has_subscriber(&self, id: &str) -> bool {
        lock(&self.subscribers).contains_key(id)
    }

    fn decrypt(&self, id: &str, key: &str, body: Vec<u8>) -> Result<Vec<u8>, Answer> {
        let subscribers = lock(&self.subscribers);
        let subscriber = subscribers.get(id).ok_or(Answer::new(404, "no such subscription"))?;
        web_push::decrypt(subscriber, key, body)
    }

    fn add_apns_key(&self, team_id: &str, key_id: &str, public_key_pem: &str) -> anyhow::Result<()> {
        let key = DecodingKey::from_ec_pem(public_key_pem.as_bytes())?;
        let team = apns::TeamKey { team_id: team_id.into(), key, current: None, tokens_accepted: 0 };
        self.lock_apns().insert(key_id.into(), team);
        Ok(())
    }

    fn add_fcm_account(&self, project_id: &str, client_email: &str, private_key_id: &str, public_key_pem: &str) -> anyhow::Result<()> {
        let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())?;
        let account = fcm::Account { project_id: project_id.into(), client_email: client_email.into(), key };
        self.lock_fcm_accounts().insert(private_key_id.into(), account);
        Ok(())
    }

    fn stats(&self) -> Stats {
        let apns_tokens = self.lock_apns().iter().map(|(kid, team)| (kid.clone(), team.tokens_accepted)).collect();
        let servers = [
            ProviderKind::Apns,
            ProviderKind::Fcm,
            ProviderKind::WebPush,
            ProviderKind::Twilio,
            ProviderKind::Vonage,
            ProviderKind::Smtp,
            ProviderKind::Sendgrid,
        ];
        let connections = servers.iter().zip(&self.connections).map(|(p, c)| (p.as_str().to_owned(), c.load(Ordering::Relaxed))).collect();
        Stats { apns_tokens, fcm_tokens_issued: self.fcm_tokens_issued.load(Ordering::Relaxed), connections }
    }

    /// The fault plan's answer for a request to `target`, if any.
    fn fault(&self, provider: ProviderKind, target: &str) -> Option<Answer> {
        let (unavailable, internal, throttled) = match provider {
            ProviderKind::Apns => apns::standard_answers(),
            ProviderKind::Fcm => fcm::standard_answers(),
            ProviderKind::WebPush => web_push::standard_answers(),
            ProviderKind::Twilio | ProviderKind::TwilioVoice => twilio::standard_answers(),
            ProviderKind::Vonage => vonage::standard_answers(),
            ProviderKind::Smtp => smtp::standard_answers(),
            ProviderKind::Sendgrid => sendgrid::standard_answers(),
        };
        lock(&self.faults).get_mut(&provider)?.decide(target, &unavailable, &internal, &throttled)
    }

    fn record(&self, received: Received) {
        lock(&self.received).push(received);
    }

    fn received_copy(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// Waits the provider's latency.
    async fn pause(&self, provider: ProviderKind) {
        let latency = lock(&self.faults).get(&provider).and_then(|f| f.latency_ms).map_or(self.options.latency, Duration::from_millis);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

/// The running sandboxes. Clones share them; they stop when the last clone is dropped.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
    certificates: Arc<tls::Certificates>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("ports", &*lock(&self.shared.ports)).finish_non_exhaustive()
    }
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Sandbox {
    /// Starts the servers, one per provider.
    pub async fn start(options: SandboxOptions) -> anyhow::Result<Sandbox> {
        let certificates = Arc::new(tls::Certificates::new()?);
        let bind = |port: u16| TcpListener::bind(SocketAddr::new(options.bind, port));
        let (apns, fcm, web) = (bind(options.apns_port).await?, bind(options.fcm_port).await?, bind(options.web_push_port).await?);
        let (twilio, vonage) = (bind(options.twilio_port).await?, bind(options.vonage_port).await?);
        let (smtp, sendgrid) = (bind(options.smtp_port).await?, bind(options.sendgrid_port).await?);
        let ports = Ports {
            apns: apns.local_addr()?.port(),
            fcm: fcm.local_addr()?.port(),
            web_push: web.local_addr()?.port(),
            twilio: twilio.local_addr()?.port(),
            vonage: vonage.local_addr()?.port(),
            smtp: smtp.local_addr()?.port(),
            sendgrid: sendgrid.local_addr()?.port(),
        };
        let shared = Arc::new(Shared {
            options,
            ports: Mutex::new(ports),
            received: Mutex::default(),
            faults: Mutex::default(),
            apns_keys: Mutex::default(),
            fcm_accounts: Mutex::default(),
            fcm_tokens: Mutex::default(),
            fcm_tokens_issued: AtomicU64::new(0),
            subscribers: Mutex::default(),
            twilio_accounts: Mutex::default(),
            stop_list: Mutex::default(),
            call_outcomes: Mutex::default(),
            twilio_callbacks: Mutex::default(),
            vonage_accounts: Mutex::default(),
            smtp_accounts: Mutex::default(),
            sendgrid_keys: Mutex::default(),
            sendgrid_webhook: Mutex::default(),
            sendgrid_signing: p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
            sendgrid_events: Mutex::default(),
            connections: Default::default(),
        });
        let h2_only = certificates.server_config(&[b"h2"])?;
        let both = certificates.server_config(&[b"h2", b"http/1.1"])?;
        let route = |provider: ProviderKind| -> server::Handler {
            let shared = shared.clone();
            Arc::new(move |call| {
                let shared = shared.clone();
                Box::pin(async move {
                    if call.uri().path().starts_with("/_sandbox/") {
                        return control::handle(shared, provider, call).await;
                    }
                    match provider {
                        ProviderKind::Apns => apns::handle(shared, call).await,
                        ProviderKind::Fcm if call.uri().path() == "/token" => fcm::token(shared, call).await,
                        ProviderKind::Fcm => fcm::send(shared, call).await,
                        ProviderKind::WebPush => web_push::push(shared, call).await,
                        ProviderKind::Twilio | ProviderKind::TwilioVoice => twilio::handle(shared, call).await,
                        ProviderKind::Vonage => vonage::handle(shared, call).await,
                        ProviderKind::Sendgrid => sendgrid::handle(shared, call).await,
                        ProviderKind::Smtp => server::empty(404),
                    }
                })
            })
        };
        let tasks = vec![
            tokio::spawn(server::serve(apns, h2_only, true, route(ProviderKind::Apns), shared.connections[0].clone())),
            tokio::spawn(server::serve(fcm, both.clone(), false, route(ProviderKind::Fcm), shared.connections[1].clone())),
            tokio::spawn(server::serve(web, both.clone(), false, route(ProviderKind::WebPush), shared.connections[2].clone())),
            tokio::spawn(server::serve(twilio, both.clone(), false, route(ProviderKind::Twilio), shared.connections[3].clone())),
            tokio::spawn(server::serve(vonage, both.clone(), false, route(ProviderKind::Vonage), shared.connections[4].clone())),
            tokio::spawn(server::serve(sendgrid, both, false, route(ProviderKind::Sendgrid), shared.connections[6].clone())),
            tokio::spawn(smtp::serve(smtp, shared.clone(), certificates.server_config(&[])?, shared.connections[5].clone())),
        ];
        Ok(Sandbox { shared, certificates, _tasks: Arc::new(Tasks(tasks)) })
    }

    pub fn apns_url(&self) -> String {
        format!("https://localhost:{}", lock(&self.shared.ports).apns)
    }

    pub fn fcm_url(&self) -> String {
        format!("https://localhost:{}", lock(&self.shared.ports).fcm)
    }

    /// Twilio's API base (`https://localhost:<port>`, in place of `https://api.twilio.com`).
    pub fn twilio_url(&self) -> String {
        format!("https://localhost:{}", lock(&self.shared.ports).twilio)
    }

    /// Vonage's REST base (in place of `https://rest.nexmo.com`).
    pub fn vonage_url(&self) -> String {
        format!("https://localhost:{}", lock(&self.shared.ports).vonage)
    }

    /// SendGrid's API base (in place of `https://api.sendgrid.com`).
    pub fn sendgrid_url(&self) -> String {
        format!("https://localhost:{}", lock(&self.shared.ports).sendgrid)
    }

    /// Accepts this SendGrid API key, sending as `from` (its verified sender address).
    pub fn sendgrid_add_key(&self, api_key: &str, from: &str) {
        lock(&self.shared.sendgrid_keys).insert(api_key.into(), from.into());
    }

    /// Turns on the Event Webhook: from now on `processed` and `delivered` of each accepted
    /// recipient are posted to `url`, signed.
    pub fn sendgrid_event_webhook(&self, url: &str) {
        *lock(&self.shared.sendgrid_webhook) = Some(url.to_owned());
    }

    /// The Signed Event Webhook's verification key, as SendGrid's settings show it: base64 of
    /// the P-256 public key's DER.
    pub fn sendgrid_webhook_public_key(&self) -> String {
        sendgrid::public_key(&self.shared)
    }

    /// Posts `event` (`open`, `click`, `bounce`, `spamreport` …) about the accepted message
    /// `message_id` to the event webhook, signed, with `extra` fields merged in; returns what
    /// the receiver answered (0: no answer).
    pub async fn sendgrid_post_event(&self, message_id: &str, event: &str, extra: Value) -> anyhow::Result<u16> {
        let record = self
            .received()
            .into_iter()
            .find(|r| r.provider == ProviderKind::Sendgrid && r.message_id.as_deref() == Some(message_id))
            .ok_or_else(|| anyhow::anyhow!("the SendGrid sandbox accepted no message {message_id}"))?;
        let mut body = sendgrid::event(&record, event);
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        Ok(sendgrid::post_events(&self.shared, vec![body]).await)
    }

    /// The event webhook's posts, with what the receiver answered.
    pub fn sendgrid_events(&self) -> Vec<(Value, u16)> {
        lock(&self.shared.sendgrid_events).clone()
    }

    /// The SMTP server's port on `localhost` (STARTTLS with the sandbox's certificate).
    pub fn smtp_port(&self) -> u16 {
        lock(&self.shared.ports).smtp
    }

    /// Requires AUTH, and accepts this user and password.
    pub fn smtp_add_account(&self, user: &str, password: &str) {
        lock(&self.shared.smtp_accounts).insert(user.into(), password.into());
    }

    /// Accepts Basic auth with this Twilio account SID and auth token.
    pub fn twilio_add_account(&self, account_sid: &str, auth_token: &str) {
        lock(&self.shared.twilio_accounts).insert(account_sid.into(), auth_token.into());
    }

    /// Accepts this Vonage API key and secret.
    pub fn vonage_add_account(&self, api_key: &str, api_secret: &str) {
        lock(&self.shared.vonage_accounts).insert(api_key.into(), api_secret.into());
    }

    /// The number replied STOP: Twilio refuses SMS to it with 21610 from now on.
    pub fn twilio_stop(&self, number: &str) {
        lock(&self.shared.stop_list).insert(number.into());
    }

    /// How calls to `number` end: `completed`, `busy`, `no-answer` or `failed`.
    pub fn twilio_call_outcome(&self, number: &str, outcome: &str) {
        lock(&self.shared.call_outcomes).insert(number.into(), outcome.into());
    }

    /// The status callbacks Twilio posted, in order.
    pub fn twilio_callbacks(&self) -> Vec<twilio::Callback> {
        lock(&self.shared.twilio_callbacks).clone()
    }

    pub fn fcm_token_url(&self) -> String {
        self.shared.fcm_token_url()
    }

    pub fn web_push_origin(&self) -> String {
        self.shared.web_push_origin()
    }

    /// The CA certificate (PEM) that signed the servers' certificate.
    pub fn ca_pem(&self) -> String {
        self.certificates.ca_pem.clone()
    }

    /// Accepts provider tokens signed by this key (SPKI PEM of a P-256 key).
    pub fn apns_add_key(&self, team_id: &str, key_id: &str, public_key_pem: &str) -> anyhow::Result<()> {
        self.shared.add_apns_key(team_id, key_id, public_key_pem)
    }

    /// Accepts OAuth assertions of this service account.
    pub fn fcm_add_service_account(
        &self,
        project_id: &str,
        client_email: &str,
        private_key_id: &str,
        public_key_pem: &str,
    ) -> anyhow::Result<()> {
        self.shared.add_fcm_account(project_id, client_email, private_key_id, public_key_pem)
    }

    /// A browser's subscription to this push service (`application_server_key`: the VAPID
    /// public key the web app subscribed with; pushes signed by another are refused).
    pub fn web_push_subscribe(&self, application_server_key: Option<&str>) -> WebPushSubscriber {
        web_push::subscribe(&self.shared, application_server_key)
    }

    /// Everything received, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received_copy()
    }

    /// What `provider` accepted.
    pub fn accepted(&self, provider: ProviderKind) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.provider == provider && r.accepted()).collect()
    }

    pub fn clear(&self) {
        lock(&self.shared.received).clear();
    }

    pub fn set_faults(&self, provider: ProviderKind, plan: FaultPlan) {
        lock(&self.shared.faults).insert(provider, plan);
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}
