//! Templates: checked uploads as new immutable versions, listings, versions, previews.

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use herald_schemas::api::PreviewRequest;
use herald_schemas::{TemplateSpec, TemplateVersion};
use herald_store::TEMPLATE_CHANGE_PREFIX;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::announce::changed;
use crate::error::{Answer, ApiError, with_id};

#[derive(Debug, Deserialize)]
pub(super) struct PutTemplateQuery {
    #[serde(default)]
    dry_run: bool,
}

/// Checks an upload (compiles every part, renders every channel with the sample data) and
/// publishes it as a new version unless it equals the latest.
pub(super) async fn put_template(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
    Query(query): Query<PutTemplateQuery>,
    Json(body): Json<Value>,
) -> Answer<Json<Value>> {
    let spec: TemplateSpec = with_id(body, &id)?;
    let warnings = match s.engine.check(&spec) {
        Ok(warnings) => warnings,
        Err(problems) => {
            let message = format!("template `{id}` has {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
            let body = json!({ "error": { "code": "invalid_template", "message": message, "problems": problems } });
            return Err(ApiError::with_body(StatusCode::UNPROCESSABLE_ENTITY, body));
        }
    };
    if query.dry_run {
        return Ok(Json(json!({ "id": id, "checked": true, "warnings": warnings })));
    }
    let published = s.store.publish_template(&tenant, &spec).await?;
    if published.created {
        changed(&s, &tenant, Some(&format!("{TEMPLATE_CHANGE_PREFIX}{id}"))).await;
    }
    Ok(Json(json!({ "id": id, "version": published.version, "created": published.created, "warnings": warnings })))
}

pub(super) async fn list_templates(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<Json<Value>> {
    Ok(Json(serde_json::to_value(s.store.templates(&tenant).await?).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
pub(super) struct VersionQuery {
    version: Option<u32>,
}

pub(super) async fn find_version(s: &AppState, tenant: &str, id: &str, version: Option<u32>) -> Answer<TemplateVersion> {
    let found = match version {
        Some(v) => s.store.template_version(tenant, id, v).await?,
        None => s.store.template_versions(tenant, id).await?.pop(),
    };
    found.ok_or_else(|| match version {
        Some(v) => ApiError::not_found("template version", &format!("{id} v{v}")),
        None => ApiError::not_found("template", id),
    })
}

pub(super) async fn get_template(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Answer<Json<TemplateVersion>> {
    Ok(Json(find_version(&s, &tenant, &id, query.version).await?))
}

pub(super) async fn template_versions(State(s): State<AppState>, UrlPath((tenant, id)): UrlPath<(String, String)>) -> Answer<Json<Value>> {
    let index = s.store.template_index(&tenant, &id).await?;
    if index.is_empty() {
        return Err(ApiError::not_found("template", &id));
    }
    Ok(Json(Value::Array(index.into_iter().map(|(v, at)| json!({ "version": v, "published_at": at })).collect())))
}

pub(super) async fn preview_template(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
    Json(request): Json<PreviewRequest>,
) -> Answer<Json<Value>> {
    let version = find_version(&s, &tenant, &id, request.version).await?;
    let engine = s.engine.clone();
    let answer = tokio::task::spawn_blocking(move || herald_render::preview(&engine, &version, &request))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "preview_failed", e.to_string()))?;
    Ok(Json(answer))
}
