//! The heart of an endpoint: expands each backend's URL, forwards the
//! allowed headers and query strings, calls the backends (in parallel when
//! there are several) and writes the response in the endpoint's encoding.

mod reshape;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    HeaderName, HeaderValue, LOCATION, REFERER, TRANSFER_ENCODING, USER_AGENT,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, request};
use http_body::Body as _;
use serde_json::{Map, Value};
use switchboard_core::buffer::{collect, is_event_stream, response_bytes};
use switchboard_core::future::BoxFuture;
use switchboard_core::{
    Body, BodyLimit, Claims, ErrorResponse, JsonBody, KrakendError, RouteParams,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::{CoalesceBody, GunzipBody, IdleTimeoutBody};
use crate::config::Encoding;
use crate::forward::{HeaderFilter, QueryFilter};
use crate::namespaces::PipelineService;
use crate::strategy::{Condition, Strategy};
use crate::upstream::{CallBudget, CallDepth};
use crate::url_pattern::{UrlPattern, Values, claim_to_string};
use switchboard_core::krakend::{query_value, strip_hop_by_hop};

use reshape::sort_keys;
pub(crate) use reshape::{Shape, reshape};

/// A backend's whole pipeline (its layers and the upstream), behind the one
/// box each backend has: calling it clones the static service inside
/// (reference counts, no allocation) and boxes its future once.
pub(crate) type BackendService = Box<dyn CallBackend>;

/// The object-safe face of a backend pipeline.
pub(crate) trait CallBackend: Send + Sync {
    /// Calls a fresh clone of the pipeline.
    fn call(&self, request: Request<Body>) -> BoxFuture<Response<Body>>;
}

/// A static pipeline as a [`CallBackend`].
pub(crate) struct Backend<S>(pub(crate) S);

impl<S: PipelineService> CallBackend for Backend<S> {
    fn call(&self, request: Request<Body>) -> BoxFuture<Response<Body>> {
        let call = self.0.clone().oneshot(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
    }
}

/// KrakenD's header saying whether every backend answered.
pub(crate) const COMPLETED: HeaderName = HeaderName::from_static("x-krakend-completed");

/// The most bytes of an upstream response that are buffered.
const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// The `User-Agent` the gateway sends upstream (KrakenD sends `KrakenD
/// Version X`): a product token with Switchboard's version. When the client's
/// own `User-Agent` is forwarded, this goes in `X-Forwarded-Via` instead.
pub const USER_AGENT_VALUE: &str = concat!("Switchboard/", env!("CARGO_PKG_VERSION"));

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_VIA: HeaderName = HeaderName::from_static("x-forwarded-via");

/// How many redirects a backend call follows (Go's client, which KrakenD
/// uses, stops after 10).
const MAX_REDIRECTS: usize = 10;

/// A backend request, and whether its `Accept-Encoding: gzip` is the
/// gateway's own: a gzip answer is then decompressed before anything
/// reads it.
pub(crate) struct Upstream {
    pub(crate) request: Request<Body>,
    pub(crate) gzip: bool,
}

/// One backend as the endpoint calls it.
pub(crate) struct BackendRoute {
    pub(crate) pattern: UrlPattern,
    pub(crate) method: Method,
    pub(crate) hosts: Vec<String>,
    /// Each host's `Host` header value, made once (see
    /// [`BackendRoute::host_values`]).
    pub(crate) host_values: Vec<Option<HeaderValue>>,
    pub(crate) next_host: AtomicUsize,
    pub(crate) encoding: Encoding,
    pub(crate) shape: Shape,
    pub(crate) service: BackendService,
    /// The upstream URI when it never changes (one host, no placeholders):
    /// parsed once instead of per request.
    pub(crate) fixed_uri: Option<Uri>,
    /// Whether anything below reads the request context (a backend layer,
    /// or the gateway's own router); a plain HTTP call does not.
    pub(crate) needs_context: bool,
    /// `backend/conditional`, when set.
    pub(crate) condition: Option<Condition>,
    /// The backend's own `timeout`, within the endpoint's.
    pub(crate) timeout: Option<Duration>,
    /// `backend/http`.
    pub(crate) http: crate::backend_http::BackendHttp,
    /// Whether the backend is called as KrakenD's HTTP client calls it:
    /// `X-Forwarded-*` headers, `Accept-Encoding: gzip` (decompressed
    /// again), redirects followed within the backend's own hosts. Not for
    /// `ai/*` backends, whose vendor calls are the gateway's own.
    pub(crate) krakend_client: bool,
    /// Whether a KrakenD-style call asks for `gzip` (not with the root's
    /// `disable_compression`).
    pub(crate) accept_gzip: bool,
}

impl BackendRoute {
    /// The deadline of one call to this backend: its own timeout from now,
    /// never past the endpoint's.
    pub(crate) fn deadline(&self, endpoint: Instant) -> Instant {
        match self.timeout {
            Some(timeout) => endpoint.min(Instant::now() + timeout),
            None => endpoint,
        }
    }

    /// The `Host` header of each host, as the HTTP client would write it
    /// (the port only when it is not the scheme's default).
    pub(crate) fn host_values(hosts: &[String]) -> Vec<Option<HeaderValue>> {
        hosts
            .iter()
            .map(|host| {
                let uri: Uri = host.parse().ok()?;
                let name = uri.host()?;
                let default = match uri.scheme_str() {
                    Some("https") => 443,
                    _ => 80,
                };
                let value = match uri.port_u16() {
                    Some(port) if port != default => format!("{name}:{port}"),
                    _ => name.to_owned(),
                };
                HeaderValue::from_str(&value).ok()
            })
            .collect()
    }

    /// The URI of a backend with one host and a pattern without
    /// placeholders.
    pub(crate) fn fixed_uri(hosts: &[String], pattern: &UrlPattern) -> Option<Uri> {
        struct NoValues;
        impl Values for NoValues {
            fn param(&self, _: &str) -> Option<String> {
                None
            }
            fn header(&self, _: &str) -> Option<String> {
                None
            }
            fn query(&self, _: &str) -> Option<String> {
                None
            }
            fn claim(&self, _: &str) -> Result<Option<String>, String> {
                Ok(None)
            }
        }
        let [host] = hosts else { return None };
        if pattern.sources().next().is_some() {
            return None;
        }
        let path = pattern.expand(&NoValues).ok()?;
        format!("{host}{path}").parse().ok()
    }
}

pub(crate) struct EndpointState {
    pub(crate) backends: Vec<BackendRoute>,
    pub(crate) headers: HeaderFilter,
    pub(crate) query: QueryFilter,
    pub(crate) encoding: Encoding,
    pub(crate) timeout: Duration,
    /// `proxy.strategy`.
    pub(crate) strategy: Strategy,
    /// `Cache-Control` of a complete answer, from `cache_ttl`.
    pub(crate) cache_control: Option<HeaderValue>,
    /// Whether backend failures answer as KrakenD's do (a 500 carrying
    /// the error): every endpoint but the unified LLM ones.
    pub(crate) krakend_errors: bool,
}

impl EndpointState {
    /// Whether the backends are called other than all at once and merged
    /// (a strategy, or conditional backends): see [`crate::strategy`].
    fn has_strategy(&self) -> bool {
        self.strategy != Strategy::Parallel || self.backends.iter().any(|b| b.condition.is_some())
    }
}

/// The innermost service of an endpoint pipeline.
#[derive(Clone)]
pub(crate) struct Proxy {
    state: Arc<EndpointState>,
}

impl Proxy {
    pub(crate) fn new(state: EndpointState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let mut response = match handle(&state, request).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            };
            if let Some(value) = &state.cache_control
                && response.status().is_success()
                && response
                    .headers()
                    .get(COMPLETED)
                    .is_some_and(|v| v == "true")
                && !is_event_stream(response.headers())
            {
                response.headers_mut().insert(CACHE_CONTROL, value.clone());
            }
            Ok(response)
        })
    }
}

struct RequestValues<'a> {
    parts: &'a request::Parts,
}

impl Values for RequestValues<'_> {
    fn param(&self, name: &str) -> Option<String> {
        self.parts
            .extensions
            .get::<RouteParams>()
            .and_then(|p| p.get(name))
            .map(str::to_owned)
    }

    fn header(&self, lowercase_name: &str) -> Option<String> {
        self.parts
            .headers
            .get(lowercase_name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn query(&self, name: &str) -> Option<String> {
        query_value(self.parts.uri.query(), name)
    }

    fn claim(&self, path: &str) -> Result<Option<String>, String> {
        let Some(claims) = self.parts.extensions.get::<Claims>() else {
            return Ok(None);
        };
        // A claim whose name holds dots (a URL) is found by its whole name
        // first, then as a dot path.
        claims
            .value()
            .get(path)
            .or_else(|| claims.get_path(path))
            .map(|value| claim_to_string(value, path))
            .transpose()
    }
}

async fn handle(
    state: &EndpointState,
    request: Request<Body>,
) -> Result<Response<Body>, ErrorResponse> {
    let (parts, body) = request.into_parts();
    if state.has_strategy() {
        return crate::strategy::handle(state, parts, body).await;
    }
    let values = RequestValues { parts: &parts };
    let query = state.query.apply(parts.uri.query());
    let mut paths = Vec::with_capacity(state.backends.len());
    for backend in &state.backends {
        if backend.fixed_uri.is_some() && query.is_empty() {
            // `backend_request` uses the fixed URI.
            paths.push(String::new());
            continue;
        }
        paths.push(
            backend
                .pattern
                .expand(&values)
                .map_err(|e| ErrorResponse::bad_request(e).with_code("invalid_placeholder"))?,
        );
    }
    let headers = forwarded(state, &parts);
    let deadline = Instant::now() + state.timeout;

    if let [backend] = state.backends.as_slice() {
        let path = paths.pop().unwrap_or_default();
        let mut headers = headers;
        let body = if backend.krakend_client {
            krakend_body(&backend.method, &mut headers, body)
        } else {
            // The body goes on unchanged: keep its declared length rather
            // than have the client format it again.
            if let Some(length) = parts.headers.get(CONTENT_LENGTH)
                && length.to_str().ok().and_then(|v| v.parse::<u64>().ok())
                    == body.size_hint().exact()
            {
                headers.insert(CONTENT_LENGTH, length.clone());
            }
            body
        };
        let upstream = backend_request(backend, &parts, &path, &query, headers, body)?;
        let deadline = backend.deadline(deadline);
        let response = call_backend(backend, upstream, deadline)
            .await
            .map_err(|e| backend_failure(state, e))?;
        return single_response(state, backend, response, deadline).await;
    }

    let limit = BodyLimit::of(&parts.extensions);
    let bytes = collect(body, limit).await?;
    let upstreams = state
        .backends
        .iter()
        .zip(&paths)
        .map(|(backend, path)| {
            let mut headers = headers.clone();
            let body = Body::from(bytes.clone());
            let body = if backend.krakend_client {
                krakend_body(&backend.method, &mut headers, body)
            } else {
                body
            };
            backend_request(backend, &parts, path, &query, headers, body)
        })
        .collect::<Result<Vec<_>, _>>()?;
    merge_calls(state, state.backends.iter().zip(upstreams), deadline).await
}

/// The request for one backend: its URL expanded from `parts`, the
/// forwarded headers and query strings, `body`.
fn upstream_request(
    state: &EndpointState,
    backend: &BackendRoute,
    parts: &request::Parts,
    body: Body,
) -> Result<Upstream, ErrorResponse> {
    let query = state.query.apply(parts.uri.query());
    let path = if backend.fixed_uri.is_some() && query.is_empty() {
        String::new()
    } else {
        backend
            .pattern
            .expand(&RequestValues { parts })
            .map_err(|e| ErrorResponse::bad_request(e).with_code("invalid_placeholder"))?
    };
    let mut headers = forwarded(state, parts);
    let body = if backend.krakend_client {
        krakend_body(&backend.method, &mut headers, body)
    } else {
        body
    };
    backend_request(backend, parts, &path, &query, headers, body)
}

/// The client's headers the endpoint forwards (`input_headers`), with
/// what a `modifier/lua-proxy` script set for the backends.
fn forwarded(state: &EndpointState, parts: &request::Parts) -> HeaderMap {
    let mut headers = state.headers.apply(&parts.headers);
    if let Some(script) = parts.extensions.get::<switchboard_core::ScriptHeaders>() {
        script.apply(&mut headers);
    }
    headers
}

/// A client body as KrakenD's Go client sends it: an empty one as
/// `Content-Length: 0` on methods that carry a body, any other without a
/// length (chunked).
fn krakend_body(method: &Method, headers: &mut HeaderMap, body: Body) -> Body {
    if body.is_end_stream() || body.size_hint().exact() == Some(0) {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        return Body::empty();
    }
    Body::new(crate::body::UnsizedBody::new(body))
}

/// A backend failure as KrakenD answers it on its endpoints: a 500 that
/// carries the error's message (see `router.return_error_msg`). A refused
/// redirect stays a 502 and a timeout a 504: those are the gateway's own.
pub(crate) fn backend_failure(state: &EndpointState, error: ErrorResponse) -> ErrorResponse {
    if !state.krakend_errors
        || error.code() == Some(REDIRECT_REFUSED)
        || error.status() == StatusCode::GATEWAY_TIMEOUT
    {
        // A timeout keeps its 504 too: it says more than KrakenD's 500.
        return error;
    }
    let message = error.message().to_owned();
    error
        .with_status(StatusCode::INTERNAL_SERVER_ERROR)
        .with_krakend(KrakendError::Message(message))
}

/// The code of a redirect the gateway would not follow.
const REDIRECT_REFUSED: &str = "redirect_refused";

/// Calls backend `index` alone and answers as a single-backend endpoint.
pub(crate) async fn call_single(
    state: &EndpointState,
    index: usize,
    parts: &request::Parts,
    body: Bytes,
    deadline: Instant,
) -> Result<Response<Body>, ErrorResponse> {
    let backend = state
        .backends
        .get(index)
        .ok_or_else(|| ErrorResponse::internal("no such backend"))?;
    let upstream = upstream_request(state, backend, parts, Body::from(body))?;
    let deadline = backend.deadline(deadline);
    let response = call_backend(backend, upstream, deadline)
        .await
        .map_err(|e| backend_failure(state, e))?;
    single_response(state, backend, response, deadline).await
}

/// Calls one backend and reads its successful JSON answer (not reshaped);
/// an error status is a failure.
pub(crate) async fn call_json(
    state: &EndpointState,
    backend: &BackendRoute,
    parts: &request::Parts,
    body: Bytes,
    deadline: Instant,
) -> Result<Value, ErrorResponse> {
    let upstream = upstream_request(state, backend, parts, Body::from(body))?;
    let deadline = backend.deadline(deadline);
    let response = call_backend(backend, upstream, deadline)
        .await
        .map_err(|e| backend_failure(state, e))?;
    let requested = Requested::of(&response);
    let (status, value) = read_json(backend, response, deadline)
        .await
        .map_err(|e| backend_failure(state, e))?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(backend_failure(
            state,
            status_error(status, requested.as_ref()),
        ))
    }
}

/// The error of a backend's non-2xx answer, worded as KrakenD words it:
/// `invalid status code 404 [GET /path]: http://host/path` (the query is
/// left out: it may carry a key).
fn status_error(status: StatusCode, requested: Option<&Requested>) -> ErrorResponse {
    let message = match requested {
        Some(Requested { method, uri }) => {
            let path = uri.path();
            let origin = match (uri.scheme_str(), uri.authority()) {
                (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                _ => String::new(),
            };
            format!(
                "invalid status code {} [{method} {path}]: {origin}{path}",
                status.as_u16()
            )
        }
        None => format!("invalid status code {}", status.as_u16()),
    };
    ErrorResponse::bad_gateway(message)
}

/// Calls the backends at `chosen` at once and merges their answers.
pub(crate) async fn merge(
    state: &EndpointState,
    chosen: &[usize],
    parts: &request::Parts,
    body: Bytes,
    deadline: Instant,
) -> Result<Response<Body>, ErrorResponse> {
    let mut calls = Vec::with_capacity(chosen.len());
    for index in chosen {
        let Some(backend) = state.backends.get(*index) else {
            continue;
        };
        let upstream = upstream_request(state, backend, parts, Body::from(body.clone()))?;
        calls.push((backend, upstream));
    }
    merge_calls(state, calls, deadline).await
}

async fn merge_calls<'a>(
    state: &EndpointState,
    calls: impl IntoIterator<Item = (&'a BackendRoute, Upstream)>,
    deadline: Instant,
) -> Result<Response<Body>, ErrorResponse> {
    let (backends, calls): (Vec<&BackendRoute>, Vec<_>) = calls
        .into_iter()
        .map(|(backend, upstream)| {
            (backend, async move {
                let deadline = backend.deadline(deadline);
                let response = call_backend(backend, upstream, deadline)
                    .await
                    .map_err(|e| (e, None))?;
                if !response.status().is_success()
                    && let Some(name) = backend.http.details_key()
                {
                    let status = response.status();
                    let requested = Requested::of(&response);
                    let detail = crate::backend_http::details(response, deadline).await;
                    return Err((
                        status_error(status, requested.as_ref()),
                        Some((name, detail)),
                    ));
                }
                let requested = Requested::of(&response);
                let (status, value) = read_json(backend, response, deadline)
                    .await
                    .map_err(|e| (e, None))?;
                if !status.is_success() {
                    return Err((status_error(status, requested.as_ref()), None));
                }
                Ok(reshape(value, &backend.shape))
            })
        })
        .unzip();
    let results = futures_util::future::join_all(calls).await;
    let mut merged = Map::new();
    let mut completed = true;
    let mut first_error = None;
    for (result, backend) in results.into_iter().zip(backends) {
        match result {
            Ok(Value::Object(map)) => merged.extend(map),
            Ok(other) => {
                merged.insert("collection".to_owned(), other);
            }
            Err((error, detail)) => {
                completed = false;
                tracing::warn!(pattern = backend.pattern.static_prefix(), error = %error, "backend failed in merge");
                if let Some((key, detail)) = detail {
                    merged.insert(key, detail);
                }
                first_error.get_or_insert(error);
            }
        }
    }
    if merged.is_empty()
        && state.krakend_errors
        && let Some(error) = first_error
    {
        return Err(backend_failure(state, error));
    }
    if merged.is_empty() && !completed {
        let mut response = ErrorResponse::bad_gateway("every backend failed").into_response();
        response
            .headers_mut()
            .insert(COMPLETED, HeaderValue::from_static("false"));
        return Ok(response);
    }
    Ok(json_response(
        StatusCode::OK,
        Value::Object(merged),
        state.encoding,
        completed,
    ))
}

fn backend_request(
    backend: &BackendRoute,
    client: &request::Parts,
    path: &str,
    forwarded_query: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<Upstream, ErrorResponse> {
    let (uri, host_index) = match &backend.fixed_uri {
        Some(uri) if forwarded_query.is_empty() => (uri.clone(), 0),
        _ => {
            let index = match backend.hosts.len() {
                0 => return Err(ErrorResponse::internal("backend has no host")),
                1 => 0,
                n => backend.next_host.fetch_add(1, Ordering::Relaxed) % n,
            };
            let host = &backend.hosts[index];
            let mut uri =
                String::with_capacity(host.len() + path.len() + forwarded_query.len() + 1);
            uri.push_str(host);
            uri.push_str(path);
            if !forwarded_query.is_empty() {
                uri.push(if path.contains('?') { '&' } else { '?' });
                uri.push_str(forwarded_query);
            }
            let uri = uri
                .parse()
                .map_err(|_| ErrorResponse::bad_request("the backend URL is invalid"))?;
            (uri, index)
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = backend.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let mut gzip = false;
    if backend.krakend_client {
        let headers = request.headers_mut();
        forwarded_headers(client, headers);
        if backend.accept_gzip && !headers.contains_key(ACCEPT_ENCODING) {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            gzip = true;
        }
    } else {
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT_VALUE));
    }
    if !backend.needs_context {
        // Nothing below can change the URL: the host's `Host` value made at
        // load saves the client from writing it per request.
        if backend.krakend_client
            && let Some(Some(host)) = backend.host_values.get(host_index)
        {
            request
                .headers_mut()
                .entry(HOST)
                .or_insert_with(|| host.clone());
        }
        return Ok(Upstream { request, gzip });
    }
    let extensions = request.extensions_mut();
    if let Some(params) = client.extensions.get::<RouteParams>() {
        extensions.insert(params.clone());
    }
    if let Some(claims) = client.extensions.get::<Claims>() {
        extensions.insert(claims.clone());
    }
    if let Some(json) = client.extensions.get::<JsonBody>() {
        extensions.insert(json.clone());
    }
    if let Some(limit) = client.extensions.get::<BodyLimit>() {
        extensions.insert(*limit);
    }
    if let Some(depth) = client.extensions.get::<CallDepth>() {
        extensions.insert(*depth);
    }
    if let Some(budget) = client.extensions.get::<CallBudget>() {
        extensions.insert(budget.clone());
    }
    // Token usage flows back to the layers around the endpoint.
    // Backend-level limits and quotas tell callers apart by these.
    if let Some(addr) = client.extensions.get::<switchboard_core::ClientAddr>() {
        extensions.insert(*addr);
    }
    if let Some(identity) = client.extensions.get::<switchboard_core::ApiKeyIdentity>() {
        extensions.insert(identity.clone());
    }
    if let Some(report) = client.extensions.get::<switchboard_core::UsageReport>() {
        extensions.insert(report.clone());
    }
    if let Some(secrets) = client
        .extensions
        .get::<std::sync::Arc<switchboard_core::secrets::Secrets>>()
    {
        extensions.insert(std::sync::Arc::clone(secrets));
    }
    Ok(Upstream { request, gzip })
}

/// The headers KrakenD adds to every backend request: the client's
/// address in `X-Forwarded-For` (after any the client sent, when that is
/// forwarded), the `Host` it asked for in `X-Forwarded-Host`, and the
/// gateway's name in `User-Agent`, or in `X-Forwarded-Via` when the
/// client's own `User-Agent` is forwarded.
fn forwarded_headers(client: &request::Parts, headers: &mut HeaderMap) {
    if let Some(addr) = client.extensions.get::<switchboard_core::ClientAddr>() {
        let ip = addr.0.ip().to_canonical();
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => {
                HeaderValue::from_str(&format!("{earlier}, {ip}")).ok()
            }
            _ => Some(ip_header(ip)),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    let host = client.headers.get(HOST).cloned().or_else(|| {
        client
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let name = if headers.contains_key(USER_AGENT) {
        X_FORWARDED_VIA
    } else {
        USER_AGENT
    };
    headers.insert(name, HeaderValue::from_static(USER_AGENT_VALUE));
}

/// An address as a header value. IPv4 (the usual case) is written by
/// hand: `Display` through the formatting machinery costs more than the
/// rest of the header work of a request.
fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut out = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[len] = b'.';
                    len += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for digit in &digits[skip..] {
                    out[len] = b'0' + digit;
                    len += 1;
                }
            }
            HeaderValue::from_bytes(&out[..len])
                .unwrap_or_else(|_| HeaderValue::from_static("0.0.0.0"))
        }
        std::net::IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("::")),
    }
}

/// The method and URL a backend answer came from (after redirects), for
/// KrakenD's error message.
#[derive(Clone, Debug)]
struct Requested {
    method: Method,
    uri: Uri,
}

impl Requested {
    fn of(response: &Response<Body>) -> Option<Self> {
        response.extensions().get::<Self>().cloned()
    }
}

/// What a backend request needs to be sent again to a redirect's target.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: http::Extensions,
    has_body: bool,
}

impl Replay {
    fn of(request: &Request<Body>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            extensions: request.extensions().clone(),
            has_body: !(request.body().is_end_stream()
                || request.body().size_hint().exact() == Some(0)),
        }
    }

    /// The request a redirect leads to, as Go's client makes it (`303`,
    /// and `301`/`302` after anything but GET/HEAD, become a GET without
    /// body; `307`/`308` keep the method and body; `Referer` names the
    /// previous URL). `None`: not a redirect to follow (no `Location`, or
    /// a body that cannot be sent twice), so the answer is the redirect
    /// itself. A target outside the backend's own hosts is refused.
    fn follow(
        self,
        response: &Response<Body>,
        hosts: &[String],
    ) -> Result<Option<Request<Body>>, ErrorResponse> {
        let status = response.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(None);
        }
        let Some(location) = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let refused = || {
            ErrorResponse::bad_gateway(
                "the backend redirected to a location outside its configured hosts",
            )
            .with_code(REDIRECT_REFUSED)
        };
        let target = resolve_location(&self.uri, location).ok_or_else(refused)?;
        if !hosts.iter().any(|host| within_host(host, &target)) {
            tracing::warn!(
                status,
                target = %target.authority().map(|a| a.as_str()).unwrap_or_default(),
                "backend redirect outside its hosts refused"
            );
            return Err(refused());
        }
        let keep_body = matches!(status, 307 | 308);
        if keep_body && self.has_body {
            return Ok(None);
        }
        let method = if keep_body || matches!(self.method, Method::GET | Method::HEAD) {
            self.method.clone()
        } else {
            Method::GET
        };
        let mut headers = self.headers;
        // The client writes the target's own.
        headers.remove(HOST);
        if !keep_body || method != self.method {
            headers.remove(CONTENT_LENGTH);
            headers.remove(CONTENT_TYPE);
            headers.remove(TRANSFER_ENCODING);
        }
        let downgrade =
            self.uri.scheme_str() == Some("https") && target.scheme_str() != Some("https");
        if !downgrade && let Ok(referer) = HeaderValue::from_str(&self.uri.to_string()) {
            headers.insert(REFERER, referer);
        }
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = target;
        *request.headers_mut() = headers;
        *request.extensions_mut() = self.extensions;
        Ok(Some(request))
    }
}

/// A `Location` resolved against the URL it answered; `None` when it is
/// not a usable http(s) URL or walks dot segments.
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    let absolute = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", base.scheme_str()?)
    } else {
        let origin = format!("{}://{}", base.scheme_str()?, base.authority()?);
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
            format!("{origin}{dir}/{location}")
        }
    };
    let uri: Uri = absolute.parse().ok()?;
    if uri.path().split('/').any(|s| s == "." || s == "..") {
        return None;
    }
    Some(uri)
}

/// Whether `target` is on `host` (a backend host: same scheme, host and
/// port, under its path if it has one).
fn within_host(host: &str, target: &Uri) -> bool {
    let Ok(host) = host.parse::<Uri>() else {
        return false;
    };
    let port = |uri: &Uri| {
        uri.port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            })
    };
    let same_origin = host.scheme_str().map(str::to_ascii_lowercase)
        == target.scheme_str().map(str::to_ascii_lowercase)
        && host
            .host()
            .zip(target.host())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        && port(&host) == port(target);
    let prefix = host.path().trim_end_matches('/');
    same_origin
        && (prefix.is_empty()
            || target.path() == prefix
            || target
                .path()
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// Decompresses a gzip answer to a request whose `Accept-Encoding` the
/// gateway added (what Go's client does for KrakenD).
fn gunzip(response: Response<Body>) -> Response<Body> {
    let gzip = response.headers().get(CONTENT_ENCODING).is_some_and(|v| {
        v.as_bytes().eq_ignore_ascii_case(b"gzip") || v.as_bytes().eq_ignore_ascii_case(b"x-gzip")
    });
    if !gzip {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(CONTENT_ENCODING);
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::new(GunzipBody::new(body)))
}

async fn call_backend(
    backend: &BackendRoute,
    upstream: Upstream,
    deadline: Instant,
) -> Result<Response<Body>, ErrorResponse> {
    let Upstream { mut request, gzip } = upstream;
    let mut redirects = 0;
    loop {
        let replay = backend.krakend_client.then(|| Replay::of(&request));
        let requested = Requested {
            method: request.method().clone(),
            uri: request.uri().clone(),
        };
        // A span per backend call; attempts below it are its children.
        let span =
            switchboard_telemetry::backend_context(request.uri().host().unwrap_or("internal"));
        let call =
            opentelemetry::context::FutureExt::with_context(backend.service.call(request), span);
        let mut response = match tokio::time::timeout_at(deadline, call).await {
            Ok(response) => response,
            Err(_) => {
                return Err(ErrorResponse::gateway_timeout(
                    "the backend did not answer within the endpoint timeout",
                ));
            }
        };
        if gzip {
            response = gunzip(response);
        }
        let Some(replay) = replay else {
            return Ok(response);
        };
        let Some(next) = replay.follow(&response, &backend.hosts)? else {
            // Only an error names the request it answered.
            if !response.status().is_success() {
                response.extensions_mut().insert(requested);
            }
            return Ok(response);
        };
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            return Err(ErrorResponse::bad_gateway(format!(
                "the backend redirected more than {MAX_REDIRECTS} times"
            )));
        }
        request = next;
    }
}

async fn single_response(
    state: &EndpointState,
    backend: &BackendRoute,
    response: Response<Body>,
    deadline: Instant,
) -> Result<Response<Body>, ErrorResponse> {
    let passthrough = matches!(state.encoding, Encoding::NoOp | Encoding::Streaming)
        || backend.encoding == Encoding::NoOp;
    if passthrough {
        let (mut parts, body) = response.into_parts();
        // A length received with a transfer coding is not the length of
        // what is passed on (RFC 9112 §6.3): drop it.
        if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            parts.headers.remove(CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers);
        if state.encoding == Encoding::NoOp && state.krakend_errors {
            // KrakenD marks what it passes through untouched as not
            // known to be complete.
            parts
                .headers
                .insert(COMPLETED, HeaderValue::from_static("false"));
        }
        let body = Body::new(CoalesceBody::new(IdleTimeoutBody::new(body, state.timeout)));
        return Ok(Response::from_parts(parts, body));
    }
    if is_event_stream(response.headers()) {
        // A stream parsed as one JSON document can only fail: stream it,
        // with the vendor's headers (request ids, rate limits).
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.remove(http::header::SET_COOKIE);
        parts
            .headers
            .insert(COMPLETED, HeaderValue::from_static("true"));
        let body = Body::new(CoalesceBody::new(IdleTimeoutBody::new(body, state.timeout)));
        return Ok(Response::from_parts(parts, body));
    }
    if backend.http.return_error_code && !response.status().is_success() {
        // `backend/http.return_error_code`: the backend's error as it is.
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let read = response_bytes(response, RESPONSE_LIMIT);
        let (_, bytes) = tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| {
                ErrorResponse::gateway_timeout(
                    "the backend did not finish its answer within the endpoint timeout",
                )
            })??;
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        if let Some(content_type) = content_type {
            out.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        out.headers_mut()
            .insert(COMPLETED, HeaderValue::from_static("false"));
        return Ok(out);
    }
    if !response.status().is_success() && state.krakend_errors {
        let status = response.status();
        let extensions = response.extensions();
        if extensions.get::<KrakendError>().is_some() {
            // A backend-level rejection (a failed `validation/cel`): the
            // endpoint answers it as KrakenD does.
            return Ok(response);
        }
        if extensions
            .get::<switchboard_core::GatewayAnswer>()
            .is_some()
        {
            // The gateway's own answer from below: an upstream that could
            // not be reached fails as KrakenD fails; anything else (a
            // body timeout, a backend-level quota) keeps its own answer.
            if status != StatusCode::BAD_GATEWAY {
                return Ok(response);
            }
            return Err(backend_failure(
                state,
                ErrorResponse::bad_gateway("the backend could not be reached"),
            ));
        }
        return Err(backend_failure(
            state,
            status_error(status, Requested::of(&response).as_ref()),
        ));
    }
    let retry_headers = RETRY_HEADERS.map(|name| response.headers().get(&name).cloned());
    // A backend-level refusal (quota, rate limit, guard) stays one for the
    // metrics around the endpoint.
    let rejection = response
        .extensions()
        .get::<switchboard_core::Rejection>()
        .copied();
    let (status, value) = read_json(backend, response, deadline)
        .await
        .map_err(|e| backend_failure(state, e))?;
    if status.is_success() {
        let value = reshape(value, &backend.shape);
        Ok(json_response(StatusCode::OK, value, state.encoding, true))
    } else {
        // The vendor's own error (a 429, a 400 about the prompt) is what the
        // client needs to see; its status and retry advice are kept.
        let mut response = json_response(status, value, Encoding::Json, false);
        for (name, value) in RETRY_HEADERS.into_iter().zip(retry_headers) {
            if let Some(value) = value {
                response.headers_mut().insert(name, value);
            }
        }
        if let Some(rejection) = rejection {
            response.extensions_mut().insert(rejection);
        }
        Ok(response)
    }
}

/// Headers that tell SDK clients whether and when to retry an error.
const RETRY_HEADERS: [HeaderName; 2] = [switchboard_core::SHOULD_RETRY, http::header::RETRY_AFTER];

/// Reads a backend body within the deadline and decodes it in the backend's
/// encoding. A non-2xx answer that is not JSON becomes an error object.
async fn read_json(
    backend: &BackendRoute,
    response: Response<Body>,
    deadline: Instant,
) -> Result<(StatusCode, Value), ErrorResponse> {
    let read = response_bytes(response, RESPONSE_LIMIT);
    let (parts, bytes) = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| {
            ErrorResponse::gateway_timeout(
                "the backend did not finish its answer within the endpoint timeout",
            )
        })??;
    let status = parts.status;
    let decoded = match backend.encoding {
        Encoding::String => Ok(string_object(&bytes)),
        Encoding::Xml if status.is_success() => crate::encoding::xml_to_json(&bytes),
        Encoding::Rss if status.is_success() => crate::encoding::rss_to_json(&bytes),
        Encoding::SafeJson => crate::encoding::safejson(&bytes).map_err(|e| e.to_string()),
        _ if bytes.is_empty() => Ok(Value::Object(Map::new())),
        _ => serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()),
    };
    match decoded {
        Ok(value) => Ok((status, value)),
        Err(_) if !status.is_success() => Ok((
            status,
            ErrorResponse::new(status, "upstream_error", truncate(&bytes, 1024)).json_body(),
        )),
        Err(err) => Err(ErrorResponse::bad_gateway(match backend.encoding {
            Encoding::Xml | Encoding::Rss => format!(
                "the backend answered a body that cannot be read as {}: {err}",
                crate::encoding::describe(backend.encoding)
            ),
            _ => format!("the backend answered a body that is not JSON: {err}"),
        })),
    }
}

fn string_object(bytes: &Bytes) -> Value {
    let mut map = Map::new();
    map.insert(
        "content".to_owned(),
        Value::String(String::from_utf8_lossy(bytes).into_owned()),
    );
    Value::Object(map)
}

fn truncate(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    format!("upstream error: {text}")
}

/// Writes the answer once, from the value the proxy owns (no copy).
pub(crate) fn json_response(
    status: StatusCode,
    value: Value,
    encoding: Encoding,
    completed: bool,
) -> Response<Body> {
    let value = match (encoding, value) {
        (Encoding::JsonCollection, Value::Object(mut map)) if map.contains_key("collection") => {
            map.remove("collection").unwrap_or(Value::Null)
        }
        (_, value) => value,
    };
    let mut value = value;
    sort_keys(&mut value);
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        COMPLETED,
        HeaderValue::from_static(if completed { "true" } else { "false" }),
    );
    response
        .extensions_mut()
        .insert(crate::render::Rendered { completed });
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_header_writes_every_octet_width() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(super::ip_header(parsed), ip);
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(super::ip_header(v6), "2001:db8::1");
    }

    use super::*;

    #[test]
    fn redirects_stay_on_the_backend_hosts() {
        let base: Uri = "http://127.0.0.1:8081/redirect/?status=301"
            .parse()
            .unwrap();
        let target = resolve_location(&base, "/param_forwarding/?status=301").unwrap();
        assert_eq!(
            target.to_string(),
            "http://127.0.0.1:8081/param_forwarding/?status=301"
        );
        assert!(within_host("http://127.0.0.1:8081", &target));
        assert!(!within_host("http://127.0.0.1:8082", &target));
        assert!(!within_host("https://127.0.0.1:8081", &target));
        let relative = resolve_location(&base, "next").unwrap();
        assert_eq!(relative.path(), "/redirect/next");
        let elsewhere = resolve_location(&base, "//169.254.169.254/latest").unwrap();
        assert!(!within_host("http://127.0.0.1:8081", &elsewhere));
        assert!(resolve_location(&base, "/a/../../etc").is_none());
        let default_port: Uri = "https://api.example.com/v1/x".parse().unwrap();
        assert!(within_host("https://api.example.com:443", &default_port));
        assert!(within_host("https://API.example.com/v1", &default_port));
        assert!(!within_host("https://api.example.com/v2", &default_port));
        assert!(!within_host("https://api.example.com/v", &default_port));
    }
}
