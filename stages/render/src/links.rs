//! [`SignedLinks`], the [`LinkHook`] of a Herald with engagement tracking: every tracked link,
//! open pixel and unsubscribe link points at Herald's API with a token that says what it is for
//! and is signed with HMAC-SHA256 under the deployment's engagement secret.
//!
//! A token is `<payload>.<signature>`, both unpadded base64url: the payload is a small JSON
//! [`Link`] (kind, tenant, delivery, notification, channel, user, and for a click the target
//! URL); the signature covers the payload's text. The API serves
//! - `GET {base}/v1/links/{token}`: a click: 302 to the signed URL, never to any other;
//! - `GET {base}/v1/links/{token}/open.gif`: an open: a 1×1 transparent GIF;
//! - `GET`/`POST {base}/v1/links/{token}/unsubscribe`: the unsubscribe page and its one-click
//!   form (RFC 8058: `List-Unsubscribe=One-Click`).
//!
//! A token whose signature does not match — altered, made up, or signed with another key — is
//! refused by [`SignedLinks::verify`], so Herald is never an open redirect.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::hook::{LinkContext, LinkHook};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    #[serde(rename = "c")]
    Click,
    #[serde(rename = "o")]
    Open,
    #[serde(rename = "u")]
    Unsubscribe,
}

/// A token's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    #[serde(rename = "k")]
    pub kind: LinkKind,
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "d")]
    pub delivery_id: String,
    #[serde(rename = "n")]
    pub notification_id: String,
    #[serde(rename = "c")]
    pub channel: String,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A click's target.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match: it was altered or not made by this Herald")]
    BadSignature,
}

/// Signs and checks engagement links.
#[derive(Clone)]
pub struct SignedLinks {
    /// The API's public base URL, without a trailing slash.
    base: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SignedLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedLinks").field("base", &self.base).finish_non_exhaustive()
    }
}

impl SignedLinks {
    /// Links on `base` (the API as recipients reach it) signed with `secret`.
    pub fn new(base: &str, secret: &[u8]) -> Self {
        SignedLinks { base: base.trim_end_matches('/').to_owned(), key: secret.to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
    }

    /// The token for `link`.
    pub fn sign(&self, link: &Link) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(link).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The link a token stands for, if this Herald signed it (compared in constant time).
    pub fn verify(&self, token: &str) -> Result<Link, LinkError> {
        let (payload, signature) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| LinkError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| LinkError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| LinkError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| LinkError::Malformed)
    }

    fn link(context: &LinkContext, kind: LinkKind, url: Option<&str>) -> Link {
        Link {
            kind,
            tenant: context.tenant.clone(),
            delivery_id: context.delivery_id.clone(),
            notification_id: context.notification_id.clone(),
            channel: context.channel.clone(),
            user_id: context.user_id.clone(),
            url: url.map(str::to_owned),
        }
    }

    /// The URL the API serves `link` on.
    pub fn url(&self, link: &Link) -> String {
        let token = self.sign(link);
        match link.kind {
            LinkKind::Click => format!("{}/v1/links/{token}", self.base),
            LinkKind::Open => format!("{}/v1/links/{token}/open.gif", self.base),
            LinkKind::Unsubscribe => format!("{}/v1/links/{token}/unsubscribe", self.base),
        }
    }
}

impl LinkHook for SignedLinks {
    fn click_url(&self, context: &LinkContext, url: &str) -> String {
        // Only web links are tracked: a `mailto:` or `tel:` stays as written.
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return url.to_owned();
        }
        self.url(&Self::link(context, LinkKind::Click, Some(url)))
    }

    fn open_pixel_url(&self, context: &LinkContext) -> Option<String> {
        Some(self.url(&Self::link(context, LinkKind::Open, None)))
    }

    fn unsubscribe_url(&self, context: &LinkContext) -> Option<String> {
        Some(self.url(&Self::link(context, LinkKind::Unsubscribe, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> LinkContext {
        LinkContext {
            tenant: "acme".into(),
            delivery_id: "0193e6c2-0000-7000-8000-000000000001".into(),
            notification_id: "0193e6c2-0000-7000-8000-000000000000".into(),
            channel: "email".into(),
            user_id: Some("alice".into()),
        }
    }

    fn token_of(url: &str) -> &str {
        let rest = url.strip_prefix("https://herald.example/v1/links/").unwrap_or_else(|| panic!("{url}"));
        rest.split('/').next().unwrap_or_default()
    }

    #[test]
    fn a_signed_link_verifies_to_what_was_signed() {
        let links = SignedLinks::new("https://herald.example/", b"secret");
        let url = links.click_url(&context(), "https://shop.example/offer?id=7&x=y");
        let link = links.verify(token_of(&url)).unwrap();
        assert_eq!(link.kind, LinkKind::Click);
        assert_eq!(link.url.as_deref(), Some("https://shop.example/offer?id=7&x=y"));
        assert_eq!((link.tenant.as_str(), link.user_id.as_deref()), ("acme", Some("alice")));
        let pixel = links.open_pixel_url(&context()).unwrap();
        assert!(pixel.ends_with("/open.gif"));
        assert_eq!(links.verify(token_of(&pixel)).unwrap().kind, LinkKind::Open);
        let unsubscribe = links.unsubscribe_url(&context()).unwrap();
        assert!(unsubscribe.ends_with("/unsubscribe"));
        assert_eq!(links.verify(token_of(&unsubscribe)).unwrap().kind, LinkKind::Unsubscribe);
        assert_eq!(links.click_url(&context(), "mailto:help@acme.example"), "mailto:help@acme.example");
    }

    #[test]
    fn altered_foreign_and_malformed_tokens_are_refused() {
        let links = SignedLinks::new("https://herald.example", b"secret");
        let url = links.click_url(&context(), "https://shop.example/offer");
        let token = token_of(&url);
        let (payload, signature) = token.split_once('.').unwrap();
        // Another target in the payload, the signature kept: refused.
        let mut link = links.verify(token).unwrap();
        link.url = Some("https://evil.example/".into());
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&link).unwrap()));
        assert_eq!(links.verify(&forged), Err(LinkError::BadSignature));
        // Signed by another deployment's key: refused.
        let other = SignedLinks::new("https://herald.example", b"another secret");
        assert_eq!(links.verify(token_of(&other.click_url(&context(), "https://shop.example/offer"))), Err(LinkError::BadSignature));
        // One character of the signature changed.
        let mut flipped = signature.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{payload}.{}", String::from_utf8(flipped).unwrap());
        assert_eq!(links.verify(&flipped), Err(LinkError::BadSignature));
        assert_eq!(links.verify("nothing"), Err(LinkError::Malformed));
        assert_eq!(links.verify("a.b!c"), Err(LinkError::Malformed));
    }
}
