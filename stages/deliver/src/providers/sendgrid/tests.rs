use std::time::Duration;

use bytes::Bytes;
use herald_schemas::{Channel, Content, Delivery};

use super::*;
use crate::providers::Class;
use crate::providers::attachments::File;

fn email(parts: &[(&str, &str)]) -> Delivery {
    let parts = parts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let headers = [
        ("List-Unsubscribe".to_owned(), "<https://herald.example/u/abc>".to_owned()),
        ("list-unsubscribe-post".to_owned(), "List-Unsubscribe=One-Click".to_owned()),
        ("Reply-To".to_owned(), "Support <help@acme.example>".to_owned()),
        ("Bcc".to_owned(), "everyone@example.com".to_owned()),
    ]
    .into();
    Delivery {
        channel: Channel::Email,
        address: "ada@example.com".into(),
        content: Some(Content { parts, headers, ..Content::default() }),
        ..herald_stage::memory::delivery(9)
    }
}

#[test]
fn answers_are_classified() {
    use Class::*;
    let refusal = r#"{"errors":[{"message":"The from address does not match a verified Sender Identity.","field":"from","help":null}]}"#;
    let cases = [
        (400, Permanent, "bad_request"),
        (401, Permanent, "unauthorized"),
        (403, Permanent, "forbidden"),
        (413, Permanent, "payload_too_large"),
        (429, Throttled, "too_many_requests"),
        (500, Outage, "server_error"),
        (502, Outage, "server_error"),
        (503, Outage, "server_error"),
        (418, Permanent, "refused"),
    ];
    for (status, class, code) in cases {
        let error = classify(status, refusal, Some(Duration::from_secs(3)));
        assert_eq!((error.class, error.code.as_str()), (class, code), "HTTP {status}");
        assert!(error.detail.contains("verified Sender Identity. (from)"), "the field SendGrid named: {}", error.detail);
        let expected = (class != Permanent).then_some(Duration::from_secs(3));
        assert_eq!(error.retry_after, expected, "HTTP {status}");
    }
    let unreadable = classify(503, "<html>Service Unavailable</html>", None);
    assert!(unreadable.detail.contains("<html>Service Unavailable"), "{}", unreadable.detail);
}

#[test]
fn a_slow_down_waits_for_retry_after_or_the_rate_limits_reset() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-ratelimit-reset", "1700000030".parse().unwrap());
    assert_eq!(retry_after(&headers, 1_700_000_000), Some(Duration::from_secs(30)));
    assert_eq!(retry_after(&headers, 1_700_000_100), Some(Duration::from_secs(1)), "a reset in the past: soon, not now");
    headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
    assert_eq!(retry_after(&headers, 1_700_000_000), Some(Duration::from_secs(7)), "Retry-After first");
    assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), 0), None);
}

#[test]
fn the_body_names_the_delivery_orders_the_content_and_keeps_the_allowed_headers() {
    let delivery = email(&[("subject", "Your order shipped"), ("text", "It ships today."), ("html", "<p>It ships <b>today</b>.</p>")]);
    let files = [File { filename: "label.pdf".into(), content_type: "application/pdf".into(), bytes: Bytes::from_static(b"%PDF-1.7") }];
    let body = body(&delivery, "Acme <no-reply@acme.example>", &files).unwrap();
    assert_eq!(body["personalizations"], serde_json::json!([{ "to": [{ "email": "ada@example.com" }] }]));
    assert_eq!(body["from"], serde_json::json!({ "email": "no-reply@acme.example", "name": "Acme" }));
    assert_eq!(body["reply_to"], serde_json::json!({ "email": "help@acme.example", "name": "Support" }));
    assert_eq!(body["subject"], "Your order shipped");
    let types: Vec<&str> = body["content"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["text/plain", "text/html"], "SendGrid takes text/plain first");
    let headers = body["headers"].as_object().unwrap();
    assert_eq!(headers["Message-ID"], format!("<{}@acme.example>", delivery.delivery_id), "the id SMTP would send");
    assert_eq!(headers["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click", "spelt as the header is");
    assert!(!headers.contains_key("Reply-To") && !headers.contains_key("Bcc"), "{headers:?}");
    assert!(!body.to_string().contains("everyone@example.com"), "a template cannot add recipients");
    assert_eq!(body["custom_args"]["herald_delivery_id"], delivery.delivery_id.to_string());
    assert_eq!(body["attachments"][0]["content"], "JVBERi0xLjc=");
    assert_eq!(
        (&body["attachments"][0]["filename"], &body["attachments"][0]["type"]),
        (&serde_json::json!("label.pdf"), &serde_json::json!("application/pdf"))
    );
    let html_only = body_of(&email(&[("subject", "s"), ("html", "<p>x</p>")]));
    assert_eq!(html_only["content"], serde_json::json!([{ "type": "text/html", "value": "<p>x</p>" }]));
    assert!(html_only.get("attachments").is_none());
}

fn body_of(delivery: &Delivery) -> serde_json::Value {
    body(delivery, "no-reply@acme.example", &[]).unwrap()
}

#[test]
fn what_cannot_be_sent_is_refused_before_the_call() {
    let code = |delivery: &Delivery, from: &str| body(delivery, from, &[]).unwrap_err().code;
    assert_eq!(code(&email(&[("text", "x")]), "no-reply@acme.example"), "no_subject");
    assert_eq!(code(&email(&[("subject", "s")]), "no-reply@acme.example"), "no_body");
    assert_eq!(code(&email(&[("subject", "s"), ("text", "x")]), "Acme"), "invalid_sender");
    let nowhere = Delivery { address: "not an address".into(), ..email(&[("subject", "s"), ("text", "x")]) };
    assert_eq!(code(&nowhere, "no-reply@acme.example"), "invalid_address");
    let mut bad_reply = email(&[("subject", "s"), ("text", "x")]);
    if let Some(content) = bad_reply.content.as_mut() {
        content.headers.insert("Reply-To".into(), "nobody".into());
    }
    assert_eq!(code(&bad_reply, "no-reply@acme.example"), "invalid_header");
}
