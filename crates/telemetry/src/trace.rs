//! OpenTelemetry traces: the tracer built from `exporters.otlp[]`, the span
//! of a request, of a backend call and of each attempt, and W3C
//! `traceparent` propagation to upstreams.
//!
//! The request's [`Context`] travels with its future (`FutureExt::
//! with_context`), so code below the telemetry layer finds it with
//! `Context::current()` without any extension plumbing.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use switchboard_core::{Outcome, UpstreamAttempt};

use crate::config::OpenTelemetryConfig;
use crate::metrics::Metrics;

/// What a request carries in its OpenTelemetry context: where backend waits
/// are noted and the tracer for child spans.
pub(crate) struct RequestScope {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracer: Option<SdkTracer>,
    /// The longest backend wait so far, in nanoseconds.
    pub(crate) upstream_ns: AtomicU64,
}

impl RequestScope {
    fn note_wait(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.upstream_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// The trace exporters of one config: a tracer provider (absent when no
/// OTLP exporter sends traces).
#[derive(Clone, Debug, Default)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// No tracing: requests are still measured, nothing is exported.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The provider for `config`'s OTLP exporters, sampling
    /// `trace_sample_rate` of the traces that do not arrive sampled.
    ///
    /// OTLP over gRPC needs a Tokio runtime: call this inside one.
    pub fn from_config(config: &OpenTelemetryConfig) -> Result<Self, String> {
        Self::with_scheduled_delay(config, Duration::from_secs(5))
    }

    /// As [`from_config`](Self::from_config), exporting batches every
    /// `delay` (tests use a short one).
    pub fn with_scheduled_delay(
        config: &OpenTelemetryConfig,
        delay: Duration,
    ) -> Result<Self, String> {
        let exporters: Vec<_> = config
            .exporters
            .otlp
            .iter()
            .filter(|e| !e.disable_traces)
            .collect();
        if exporters.is_empty() {
            return Ok(Self::disabled());
        }
        let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(config.trace_sample_rate),
        ));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(
                config
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "switchboard".to_owned()),
            )
            .build();
        #[allow(unused_mut)]
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_resource(resource);
        for exporter in exporters {
            builder = add_exporter(builder, exporter, delay)?;
        }
        Ok(Self {
            provider: Some(builder.build()),
        })
    }

    pub(crate) fn tracer(&self) -> Option<SdkTracer> {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.as_ref().map(|p| p.tracer("switchboard"))
    }

    /// Whether spans are exported.
    pub fn is_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.shutdown();
        }
    }
}

#[cfg(feature = "otlp")]
fn add_exporter(
    builder: opentelemetry_sdk::trace::TracerProviderBuilder,
    exporter: &crate::config::OtlpExporter,
    delay: Duration,
) -> Result<opentelemetry_sdk::trace::TracerProviderBuilder, String> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = exporter.endpoint();
    let built = if exporter.use_http {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(Duration::from_secs(10))
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
    };
    let span_exporter = built.map_err(|e| format!("OTLP exporter: {e}"))?;
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(span_exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(delay)
                .build(),
        )
        .build();
    Ok(builder.with_span_processor(processor))
}

#[cfg(not(feature = "otlp"))]
fn add_exporter(
    builder: opentelemetry_sdk::trace::TracerProviderBuilder,
    _: &crate::config::OtlpExporter,
    _: Duration,
) -> Result<opentelemetry_sdk::trace::TracerProviderBuilder, String> {
    tracing::warn!("built without the `otlp` feature: traces are not exported");
    Ok(builder)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The context of a new request: its server span (child of an incoming
/// `traceparent`) and its [`RequestScope`].
pub(crate) fn request_context(
    scope: Arc<RequestScope>,
    headers: &HeaderMap,
    method: &str,
    endpoint: &str,
    traced: bool,
) -> Context {
    let base = Context::new().with_value(scope.clone());
    let Some(tracer) = scope.tracer.as_ref().filter(|_| traced) else {
        return base;
    };
    let parent =
        TraceContextPropagator::new().extract_with_context(&base, &HeaderExtractor(headers));
    let span = tracer
        .span_builder(format!("{method} {endpoint}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("http.route", endpoint.to_owned()),
        ])
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

fn current_scope(cx: &Context) -> Option<Arc<RequestScope>> {
    cx.get::<Arc<RequestScope>>().cloned()
}

/// A child span of `cx`, when the request is traced. The name and the
/// attributes are only built then: an untraced request formats nothing.
fn child(
    cx: &Context,
    name: impl FnOnce() -> Cow<'static, str>,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Context> {
    let scope = current_scope(cx)?;
    let tracer = scope.tracer.as_ref()?;
    if !cx.has_active_span() {
        return None;
    }
    let span = tracer
        .span_builder(name())
        .with_kind(kind)
        .with_attributes(attributes())
        .start_with_context(tracer, cx);
    Some(cx.with_span(span))
}

/// The context for one backend call of the current request: a child span
/// named after the backend (its host or inventory name), or the current
/// context when the request is not traced. Poll the call with it
/// (`opentelemetry::context::FutureExt::with_context`); the span ends when
/// the context is dropped.
pub fn backend_context(backend: &str) -> Context {
    let cx = Context::current();
    child(
        &cx,
        || Cow::Owned(format!("backend {backend}")),
        SpanKind::Internal,
        || vec![KeyValue::new("switchboard.backend", backend.to_owned())],
    )
    .unwrap_or(cx)
}

/// One attempt at an upstream call: a client span, the `traceparent` sent
/// upstream, the wait noted for the gateway-added latency, failures
/// counted by provider and kind.
///
/// A request that carries an [`UpstreamAttempt`] (the LLM layer's) is an
/// attempt at that provider: the span is named after it, has the GenAI
/// attributes, and stays open until the attempt's usage is final, so that
/// the successful attempt carries the answer's token counts.
#[must_use = "finish the attempt with its outcome"]
pub struct Attempt {
    cx: Option<Context>,
    scope: Option<Arc<RequestScope>>,
    provider: String,
    started: Instant,
    /// The span ends when the provider attempt's usage is final.
    llm: bool,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Attempt {
    /// Starts an attempt of `request` (to `provider`, a bounded name: the
    /// inventory name or the backend host) and writes its `traceparent`.
    pub fn start<B>(request: &mut http::Request<B>, provider: &str) -> Self {
        let cx = Context::current();
        let scope = current_scope(&cx);
        let llm = request.extensions().get::<UpstreamAttempt>().cloned();
        let provider = match &llm {
            Some(attempt) => attempt.provider.to_string(),
            None => provider.to_owned(),
        };
        let span_cx = child(
            &cx,
            || {
                Cow::Owned(match &llm {
                    Some(attempt) => format!("{} {}", attempt.operation, attempt.model),
                    None => format!("{} {provider}", request.method()),
                })
            },
            SpanKind::Client,
            || {
                let mut attributes = vec![
                    KeyValue::new("http.request.method", request.method().as_str().to_owned()),
                    KeyValue::new(
                        "server.address",
                        request.uri().host().unwrap_or_default().to_owned(),
                    ),
                ];
                if let Some(attempt) = &llm {
                    attributes.extend([
                        KeyValue::new("gen_ai.operation.name", attempt.operation),
                        KeyValue::new("gen_ai.provider.name", attempt.provider.to_string()),
                        KeyValue::new("gen_ai.request.model", attempt.model.to_string()),
                        KeyValue::new("switchboard.attempt", i64::from(attempt.number)),
                        KeyValue::new("switchboard.attempt.reason", attempt.reason.as_str()),
                    ]);
                }
                attributes
            },
        );
        if let Some(span_cx) = &span_cx {
            TraceContextPropagator::new()
                .inject_context(span_cx, &mut HeaderInjector(request.headers_mut()));
        }
        if let Some(attempt) = &llm {
            let span_cx = span_cx.clone();
            let metrics = scope.as_ref().map(|s| s.metrics.clone());
            let provider = Arc::clone(&attempt.provider);
            attempt.on_end(move |usage, outcome, kind| {
                if let (Some(kind), Some(metrics)) = (kind, &metrics) {
                    metrics.upstream_error(&provider, kind);
                }
                let Some(span_cx) = span_cx else {
                    return;
                };
                let span = span_cx.span();
                if usage.total_tokens() > 0 || usage.model.is_some() {
                    if let Some(model) = &usage.model {
                        span.set_attribute(KeyValue::new(
                            "gen_ai.response.model",
                            model.to_string(),
                        ));
                    }
                    span.set_attribute(KeyValue::new(
                        "gen_ai.usage.input_tokens",
                        i64::try_from(usage.input_tokens).unwrap_or(i64::MAX),
                    ));
                    span.set_attribute(KeyValue::new(
                        "gen_ai.usage.output_tokens",
                        i64::try_from(usage.output_tokens).unwrap_or(i64::MAX),
                    ));
                }
                if let Some(kind) = kind {
                    span.set_attribute(KeyValue::new("error.type", kind));
                    span.set_status(Status::error(kind));
                } else if outcome == Outcome::Failed {
                    span.set_status(Status::error("the attempt failed"));
                }
                span.end();
            });
        }
        Self {
            cx: span_cx,
            scope,
            provider,
            started: Instant::now(),
            llm: llm.is_some(),
        }
    }

    /// Ends the attempt with the upstream's status.
    pub fn answered(self, status: u16) {
        if let Some(scope) = &self.scope {
            scope.note_wait(self.started.elapsed());
            if status >= 500 {
                scope.metrics.upstream_error(&self.provider, "status_5xx");
            }
        }
        if let Some(cx) = &self.cx {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 || (self.llm && status >= 400) {
                span.set_status(Status::error(format!("upstream answered {status}")));
            }
            // A provider attempt's answer ends with its usage.
            if !self.llm || status >= 400 {
                span.end();
            }
        }
    }

    /// Ends the attempt as failed with `kind` (`connect`, `connection`,
    /// `timeout`, …).
    pub fn failed(self, kind: &'static str) {
        if let Some(scope) = &self.scope {
            scope.note_wait(self.started.elapsed());
            scope.metrics.upstream_error(&self.provider, kind);
        }
        if let Some(cx) = &self.cx {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(kind));
            span.end();
        }
    }
}

/// Sets GenAI semantic-convention attributes on the current span (the LLM
/// layer calls it with what it knows before the call: operation, request
/// model).
pub fn set_genai_request(cx: &Context, operation: &str, provider: &str, request_model: &str) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("gen_ai.operation.name", operation.to_owned()));
    span.set_attribute(KeyValue::new("gen_ai.provider.name", provider.to_owned()));
    span.set_attribute(KeyValue::new(
        "gen_ai.request.model",
        request_model.to_owned(),
    ));
}
