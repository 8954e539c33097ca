//! Enrich and fanout on an in-memory directory.

use std::collections::{BTreeMap, HashSet};

use herald_schemas::NotificationRequest;
use herald_schemas::directory::{Device, Environment, Preferences, User};

use herald_stage::memory::{MemoryKv, MemoryTemplates};

use super::*;

/// Users and groups in memory, for one tenant.
#[derive(Default)]
struct Memory {
    contacts: BTreeMap<String, Contact>,
    groups: BTreeMap<String, Vec<String>>,
}

impl Directory for Memory {
    async fn contacts(&self, _tenant: &str, ids: &[String]) -> Result<Vec<Contact>, PortError> {
        Ok(ids.iter().filter_map(|id| self.contacts.get(id).cloned()).collect())
    }

    async fn members(&self, _tenant: &str, group: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, PortError> {
        let mut members = self.groups.get(group).cloned().unwrap_or_default();
        members.sort();
        Ok(members.into_iter().filter(|m| after.is_none_or(|a| m.as_str() > a)).take(limit).collect())
    }
}

fn device(id: &str, platform: Platform, disabled: bool) -> Device {
    Device {
        id: id.into(),
        platform,
        token: Some(format!("token-{id}")),
        subscription: None,
        app_id: None,
        environment: Environment::Production,
        voip: false,
        last_seen: None,
        disabled_at: disabled.then_some(jiff::Timestamp::UNIX_EPOCH),
        disabled_reason: disabled.then(|| "Unregistered".to_owned()),
    }
}

fn directory() -> Memory {
    let mut memory = Memory::default();
    let alice = Contact {
        user: User { id: "alice".into(), email: Some("alice@example.com".into()), locale: Some("ko-KR".into()), ..User::default() },
        devices: vec![
            device("phone", Platform::Ios, false),
            device("old", Platform::Android, true),
            device("pixel", Platform::Android, false),
        ],
        preferences: Preferences {
            categories: BTreeMap::from([("marketing".to_owned(), BTreeMap::from([(Channel::Email, false)]))]),
            ..Preferences::default()
        },
    };
    let bob = Contact {
        user: User { id: "bob".into(), phone: Some("+14155550100".into()), ..User::default() },
        devices: vec![],
        preferences: Preferences { channels: BTreeMap::from([(Channel::Sms, false)]), ..Preferences::default() },
    };
    let carol = Contact {
        user: User { id: "carol".into(), ..User::default() },
        preferences: Preferences { unsubscribed: true, ..Preferences::default() },
        ..Contact::default()
    };
    for contact in [alice, bob, carol] {
        memory.contacts.insert(contact.user.id.clone(), contact);
    }
    memory
}

/// Template `t` (no defaults) and `promo` (defaults: e-mail and push, category `marketing`).
fn templates() -> MemoryTemplates {
    let templates = MemoryTemplates::new();
    let spec = |json: serde_json::Value| serde_json::from_value::<herald_schemas::TemplateSpec>(json).unwrap();
    let parts = serde_json::json!({ "log": { "body": "x" }, "push": { "title": "x" }, "email": { "text": "x" }, "sms": { "body": "x" } });
    templates.publish("acme", spec(serde_json::json!({ "id": "t", "locales": { "default": parts } })), jiff::Timestamp::UNIX_EPOCH);
    let promo =
        serde_json::json!({ "id": "promo", "channels": ["email", "push"], "category": "marketing", "locales": { "default": parts } });
    templates.publish("acme", spec(promo), jiff::Timestamp::UNIX_EPOCH);
    templates
}

fn all_channels() -> EnrichConfig {
    EnrichConfig { enabled_channels: Channel::ALL.to_vec(), ..EnrichConfig::default() }
}

fn notification(body: &str) -> Notification {
    Notification {
        v: 1,
        notification_id: uuid::Uuid::from_u128(1),
        tenant: "acme".into(),
        accepted_at: jiff::Timestamp::UNIX_EPOCH,
        request: NotificationRequest::parse(body.as_bytes()).unwrap(),
    }
}

fn deliveries(out: &Outcome) -> Vec<String> {
    out.forwarded::<Delivery>(Hop::Render).iter().map(|d| format!("{}:{}", d.channel, d.address)).collect()
}

fn events(out: &Outcome) -> Vec<String> {
    out.events().iter().map(|e| format!("{}/{}", e.status, e.reason.as_deref().unwrap_or(""))).collect()
}

/// One table: config, request → deliveries as `channel:address`, events as `status/reason`.
async fn check(config: EnrichConfig, body: &str, expected_deliveries: &[&str], expected_events: &[&str]) {
    let out = Enrich::new(directory(), templates(), config).process(notification(body), &Meta::for_tests()).await.unwrap();
    assert_eq!(deliveries(&out), expected_deliveries, "deliveries for {body}");
    assert_eq!(events(&out), expected_events, "events for {body}");
}

#[tokio::test]
async fn resolution_table() {
    check(EnrichConfig::default(), r#"{"template":"t","recipients":[{"user_id":"alice"}]}"#, &["log:user:alice"], &[]).await;
    // Push goes to every active device; the disabled one gets nothing.
    check(
        all_channels(),
        r#"{"template":"t","recipients":[{"user_id":"alice"}],"channels":["push"]}"#,
        &["push:token-phone", "push:token-pixel"],
        &[],
    )
    .await;
    check(
        EnrichConfig { enabled_channels: vec![Channel::Log, Channel::Email], ..EnrichConfig::default() },
        r#"{"template":"t","recipients":[{"user_id":"alice"}],"channels":["email","log","sms"]}"#,
        &["email:alice@example.com", "log:user:alice"],
        &["skipped/channel_disabled"],
    )
    .await;
    check(all_channels(), r#"{"template":"t","recipients":[{"user_id":"mallory"}]}"#, &[], &["failed/unknown_recipient"]).await;
    check(
        all_channels(),
        r#"{"template":"t","recipients":[{"email":"x@example.com"}],"channels":["email"]}"#,
        &["email:x@example.com"],
        &[],
    )
    .await;
    check(all_channels(), r#"{"template":"t","recipients":[{"phone":"+14155550199"}],"channels":["email"]}"#, &[], &["skipped/no_address"])
        .await;
    check(all_channels(), r#"{"template":"t","recipients":[{"user_id":"bob"}],"channels":["email"]}"#, &[], &["skipped/no_address"]).await;
    check(all_channels(), r#"{"template":"t","recipients":[{"user_id":"bob"}],"channels":["push"]}"#, &[], &["skipped/no_address"]).await;
}

#[tokio::test]
async fn preferences_are_honoured_each_with_its_event() {
    // Per category per channel: alice takes no marketing e-mail, but billing e-mail and marketing push.
    check(
        all_channels(),
        r#"{"template":"t","recipients":[{"user_id":"alice"}],"channels":["email","push"],"category":"marketing"}"#,
        &["push:token-phone", "push:token-pixel"],
        &["opted_out/category_opt_out"],
    )
    .await;
    check(
        all_channels(),
        r#"{"template":"t","recipients":[{"user_id":"alice"}],"channels":["email"],"category":"billing"}"#,
        &["email:alice@example.com"],
        &[],
    )
    .await;
    // Per channel: bob takes no SMS at all.
    check(
        all_channels(),
        r#"{"template":"t","recipients":[{"user_id":"bob"}],"channels":["sms","voice"]}"#,
        &["voice:+14155550100"],
        &["opted_out/channel_opt_out"],
    )
    .await;
    // Unsubscribed: nothing on any channel.
    check(
        all_channels(),
        r#"{"template":"t","recipients":[{"user_id":"carol"}],"channels":["log","in_app"]}"#,
        &[],
        &["opted_out/unsubscribed", "opted_out/unsubscribed"],
    )
    .await;
}

#[tokio::test]
async fn an_opt_out_event_names_the_channel_and_user() {
    let out = Enrich::new(directory(), templates(), all_channels())
        .process(notification(r#"{"template":"t","recipients":[{"user_id":"bob"}],"channels":["sms"]}"#), &Meta::for_tests())
        .await
        .unwrap();
    let event = &out.events()[0];
    assert_eq!((event.user_id.as_deref(), event.channel), (Some("bob"), Some(Channel::Sms)));
    assert_eq!(event.detail.as_deref(), Some("opted out of sms"));
}

#[tokio::test]
async fn a_group_is_expanded_page_by_page() {
    let mut memory = directory();
    let members: Vec<String> = (0..25).map(|i| format!("m{i:03}")).collect();
    for id in &members {
        memory.contacts.insert(id.clone(), Contact { user: User { id: id.clone(), ..User::default() }, ..Contact::default() });
    }
    memory.groups.insert("staff".into(), members.iter().cloned().chain(["ghost".to_owned()]).collect());
    let config = EnrichConfig { fanout_page: 10, ..EnrichConfig::default() };
    let body = r#"{"template":"t","recipients":[{"group":"staff"},{"user_id":"m003"}]}"#;
    let enrich = Enrich::new(memory, templates(), config.clone());
    let out = enrich.process(notification(body), &Meta::for_tests()).await.unwrap();
    let direct: Vec<Delivery> = out.forwarded(Hop::Render);
    let mut pages: Vec<FanoutPage> = out.forwarded(Hop::Fanout);
    assert_eq!(pages.len(), 1);
    let fanout = Fanout::new(enrich.directory, templates(), MemoryKv::new(), config);
    let mut all = Vec::new();
    let mut unknown = 0;
    let mut sizes = Vec::new();
    while let Some(page) = pages.pop() {
        let out = fanout.process(page, &Meta::for_tests()).await.unwrap();
        let page_deliveries: Vec<Delivery> = out.forwarded(Hop::Render);
        sizes.push(page_deliveries.len());
        all.extend(page_deliveries);
        unknown += out.events().iter().filter(|e| e.reason.as_deref() == Some("unknown_recipient")).count();
        pages.extend(out.forwarded::<FanoutPage>(Hop::Fanout));
    }
    assert_eq!(sizes, [9, 10, 6], "pages of at most 10 members (`ghost`, first in order, has no user)");
    assert_eq!(unknown, 1, "a member without a user record fails with a reason");
    let ids: HashSet<_> = all.iter().map(|d| d.delivery_id).collect();
    assert_eq!(ids.len(), 25);
    assert!(ids.contains(&direct[0].delivery_id), "a user reached directly and through the group has one delivery id");
}

/// The first page of a notification to `group` with template `t` version 1.
fn first_page(group: &str) -> FanoutPage {
    FanoutPage {
        v: 1,
        notification: notification(&format!(r#"{{"template":"t","recipients":[{{"group":"{group}"}}]}}"#)),
        group: group.into(),
        after: None,
        page: 0,
        template_version: Some(1),
    }
}

#[tokio::test]
async fn a_page_is_deterministic() {
    let mut memory = directory();
    memory.groups.insert("g".into(), vec!["alice".into(), "bob".into()]);
    let fanout = Fanout::new(memory, templates(), MemoryKv::new(), EnrichConfig { fanout_page: 1, ..EnrichConfig::default() });
    let page = first_page("g");
    let a = fanout.process(page.clone(), &Meta::for_tests()).await.unwrap();
    let b = fanout.process(page, &Meta::for_tests()).await.unwrap();
    let keys = |o: &Outcome| o.emits.iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "the same page yields the same messages");
    let next: Vec<FanoutPage> = a.forwarded(Hop::Fanout);
    assert_eq!(next[0].after.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_page_redone_after_the_group_changed_does_not_fork_the_chain() {
    let page0 = |memory: Memory, claims: &MemoryKv| {
        let fanout = Fanout::new(memory, templates(), claims.clone(), EnrichConfig { fanout_page: 2, ..EnrichConfig::default() });
        (fanout, first_page("g"))
    };
    let claims = MemoryKv::new();
    let mut before = directory();
    before.groups.insert("g".into(), vec!["alice".into(), "bob".into(), "carol".into()]);
    let (fanout, page) = page0(before, &claims);
    let first = fanout.process(page.clone(), &Meta { sequence: 7, ..Meta::for_tests() }).await.unwrap();
    // The group changes, then the same message is redelivered (its holder crashed).
    let mut after = directory();
    after.groups.insert("g".into(), vec!["aaron".into(), "alice".into(), "bob".into(), "carol".into()]);
    let (fanout, _) = page0(after, &claims);
    let redone = fanout.process(page.clone(), &Meta { sequence: 7, attempt: 2, ..Meta::for_tests() }).await.unwrap();
    let next = |o: &Outcome| o.emits.iter().filter(|e| e.hop == Hop::Fanout).map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(next(&first), next(&redone), "the successor keeps its id, so the stream keeps one of them");
    // Any other copy of the page (republished after the duplicate window) is dropped with a reason.
    let copy = fanout.process(page, &Meta { sequence: 99, ..Meta::for_tests() }).await.unwrap();
    assert!(copy.forwarded::<Delivery>(Hop::Render).is_empty() && next(&copy).is_empty());
    assert_eq!(events(&copy), ["deduplicated/duplicate_page"]);
}

#[tokio::test]
async fn an_empty_group_is_skipped_with_a_reason() {
    let fanout = Fanout::new(directory(), templates(), MemoryKv::new(), EnrichConfig::default());
    let page = first_page("nobody");
    let out = fanout.process(page, &Meta::for_tests()).await.unwrap();
    assert_eq!(events(&out), ["skipped/empty_group"]);
}

#[tokio::test]
async fn the_template_supplies_default_channels_and_category_and_is_pinned() {
    // promo defaults to e-mail and push in category `marketing`; alice opted out of marketing
    // e-mail, so only her active push devices remain.
    let body = r#"{"template":"promo","recipients":[{"user_id":"alice"}]}"#;
    check(all_channels(), body, &["push:token-phone", "push:token-pixel"], &["opted_out/category_opt_out"]).await;
    let out = Enrich::new(directory(), templates(), all_channels()).process(notification(body), &Meta::for_tests()).await.unwrap();
    let pushes: Vec<Delivery> = out.forwarded(Hop::Render);
    assert!(pushes.iter().all(|d| d.template_version == Some(1) && d.category.as_deref() == Some("marketing")));
    assert_eq!(pushes.iter().map(|d| d.platform).collect::<Vec<_>>(), [Some(Platform::Ios), Some(Platform::Android)]);
    // The request's own channels and category win.
    check(
        all_channels(),
        r#"{"template":"promo","recipients":[{"user_id":"alice"}],"channels":["email"],"category":"orders"}"#,
        &["email:alice@example.com"],
        &[],
    )
    .await;
    // No such template: one failure for the notification, nothing fanned out.
    check(all_channels(), r#"{"template":"nope","recipients":[{"user_id":"alice"},{"group":"g"}]}"#, &[], &["failed/unknown_template"])
        .await;
}
