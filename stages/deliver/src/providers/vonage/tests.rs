use herald_schemas::{Channel, Content, Delivery, SmsEncoding, SmsInfo};

use super::*;
use crate::providers::Class;

#[test]
fn statuses_are_classified() {
    let cases = [
        ("1", Class::Throttled, "throttled"),
        ("5", Class::Outage, "internal_error"),
        ("2", Class::Permanent, "missing_parameters"),
        ("3", Class::Permanent, "invalid_parameters"),
        ("4", Class::Permanent, "invalid_credentials"),
        ("9", Class::Permanent, "partner_quota_violation"),
        ("15", Class::Permanent, "invalid_sender_address"),
        ("99", Class::Permanent, "unknown_status"),
    ];
    for (status, class, code) in cases {
        let error = classify_status(status, "text");
        assert_eq!((error.class, error.code.as_str()), (class, code), "status {status}");
    }
    for (status, class) in [(503, Class::Outage), (500, Class::Outage), (429, Class::Throttled), (401, Class::Permanent)] {
        assert_eq!(classify_http(status, "", None).class, class, "HTTP {status}");
    }
}

#[test]
fn the_form_names_the_delivery_and_the_encoding() {
    let parts = [("body".to_owned(), "안녕하세요".to_owned())].into_iter().collect();
    let sms = Some(SmsInfo { encoding: SmsEncoding::Ucs2, units: 5, segments: 1 });
    let delivery = Delivery {
        channel: Channel::Sms,
        address: "+821012345678".into(),
        content: Some(Content { parts, sms, ..Content::default() }),
        ..herald_stage::memory::delivery(4)
    };
    let config = VonageConfig { status_callback: Some("https://herald.example/dlr".into()), ..VonageConfig::default() };
    let form = form(&delivery, "key", "secret", "Acme", &config).unwrap();
    let field = |name: &str| form.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(field("to"), Some("821012345678"), "digits without +");
    assert_eq!(field("type"), Some("unicode"));
    assert_eq!(field("client-ref"), Some(delivery.delivery_id.to_string().as_str()));
    assert_eq!(field("callback"), Some("https://herald.example/dlr"));
    assert_eq!(field("from"), Some("Acme"));
}
