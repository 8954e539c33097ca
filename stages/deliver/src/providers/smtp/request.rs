//! The message a delivery becomes: `From` the tenant's sender, `To` the recipient, the rendered
//! `subject`, a `text` and an `html` part (multipart/alternative when both), the rendered headers
//! (`List-Unsubscribe`, `List-Unsubscribe-Post`), and a `Message-ID` made of the delivery id and
//! the sender's domain — the same on every retry, so a relay or a mailbox sees one message.

use herald_schemas::Delivery;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Attachment as LettreAttachment, MultiPart, SinglePart};

use crate::ProviderError;
use crate::providers::attachments::File;
use crate::providers::email::Body;
pub use crate::providers::email::message_id;

/// Builds the message, with `files` attached (multipart/mixed around the body).
pub fn message(delivery: &Delivery, from: &str, files: &[File]) -> Result<Message, ProviderError> {
    let email = crate::providers::email::email(delivery, from, "the tenant's SMTP `from`")?;
    let body = match email.body {
        Body::Both { text, html } => MultiPart::alternative_plain_html(text, html),
        Body::Text(text) => MultiPart::mixed().singlepart(SinglePart::plain(text)),
        Body::Html(html) => MultiPart::mixed().singlepart(SinglePart::html(html)),
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
    let mut message = Message::builder()
        .from(email.from)
        .to(email.to)
        .subject(email.subject)
        .message_id(Some(email.message_id))
        .multipart(body)
        .map_err(|e| ProviderError::permanent("invalid_message", format!("cannot build the message: {e}")))?;
    for (name, value) in email.headers {
        let name = HeaderName::new_from_ascii(name.to_owned())
            .map_err(|e| ProviderError::permanent("invalid_header", format!("header {name}: {e}")))?;
        message.headers_mut().insert_raw(HeaderValue::new(name, value));
    }
    Ok(message)
}
