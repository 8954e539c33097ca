//! A tenant's provider credentials (APNs keys, FCM service accounts, VAPID keys, the webhook
//! signing secret, Twilio and Vonage accounts, SMTP relays): list (secrets
//! redacted), store, remove. Stored sealed with the server key; never shown again in full.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use herald_schemas::Credentials;
use herald_store::PROVIDERS_CHANGE;
use serde_json::{Value, json};

use crate::AppState;
use crate::announce::changed;
use crate::error::{Answer, ApiError};

const PROVIDERS: [&str; 9] = ["apns", "fcm", "web_push", "webhook", "twilio", "vonage", "smtp", "sendgrid", "inbox"];

fn check_provider(provider: &str) -> Result<(), ApiError> {
    if PROVIDERS.contains(&provider) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!("unknown provider `{provider}`: expected one of {PROVIDERS:?}"),
        ))
    }
}

/// Every credential of the tenant, secrets redacted.
pub(super) async fn list_providers(State(s): State<AppState>, UrlPath(tenant): UrlPath<String>) -> Answer<Json<Value>> {
    Ok(Json(json!({ "credentials": s.store.list_credentials(&tenant).await? })))
}

/// Stores the credentials of `provider` for `app` (`default`: every app without its own).
/// Deliver replicas use them within their cache TTL, at once when the announcement reaches them.
pub(super) async fn put_provider(
    State(s): State<AppState>,
    UrlPath((tenant, provider, app)): UrlPath<(String, String, String)>,
    Json(mut body): Json<Value>,
) -> Answer<(StatusCode, Json<Value>)> {
    check_provider(&provider)?;
    // The path names the provider; the body may say it again, and must agree.
    match body.get("provider").and_then(Value::as_str) {
        Some(named) if named != provider => {
            let detail = format!("the body is for provider `{named}`, the path for `{provider}`");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", detail));
        }
        _ => body["provider"] = json!(provider),
    }
    let credentials: Credentials = serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_credentials", format!("not {provider} credentials: {e}")))?;
    let revision = s.store.put_credentials(&tenant, &app, &credentials).await?;
    changed(&s, &tenant, Some(PROVIDERS_CHANGE)).await;
    Ok((StatusCode::OK, Json(json!({ "provider": provider, "app": app, "revision": revision, "credentials": credentials.redacted() }))))
}

/// Removes the credentials of `provider` for `app`.
pub(super) async fn delete_provider(
    State(s): State<AppState>,
    UrlPath((tenant, provider, app)): UrlPath<(String, String, String)>,
) -> Answer<StatusCode> {
    check_provider(&provider)?;
    if !s.store.delete_credentials(&tenant, &provider, &app).await? {
        let detail = format!("tenant `{tenant}` has no {provider} credentials for app `{app}`");
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", detail));
    }
    changed(&s, &tenant, Some(PROVIDERS_CHANGE)).await;
    Ok(StatusCode::NO_CONTENT)
}
