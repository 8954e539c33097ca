//! The admin HTTP API: the directory's users, devices, preferences, groups and members, and
//! bulk import. Every request carries `Authorization: Bearer <admin token>`.
//!
//! Routes, all under `/v1/tenants/{tenant}`:
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | PUT, GET, DELETE | `/users/{user}` | `User` / `{user, devices, preferences}` |
//! | GET | `/users/{user}/devices` | `[Device]` |
//! | PUT, DELETE | `/users/{user}/devices/{device}` | `Device` |
//! | PUT, GET | `/users/{user}/preferences` | `Preferences` |
//! | PUT, GET, DELETE | `/groups/{group}` | `Group` |
//! | POST | `/groups/{group}/members` | `{"users": [ids]}` |
//! | GET | `/groups/{group}/members?after=&limit=` | `{"users": [ids]}` |
//! | DELETE | `/groups/{group}/members/{user}` | |
//! | POST | `/import?first_line=1` | JSONL of `ImportLine`s / `{imported, errors: [{line, code, detail}]}` |
//! | GET | `/templates` | `[{id, latest, description, updated_at}]` |
//! | PUT | `/templates/{id}?dry_run=true` | `TemplateSpec` / `{id, version, created, warnings}` |
//! | GET | `/templates/{id}?version=N` | `TemplateVersion` (latest by default) |
//! | GET | `/templates/{id}/versions` | `[{version, published_at}]` |
//! | POST | `/templates/{id}/preview` | `{data?, locale?, channels?, timezone?, platform?, version?}` / rendered parts per channel |
//!
//! Errors are `{"error": {"code", "message"}}` with 400 (invalid), 401, 404, 422 (a template
//! that does not compile or render with its sample data: `problems` lists each with its locale,
//! channel, part, line and column) or 503 (store down). Every change is announced on
//! `<prefix>.directory.changed.<tenant>` (a user id, `*`, or `template/<id>`) so every cache
//! evicts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use herald_nats::Nats;
use herald_render::Engine;
use herald_schemas::directory::{Device, Group, ImportLine, Preferences, User, check_id};
use herald_schemas::{TemplateSpec, TemplateVersion, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cache::TEMPLATE_CHANGE_PREFIX;
use crate::config::Secret;
use crate::store::{Store, StoreError};
use crate::templates::PreviewRequest;

/// The admin API's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address `herald up` and `herald api` listen on; empty turns the API off.
    pub listen: String,
    /// Where the `herald directory` commands find the API.
    pub url: String,
    /// The bearer token. When unset, the server makes one at start and writes it to
    /// `token_file`, where the `herald directory` commands read it.
    pub admin_token: Option<Secret>,
    pub token_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            url: "http://127.0.0.1:8080".into(),
            admin_token: None,
            token_file: PathBuf::from("data/admin-token"),
        }
    }
}

impl ApiConfig {
    /// The configured token, or the one in `token_file`.
    pub fn token(&self) -> anyhow::Result<Secret> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let text = std::fs::read_to_string(&self.token_file).map_err(|e| {
            anyhow::anyhow!(
                "no admin token: set api.admin_token (HERALD__API__ADMIN_TOKEN) or start `herald up`, which writes one to {} ({e})",
                self.token_file.display()
            )
        })?;
        Ok(Secret::new(text.trim()))
    }

    /// The configured token, or a new random one written to `token_file` (mode 0600).
    pub fn token_or_generate(&self) -> anyhow::Result<Secret> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        write_private(&self.token_file, &token)?;
        Ok(Secret::new(token))
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    store: Store,
    nats: Nats,
    token: Secret,
    /// Checks and previews templates.
    engine: Arc<Engine>,
}

/// Serves the API on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    nats: Nats,
    token: Secret,
    engine: Arc<Engine>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState { store, nats, token, engine };
    let tenant = Router::new()
        .route("/users/{user}", put(put_user).get(get_user).delete(delete_user))
        .route("/users/{user}/devices", get(list_devices))
        .route("/users/{user}/devices/{device}", put(put_device).delete(delete_device))
        .route("/users/{user}/preferences", put(put_preferences).get(get_preferences))
        .route("/groups/{group}", put(put_group).get(get_group).delete(delete_group))
        .route("/groups/{group}/members", post(add_members).get(list_members))
        .route("/groups/{group}/members/{user}", axum::routing::delete(remove_member))
        .route("/import", post(import))
        .route("/templates", get(list_templates))
        .route("/templates/{id}", put(put_template).get(get_template))
        .route("/templates/{id}/versions", get(template_versions))
        .route("/templates/{id}/preview", post(preview_template));
    let app = Router::new()
        .nest("/v1/tenants/{tenant}", tenant)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await?;
    Ok(())
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.expose().as_bytes()) => next.run(request).await,
        _ => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send `Authorization: Bearer <admin token>`").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    /// A whole answer body, for errors with more than a code and message.
    body: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.to_owned(), message: message.into(), body: None }
    }

    fn with_body(status: StatusCode, body: Value) -> Self {
        ApiError { status, code: String::new(), message: String::new(), body: Some(body) }
    }

    fn not_found(what: &str, id: &str) -> Self {
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
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", other.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(ValidationError { code, detail }: ValidationError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }
}

type Answer<T> = Result<T, ApiError>;

/// Parses a JSON body into `T` after setting its `id` from the path.
fn with_id<T: serde::de::DeserializeOwned>(mut body: Value, id: &str) -> Answer<T> {
    if let Value::Object(map) = &mut body {
        map.insert("id".into(), Value::String(id.to_owned()));
    }
    serde_json::from_value(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
}

async fn changed(state: &AppState, tenant: &str, user: Option<&str>) {
    if let Err(error) = state.nats.publish_directory_change(tenant, user).await {
        tracing::warn!(%error, tenant, "Could not announce a directory change; caches expire it by their TTL.");
    }
}

async fn put_user(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer<StatusCode> {
    let user_record: User = with_id(body, &user)?;
    s.store.put_user(&tenant, &user_record).await?;
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_user(State(s): State<AppState>, UrlPath((tenant, user)): UrlPath<(String, String)>) -> Answer<Json<Value>> {
    let contact = s.store.contact(&tenant, &user).await?.ok_or_else(|| ApiError::not_found("user", &user))?;
    Ok(Json(json!({ "user": contact.user, "devices": contact.devices, "preferences": contact.preferences })))
}

async fn delete_user(State(s): State<AppState>, UrlPath((tenant, user)): UrlPath<(String, String)>) -> Answer<StatusCode> {
    if !s.store.delete_user(&tenant, &user).await? {
        return Err(ApiError::not_found("user", &user));
    }
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_devices(State(s): State<AppState>, UrlPath((tenant, user)): UrlPath<(String, String)>) -> Answer<Json<Vec<Device>>> {
    let contact = s.store.contact(&tenant, &user).await?.ok_or_else(|| ApiError::not_found("user", &user))?;
    Ok(Json(contact.devices))
}

async fn put_device(
    State(s): State<AppState>,
    UrlPath((tenant, user, device)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Answer<StatusCode> {
    let device_record: Device = with_id(body, &device)?;
    s.store.put_device(&tenant, &user, &device_record).await?;
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_device(
    State(s): State<AppState>,
    UrlPath((tenant, user, device)): UrlPath<(String, String, String)>,
) -> Answer<StatusCode> {
    if !s.store.delete_device(&tenant, &user, &device).await? {
        return Err(ApiError::not_found("device", &device));
    }
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_preferences(
    State(s): State<AppState>,
    UrlPath((tenant, user)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer<StatusCode> {
    let preferences: Preferences =
        serde_json::from_value(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?;
    s.store.put_preferences(&tenant, &user, &preferences).await?;
    changed(&s, &tenant, Some(&user)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_preferences(State(s): State<AppState>, UrlPath((tenant, user)): UrlPath<(String, String)>) -> Answer<Json<Preferences>> {
    let contact = s.store.contact(&tenant, &user).await?.ok_or_else(|| ApiError::not_found("user", &user))?;
    Ok(Json(contact.preferences))
}

async fn put_group(
    State(s): State<AppState>,
    UrlPath((tenant, group)): UrlPath<(String, String)>,
    body: Option<Json<Value>>,
) -> Answer<StatusCode> {
    let body = body.map(|Json(b)| b).unwrap_or_else(|| json!({}));
    let group_record: Group = with_id(body, &group)?;
    s.store.put_group(&tenant, &group_record).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_group(State(s): State<AppState>, UrlPath((tenant, group)): UrlPath<(String, String)>) -> Answer<Json<Group>> {
    Ok(Json(s.store.group(&tenant, &group).await?.ok_or_else(|| ApiError::not_found("group", &group))?))
}

async fn delete_group(State(s): State<AppState>, UrlPath((tenant, group)): UrlPath<(String, String)>) -> Answer<StatusCode> {
    if !s.store.delete_group(&tenant, &group).await? {
        return Err(ApiError::not_found("group", &group));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Members {
    users: Vec<String>,
}

async fn add_members(
    State(s): State<AppState>,
    UrlPath((tenant, group)): UrlPath<(String, String)>,
    Json(body): Json<Members>,
) -> Answer<StatusCode> {
    s.store.add_members(&tenant, &group, &body.users).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_members(
    State(s): State<AppState>,
    UrlPath((tenant, group)): UrlPath<(String, String)>,
    Query(page): Query<Page>,
) -> Answer<Json<Members>> {
    let limit = page.limit.unwrap_or(1000).clamp(1, 10_000);
    let users = s.store.members(&tenant, &group, page.after.as_deref(), limit).await?;
    Ok(Json(Members { users }))
}

async fn remove_member(State(s): State<AppState>, UrlPath((tenant, group, user)): UrlPath<(String, String, String)>) -> Answer<StatusCode> {
    if !s.store.remove_member(&tenant, &group, &user).await? {
        return Err(ApiError::not_found("member", &user));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ImportQuery {
    /// The line number of the body's first line in the caller's file.
    first_line: Option<usize>,
}

/// A line that was not imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineError {
    pub line: usize,
    pub code: String,
    pub detail: String,
}

/// The import's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    pub imported: usize,
    pub errors: Vec<LineError>,
}

async fn import(
    State(s): State<AppState>,
    UrlPath(tenant): UrlPath<String>,
    Query(query): Query<ImportQuery>,
    body: String,
) -> Answer<Json<ImportReport>> {
    check_id("tenant", &tenant)?;
    let (lines, errors) = parse_jsonl(&body, query.first_line.unwrap_or(1));
    s.store.import(&tenant, &lines).await?;
    changed(&s, &tenant, None).await;
    Ok(Json(ImportReport { imported: lines.len(), errors }))
}

#[derive(Debug, Deserialize)]
struct PutTemplateQuery {
    #[serde(default)]
    dry_run: bool,
}

/// Checks an upload (compiles every part, renders every channel with the sample data) and
/// publishes it as a new version unless it equals the latest.
async fn put_template(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
    Query(query): Query<PutTemplateQuery>,
    Json(body): Json<Value>,
) -> Answer<Json<Value>> {
    check_id("tenant", &tenant)?;
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

async fn list_templates(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<Json<Value>> {
    Ok(Json(serde_json::to_value(s.store.templates(&tenant).await?).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    version: Option<u32>,
}

async fn find_version(s: &AppState, tenant: &str, id: &str, version: Option<u32>) -> Answer<TemplateVersion> {
    let found = match version {
        Some(v) => s.store.template_version(tenant, id, v).await?,
        None => s.store.template_versions(tenant, id).await?.pop(),
    };
    found.ok_or_else(|| match version {
        Some(v) => ApiError::not_found("template version", &format!("{id} v{v}")),
        None => ApiError::not_found("template", id),
    })
}

async fn get_template(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Answer<Json<TemplateVersion>> {
    Ok(Json(find_version(&s, &tenant, &id, query.version).await?))
}

async fn template_versions(State(s): State<AppState>, UrlPath((tenant, id)): UrlPath<(String, String)>) -> Answer<Json<Value>> {
    let index = s.store.template_index(&tenant, &id).await?;
    if index.is_empty() {
        return Err(ApiError::not_found("template", &id));
    }
    Ok(Json(Value::Array(index.into_iter().map(|(v, at)| json!({ "version": v, "published_at": at })).collect())))
}

async fn preview_template(
    State(s): State<AppState>,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
    Json(request): Json<PreviewRequest>,
) -> Answer<Json<Value>> {
    let version = find_version(&s, &tenant, &id, request.version).await?;
    let engine = s.engine.clone();
    let answer = tokio::task::spawn_blocking(move || crate::templates::preview(&engine, &version, &request))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "preview_failed", e.to_string()))?;
    Ok(Json(answer))
}

/// Parses and validates JSONL; blank lines are skipped. Returns the good lines and, for every
/// bad one, its number and reason.
pub fn parse_jsonl(text: &str, first_line: usize) -> (Vec<ImportLine>, Vec<LineError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = first_line + i;
        match serde_json::from_str::<ImportLine>(line) {
            Ok(parsed) => match parsed.validate() {
                Ok(()) => good.push(parsed),
                Err(ValidationError { code, detail }) => bad.push(LineError { line: number, code: code.into(), detail }),
            },
            Err(e) => bad.push(LineError { line: number, code: "invalid_json".into(), detail: e.to_string() }),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_carry_their_line_numbers() {
        let text = "{\"id\":\"a\"}\n\n{\"id\":\"b\",\"email\":\"nope\"}\nnot json\n{\"id\":\"c\",\"phone\":\"+14155550100\"}\n";
        let (good, bad) = parse_jsonl(text, 101);
        assert_eq!(good.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(bad.iter().map(|e| (e.line, e.code.as_str())).collect::<Vec<_>>(), [(103, "invalid_email"), (104, "invalid_json")]);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
