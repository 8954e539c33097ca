//! Enrich and fanout: from "notify these recipients" to one delivery per (recipient, channel,
//! address).
//!
//! **Enrich.** In: a [`Notification`] from ingest. Out: one [`Delivery`] per reachable
//! (user, channel, device or address) to render; a [`FanoutPage`] for each group to fanout;
//! and an event for everything that cannot be reached: `failed`/`unknown_recipient`,
//! `opted_out` (`unsubscribed`, `channel_opt_out`, `category_opt_out`), `skipped`
//! (`channel_disabled`, `no_address`).
//!
//! **Fanout.** In: a [`FanoutPage`]. Out: the deliveries of one page of the group's members,
//! and the next page when there is one; or, for a second copy of a page, a `deduplicated`
//! event. A million members never sit in memory at once: a message holds at most
//! `fanout_page` of them.
//!
//! Side effects: directory reads; fanout claims each page (`page.<page id>` in the dedupe
//! bucket, put-if-absent, holding the stream sequence of the message that won it).
//! Invariants: delivery ids are derived from (notification, recipient, channel, address), and a
//! page's id from (notification, group, page number). A page redone after a crash — even after
//! the group changed — forwards a successor with the same id, and any other copy of a page is
//! dropped at its claim, so the chain of pages never forks; repeated deliveries carry the same
//! ids and meet their dedupe claims. A user reached both directly and through a group gets one
//! delivery.

use std::future::Future;

use herald_schemas::directory::{Contact, Device, Platform};
use std::sync::Arc;

use bytes::Bytes;
use herald_schemas::{Channel, DedupeKey, Delivery, DeviceRef, FanoutPage, Notification, Recipient, Status, TemplateVersion, ids};
use herald_stage::{Created, EventBuilder, Hop, KeyValue, Meta, Outcome, PortError, Stage, StageError, TemplateSource};
use serde::{Deserialize, Serialize};

/// Where recipients are looked up.
pub trait Directory: Send + Sync + 'static {
    /// The users among `ids` that exist, with their devices and preferences (in any order).
    fn contacts(&self, tenant: &str, ids: &[String]) -> impl Future<Output = Result<Vec<Contact>, PortError>> + Send;

    /// A page of a group's member ids in id order, strictly after `after`.
    fn members(
        &self,
        tenant: &str,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, PortError>> + Send;
}

/// Which channels the deployment uses, and how groups are paged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Channels used when a request names none.
    pub default_channels: Vec<Channel>,
    /// Channels this deployment can deliver; others are skipped with an event.
    pub enabled_channels: Vec<Channel>,
    /// Group members expanded per fanout message.
    pub fanout_page: usize,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig { default_channels: vec![Channel::Log], enabled_channels: vec![Channel::Log], fanout_page: 500 }
    }
}

/// The enrich stage over a directory and the templates.
#[derive(Debug)]
pub struct Enrich<D, T> {
    directory: D,
    templates: T,
    config: EnrichConfig,
}

impl<D: Directory, T: TemplateSource> Enrich<D, T> {
    pub fn new(directory: D, templates: T, config: EnrichConfig) -> Self {
        Enrich { directory, templates, config }
    }
}

/// The fanout stage over a directory, the templates and the page claims.
#[derive(Debug)]
pub struct Fanout<D, T, K> {
    directory: D,
    templates: T,
    claims: K,
    config: EnrichConfig,
}

impl<D: Directory, T: TemplateSource, K: KeyValue> Fanout<D, T, K> {
    pub fn new(directory: D, templates: T, claims: K, config: EnrichConfig) -> Self {
        Fanout { directory, templates, claims, config }
    }
}

/// Builds the deliveries and events of one notification, recipient by recipient.
struct Resolver<'a> {
    stage: &'static str,
    meta: &'a Meta,
    notification: &'a Notification,
    config: &'a EnrichConfig,
    template: Option<Arc<TemplateVersion>>,
    outcome: Outcome,
}

impl<'a> Resolver<'a> {
    fn new(
        stage: &'static str,
        meta: &'a Meta,
        notification: &'a Notification,
        config: &'a EnrichConfig,
        template: Option<Arc<TemplateVersion>>,
    ) -> Self {
        Resolver { stage, meta, notification, config, template, outcome: Outcome::new() }
    }

    /// The request's channels, else the template's defaults, else the deployment's.
    fn channels(&self) -> Vec<Channel> {
        if let Some(channels) = &self.notification.request.channels {
            return channels.clone();
        }
        match &self.template {
            Some(t) if !t.spec.channels.is_empty() => t.spec.channels.clone(),
            _ => self.config.default_channels.clone(),
        }
    }

    /// The request's category, else the template's.
    fn category(&self) -> Option<String> {
        self.notification.request.category.clone().or_else(|| self.template.as_ref().and_then(|t| t.spec.category.clone()))
    }

    /// Fails the whole notification when its template does not exist: nothing to render.
    fn unknown_template(&mut self) -> Result<(), StageError> {
        let template = &self.notification.request.template;
        let detail = format!("no template `{template}` in tenant `{}`; publish it with `herald templates push`", self.notification.tenant);
        self.event("template", None, None, Status::Failed, "unknown_template", detail)
    }

    fn event(
        &mut self,
        key: &str,
        user: Option<&str>,
        channel: Option<Channel>,
        status: Status,
        reason: &str,
        detail: String,
    ) -> Result<(), StageError> {
        let subject = format!("{key}\0{}", channel.map(Channel::as_str).unwrap_or_default());
        let event = EventBuilder::notification(self.stage, self.meta, self.notification, status)
            .recipient(&subject, user, channel)
            .reason(reason, detail)
            .build();
        self.outcome.push(Hop::Track, &event, None)
    }

    fn unknown_user(&mut self, id: &str) -> Result<(), StageError> {
        let detail = format!("user `{id}` is not in tenant `{}`'s directory", self.notification.tenant);
        self.event(&format!("user:{id}"), Some(id), None, Status::Failed, "unknown_recipient", detail)
    }

    /// A directory user: every channel, honouring preferences and skipping disabled devices.
    fn user(&mut self, contact: &Contact) -> Result<(), StageError> {
        let key = format!("user:{}", contact.user.id);
        let category = self.category();
        let category = category.as_deref();
        for channel in self.channels() {
            if !self.config.enabled_channels.contains(&channel) {
                let detail = format!("channel `{channel}` is not enabled in this deployment");
                self.event(&key, Some(&contact.user.id), Some(channel), Status::Skipped, "channel_disabled", detail)?;
                continue;
            }
            if let Some(opt_out) = contact.preferences.opt_out(channel, category) {
                let detail = match (opt_out, category) {
                    (herald_schemas::directory::OptOut::Category, Some(category)) => format!("opted out of `{category}` on {channel}"),
                    (herald_schemas::directory::OptOut::Channel, _) => format!("opted out of {channel}"),
                    _ => "unsubscribed from everything".to_owned(),
                };
                self.event(&key, Some(&contact.user.id), Some(channel), Status::OptedOut, opt_out.reason(), detail)?;
                continue;
            }
            let addresses = addresses(contact, channel);
            if addresses.is_empty() {
                let detail = format!("{key} has no {} for channel `{channel}`", what_address(channel));
                self.event(&key, Some(&contact.user.id), Some(channel), Status::Skipped, "no_address", detail)?;
                continue;
            }
            for (address, device) in addresses {
                self.delivery(&key, Some(contact), channel, address, device)?;
            }
        }
        Ok(())
    }

    /// Someone with no account: the channels that fit the address they were given.
    fn direct(&mut self, recipient: &Recipient) -> Result<(), StageError> {
        let key = recipient.key();
        let mut reached = false;
        for channel in self.channels() {
            let address = match channel {
                Channel::Log => Some(key.clone()),
                Channel::Email => recipient.email.clone(),
                Channel::Sms | Channel::Voice => recipient.phone.clone(),
                Channel::Webhook => recipient.webhook.clone(),
                _ => None,
            };
            let Some(address) = address else { continue };
            if !self.config.enabled_channels.contains(&channel) {
                let detail = format!("channel `{channel}` is not enabled in this deployment");
                self.event(&key, None, Some(channel), Status::Skipped, "channel_disabled", detail)?;
                reached = true;
                continue;
            }
            self.delivery(&key, None, channel, address, None)?;
            reached = true;
        }
        if !reached {
            let detail =
                format!("none of the channels {:?} can reach {key}", self.channels().iter().map(|c| c.as_str()).collect::<Vec<_>>());
            self.event(&key, None, None, Status::Skipped, "no_address", detail)?;
        }
        Ok(())
    }

    fn delivery(
        &mut self,
        key: &str,
        contact: Option<&Contact>,
        channel: Channel,
        address: String,
        device: Option<&Device>,
    ) -> Result<(), StageError> {
        let notification = self.notification;
        let request = &notification.request;
        let user = contact.map(|c| &c.user);
        let delivery = Delivery {
            v: herald_schemas::WIRE_VERSION,
            delivery_id: ids::delivery_id(notification.notification_id, key, channel, &address),
            notification_id: notification.notification_id,
            tenant: notification.tenant.clone(),
            user_id: user.map(|u| u.id.clone()),
            channel,
            address,
            platform: device.map(|d| d.platform),
            voip: device.is_some_and(|d| d.voip),
            device: device.map(|d| DeviceRef { id: d.id.clone(), app_id: d.app_id.clone(), environment: d.environment }),
            locale: user.and_then(|u| u.locale.clone()),
            timezone: user.and_then(|u| u.timezone.clone()),
            template: request.template.clone(),
            template_version: self.template.as_ref().map(|t| t.version),
            data: request.data.clone(),
            category: self.category(),
            priority: request.priority,
            accepted_at: notification.accepted_at,
            expires_at: request.expires_at,
            content: None,
            attachments: if channel == Channel::Email { request.attachments.clone() } else { Vec::new() },
            scheduled_for: request.send_at,
            deferred_until: None,
            quiet_hours: contact.and_then(|c| c.preferences.quiet_hours.clone()),
            dedupe: request.dedupe().ok().flatten().map(|(key, window)| DedupeKey { key, window_secs: window.as_secs() }),
            claim: None,
            redial_of: None,
            redial: 0,
        };
        self.outcome.push(Hop::Render, &delivery, None)
    }
}

/// Where a user can be reached on a channel: one address per active device for push channels
/// (with the device, whose platform sets the payload format).
fn addresses(contact: &Contact, channel: Channel) -> Vec<(String, Option<&Device>)> {
    let user = &contact.user;
    let devices = |platforms: &[Platform]| -> Vec<(String, Option<&Device>)> {
        contact
            .devices
            .iter()
            .filter(|d| d.is_active() && platforms.contains(&d.platform))
            .filter_map(|d| {
                let address = match d.platform {
                    Platform::Web => d.subscription.as_ref().and_then(|s| serde_json::to_string(s).ok()),
                    _ => d.token.clone(),
                };
                address.map(|a| (a, Some(d)))
            })
            .collect()
    };
    let plain = |address: Option<&String>| address.map(|a| (a.clone(), None)).into_iter().collect();
    match channel {
        Channel::Log => vec![(format!("user:{}", user.id), None)],
        Channel::Email => plain(user.email.as_ref()),
        Channel::Sms | Channel::Voice => plain(user.phone.as_ref()),
        Channel::Push => devices(&[Platform::Ios, Platform::Android]),
        Channel::WebPush => devices(&[Platform::Web]),
        Channel::InApp => vec![(user.id.clone(), None)],
        Channel::Webhook => Vec::new(),
    }
}

fn what_address(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "e-mail address",
        Channel::Sms | Channel::Voice => "phone number",
        Channel::Push => "active ios or android device",
        Channel::WebPush => "active web push subscription",
        _ => "address",
    }
}

impl<D: Directory, T: TemplateSource> Stage for Enrich<D, T> {
    const NAME: &'static str = "enrich";
    type Input = Notification;

    async fn process(&self, notification: Notification, meta: &Meta) -> Result<Outcome, StageError> {
        let request = &notification.request;
        let template = self.templates.resolve(&notification.tenant, &request.template, notification.accepted_at).await?;
        if template.is_none() {
            let mut resolver = Resolver::new(Self::NAME, meta, &notification, &self.config, None);
            resolver.unknown_template()?;
            return Ok(resolver.outcome);
        }
        let user_ids: Vec<String> = request.recipients.iter().filter_map(|r| r.user_id.clone()).collect();
        let contacts = self.directory.contacts(&notification.tenant, &user_ids).await?;
        let version = template.as_ref().map(|t| t.version);
        let mut resolver = Resolver::new(Self::NAME, meta, &notification, &self.config, template);
        for recipient in &request.recipients {
            if let Some(id) = &recipient.user_id {
                match contacts.iter().find(|c| &c.user.id == id) {
                    Some(contact) => resolver.user(contact)?,
                    None => resolver.unknown_user(id)?,
                }
            } else if let Some(group) = &recipient.group {
                let page = FanoutPage {
                    v: herald_schemas::WIRE_VERSION,
                    notification: notification.clone(),
                    group: group.clone(),
                    after: None,
                    page: 0,
                    template_version: version,
                };
                resolver.outcome.push(Hop::Fanout, &page, None)?;
            } else {
                resolver.direct(recipient)?;
            }
        }
        Ok(resolver.outcome)
    }
}

impl<D: Directory, T: TemplateSource, K: KeyValue> Stage for Fanout<D, T, K> {
    const NAME: &'static str = "fanout";
    type Input = FanoutPage;

    async fn process(&self, page: FanoutPage, meta: &Meta) -> Result<Outcome, StageError> {
        let tenant = &page.notification.tenant;
        let mine = Bytes::from(meta.sequence.to_string());
        if let Created::Exists(owner) = self.claims.create(&format!("page.{}", page.id()), mine.clone()).await?
            && owner.value != mine
        {
            let mut resolver = Resolver::new(Self::NAME, meta, &page.notification, &self.config, None);
            let detail = format!(
                "page {} of group `{}` is already handled by message #{}",
                page.page,
                page.group,
                String::from_utf8_lossy(&owner.value)
            );
            let key = format!("group:{}:page:{}", page.group, page.page);
            resolver.event(&key, None, None, Status::Deduplicated, "duplicate_page", detail)?;
            return Ok(resolver.outcome);
        }
        let size = self.config.fanout_page.max(1);
        let members = self.directory.members(tenant, &page.group, page.after.as_deref(), size).await?;
        let contacts = self.directory.contacts(tenant, &members).await?;
        let template = match page.template_version {
            Some(n) => self.templates.version(tenant, &page.notification.request.template, n).await?,
            None => self.templates.resolve(tenant, &page.notification.request.template, page.notification.accepted_at).await?,
        };
        let mut resolver = Resolver::new(Self::NAME, meta, &page.notification, &self.config, template);
        if members.is_empty() && page.page == 0 {
            let detail = format!("group `{}` has no members in tenant `{tenant}`", page.group);
            resolver.event(&format!("group:{}", page.group), None, None, Status::Skipped, "empty_group", detail)?;
        }
        for id in &members {
            match contacts.iter().find(|c| &c.user.id == id) {
                Some(contact) => resolver.user(contact)?,
                None => resolver.unknown_user(id)?,
            }
        }
        if members.len() == size {
            let next = FanoutPage { after: members.last().cloned(), page: page.page + 1, ..page.clone() };
            resolver.outcome.push(Hop::Fanout, &next, None)?;
        }
        Ok(resolver.outcome)
    }
}

#[cfg(test)]
mod tests;
