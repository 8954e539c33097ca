//! The notification log: one notification's deliveries and timeline, the tenant's deliveries
//! filtered and paged, and one user's history. Read from the log track writes, so an event
//! shows here once track has read it (within `log.linger` of it, while track keeps up).

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use herald_schemas::log::{DeliveryFilter, DeliveryPage, NotificationRecord};
use uuid::Uuid;

use crate::AppState;
use crate::error::{Answer, ApiError};

/// A notification with each delivery's status, attempts and provider ids, and its timeline.
pub(super) async fn get_notification(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
) -> Answer<Json<NotificationRecord>> {
    let parsed: Uuid = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_notification_id",
            format!("`{id}` is not a notification id (a UUID, as `herald send` printed it)"),
        )
    })?;
    match s.store.log_notification(&tenant, parsed).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found("notification", &id)),
    }
}

/// The tenant's deliveries, newest first: `?user=&template=&status=&channel=&since=&until=&limit=&cursor=`.
pub(super) async fn list_notifications(
    State(s): State<AppState>,
    UrlPath(tenant): UrlPath<String>,
    Query(filter): Query<DeliveryFilter>,
) -> Answer<Json<DeliveryPage>> {
    Ok(Json(s.store.log_deliveries(&tenant, &filter).await?))
}

/// One user's deliveries, newest first, with the same filters.
pub(super) async fn user_notifications(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
    Query(filter): Query<DeliveryFilter>,
) -> Answer<Json<DeliveryPage>> {
    let filter = DeliveryFilter { user: Some(user), ..filter };
    Ok(Json(s.store.log_deliveries(&tenant, &filter).await?))
}
