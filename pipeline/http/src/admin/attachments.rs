//! The attachment store, for producers: upload a file once, then name it in requests as
//! `{"filename": "...", "ref": "<key>"}` (the claim check: only the key travels through NATS).
//! The body streams into the store chunk by chunk, so a file of `attachments.max_bytes` never
//! sits whole in memory here.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use futures::StreamExt;
use herald_attachments::AttachmentError;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{Answer, ApiError};

impl From<AttachmentError> for ApiError {
    fn from(error: AttachmentError) -> Self {
        let message = error.to_string();
        match error {
            AttachmentError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            AttachmentError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
            AttachmentError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_attachment", message),
            AttachmentError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "attachment_store_unavailable", message),
        }
    }
}

/// `PUT /attachments/{*key}`: stores the body; answers `{ref, size, sha256}`.
pub(super) async fn put_attachment(
    State(s): State<AppState>,
    UrlPath((tenant, key)): UrlPath<(String, String)>,
    body: Body,
) -> Answer<(StatusCode, Json<Value>)> {
    let chunks = body.into_data_stream().map(|chunk| chunk.map_err(|e| e.to_string()));
    let stored = s.attachments.put_stream(&tenant, &key, Box::pin(chunks)).await?;
    Ok((StatusCode::CREATED, Json(json!(stored))))
}

/// `DELETE /attachments/{*key}`: deletes it now rather than after `attachments.retention`.
pub(super) async fn delete_attachment(State(s): State<AppState>, UrlPath((tenant, key)): UrlPath<(String, String)>) -> Answer<StatusCode> {
    s.attachments.delete(&tenant, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
