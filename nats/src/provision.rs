//! `herald provision`: make the servers match the declared topology, idempotently, and say what
//! differed.

use std::fmt;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::{self, consumer, stream};

use crate::{Error, Topology};

/// What provisioning did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Unchanged,
    /// It differed and was updated; the differences, as `field: was → now`.
    Updated(Vec<String>),
    /// It differs in ways the server cannot change in place; the differences. Fix by hand
    /// (e.g. delete and re-provision), or change the config back.
    Drift(Vec<String>),
}

/// One line of the provisioning report.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub action: Action,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Change { kind, name, action } = self;
        match action {
            Action::Created => write!(f, "created    {kind} {name}"),
            Action::Unchanged => write!(f, "unchanged  {kind} {name}"),
            Action::Updated(diffs) => write!(f, "updated    {kind} {name}: {}", diffs.join(", ")),
            Action::Drift(diffs) => write!(
                f,
                "DRIFT      {kind} {name}: {} (cannot be changed in place; delete it and provision again, or restore the config)",
                diffs.join(", ")
            ),
        }
    }
}

/// The report of one provisioning run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changes: Vec<Change>,
}

impl Report {
    /// Whether anything is left that differs from the declared topology.
    pub fn has_drift(&self) -> bool {
        self.changes.iter().any(|c| matches!(c.action, Action::Drift(_)))
    }

    /// Whether the run changed anything.
    pub fn changed(&self) -> bool {
        self.changes.iter().any(|c| matches!(c.action, Action::Created | Action::Updated(_)))
    }
}

/// Creates or updates every stream, consumer and bucket of the topology.
pub async fn provision(js: &jetstream::Context, topology: &Topology) -> Result<Report, Error> {
    let mut report = Report::default();
    for config in topology.streams() {
        let action = ensure_stream(js, config.clone()).await?;
        report.changes.push(Change { kind: "stream", name: config.name, action });
    }
    for config in topology.buckets() {
        let name = config.bucket.clone();
        let stream_name = format!("KV_{name}");
        let existing = js.get_stream(&stream_name).await.ok().map(|s| s.cached_info().config.clone());
        js.create_or_update_key_value(config).await.map_err(|e| Error::provision(format!("kv bucket {name}"), e))?;
        let action = match existing {
            None => Action::Created,
            Some(before) => {
                let after = js.get_stream(&stream_name).await.map_err(|e| Error::provision(format!("kv bucket {name}"), e))?;
                let diffs = stream_diffs(&before, &after.cached_info().config).0;
                if diffs.is_empty() { Action::Unchanged } else { Action::Updated(diffs) }
            }
        };
        report.changes.push(Change { kind: "kv", name, action });
    }
    for (stream_name, config) in topology.consumers() {
        let name = config.durable_name.clone().unwrap_or_default();
        let action = ensure_consumer(js, &stream_name, config).await?;
        report.changes.push(Change { kind: "consumer", name: format!("{stream_name}/{name}"), action });
    }
    Ok(report)
}

async fn ensure_stream(js: &jetstream::Context, desired: stream::Config) -> Result<Action, Error> {
    let what = || format!("stream {}", desired.name);
    let existing = match js.get_stream(&desired.name).await {
        Ok(stream) => stream.cached_info().config.clone(),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            js.create_stream(desired.clone()).await.map_err(|e| Error::provision(what(), e))?;
            return Ok(Action::Created);
        }
        Err(e) => return Err(Error::provision(what(), e)),
    };
    let (mutable, immutable) = stream_diffs(&existing, &desired);
    if !immutable.is_empty() {
        return Ok(Action::Drift(immutable.into_iter().chain(mutable).collect()));
    }
    if mutable.is_empty() {
        return Ok(Action::Unchanged);
    }
    js.update_stream(desired.clone()).await.map_err(|e| Error::provision(what(), e))?;
    Ok(Action::Updated(mutable))
}

/// Differences between two stream configs in the fields Herald manages: (changeable in place,
/// not changeable in place).
fn stream_diffs(now: &stream::Config, want: &stream::Config) -> (Vec<String>, Vec<String>) {
    let mut mutable = Vec::new();
    let mut immutable = Vec::new();
    diff(&mut mutable, "subjects", now.subjects.join(" "), want.subjects.join(" "));
    diff(
        &mut mutable,
        "max_age",
        humantime::format_duration(now.max_age).to_string(),
        humantime::format_duration(want.max_age).to_string(),
    );
    diff(
        &mut mutable,
        "duplicate_window",
        humantime::format_duration(now.duplicate_window).to_string(),
        humantime::format_duration(want.duplicate_window).to_string(),
    );
    diff(&mut mutable, "replicas", now.num_replicas.to_string(), want.num_replicas.to_string());
    diff(&mut mutable, "max_message_size", now.max_message_size.to_string(), want.max_message_size.to_string());
    diff(&mut mutable, "allow_msg_schedules", now.allow_message_schedules.to_string(), want.allow_message_schedules.to_string());
    diff(&mut immutable, "storage", format!("{:?}", now.storage), format!("{:?}", want.storage));
    diff(&mut immutable, "retention", format!("{:?}", now.retention), format!("{:?}", want.retention));
    (mutable, immutable)
}

pub(crate) async fn ensure_consumer(js: &jetstream::Context, stream_name: &str, desired: consumer::pull::Config) -> Result<Action, Error> {
    let name = desired.durable_name.clone().unwrap_or_default();
    let what = || format!("consumer {stream_name}/{name}");
    let stream = js.get_stream(stream_name).await.map_err(|e| Error::provision(what(), e))?;
    let existing = match stream.consumer_info(&name).await {
        Ok(info) => info.config.clone(),
        Err(e)
            if matches!(e.kind(), ConsumerInfoErrorKind::NotFound)
                || matches!(e.kind(), ConsumerInfoErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            stream.create_consumer(desired).await.map_err(|e| Error::provision(what(), e))?;
            return Ok(Action::Created);
        }
        Err(e) => return Err(Error::provision(what(), e)),
    };
    let mut diffs = Vec::new();
    let mut immutable = Vec::new();
    diff(
        &mut diffs,
        "ack_wait",
        humantime::format_duration(existing.ack_wait).to_string(),
        humantime::format_duration(desired.ack_wait).to_string(),
    );
    diff(&mut diffs, "max_deliver", existing.max_deliver.to_string(), desired.max_deliver.to_string());
    diff(&mut diffs, "max_ack_pending", existing.max_ack_pending.to_string(), desired.max_ack_pending.to_string());
    diff(&mut diffs, "filter_subject", existing.filter_subject.clone(), desired.filter_subject.clone());
    diff(&mut diffs, "filter_subjects", existing.filter_subjects.join(" "), desired.filter_subjects.join(" "));
    diff(&mut immutable, "deliver_policy", format!("{:?}", existing.deliver_policy), format!("{:?}", desired.deliver_policy));
    diff(&mut immutable, "ack_policy", format!("{:?}", existing.ack_policy), format!("{:?}", desired.ack_policy));
    if !immutable.is_empty() {
        return Ok(Action::Drift(immutable.into_iter().chain(diffs).collect()));
    }
    if diffs.is_empty() {
        return Ok(Action::Unchanged);
    }
    stream.update_consumer(desired).await.map_err(|e| Error::provision(what(), e))?;
    Ok(Action::Updated(diffs))
}

/// Records `field: was → now` in `list` when the two differ.
fn diff(list: &mut Vec<String>, field: &str, was: String, now: String) {
    if was != now {
        list.push(format!("{field}: {was} → {now}"));
    }
}
