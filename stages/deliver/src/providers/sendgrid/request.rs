//! The Mail Send body a delivery becomes: one personalization to the recipient, `from` the
//! tenant's verified sender, the rendered `subject`, `content` as `text/plain` then `text/html`
//! (the order SendGrid requires), attachments base64-encoded, the template's `List-Unsubscribe`
//! headers and Herald's `Message-ID` (the one SMTP would send, so a mailbox that got it through
//! either provider sees one message), `Reply-To` as SendGrid's `reply_to`, and `custom_args`
//! naming the delivery, which SendGrid echoes in every event it posts about the message.

use base64::Engine as _;
use herald_schemas::Delivery;
use lettre::message::Mailbox;
use serde_json::{Map, Value, json};

use crate::ProviderError;
use crate::providers::attachments::File;
use crate::providers::email::email;

fn address(mailbox: &Mailbox) -> Value {
    match &mailbox.name {
        Some(name) if !name.is_empty() => json!({ "email": mailbox.email.to_string(), "name": name }),
        _ => json!({ "email": mailbox.email.to_string() }),
    }
}

/// The JSON body of `POST /v3/mail/send`.
pub fn body(delivery: &Delivery, from: &str, files: &[File]) -> Result<Value, ProviderError> {
    let email = email(delivery, from, "the tenant's SendGrid `from`")?;
    let mut content = Vec::with_capacity(2);
    if let Some(text) = email.body.text() {
        content.push(json!({ "type": "text/plain", "value": text }));
    }
    if let Some(html) = email.body.html() {
        content.push(json!({ "type": "text/html", "value": html }));
    }
    let mut headers = Map::new();
    headers.insert("Message-ID".into(), Value::String(email.message_id.clone()));
    let mut reply_to = None;
    for (name, value) in &email.headers {
        if *name == "Reply-To" {
            let mailbox: Mailbox = value
                .parse()
                .map_err(|e| ProviderError::permanent("invalid_header", format!("Reply-To {value:?} is not a mailbox: {e}")))?;
            reply_to = Some(address(&mailbox));
        } else {
            headers.insert((*name).to_owned(), Value::String(value.clone()));
        }
    }
    let mut custom_args = Map::new();
    custom_args.insert("herald_delivery_id".into(), Value::String(delivery.delivery_id.to_string()));
    custom_args.insert("herald_notification_id".into(), Value::String(delivery.notification_id.to_string()));
    custom_args.insert("herald_tenant".into(), Value::String(delivery.tenant.clone()));
    let mut body = json!({
        "personalizations": [{ "to": [address(&email.to)] }],
        "from": address(&email.from),
        "subject": email.subject,
        "content": content,
        "headers": headers,
        "custom_args": custom_args,
        "categories": [delivery.template.clone()],
    });
    if let Some(reply_to) = reply_to {
        body["reply_to"] = reply_to;
    }
    if !files.is_empty() {
        let attachments: Vec<Value> = files
            .iter()
            .map(|f| {
                json!({
                    "content": base64::engine::general_purpose::STANDARD.encode(&f.bytes),
                    "filename": f.filename,
                    "type": f.content_type,
                    "disposition": "attachment",
                })
            })
            .collect();
        body["attachments"] = Value::Array(attachments);
    }
    Ok(body)
}
