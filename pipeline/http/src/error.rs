//! The one error answer: `{"error": {"code", "message"}}` with a status that says whose fault.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_schemas::ValidationError;
use herald_store::StoreError;
use serde_json::{Value, json};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    /// A whole answer body, for errors with more than a code and message.
    body: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.to_owned(), message: message.into(), body: None }
    }

    pub fn with_body(status: StatusCode, body: Value) -> Self {
        ApiError { status, code: String::new(), message: String::new(), body: Some(body) }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} `{id}` does not exist"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body.unwrap_or_else(|| json!({ "error": { "code": self.code, "message": self.message } }));
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(ValidationError { code, detail }) => ApiError::new(StatusCode::BAD_REQUEST, code, detail),
            StoreError::NotFound { what, id } => ApiError::not_found(what, &id),
            StoreError::Unavailable { .. } | StoreError::Open { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", error.to_string())
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", other.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(ValidationError { code, detail }: ValidationError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }
}

/// A handler's result.
pub type Answer<T> = Result<T, ApiError>;

/// Parses a JSON body into `T` after setting its `id` from the path.
pub fn with_id<T: serde::de::DeserializeOwned>(mut body: Value, id: &str) -> Answer<T> {
    if let Value::Object(map) = &mut body {
        map.insert("id".into(), Value::String(id.to_owned()));
    }
    serde_json::from_value(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
}
