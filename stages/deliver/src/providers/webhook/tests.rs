use std::sync::Arc;

use herald_schemas::providers::WebhookCredentials;
use herald_schemas::{Channel, Content, Credentials, Delivery, Secret};

use super::guard::refused;
use super::*;
use crate::ports::memory::MemoryCredentials;
use crate::providers::Class;

const SECRET: &str = "whsec-test-secret-0123456789abcdefghij";
const BODY: &str = r#"{"event":"order_shipped","order":"A-1001"}"#;

fn v6(text: &str) -> std::net::IpAddr {
    std::net::IpAddr::V6(text.parse().unwrap())
}

fn delivery(url: &str) -> Delivery {
    let parts = [("body".to_owned(), BODY.to_owned())].into_iter().collect();
    Delivery {
        channel: Channel::Webhook,
        address: url.into(),
        user_id: None,
        content: Some(Content { parts, ..Content::default() }),
        ..herald_stage::memory::delivery(7)
    }
}

fn webhook(allow_private: &[&str]) -> Webhook {
    let credentials = Arc::new(MemoryCredentials::default());
    credentials.put("acme", "default", Credentials::Webhook(WebhookCredentials { secret: Secret::new(SECRET) }));
    let config = WebhookConfig { allow_private: allow_private.iter().map(|s| (*s).to_owned()).collect(), ..WebhookConfig::default() };
    Webhook::new(&config, &TlsConfig::default(), credentials, None).unwrap()
}

#[test]
fn the_signature_is_the_documented_hmac() {
    // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(SECRET, b'1733550000.' + BODY, hashlib.sha256).hexdigest())"
    assert_eq!(signature(SECRET, 1_733_550_000, BODY.as_bytes()), "v1=c1035ac4e3a31233fb0a7c36f23684de70252ff8293e1e215fa3b38632e45c0c");
    assert_ne!(
        signature(SECRET, 1_733_550_001, BODY.as_bytes()),
        signature(SECRET, 1_733_550_000, BODY.as_bytes()),
        "the timestamp is signed"
    );
}

#[test]
fn the_request_carries_the_body_as_rendered_and_its_headers() {
    let request = build(&delivery("https://hooks.example.com/herald?x=1"), SECRET, 1_733_550_000).unwrap();
    assert_eq!(request.url.as_str(), "https://hooks.example.com/herald?x=1");
    assert_eq!(request.body, BODY);
    let header = |name: &str| request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("herald-timestamp"), Some("1733550000"));
    assert_eq!(header("herald-signature"), Some("v1=c1035ac4e3a31233fb0a7c36f23684de70252ff8293e1e215fa3b38632e45c0c"));
    assert_eq!(header("herald-delivery-id"), Some(uuid::Uuid::from_u128(7).to_string().as_str()));
}

#[test]
fn urls_herald_will_not_call_are_refused_with_the_reason() {
    for url in ["ftp://hooks.example.com/x", "https://user:pass@hooks.example.com/x", "not a url", "file:///etc/passwd", "https://"] {
        let error = parse_url(url).unwrap_err();
        assert_eq!((error.class, error.code.as_str()), (Class::Permanent, "invalid_url"), "{url}");
    }
    let mut no_body = delivery("https://hooks.example.com/x");
    no_body.content = None;
    assert_eq!(build(&no_body, SECRET, 0).unwrap_err().code, "no_channel_content");
}

#[test]
fn every_answer_has_its_class() {
    use Class::*;
    for (status, class, code) in [
        (400, Permanent, "http_400"),
        (401, Permanent, "http_401"),
        (404, Permanent, "http_404"),
        (301, Permanent, "redirect_refused"),
        (302, Permanent, "redirect_refused"),
        (307, Permanent, "redirect_refused"),
        (408, Outage, "http_408"),
        (410, TokenInvalid, "http_410"),
        (429, Throttled, "http_429"),
        (500, Outage, "http_500"),
        (503, Outage, "http_503"),
    ] {
        let error = classify(status, "", None);
        assert_eq!((error.class, error.code.as_str()), (class, code), "{status}");
    }
}

#[test]
fn private_and_reserved_addresses_are_refused_public_ones_are_not() {
    for ip in [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "192.0.0.8",
        "192.0.2.1",
        "240.0.0.1",
    ] {
        assert!(refused(ip.parse().unwrap()), "{ip} must be refused");
    }
    for ip in [
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "::10.0.0.1",
    ] {
        assert!(refused(v6(ip)), "{ip} must be refused");
    }
    for ip in ["8.8.8.8", "93.184.216.34", "172.32.0.1", "100.128.0.1", "192.169.0.1", "1.1.1.1"] {
        assert!(!refused(ip.parse().unwrap()), "{ip} is public");
    }
    for ip in ["2606:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8"] {
        assert!(!refused(v6(ip)), "{ip} is public");
    }
}

#[tokio::test]
async fn a_url_that_names_or_resolves_to_a_private_address_is_never_called() {
    let hook = webhook(&[]);
    for url in [
        "http://127.0.0.1:1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:10.0.0.1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://localhost:1/hook",
    ] {
        let error = hook.send(&delivery(url)).await.unwrap_err();
        assert_eq!((error.class, error.code.as_str()), (Class::Permanent, "address_refused"), "{url}: {}", error.detail);
    }
    // Named in allow_private: called (nothing listens on port 1, so the call fails to connect).
    let allowed = webhook(&["127.0.0.1:1"]);
    let error = allowed.send(&delivery("http://127.0.0.1:1/hook")).await.unwrap_err();
    assert_eq!((error.class, error.code.as_str()), (Class::Outage, "connect_error"), "{}", error.detail);
    // Another port of the same host is not.
    let error = allowed.send(&delivery("http://127.0.0.1:2/hook")).await.unwrap_err();
    assert_eq!(error.code, "address_refused");
}

#[tokio::test]
async fn a_tenant_without_a_secret_gets_no_credentials() {
    let config = WebhookConfig::default();
    let hook = Webhook::new(&config, &TlsConfig::default(), Arc::new(MemoryCredentials::default()), None).unwrap();
    let error = hook.send(&delivery("https://hooks.example.com/x")).await.unwrap_err();
    assert_eq!((error.class, error.code.as_str()), (Class::Permanent, "no_credentials"));
}
