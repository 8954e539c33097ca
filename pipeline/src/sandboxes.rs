//! The provider sandboxes beside an in-process pipeline: `herald demo` and `herald bench
//! --providers sandbox` start them, point the configuration at them and give a tenant their
//! accounts, so pushes travel the real protocols (TLS, HTTP/2 for APNs, JWTs, OAuth, RFC 8291)
//! to servers that count every call. (`herald sandbox` runs them as a process of their own.)

use std::path::Path;
use std::time::Duration;

use herald_sandbox::{Accounts, ProviderKind, Sandbox, SandboxOptions};
use herald_schemas::Credentials;
use herald_store::Store;

use crate::config::Config;

/// Starts the sandboxes (free ports, `latency` added to each answer) and points `config` at
/// them: their CA (written into `dir`) trusted, their URLs the APNs, FCM, Twilio, Vonage and
/// SendGrid endpoints (the SMTP relay's port is in each tenant's credentials).
pub async fn start(config: &mut Config, dir: &Path, latency: Duration) -> anyhow::Result<Sandbox> {
    let sandbox = Sandbox::start(SandboxOptions { latency, ..SandboxOptions::default() }).await?;
    let ca = dir.join("sandbox-ca.pem");
    std::fs::write(&ca, sandbox.ca_pem())?;
    config.deliver.tls.extra_ca_file = Some(ca);
    config.deliver.apns.production_url = sandbox.apns_url();
    config.deliver.apns.development_url = sandbox.apns_url();
    config.deliver.fcm.url = sandbox.fcm_url();
    config.deliver.twilio.url = sandbox.twilio_url();
    config.deliver.vonage.url = sandbox.vonage_url();
    config.deliver.sendgrid.url = sandbox.sendgrid_url();
    config.deliver.sendgrid.eu_url = sandbox.sendgrid_url();
    Ok(sandbox)
}

/// Generates `tenant`'s APNs, FCM, VAPID, Twilio, Vonage, SMTP and SendGrid accounts at the
/// sandboxes and stores them as its default credentials, as `herald providers set` would.
pub async fn register(store: &Store, sandbox: &Sandbox, tenant: &str, topic: &str) -> anyhow::Result<Accounts> {
    let accounts = sandbox.accounts(tenant, topic)?;
    for credentials in credentials(&accounts)? {
        store.put_credentials(tenant, "default", &credentials).await?;
    }
    Ok(accounts)
}

/// The accounts as the credentials Herald keeps (the files tagged with their provider, as
/// `herald providers set` tags them).
pub fn credentials(accounts: &Accounts) -> anyhow::Result<Vec<Credentials>> {
    accounts
        .each()
        .into_iter()
        .map(|(provider, file)| {
            let mut tagged = file.clone();
            tagged["provider"] = serde_json::Value::String(provider.into());
            Ok(serde_json::from_value(tagged)?)
        })
        .collect()
}

/// Per provider, the calls the sandbox accepted and refused (repeats included).
pub fn counts(sandbox: &Sandbox) -> [(ProviderKind, usize, usize); 8] {
    let received = sandbox.received();
    ProviderKind::ALL.map(|provider| {
        let theirs = received.iter().filter(|r| r.provider == provider);
        let accepted = theirs.clone().filter(|r| r.accepted()).count();
        (provider, accepted, theirs.count() - accepted)
    })
}
