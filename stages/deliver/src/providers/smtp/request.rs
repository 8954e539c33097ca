//! The message a delivery becomes: `From` the tenant's sender, `To` the recipient, the rendered
//! `subject`, a `text` and an `html` part (multipart/alternative when both), the rendered headers
//! (`List-Unsubscribe`, `List-Unsubscribe-Post`), and a `Message-ID` made of the delivery id and
//! the sender's domain — the same on every retry, so a relay or a mailbox sees one message.

use herald_schemas::Delivery;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Attachment as LettreAttachment, Mailbox, MultiPart, SinglePart};

use crate::ProviderError;
use crate::providers::attachments::File;

/// The headers a template may set (others are Herald's or the relay's to write).
const ALLOWED_HEADERS: [&str; 3] = ["List-Unsubscribe", "List-Unsubscribe-Post", "Reply-To"];

/// The `Message-ID` of a delivery.
pub fn message_id(delivery: &Delivery, from: &Mailbox) -> String {
    format!("<{}@{}>", delivery.delivery_id, from.email.domain())
}

/// Builds the message, with `files` attached (multipart/mixed around the body).
pub fn message(delivery: &Delivery, from: &str, files: &[File]) -> Result<Message, ProviderError> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| ProviderError::permanent("invalid_sender", format!("the tenant's SMTP `from` {from:?} is not a mailbox: {e}")))?;
    let to: Mailbox = delivery
        .address
        .parse()
        .map_err(|e| ProviderError::permanent("invalid_address", format!("{:?} is not an e-mail address: {e}", delivery.address)))?;
    let content = delivery.content.as_ref();
    let part = |name: &str| content.and_then(|c| c.parts.get(name)).filter(|p| !p.is_empty()).cloned();
    let subject = part("subject").ok_or_else(|| {
        ProviderError::permanent(
            "no_subject",
            format!("template `{}` rendered no `subject` for email; add one to its [email] part", delivery.template),
        )
    })?;
    let body = match (part("text"), part("html")) {
        (Some(text), Some(html)) => MultiPart::alternative_plain_html(text, html),
        (Some(text), None) => MultiPart::mixed().singlepart(SinglePart::plain(text)),
        (None, Some(html)) => MultiPart::mixed().singlepart(SinglePart::html(html)),
        (None, None) => {
            return Err(ProviderError::permanent(
                "no_body",
                format!("template `{}` rendered neither `text` nor `html` for email", delivery.template),
            ));
        }
    };
    let body = if files.is_empty() {
        body
    } else {
        let mut mixed = MultiPart::mixed().multipart(body);
        for file in files {
            let content_type = ContentType::parse(&file.content_type).map_err(|e| {
                ProviderError::permanent(
                    "invalid_attachment",
                    format!("attachment {:?}: content type {:?}: {e}", file.filename, file.content_type),
                )
            })?;
            mixed = mixed.singlepart(LettreAttachment::new(file.filename.clone()).body(file.bytes.to_vec(), content_type));
        }
        mixed
    };
    let id = message_id(delivery, &from);
    let mut message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(id))
        .multipart(body)
        .map_err(|e| ProviderError::permanent("invalid_message", format!("cannot build the message: {e}")))?;
    for (name, value) in content.map(|c| c.headers.iter()).into_iter().flatten() {
        let Some(allowed) = ALLOWED_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(name)) else { continue };
        let name = HeaderName::new_from_ascii((*allowed).to_owned())
            .map_err(|e| ProviderError::permanent("invalid_header", format!("header {allowed}: {e}")))?;
        message.headers_mut().insert_raw(HeaderValue::new(name, value.clone()));
    }
    Ok(message)
}
