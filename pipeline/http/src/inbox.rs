//! The inbox API, for apps: a user's in-app messages, under `/v1/inbox/{tenant}`, authenticated
//! by a user token the tenant's backend mints — an HS256 JWT signed with the tenant's inbox
//! `signing_secret` (`herald providers set inbox`), with `sub` the user id, `tenant` the tenant
//! and `exp` — sent as `Authorization: Bearer <token>` or, for `EventSource`, `?token=`. The
//! admin token is not taken here, and a token opens its own user's inbox only.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/messages?after=&limit=&archived=` | `{messages: [{seq, message, read_at, seen_at, archived_at}], next}` oldest first from `after` |
//! | GET | `/unread` | `{unread, total}` |
//! | POST | `/messages/{seq}/{read,unread,seen,archived,unarchived}` | the message's marks |
//! | GET | `/feed` | Server-Sent Events: `message` events (`id` = seq) as messages arrive |

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, RawPathParams, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use herald_schemas::Credentials;
use herald_schemas::inbox::InboxMessage;
use herald_schemas::providers::DEFAULT_APP;
use herald_store::{InboxMark, InboxState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{Answer, ApiError};

/// The inbox routes (nested under `/v1/inbox/{tenant}`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/messages", get(list))
        .route("/messages/{seq}/{action}", post(mark))
        .route("/unread", get(unread))
        .route("/feed", get(feed))
}

/// A user token's claims.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    tenant: String,
}

/// The user a request's token names, checked against the tenant's secret.
#[derive(Debug)]
pub struct InboxUser {
    pub tenant: String,
    pub user: String,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

impl FromRequestParts<AppState> for InboxUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state).await.map_err(|e| unauthorized(e.to_string()))?;
        let tenant = params.iter().find(|(name, _)| *name == "tenant").map(|(_, t)| t.to_owned()).unwrap_or_default();
        let header = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let query = parts.uri.query().and_then(url_token);
        let token = header.map(str::to_owned).or(query).ok_or_else(|| {
            unauthorized("send the user's inbox token as `Authorization: Bearer <token>` (or `?token=` for an EventSource)")
        })?;
        let stored = state.store.credentials(&tenant, "inbox", DEFAULT_APP).await?;
        let Some(Credentials::Inbox(inbox)) = stored.map(|s| s.credentials) else {
            return Err(unauthorized(format!("tenant `{tenant}` has no inbox signing secret; set one with `herald providers set inbox`")));
        };
        let key = jsonwebtoken::DecodingKey::from_secret(inbox.signing_secret.expose().as_bytes());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(&token, &key, &validation)
            .map_err(|e| unauthorized(format!("the inbox token is not valid for tenant `{tenant}`: {e}")))?
            .claims;
        if claims.tenant != tenant {
            return Err(unauthorized(format!("the inbox token is for tenant `{}`, not `{tenant}`", claims.tenant)));
        }
        Ok(InboxUser { tenant, user: claims.sub })
    }
}

fn url_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    /// Include archived messages.
    #[serde(default)]
    archived: bool,
}

fn entry(seq: u64, payload: &[u8], state: &InboxState) -> Value {
    let message: Value = serde_json::from_slice::<InboxMessage>(payload).map(|m| json!(m)).unwrap_or(Value::Null);
    json!({ "seq": seq, "message": message, "read_at": state.read_at, "seen_at": state.seen_at, "archived_at": state.archived_at })
}

/// `GET /messages`.
async fn list(State(s): State<AppState>, user: InboxUser, Query(page): Query<Page>) -> Answer<Json<Value>> {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let entries = s.nats.inbox_page(&user.tenant, &user.user, page.after, limit).await.map_err(nats_down)?;
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    let states = s.store.inbox_states(&user.tenant, &user.user, &seqs).await?;
    let none = InboxState::default();
    let messages: Vec<Value> = entries
        .iter()
        .map(|e| (e, states.get(&e.seq).unwrap_or(&none)))
        .filter(|(_, state)| page.archived || state.archived_at.is_none())
        .map(|(e, state)| entry(e.seq, &e.payload, state))
        .collect();
    let next = (entries.len() == limit).then(|| seqs.last().copied()).flatten();
    Ok(Json(json!({ "messages": messages, "next": next })))
}

/// `GET /unread`.
async fn unread(State(s): State<AppState>, user: InboxUser) -> Answer<Json<Value>> {
    let (total, first) = s.nats.inbox_count(&user.tenant, &user.user).await.map_err(nats_down)?;
    let read = s.store.inbox_read_count(&user.tenant, &user.user, first).await?;
    Ok(Json(json!({ "unread": total.saturating_sub(read), "total": total })))
}

/// `POST /messages/{seq}/{action}`.
async fn mark(
    State(s): State<AppState>,
    user: InboxUser,
    UrlPath((_, seq, action)): UrlPath<(String, u64, String)>,
) -> Answer<Json<Value>> {
    let (mark, on) = match action.as_str() {
        "read" => (InboxMark::Read, true),
        "unread" => (InboxMark::Read, false),
        "seen" => (InboxMark::Seen, true),
        "archived" => (InboxMark::Archived, true),
        "unarchived" => (InboxMark::Archived, false),
        other => {
            let detail = format!("`{other}` is no inbox action: use read, unread, seen, archived or unarchived");
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_action", detail));
        }
    };
    // Another user's message is as good as absent.
    if s.nats.inbox_entry(&user.tenant, &user.user, seq).await.map_err(nats_down)?.is_none() {
        return Err(ApiError::not_found("inbox message", &seq.to_string()));
    }
    let state = s.store.inbox_mark(&user.tenant, &user.user, seq, mark, on, &jiff::Timestamp::now().to_string()).await?;
    Ok(Json(json!({ "seq": seq, "read_at": state.read_at, "seen_at": state.seen_at, "archived_at": state.archived_at })))
}

/// `GET /feed`: new messages as Server-Sent Events.
async fn feed(State(s): State<AppState>, user: InboxUser) -> Answer<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let messages = s.nats.inbox_feed(&user.tenant, &user.user).await.map_err(nats_down)?;
    // A broken feed says so to the app (which reconnects), rather than going quiet.
    let events = messages.map(|item| {
        Ok(match item {
            Ok(item) => {
                let data = entry(item.seq, &item.payload, &InboxState::default()).to_string();
                Event::default().event("message").id(item.seq.to_string()).data(data)
            }
            Err(error) => Event::default().event("error").data(json!({ "error": error.to_string() }).to_string()),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn nats_down(error: herald_nats::Error) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "inbox_unavailable", error.to_string())
}
