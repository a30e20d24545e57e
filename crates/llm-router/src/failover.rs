//! `ai/router` at request time: the routing decision, the classifier call,
//! then the attempts along the chain — retries with backoff, circuit
//! breakers, failover — and fan-out. See the crate's "Failure semantics".
//!
//! A streamed answer is held back until its first real event (text, a tool
//! call, a finish): an error event or a cut stream before that is a failure
//! that fails over, and nothing has reached the client. Once that event is
//! released the answer is committed: a later failure becomes an error event
//! in the same stream, never a second answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode, request};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use switchboard_core::buffer::response_bytes;
use switchboard_core::{
    AttemptReason, Body, BoxError, ConfigError, JsonBody, Outcome, SHOULD_RETRY, UpstreamAttempt,
    UsageReport,
};
use tower::{Service, ServiceExt};

use crate::config::{Provider, Providers};
use crate::format::ClientFormat;
use crate::ir::{ChatRequest, LlmError, StreamEvent};
use crate::routing::notdiamond::{Candidate, parse_choice};
use crate::routing::retry::{is_error_body, retry_after, status_is_failure};
use crate::routing::{
    Breakers, Budget, CircuitBreaker, Classifiers, FailureKind, FanOutMode, Plan, RetryPolicy,
    Router, RouterConfig,
};
use crate::service::{apply_variables, json_response, stream_response};

/// The most bytes of a vendor error body (or a classifier answer) read.
const ERROR_BODY_LIMIT: usize = 1024 * 1024;

/// How long a classifier may take when no attempt timeout is set.
const CLASSIFIER_TIMEOUT: Duration = Duration::from_secs(10);

/// The compiled `ai/router` of one backend.
pub(crate) struct Routing {
    router: Router,
    retry: RetryPolicy,
    attempt_timeout: Option<Duration>,
    /// One breaker per provider of the inventory, when configured.
    breakers: Vec<Option<Arc<CircuitBreaker>>>,
}

impl Routing {
    /// Compiles `ai/router` over `providers` (errors relative to it).
    pub(crate) fn compile(
        config: &RouterConfig,
        classifiers: Arc<Classifiers>,
        providers: &Providers,
        registry: Option<&Breakers>,
    ) -> Result<Self, ConfigError> {
        let names: Vec<&str> = providers.iter().map(Provider::name).collect();
        let router = Router::compile(config, classifiers, &names)?;
        let retry = match &config.retry {
            Some(retry) => RetryPolicy::from_config(retry).map_err(|e| e.at("retry"))?,
            None => RetryPolicy::default(),
        };
        let attempt_timeout = match config
            .retry
            .as_ref()
            .and_then(|r| r.attempt_timeout.as_deref())
        {
            None => None,
            Some(text) => Some(
                switchboard_core::config::parse_duration(text)
                    .map_err(|m| ConfigError::new("retry.attempt_timeout", m))?,
            )
            .filter(|d| !d.is_zero()),
        };
        if let Some(breaker) = &config.circuit_breaker {
            breaker.check().map_err(|e| e.at("circuit_breaker"))?;
        }
        let breakers = names
            .iter()
            .map(|name| {
                config.circuit_breaker.as_ref().map(|c| match registry {
                    Some(registry) => registry.get(name, c),
                    None => Arc::new(CircuitBreaker::new(name, c)),
                })
            })
            .collect();
        Ok(Self {
            router,
            retry,
            attempt_timeout,
            breakers,
        })
    }

    /// Whether a decision reads the JSON body.
    pub(crate) fn reads_body(&self) -> bool {
        self.router.reads_body()
    }
}

/// One attempt's result.
enum Attempt {
    /// An answer the client gets (committed).
    Answer(Response<Body>),
    /// The request itself is at fault (a 400 from the vendor): answered as
    /// it is, no failover.
    Refused(Response<Body>),
    /// The provider failed.
    Failed {
        kind: FailureKind,
        retry_after: Option<Duration>,
        error: LlmError,
    },
}

/// What every attempt of one request shares.
struct Call<'a> {
    providers: &'a Providers,
    routing: &'a Routing,
    chat: &'a ChatRequest,
    extensions: &'a http::Extensions,
    format: ClientFormat,
    response_limit: usize,
    /// Attempts made so far, to number the next one.
    attempts: AtomicU32,
}

/// Serves one chat request through the router.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<S>(
    providers: &Providers,
    routing: &Routing,
    response_limit: usize,
    inner: S,
    mut parts: request::Parts,
    mut chat: ChatRequest,
    body: Option<JsonBody>,
    format: ClientFormat,
) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let report = UsageReport::get_or_insert(&mut parts.extensions);
    let probe = Request::from_parts(parts, ());
    let plan = match routing.router.decide(&probe, body.as_ref()) {
        Ok(plan) => plan,
        Err(error) => {
            report.finish(Outcome::Failed);
            let mut err = LlmError::new(error.status(), error.message());
            err.code = Some("no_route_matched".to_owned());
            return final_error(format, &err);
        }
    };
    if let Some(model) = chat.model.as_deref()
        && routing.router.knows_model(model)
    {
        // The name chose the provider; each provider's own model answers.
        chat.model = None;
    }
    let chain = match plan {
        Plan::Chain(chain) => chain,
        Plan::Classify {
            classifier,
            candidates,
            failover,
        } => {
            let choice = classify(
                providers,
                routing,
                inner.clone(),
                &probe,
                body.as_ref(),
                classifier,
                &candidates,
            )
            .await;
            Plan::after_classification(&candidates, failover, choice)
        }
        Plan::FanOut {
            providers: targets,
            mode,
        } => {
            let (parts, ()) = probe.into_parts();
            let call = Call {
                providers,
                routing,
                chat: &chat,
                extensions: &parts.extensions,
                format,
                response_limit,
                attempts: AtomicU32::new(0),
            };
            return fan_out(&call, inner, &targets, mode, &report).await;
        }
    };
    let (parts, ()) = probe.into_parts();
    if chain.is_empty() {
        report.finish(Outcome::Failed);
        return final_error(
            format,
            &LlmError::bad_upstream(
                "the classifier chose no provider and the route has no failover",
            ),
        );
    }
    let call = Call {
        providers,
        routing,
        chat: &chat,
        extensions: &parts.extensions,
        format,
        response_limit,
        attempts: AtomicU32::new(0),
    };
    run_chain(&call, inner, &chain, &report).await
}

/// Tries the chain in order, each provider up to `retry.attempts` times.
async fn run_chain<S>(
    call: &Call<'_>,
    inner: S,
    chain: &[usize],
    report: &UsageReport,
) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let retry = &call.routing.retry;
    let mut budget = Budget::new(retry, std::time::Instant::now());
    let mut last: Option<LlmError> = None;
    'chain: for (position, &index) in chain.iter().enumerate() {
        let Some(provider) = call.providers.iter().nth(index) else {
            continue;
        };
        let mut tries = 0;
        while tries < retry.attempts {
            tries += 1;
            let reason = if tries > 1 {
                AttemptReason::Retry
            } else if position > 0 {
                AttemptReason::Failover
            } else {
                AttemptReason::First
            };
            let step = attempt_with_breaker(
                call,
                inner.clone(),
                index,
                provider,
                &mut budget,
                report,
                reason,
            )
            .await;
            match step {
                Step::Done(response) => return response,
                Step::OutOfBudget => break 'chain,
                Step::Skip(error) => {
                    last = Some(error);
                    continue 'chain;
                }
                Step::Failed {
                    kind,
                    retry_after,
                    error,
                } => {
                    tracing::info!(provider = provider.name(), attempt = tries, ?kind, error = %error.message, "LLM provider failed");
                    last = Some(error);
                    if !kind.is_retryable() || tries >= retry.attempts {
                        break;
                    }
                    let Some(wait) = retry.wait(tries, retry_after) else {
                        break;
                    };
                    if !budget.may_wait(wait, std::time::Instant::now()) {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    report.finish(Outcome::Failed);
    let error = last.unwrap_or_else(|| {
        LlmError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the request's attempt budget or deadline ran out",
        )
    });
    final_error(call.format, &error)
}

enum Step {
    Done(Response<Body>),
    OutOfBudget,
    /// Not called (open breaker): go to the next provider.
    Skip(LlmError),
    Failed {
        kind: FailureKind,
        retry_after: Option<Duration>,
        error: LlmError,
    },
}

async fn attempt_with_breaker<S>(
    call: &Call<'_>,
    inner: S,
    index: usize,
    provider: &Provider,
    budget: &mut Budget,
    report: &UsageReport,
    reason: AttemptReason,
) -> Step
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let breaker = call.routing.breakers.get(index).and_then(Option::as_ref);
    let permit = match breaker {
        None => None,
        Some(breaker) => match breaker.try_acquire(std::time::Instant::now()) {
            Some(permit) => Some(permit),
            None => {
                tracing::debug!(provider = provider.name(), "circuit open: provider skipped");
                return Step::Skip(LlmError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("provider {} is unavailable (circuit open)", provider.name()),
                ));
            }
        },
    };
    if !budget.take(std::time::Instant::now()) {
        return Step::OutOfBudget;
    }
    let timeout = attempt_timeout(call.routing.attempt_timeout, budget.deadline());
    match attempt(call, inner, provider, timeout, report, reason).await {
        Attempt::Answer(response) | Attempt::Refused(response) => {
            if let Some(permit) = permit {
                permit.succeeded(std::time::Instant::now());
            }
            Step::Done(response)
        }
        Attempt::Failed {
            kind,
            retry_after,
            error,
        } => {
            if let Some(permit) = permit {
                if kind.counts_for_breaker() {
                    permit.failed(std::time::Instant::now());
                } else {
                    drop(permit);
                }
            }
            Step::Failed {
                kind,
                retry_after,
                error,
            }
        }
    }
}

fn attempt_timeout(
    attempt: Option<Duration>,
    deadline: Option<std::time::Instant>,
) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
    match (attempt, left) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

/// One call to one provider. `report` is finished only when the attempt
/// answers (or the committed stream ends). The vendor request carries an
/// [`UpstreamAttempt`] for the layers below (spans, failures by provider);
/// it ends with the answer's usage when the answer is committed, failed
/// otherwise.
async fn attempt<S>(
    call: &Call<'_>,
    inner: S,
    provider: &Provider,
    timeout: Option<Duration>,
    report: &UsageReport,
    reason: AttemptReason,
) -> Attempt
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let tracker = UpstreamAttempt::new(
        provider.name(),
        provider.settings().model_for(call.chat),
        "chat",
        call.attempts.fetch_add(1, Ordering::Relaxed) + 1,
        reason,
    );
    let work = attempt_untimed(call, inner, provider, report, &tracker);
    let outcome = match timeout {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => Attempt::Failed {
                kind: FailureKind::Timeout,
                retry_after: None,
                error: LlmError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("provider {} did not answer in time", provider.name()),
                ),
            },
        },
    };
    match &outcome {
        Attempt::Answer(_) | Attempt::Refused(_) => tracker.commit(report),
        // The HTTP exchange showed the status and counted it.
        Attempt::Failed {
            kind: FailureKind::Status(_) | FailureKind::Unsupported | FailureKind::CircuitOpen,
            ..
        } => tracker.usage.finish(Outcome::Failed),
        Attempt::Failed {
            kind: FailureKind::Timeout,
            ..
        } => tracker.fail("timeout"),
        Attempt::Failed {
            kind: FailureKind::ErrorBody,
            ..
        } => tracker.fail("error_body"),
        Attempt::Failed { .. } => tracker.fail("connection"),
    }
    outcome
}

async fn attempt_untimed<S>(
    call: &Call<'_>,
    inner: S,
    provider: &Provider,
    report: &UsageReport,
    tracker: &UpstreamAttempt,
) -> Attempt
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let mut chat = call.chat.clone();
    apply_variables(&mut chat, provider);
    let adapter = provider.adapter();
    let settings = provider.settings();
    let unsupported = |error: LlmError| Attempt::Failed {
        kind: FailureKind::Unsupported,
        retry_after: None,
        error,
    };
    if let Err(err) = adapter.check_request(&chat) {
        return unsupported(err);
    }
    let upstream = match adapter.build_request(&chat, settings) {
        Ok(upstream) => upstream,
        Err(err) => return unsupported(err),
    };
    let model: Arc<str> = Arc::from(settings.model_for(&chat));
    let (mut upstream_parts, body) = upstream.into_parts();
    upstream_parts.extensions = call.extensions.clone();
    upstream_parts.extensions.insert(tracker.clone());
    upstream_parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let upstream = Request::from_parts(upstream_parts, Body::from(body));
    let response = match inner.oneshot(upstream).await {
        Ok(response) => response,
        Err(err) => {
            let err: BoxError = err.into();
            return Attempt::Failed {
                kind: FailureKind::Connect,
                retry_after: None,
                error: LlmError::bad_upstream(format!(
                    "provider {} could not be reached: {err}",
                    provider.name()
                )),
            };
        }
    };
    let status = response.status();
    if !status.is_success() {
        let wait = retry_after(response.headers());
        let (parts, body) = match response_bytes(response, ERROR_BODY_LIMIT).await {
            Ok(read) => read,
            Err(err) => {
                return Attempt::Failed {
                    kind: FailureKind::Connect,
                    retry_after: None,
                    error: LlmError::new(err.status(), err.message()),
                };
            }
        };
        let error = adapter.parse_error(status, &parts.headers, &body);
        if status_is_failure(status) {
            return Attempt::Failed {
                kind: FailureKind::Status(status),
                retry_after: wait,
                error,
            };
        }
        report.finish(Outcome::Failed);
        return Attempt::Refused(call.format.error_response(&error));
    }
    if chat.stream {
        return hold_back(call.format, provider, &chat, model, report, response).await;
    }
    let body = match response_bytes(response, call.response_limit).await {
        Ok((_, body)) => body,
        Err(err) => {
            return Attempt::Failed {
                kind: FailureKind::Connect,
                retry_after: None,
                error: LlmError::new(err.status(), err.message()),
            };
        }
    };
    if serde_json::from_slice::<Value>(&body).is_ok_and(|v| is_error_body(&v)) {
        let error = adapter.parse_error(StatusCode::BAD_GATEWAY, &http::HeaderMap::new(), &body);
        return Attempt::Failed {
            kind: FailureKind::ErrorBody,
            retry_after: None,
            error,
        };
    }
    match adapter.parse_response(&body) {
        Ok(answer) => {
            let answered_by = answer.model.as_deref().unwrap_or(&model);
            report.record(answer.usage.to_core(provider.name(), answered_by));
            report.finish(Outcome::Complete);
            Attempt::Answer(json_response(call.format.render_response(&answer, &model)))
        }
        Err(error) => Attempt::Failed {
            kind: FailureKind::ErrorBody,
            retry_after: None,
            error,
        },
    }
}

/// Whether an event shows the answer is real (not only its start).
fn is_real(event: &StreamEvent) -> bool {
    match event {
        StreamEvent::Start { .. } | StreamEvent::Error(_) | StreamEvent::Usage(_) => false,
        StreamEvent::TextDelta { text, .. } => !text.is_empty(),
        _ => true,
    }
}

/// Reads a streamed answer until its first real event, holding the bytes
/// back; then releases them and streams the rest. An error event, a cut
/// connection or an end before that is a failure.
async fn hold_back(
    format: ClientFormat,
    provider: &Provider,
    chat: &ChatRequest,
    model: Arc<str>,
    report: &UsageReport,
    response: Response<Body>,
) -> Attempt {
    let (parts, mut body) = response.into_parts();
    let mut decoder = provider.adapter().stream_decoder();
    let mut held: Vec<Bytes> = Vec::new();
    let mut events = Vec::new();
    let failed = |error: LlmError| Attempt::Failed {
        kind: FailureKind::ErrorBody,
        retry_after: None,
        error,
    };
    loop {
        match body.frame().await {
            None => {
                decoder.finish(&mut events);
                if let Some(StreamEvent::Error(error)) =
                    events.iter().find(|e| matches!(e, StreamEvent::Error(_)))
                {
                    return failed(error.clone());
                }
                break;
            }
            Some(Err(err)) => {
                return Attempt::Failed {
                    kind: FailureKind::Connect,
                    retry_after: None,
                    error: LlmError::bad_upstream(format!(
                        "provider {} broke its stream before answering: {err}",
                        provider.name()
                    )),
                };
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                decoder.decode(&data, &mut events);
                held.push(data);
                for event in &events {
                    match event {
                        StreamEvent::Error(error) => return failed(error.clone()),
                        event if is_real(event) => {
                            return Attempt::Answer(release(
                                format, provider, chat, model, report, parts, held, body,
                            ));
                        }
                        _ => {}
                    }
                }
                events.clear();
            }
        }
    }
    // A clean end with no real event: an empty answer, released as it is.
    Attempt::Answer(release(
        format,
        provider,
        chat,
        model,
        report,
        parts,
        held,
        Body::empty(),
    ))
}

#[allow(clippy::too_many_arguments)]
fn release(
    format: ClientFormat,
    provider: &Provider,
    chat: &ChatRequest,
    model: Arc<str>,
    report: &UsageReport,
    parts: http::response::Parts,
    held: Vec<Bytes>,
    rest: Body,
) -> Response<Body> {
    let replay = futures_util::stream::iter(held.into_iter().map(Ok::<Bytes, BoxError>));
    let rest = rest.into_data_stream().map(|r| r.map_err(BoxError::from));
    let body = Body::from_stream(replay.chain(rest));
    stream_response(
        provider,
        format,
        chat,
        model,
        report.clone(),
        Response::from_parts(parts, body),
    )
}

/// Asks the classifier; `None` when it gives no usable answer.
async fn classify<S>(
    providers: &Providers,
    routing: &Routing,
    inner: S,
    request: &Request<()>,
    body: Option<&JsonBody>,
    classifier: usize,
    candidates: &[usize],
) -> Option<usize>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let classifiers = routing.router.classifiers();
    let engine = classifiers.classifier(classifier)?;
    let content = engine.content(request, body)?;
    let names: Vec<Candidate> = candidates
        .iter()
        .filter_map(|i| providers.iter().nth(*i))
        .map(|p| Candidate::new(p.adapter().vendor(), &p.settings().model))
        .collect();
    let (parts, bytes) = engine.request(&content, &names).into_parts();
    let ask = async {
        let response = inner
            .oneshot(Request::from_parts(parts, Body::from(bytes)))
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let (_, body) = response_bytes(response, ERROR_BODY_LIMIT).await.ok()?;
        parse_choice(&body, &names)
    };
    let limit = routing.attempt_timeout.unwrap_or(CLASSIFIER_TIMEOUT);
    let choice = tokio::time::timeout(limit, ask).await.ok().flatten();
    if choice.is_none() {
        tracing::info!(
            classifier = classifiers.classifier_name(classifier),
            "the classifier gave no answer: failover"
        );
    }
    choice
}

/// Sends to every target at once: `first` answers with the first good
/// answer and cancels the rest; `all` groups every answer per provider.
async fn fan_out<S>(
    call: &Call<'_>,
    inner: S,
    targets: &[usize],
    mode: FanOutMode,
    report: &UsageReport,
) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let providers: Vec<(usize, &Provider)> = targets
        .iter()
        .filter_map(|i| call.providers.iter().nth(*i).map(|p| (*i, p)))
        .collect();
    match mode {
        FanOutMode::First => {
            let attempts: Vec<BoxFuture<'_, Result<Response<Body>, LlmError>>> = providers
                .iter()
                .map(|(index, provider)| {
                    let inner = inner.clone();
                    let fut = async move {
                        let mut budget =
                            Budget::new(&call.routing.retry, std::time::Instant::now());
                        let step = attempt_with_breaker(
                            call,
                            inner,
                            *index,
                            provider,
                            &mut budget,
                            report,
                            AttemptReason::FanOut,
                        )
                        .await;
                        match step {
                            Step::Done(response) if response.status().is_success() => Ok(response),
                            Step::Done(response) => Err(LlmError::new(
                                response.status(),
                                format!("provider {} refused the request", provider.name()),
                            )),
                            Step::Skip(error) | Step::Failed { error, .. } => Err(error),
                            Step::OutOfBudget => Err(LlmError::new(
                                StatusCode::GATEWAY_TIMEOUT,
                                "the request's deadline ran out",
                            )),
                        }
                    };
                    Box::pin(fut) as BoxFuture<'_, _>
                })
                .collect();
            match futures_util::future::select_ok(attempts).await {
                Ok((response, _cancelled)) => response,
                Err(error) => {
                    report.finish(Outcome::Failed);
                    final_error(call.format, &error)
                }
            }
        }
        FanOutMode::All => {
            if call.chat.stream {
                report.finish(Outcome::Failed);
                return call.format.error_response(&LlmError::new(
                    StatusCode::BAD_REQUEST,
                    "a fan-out to every provider answers one JSON document: it cannot stream",
                ));
            }
            let attempts = providers.iter().map(|(index, provider)| {
                let inner = inner.clone();
                async move {
                    let own = UsageReport::new();
                    let mut budget = Budget::new(&call.routing.retry, std::time::Instant::now());
                    let step = attempt_with_breaker(
                        call,
                        inner,
                        *index,
                        provider,
                        &mut budget,
                        &own,
                        AttemptReason::FanOut,
                    )
                    .await;
                    (provider.name(), step, own)
                }
            });
            let results = futures_util::future::join_all(attempts).await;
            let mut grouped = Map::new();
            let mut completed = true;
            let mut total: Option<switchboard_core::Usage> = None;
            for (name, step, own) in results {
                let value = match step {
                    Step::Done(response) if response.status().is_success() => {
                        if let Some(usage) = own.usage() {
                            let sum =
                                total.get_or_insert_with(|| switchboard_core::Usage::new(0, 0));
                            sum.input_tokens += usage.input_tokens;
                            sum.output_tokens += usage.output_tokens;
                            sum.cached_tokens += usage.cached_tokens;
                            sum.reasoning_tokens += usage.reasoning_tokens;
                        }
                        match response_bytes(response, call.response_limit).await {
                            Ok((_, body)) => serde_json::from_slice(&body).unwrap_or(Value::Null),
                            Err(err) => {
                                completed = false;
                                error_value(&LlmError::new(err.status(), err.message()))
                            }
                        }
                    }
                    Step::Done(response) => {
                        completed = false;
                        let status = response.status();
                        match response_bytes(response, ERROR_BODY_LIMIT).await {
                            Ok((_, body)) => serde_json::from_slice(&body).unwrap_or_else(|_| {
                                error_value(&LlmError::new(status, "the provider refused"))
                            }),
                            Err(_) => error_value(&LlmError::new(status, "the provider refused")),
                        }
                    }
                    Step::Skip(error) | Step::Failed { error, .. } => {
                        completed = false;
                        error_value(&error)
                    }
                    Step::OutOfBudget => {
                        completed = false;
                        error_value(&LlmError::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            "the request's deadline ran out",
                        ))
                    }
                };
                grouped.insert(name.to_owned(), value);
            }
            if let Some(total) = total {
                report.record(total);
            }
            report.finish(if completed {
                Outcome::Complete
            } else {
                Outcome::Failed
            });
            let mut response = json_response(Bytes::from(Value::Object(grouped).to_string()));
            response.headers_mut().insert(
                http::HeaderName::from_static("x-krakend-completed"),
                HeaderValue::from_static(if completed { "true" } else { "false" }),
            );
            response
        }
    }
}

fn error_value(error: &LlmError) -> Value {
    serde_json::json!({"error": {
        "status": error.status.as_u16(),
        "message": error.message,
        "code": error.code,
    }})
}

/// The error after the gateway gave up: the client's SDK must not retry
/// what the gateway already retried and failed over.
fn final_error(format: ClientFormat, error: &LlmError) -> Response<Body> {
    let mut response = format.error_response(error);
    response
        .headers_mut()
        .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    if !response.headers().contains_key(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}
