//! The producer's notification request: what a service publishes on `herald.requests.<tenant>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Channel, JsonObject, Timestamp};

/// Limits a request must respect. Ingest rejects a request outside them with a reason.
pub mod limits {
    /// Largest accepted request body, in bytes. Large attachments go by object-store reference.
    pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
    /// Most recipients one request may name; groups and topics fan out beyond this.
    pub const MAX_RECIPIENTS: usize = 1_000;
    /// Longest template id, idempotency key or category.
    pub const MAX_NAME_LEN: usize = 128;
    /// Most attachments one request may carry.
    pub const MAX_ATTACHMENTS: usize = 10;
    /// Longest attachment file name or reference.
    pub const MAX_ATTACHMENT_NAME_LEN: usize = 255;
}

/// "Notify these recipients about this": the public request, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "NotificationRequest", extend("$id" = "urn:herald:schema:v1:notification-request"))]
pub struct NotificationRequest {
    /// Wire version; `1` when absent.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    /// Template id to render for each recipient.
    pub template: String,
    /// Values the template may use.
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub data: JsonObject,
    /// Who to notify: one to `MAX_RECIPIENTS` entries.
    pub recipients: Vec<Recipient>,
    /// Channels to use. When absent, the deployment's default channels are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<Channel>>,
    /// Category for per-category preferences and caps, e.g. `billing` or `marketing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Urgency; `critical` bypasses caps and quiet hours.
    #[serde(default)]
    pub priority: Priority,
    /// The producer's key: a second request with the same key (per tenant, within
    /// `topology.idempotency_ttl`) is a duplicate, answered with the original notification id;
    /// the same key with a different request is rejected with `idempotency_conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A producer's dedupe key, e.g. `order-42-status`: each recipient gets at most one delivery
    /// per channel carrying this key within `dedupe_window` ("one order update per user per 10
    /// minutes"). Later ones end as `deduplicated` with reason `dedupe_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// How long `dedupe_key` holds, e.g. `10m` or `PT10M` (1 s to 7 days). Required with
    /// `dedupe_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_window: Option<String>,
    /// Deliver no earlier than this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<Timestamp>,
    /// Do not deliver after this instant (RFC 3339); later deliveries end as `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Producer's own values, carried through to every tracking event's notification.
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub metadata: JsonObject,
    /// Files to attach to the e-mails of this notification (other channels ignore them), each
    /// by reference to the attachment store or inline. Ingest moves inline ones into the store
    /// when together they exceed `attachments.inline_max`, so only references travel on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file attached to a notification's e-mails. Exactly one of `ref` and `content` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The file name the recipient sees, e.g. `invoice-42.pdf`.
    pub filename: String,
    /// Its media type; guessed from the file name's extension when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// A key in the tenant's attachment store (uploaded with `PUT
    /// /v1/tenants/{tenant}/attachments/{key}` or `herald attachments put`): letters, digits and
    /// `._-/`, no `..`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The file itself, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Its size in bytes, when known (ingest records it for the files it stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl Attachment {
    /// Checks the file name, the reference and that exactly one of `ref` and `content` is set.
    pub fn validate(&self, index: usize) -> Result<(), ValidationError> {
        let bad = |detail: String| ValidationError::new("invalid_attachment", format!("attachments[{index}]: {detail}"));
        let name = &self.filename;
        if name.trim().is_empty() || name.len() > limits::MAX_ATTACHMENT_NAME_LEN {
            return Err(bad(format!("`filename` must be 1 to {} bytes", limits::MAX_ATTACHMENT_NAME_LEN)));
        }
        if name.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
            return Err(bad(format!("`filename` {name:?} must be a plain file name, without path separators or control characters")));
        }
        match (&self.reference, &self.content) {
            (Some(key), None) => check_attachment_key(key).map_err(bad),
            (None, Some(_)) => Ok(()),
            _ => Err(bad("set exactly one of `ref` (a key in the attachment store) and `content` (base64)".into())),
        }
    }
}

/// Whether `key` is a valid attachment-store key: 1 to 255 bytes of letters, digits and `._-/`,
/// not starting with `/`, no empty or `.`/`..` segment.
pub fn check_attachment_key(key: &str) -> Result<(), String> {
    let ok_chars = key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    let ok_segments = key.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    if key.is_empty() || key.len() > limits::MAX_ATTACHMENT_NAME_LEN || !ok_chars || !ok_segments {
        return Err(format!(
            "`ref` {key:?} is not an attachment key: use 1 to {} bytes of letters, digits and `._-/`, with no empty, `.` or `..` segment",
            limits::MAX_ATTACHMENT_NAME_LEN
        ));
    }
    Ok(())
}

/// One addressee of a request. Exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// A user in the tenant's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A group of users in the directory, fanned out to its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// An e-mail address of someone with no account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A phone number (E.164) of someone with no account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// A webhook URL with no account behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl Recipient {
    /// A recipient that is a user of the directory.
    pub fn user(id: impl Into<String>) -> Self {
        Recipient { user_id: Some(id.into()), ..Recipient::default() }
    }

    /// A stable textual key for the recipient, used in delivery ids: `user:alice`, `email:a@b.c`.
    pub fn key(&self) -> String {
        let fields =
            [("user", &self.user_id), ("group", &self.group), ("email", &self.email), ("phone", &self.phone), ("webhook", &self.webhook)];
        fields.iter().find_map(|(kind, value)| value.as_ref().map(|v| format!("{kind}:{v}"))).unwrap_or_default()
    }

    fn set_fields(&self) -> usize {
        [&self.user_id, &self.group, &self.email, &self.phone, &self.webhook].iter().filter(|f| f.is_some()).count()
    }
}

/// How urgent a notification is. Each priority has its own lane (subjects and consumers) in
/// every stage up to deliver, so urgent work never queues behind a backlog of less urgent work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    /// Bypasses users' frequency caps and quiet hours.
    Critical,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low];

    /// The priority's name on the wire and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Whether it must not wait behind `normal` and `low` work (deliver keeps reserved provider
    /// permits for these).
    pub fn is_urgent(self) -> bool {
        self >= Priority::High
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown priority `{s}`: use critical, high, normal or low"))
    }
}

/// Parses a duration written as `10m`, `1h 30m` or ISO 8601 (`PT10M`).
pub fn parse_duration(field: &str, value: &str) -> Result<std::time::Duration, ValidationError> {
    let bad = |why: String| ValidationError::new("invalid_field", format!("`{field}` {value:?} {why}"));
    let parsed: jiff::SignedDuration = value.trim().parse().map_err(|e| bad(format!("is not a duration like `10m` or `PT10M`: {e}")))?;
    std::time::Duration::try_from(parsed).map_err(|_| bad("is negative".into()))
}

/// Longest `dedupe_window`.
pub const MAX_DEDUPE_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Why a request was rejected. The `code` is the `reason` of the `rejected` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ValidationError {
    /// Machine-readable reason, e.g. `invalid_json` or `no_recipients`.
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub detail: String,
}

impl ValidationError {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        ValidationError { code, detail: detail.into() }
    }
}

impl NotificationRequest {
    /// Parses and validates a request body. The error says which field is wrong and why.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        if body.len() > limits::MAX_REQUEST_BYTES {
            return Err(ValidationError::new(
                "too_large",
                format!(
                    "the request is {} bytes, over the {} byte limit; send large attachments by object-store reference",
                    body.len(),
                    limits::MAX_REQUEST_BYTES
                ),
            ));
        }
        let request: NotificationRequest = serde_json::from_slice(body)
            .map_err(|e| ValidationError::new("invalid_json", format!("the request is not a valid v1 notification request: {e}")))?;
        request.validate()?;
        Ok(request)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.v != crate::WIRE_VERSION {
            return Err(ValidationError::new(
                "unsupported_version",
                format!("wire version {} is not supported; this server speaks version {}", self.v, crate::WIRE_VERSION),
            ));
        }
        check_name("template", &self.template)?;
        if let Some(category) = &self.category {
            check_name("category", category)?;
        }
        if let Some(key) = &self.idempotency_key {
            check_name("idempotency_key", key)?;
        }
        self.dedupe()?;
        if self.recipients.is_empty() {
            return Err(ValidationError::new("no_recipients", "`recipients` is empty; name at least one recipient"));
        }
        if self.recipients.len() > limits::MAX_RECIPIENTS {
            return Err(ValidationError::new(
                "too_many_recipients",
                format!(
                    "{} recipients is over the limit of {}; use a group for larger audiences",
                    self.recipients.len(),
                    limits::MAX_RECIPIENTS
                ),
            ));
        }
        for (i, recipient) in self.recipients.iter().enumerate() {
            if recipient.set_fields() != 1 {
                return Err(ValidationError::new(
                    "invalid_recipient",
                    format!("recipients[{i}] must set exactly one of user_id, group, email, phone, webhook"),
                ));
            }
            if recipient.key().split_once(':').is_some_and(|(_, v)| v.trim().is_empty()) {
                return Err(ValidationError::new("invalid_recipient", format!("recipients[{i}] is empty")));
            }
        }
        if let Some(channels) = &self.channels
            && channels.is_empty()
        {
            return Err(ValidationError::new("no_channels", "`channels` is empty; omit it to use the default channels"));
        }
        if self.attachments.len() > limits::MAX_ATTACHMENTS {
            return Err(ValidationError::new(
                "invalid_attachment",
                format!("{} attachments is over the limit of {}", self.attachments.len(), limits::MAX_ATTACHMENTS),
            ));
        }
        for (i, attachment) in self.attachments.iter().enumerate() {
            attachment.validate(i)?;
        }
        if let (Some(send_at), Some(expires_at)) = (self.send_at, self.expires_at)
            && expires_at <= send_at
        {
            return Err(ValidationError::new("expires_before_send", "`expires_at` must be later than `send_at`"));
        }
        Ok(())
    }
}

impl NotificationRequest {
    /// The producer dedupe key and its window, when the request sets one.
    pub fn dedupe(&self) -> Result<Option<(String, std::time::Duration)>, ValidationError> {
        match (&self.dedupe_key, &self.dedupe_window) {
            (None, None) => Ok(None),
            (Some(key), Some(window)) => {
                check_name("dedupe_key", key)?;
                let window = parse_duration("dedupe_window", window)?;
                if window < std::time::Duration::from_secs(1) || window > MAX_DEDUPE_WINDOW {
                    return Err(ValidationError::new("invalid_field", "`dedupe_window` must be between 1s and 7 days"));
                }
                Ok(Some((key.clone(), window)))
            }
            (Some(_), None) => Err(ValidationError::new("invalid_field", "`dedupe_key` needs a `dedupe_window`, e.g. \"10m\"")),
            (None, Some(_)) => Err(ValidationError::new("invalid_field", "`dedupe_window` needs a `dedupe_key`")),
        }
    }

    /// A fingerprint of the request's content: the same request sent twice has the same one.
    /// JSON objects serialize with sorted keys, so the order the producer wrote them in does not
    /// matter.
    pub fn fingerprint(&self) -> uuid::Uuid {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &canonical)
    }
}

fn check_name(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new("invalid_field", format!("`{field}` is empty")));
    }
    if value.len() > limits::MAX_NAME_LEN {
        return Err(ValidationError::new(
            "invalid_field",
            format!("`{field}` is {} bytes, over the {} byte limit", value.len(), limits::MAX_NAME_LEN),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One table of cases: the body, and the rejection code expected (None = accepted).
    fn check(body: &str, expected: Option<&str>) {
        let got = NotificationRequest::parse(body.as_bytes()).err().map(|e| e.code);
        assert_eq!(got, expected, "for body {body}");
    }

    #[test]
    fn validation_table() {
        check(r#"{"template":"welcome","recipients":[{"user_id":"alice"}]}"#, None);
        check(
            r#"{"template":"welcome","recipients":[{"user_id":"a"},{"email":"b@example.com"}],"channels":["email","log"],
               "priority":"critical","idempotency_key":"k1","data":{"n":1},"metadata":{"trace":"x"},
               "send_at":"2030-01-01T00:00:00Z","expires_at":"2030-01-02T00:00:00Z"}"#,
            None,
        );
        check("not json", Some("invalid_json"));
        check(r#"{"recipients":[{"user_id":"a"}]}"#, Some("invalid_json"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"colour":"red"}"#, Some("invalid_json"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"priority":"urgent"}"#, Some("invalid_json"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"channels":["pigeon"]}"#, Some("invalid_json"));
        check(r#"{"template":"t","recipients":[]}"#, Some("no_recipients"));
        check(r#"{"template":"","recipients":[{"user_id":"a"}]}"#, Some("invalid_field"));
        check(r#"{"template":"t","recipients":[{}]}"#, Some("invalid_recipient"));
        check(r#"{"template":"t","recipients":[{"user_id":"a","email":"x@y.z"}]}"#, Some("invalid_recipient"));
        check(r#"{"template":"t","recipients":[{"user_id":" "}]}"#, Some("invalid_recipient"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"channels":[]}"#, Some("no_channels"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"dedupe_key":"o1","dedupe_window":"10m"}"#, None);
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"dedupe_key":"o1","dedupe_window":"PT10M"}"#, None);
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"dedupe_key":"o1"}"#, Some("invalid_field"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"dedupe_window":"10m"}"#, Some("invalid_field"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"dedupe_key":"o1","dedupe_window":"soon"}"#, Some("invalid_field"));
        check(r#"{"template":"t","recipients":[{"user_id":"a"}],"dedupe_key":"o1","dedupe_window":"30d"}"#, Some("invalid_field"));
        check(r#"{"v":2,"template":"t","recipients":[{"user_id":"a"}]}"#, Some("unsupported_version"));
        check(
            r#"{"template":"t","recipients":[{"user_id":"a"}],"send_at":"2030-01-02T00:00:00Z","expires_at":"2030-01-01T00:00:00Z"}"#,
            Some("expires_before_send"),
        );
        let many = (0..=limits::MAX_RECIPIENTS).map(|i| format!(r#"{{"user_id":"u{i}"}}"#)).collect::<Vec<_>>().join(",");
        check(&format!(r#"{{"template":"t","recipients":[{many}]}}"#), Some("too_many_recipients"));
        let with = |attachment: &str| format!(r#"{{"template":"t","recipients":[{{"user_id":"a"}}],"attachments":[{attachment}]}}"#);
        check(&with(r#"{"filename":"a.pdf","ref":"invoices/2026/42.pdf"}"#), None);
        check(&with(r#"{"filename":"a.txt","content":"aGk=","content_type":"text/plain"}"#), None);
        check(&with(r#"{"filename":"a.pdf"}"#), Some("invalid_attachment"));
        check(&with(r#"{"filename":"a.pdf","ref":"k","content":"aGk="}"#), Some("invalid_attachment"));
        check(&with(r#"{"filename":"../a.pdf","ref":"k"}"#), Some("invalid_attachment"));
        check(&with(r#"{"filename":"","ref":"k"}"#), Some("invalid_attachment"));
        for key in ["../etc/passwd", "/abs", "a//b", "a/./b", "sp ace", ""] {
            check(&with(&format!(r#"{{"filename":"a.pdf","ref":"{key}"}}"#)), Some("invalid_attachment"));
        }
        let eleven = [r#"{"filename":"a","ref":"k"}"#; limits::MAX_ATTACHMENTS + 1].join(",");
        check(&with(&eleven), Some("invalid_attachment"));
        let huge = "x".repeat(limits::MAX_REQUEST_BYTES);
        check(&format!(r#"{{"template":"t","recipients":[{{"user_id":"a"}}],"data":{{"x":"{huge}"}}}}"#), Some("too_large"));
    }

    #[test]
    fn the_fingerprint_ignores_key_order_but_not_content() {
        let a = NotificationRequest::parse(br#"{"template":"t","recipients":[{"user_id":"a"}],"data":{"x":1,"y":2}}"#).unwrap();
        let b = NotificationRequest::parse(br#"{"data":{"y":2,"x":1},"recipients":[{"user_id":"a"}],"template":"t"}"#).unwrap();
        let c = NotificationRequest::parse(br#"{"template":"t","recipients":[{"user_id":"a"}],"data":{"x":1,"y":3}}"#).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn rejection_detail_names_the_field() {
        let err = NotificationRequest::parse(br#"{"template":"t","recipients":[{"user_id":"a"}],"colour":"red"}"#).unwrap_err();
        assert!(err.detail.contains("colour"), "{}", err.detail);
    }
}
