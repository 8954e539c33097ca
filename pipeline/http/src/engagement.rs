//! Engagement links, for recipients: `/v1/links/{token}` (a click: 302 to the signed target),
//! `/v1/links/{token}/open.gif` (the open pixel) and `/v1/links/{token}/unsubscribe` (a page
//! with a one-click form on `GET`; the unsubscribe itself on `POST`, which is what mail clients
//! send for RFC 8058's `List-Unsubscribe-Post: List-Unsubscribe=One-Click`).
//!
//! No token but the link's own: each is signed by render's [`SignedLinks`] with the
//! deployment's `engagement.secret`, and one that does not verify — altered, made up, signed by
//! another deployment, or of another kind — is `403` and changes nothing, so no URL but the one
//! Herald signed is ever redirected to. A verified click, open or unsubscribe is reported to
//! track as `clicked` (detail: the target), `opened` or `unsubscribed`, with ids only; repeats
//! of the same link within the tracking stream's duplicate window are one event. An unsubscribe
//! turns the user's preference for the message's channel off (announced, so every cache drops
//! the old one); nothing happens on `GET`, since mail scanners fetch links.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use herald_render::links::{Link, LinkKind};
use herald_schemas::{Channel, Status, Timestamp, TrackEvent, ids};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::announce::changed;
use crate::error::{Answer, ApiError};

/// The routes, under `/v1/links`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{token}", get(click))
        .route("/{token}/open.gif", get(open))
        .route("/{token}/unsubscribe", get(unsubscribe_page).post(unsubscribe))
}

/// A transparent 1×1 GIF.
const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The link `token` stands for, if it verifies and is of `kind`.
fn verified(state: &AppState, token: &str, kind: LinkKind) -> Answer<Link> {
    let links = state
        .links
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "engagement_off", "engagement links are off (engagement.base_url)"))?;
    let link = links.verify(token).map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "invalid_link", e.to_string()))?;
    if link.kind != kind {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_link", "the link is not for this"));
    }
    Ok(link)
}

/// The event reporting `status` about the link's delivery; `distinct` tells apart events of one
/// status about one delivery (each link clicked).
fn event(link: &Link, status: Status, distinct: u32, detail: Option<String>) -> Answer<TrackEvent> {
    let invalid = || ApiError::new(StatusCode::FORBIDDEN, "invalid_link", "the link names no delivery");
    let delivery: Uuid = link.delivery_id.parse().map_err(|_| invalid())?;
    let notification: Uuid = link.notification_id.parse().map_err(|_| invalid())?;
    Ok(TrackEvent {
        event_id: ids::event_id(delivery, STAGE, status, distinct),
        notification_id: Some(notification),
        delivery_id: Some(delivery),
        user_id: link.user_id.clone(),
        channel: link.channel.parse::<Channel>().ok(),
        detail,
        ..TrackEvent::new(&link.tenant, status, STAGE, Timestamp::now())
    })
}

/// The stage name engagement events carry.
const STAGE: &str = "engagement";

/// Reports an event; a broker that cannot take it is logged, never the recipient's problem.
async fn report(state: &AppState, event: &TrackEvent) {
    let reported = tokio::time::timeout(std::time::Duration::from_secs(2), state.nats.report_event(event)).await;
    match reported {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, status = %event.status, delivery_id = ?event.delivery_id, "Could not report an engagement event.")
        }
        Err(_) => tracing::error!(status = %event.status, delivery_id = ?event.delivery_id, "Reporting an engagement event timed out."),
    }
}

async fn click(State(state): State<AppState>, Path(token): Path<String>) -> Answer<Response> {
    let link = verified(&state, &token, LinkKind::Click)?;
    let target = link.url.clone().ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "invalid_link", "the link has no target"))?;
    let digest = Sha256::digest(target.as_bytes());
    let distinct = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    report(&state, &event(&link, Status::Clicked, distinct, Some(target.clone()))?).await;
    Ok((StatusCode::FOUND, [(header::LOCATION, target)]).into_response())
}

async fn open(State(state): State<AppState>, Path(token): Path<String>) -> Answer<Response> {
    let link = verified(&state, &token, LinkKind::Open)?;
    report(&state, &event(&link, Status::Opened, 0, None)?).await;
    Ok(([(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store, private")], PIXEL.as_slice()).into_response())
}

async fn unsubscribe_page(State(state): State<AppState>, Path(token): Path<String>) -> Answer<Html<String>> {
    let link = verified(&state, &token, LinkKind::Unsubscribe)?;
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <p>Stop receiving {} messages like this one?</p>\
         <form method=post><input type=hidden name=List-Unsubscribe value=One-Click><button>Unsubscribe</button></form>",
        html_text(&link.channel)
    )))
}

async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Answer<Html<&'static str>> {
    let link = verified(&state, &token, LinkKind::Unsubscribe)?;
    let channel =
        link.channel.parse::<Channel>().map_err(|_| ApiError::new(StatusCode::FORBIDDEN, "invalid_link", "the link names no channel"))?;
    let user = link.user_id.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_user",
            "the message went to an address without a user in the directory; nothing to unsubscribe",
        )
    })?;
    let contact = state.store.contact(&link.tenant, user).await?.ok_or_else(|| ApiError::not_found("user", user))?;
    let mut preferences = contact.preferences;
    if preferences.channels.get(&channel) != Some(&false) {
        preferences.channels.insert(channel, false);
        state.store.put_preferences(&link.tenant, user, &preferences).await?;
        changed(&state, &link.tenant, Some(user)).await;
    }
    report(&state, &event(&link, Status::Unsubscribed, 0, Some(format!("{channel} turned off by the message's unsubscribe link")))?).await;
    Ok(Html("<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>You are unsubscribed.</p>"))
}

fn html_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
