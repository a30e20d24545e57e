//! The Redis store: one connection manager (multiplexed, reconnecting on
//! its own), every call one Lua script bounded by a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::{Bucket, ChargeMode, Charged, Counter, Store, StoreError, Taken, scripts};

/// The default bound on one store call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Counters and buckets in Redis, shared by every gateway instance that
/// points at the same server.
///
/// A call that gets no answer within the timeout fails with
/// [`StoreError::Timeout`]; the connection manager reconnects in the
/// background, so service resumes when Redis does, without a restart.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    manager: ConnectionManager,
    address: String,
    timeout: Duration,
    charge: Script,
    take: Script,
    round_trips: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.inner.address)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `url` (`redis://host:port/db`). No connection is made
    /// until the first call, so a gateway starts while Redis is down.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Backend(e.to_string()))?;
        Self::with_client(client, timeout)
    }

    pub(crate) fn with_client(client: Client, timeout: Duration) -> Result<Self, StoreError> {
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                manager,
                address,
                timeout,
                charge: Script::new(scripts::CHARGE),
                take: Script::new(scripts::TAKE),
                round_trips: AtomicU64::new(0),
            }),
        })
    }

    /// How many commands this store has sent (benches count round trips
    /// per request with it).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// The bound on one call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.inner.manager.clone();
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut connection))
            .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if err.is_timeout() => Err(StoreError::Timeout(self.inner.timeout)),
            Ok(Err(err)) => Err(StoreError::Backend(err.to_string())),
            Err(_) => Err(StoreError::Timeout(self.inner.timeout)),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Store for RedisStore {
    fn charge<'a>(
        &'a self,
        counters: &'a [Counter],
        amount: i64,
        mode: ChargeMode,
    ) -> BoxFuture<'a, Result<Charged, StoreError>> {
        async move {
            let mut invocation = self.inner.charge.prepare_invoke();
            for counter in counters {
                invocation.key(&counter.key);
            }
            invocation
                .arg(amount)
                .arg(if mode == ChargeMode::IfFits { 1 } else { 0 });
            for counter in counters {
                invocation.arg(counter.limit).arg(millis(counter.ttl));
            }
            let reply: Vec<i64> = self.run(invocation).await?;
            let (admitted, used) = reply
                .split_first()
                .ok_or_else(|| StoreError::Backend("empty reply from the charge script".into()))?;
            Ok(Charged {
                admitted: *admitted == 1,
                used: used
                    .iter()
                    .map(|&u| u64::try_from(u).unwrap_or(0))
                    .collect(),
            })
        }
        .boxed()
    }

    fn take<'a>(
        &'a self,
        bucket: &'a Bucket,
        cost: u64,
    ) -> BoxFuture<'a, Result<Taken, StoreError>> {
        async move {
            let mut invocation = self.inner.take.prepare_invoke();
            invocation
                .key(&bucket.key)
                .arg(format!("{:.9}", bucket.rate_per_second / 1000.0))
                .arg(bucket.capacity)
                .arg(cost)
                .arg(millis(bucket.idle_ttl()));
            let reply: (i64, i64, i64) = self.run(invocation).await?;
            Ok(Taken {
                allowed: reply.0 == 1,
                remaining: u64::try_from(reply.1).unwrap_or(0),
                retry_after: Duration::from_millis(u64::try_from(reply.2).unwrap_or(0)),
            })
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("redis {}", self.inner.address)
    }
}
