//! The `log` sandbox provider: records each delivery as a file, `<dir>/<delivery_id>.json`.
//!
//! It needs no credentials, so a new deployment sees the whole flow work on one machine. Like a
//! provider that honours idempotency keys, it treats the delivery id as one: the file is created
//! with `create_new`, so a second send of the same delivery (from any process) finds the file
//! and reports a duplicate instead of recording twice (and notes it in `duplicates.jsonl`). I/O errors are retryable: a full or
//! missing disk is an outage, not a property of the delivery.

use std::io::ErrorKind;
use std::path::PathBuf;

use herald_schemas::Delivery;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::{Provider, ProviderError, Receipt};

/// Where the sink notes each second send of a delivery it absorbed.
pub const DUPLICATES_FILE: &str = "duplicates.jsonl";

/// The file sink.
#[derive(Debug, Clone)]
pub struct LogSink {
    dir: PathBuf,
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

impl LogSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogSink { dir: dir.into() }
    }

    fn io_error(&self, error: std::io::Error) -> ProviderError {
        ProviderError {
            retryable: true,
            code: "io_error".into(),
            detail: format!("cannot write to {}: {error}", self.dir.display()),
            retry_after: None,
        }
    }
}

impl LogSink {
    /// Appends the absorbed second send to `duplicates.jsonl`, so how often the idempotency key
    /// had to do its job stays visible.
    async fn note_duplicate(&self, record: &[u8]) {
        let path = self.dir.join(DUPLICATES_FILE);
        let written = async {
            let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
            file.write_all(record).await
        };
        if let Err(error) = written.await {
            tracing::warn!(%error, path = %path.display(), "Could not note a duplicate send.");
        }
    }
}

impl Provider for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    async fn send(&self, delivery: &Delivery) -> Result<Receipt, ProviderError> {
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
        let mut body = serde_json::to_vec(&record).map_err(|e| ProviderError {
            retryable: false,
            code: "encode_failed".into(),
            detail: e.to_string(),
            retry_after: None,
        })?;
        body.push(b'\n');
        // `create_new` makes the file system the idempotency check: one directory operation,
        // and a second send of the same delivery (from any process) finds the file. No fsync:
        // the record must survive our process dying (the page cache does), not the machine. A
        // process killed between creating and writing leaves a torn record; the retry finds it
        // and completes it instead of calling it a duplicate.
        let write = {
            let body = body.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
                use std::io::Write;
                match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(mut file) => file.write_all(&body).map(|()| false),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        let existing = std::fs::read(&path)?;
                        if existing.ends_with(b"\n") {
                            return Ok(true);
                        }
                        std::fs::write(&path, &body).map(|()| false)
                    }
                    Err(e) => Err(e),
                }
            })
        };
        let duplicate = write.await.map_err(|e| self.io_error(std::io::Error::other(e)))?.map_err(|e| self.io_error(e))?;
        if duplicate {
            self.note_duplicate(&body).await;
        }
        Ok(Receipt { provider_message_id: format!("log-{id}"), duplicate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        herald_stage::memory::delivery(7)
    }

    #[tokio::test]
    async fn records_once_per_delivery_id() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path());
        assert!(!sink.send(&delivery()).await.unwrap().duplicate);
        assert!(sink.send(&delivery()).await.unwrap().duplicate);
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(
            files,
            vec![format!("{}.json", uuid::Uuid::from_u128(7)), DUPLICATES_FILE.to_owned()],
            "one record, the duplicate noted, no temporaries left"
        );
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("{}.json", uuid::Uuid::from_u128(7)))).unwrap()).unwrap();
        assert_eq!(record["user_id"], "alice");
    }

    #[tokio::test]
    async fn a_torn_record_is_completed_not_counted_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{}.json", uuid::Uuid::from_u128(7)));
        std::fs::write(&path, b"{\"delivery_id\":").unwrap();
        let receipt = LogSink::new(dir.path()).send(&delivery()).await.unwrap();
        assert!(!receipt.duplicate);
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record["template"], "t");
    }

    #[tokio::test]
    async fn an_unwritable_sink_is_a_retryable_outage() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").unwrap();
        let error = LogSink::new(&not_a_dir).send(&delivery()).await.unwrap_err();
        assert!(error.retryable);
        assert_eq!(error.code, "io_error");
    }
}
