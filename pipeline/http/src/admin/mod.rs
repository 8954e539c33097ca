//! The admin routes: the directory, the templates, the caps, the provider credentials and the
//! disabled webhook endpoints of a tenant, its opt-outs, its attachment store and its
//! notification log.

mod attachments;
mod caps;
mod directory;
mod notifications;
mod opt_outs;
mod providers;
mod templates;
mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

use crate::AppState;

/// The tenant's admin routes (nested under `/v1/tenants/{tenant}`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/users/{user}", put(directory::put_user).get(directory::get_user).delete(directory::delete_user))
        .route("/users/{user}/notifications", get(notifications::user_notifications))
        .route("/notifications", get(notifications::list_notifications))
        .route("/notifications/{id}", get(notifications::get_notification))
        .route("/users/{user}/devices", get(directory::list_devices))
        .route("/users/{user}/devices/{device}", put(directory::put_device).delete(directory::delete_device))
        .route("/users/{user}/preferences", put(directory::put_preferences).get(directory::get_preferences))
        .route("/groups/{group}", put(directory::put_group).get(directory::get_group).delete(directory::delete_group))
        .route("/groups/{group}/members", post(directory::add_members).get(directory::list_members))
        .route("/groups/{group}/members/{user}", delete(directory::remove_member))
        .route("/import", post(directory::import))
        .route("/templates", get(templates::list_templates))
        .route("/templates/{id}", put(templates::put_template).get(templates::get_template))
        .route("/templates/{id}/versions", get(templates::template_versions))
        .route("/templates/{id}/preview", post(templates::preview_template))
        .route("/caps", get(caps::get_caps).put(caps::put_caps).delete(caps::delete_caps))
        .route("/providers", get(providers::list_providers))
        .route("/providers/{provider}/{app}", put(providers::put_provider).delete(providers::delete_provider))
        .route("/webhooks/disabled", get(webhooks::list_disabled).delete(webhooks::enable_endpoint))
        .route("/opt-outs", get(opt_outs::list_opt_outs).delete(opt_outs::remove_opt_out))
        .route(
            "/attachments/{*key}",
            put(attachments::put_attachment).delete(attachments::delete_attachment).layer(DefaultBodyLimit::disable()),
        )
}
