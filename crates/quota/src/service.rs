//! The service: resolve the tier and caller, reserve, call, reconcile.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_core::buffer::{is_event_stream, json_request, response_bytes};
use switchboard_core::{Body, ErrorResponse, JsonBody, Outcome, Rejection, Usage, UsageReport};
use switchboard_store::{ChargeMode, Charged, Counter, SharedStore, StoreError};
use tower::Service;

use crate::config::Backoff;
use crate::layer::{Attachment, Reserve, Tier, Weight};
use crate::window::Window;

/// `X-Quota-Limit`.
pub const QUOTA_LIMIT: HeaderName = HeaderName::from_static("x-quota-limit");
/// `X-Quota-Remaining`.
pub const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");

/// The service [`EnforceQuotaLayer`](crate::EnforceQuotaLayer) builds.
#[derive(Clone)]
pub struct EnforceQuota<S> {
    inner: S,
    attachment: Arc<Attachment>,
}

impl<S> EnforceQuota<S> {
    pub(crate) fn new(inner: S, attachment: Arc<Attachment>) -> Self {
        Self { inner, attachment }
    }
}

impl<S: fmt::Debug> fmt::Debug for EnforceQuota<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnforceQuota")
            .field("inner", &self.inner)
            .field("quota", &self.attachment.processor.name)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for EnforceQuota<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The ready clone serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let attachment = self.attachment.clone();
        handle(attachment, inner, request).boxed()
    }
}

/// The counters one request touches, and the state of the tightest one.
struct Plan {
    counters: Arc<[Counter]>,
    windows: Vec<Window>,
}

async fn handle<S>(
    attachment: Arc<Attachment>,
    mut inner: S,
    request: Request<Body>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let (tier, caller) = match resolve(&attachment, &request) {
        Ok(Some(found)) => found,
        Ok(None) => return inner.call(request).await,
        Err(error) => return Ok(Rejection::Quota.mark(error.into_response())),
    };
    let plan = plan(&attachment, tier, &caller);
    let (mut request, reserved) = match &attachment.weight {
        Weight::One | Weight::Response { .. } => (request, 1),
        Weight::Tokens { reserve, .. } | Weight::Cost { reserve, .. } if !reserve.enabled => {
            (request, 1)
        }
        Weight::Tokens { .. } | Weight::Cost { .. } => match json_request(request).await {
            Ok((request, body)) => {
                let estimate = estimate(&attachment.weight, &request, body.as_ref());
                (request, estimate)
            }
            Err(error) => return Ok(error.into_response()),
        },
    };
    let processor = &attachment.processor;
    let charged = charge(
        processor,
        &plan.counters,
        signed(reserved),
        ChargeMode::IfFits,
    )
    .await;
    let charged = match charged {
        Ok(charged) => charged,
        Err(err) if processor.on_failure_allow => {
            tracing::warn!(quota = %processor.name, error = %err, "quota store failing: request let through uncounted");
            return inner.call(request).await;
        }
        Err(err) => {
            tracing::error!(quota = %processor.name, error = %err, "quota store failing: request refused");
            return Ok(Rejection::Quota.mark(
                ErrorResponse::internal("the quota cannot be checked right now")
                    .with_code("quota_unavailable")
                    .into_response(),
            ));
        }
    };
    if !charged.admitted {
        return Ok(refusal(&attachment, tier, &plan, &charged, reserved));
    }
    let headers = attachment.headers.then(|| quota_headers(tier, &charged));

    let mut response = match &attachment.weight {
        Weight::One => inner.call(request).await?,
        Weight::Tokens { .. } | Weight::Cost { .. } => {
            let report = UsageReport::get_or_insert(request.extensions_mut());
            if let Weight::Cost { prices, .. } = &attachment.weight {
                report.set_prices(prices.clone());
            }
            let weight = attachment.weight.clone();
            let counters = plan.counters.clone();
            let store = processor.store.clone();
            let reservation = if attachment_reserves(&attachment.weight) {
                reserved
            } else {
                0
            };
            let charged_before = reserved;
            report.on_finish(move |usage, outcome| {
                let actual = usage_weight(&weight, usage, outcome);
                // Without a reservation 1 was charged to check the limit.
                let delta = signed(actual)
                    - signed(if reservation == 0 {
                        charged_before
                    } else {
                        reservation
                    });
                reconcile(store, counters, delta);
            });
            drop(report);
            inner.call(request).await?
        }
        Weight::Response { key, header } => {
            let response = inner.call(request).await?;
            let (response, weight) = response_weight(response, key, *header).await;
            if let Some(weight) = weight {
                let delta = signed(weight) - 1;
                if delta != 0
                    && let Err(err) =
                        charge(processor, &plan.counters, delta, ChargeMode::Always).await
                {
                    tracing::warn!(quota = %processor.name, error = %err, "quota store failing: weight not added");
                }
            }
            response
        }
    };
    if let Some(headers) = headers {
        response.headers_mut().extend(headers);
    }
    Ok(response)
}

fn attachment_reserves(weight: &Weight) -> bool {
    match weight {
        Weight::Tokens { reserve, .. } | Weight::Cost { reserve, .. } => reserve.enabled,
        _ => false,
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The tier and caller of a request; `Ok(None)` lets it through uncounted.
fn resolve<'a>(
    attachment: &'a Attachment,
    request: &Request<Body>,
) -> Result<Option<(&'a Tier, String)>, ErrorResponse> {
    let value = attachment.tier_key.value(request);
    let Some(tier) = attachment
        .tiers
        .iter()
        .find(|t| t.matcher.matches(value.as_deref(), request))
    else {
        return unmatched(
            attachment,
            format!(
                "no quota tier matches the request ({})",
                attachment.tier_key_text
            ),
        );
    };
    match tier.caller.identify(request) {
        Some(caller) => Ok(Some((tier, caller))),
        None => unmatched(
            attachment,
            format!(
                "the request does not identify its caller for the quota tier {:?}",
                tier.rule
            ),
        ),
    }
}

fn unmatched<T>(attachment: &Attachment, message: String) -> Result<Option<T>, ErrorResponse> {
    if attachment.on_unmatched_tier_allow {
        Ok(None)
    } else {
        Err(ErrorResponse::bad_request(message).with_code("quota_tier_unmatched"))
    }
}

fn plan(attachment: &Attachment, tier: &Tier, caller: &str) -> Plan {
    let processor = &attachment.processor;
    let caller = if processor.hash_keys {
        Sha256::digest(caller.as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        caller.to_owned()
    };
    let now = Utc::now();
    let mut counters = Vec::with_capacity(tier.limits.len());
    let mut windows = Vec::with_capacity(tier.limits.len());
    for (unit, limit) in &tier.limits {
        let window = unit.window(now);
        let key = format!(
            "sb:quota:{}:{}:{}:{}{}",
            processor.name,
            tier.rule,
            caller,
            unit.letter(),
            window.index
        );
        // A second of slack so that a reconciliation just after the window
        // ends still finds its counter.
        let ttl = window.remaining(now) + Duration::from_secs(1);
        counters.push(Counter::new(key, *limit, ttl));
        windows.push(window);
    }
    Plan {
        counters: counters.into(),
        windows,
    }
}

/// A store call with the processor's retries.
async fn charge(
    processor: &crate::layer::Processor,
    counters: &[Counter],
    amount: i64,
    mode: ChargeMode,
) -> Result<Charged, StoreError> {
    let mut attempt = 0;
    loop {
        match processor.store.charge(counters, amount, mode).await {
            Ok(charged) => return Ok(charged),
            Err(err) if attempt >= processor.retries => return Err(err),
            Err(_) => {
                attempt += 1;
                let base = Duration::from_millis(10);
                let wait = match processor.backoff {
                    Backoff::Linear => base * attempt,
                    Backoff::Exponential => base * 2u32.saturating_pow(attempt - 1),
                };
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Applies a correction after the answer ended, without blocking whoever
/// finished the report: the memory store answers at once; a Redis call
/// goes to the runtime.
fn reconcile(store: SharedStore, counters: Arc<[Counter]>, delta: i64) {
    if delta == 0 {
        return;
    }
    let mut task = async move {
        if let Err(err) = store.charge(&counters, delta, ChargeMode::Always).await {
            tracing::warn!(error = %err, delta, "quota reconciliation failed");
        }
    }
    .boxed();
    if (&mut task).now_or_never().is_none()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        runtime.spawn(task);
    }
}

/// The reservation for a token or money weight.
fn estimate(weight: &Weight, request: &Request<Body>, body: Option<&JsonBody>) -> u64 {
    let body = body.map(JsonBody::value);
    // The body was buffered just before, so its size is exact; a body a
    // layer before parsed counts as its JSON text.
    let bytes = http_body::Body::size_hint(request.body())
        .exact()
        .filter(|&n| n > 0)
        .or_else(|| body.map(|b| b.to_string().len() as u64))
        .unwrap_or(0);
    let estimate_tokens = |reserve: &Reserve| {
        let input = (bytes as f64 / reserve.bytes_per_token).ceil() as u64;
        let output = body
            .and_then(requested_max_tokens)
            .unwrap_or(reserve.max_output_tokens);
        (input, output)
    };
    match weight {
        Weight::Tokens {
            reserve,
            input,
            output,
        } => reserve.ceiling.unwrap_or_else(|| {
            let (i, o) = estimate_tokens(reserve);
            (i as f64 * input + o as f64 * output).ceil() as u64
        }),
        Weight::Cost { reserve, prices } => reserve.ceiling.unwrap_or_else(|| {
            let (i, o) = estimate_tokens(reserve);
            let model = body.and_then(|b| b.get("model")).and_then(Value::as_str);
            let price = prices
                .lookup(None, model)
                .copied()
                .or_else(|| prices.highest());
            price.map_or(0, |p| p.cost_micros(&Usage::new(i, o)))
        }),
        _ => 1,
    }
}

/// `max_tokens` as the client dialects spell it.
fn requested_max_tokens(body: &Value) -> Option<u64> {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .or_else(|| {
            body.get("generationConfig")
                .and_then(|g| g.get("maxOutputTokens"))
                .and_then(Value::as_u64)
        })
}

/// What a finished call weighs.
fn usage_weight(weight: &Weight, usage: &Usage, outcome: Outcome) -> u64 {
    let _ = outcome;
    match weight {
        Weight::Tokens { input, output, .. } => {
            (usage.input_tokens as f64 * input + usage.output_tokens as f64 * output).ceil() as u64
        }
        Weight::Cost { prices, .. } => usage.cost_micros.unwrap_or_else(|| {
            if usage.total_tokens() == 0 {
                0
            } else {
                prices.highest().map_or(0, |p| p.cost_micros(usage))
            }
        }),
        _ => 0,
    }
}

/// Reads a response's weight (a body field or a header). Event streams
/// are never buffered: they weigh the 1 reserved.
async fn response_weight(
    response: Response<Body>,
    key: &str,
    header: bool,
) -> (Response<Body>, Option<u64>) {
    if header {
        let weight = response
            .headers()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(number_weight);
        return (response, weight);
    }
    if is_event_stream(response.headers()) {
        return (response, None);
    }
    match response_bytes(response, switchboard_core::DEFAULT_BODY_LIMIT).await {
        Ok((parts, bytes)) => {
            let weight = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| switchboard_core::lookup_path(&v, key).and_then(Value::as_f64))
                .map(number_weight);
            (Response::from_parts(parts, Body::from(bytes)), weight)
        }
        Err(error) => (error.into_response(), None),
    }
}

fn number_weight(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.ceil() as u64
    } else {
        0
    }
}

/// The counter with the least room left: its limit and what remains.
fn tightest(tier: &Tier, charged: &Charged) -> (u64, u64) {
    tier.limits
        .iter()
        .zip(&charged.used)
        .map(|((_, limit), used)| (*limit, limit.saturating_sub(*used)))
        .min_by_key(|(_, remaining)| *remaining)
        .unwrap_or((0, 0))
}

fn quota_headers(tier: &Tier, charged: &Charged) -> http::HeaderMap {
    let (limit, remaining) = tightest(tier, charged);
    let mut headers = http::HeaderMap::new();
    headers.insert(QUOTA_LIMIT, HeaderValue::from(limit));
    headers.insert(QUOTA_REMAINING, HeaderValue::from(remaining));
    headers
}

fn refusal(
    attachment: &Attachment,
    tier: &Tier,
    plan: &Plan,
    charged: &Charged,
    wanted: u64,
) -> Response<Body> {
    let now = Utc::now();
    // The request fits again when every counter it does not fit in has
    // rolled over: the latest of their window ends.
    let retry = tier
        .limits
        .iter()
        .zip(&charged.used)
        .zip(&plan.windows)
        .filter(|(((_, limit), used), _)| used.saturating_add(wanted) > *limit)
        .map(|(_, window)| window.remaining(now))
        .max()
        .unwrap_or(Duration::from_secs(1));
    let seconds = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
    let mut error = ErrorResponse::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        format!(
            "quota {:?} exhausted for the tier {:?}; it reopens in {seconds} s",
            attachment.processor.name, tier.rule
        ),
    )
    .with_code("quota_exceeded")
    .with_header(RETRY_AFTER, HeaderValue::from(seconds));
    if attachment.headers {
        let (limit, remaining) = tightest(tier, charged);
        error = error
            .with_header(QUOTA_LIMIT, HeaderValue::from(limit))
            .with_header(QUOTA_REMAINING, HeaderValue::from(remaining));
    }
    // Retrying a hard stop is pointless: say so to SDK clients.
    if seconds > 60 {
        error = error.no_retry();
    }
    Rejection::Quota.mark(error.into_response())
}
