//! A circuit breaker per provider, configured as KrakenD's
//! `qos/circuit-breaker`: closed, open after `max_errors` consecutive
//! failures within `interval` seconds, half-open after `timeout` seconds,
//! where exactly one request probes the provider.
//!
//! Pure state machine over `Instant`s the caller passes, so it is tested
//! without sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use switchboard_core::ConfigError;

/// `qos/circuit-breaker`, on a provider (or under `ai/router`'s
/// `circuit_breaker` for every provider it routes to).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// The window, in seconds, in which consecutive errors count.
    pub interval: u64,
    /// Seconds the breaker stays open before a probe is let through.
    pub timeout: u64,
    /// Consecutive errors within `interval` that open the breaker.
    pub max_errors: u32,
    /// A name for the logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Log every change of state (at `warn` when it opens).
    #[serde(default)]
    pub log_status_change: bool,
}

impl CircuitBreakerConfig {
    /// Reads and checks the config. Errors are relative to the object.
    pub fn from_config(value: &serde_json::Value) -> Result<Self, ConfigError> {
        let config: Self = switchboard_core::config::from_value(value)?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values (zero is refused everywhere).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.interval == 0 {
            return Err(ConfigError::new("interval", "must be at least 1 second"));
        }
        if self.timeout == 0 {
            return Err(ConfigError::new("timeout", "must be at least 1 second"));
        }
        if self.max_errors == 0 {
            return Err(ConfigError::new("max_errors", "must be at least 1"));
        }
        Ok(())
    }
}

/// The state a breaker is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until the timeout passes.
    Open,
    /// One probe is allowed; its outcome closes or reopens the breaker.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed {
        consecutive: u32,
        window_start: Instant,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

/// Told of every change of a breaker's state, with the provider's name.
pub type BreakerListener = Arc<dyn Fn(&str, BreakerState) + Send + Sync>;

/// One provider's breaker. Share it in an `Arc`.
pub struct CircuitBreaker {
    label: String,
    provider: String,
    interval: Duration,
    timeout: Duration,
    max_errors: u32,
    log: bool,
    listener: Option<BreakerListener>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("label", &self.label)
            .field("inner", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// The breakers of a gateway, one per provider and breaker config, kept
/// across config builds: a reload that keeps a provider's breaker config
/// keeps its state (an open breaker stays open). A changed config starts
/// a new, closed breaker.
#[derive(Default)]
pub struct Breakers {
    by_key: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
    listener: Option<BreakerListener>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by_key = self
            .by_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.debug_struct("Breakers")
            .field("breakers", &by_key.len())
            .finish_non_exhaustive()
    }
}

impl Breakers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose breakers report every change of state (and
    /// their first, closed, state) to `listener`.
    pub fn with_listener(listener: impl Fn(&str, BreakerState) + Send + Sync + 'static) -> Self {
        Self {
            by_key: Mutex::default(),
            listener: Some(Arc::new(listener)),
        }
    }

    /// The breaker of `provider` under `config`, created closed the first
    /// time.
    pub fn get(&self, provider: &str, config: &CircuitBreakerConfig) -> Arc<CircuitBreaker> {
        let key = format!(
            "{provider}\u{0}{}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{}",
            config.interval,
            config.timeout,
            config.max_errors,
            config.name,
            config.log_status_change
        );
        let mut by_key = self
            .by_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_key
            .entry(key)
            .or_insert_with(|| {
                let mut breaker = CircuitBreaker::new(provider, config);
                breaker.listener = self.listener.clone();
                if let Some(listener) = &breaker.listener {
                    listener(provider, BreakerState::Closed);
                }
                Arc::new(breaker)
            })
            .clone()
    }
}

/// Leave to call the provider once. Report the outcome with
/// [`succeeded`](Self::succeeded) or [`failed`](Self::failed); a permit
/// dropped without either (the client went away) counts as neither, and a
/// probe dropped that way lets the next request probe.
#[derive(Debug)]
#[must_use = "report the outcome of the call"]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    /// A closed breaker for `provider`.
    pub fn new(provider: &str, config: &CircuitBreakerConfig) -> Self {
        let label = match &config.name {
            Some(name) => format!("{name} ({provider})"),
            None => provider.to_owned(),
        };
        Self {
            label,
            provider: provider.to_owned(),
            interval: Duration::from_secs(config.interval),
            timeout: Duration::from_secs(config.timeout),
            max_errors: config.max_errors.max(1),
            log: config.log_status_change,
            listener: None,
            inner: Mutex::new(Inner::Closed {
                consecutive: 0,
                window_start: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is plain data: a panic elsewhere cannot leave it torn.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current state (an open breaker whose timeout passed reads as
    /// half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match &*self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now >= *until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to call the provider now. `None` when the breaker is open, or
    /// half-open with its one probe already out.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Option<Permit> {
        let mut inner = self.lock();
        let probe = match &mut *inner {
            Inner::Closed {
                consecutive,
                window_start,
            } => {
                if now.saturating_duration_since(*window_start) >= self.interval {
                    *consecutive = 0;
                    *window_start = now;
                }
                false
            }
            Inner::Open { until } => {
                if now < *until {
                    return None;
                }
                self.transition(BreakerState::HalfOpen);
                *inner = Inner::HalfOpen { probing: true };
                true
            }
            Inner::HalfOpen { probing } => {
                if *probing {
                    return None;
                }
                *probing = true;
                true
            }
        };
        Some(Permit {
            breaker: Arc::clone(self),
            probe,
            reported: false,
        })
    }

    fn record(&self, probe: bool, success: bool, now: Instant) {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed {
                consecutive,
                window_start,
            } => {
                if success {
                    *consecutive = 0;
                    return;
                }
                if now.saturating_duration_since(*window_start) >= self.interval {
                    *consecutive = 0;
                    *window_start = now;
                }
                *consecutive += 1;
                if *consecutive >= self.max_errors {
                    self.transition(BreakerState::Open);
                    *inner = Inner::Open {
                        until: now + self.timeout,
                    };
                }
            }
            Inner::HalfOpen { .. } if probe => {
                if success {
                    self.transition(BreakerState::Closed);
                    *inner = Inner::Closed {
                        consecutive: 0,
                        window_start: now,
                    };
                } else {
                    self.transition(BreakerState::Open);
                    *inner = Inner::Open {
                        until: now + self.timeout,
                    };
                }
            }
            // A call let through before the breaker opened: its outcome
            // changes nothing now.
            Inner::HalfOpen { .. } | Inner::Open { .. } => {}
        }
    }

    fn release_probe(&self) {
        if let Inner::HalfOpen { probing } = &mut *self.lock() {
            *probing = false;
        }
    }

    fn transition(&self, to: BreakerState) {
        if let Some(listener) = &self.listener {
            listener(&self.provider, to);
        }
        if !self.log {
            return;
        }
        match to {
            BreakerState::Open => {
                tracing::warn!(breaker = %self.label, "circuit breaker open")
            }
            BreakerState::HalfOpen => {
                tracing::info!(breaker = %self.label, "circuit breaker half-open")
            }
            BreakerState::Closed => {
                tracing::info!(breaker = %self.label, "circuit breaker closed")
            }
        }
    }
}

impl Permit {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The provider answered.
    pub fn succeeded(mut self, now: Instant) {
        self.reported = true;
        self.breaker.record(self.probe, true, now);
    }

    /// The provider failed.
    pub fn failed(mut self, now: Instant) {
        self.reported = true;
        self.breaker.record(self.probe, false, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn breaker(max_errors: u32) -> Arc<CircuitBreaker> {
        let config = CircuitBreakerConfig::from_config(
            &json!({"interval": 60, "timeout": 10, "max_errors": max_errors, "log_status_change": true}),
        )
        .unwrap();
        Arc::new(CircuitBreaker::new("p", &config))
    }

    #[test]
    fn opens_after_max_consecutive_errors() {
        let b = breaker(3);
        let t = Instant::now();
        for _ in 0..2 {
            b.try_acquire(t).unwrap().failed(t);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        b.try_acquire(t).unwrap().failed(t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(b.try_acquire(t + Duration::from_secs(9)).is_none());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker(2);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failed(t);
        b.try_acquire(t).unwrap().succeeded(t);
        b.try_acquire(t).unwrap().failed(t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn errors_outside_the_interval_do_not_add_up() {
        let b = breaker(2);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failed(t);
        let later = t + Duration::from_secs(61);
        b.try_acquire(later).unwrap().failed(later);
        assert_eq!(b.state(later), BreakerState::Closed);
        b.try_acquire(later).unwrap().failed(later);
        assert_eq!(b.state(later), BreakerState::Open);
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = breaker(1);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failed(t);
        let after = t + Duration::from_secs(10);
        assert_eq!(b.state(after), BreakerState::HalfOpen);
        let probe = b.try_acquire(after).unwrap();
        assert!(probe.is_probe());
        assert!(b.try_acquire(after).is_none(), "only one probe at a time");
        probe.succeeded(after);
        assert_eq!(b.state(after), BreakerState::Closed);
        assert!(!b.try_acquire(after).unwrap().is_probe());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = breaker(1);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failed(t);
        let after = t + Duration::from_secs(10);
        b.try_acquire(after).unwrap().failed(after);
        assert_eq!(b.state(after), BreakerState::Open);
        assert!(b.try_acquire(after + Duration::from_secs(9)).is_none());
        assert!(b.try_acquire(after + Duration::from_secs(10)).is_some());
    }

    #[test]
    fn a_dropped_probe_frees_the_slot() {
        let b = breaker(1);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failed(t);
        let after = t + Duration::from_secs(10);
        drop(b.try_acquire(after).unwrap());
        assert!(b.try_acquire(after).unwrap().is_probe());
    }

    #[test]
    fn late_results_of_calls_admitted_before_opening_are_ignored() {
        let b = breaker(1);
        let t = Instant::now();
        let early = b.try_acquire(t).unwrap();
        b.try_acquire(t).unwrap().failed(t);
        early.succeeded(t);
        assert_eq!(b.state(t), BreakerState::Open);
    }

    #[test]
    fn the_registry_keeps_state_and_reports_changes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let breakers = Breakers::with_listener(move |name, state| {
            log.lock().unwrap().push((name.to_owned(), state));
        });
        let config = CircuitBreakerConfig::from_config(
            &json!({"interval": 60, "timeout": 10, "max_errors": 1}),
        )
        .unwrap();
        let t = Instant::now();
        breakers.get("p", &config).try_acquire(t).unwrap().failed(t);
        // A second build with the same config gets the open breaker.
        assert_eq!(breakers.get("p", &config).state(t), BreakerState::Open);
        let changed = CircuitBreakerConfig::from_config(
            &json!({"interval": 60, "timeout": 10, "max_errors": 2}),
        )
        .unwrap();
        assert_eq!(breakers.get("p", &changed).state(t), BreakerState::Closed);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("p".to_owned(), BreakerState::Closed),
                ("p".to_owned(), BreakerState::Open),
                ("p".to_owned(), BreakerState::Closed),
            ]
        );
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(
            CircuitBreakerConfig::from_config(
                &json!({"interval": 0, "timeout": 1, "max_errors": 1})
            )
            .unwrap_err()
            .path,
            "interval"
        );
        assert!(
            CircuitBreakerConfig::from_config(&json!({"interval": 1, "timeout": 1}))
                .unwrap_err()
                .message
                .contains("max_errors")
        );
        assert!(
            CircuitBreakerConfig::from_config(
                &json!({"interval": 1, "timeout": 1, "max_errors": 1, "bogus": 1})
            )
            .is_err()
        );
    }
}
