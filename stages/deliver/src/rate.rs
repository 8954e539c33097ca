//! A send-rate limit shared by every replica of a route: at most `per_second` calls start in any
//! wall-clock second, counted in a KV bucket every replica reads (`rate.<route>.<second>`).
//!
//! Counting each call in the bucket would cost a round trip per call, so a process leases a
//! block of the second's budget at a time by compare-and-swap (a tenth of it, at least one) and
//! hands it out locally; a block left unused when the second ends is lost, never carried over, so
//! the limit holds however many replicas run. Replicas' clocks are assumed NTP-close: a skew
//! moves a process's seconds, not the count in each.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use herald_schemas::Route;
use herald_stage::{Created, KeyValue, PortError, Swapped};
use tokio::sync::Mutex;

/// Waits for the right to start one call.
pub trait SendRate: Send + Sync + 'static {
    fn acquire(&self) -> Pin<Box<dyn Future<Output = Result<(), PortError>> + Send + '_>>;
}

/// The shared limit.
pub struct SharedRate<K> {
    kv: K,
    route: Route,
    per_second: u64,
    block: u64,
    /// The second whose block this process holds, and what is left of it.
    local: Mutex<(i64, u64)>,
}

impl<K> std::fmt::Debug for SharedRate<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRate").field("route", &self.route).field("per_second", &self.per_second).finish()
    }
}

impl<K: KeyValue> SharedRate<K> {
    pub fn new(kv: K, route: Route, per_second: u32) -> Self {
        let per_second = u64::from(per_second.max(1));
        SharedRate { kv, route, per_second, block: (per_second / 10).max(1), local: Mutex::new((0, 0)) }
    }

    /// Leases up to a block of `second`'s budget; 0 when the second is used up.
    async fn lease(&self, second: i64) -> Result<u64, PortError> {
        let key = format!("rate.{}.{second}", self.route);
        loop {
            match self.kv.entry(&key).await? {
                None => {
                    let take = self.block.min(self.per_second);
                    match self.kv.create(&key, Bytes::from(take.to_string())).await? {
                        Created::Created(_) => return Ok(take),
                        Created::Exists(_) => continue,
                    }
                }
                Some(entry) => {
                    let taken: u64 = std::str::from_utf8(&entry.value).ok().and_then(|t| t.parse().ok()).unwrap_or(self.per_second);
                    let take = self.block.min(self.per_second.saturating_sub(taken));
                    if take == 0 {
                        return Ok(0);
                    }
                    match self.kv.swap(&key, Bytes::from((taken + take).to_string()), entry.revision).await? {
                        Swapped::Done(_) => return Ok(take),
                        Swapped::Conflict => continue,
                    }
                }
            }
        }
    }
}

impl<K: KeyValue> SendRate for SharedRate<K> {
    fn acquire(&self) -> Pin<Box<dyn Future<Output = Result<(), PortError>> + Send + '_>> {
        Box::pin(async move {
            // One caller leases at a time; the others wait for what it brings back.
            let mut local = self.local.lock().await;
            loop {
                let now = jiff::Timestamp::now();
                let second = now.as_second();
                if local.0 != second {
                    *local = (second, 0);
                }
                if local.1 > 0 {
                    local.1 -= 1;
                    return Ok(());
                }
                let leased = self.lease(second).await?;
                if leased > 0 {
                    local.1 = leased - 1;
                    return Ok(());
                }
                // The second is used up across the replicas: wait for the next one.
                let into = u64::try_from(now.subsec_nanosecond()).unwrap_or(0);
                tokio::time::sleep(Duration::from_nanos(1_000_000_000u64.saturating_sub(into).max(1_000_000))).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_stage::memory::MemoryKv;

    use super::*;

    #[tokio::test]
    async fn replicas_sharing_the_bucket_never_start_more_than_the_limit_in_a_second() {
        let kv = MemoryKv::new();
        let replicas: Vec<Arc<SharedRate<MemoryKv>>> = (0..3).map(|_| Arc::new(SharedRate::new(kv.clone(), Route::Apns, 50))).collect();
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..240 {
            let rate = replicas[i % 3].clone();
            let started = started.clone();
            tasks.push(tokio::spawn(async move {
                rate.acquire().await.unwrap();
                started.lock().unwrap().push(jiff::Timestamp::now().as_second());
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let started = started.lock().unwrap().clone();
        let mut per_second = std::collections::BTreeMap::new();
        for second in started {
            *per_second.entry(second).or_insert(0) += 1;
        }
        assert!(per_second.values().all(|n| *n <= 50), "{per_second:?}");
        assert!(per_second.len() >= 5, "240 calls at 50/s take at least five seconds: {per_second:?}");
    }
}
