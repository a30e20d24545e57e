//! State that outlives one build of the gateway.
//!
//! A config reload builds every pipeline anew; counters, quota buckets and
//! circuit breakers must not start from zero because of it. A layer that
//! keeps such state asks the [`SharedState`] handed to the build for it by
//! type and name: the first build creates it, every later build gets the
//! same `Arc`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

type Slot = Arc<dyn Any + Send + Sync>;

/// A handle on state kept across config reloads. Clones share the store.
#[derive(Clone, Default)]
pub struct SharedState {
    slots: Arc<Mutex<HashMap<(TypeId, String), Slot>>>,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SharedState")
            .field("slots", &slots.len())
            .finish()
    }
}

impl SharedState {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `T` kept under `name`, created with `init` the first time.
    pub fn get_or_init<T, F>(&self, name: &str, init: F) -> Arc<T>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> T,
    {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (TypeId::of::<T>(), name.to_owned());
        if let Some(found) = slots
            .get(&key)
            .and_then(|slot| slot.clone().downcast::<T>().ok())
        {
            return found;
        }
        let created = Arc::new(init());
        slots.insert(key, created.clone());
        created
    }

    /// The `T` kept under `name`, if a build created one.
    pub fn get<T: Any + Send + Sync>(&self, name: &str) -> Option<Arc<T>> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(&(TypeId::of::<T>(), name.to_owned()))
            .and_then(|slot| slot.clone().downcast::<T>().ok())
    }
}

/// Why the gateway itself refused a request. The refusing layer inserts it
/// into the response extensions; metrics and logs count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// A token or request quota is spent.
    Quota,
    /// A rate limit was hit.
    RateLimit,
    /// A guard or validation refused the request.
    Guard,
}

impl Rejection {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quota => "quota",
            Self::RateLimit => "rate_limit",
            Self::Guard => "guard",
        }
    }

    /// Marks `response` as refused for this reason (inserts `self` into its
    /// extensions) so that the layers around count it.
    pub fn mark<B>(self, mut response: http::Response<B>) -> http::Response<B> {
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_second_build_gets_the_same_state() {
        let state = SharedState::new();
        let first = state.get_or_init("quota:a", || AtomicU64::new(0));
        first.fetch_add(3, Ordering::SeqCst);
        let second = state.get_or_init("quota:a", || AtomicU64::new(100));
        assert_eq!(second.load(Ordering::SeqCst), 3);
        let other = state.get_or_init("quota:b", || AtomicU64::new(7));
        assert_eq!(other.load(Ordering::SeqCst), 7);
        assert!(state.get::<AtomicU64>("quota:c").is_none());
        assert!(state.get::<String>("quota:a").is_none());
    }
}
