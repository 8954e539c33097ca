//! A tenant's frequency caps: read (its own, or the defaults), replace, reset to the defaults.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use herald_schemas::TenantCaps;
use herald_store::CAPS_CHANGE;
use serde_json::{Value, json};

use crate::AppState;
use crate::announce::changed;
use crate::error::{Answer, ApiError};

/// The caps that apply to the tenant, and whether they are its own or the defaults.
pub(super) async fn get_caps(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<Json<Value>> {
    Ok(Json(match s.store.tenant_caps(&tenant).await? {
        Some(own) => json!({ "source": "tenant", "caps": own.caps }),
        None => json!({ "source": "default", "caps": *s.default_caps }),
    }))
}

/// Replaces the tenant's caps (an empty list: no caps at all). Every throttle replica reads
/// them within its cache TTL, at once when the change announcement reaches it.
pub(super) async fn put_caps(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>, Json(body): Json<Value>) -> Answer<StatusCode> {
    let caps: TenantCaps = serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("not a caps document: {e}")))?;
    caps.validate()?;
    let keep = s.nats.topology().config.dedupe_ttl;
    if let Some(cap) = caps.caps.iter().find(|c| c.window() > keep) {
        let detail = format!(
            "cap {}: window {} is longer than the counters are kept (topology.dedupe_ttl, {}s)",
            cap.name,
            cap.window,
            keep.as_secs()
        );
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_cap", detail));
    }
    s.store.put_tenant_caps(&tenant, &caps).await?;
    changed(&s, &tenant, Some(CAPS_CHANGE)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the tenant's own caps: the defaults apply again.
pub(super) async fn delete_caps(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<StatusCode> {
    if !s.store.delete_tenant_caps(&tenant).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("tenant `{tenant}` has no caps of its own")));
    }
    changed(&s, &tenant, Some(CAPS_CHANGE)).await;
    Ok(StatusCode::NO_CONTENT)
}
