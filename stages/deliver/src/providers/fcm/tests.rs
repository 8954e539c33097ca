use herald_schemas::{Content, DedupeKey, Delivery, Priority};

use super::*;

#[test]
fn the_message_carries_token_notification_data_and_the_platform_blocks() {
    let now = Timestamp::now();
    let parts = [("title", "Shipped"), ("body", "On its way"), ("data", r#"{"order": 1234}"#)];
    let delivery = Delivery {
        channel: herald_schemas::Channel::Push,
        platform: Some(herald_schemas::directory::Platform::Android),
        address: "fcm-token-abc".into(),
        priority: Priority::Normal,
        expires_at: Some(now + jiff::SignedDuration::from_secs(600)),
        dedupe: Some(DedupeKey { key: "order-1234".into(), window_secs: 600 }),
        content: Some(Content { parts: parts.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), ..Content::default() }),
        ..herald_stage::memory::delivery(3)
    };
    let body = build(&delivery, now).unwrap();
    let message = &body["message"];
    assert_eq!(message["token"], "fcm-token-abc");
    assert_eq!(message["notification"]["title"], "Shipped");
    assert_eq!(message["data"]["order"], "1234", "FCM data values are strings");
    assert_eq!(message["android"]["priority"], "HIGH");
    assert_eq!(message["android"]["ttl"], "600s");
    assert_eq!(message["android"]["collapse_key"], "order-1234");
    assert_eq!(message["apns"]["headers"]["apns-priority"], "10");
    assert_eq!(message["webpush"]["headers"]["TTL"], "600");
    let low = build(&Delivery { priority: Priority::Low, expires_at: None, ..delivery }, now).unwrap();
    assert_eq!(low["message"]["android"]["priority"], "NORMAL");
    assert!(low["message"]["android"].get("ttl").is_none());
}
