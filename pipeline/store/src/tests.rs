//! The store against `mem://` and `surrealkv://` files.

use std::collections::BTreeMap;

use herald_schemas::Channel;
use herald_schemas::directory::{Environment, Platform};

use herald_schemas::TemplateSpec;
use herald_schemas::directory::{Device, Group, Preferences, User};
use serde_json::json;

use crate::*;

async fn memory() -> Store {
    Store::open(&StoreConfig { url: "mem://".into(), ..StoreConfig::default() }).await.unwrap()
}

fn ios(id: &str) -> Device {
    Device {
        id: id.into(),
        platform: Platform::Ios,
        token: Some("ab".repeat(32)),
        subscription: None,
        app_id: Some("com.example.app".into()),
        environment: Environment::Production,
        voip: false,
        last_seen: None,
        disabled_at: None,
        disabled_reason: None,
    }
}

#[tokio::test]
async fn users_devices_and_preferences_round_trip() {
    let store = memory().await;
    let alice = User { id: "alice".into(), email: Some("alice@example.com".into()), ..User::default() };
    store.put_user("acme", &alice).await.unwrap();
    store.put_device("acme", "alice", &ios("phone")).await.unwrap();
    store.put_device("acme", "alice", &ios("tablet")).await.unwrap();
    store.put_device("acme", "alice", &ios("phone")).await.unwrap();
    let prefs = Preferences { channels: BTreeMap::from([(Channel::Sms, false)]), ..Preferences::default() };
    store.put_preferences("acme", "alice", &prefs).await.unwrap();
    // Replacing the user keeps devices and preferences.
    store.put_user("acme", &User { name: Some("Alice".into()), ..alice.clone() }).await.unwrap();

    let contact = store.contact("acme", "alice").await.unwrap().unwrap();
    assert_eq!(contact.user.name.as_deref(), Some("Alice"));
    assert_eq!(contact.devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["tablet", "phone"]);
    assert_eq!(contact.preferences, prefs);
    assert!(store.contact("globex", "alice").await.unwrap().is_none(), "tenants are separate");

    assert!(store.delete_device("acme", "alice", "tablet").await.unwrap());
    assert!(!store.delete_device("acme", "alice", "tablet").await.unwrap());
    assert!(store.delete_user("acme", "alice").await.unwrap());
    assert!(store.contact("acme", "alice").await.unwrap().is_none());
    assert!(matches!(store.put_device("acme", "alice", &ios("x")).await, Err(StoreError::NotFound { .. })));
}

#[tokio::test]
async fn invalid_input_is_refused_before_the_store() {
    let store = memory().await;
    let bad = User { id: "bob".into(), phone: Some("555-1234".into()), ..User::default() };
    assert!(matches!(store.put_user("acme", &bad).await, Err(StoreError::Invalid(e)) if e.code == "invalid_phone"));
    // A tenant id becomes a subject token: one with a dot could never receive a request.
    let dotted = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Invalid(e)) if e.code == "invalid_tenant");
    let bob = User { id: "bob".into(), ..User::default() };
    assert!(dotted(store.put_user("acme.eu", &bob).await));
    assert!(dotted(store.add_members("acme.eu", "staff", &["bob".to_owned()]).await));
    assert!(dotted(store.put_group("acme.eu", &Group { id: "staff".into(), name: None }).await));
    assert!(dotted(store.import("acme.eu", &[]).await));
}

#[tokio::test]
async fn members_come_in_pages_in_id_order() {
    let store = memory().await;
    let users: Vec<String> = (0..1234).map(|i| format!("u{i:05}")).collect();
    store.add_members("acme", "staff", &users).await.unwrap();
    store.add_members("acme", "staff", &users[..10]).await.unwrap();
    store.add_members("acme", "other", &users[..5]).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.members("acme", "staff", after.as_deref(), 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, users, "every member once, in order, across pages");
    assert!(store.remove_member("acme", "staff", "u00003").await.unwrap());
    assert_eq!(store.members("acme", "staff", Some("u00002"), 1).await.unwrap(), ["u00004"]);
    assert!(store.delete_group("acme", "staff").await.unwrap());
    assert!(store.members("acme", "staff", None, 10).await.unwrap().is_empty());
    assert_eq!(store.members("acme", "other", None, 10).await.unwrap().len(), 5);
}

#[tokio::test]
async fn the_file_store_keeps_its_data_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { url: format!("surrealkv://{}", dir.path().join("store").display()), ..StoreConfig::default() };
    {
        let store = Store::open(&config).await.unwrap();
        store.put_user("acme", &User { id: "alice".into(), email: Some("alice@example.com".into()), ..User::default() }).await.unwrap();
        store.put_device("acme", "alice", &ios("phone")).await.unwrap();
        store.add_members("acme", "staff", &["alice".to_owned()]).await.unwrap();
    }
    // The closed store releases its file lock from a background task: give it a moment.
    let mut reopened = Store::open(&config).await;
    for _ in 0..50 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reopened = Store::open(&config).await;
    }
    let store = reopened.unwrap();
    let contact = store.contact("acme", "alice").await.unwrap().expect("alice survived");
    assert_eq!(contact.devices.len(), 1);
    assert_eq!(store.members("acme", "staff", None, 10).await.unwrap(), ["alice"]);
    assert!(store.migrate().await.unwrap().is_empty());
}

#[tokio::test]
async fn migrations_apply_once() {
    let store = memory().await;
    assert!(store.migrate().await.unwrap().is_empty(), "already applied at open");
}

#[tokio::test]
async fn template_versions_cannot_be_changed_once_published() {
    let store = memory().await;
    let spec: TemplateSpec = serde_json::from_value(json!({ "id": "t", "locales": { "default": { "sms": { "body": "one" } } } })).unwrap();
    assert_eq!(store.publish_template("acme", &spec).await.unwrap().version, 1);
    let tamper = "UPDATE type::record('template_version', ['acme', 't', 1]) SET spec = 'changed'";
    let err = store.run("tamper", tamper, json!({})).await.unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    let again = store.template_version("acme", "t", 1).await.unwrap().unwrap();
    assert_eq!(again.spec, spec);
}

/// What the stages see when the store fails: a row that does not decode is permanent (the
/// message is dead-lettered with the reason), never an outage that would hold it forever.
#[tokio::test]
async fn a_row_that_does_not_decode_is_a_decode_error_not_an_outage() {
    let store = memory().await;
    store.put_user("acme", &User { id: "erin".into(), ..User::default() }).await.unwrap();
    let sql = "UPDATE type::record('user', ['acme', 'erin']) SET devices = [{ id: 'loft', platform: 'carrier-pigeon' }]";
    store.run("corrupt", sql, json!({})).await.unwrap();
    let error = store.contacts("acme", &["erin".to_owned()]).await.unwrap_err();
    assert!(matches!(error, StoreError::Decode { .. }), "{error:?}");
    let port = error.into_port("directory store");
    assert_eq!(port.kind, herald_stage::PortErrorKind::Decode);
    assert!(port.detail.contains("carrier-pigeon"), "{port}");
}

fn apns_credentials(topic: &str, key: &str) -> herald_schemas::Credentials {
    herald_schemas::Credentials::Apns(herald_schemas::providers::ApnsCredentials {
        team_id: "TEAM123456".into(),
        key_id: "KEY1234567".into(),
        private_key: herald_schemas::Secret::new(format!("-----BEGIN PRIVATE KEY-----\n{key}\n-----END PRIVATE KEY-----\n")),
        topic: topic.into(),
    })
}

#[tokio::test]
async fn credentials_are_sealed_revised_and_resolved_by_app_then_default() {
    use herald_deliver::ports::CredentialStore;
    let store = memory().await;
    assert_eq!(store.put_credentials("acme", "default", &apns_credentials("com.example.app", "SECRET-ONE")).await.unwrap(), 1);
    assert_eq!(store.put_credentials("acme", "default", &apns_credentials("com.example.app", "SECRET-TWO")).await.unwrap(), 2);
    store.put_credentials("acme", "com.example.other", &apns_credentials("com.example.other", "SECRET-OTHER")).await.unwrap();
    // At rest: no secret in the rows.
    let raw: Vec<serde_json::Value> = store.rows("raw", "SELECT * FROM provider_credential", json!({})).await.unwrap();
    let text = serde_json::to_string(&raw).unwrap();
    assert!(!text.contains("SECRET") && !text.contains("BEGIN PRIVATE KEY"), "{text}");
    // Listed redacted, read back whole.
    let listed = store.list_credentials("acme").await.unwrap();
    assert_eq!(listed.iter().map(|c| (c.app.as_str(), c.revision)).collect::<Vec<_>>(), [("com.example.other", 1), ("default", 2)]);
    assert!(!serde_json::to_string(&listed).unwrap().contains("SECRET"));
    let cached = CachedCredentials::new(store.clone(), &CacheConfig::default());
    let own = cached.credentials("acme", "apns", Some("com.example.other")).await.unwrap().unwrap();
    assert_eq!(own.key.app, "com.example.other");
    let fallback = cached.credentials("acme", "apns", Some("com.example.unknown")).await.unwrap().unwrap();
    assert_eq!((fallback.key.app.as_str(), fallback.revision), ("default", 2));
    let herald_schemas::Credentials::Apns(c) = &fallback.credentials else { panic!("apns") };
    assert!(c.private_key.expose().contains("SECRET-TWO"));
    assert!(cached.credentials("globex", "apns", None).await.unwrap().is_none());
    assert!(store.delete_credentials("acme", "apns", "com.example.other").await.unwrap());
    cached.invalidate("acme");
    assert_eq!(cached.credentials("acme", "apns", Some("com.example.other")).await.unwrap().unwrap().key.app, "default");
}

#[tokio::test]
async fn a_refused_device_is_disabled_unless_it_registered_anew() {
    use herald_deliver::ports::Invalidation;
    let store = memory().await;
    store.put_user("acme", &User { id: "alice".into(), ..User::default() }).await.unwrap();
    store.put_device("acme", "alice", &ios("phone")).await.unwrap();
    let refused = |address: String| Invalidation {
        tenant: "acme".into(),
        user: "alice".into(),
        device: "phone".into(),
        address,
        reason: "Unregistered".into(),
        at: jiff::Timestamp::now(),
    };
    assert!(!store.disable_device(&refused("cd".repeat(32))).await.unwrap(), "another token: left alone");
    assert!(store.disable_device(&refused("ab".repeat(32))).await.unwrap());
    let device = store.contact("acme", "alice").await.unwrap().unwrap().devices.remove(0);
    assert_eq!((device.is_active(), device.disabled_reason.as_deref()), (false, Some("Unregistered")));
    // The app registers the token again: active again.
    store.put_device("acme", "alice", &ios("phone")).await.unwrap();
    assert!(store.contact("acme", "alice").await.unwrap().unwrap().devices[0].is_active());
}
