//! Users, devices, preferences, groups, members and JSONL import.

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use herald_schemas::api::{ImportReport, Members, parse_import};
use herald_schemas::directory::{Device, Group, Preferences, User};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::announce::changed;
use crate::error::{Answer, ApiError, with_id};

pub(super) async fn put_user(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer<StatusCode> {
    let user_record: User = with_id(body, &user)?;
    s.store.put_user(&tenant, &user_record).await?;
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_user(State(s): State<AppState>, UrlPath((tenant, user)): UrlPath<(String, String)>) -> Answer<Json<Value>> {
    let contact = s.store.contact(&tenant, &user).await?.ok_or_else(|| ApiError::not_found("user", &user))?;
    Ok(Json(json!({ "user": contact.user, "devices": contact.devices, "preferences": contact.preferences })))
}

pub(super) async fn delete_user(State(s): State<AppState>, UrlPath((tenant, user)): UrlPath<(String, String)>) -> Answer<StatusCode> {
    if !s.store.delete_user(&tenant, &user).await? {
        return Err(ApiError::not_found("user", &user));
    }
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_devices(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
) -> Answer<Json<Vec<Device>>> {
    let contact = s.store.contact(&tenant, &user).await?.ok_or_else(|| ApiError::not_found("user", &user))?;
    Ok(Json(contact.devices))
}

pub(super) async fn put_device(
    State(s): State<AppState>,
    UrlPath((tenant, user, device)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Answer<StatusCode> {
    let device_record: Device = with_id(body, &device)?;
    s.store.put_device(&tenant, &user, &device_record).await?;
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_device(
    State(s): State<AppState>,
    UrlPath((tenant, user, device)): UrlPath<(String, String, String)>,
) -> Answer<StatusCode> {
    if !s.store.delete_device(&tenant, &user, &device).await? {
        return Err(ApiError::not_found("device", &device));
    }
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn put_preferences(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer<StatusCode> {
    let preferences: Preferences =
        serde_json::from_value(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?;
    preferences.validate()?;
    s.store.put_preferences(&tenant, &user, &preferences).await?;
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_preferences(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
) -> Answer<Json<Preferences>> {
    let contact = s.store.contact(&tenant, &user).await?.ok_or_else(|| ApiError::not_found("user", &user))?;
    Ok(Json(contact.preferences))
}

pub(super) async fn put_group(
    State(s): State<AppState>,
    UrlPath((tenant, group)): UrlPath<(String, String)>,
    body: Option<Json<Value>>,
) -> Answer<StatusCode> {
    let body = body.map(|Json(b)| b).unwrap_or_else(|| json!({}));
    let group_record: Group = with_id(body, &group)?;
    s.store.put_group(&tenant, &group_record).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_group(State(s): State<AppState>, UrlPath((tenant, group)): UrlPath<(String, String)>) -> Answer<Json<Group>> {
    Ok(Json(s.store.group(&tenant, &group).await?.ok_or_else(|| ApiError::not_found("group", &group))?))
}

pub(super) async fn delete_group(State(s): State<AppState>, UrlPath((tenant, group)): UrlPath<(String, String)>) -> Answer<StatusCode> {
    if !s.store.delete_group(&tenant, &group).await? {
        return Err(ApiError::not_found("group", &group));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn add_members(
    State(s): State<AppState>,
    UrlPath((tenant, group)): UrlPath<(String, String)>,
    Json(body): Json<Members>,
) -> Answer<StatusCode> {
    s.store.add_members(&tenant, &group, &body.users).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_members(
    State(s): State<AppState>,
    UrlPath((tenant, group)): UrlPath<(String, String)>,
    Query(page): Query<Page>,
) -> Answer<Json<Members>> {
    let limit = page.limit.unwrap_or(1000).clamp(1, 10_000);
    let users = s.store.members(&tenant, &group, page.after.as_deref(), limit).await?;
    Ok(Json(Members { users }))
}

pub(super) async fn remove_member(
    State(s): State<AppState>,
    UrlPath((tenant, group, user)): UrlPath<(String, String, String)>,
) -> Answer<StatusCode> {
    if !s.store.remove_member(&tenant, &group, &user).await? {
        return Err(ApiError::not_found("member", &user));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct ImportQuery {
    /// The line number of the body's first line in the caller's file.
    first_line: Option<usize>,
}

pub(super) async fn import(
    State(s): State<AppState>,
    UrlPath(tenant): UrlPath<String>,
    Query(query): Query<ImportQuery>,
    body: String,
) -> Answer<Json<ImportReport>> {
    let (lines, errors) = parse_import(&body, query.first_line.unwrap_or(1));
    s.store.import(&tenant, &lines).await?;
    changed(&s, &tenant, None).await;
    Ok(Json(ImportReport { imported: lines.len(), errors }))
}
