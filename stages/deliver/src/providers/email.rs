//! What every e-mail provider reads from a delivery the same way: the sender and recipient
//! mailboxes, the rendered `subject`, `text` and `html`, the headers a template may set, and the
//! `Message-ID` made of the delivery id and the sender's domain — the same on every retry and on
//! every provider of the chain, so a mailbox sees one message.

use herald_schemas::Delivery;
use lettre::message::Mailbox;

use crate::ProviderError;

/// The headers a template may set (others are Herald's or the provider's to write).
pub const ALLOWED_HEADERS: [&str; 3] = ["List-Unsubscribe", "List-Unsubscribe-Post", "Reply-To"];

/// A delivery's e-mail, ready for a provider's wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    pub body: Body,
    /// The allowed headers the template set, named as [`ALLOWED_HEADERS`] spells them.
    pub headers: Vec<(&'static str, String)>,
    pub message_id: String,
}

/// An e-mail's rendered body: a plain text part, an HTML part, or both (the reader's choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Text(String),
    Html(String),
    Both { text: String, html: String },
}

impl Body {
    /// The text part, when there is one.
    pub fn text(&self) -> Option<&str> {
        match self {
            Body::Text(text) | Body::Both { text, .. } => Some(text),
            Body::Html(_) => None,
        }
    }

    /// The HTML part, when there is one.
    pub fn html(&self) -> Option<&str> {
        match self {
            Body::Html(html) | Body::Both { html, .. } => Some(html),
            Body::Text(_) => None,
        }
    }
}

/// The `Message-ID` of a delivery.
pub fn message_id(delivery: &Delivery, from: &Mailbox) -> String {
    format!("<{}@{}>", delivery.delivery_id, from.email.domain())
}

/// Reads the e-mail of `delivery`, sent as `from` (`what` names whose setting it is, e.g. "the
/// tenant's SMTP `from`").
pub fn email(delivery: &Delivery, from: &str, what: &str) -> Result<Email, ProviderError> {
    let from: Mailbox =
        from.parse().map_err(|e| ProviderError::permanent("invalid_sender", format!("{what} {from:?} is not a mailbox: {e}")))?;
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
        (Some(text), Some(html)) => Body::Both { text, html },
        (Some(text), None) => Body::Text(text),
        (None, Some(html)) => Body::Html(html),
        (None, None) => {
            return Err(ProviderError::permanent(
                "no_body",
                format!("template `{}` rendered neither `text` nor `html` for email", delivery.template),
            ));
        }
    };
    let headers = content
        .map(|c| c.headers.iter())
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| ALLOWED_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(name)).map(|h| (*h, value.clone())))
        .collect();
    let message_id = message_id(delivery, &from);
    Ok(Email { from, to, subject, body, headers, message_id })
}
