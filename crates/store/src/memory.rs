//! The in-memory store: sharded maps behind short mutexes, entries that
//! expire, and a sweep of expired entries every so many writes.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, ready};

use crate::{Bucket, ChargeMode, Charged, Counter, Store, StoreError, Taken};

const SHARDS: usize = 64;
const SWEEP_EVERY: u32 = 4096;

enum Entry {
    Counter {
        value: u64,
        expires: Instant,
    },
    Bucket {
        tokens: f64,
        at: Instant,
        expires: Instant,
    },
}

impl Entry {
    fn expires(&self) -> Instant {
        match self {
            Entry::Counter { expires, .. } | Entry::Bucket { expires, .. } => *expires,
        }
    }
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    writes: u32,
}

impl Shard {
    fn wrote(&mut self, now: Instant) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.entries.retain(|_, e| e.expires() > now);
        }
    }

    fn counter(&self, key: &str, now: Instant) -> u64 {
        match self.entries.get(key) {
            Some(Entry::Counter { value, expires }) if *expires > now => *value,
            _ => 0,
        }
    }
}

/// Counters and buckets in this process's memory: exact and fast, for one
/// gateway instance.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn index(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        self.lock(self.index(key))
    }

    fn lock(&self, index: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The charge, synchronously (the trait wraps it in a ready future).
    pub fn charge_now(&self, counters: &[Counter], amount: i64, mode: ChargeMode) -> Charged {
        let now = Instant::now();
        // Every shard involved stays locked from the read to the write, taken
        // in ascending order so that two charges cannot deadlock.
        let indexes: Vec<usize> = counters.iter().map(|c| self.index(&c.key)).collect();
        let mut order = indexes.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.lock(i))).collect();
        let position = |index: usize| order.binary_search(&index).unwrap_or(0);
        let current: Vec<u64> = counters
            .iter()
            .zip(&indexes)
            .map(|(c, &i)| guards[position(i)].1.counter(&c.key, now))
            .collect();
        if mode == ChargeMode::IfFits {
            let fits = counters.iter().zip(&current).all(|(c, used)| {
                u64::try_from(amount).is_ok_and(|a| used.saturating_add(a) <= c.limit)
            });
            if !fits {
                return Charged {
                    admitted: false,
                    used: current,
                };
            }
        }
        let used = counters
            .iter()
            .zip(&indexes)
            .zip(current)
            .map(|((c, &i), used)| {
                let value = apply(used, amount);
                let shard = &mut guards[position(i)].1;
                let expires = match shard.entries.get(&c.key) {
                    Some(Entry::Counter { expires, .. }) if *expires > now => *expires,
                    _ => now + c.ttl,
                };
                shard
                    .entries
                    .insert(c.key.clone(), Entry::Counter { value, expires });
                shard.wrote(now);
                value
            })
            .collect();
        drop(guards);
        Charged {
            admitted: true,
            used,
        }
    }

    /// The take, synchronously.
    pub fn take_now(&self, bucket: &Bucket, cost: u64) -> Taken {
        let now = Instant::now();
        let capacity = bucket.capacity as f64;
        let mut shard = self.shard(&bucket.key);
        let (tokens, at) = match shard.entries.get(&bucket.key) {
            Some(Entry::Bucket {
                tokens,
                at,
                expires,
            }) if *expires > now => (*tokens, *at),
            _ => (capacity, now),
        };
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        let tokens = (tokens + elapsed * bucket.rate_per_second).min(capacity);
        let cost_f = cost as f64;
        let (allowed, left) = if tokens >= cost_f {
            (true, tokens - cost_f)
        } else {
            (false, tokens)
        };
        shard.entries.insert(
            bucket.key.clone(),
            Entry::Bucket {
                tokens: left,
                at: now,
                expires: now + bucket.idle_ttl(),
            },
        );
        shard.wrote(now);
        Taken {
            allowed,
            remaining: left.max(0.0).floor() as u64,
            retry_after: if allowed {
                Duration::ZERO
            } else {
                retry_after(cost_f - left, bucket.rate_per_second)
            },
        }
    }
}

pub(crate) fn apply(used: u64, amount: i64) -> u64 {
    if amount >= 0 {
        used.saturating_add(amount.unsigned_abs())
    } else {
        used.saturating_sub(amount.unsigned_abs())
    }
}

pub(crate) fn retry_after(missing: f64, rate_per_second: f64) -> Duration {
    if rate_per_second <= 0.0 {
        return Duration::from_secs(3600);
    }
    Duration::try_from_secs_f64(missing / rate_per_second).unwrap_or(Duration::from_secs(3600))
}

impl Store for MemoryStore {
    fn charge<'a>(
        &'a self,
        counters: &'a [Counter],
        amount: i64,
        mode: ChargeMode,
    ) -> BoxFuture<'a, Result<Charged, StoreError>> {
        ready(Ok(self.charge_now(counters, amount, mode))).boxed()
    }

    fn take<'a>(
        &'a self,
        bucket: &'a Bucket,
        cost: u64,
    ) -> BoxFuture<'a, Result<Taken, StoreError>> {
        ready(Ok(self.take_now(bucket, cost))).boxed()
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(key: &str, limit: u64) -> Counter {
        Counter::new(key, limit, Duration::from_secs(60))
    }

    #[test]
    fn charges_fit_or_change_nothing() {
        let store = MemoryStore::new();
        let both = [counter("a", 10), counter("b", 5)];
        assert!(store.charge_now(&both, 4, ChargeMode::IfFits).admitted);
        let refused = store.charge_now(&both, 2, ChargeMode::IfFits);
        assert!(!refused.admitted);
        assert_eq!(refused.used, vec![4, 4]);
        let later = store.charge_now(&both, 1, ChargeMode::IfFits);
        assert_eq!(later.used, vec![5, 5]);
    }

    #[test]
    fn always_charges_past_limits_and_never_below_zero() {
        let store = MemoryStore::new();
        let one = [counter("a", 3)];
        assert_eq!(store.charge_now(&one, 7, ChargeMode::Always).used, vec![7]);
        assert_eq!(
            store.charge_now(&one, -10, ChargeMode::Always).used,
            vec![0]
        );
        assert!(!store.charge_now(&one, -1, ChargeMode::IfFits).admitted);
    }

    #[test]
    fn counters_expire() {
        let store = MemoryStore::new();
        let short = [Counter::new("a", 1, Duration::ZERO)];
        store.charge_now(&short, 1, ChargeMode::IfFits);
        assert!(store.charge_now(&short, 1, ChargeMode::IfFits).admitted);
    }

    #[test]
    fn buckets_start_full_and_refill() {
        let store = MemoryStore::new();
        let bucket = Bucket::new("b", 1000.0, 3);
        for _ in 0..3 {
            assert!(store.take_now(&bucket, 1).allowed);
        }
        let refused = store.take_now(&bucket, 1);
        assert!(!refused.allowed);
        assert!(refused.retry_after <= Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.take_now(&bucket, 1).allowed);
    }

    #[test]
    fn a_slow_bucket_says_when_to_come_back() {
        let store = MemoryStore::new();
        let bucket = Bucket::new("slow", 0.5, 1);
        assert!(store.take_now(&bucket, 1).allowed);
        let refused = store.take_now(&bucket, 1);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(1));
        assert!(refused.retry_after <= Duration::from_secs(2));
    }
}
