//! [`RecordMetrics`]: counts and times every request, its backend waits,
//! its stream and its token usage; opens its span; writes its usage line.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{Status, TraceContextExt};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};
use switchboard_core::{
    ApiKeyIdentity, Body, BoxError, Claims, Outcome, QuotaRemaining, Rejection, Usage, UsageReport,
};
use tower::Service;

use crate::layer::Telemetry;
use crate::metrics::{EndpointSeries, TokenLabels, method_label};
use crate::trace::{RequestScope, request_context};

/// The endpoint pattern a request matched, as the router names it. The
/// layer reads it from the request extensions (axum's `MatchedPath` is
/// read too); without one the request counts as `unmatched`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPattern(pub Arc<str>);

/// Records metrics, spans and usage of the requests it serves.
#[derive(Clone, Debug)]
pub struct RecordMetrics<S> {
    pub(crate) inner: S,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The endpoint served, when the layer was made for one: its series
    /// are then looked up once, not per request.
    pub(crate) endpoint: Option<Arc<EndpointSeries>>,
    /// Whether answers may carry token usage (an LLM endpoint); without it
    /// no usage watcher is set up.
    pub(crate) usage: bool,
}

impl<S> Service<Request<Body>> for RecordMetrics<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let telemetry = &self.telemetry;
        let series = match &self.endpoint {
            Some(series) => series.clone(),
            None => telemetry.metrics.endpoint(endpoint_of(&request)),
        };
        let endpoint = &series.labels.endpoint;
        let skipped = telemetry
            .skip_paths
            .iter()
            .any(|p| p == request.uri().path());
        let scope = Arc::new(RequestScope {
            metrics: telemetry.metrics.clone(),
            tracer: telemetry.tracing.tracer(),
            upstream_ns: AtomicU64::new(0),
        });
        let method = method_label(request.method());
        let cx = request_context(scope.clone(), request.headers(), method, endpoint, !skipped);
        if skipped {
            return ResponseFuture {
                inner: self.inner.call(request).with_context(cx),
                pending: None,
            };
        }
        let started = Instant::now();
        let call = self.usage.then(|| {
            let call = Arc::new(Mutex::new(CallSlot {
                status: None,
                finished: None,
                record: Some(CallRecord {
                    telemetry: telemetry.clone(),
                    endpoint: endpoint.clone(),
                    started,
                    cx: cx.clone(),
                    caller: caller_of(&request),
                }),
            }));
            let watcher = call.clone();
            UsageReport::get_or_insert(request.extensions_mut()).on_finish(
                move |usage, outcome| {
                    CallSlot::update(&watcher, |slot| {
                        slot.finished = Some((usage.clone(), outcome))
                    });
                },
            );
            call
        });
        ResponseFuture {
            inner: self.inner.call(request).with_context(cx.clone()),
            pending: Some(Pending {
                telemetry: telemetry.clone(),
                series,
                method,
                started,
                scope,
                cx,
                call,
            }),
        }
    }
}

fn endpoint_of(request: &Request<Body>) -> &str {
    if let Some(pattern) = request.extensions().get::<EndpointPattern>() {
        return &pattern.0;
    }
    if let Some(matched) = request.extensions().get::<axum_core_matched::MatchedPath>() {
        return matched.as_str();
    }
    "unmatched"
}

/// axum's `MatchedPath`, without depending on all of axum here.
mod axum_core_matched {
    pub(crate) use axum::extract::MatchedPath;
}

/// Who is calling: the identity an auth layer set, else the credential the
/// client sent (kept only to be hashed, and only if the call is an LLM call).
enum Caller {
    Identity(Arc<str>),
    Credential(http::HeaderValue),
    Anonymous,
}

fn caller_of(request: &Request<Body>) -> Caller {
    if let Some(identity) = request.extensions().get::<ApiKeyIdentity>() {
        return Caller::Identity(identity.id().into());
    }
    if let Some(subject) = request
        .extensions()
        .get::<Claims>()
        .and_then(|claims| claims.get_path("sub"))
        .and_then(serde_json::Value::as_str)
    {
        return Caller::Identity(subject.into());
    }
    ["authorization", "x-api-key", "api-key"]
        .iter()
        .find_map(|name| request.headers().get(*name))
        .map_or(Caller::Anonymous, |value| Caller::Credential(value.clone()))
}

impl Caller {
    /// A short hash, never the identity or credential itself.
    fn hash(&self) -> String {
        let bytes = match self {
            Self::Identity(identity) => identity.as_bytes(),
            Self::Credential(value) => value.as_bytes(),
            Self::Anonymous => return "anonymous".to_owned(),
        };
        let digest = Sha256::digest(bytes);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// The LLM call is reported once both its usage is final and its status is
/// known, whichever comes last (a buffered answer may finish its usage
/// before the response head reaches this layer).
struct CallSlot {
    /// The response status; 0 when the request ended without an answer.
    status: Option<u16>,
    finished: Option<(Usage, Outcome)>,
    record: Option<CallRecord>,
}

impl CallSlot {
    fn update(slot: &Mutex<CallSlot>, change: impl FnOnce(&mut CallSlot)) {
        let ready = {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut slot);
            match (slot.status, slot.finished.is_some()) {
                (Some(status), true) => slot
                    .record
                    .take()
                    .zip(slot.finished.take())
                    .map(|(record, finished)| (record, finished, status)),
                _ => None,
            }
        };
        if let Some((record, (usage, outcome), status)) = ready {
            record.finished(&usage, outcome, status);
        }
    }
}

/// What the usage report needs once the LLM call ends.
struct CallRecord {
    telemetry: Arc<Telemetry>,
    endpoint: Arc<str>,
    started: Instant,
    cx: Context,
    caller: Caller,
}

impl CallRecord {
    fn finished(self, usage: &Usage, outcome: Outcome, status: u16) {
        if usage.provider.is_none() && usage.total_tokens() == 0 {
            // Not an LLM call: nothing recorded usage.
            return;
        }
        let metrics = &self.telemetry.metrics;
        let provider = usage.provider.as_deref().unwrap_or("unknown");
        let model = usage.model.as_deref().unwrap_or("unknown");
        let labels = TokenLabels {
            provider: metrics.bounded(provider),
            model: metrics.bounded(model),
            tier: metrics.bounded(usage.tier.as_deref().unwrap_or("default")),
        };
        let cost = self.telemetry.cost(provider, model, usage);
        let outcome = match outcome {
            Outcome::Complete => "complete",
            Outcome::Cancelled => "cancelled",
            _ => "failed",
        };
        metrics.tokens(
            &labels,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
        );
        metrics.llm_call(&labels, outcome, cost);
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("gen_ai.provider.name", provider.to_owned()));
        span.set_attribute(KeyValue::new("gen_ai.response.model", model.to_owned()));
        span.set_attribute(KeyValue::new(
            "gen_ai.usage.input_tokens",
            i64::try_from(usage.input_tokens).unwrap_or(i64::MAX),
        ));
        span.set_attribute(KeyValue::new(
            "gen_ai.usage.output_tokens",
            i64::try_from(usage.output_tokens).unwrap_or(i64::MAX),
        ));
        if self.telemetry.usage_log {
            tracing::info!(
                target: "switchboard::usage",
                endpoint = %self.endpoint,
                provider,
                model,
                tier = %labels.tier,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                cached_tokens = usage.cached_tokens,
                cost = %format_args!("{:.6}", cost.unwrap_or(0.0)),
                latency_ms = %format_args!("{:.3}", self.started.elapsed().as_secs_f64() * 1000.0),
                status,
                outcome,
                caller = %self.caller.hash(),
                "llm call"
            );
        }
    }
}

struct Pending {
    telemetry: Arc<Telemetry>,
    series: Arc<EndpointSeries>,
    method: &'static str,
    started: Instant,
    scope: Arc<RequestScope>,
    cx: Context,
    call: Option<Arc<Mutex<CallSlot>>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // No answer (the client went away first): report with status 0.
        if let Some(call) = &self.call {
            CallSlot::update(call, |slot| {
                slot.status.get_or_insert(0);
            });
        }
    }
}

pin_project! {
    /// The future of [`RecordMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: WithContext<F>,
        pending: Option<Pending>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(task) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        let Some(pending) = this.pending.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(result.map(|response| pending.answered(response)))
    }
}

fn is_stream(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let starts = |prefix: &str| {
                v.get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            };
            starts("text/event-stream")
                || starts("application/x-ndjson")
                || starts("application/vnd.amazon.eventstream")
        })
}

impl Pending {
    fn answered(self, response: Response<Body>) -> Response<Body> {
        let metrics = &self.telemetry.metrics;
        let status = response.status().as_u16();
        if let Some(call) = &self.call {
            CallSlot::update(call, |slot| slot.status = Some(status));
        }
        let series = &self.series;
        series.answered(metrics, self.method, status);
        let head_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let upstream_ns = self.scope.upstream_ns.load(Ordering::Relaxed);
        series
            .gateway(metrics)
            .observe(head_ns.saturating_sub(upstream_ns) as f64 / 1e9);
        if upstream_ns > 0 {
            series.upstream(metrics).observe(upstream_ns as f64 / 1e9);
        }
        let span = self.cx.span();
        if let Some(left) = response.extensions().get::<QuotaRemaining>() {
            metrics.set_quota_remaining(&left.name, left.remaining as f64);
        }
        if let Some(rejection) = response.extensions().get::<Rejection>() {
            metrics.rejection(&series.labels.endpoint, rejection.as_str());
            span.set_attribute(KeyValue::new("switchboard.rejection", rejection.as_str()));
        }
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("answered {status}")));
        }
        let streaming = is_stream(&response);
        if streaming {
            series.active_streams(metrics).inc();
        }
        let finish = Finish {
            telemetry: self.telemetry.clone(),
            series: series.clone(),
            started: self.started,
            streaming,
            cx: self.cx.clone(),
        };
        response.map(|body| {
            Body::new(ObservedBody {
                inner: body,
                first_frame: streaming,
                finish: Some(finish),
            })
        })
    }
}

/// Runs when the answer's body ends or is dropped.
struct Finish {
    telemetry: Arc<Telemetry>,
    series: Arc<EndpointSeries>,
    started: Instant,
    streaming: bool,
    cx: Context,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let metrics = &self.telemetry.metrics;
        self.series
            .duration(metrics)
            .observe(self.started.elapsed().as_secs_f64());
        if self.streaming {
            self.series.active_streams(metrics).dec();
        }
        self.cx.span().end();
    }
}

pin_project! {
    struct ObservedBody {
        #[pin]
        inner: Body,
        first_frame: bool,
        finish: Option<Finish>,
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        task: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(task);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if *this.first_frame && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                    *this.first_frame = false;
                    if let Some(finish) = this.finish.as_ref() {
                        finish
                            .series
                            .first_token(&finish.telemetry.metrics)
                            .observe(finish.started.elapsed().as_secs_f64());
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.finish.take();
            }
            Poll::Pending => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
