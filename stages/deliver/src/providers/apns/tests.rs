use herald_schemas::{Content, DedupeKey, Delivery, DeviceRef, Priority};

use super::*;

fn delivery(parts: &[(&str, &str)]) -> Delivery {
    Delivery {
        channel: herald_schemas::Channel::Push,
        platform: Some(herald_schemas::directory::Platform::Ios),
        address: "ab".repeat(32),
        device: Some(DeviceRef { id: "phone".into(), app_id: None, environment: Environment::Sandbox }),
        content: Some(Content { parts: parts.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), ..Content::default() }),
        ..herald_stage::memory::delivery(0x1234)
    }
}

fn header<'a>(request: &'a ApnsRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

#[test]
fn headers_follow_the_delivery() {
    let expires = jiff::Timestamp::from_second(1_900_000_000).unwrap();
    let alert = Delivery {
        expires_at: Some(expires),
        dedupe: Some(DedupeKey { key: "order-1234".into(), window_secs: 600 }),
        ..delivery(&[("title", "Shipped"), ("body", "On its way")])
    };
    let request = build(&alert, "com.example.app").unwrap();
    assert_eq!(request.path, format!("/3/device/{}", "ab".repeat(32)));
    assert_eq!(request.environment, Environment::Sandbox);
    assert_eq!(header(&request, "apns-id"), Some(uuid::Uuid::from_u128(0x1234).hyphenated().to_string().as_str()));
    assert_eq!(header(&request, "apns-topic"), Some("com.example.app"));
    assert_eq!(header(&request, "apns-push-type"), Some("alert"));
    assert_eq!(header(&request, "apns-priority"), Some("10"));
    assert_eq!(header(&request, "apns-expiration"), Some("1900000000"));
    assert_eq!(header(&request, "apns-collapse-id"), Some("order-1234"));
    let payload: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(payload["aps"]["alert"]["title"], "Shipped");

    let low = build(&Delivery { priority: Priority::Low, ..alert.clone() }, "com.example.app").unwrap();
    assert_eq!(header(&low, "apns-priority"), Some("5"));
    let background = build(&delivery(&[("data", r#"{"sync": true}"#)]), "com.example.app").unwrap();
    assert_eq!((header(&background, "apns-push-type"), header(&background, "apns-priority")), (Some("background"), Some("5")));
    let voip = build(&Delivery { voip: true, ..alert.clone() }, "com.example.app").unwrap();
    assert_eq!((header(&voip, "apns-push-type"), header(&voip, "apns-topic")), (Some("voip"), Some("com.example.app.voip")));
    let long = Delivery { dedupe: Some(DedupeKey { key: "k".repeat(100), window_secs: 600 }), ..alert };
    assert!(header(&build(&long, "com.example.app").unwrap(), "apns-collapse-id").is_some_and(|c| c.len() <= 64));
}
