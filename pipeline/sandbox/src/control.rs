//! The control API every sandbox server also answers, for `herald sandbox` users and tests in
//! other processes: `GET|DELETE /_sandbox/received[?provider=apns]`, `PUT /_sandbox/faults`
//! (a [`FaultPlan`] for this server's provider), `GET /_sandbox/stats`; and registering
//! credentials: `POST /_sandbox/keys` (APNs: `{team_id, key_id, public_key_pem}`),
//! `POST /_sandbox/service-accounts` (FCM: `{project_id, client_email, private_key_id,
//! public_key_pem}`), `POST /_sandbox/subscriptions` (web push: `{application_server_key?}` →
//! the subscription JSON), `POST /_sandbox/accounts` (Twilio: `{account_sid, auth_token}`;
//! Vonage: `{api_key, api_secret}`; SendGrid: `{api_key, from}`, the key's verified sender); and
//! on the Twilio server `POST /_sandbox/stop` (`{number}`
//! replied STOP), `POST /_sandbox/call-outcomes` (`{number, outcome}`: `busy`, `no-answer` …),
//! `GET /_sandbox/callbacks` (the status callbacks posted, with their signatures).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::record::ProviderKind;
use crate::server::{Call, Reply, empty, json as reply};
use crate::{FaultPlan, Shared, lock};

#[derive(Deserialize)]
struct TeamKey {
    team_id: String,
    key_id: String,
    public_key_pem: String,
}

#[derive(Deserialize)]
struct Account {
    project_id: String,
    client_email: String,
    private_key_id: String,
    public_key_pem: String,
}

#[derive(Deserialize)]
struct TwilioAccount {
    account_sid: String,
    auth_token: String,
}

#[derive(Deserialize)]
struct VonageAccount {
    api_key: String,
    api_secret: String,
}

#[derive(Deserialize)]
struct SendgridKey {
    api_key: String,
    from: String,
}

#[derive(Deserialize)]
struct Number {
    number: String,
    #[serde(default)]
    outcome: Option<String>,
}

#[derive(Deserialize, Default)]
struct Subscribe {
    application_server_key: Option<String>,
}

fn bad(detail: impl std::fmt::Display) -> Reply {
    reply(400, &json!({ "error": detail.to_string() }))
}

pub async fn handle(shared: Arc<Shared>, provider: ProviderKind, call: Call) -> Reply {
    let path = call.uri().path().trim_start_matches("/_sandbox/").to_owned();
    let method = call.method().clone();
    match (method.as_str(), path.as_str()) {
        ("GET", "received") => {
            let only = call.uri().query().and_then(|q| q.strip_prefix("provider="));
            let all = lock(&shared.received).clone();
            let picked: Vec<_> = all.into_iter().filter(|r| only.is_none_or(|p| r.provider.as_str() == p)).collect();
            reply(200, &serde_json::to_value(picked).unwrap_or(Value::Null))
        }
        ("DELETE", "received") => {
            lock(&shared.received).clear();
            empty(204)
        }
        ("PUT", "faults") => match serde_json::from_slice::<FaultPlan>(call.body()) {
            Ok(plan) => {
                lock(&shared.faults).insert(provider, plan);
                empty(204)
            }
            Err(e) => bad(format!("not a fault plan: {e}")),
        },
        ("GET", "stats") => reply(200, &serde_json::to_value(shared.stats()).unwrap_or(Value::Null)),
        ("POST", "keys") if provider == ProviderKind::Apns => match serde_json::from_slice::<TeamKey>(call.body()) {
            Ok(k) => match shared.add_apns_key(&k.team_id, &k.key_id, &k.public_key_pem) {
                Ok(()) => empty(204),
                Err(e) => bad(format!("not a P-256 public key: {e}")),
            },
            Err(e) => bad(e),
        },
        ("POST", "service-accounts") if provider == ProviderKind::Fcm => match serde_json::from_slice::<Account>(call.body()) {
            Ok(a) => match shared.add_fcm_account(&a.project_id, &a.client_email, &a.private_key_id, &a.public_key_pem) {
                Ok(()) => empty(204),
                Err(e) => bad(format!("not an RSA public key: {e}")),
            },
            Err(e) => bad(e),
        },
        ("POST", "subscriptions") if provider == ProviderKind::WebPush => {
            let request: Subscribe = serde_json::from_slice(call.body()).unwrap_or_default();
            let subscriber = crate::web_push::subscribe(&shared, request.application_server_key.as_deref());
            reply(201, &subscriber.subscription_json())
        }
        ("POST", "accounts") if provider == ProviderKind::Twilio => match serde_json::from_slice::<TwilioAccount>(call.body()) {
            Ok(a) => {
                lock(&shared.twilio_accounts).insert(a.account_sid, a.auth_token);
                empty(204)
            }
            Err(e) => bad(e),
        },
        ("POST", "accounts") if provider == ProviderKind::Vonage => match serde_json::from_slice::<VonageAccount>(call.body()) {
            Ok(a) => {
                lock(&shared.vonage_accounts).insert(a.api_key, a.api_secret);
                empty(204)
            }
            Err(e) => bad(e),
        },
        ("POST", "accounts") if provider == ProviderKind::Sendgrid => match serde_json::from_slice::<SendgridKey>(call.body()) {
            Ok(k) => {
                lock(&shared.sendgrid_keys).insert(k.api_key, k.from);
                empty(204)
            }
            Err(e) => bad(e),
        },
        ("POST", "stop") if provider == ProviderKind::Twilio => match serde_json::from_slice::<Number>(call.body()) {
            Ok(n) => {
                lock(&shared.stop_list).insert(n.number);
                empty(204)
            }
            Err(e) => bad(e),
        },
        ("POST", "call-outcomes") if provider == ProviderKind::Twilio => match serde_json::from_slice::<Number>(call.body()) {
            Ok(Number { number, outcome: Some(outcome) }) => {
                lock(&shared.call_outcomes).insert(number, outcome);
                empty(204)
            }
            Ok(_) => bad("an outcome is needed: completed, busy, no-answer or failed"),
            Err(e) => bad(e),
        },
        ("GET", "callbacks") if provider == ProviderKind::Twilio => {
            reply(200, &serde_json::to_value(lock(&shared.twilio_callbacks).clone()).unwrap_or(Value::Null))
        }
        _ => reply(404, &json!({ "error": format!("no control route {method} /_sandbox/{path}") })),
    }
}
