//! The `log` sandbox provider: records each delivery as a file, `<dir>/<delivery_id>.json`.
//!
//! It needs no credentials, so a new deployment sees the whole flow work on one machine. Like a
//! provider that honours idempotency keys, it treats the delivery id as one: the record is
//! created with `create_new`, so a second send of the same delivery (from any process) finds
//! the file and is absorbed (reported as a duplicate, noted in `duplicates.jsonl`) instead of
//! recorded twice. With `record_calls` it also appends every call it receives to `calls.jsonl`,
//! repeated ones included — what a provider's own request log would show, and what the tests
//! count. I/O errors are retryable: a full or missing disk is an outage, not a property of the
//! delivery.

mod config;
#[cfg(test)]
mod tests;

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use herald_schemas::Delivery;
use serde::Serialize;

pub use config::LogConfig;

use crate::providers::{BuildError, Provider, ProviderError, Receipt, SendFuture};

/// Where the sink notes each second send of a delivery it absorbed.
pub const DUPLICATES_FILE: &str = "duplicates.jsonl";

/// Where the sink appends every call it receives, when `record_calls` is on.
pub const CALLS_FILE: &str = "calls.jsonl";

/// The file sink.
#[derive(Debug, Clone)]
pub struct LogSink {
    dir: PathBuf,
    /// `calls.jsonl`, opened for appending, when calls are recorded.
    calls: Option<Arc<Mutex<std::fs::File>>>,
}

/// What one record file holds.
#[derive(Serialize)]
struct Record<'a> {
    delivery_id: String,
    notification_id: String,
    tenant: &'a str,
    user_id: Option<&'a str>,
    address: &'a str,
    template: &'a str,
    template_version: Option<u32>,
    /// The template locale the parts came from.
    locale: Option<&'a str>,
    parts: Option<&'a std::collections::BTreeMap<String, String>>,
    delivered_at: jiff::Timestamp,
    /// The process that sent it, as a provider's request log shows the caller.
    sender_pid: u32,
}

/// One line of `calls.jsonl`.
#[derive(Serialize)]
struct Call<'a> {
    delivery_id: String,
    user_id: Option<&'a str>,
    address: &'a str,
    at: jiff::Timestamp,
    sender_pid: u32,
}

impl LogSink {
    /// A sink that records into `dir` (created when missing) without a call log.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogSink { dir: dir.into(), calls: None }
    }

    pub fn from_config(config: &LogConfig) -> Result<Self, BuildError> {
        let error = |detail: String| BuildError { provider: "log", detail };
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| error(format!("cannot create its directory {} ({e}); set deliver.log.dir", config.dir.display())))?;
        let mut sink = LogSink::new(&config.dir);
        if config.record_calls {
            let path = config.dir.join(CALLS_FILE);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| error(format!("cannot open {} ({e})", path.display())))?;
            sink.calls = Some(Arc::new(Mutex::new(file)));
        }
        Ok(sink)
    }

    fn io_error(&self, error: std::io::Error) -> ProviderError {
        ProviderError::outage("io_error", format!("cannot write to {}: {error}", self.dir.display()))
    }

    /// Appends one line to `calls.jsonl`. One `write` of an `O_APPEND` file: lines from
    /// several processes never interleave.
    fn record_call(&self, delivery: &Delivery) -> Result<(), ProviderError> {
        let Some(calls) = &self.calls else { return Ok(()) };
        let call = Call {
            delivery_id: delivery.delivery_id.to_string(),
            user_id: delivery.user_id.as_deref(),
            address: &delivery.address,
            at: jiff::Timestamp::now(),
            sender_pid: std::process::id(),
        };
        let mut line = serde_json::to_vec(&call).map_err(|e| self.io_error(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut file = calls.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line).map_err(|e| self.io_error(e))
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
        let id = delivery.delivery_id.to_string();
        let path = self.dir.join(format!("{id}.json"));
        let record = Record {
            delivery_id: id.clone(),
            notification_id: delivery.notification_id.to_string(),
            tenant: &delivery.tenant,
            user_id: delivery.user_id.as_deref(),
            address: &delivery.address,
            template: &delivery.template,
            template_version: delivery.content.as_ref().and_then(|c| c.template_version),
            locale: delivery.content.as_ref().and_then(|c| c.locale.as_deref()),
            parts: delivery.content.as_ref().map(|c| &c.parts),
            delivered_at: jiff::Timestamp::now(),
            sender_pid: std::process::id(),
        };
        let mut body = serde_json::to_vec(&record).map_err(|e| ProviderError::permanent("encode_failed", e.to_string()))?;
        body.push(b'\n');
        let sink = self.clone();
        let delivery = delivery.clone();
        // `create_new` makes the file system the idempotency check: one directory operation,
        // and a second send of the same delivery (from any process) finds the file. No fsync:
        // the record must survive our process dying (the page cache does), not the machine. A
        // process killed between creating and writing leaves a torn record; the retry finds it
        // and completes it instead of calling it a duplicate.
        let duplicate = tokio::task::spawn_blocking(move || -> Result<bool, ProviderError> {
            sink.record_call(&delivery)?;
            let written = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => file.write_all(&body).map(|()| false),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => match std::fs::read(&path) {
                    Ok(existing) if existing.ends_with(b"\n") => Ok(true),
                    Ok(_) => std::fs::write(&path, &body).map(|()| false),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let duplicate = written.map_err(|e| sink.io_error(e))?;
            if duplicate {
                sink.note_duplicate(&body);
            }
            Ok(duplicate)
        })
        .await
        .map_err(|e| self.io_error(std::io::Error::other(e)))??;
        Ok(Receipt { provider_message_id: format!("log-{id}"), duplicate })
    }

    /// Appends an absorbed second send to `duplicates.jsonl`, so how often the idempotency key
    /// had to do its job stays visible.
    fn note_duplicate(&self, record: &[u8]) {
        let path = self.dir.join(DUPLICATES_FILE);
        let written = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| f.write_all(record));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "Could not note a duplicate send.");
        }
    }
}

impl Provider for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn send<'a>(&'a self, delivery: &'a Delivery) -> SendFuture<'a> {
        Box::pin(self.deliver(delivery))
    }
}
