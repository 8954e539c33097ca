//! A page of a group fan-out: what enrich hands to the fanout stage, and fanout to itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Notification;

/// "Deliver `notification` to the members of `group` that come after `after`." Fanout handles
/// one page per message and forwards the next page, so a group of any size is expanded in
/// bounded memory, and a crash resumes at the page it was on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "FanoutPage", extend("$id" = "urn:herald:schema:v1:fanout-page"))]
pub struct FanoutPage {
    /// Wire version.
    #[serde(default = "crate::wire_version")]
    pub v: u32,
    pub notification: Notification,
    /// The group (or topic) id.
    pub group: String,
    /// The last member id of the previous page; absent for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// 0 for the first page.
    pub page: u32,
    /// The template version enrich chose for the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
}

impl FanoutPage {
    /// The page's deterministic id, from (notification, group, page number): see
    /// [`crate::ids::fanout_page_id`].
    pub fn id(&self) -> Uuid {
        crate::ids::fanout_page_id(self.notification.notification_id, &self.group, self.page)
    }
}
