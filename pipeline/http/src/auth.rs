//! Who may call: the admin bearer token (compared in constant time), and a tenant in the path
//! that can be a subject token. Producer app keys will live here too.

use axum::extract::{RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_schemas::directory::check_tenant;
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// Requires `Authorization: Bearer <admin token>`.
pub async fn admin_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if token_matches(token, state.token.expose()) => next.run(request).await,
        _ => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send `Authorization: Bearer <admin token>`").into_response(),
    }
}

/// Refuses a `{tenant}` path segment that could not be a NATS subject token, before any
/// handler sees it.
pub async fn tenant_in_path(params: RawPathParams, request: Request, next: Next) -> Response {
    if let Some((_, tenant)) = params.iter().find(|(name, _)| *name == "tenant")
        && let Err(error) = check_tenant(tenant)
    {
        return ApiError::from(error).into_response();
    }
    next.run(request).await
}

/// Constant-time comparison: how long it takes says nothing about how much of it matched.
fn token_matches(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secret", "secret2"));
    }
}
