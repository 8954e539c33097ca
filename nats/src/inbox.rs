//! Users' in-app inboxes: one subject per tenant and user in `<PREFIX>_INBOX`, kept
//! `topology.inbox_retention`. Deliver publishes (with the delivery id as `Nats-Msg-Id`, so a
//! retried publish is stored once); the inbox API pages through a user's history by direct gets,
//! counts it by subject, and follows it live with an ordered consumer.

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{Error, Nats, topology};

/// One stored inbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Its stream sequence: the cursor, and the id the API marks it read by.
    pub seq: u64,
    pub payload: Bytes,
}

impl Nats {
    async fn inbox_stream(&self) -> Result<stream::Stream, Error> {
        let name = self.topology.stream_name(topology::role::INBOX);
        self.js.get_stream(&name).await.map_err(|e| Error::NotProvisioned { what: format!("stream {name}"), detail: e.to_string() })
    }

    /// Stores a message in the user's inbox; returns its sequence. `msg_id` dedupes a retry.
    pub async fn publish_inbox(&self, tenant: &str, user: &str, msg_id: &str, payload: Bytes) -> Result<u64, Error> {
        let subject = self.topology.inbox_subject(tenant, user);
        let publish = jetstream::message::PublishMessage::build().payload(payload).message_id(msg_id);
        let ack = self.js.send_publish(subject.clone(), publish).await.map_err(|e| Error::jetstream(&subject, e))?;
        Ok(ack.await.map_err(|e| Error::jetstream(&subject, e))?.sequence)
    }

    /// Up to `limit` of the user's messages after sequence `after`, oldest first.
    pub async fn inbox_page(&self, tenant: &str, user: &str, after: u64, limit: usize) -> Result<Vec<InboxEntry>, Error> {
        let stream = self.inbox_stream().await?;
        let subject = self.topology.inbox_subject(tenant, user);
        let mut entries = Vec::new();
        let mut next = after + 1;
        while entries.len() < limit {
            match stream.direct_get_next_for_subject(subject.clone(), Some(next)).await {
                Ok(message) => {
                    next = message.sequence + 1;
                    entries.push(InboxEntry { seq: message.sequence, payload: message.payload });
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(Error::jetstream(format!("inbox {subject}"), e)),
            }
        }
        Ok(entries)
    }

    /// The message at `seq` if it is in this user's inbox.
    pub async fn inbox_entry(&self, tenant: &str, user: &str, seq: u64) -> Result<Option<InboxEntry>, Error> {
        let stream = self.inbox_stream().await?;
        let subject = self.topology.inbox_subject(tenant, user);
        match stream.direct_get(seq).await {
            Ok(message) if message.subject.as_str() == subject => Ok(Some(InboxEntry { seq, payload: message.payload })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::jetstream(format!("inbox message {seq}"), e)),
        }
    }

    /// How many messages the user's inbox holds, and the stream's oldest sequence (states of
    /// older messages are of messages gone).
    pub async fn inbox_count(&self, tenant: &str, user: &str) -> Result<(u64, u64), Error> {
        let stream = self.inbox_stream().await?;
        let subject = self.topology.inbox_subject(tenant, user);
        let mut subjects = stream.info_with_subjects(&subject).await.map_err(|e| Error::jetstream(format!("inbox {subject}"), e))?;
        let first = subjects.info.state.first_sequence;
        let mut total = 0;
        while let Some(entry) = subjects.next().await {
            let (name, count) = entry.map_err(|e| Error::jetstream(format!("inbox {subject}"), e))?;
            if name == subject {
                total += count as u64;
            }
        }
        Ok((total, first))
    }

    /// The user's new messages as they are stored.
    pub async fn inbox_feed(&self, tenant: &str, user: &str) -> Result<impl Stream<Item = Result<InboxEntry, Error>> + use<>, Error> {
        let stream = self.inbox_stream().await?;
        let subject = self.topology.inbox_subject(tenant, user);
        let config = consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        };
        let what = format!("inbox feed {subject}");
        let consumer = stream.create_consumer(config).await.map_err(|e| Error::jetstream(&what, e))?;
        let messages = consumer.messages().await.map_err(|e| Error::jetstream(&what, e))?;
        Ok(messages.map(move |message| {
            let message = message.map_err(|e| Error::jetstream(&what, e))?;
            let seq = message.info().map_err(|e| Error::jetstream(&what, e))?.stream_sequence;
            Ok(InboxEntry { seq, payload: message.payload.clone() })
        }))
    }
}
