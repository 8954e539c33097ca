//! A tenant's disabled webhook endpoints (receivers that answered 410 Gone): list them, enable
//! one again. Deliver checks before every webhook, so an enabled endpoint is called at once.

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{Answer, ApiError};

/// Every disabled endpoint of the tenant, oldest first.
pub(super) async fn list_disabled(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<Json<Value>> {
    Ok(Json(json!({ "disabled": s.store.disabled_endpoints(&tenant).await? })))
}

#[derive(Debug, Deserialize)]
pub(super) struct Endpoint {
    url: String,
}

/// Enables `?url=` again.
pub(super) async fn enable_endpoint(
    State(s): State<AppState>,
    UrlPath(tenant): UrlPath<String>,
    Query(endpoint): Query<Endpoint>,
) -> Answer<Json<Value>> {
    if !s.store.enable_endpoint(&tenant, &endpoint.url).await? {
        let detail = format!("{} is not disabled for tenant {tenant}", endpoint.url);
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_disabled", detail));
    }
    Ok(Json(json!({ "url": endpoint.url, "enabled": true })))
}
