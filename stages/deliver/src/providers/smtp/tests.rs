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
    let raw = String::from_utf8(message(&delivery, "Acme <no-reply@acme.example>", &[]).unwrap().formatted()).unwrap();
    assert!(raw.contains(&format!("Message-ID: <{}@acme.example>", delivery.delivery_id)), "{raw}");
    assert!(raw.contains("From: Acme <no-reply@acme.example>") && raw.contains("To: ada@example.com"), "{raw}");
    assert!(raw.contains("Subject: Your order shipped"), "{raw}");
    assert!(raw.contains("multipart/alternative"), "{raw}");
    assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
    assert!(raw.contains("List-Unsubscribe: <https://herald.example/u/abc>"), "{raw}");
    assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{raw}");
    assert!(!raw.contains("everyone@example.com"), "a template cannot add recipients: {raw}");
    let again = String::from_utf8(message(&delivery, "Acme <no-reply@acme.example>", &[]).unwrap().formatted()).unwrap();
    assert!(again.contains(&format!("Message-ID: <{}@acme.example>", delivery.delivery_id)), "the same id on every retry");
}

#[test]
fn what_cannot_be_sent_is_refused_before_the_relay() {
    let no_subject = email(&[("text", "x")]);
    assert_eq!(message(&no_subject, "no-reply@acme.example", &[]).unwrap_err().code, "no_subject");
    let no_body = email(&[("subject", "x")]);
    assert_eq!(message(&no_body, "no-reply@acme.example", &[]).unwrap_err().code, "no_body");
    let bad_address = Delivery { address: "not an address".into(), ..email(&[("subject", "x"), ("text", "y")]) };
    assert_eq!(message(&bad_address, "no-reply@acme.example", &[]).unwrap_err().code, "invalid_address");
    assert_eq!(message(&email(&[("subject", "x"), ("text", "y")]), "nobody", &[]).unwrap_err().code, "invalid_sender");
}

#[tokio::test]
async fn attachments_are_read_from_the_store_and_a_missing_one_fails_for_good() {
    use herald_schemas::Attachment;
    let store = herald_attachments::Attachments::memory();
    store.put("acme", "up/report.pdf", bytes::Bytes::from_static(b"%PDF-1.7 hello")).await.unwrap();
    let attachment = |reference: Option<&str>, content: Option<&str>, filename: &str| Attachment {
        filename: filename.into(),
        content_type: None,
        reference: reference.map(Into::into),
        content: content.map(Into::into),
        size: None,
    };
    let mut delivery = email(&[("subject", "Your report"), ("text", "Attached.")]);
    delivery.tenant = "acme".into();
    delivery.attachments = vec![attachment(Some("up/report.pdf"), None, "report.pdf"), attachment(None, Some("aGVsbG8="), "hi.txt")];
    let files = crate::providers::attachments::load(Some(&store), &delivery).await.unwrap();
    assert_eq!(files[0].bytes.as_ref(), b"%PDF-1.7 hello");
    assert_eq!(files[0].content_type, "application/pdf", "guessed from the name");
    assert_eq!((files[1].bytes.as_ref(), files[1].content_type.as_str()), (&b"hello"[..], "text/plain"));
    let raw = String::from_utf8(message(&delivery, "no-reply@acme.example", &files).unwrap().formatted()).unwrap();
    assert!(raw.contains("multipart/mixed"), "{raw}");
    assert!(raw.contains("Content-Disposition: attachment; filename=\"report.pdf\""), "{raw}");
    // Another tenant's delivery cannot read acme's file; a deleted one is `attachment_missing`.
    let mut other = delivery.clone();
    other.tenant = "globex".into();
    let err = crate::providers::attachments::load(Some(&store), &other).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class), ("attachment_missing", crate::providers::Class::Permanent));
    assert!(err.detail.contains("report.pdf") && err.detail.contains("attachments.retention"), "{}", err.detail);
    store.delete("acme", "up/report.pdf").await.unwrap();
    assert_eq!(crate::providers::attachments::load(Some(&store), &delivery).await.unwrap_err().code, "attachment_missing");
    // No store at all: an outage (this process is misconfigured), never a silent send without the file.
    assert_eq!(crate::providers::attachments::load(None, &delivery).await.unwrap_err().class, crate::providers::Class::Outage);
}
