//! The files an e-mail carries, read as it is sent: small ones inline in the delivery, the rest
//! from the attachment store by key (the claim check). A file the store does not have (deleted
//! after `attachments.retention`, or never uploaded) fails the delivery for good with
//! `attachment_missing`; a store that cannot be read is an outage, retried.

use bytes::Bytes;
use herald_attachments::{AttachmentError, Attachments};
use herald_schemas::Delivery;

use crate::ProviderError;
use base64::Engine as _;

/// One file, ready to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub filename: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// The delivery's files, in order.
pub async fn load(store: Option<&Attachments>, delivery: &Delivery) -> Result<Vec<File>, ProviderError> {
    let mut files = Vec::with_capacity(delivery.attachments.len());
    for attachment in &delivery.attachments {
        let name = &attachment.filename;
        let bytes = match (&attachment.content, &attachment.reference) {
            (Some(content), _) => base64::engine::general_purpose::STANDARD
                .decode(content)
                .map_err(|e| ProviderError::permanent("invalid_attachment", format!("attachment {name:?} is not base64: {e}")))?
                .into(),
            (None, Some(key)) => {
                let store = store.ok_or_else(|| {
                    ProviderError::outage(
                        "attachment_store_unavailable",
                        format!("attachment {name:?} is stored, and this deliver has no attachment store"),
                    )
                })?;
                store.get(&delivery.tenant, key).await.map_err(|e| match e {
                    AttachmentError::NotFound { .. } => ProviderError::permanent(
                        "attachment_missing",
                        format!(
                            "attachment {name:?} (ref `{key}`) is not in the attachment store: deleted after attachments.retention, or never uploaded; upload it and send again"
                        ),
                    ),
                    AttachmentError::TooLarge { .. } | AttachmentError::Invalid(_) => {
                        ProviderError::permanent("invalid_attachment", format!("attachment {name:?}: {e}"))
                    }
                    AttachmentError::Unavailable(_) => ProviderError::outage("attachment_store_unavailable", e.to_string()),
                })?
            }
            (None, None) => {
                return Err(ProviderError::permanent("invalid_attachment", format!("attachment {name:?} has neither ref nor content")));
            }
        };
        let content_type =
            attachment.content_type.clone().unwrap_or_else(|| mime_guess::from_path(name).first_or_octet_stream().essence_str().to_owned());
        files.push(File { filename: name.clone(), content_type, bytes });
    }
    Ok(files)
}
