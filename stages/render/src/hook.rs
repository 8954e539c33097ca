//! The link hook: how rendered messages get tracked links, an open pixel and an unsubscribe
//! link. Templates call `{{ url | track }}`, `{{ tracking_pixel() }}` and
//! `{{ unsubscribe_url() }}`; e-mail gets `List-Unsubscribe` headers (RFC 2369, one-click per
//! RFC 8058) when the hook has an unsubscribe URL.
//!
//! [`NoTracking`] leaves links as they are and adds nothing; the tracking service (signed click
//! redirects, open pixel, unsubscribe endpoint) supplies its own hook.

/// Who a link is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkContext {
    pub tenant: String,
    pub delivery_id: String,
    pub notification_id: String,
    pub channel: String,
    pub user_id: Option<String>,
}

/// Rewrites links for tracking.
pub trait LinkHook: Send + Sync + std::fmt::Debug + 'static {
    /// The URL to put in the message for a link to `url`.
    fn click_url(&self, context: &LinkContext, url: &str) -> String;

    /// The URL of a 1×1 image that records an open, if opens are tracked.
    fn open_pixel_url(&self, context: &LinkContext) -> Option<String>;

    /// The URL that unsubscribes the recipient, if there is one.
    fn unsubscribe_url(&self, context: &LinkContext) -> Option<String>;
}

/// Links stay as written; no pixel; no unsubscribe link.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTracking;

impl LinkHook for NoTracking {
    fn click_url(&self, _: &LinkContext, url: &str) -> String {
        url.to_owned()
    }

    fn open_pixel_url(&self, _: &LinkContext) -> Option<String> {
        None
    }

    fn unsubscribe_url(&self, _: &LinkContext) -> Option<String> {
        None
    }
}
