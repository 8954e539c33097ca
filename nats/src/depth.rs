//! Queue depth: what each consumer has left and how long its oldest unfinished message has
//! waited (the figure the requirements single out), and [`DepthWatch`], which turns a queue
//! that keeps growing, and new dead letters, into operators' alerts.

use std::collections::HashMap;
use std::time::Duration;

use herald_schemas::{AlertKind, Priority, Route};
use serde::{Deserialize, Serialize};

use crate::{Error, Nats};

/// One consumer's backlog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Depth {
    pub stream: String,
    pub consumer: String,
    pub stage: String,
    pub route: Option<Route>,
    pub lane: Priority,
    /// Messages stored and not yet handed to a reader.
    pub pending: u64,
    /// Messages handed out and not yet acknowledged.
    pub ack_pending: u64,
    pub redelivered: u64,
    /// How long ago the oldest message not yet acknowledged was stored; `None` when there is
    /// none.
    #[serde(with = "humantime_serde")]
    pub oldest: Option<Duration>,
}

impl Depth {
    /// Everything not yet finished: pending and unacknowledged.
    pub fn backlog(&self) -> u64 {
        self.pending + self.ack_pending
    }
}

impl Nats {
    /// Every consumer's backlog, and the age of its oldest unfinished message (one message
    /// lookup per consumer with a backlog, past its ack floor on its own subjects).
    pub async fn queue_depths(&self) -> Result<Vec<Depth>, Error> {
        let mut depths = Vec::new();
        let mut streams = HashMap::new();
        let now = time::OffsetDateTime::now_utc();
        for spec in self.topology.consumer_specs() {
            if !streams.contains_key(&spec.stream) {
                let stream = self
                    .js
                    .get_stream(&spec.stream)
                    .await
                    .map_err(|e| Error::NotProvisioned { what: format!("stream {}", spec.stream), detail: e.to_string() })?;
                streams.insert(spec.stream.clone(), stream);
            }
            let stream = &streams[&spec.stream];
            let info = stream.consumer_info(spec.durable()).await.map_err(|e| Error::NotProvisioned {
                what: format!("consumer {}/{}", spec.stream, spec.durable()),
                detail: e.to_string(),
            })?;
            let mut oldest = None;
            if info.num_pending + info.num_ack_pending as u64 > 0 {
                let next = info.ack_floor.stream_sequence + 1;
                for filter in spec.filters() {
                    // A filter with nothing past the floor answers "no message found".
                    if let Ok(message) = stream.raw_message_builder().sequence(next).next_by_subject(filter).send().await {
                        let age = (now - message.time).try_into().unwrap_or(Duration::ZERO);
                        oldest = Some(oldest.map_or(age, |o: Duration| o.max(age)));
                    }
                }
            }
            depths.push(Depth {
                stream: spec.stream.clone(),
                consumer: spec.durable().to_owned(),
                stage: spec.stage.clone(),
                route: spec.route,
                lane: spec.lane,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
                oldest,
            });
        }
        Ok(depths)
    }
}

/// When a queue counts as growing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Samples in a row a consumer's backlog must grow for before `queue_depth_growing` is
    /// raised.
    pub growing_samples: u32,
    /// The backlog below which a queue never counts as growing, and under which a growing one
    /// counts as recovered (`queue_depth_recovered`).
    pub min_backlog: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { growing_samples: 3, min_backlog: 100 }
    }
}

#[derive(Debug, Default)]
struct Watched {
    last: u64,
    rising: u32,
    alerting: bool,
}

/// An alert the watch raises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub kind: AlertKind,
    /// The consumer concerned (none for dead letters).
    pub consumer: Option<String>,
    pub detail: String,
}

/// Folds successive samples into alerts: a consumer's backlog growing `growing_samples` times
/// in a row to at least `min_backlog` raises `queue_depth_growing` once; falling under
/// `min_backlog` again raises `queue_depth_recovered`. More dead letters than at the last
/// sample raise `dead_letters`. The first sample only sets the baseline.
#[derive(Debug, Default)]
pub struct DepthWatch {
    config: WatchConfig,
    consumers: HashMap<String, Watched>,
    dead_letters: Option<u64>,
}

impl DepthWatch {
    pub fn new(config: WatchConfig) -> Self {
        DepthWatch { config, consumers: HashMap::new(), dead_letters: None }
    }

    pub fn observe(&mut self, depths: &[Depth], dead_letters: u64) -> Vec<Raised> {
        let mut raised = Vec::new();
        for depth in depths {
            let backlog = depth.backlog();
            let seen = self.consumers.contains_key(&depth.consumer);
            let w = self.consumers.entry(depth.consumer.clone()).or_default();
            if seen {
                if backlog > w.last {
                    w.rising += 1;
                } else if backlog < w.last {
                    w.rising = 0;
                }
            }
            w.last = backlog;
            if !w.alerting && w.rising >= self.config.growing_samples && backlog >= self.config.min_backlog {
                w.alerting = true;
                let oldest =
                    depth.oldest.map(|o| format!(", the oldest waiting {}", humantime::format_duration(round(o)))).unwrap_or_default();
                raised.push(Raised {
                    kind: AlertKind::QueueDepthGrowing,
                    consumer: Some(depth.consumer.clone()),
                    detail: format!(
                        "consumer {} ({}) has grown {} samples in a row to {backlog} messages{oldest}: is its stage running and keeping up?",
                        depth.consumer, depth.stream, w.rising
                    ),
                });
            } else if w.alerting && backlog < self.config.min_backlog {
                w.alerting = false;
                raised.push(Raised {
                    kind: AlertKind::QueueDepthRecovered,
                    consumer: Some(depth.consumer.clone()),
                    detail: format!("consumer {} ({}) is down to {backlog} messages", depth.consumer, depth.stream),
                });
            }
        }
        if let Some(before) = self.dead_letters
            && dead_letters > before
        {
            raised.push(Raised {
                kind: AlertKind::DeadLetters,
                consumer: None,
                detail: format!(
                    "{} new dead letters ({dead_letters} in all): each has its `dead_lettered` event on the tracking stream with the reason",
                    dead_letters - before
                ),
            });
        }
        self.dead_letters = Some(dead_letters);
        raised
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(consumer: &str, pending: u64) -> Depth {
        Depth {
            stream: "HERALD_DELIVER".into(),
            consumer: consumer.into(),
            stage: "deliver".into(),
            route: Some(Route::Sms),
            lane: Priority::Normal,
            pending,
            ack_pending: 0,
            redelivered: 0,
            oldest: Some(Duration::from_secs(42)),
        }
    }

    #[test]
    fn a_queue_growing_three_samples_in_a_row_raises_once_and_recovers_under_the_floor() {
        let mut watch = DepthWatch::new(WatchConfig { growing_samples: 3, min_backlog: 100 });
        let kinds = |r: Vec<Raised>| r.into_iter().map(|r| r.kind).collect::<Vec<_>>();
        assert!(watch.observe(&[depth("deliver-sms", 50)], 0).is_empty(), "the baseline");
        assert!(watch.observe(&[depth("deliver-sms", 80)], 0).is_empty());
        assert!(watch.observe(&[depth("deliver-sms", 120)], 0).is_empty(), "two rises");
        let raised = watch.observe(&[depth("deliver-sms", 150)], 0);
        assert_eq!(kinds(raised.clone()), [AlertKind::QueueDepthGrowing]);
        assert!(raised[0].detail.contains("deliver-sms") && raised[0].detail.contains("150 messages") && raised[0].detail.contains("42s"));
        assert!(watch.observe(&[depth("deliver-sms", 400)], 0).is_empty(), "raised once while it lasts");
        assert!(watch.observe(&[depth("deliver-sms", 399)], 0).is_empty(), "still above the floor");
        assert_eq!(kinds(watch.observe(&[depth("deliver-sms", 20)], 0)), [AlertKind::QueueDepthRecovered]);
        assert!(watch.observe(&[depth("deliver-sms", 0)], 0).is_empty());
    }

    #[test]
    fn a_dip_starts_the_count_again_and_small_queues_never_alert() {
        let mut watch = DepthWatch::new(WatchConfig { growing_samples: 2, min_backlog: 100 });
        for pending in [10, 200, 200] {
            assert!(watch.observe(&[depth("a", pending)], 0).is_empty());
        }
        assert_eq!(watch.observe(&[depth("a", 300)], 0).len(), 1, "a flat sample neither counts nor starts the count over");
        let mut small = DepthWatch::new(WatchConfig { growing_samples: 2, min_backlog: 100 });
        for pending in [1, 2, 3, 4, 5, 6] {
            assert!(small.observe(&[depth("a", pending)], 0).is_empty());
        }
        let mut dipping = DepthWatch::new(WatchConfig { growing_samples: 2, min_backlog: 100 });
        for pending in [100, 200, 150, 300] {
            assert!(dipping.observe(&[depth("a", pending)], 0).is_empty(), "the dip to 150 starts the count over");
        }
        assert_eq!(dipping.observe(&[depth("a", 301)], 0).len(), 1);
    }

    #[test]
    fn new_dead_letters_raise_an_alert_the_first_sample_does_not() {
        let mut watch = DepthWatch::new(WatchConfig::default());
        assert!(watch.observe(&[], 7).is_empty(), "dead letters from before are the baseline");
        assert!(watch.observe(&[], 7).is_empty());
        let raised = watch.observe(&[], 10);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].kind, AlertKind::DeadLetters);
        assert!(raised[0].detail.starts_with("3 new dead letters (10 in all)"), "{}", raised[0].detail);
    }
}
