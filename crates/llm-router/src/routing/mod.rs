//! Which provider serves a request and what happens when it fails:
//! `ai/classifiers` gates and classifiers, `ai/router` routes and failover,
//! retries with backoff, and circuit breakers. Pure, synchronous logic; the
//! service drives it.

pub mod breaker;
pub mod config;
pub mod notdiamond;
pub mod retry;
pub mod router;

pub use breaker::{
    BreakerListener, BreakerState, Breakers, CircuitBreaker, CircuitBreakerConfig, Permit,
};
pub use config::{ClassifiersConfig, FanOutMode, RouterConfig};
pub use retry::{Budget, FailureKind, RetryConfig, RetryPolicy};
pub use router::{Classifiers, Plan, Router};
