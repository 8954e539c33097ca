//! Herald's HTTP layer, by audience: [`admin`] (the directory and templates, for operators and
//! back offices) and [`inbox`] (users' in-app messages, for apps), with room for the producer API
//! and provider receipts beside them.
//! Authentication lives in [`auth`] and the error answer in [`error`], once each.
//!
//! Routes, all under `/v1/tenants/{tenant}` (the tenant must be a subject token: letters,
//! digits, `_`, `-`):
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
//! | POST | `/templates/{id}/preview` | `PreviewRequest` / rendered parts per channel |
//! | GET, PUT, DELETE | `/caps` | `TenantCaps` |
//! | GET | `/providers` · PUT, DELETE `/providers/{provider}/{app}` | credentials (write-only secrets) |
//! | GET, DELETE | `/webhooks/disabled` | endpoints a receiver's 410 disabled |
//! | GET, DELETE | `/opt-outs?channel=&address=` | recorded STOPs |
//! | PUT, DELETE | `/attachments/{key}` | the file's bytes, streamed / `{ref, size, sha256}` (201) |
//! | GET | `/notifications/{id}` · `/notifications?user=&template=&status=&channel=&since=&until=&cursor=&limit=` · `/users/{user}/notifications` | the notification log |
//!
//! Beside them, without the admin token: `/v1/inbox/{tenant}/…` (apps, with user tokens) and
//! `POST /v1/receipts/twilio/{tenant}/{delivery}` (Twilio's status callbacks, checked by
//! `X-Twilio-Signature`; see [`receipts`]), `POST /v1/receipts/sendgrid/{tenant}` (signed
//! events), `/v1/links/{token}[/open.gif|/unsubscribe]` (recipients' clicks, opens and
//! unsubscribes, checked by the link's HMAC; see [`engagement`]), `GET /v1/schemas[/{name}]` (the
//! wire types' JSON Schemas, public).
//!
//! The bodies are the types of `herald_schemas::api`, shared with the CLI. Errors are
//! `{"error": {"code", "message"}}` with 400 (invalid), 401, 404, 422 (a template that does not
//! compile or render with its sample data: `problems` lists each with its locale, channel, part,
//! line and column) or 503 (store down). Every change is announced on
//! `<prefix>.directory.changed.<tenant>` (a user id, `*`, or `template/<id>`) so every cache
//! evicts it.

pub mod admin;
pub mod announce;
pub mod auth;
mod config;
pub mod engagement;
pub mod error;
pub mod inbox;
pub mod receipts;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::get;
use herald_nats::Nats;
use herald_render::Engine;
use herald_schemas::Secret;
use herald_store::Store;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub nats: Nats,
    pub token: Secret,
    /// Checks and previews templates.
    pub engine: Arc<Engine>,
    /// The configured caps, for tenants without their own.
    pub default_caps: Arc<Vec<herald_schemas::Cap>>,
    /// Where producers upload attachments.
    pub attachments: herald_attachments::Attachments,
    /// The public receipt URLs providers post to.
    pub receipts: ReceiptUrls,
    /// Checks engagement links (clicks, opens, unsubscribes); `None` when they are off.
    pub links: Option<herald_render::SignedLinks>,
}

/// The public bases of the receipt URLs deliver gives providers (what they sign).
#[derive(Debug, Clone, Default)]
pub struct ReceiptUrls {
    /// `deliver.twilio.status_callback`.
    pub twilio: Option<String>,
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let tenant = admin::routes().route_layer(middleware::from_fn(auth::tenant_in_path));
    Router::new()
        .nest("/v1/tenants/{tenant}", tenant)
        .layer(middleware::from_fn_with_state(state.clone(), auth::admin_token))
        // Apps, with their users' tokens (never the admin token).
        .nest("/v1/inbox/{tenant}", inbox::routes().route_layer(middleware::from_fn(auth::tenant_in_path)))
        // Providers, authenticated by their own signatures.
        .nest("/v1/receipts", receipts::routes())
        // Recipients, authenticated by the links' signatures.
        .nest("/v1/links", engagement::routes())
        // The wire types' JSON Schemas, versioned (`<type>.v1.schema.json`), for consumers.
        .route("/v1/schemas", get(schemas))
        .route("/v1/schemas/{name}", get(schema))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// `GET /v1/schemas`: the names of the published schemas.
async fn schemas() -> axum::Json<Vec<&'static str>> {
    axum::Json(herald_schemas::schema_files().into_iter().map(|f| f.name).collect())
}

/// `GET /v1/schemas/{name}`: one schema, exactly as committed under `schemas/json/`.
async fn schema(axum::extract::Path(name): axum::extract::Path<String>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let file = herald_schemas::schema_files().into_iter().find(|f| f.name == name).ok_or_else(|| ApiError::not_found("schema", &name))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/schema+json")], file.contents).into_response())
}

/// Serves the API on `listener` until `cancel` fires.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, cancel: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { cancel.cancelled().await }).await
}
