//! The service: take a token from each bucket that applies, then call.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response};
use switchboard_core::{Body, ErrorResponse, Rejection};
use switchboard_store::{Bucket, Taken};
use tower::Service;

use crate::layer::{Kind, Limit, Limiter};

/// `RateLimit` (IETF draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The service [`LimitRateLayer`](crate::LimitRateLayer) builds.
#[derive(Clone)]
pub struct LimitRate<S> {
    inner: S,
    kind: Arc<Kind>,
}

impl<S> LimitRate<S> {
    pub(crate) fn new(inner: S, kind: Arc<Kind>) -> Self {
        Self { inner, kind }
    }
}

impl<S: fmt::Debug> fmt::Debug for LimitRate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitRate")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for LimitRate<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        handle(self.kind.clone(), inner, request).boxed()
    }
}

async fn handle<S, B>(
    kind: Arc<Kind>,
    mut inner: S,
    request: Request<B>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    let limiter = match &*kind {
        Kind::Single(limiter) => limiter,
        Kind::Tiered { key, tiers } => {
            let value = key.value(&request);
            match tiers
                .iter()
                .find(|(m, _)| m.matches(value.as_deref(), &request))
            {
                Some((_, limiter)) => limiter,
                None => return inner.call(request).await,
            }
        }
    };
    let buckets = buckets(limiter, &request);
    let taken = match take_all(limiter, buckets).await {
        Ok(taken) => taken,
        Err(refusal) => return Ok(refusal),
    };
    let mut response = inner.call(request).await?;
    if !taken.is_empty() {
        let headers = response.headers_mut();
        // Appended: a service-wide and an endpoint limit each add theirs.
        headers.append(RATELIMIT_POLICY, policy_header(limiter));
        if let Some(value) = remaining_header(&taken) {
            headers.append(RATELIMIT, value);
        }
    }
    Ok(response)
}

/// The buckets a request draws from.
fn buckets<'a, B>(limiter: &'a Limiter, request: &Request<B>) -> Vec<(&'a Limit, Bucket)> {
    limiter
        .limits
        .iter()
        .map(|limit| {
            // Callers without an identity share one bucket: leaving the
            // header out must not escape the limit.
            let key = match &limit.caller {
                Some(caller) => {
                    let id = caller.identify(request);
                    format!("{}:{}", limit.prefix, id.as_deref().unwrap_or("-"))
                }
                None => limit.prefix.clone(),
            };
            (
                limit,
                Bucket::new(key, limit.rate_per_second, limit.capacity),
            )
        })
        .collect()
}

/// Takes one token from every bucket, in order; the first refusal answers.
async fn take_all<'a>(
    limiter: &'a Limiter,
    buckets: Vec<(&'a Limit, Bucket)>,
) -> Result<Vec<(&'a Limit, Taken)>, Response<Body>> {
    let mut taken = Vec::with_capacity(buckets.len());
    for (limit, bucket) in buckets {
        match limiter.store.take(&bucket, 1).await {
            Ok(result) if result.allowed => taken.push((limit, result)),
            Ok(result) => return Err(refusal(limiter, limit, result.retry_after)),
            Err(err) if limiter.on_failure_allow => {
                tracing::warn!(error = %err, "rate-limit store failing: request let through");
            }
            Err(err) => {
                tracing::error!(error = %err, "rate-limit store failing: request refused");
                return Err(Rejection::RateLimit.mark(
                    ErrorResponse::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "rate_limit_error",
                        "the rate limit cannot be checked right now",
                    )
                    .with_code("rate_limit_unavailable")
                    .into_response(),
                ));
            }
        }
    }
    Ok(taken)
}

fn seconds(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

fn refusal(limiter: &Limiter, limit: &Limit, retry_after: Duration) -> Response<Body> {
    let wait = seconds(retry_after);
    let (message, code) = if limit.caller.is_some() {
        ("too many requests from this client", "client_rate_limited")
    } else {
        (
            "the service is over its request rate; try again shortly",
            "rate_limited",
        )
    };
    let mut error = ErrorResponse::new(limit.refusal, "rate_limit_error", message)
        .with_code(code)
        .with_header(RETRY_AFTER, HeaderValue::from(wait))
        .with_header(RATELIMIT_POLICY, policy_header(limiter));
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\";r=0;t={wait}", limit.name)) {
        error = error.with_header(RATELIMIT, value);
    }
    Rejection::RateLimit.mark(error.into_response())
}

fn policy_header(limiter: &Limiter) -> HeaderValue {
    let text = limiter
        .limits
        .iter()
        .map(|l| format!("\"{}\";q={};w={}", l.name, l.quota, seconds(l.window)))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn remaining_header(taken: &[(&Limit, Taken)]) -> Option<HeaderValue> {
    let text = taken
        .iter()
        .map(|(l, t)| format!("\"{}\";r={}", l.name, t.remaining))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).ok()
}
