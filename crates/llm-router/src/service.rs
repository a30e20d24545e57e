use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use switchboard_core::buffer::{is_json_content_type, request_bytes, response_bytes};
use switchboard_core::{
    AttemptReason, Body, BoxError, ErrorResponse, Outcome, UpstreamAttempt, UsageReport,
};
use tower::{Service, ServiceExt};

use crate::body::TranslateBody;
use crate::config::Provider;
use crate::format::ClientFormat;
use crate::ir::{ChatRequest, LlmError};
use crate::layer::{SelectedProvider, Shared};

/// The most bytes of a vendor error body that are read.
const ERROR_BODY_LIMIT: usize = 1024 * 1024;

/// The service [`RouteLlmLayer`](crate::RouteLlmLayer) makes: see there.
pub struct RouteLlm<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for RouteLlm<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for RouteLlm<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLlm").finish_non_exhaustive()
    }
}

impl<S> RouteLlm<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S> Service<Request<Body>> for RouteLlm<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is made ready when the vendor is called, after
        // the client's body has been read.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Take the clone that is ready-agnostic and leave a fresh one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move { Ok(handle(shared, inner, request).await) })
    }
}

fn from_error_response(err: &ErrorResponse) -> LlmError {
    LlmError::new(err.status(), err.message())
}

async fn handle<S>(shared: Arc<Shared>, inner: S, request: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let selected = request
        .extensions()
        .get::<SelectedProvider>()
        .and_then(|s| shared.providers.get(&s.0));
    let Some(first_choice) = selected.or_else(|| shared.providers.iter().nth(shared.default))
    else {
        return ClientFormat::Unified.error_response(&LlmError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no LLM provider is configured",
        ));
    };
    let format = shared.format.unwrap_or(first_choice.format());
    if request.method() == Method::GET {
        return models_response(&shared, format);
    }
    if request.method() != Method::POST {
        return format.error_response(&LlmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a chat request is a POST",
        ));
    }
    let (mut parts, bytes) = match request_bytes(request).await {
        Ok(read) => read,
        Err(err) => return format.error_response(&from_error_response(&err)),
    };
    let mut chat = match format.parse_request(&bytes) {
        Ok(chat) => chat,
        Err(err) => return format.error_response(&err),
    };
    if shared.stream {
        chat.stream = true;
    }
    if let Some(routing) = &shared.routing {
        let body = match parts.extensions.get::<switchboard_core::JsonBody>() {
            Some(json) => Some(json.clone()),
            None if routing.reads_body() => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .map(switchboard_core::JsonBody::new),
            None => None,
        };
        drop(bytes);
        return crate::failover::serve(
            &shared.providers,
            routing,
            shared.response_limit,
            inner,
            parts,
            chat,
            body,
            format,
        )
        .await;
    }
    drop(bytes);
    let mut provider = first_choice;
    if selected.is_none()
        && shared.route_by_model
        && let Some(named) = chat.model.as_deref().and_then(|m| shared.providers.get(m))
    {
        provider = named;
        // The name chose the provider; its own model answers.
        chat.model = None;
    }
    if shared.stream {
        chat.stream = true;
    }
    apply_variables(&mut chat, provider);
    let adapter = provider.adapter();
    let settings = provider.settings();
    if let Err(err) = adapter.check_request(&chat) {
        return format.error_response(&err);
    }
    if let Some(field) = chat.client_fields.keys().next()
        && adapter.native_dialect() != chat.client_dialect
    {
        return format.error_response(&LlmError::unsupported(field, adapter.vendor()));
    }
    let upstream = match adapter.build_request(&chat, settings) {
        Ok(upstream) => upstream,
        Err(err) => return format.error_response(&err),
    };
    let model: Arc<str> = Arc::from(settings.model_for(&chat));
    let report = UsageReport::get_or_insert(&mut parts.extensions);
    let (mut upstream_parts, body) = upstream.into_parts();
    // The vendor request carries the adapter's headers only (never the
    // client's Authorization) but keeps the request context.
    upstream_parts.extensions = std::mem::take(&mut parts.extensions);
    // The one attempt: its answer, whatever it is, is the client's.
    let tracker = UpstreamAttempt::new(
        provider.name(),
        Arc::clone(&model),
        "chat",
        1,
        AttemptReason::First,
    );
    tracker.commit(&report);
    upstream_parts.extensions.insert(tracker);
    upstream_parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let upstream = Request::from_parts(upstream_parts, Body::from(body));
    if provider.debug() {
        tracing::debug!(provider = provider.name(), vendor = adapter.vendor(), model = %model, stream = chat.stream, "calling the LLM provider");
    }
    let response = match inner.oneshot(upstream).await {
        Ok(response) => response,
        Err(err) => {
            let err: BoxError = err.into();
            tracing::warn!(provider = provider.name(), error = %err, "LLM provider call failed");
            report.finish(Outcome::Failed);
            return format.error_response(&LlmError::bad_upstream(
                "the LLM provider could not be reached",
            ));
        }
    };
    let status = response.status();
    if provider.debug() {
        tracing::debug!(
            provider = provider.name(),
            status = status.as_u16(),
            "LLM provider answered"
        );
    }
    if !status.is_success() {
        report.finish(Outcome::Failed);
        let (parts, body) = match response_bytes(response, ERROR_BODY_LIMIT).await {
            Ok(read) => read,
            Err(err) => return format.error_response(&from_error_response(&err)),
        };
        let err = adapter.parse_error(status, &parts.headers, &body);
        return format.error_response(&err);
    }
    if chat.stream && !is_json_content_type(response.headers()) {
        return stream_response(provider, format, &chat, model, report, response);
    }
    let body = match response_bytes(response, shared.response_limit).await {
        Ok((_, body)) => body,
        Err(err) => {
            report.finish(Outcome::Failed);
            return format.error_response(&from_error_response(&err));
        }
    };
    match adapter.parse_response(&body) {
        Ok(answer) => {
            let answered_by = answer.model.as_deref().unwrap_or(&model);
            report.record(answer.usage.to_core(provider.name(), answered_by));
            report.finish(Outcome::Complete);
            // A vendor that answered whole although a stream was asked:
            // the client still gets the stream it asked for, in one burst.
            if chat.stream
                && let Some(mut encoder) = format.stream_encoder(&model, chat.include_usage)
            {
                let mut out = Vec::new();
                for event in answer.to_events() {
                    encoder.encode(&event, &mut out);
                }
                encoder.finish(&mut out);
                let mut response = Response::new(Body::from(out));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                return response;
            }
            json_response(format.render_response(&answer, &model))
        }
        Err(err) => {
            report.finish(Outcome::Failed);
            format.error_response(&err)
        }
    }
}

pub(crate) fn stream_response(
    provider: &Provider,
    format: ClientFormat,
    chat: &ChatRequest,
    model: Arc<str>,
    report: UsageReport,
    response: Response<Body>,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let encoder = format.stream_encoder(&model, chat.include_usage);
    let passthrough = encoder.is_none();
    let body = TranslateBody::new(
        body,
        provider.adapter().stream_decoder(),
        encoder,
        report,
        Arc::from(provider.name()),
        model,
    );
    parts.headers.remove(CONTENT_LENGTH);
    if !passthrough {
        let headers = &mut parts.headers;
        let keep: Vec<_> = [http::header::HeaderName::from_static("x-request-id")]
            .into_iter()
            .filter_map(|name| headers.get(&name).cloned().map(|v| (name, v)))
            .collect();
        headers.clear();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        for (name, value) in keep {
            headers.insert(name, value);
        }
    }
    Response::from_parts(parts, Body::new(body))
}

pub(crate) fn json_response(body: Bytes) -> Response<Body> {
    let length = body.len();
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// The inventory as a model list: OpenAI's `{"object": "list"}` or
/// Anthropic's `{"data", "has_more"}`. A provider's inventory name is the
/// model id a client names to choose it.
fn models_response(shared: &Shared, format: ClientFormat) -> Response<Body> {
    let providers = || shared.providers.iter();
    let value = match format {
        ClientFormat::Anthropic => {
            let data: Vec<Value> = providers()
                .map(|p| {
                    json!({"type": "model", "id": p.name(), "display_name": p.name(),
                        "created_at": "1970-01-01T00:00:00Z"})
                })
                .collect();
            json!({
                "data": data,
                "has_more": false,
                "first_id": providers().next().map(Provider::name),
                "last_id": providers().last().map(Provider::name),
            })
        }
        _ => {
            let data: Vec<Value> = providers()
                .map(|p| {
                    json!({"id": p.name(), "object": "model", "created": 0,
                        "owned_by": p.adapter().vendor()})
                })
                .collect();
            json!({"object": "list", "data": data})
        }
    };
    json_response(Bytes::from(value.to_string()))
}

/// Fills what the client left unset from the provider's `variables`;
/// `extra_payload` is merged into the vendor body as it is.
pub(crate) fn apply_variables(chat: &mut ChatRequest, provider: &Provider) {
    let variables = &provider.settings().variables;
    let get = |names: &[&str]| names.iter().find_map(|n| variables.get(*n));
    if chat.max_tokens.is_none() {
        chat.max_tokens = get(&["max_tokens", "max_output_tokens"]).and_then(Value::as_u64);
    }
    if chat.temperature.is_none() {
        chat.temperature = get(&["temperature"]).and_then(Value::as_f64);
    }
    if chat.top_p.is_none() {
        chat.top_p = get(&["top_p"]).and_then(Value::as_f64);
    }
    if chat.top_k.is_none() {
        chat.top_k = get(&["top_k"]).and_then(Value::as_u64);
    }
    if chat.n.is_none() {
        chat.n = get(&["n", "candidate_count"])
            .and_then(Value::as_u64)
            .filter(|n| *n > 1)
            .map(|n| n as u32);
    }
    if chat.seed.is_none() {
        chat.seed = get(&["seed", "random_seed"]).and_then(Value::as_i64);
    }
    if chat.stop.is_empty() {
        match get(&["stop", "stop_sequences"]) {
            Some(Value::String(s)) => chat.stop = vec![s.clone()],
            Some(Value::Array(items)) => {
                chat.stop = items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
            }
            _ => {}
        }
    }
    if let Some(Value::Object(extra)) = variables.get("extra_payload") {
        for (key, value) in extra {
            chat.extra.insert(key.clone(), value.clone());
        }
    }
}
