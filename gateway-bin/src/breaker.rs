//! KrakenD's `qos/circuit-breaker` on a backend: after `max_errors`
//! consecutive failures within `interval` seconds the backend is not
//! called for `timeout` seconds (answered 503 at once), then one request
//! probes it. A failure is an answer with a 5xx status or 429, which
//! includes the gateway's own 502/504 for a connection error or a timeout.
//! The state machine is the one the LLM router uses per provider.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response, StatusCode};
use serde_json::Value;
use switchboard_core::future::BoxFuture;
use switchboard_core::{Body, ConfigError, ErrorResponse};
use switchboard_llm_router::routing::{CircuitBreaker, CircuitBreakerConfig};
use tower::{Layer, Service};

/// The layer of one backend.
#[derive(Clone)]
pub(crate) struct BreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl BreakerLayer {
    /// Reads `qos/circuit-breaker` (errors relative to it); `label` names
    /// the backend in the logs.
    pub(crate) fn from_config(value: &Value, label: &str) -> Result<Self, ConfigError> {
        let config = CircuitBreakerConfig::from_config(value)?;
        Ok(Self {
            breaker: Arc::new(CircuitBreaker::new(label, &config)),
        })
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
        }
    }
}

/// See [`BreakerLayer`].
#[derive(Clone)]
pub(crate) struct BreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

/// Whether an answer counts against the breaker.
fn is_failure(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

impl<S> Service<Request<Body>> for BreakerService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(permit) = self.breaker.try_acquire(Instant::now()) else {
            let response = ErrorResponse::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "the backend's circuit breaker is open",
            )
            .with_code("circuit_open")
            .into_response();
            return Box::pin(async move { Ok(response) });
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = call.await;
            if is_failure(response.status()) {
                permit.failed(Instant::now());
            } else {
                permit.succeeded(Instant::now());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_and_config() {
        assert!(is_failure(StatusCode::BAD_GATEWAY));
        assert!(is_failure(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_failure(StatusCode::NOT_FOUND));
        assert!(!is_failure(StatusCode::OK));
        assert!(
            BreakerLayer::from_config(
                &json!({"interval": 60, "timeout": 10, "max_errors": 1}),
                "b"
            )
            .is_ok()
        );
        let err =
            BreakerLayer::from_config(&json!({"interval": 0, "timeout": 10, "max_errors": 1}), "b")
                .err()
                .unwrap();
        assert_eq!(err.path, "interval");
    }
}
