//! The raw JetStream limit the benchmark compares Herald with: messages chained through `hops`
//! streams, each hop a durable pull consumer that publishes the message to the next stream with
//! a `Nats-Msg-Id`, waits for the publish ack and only then acks, exactly as a stage does, but
//! with no work in between.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Error;

/// What the raw chain measured.
#[derive(Debug, Clone)]
pub struct ChainResult {
    /// From the first publish to the last message out of the last hop.
    pub elapsed: Duration,
    /// Per message, from its publish to its arrival after the last hop.
    pub latencies: Vec<Duration>,
}

/// Runs `count` messages of `size` bytes through `hops` hops on the server at `url`, with at
/// most `in_flight` messages per hop being worked on at once and at most `window` messages
/// between the first and the last hop (1: one message at a time, for the latency floor).
pub async fn raw_chain(url: &str, hops: usize, count: usize, size: usize, in_flight: usize, window: usize) -> Result<ChainResult, Error> {
    let client = async_nats::connect(url).await.map_err(|e| Error::Connect { url: url.to_owned(), detail: e.to_string() })?;
    let js = jetstream::ContextBuilder::new().max_ack_inflight(16_384).backpressure_on_inflight(true).build(client.clone());
    let err = |what: &str, e: &dyn std::fmt::Display| Error::jetstream(what, e);
    for i in 0..=hops {
        js.create_stream(stream::Config {
            name: format!("RAWBENCH_{i}"),
            subjects: vec![format!("rawbench.{i}")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| err("raw bench stream", &e))?;
    }
    let mut workers = JoinSet::new();
    for i in 0..hops {
        let stream = js.get_stream(format!("RAWBENCH_{i}")).await.map_err(|e| err("raw bench stream", &e))?;
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(format!("hop{i}")),
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await
            .map_err(|e| err("raw bench consumer", &e))?;
        let js = js.clone();
        workers.spawn(async move {
            let Ok(messages) = consumer.stream().max_messages_per_batch(256).messages().await else { return };
            messages
                .for_each_concurrent(in_flight, |message| {
                    let js = js.clone();
                    async move {
                        let Ok(message) = message else { return };
                        let publish = PublishMessage::build()
                            .payload(message.payload.clone())
                            .message_id(format!("{}:{i}", message.info().map(|info| info.stream_sequence).unwrap_or_default()));
                        if let Ok(ack) = js.send_publish(format!("rawbench.{}", i + 1), publish).await
                            && ack.await.is_ok()
                        {
                            let _ = message.ack_with(AckKind::Ack).await;
                        }
                    }
                })
                .await;
        });
    }
    let last = js.get_stream(format!("RAWBENCH_{hops}")).await.map_err(|e| err("raw bench stream", &e))?;
    let collector: consumer::PullConsumer = last
        .create_consumer(consumer::pull::Config {
            durable_name: Some("collector".into()),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| err("raw bench consumer", &e))?;
    let start = Instant::now();
    let window = Arc::new(Semaphore::new(window.max(1)));
    let collect = tokio::spawn({
        let window = window.clone();
        async move {
            let mut latencies = Vec::with_capacity(count);
            let Ok(mut messages) = collector.stream().max_messages_per_batch(512).messages().await else { return latencies };
            while latencies.len() < count {
                match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
                    Ok(Some(Ok(message))) => {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(&message.payload[..8]);
                        let sent = Duration::from_nanos(u64::from_be_bytes(stamp));
                        latencies.push(start.elapsed().saturating_sub(sent));
                        window.add_permits(1);
                    }
                    _ => break,
                }
            }
            latencies
        }
    });
    let mut acks = futures::stream::FuturesUnordered::new();
    for _ in 0..count {
        window.acquire().await.map_err(|e| err("raw bench window", &e))?.forget();
        let mut body = BytesMut::with_capacity(size.max(8));
        body.put_u64(start.elapsed().as_nanos() as u64);
        body.resize(size.max(8), b'x');
        let ack = js
            .send_publish("rawbench.0", PublishMessage::build().payload(Bytes::from(body)))
            .await
            .map_err(|e| err("raw bench publish", &e))?;
        acks.push(ack.into_future());
        while acks.len() >= 4096 {
            acks.next().await;
        }
    }
    while acks.next().await.is_some() {}
    let latencies = collect.await.map_err(|e| err("raw bench collector", &e))?;
    let elapsed = start.elapsed();
    workers.abort_all();
    for i in 0..=hops {
        let _ = js.delete_stream(format!("RAWBENCH_{i}")).await;
    }
    if latencies.len() < count {
        return Err(err("raw bench", &format!("only {} of {count} messages came through", latencies.len())));
    }
    Ok(ChainResult { elapsed, latencies })
}

/// Publishes every `(subject, payload)` of `messages` on the server at `url` with up to `window`
/// publish acks outstanding (the benchmark's generated tracking events); `progress` is called
/// after each publish.
pub async fn publish_all(
    url: &str,
    messages: impl Iterator<Item = (String, Vec<u8>)>,
    window: usize,
    mut progress: impl FnMut(),
) -> Result<(), Error> {
    let client = async_nats::connect(url).await.map_err(|e| Error::jetstream(url, e))?;
    let js = jetstream::new(client);
    let mut acks = std::collections::VecDeque::new();
    for (subject, payload) in messages {
        let ack = js.publish(subject.clone(), payload.into()).await.map_err(|e| Error::jetstream(&subject, e))?;
        acks.push_back((subject, ack));
        if acks.len() >= window.max(1)
            && let Some((subject, ack)) = acks.pop_front()
        {
            ack.await.map_err(|e| Error::jetstream(&subject, e))?;
        }
        progress();
    }
    for (subject, ack) in acks {
        ack.await.map_err(|e| Error::jetstream(&subject, e))?;
    }
    Ok(())
}
