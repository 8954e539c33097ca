//! `herald stats`: delivery figures folded from tracking events, grouped by template, channel,
//! provider or category (or several at once).
//!
//! Per group, over the deliveries the events name:
//! - `deliveries`: distinct delivery ids; `sent`, `delivered`, `undelivered` (`undelivered` or
//!   `bounced` receipts), `failed` (`failed` or `dead_lettered` and never `sent`), `opened`,
//!   `clicked`: deliveries with at least one such event.
//! - `delivery_rate` = delivered / sent, `open_rate` = opened / sent, `click_rate` = clicked /
//!   sent, `failure_rate` = failed / (sent + failed); absent when the base is zero.
//! - latency from the notification's `accepted` to the delivery's first `sent`, and to its first
//!   `delivered`: p50 and p99 by nearest rank, in milliseconds, over deliveries whose both events
//!   were read.
//!
//! A delivery belongs to the group of its template, channel and category (any event carries
//! them) and of the provider that sent it (else the last one that answered). The fold keeps one
//! small record per delivery and one time per notification, so a million events fit in memory.

use std::collections::{BTreeMap, HashMap};

use herald_schemas::{Status, Timestamp, TrackEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Template,
    Channel,
    Provider,
    Category,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Template => "template",
            GroupBy::Channel => "channel",
            GroupBy::Provider => "provider",
            GroupBy::Category => "category",
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "template" => Ok(GroupBy::Template),
            "channel" => Ok(GroupBy::Channel),
            "provider" => Ok(GroupBy::Provider),
            "category" => Ok(GroupBy::Category),
            other => Err(format!("cannot group by `{other}`: use template, channel, provider or category")),
        }
    }
}

#[derive(Debug, Default)]
struct DeliveryFold {
    notification: Option<Uuid>,
    template: Option<String>,
    channel: Option<String>,
    category: Option<String>,
    sent_by: Option<String>,
    answered_by: Option<String>,
    sent_at: Option<Timestamp>,
    delivered_at: Option<Timestamp>,
    undelivered: bool,
    failed: bool,
    opened: bool,
    clicked: bool,
}

/// The fold: feed it events in any order with [`Stats::add`], then read [`Stats::report`].
#[derive(Debug)]
pub struct Stats {
    by: Vec<GroupBy>,
    deliveries: HashMap<Uuid, DeliveryFold>,
    accepted: HashMap<Uuid, Timestamp>,
    events: u64,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The group's value per dimension (`-` where the events did not say).
    pub group: BTreeMap<String, String>,
    pub deliveries: u64,
    pub sent: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub failed: u64,
    pub opened: u64,
    pub clicked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_to_sent: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_to_delivered: Option<Latency>,
}

/// Every group, and all of them together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub events: u64,
    pub rows: Vec<Row>,
    pub total: Row,
}

impl Stats {
    pub fn new(by: Vec<GroupBy>) -> Self {
        Stats { by, deliveries: HashMap::new(), accepted: HashMap::new(), events: 0 }
    }

    pub fn add(&mut self, event: &TrackEvent) {
        self.events += 1;
        if event.status == Status::Accepted
            && event.delivery_id.is_none()
            && let Some(n) = event.notification_id
        {
            let at = self.accepted.entry(n).or_insert(event.at);
            *at = (*at).min(event.at);
        }
        let Some(id) = event.delivery_id else { return };
        let d = self.deliveries.entry(id).or_default();
        d.notification = d.notification.or(event.notification_id);
        d.template = d.template.take().or_else(|| event.template.clone());
        d.channel = d.channel.take().or_else(|| event.channel.map(|c| c.as_str().to_owned()));
        d.category = d.category.take().or_else(|| event.category.clone());
        let first = |slot: &mut Option<Timestamp>| *slot = Some(slot.map_or(event.at, |t| t.min(event.at)));
        match event.status {
            Status::Sent => {
                first(&mut d.sent_at);
                d.sent_by = event.provider.clone().or(d.sent_by.take());
            }
            Status::Delivered => first(&mut d.delivered_at),
            Status::Undelivered | Status::Bounced => d.undelivered = true,
            Status::Failed | Status::DeadLettered => d.failed = true,
            Status::Opened => d.opened = true,
            Status::Clicked => d.clicked = true,
            _ => {}
        }
        if event.provider.is_some() && event.status != Status::Sent {
            d.answered_by = event.provider.clone();
        }
    }

    /// The figures so far, groups in key order.
    pub fn report(&self) -> Report {
        let mut groups: BTreeMap<Vec<String>, Vec<&DeliveryFold>> = BTreeMap::new();
        for d in self.deliveries.values() {
            let key = self
                .by
                .iter()
                .map(|by| {
                    let value = match by {
                        GroupBy::Template => d.template.as_deref(),
                        GroupBy::Channel => d.channel.as_deref(),
                        GroupBy::Provider => d.sent_by.as_deref().or(d.answered_by.as_deref()),
                        GroupBy::Category => d.category.as_deref(),
                    };
                    value.unwrap_or("-").to_owned()
                })
                .collect();
            groups.entry(key).or_default().push(d);
        }
        let rows = groups
            .iter()
            .map(|(key, members)| {
                let group = self.by.iter().zip(key).map(|(by, v)| (by.as_str().to_owned(), v.clone())).collect();
                self.row(group, members)
            })
            .collect();
        let all: Vec<&DeliveryFold> = self.deliveries.values().collect();
        Report { events: self.events, rows, total: self.row(BTreeMap::new(), &all) }
    }

    fn row(&self, group: BTreeMap<String, String>, members: &[&DeliveryFold]) -> Row {
        let count = |f: &dyn Fn(&DeliveryFold) -> bool| members.iter().filter(|d| f(d)).count() as u64;
        let sent = count(&|d| d.sent_at.is_some());
        let delivered = count(&|d| d.delivered_at.is_some());
        let failed = count(&|d| d.failed && d.sent_at.is_none());
        let opened = count(&|d| d.opened);
        let clicked = count(&|d| d.clicked);
        let since_accepted = |at: fn(&DeliveryFold) -> Option<Timestamp>| -> Option<Latency> {
            let mut ms: Vec<f64> = members
                .iter()
                .filter_map(|d| {
                    let accepted = self.accepted.get(&d.notification?)?;
                    Some(at(d)?.duration_since(*accepted).as_micros() as f64 / 1000.0)
                })
                .collect();
            quantiles(&mut ms)
        };
        Row {
            group,
            deliveries: members.len() as u64,
            sent,
            delivered,
            undelivered: count(&|d| d.undelivered),
            failed,
            opened,
            clicked,
            delivery_rate: ratio(delivered, sent),
            failure_rate: ratio(failed, sent + failed),
            open_rate: ratio(opened, sent),
            click_rate: ratio(clicked, sent),
            accepted_to_sent: since_accepted(|d| d.sent_at),
            accepted_to_delivered: since_accepted(|d| d.delivered_at),
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// p50 and p99 by nearest rank: the smallest value with at least that share at or below it.
fn quantiles(ms: &mut [f64]) -> Option<Latency> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Latency { samples: ms.len(), p50_ms: rank(0.50), p99_ms: rank(0.99) })
}

#[cfg(test)]
mod tests {
    use herald_schemas::{Channel, ids};

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    fn event(n: u128, d: Option<u128>, status: Status, ms: i64, template: &str, provider: Option<&str>) -> TrackEvent {
        let notification = Uuid::from_u128(n);
        let delivery = d.map(Uuid::from_u128);
        TrackEvent {
            event_id: ids::event_id(delivery.unwrap_or(notification), "test", status, 0),
            notification_id: Some(notification),
            delivery_id: delivery,
            channel: delivery.map(|_| if template == "otp" { Channel::Sms } else { Channel::Email }),
            template: Some(template.into()),
            provider: provider.map(str::to_owned),
            ..TrackEvent::new("acme", status, "test", at(ms))
        }
    }

    /// Four e-mails (`news`) and two SMS (`otp`), figures worked out by hand below.
    fn events() -> Vec<TrackEvent> {
        use Status::*;
        vec![
            event(1, None, Accepted, 0, "news", None),
            event(1, Some(11), Sent, 100, "news", Some("smtp")),
            event(1, Some(11), Delivered, 1_000, "news", Some("sendgrid")),
            event(1, Some(11), Opened, 5_000, "news", Some("sendgrid")),
            event(1, Some(11), Opened, 6_000, "news", Some("sendgrid")),
            event(1, Some(11), Clicked, 7_000, "news", Some("sendgrid")),
            event(1, Some(12), Sent, 300, "news", Some("smtp")),
            event(1, Some(12), Bounced, 2_000, "news", Some("sendgrid")),
            event(2, None, Accepted, 10_000, "news", None),
            event(2, Some(21), Retrying, 10_050, "news", None),
            event(2, Some(21), Sent, 10_200, "news", Some("sendgrid")),
            event(2, Some(21), Delivered, 13_000, "news", Some("sendgrid")),
            event(2, Some(22), Failed, 10_100, "news", Some("smtp")),
            event(3, None, Accepted, 20_000, "otp", None),
            event(3, Some(31), Sent, 20_040, "otp", Some("twilio")),
            event(3, Some(31), Delivered, 20_500, "otp", Some("twilio")),
            event(3, Some(32), Sent, 20_060, "otp", Some("twilio")),
            event(3, Some(32), Undelivered, 21_000, "otp", Some("twilio")),
        ]
    }

    #[test]
    fn figures_match_the_hand_count() {
        let mut stats = Stats::new(vec![GroupBy::Template]);
        for e in events().iter().rev() {
            stats.add(e);
        }
        let report = stats.report();
        assert_eq!(report.events, 18);
        let news = &report.rows[0];
        assert_eq!(news.group, BTreeMap::from([("template".into(), "news".into())]));
        // 11 sent+delivered+opened+clicked, 12 sent+bounced, 21 sent+delivered, 22 failed.
        assert_eq!(
            (news.deliveries, news.sent, news.delivered, news.undelivered, news.failed, news.opened, news.clicked),
            (4, 3, 2, 1, 1, 1, 1)
        );
        assert_eq!(news.delivery_rate, Some(2.0 / 3.0));
        assert_eq!(news.failure_rate, Some(1.0 / 4.0));
        assert_eq!((news.open_rate, news.click_rate), (Some(1.0 / 3.0), Some(1.0 / 3.0)));
        // accepted → sent: 100, 300, 200 ms; nearest rank p50 = 200, p99 = 300.
        assert_eq!(news.accepted_to_sent, Some(Latency { samples: 3, p50_ms: 200.0, p99_ms: 300.0 }));
        // accepted → delivered: 1 000 and 3 000 ms.
        assert_eq!(news.accepted_to_delivered, Some(Latency { samples: 2, p50_ms: 1_000.0, p99_ms: 3_000.0 }));
        let otp = &report.rows[1];
        assert_eq!((otp.deliveries, otp.sent, otp.delivered, otp.undelivered, otp.failed), (2, 2, 1, 1, 0));
        assert_eq!(otp.accepted_to_sent, Some(Latency { samples: 2, p50_ms: 40.0, p99_ms: 60.0 }));
        assert_eq!((otp.open_rate, otp.failure_rate), (Some(0.0), Some(0.0)));
        assert_eq!((report.total.deliveries, report.total.sent, report.total.delivered), (6, 5, 3));
        assert_eq!(report.total.accepted_to_sent, Some(Latency { samples: 5, p50_ms: 100.0, p99_ms: 300.0 }));
    }

    #[test]
    fn providers_are_who_sent_it_and_groups_combine() {
        let mut stats = Stats::new(vec![GroupBy::Provider, GroupBy::Channel]);
        for e in &events() {
            stats.add(e);
        }
        let rows: Vec<(String, String, u64, u64)> =
            stats.report().rows.iter().map(|r| (r.group["provider"].clone(), r.group["channel"].clone(), r.deliveries, r.sent)).collect();
        assert_eq!(
            rows,
            [("sendgrid".into(), "email".into(), 1, 1), ("smtp".into(), "email".into(), 3, 2), ("twilio".into(), "sms".into(), 2, 2)],
            "11 and 12 were sent by smtp (SendGrid only reported on 11), 22 refused by smtp"
        );
        assert!("nothing".parse::<GroupBy>().unwrap_err().contains("template, channel, provider or category"));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantiles(&mut hundred), Some(Latency { samples: 100, p50_ms: 50.0, p99_ms: 99.0 }));
        assert_eq!(quantiles(&mut [7.0]), Some(Latency { samples: 1, p50_ms: 7.0, p99_ms: 7.0 }));
        assert_eq!(quantiles(&mut []), None);
    }
}
