//! A tenant's opt-outs recipients sent through a provider (an SMS STOP): list them, remove one
//! (the recipient texted START, or asked again). Deliver checks before every SMS, so a removed
//! opt-out lets the next one through; the user's preferences stay as they are until changed.

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use herald_schemas::Channel;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{Answer, ApiError};

/// Every opt-out of the tenant, oldest first.
pub(super) async fn list_opt_outs(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<Json<Value>> {
    Ok(Json(json!({ "opt_outs": s.store.opt_outs(&tenant).await? })))
}

#[derive(Debug, Deserialize)]
pub(super) struct Address {
    channel: Channel,
    address: String,
}

/// Removes the opt-out of `?channel=&address=`.
pub(super) async fn remove_opt_out(
    State(s): State<AppState>,
    UrlPath(tenant): UrlPath<String>,
    Query(which): Query<Address>,
) -> Answer<Json<Value>> {
    if !s.store.remove_opt_out(&tenant, which.channel, &which.address).await? {
        let detail = format!("{} has no {} opt-out for tenant {tenant}", which.address, which.channel);
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_opted_out", detail));
    }
    Ok(Json(json!({ "channel": which.channel, "address": which.address, "removed": true })))
}
