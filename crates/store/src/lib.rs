#![doc = include_str!("../README.md")]

pub mod caller;
mod config;
mod memory;
mod redis_store;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use config::{RedisConfig, RedisPoolConfig, Stores};
pub use memory::MemoryStore;
pub use redis_store::{DEFAULT_TIMEOUT, RedisStore};
#[cfg(feature = "testing")]
pub mod testing;

/// One fixed-window counter a charge touches: its key, the most it may hold
/// and how long it lives after its first charge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counter {
    /// The key, unique per quota, rule, caller and window.
    pub key: String,
    /// The most the counter may reach when charging [`ChargeMode::IfFits`].
    pub limit: u64,
    /// How long the counter lives (the rest of its window, plus slack).
    pub ttl: Duration,
}

impl Counter {
    /// A counter.
    pub fn new(key: impl Into<String>, limit: u64, ttl: Duration) -> Self {
        Self {
            key: key.into(),
            limit,
            ttl,
        }
    }
}

/// How a charge treats the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChargeMode {
    /// Add to every counter only if every counter stays within its limit;
    /// otherwise change nothing.
    IfFits,
    /// Add (or, negative, subtract) whatever the limits; counters never go
    /// below zero.
    Always,
}

/// What a charge did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Charged {
    /// Whether the amount was added.
    pub admitted: bool,
    /// Each counter's value afterwards (or as it stands, when refused), in
    /// the order of the request.
    pub used: Vec<u64>,
}

/// One take from a token bucket.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Bucket {
    /// The bucket's key.
    pub key: String,
    /// Tokens added per second.
    pub rate_per_second: f64,
    /// The most tokens the bucket holds; it starts full.
    pub capacity: u64,
}

impl Bucket {
    /// A bucket.
    pub fn new(key: impl Into<String>, rate_per_second: f64, capacity: u64) -> Self {
        Self {
            key: key.into(),
            rate_per_second,
            capacity,
        }
    }

    /// How long an idle bucket takes to fill up again: after that its state
    /// is the same as a new one, so the store may forget it.
    pub fn idle_ttl(&self) -> Duration {
        let seconds = if self.rate_per_second > 0.0 {
            (self.capacity as f64 / self.rate_per_second).ceil() + 1.0
        } else {
            3600.0
        };
        Duration::from_secs_f64(seconds.clamp(1.0, 366.0 * 86_400.0))
    }
}

/// What a take did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Taken {
    /// Whether the tokens were taken.
    pub allowed: bool,
    /// Whole tokens left afterwards.
    pub remaining: u64,
    /// When refused, how long until enough tokens are back.
    pub retry_after: Duration,
}

/// A store failure: the backend is unreachable, slow or answered nonsense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within the timeout.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered with an error or could not be reached.
    #[error("the store failed: {0}")]
    Backend(String),
}

/// Shared state for quotas and rate limits. Every operation is atomic: two
/// gateway instances charging the same counter never both pass a limit that
/// only one of them fits in.
pub trait Store: Send + Sync + 'static {
    /// Adds `amount` to every counter in `counters` (see [`ChargeMode`]).
    fn charge<'a>(
        &'a self,
        counters: &'a [Counter],
        amount: i64,
        mode: ChargeMode,
    ) -> BoxFuture<'a, Result<Charged, StoreError>>;

    /// Takes `cost` tokens from a bucket if it holds that many.
    fn take<'a>(
        &'a self,
        bucket: &'a Bucket,
        cost: u64,
    ) -> BoxFuture<'a, Result<Taken, StoreError>>;

    /// What the store is, for logs (`memory`, `redis 127.0.0.1:6379`); never
    /// a password.
    fn describe(&self) -> String;
}

/// A shared handle on a store.
#[derive(Clone)]
pub struct SharedStore(Arc<dyn Store>);

impl SharedStore {
    /// Wraps a store.
    pub fn new(store: impl Store) -> Self {
        Self(Arc::new(store))
    }

    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Self::new(MemoryStore::new())
    }
}

impl std::ops::Deref for SharedStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedStore")
            .field(&self.0.describe())
            .finish()
    }
}
