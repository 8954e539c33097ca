use herald_schemas::{Channel, Content, Delivery};

use super::*;

fn email(parts: &[(&str, &str)]) -> Delivery {
    let parts = parts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let headers = [
        ("List-Unsubscribe".to_owned(), "<https://herald.example/u/abc>, <mailto:unsubscribe@acme.example>".to_owned()),
        ("List-Unsubscribe-Post".to_owned(), "List-Unsubscribe=One-Click".to_owned()),
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
fn a_message_is_multipart_with_its_headers_and_a_message_id_from_the_delivery() {
    let delivery = email(&[("subject", "Your order shipped"), ("text", "It ships today."), ("html", "<p>It ships <b>today</b>.</p>")]);
    let raw = String::from_utf8(message(&delivery, "Acme <no-reply@acme.example>").unwrap().formatted()).unwrap();
    assert!(raw.contains(&format!("Message-ID: <{}@acme.example>", delivery.delivery_id)), "{raw}");
    assert!(raw.contains("From: Acme <no-reply@acme.example>") && raw.contains("To: ada@example.com"), "{raw}");
    assert!(raw.contains("Subject: Your order shipped"), "{raw}");
    assert!(raw.contains("multipart/alternative"), "{raw}");
    assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
    assert!(raw.contains("List-Unsubscribe: <https://herald.example/u/abc>"), "{raw}");
    assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{raw}");
    assert!(!raw.contains("everyone@example.com"), "a template cannot add recipients: {raw}");
    let again = String::from_utf8(message(&delivery, "Acme <no-reply@acme.example>").unwrap().formatted()).unwrap();
    assert!(again.contains(&format!("Message-ID: <{}@acme.example>", delivery.delivery_id)), "the same id on every retry");
}

#[test]
fn what_cannot_be_sent_is_refused_before_the_relay() {
    let no_subject = email(&[("text", "x")]);
    assert_eq!(message(&no_subject, "no-reply@acme.example").unwrap_err().code, "no_subject");
    let no_body = email(&[("subject", "x")]);
    assert_eq!(message(&no_body, "no-reply@acme.example").unwrap_err().code, "no_body");
    let bad_address = Delivery { address: "not an address".into(), ..email(&[("subject", "x"), ("text", "y")]) };
    assert_eq!(message(&bad_address, "no-reply@acme.example").unwrap_err().code, "invalid_address");
    assert_eq!(message(&email(&[("subject", "x"), ("text", "y")]), "nobody").unwrap_err().code, "invalid_sender");
}
