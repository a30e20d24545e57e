//! The bottom of every backend pipeline: a pooled HTTP(S) client, or the
//! gateway's own router for backends that call the gateway itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use switchboard_core::buffer::{body_timeout_error, is_body_timeout};
use switchboard_core::{Body, ErrorResponse};
use switchboard_telemetry::Attempt;
use tower::{Service, ServiceExt};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How many gateway-internal hops one request may take before it is a loop.
pub(crate) const MAX_INTERNAL_DEPTH: u8 = 8;

/// Counts gateway-internal hops, so an endpoint that calls itself ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallDepth(pub(crate) u8);

/// The gateway-internal calls one client request has made so far, shared
/// by every call it fans out to, so that backends calling the gateway
/// again cannot multiply without bound.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallBudget(Arc<AtomicUsize>);

impl CallBudget {
    /// Takes one call; false once `max` calls were taken.
    fn take(&self, max: usize) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) < max
    }
}

/// The upstream client's settings: KrakenD's root HTTP client fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientSettings {
    /// Idle connections kept per host (0: none, every request connects).
    pub(crate) max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub(crate) idle_timeout: Duration,
    /// How long connecting may take.
    pub(crate) connect_timeout: Duration,
    /// The TCP keep-alive interval, when set.
    pub(crate) keep_alive: Option<Duration>,
    /// The happy-eyeballs delay, when set.
    pub(crate) fallback_delay: Option<Duration>,
    /// How long the response headers may take, when bounded.
    pub(crate) response_header_timeout: Option<Duration>,
    /// HTTP/2 only (h2c on plain connections).
    pub(crate) http2_only: bool,
}

impl ClientSettings {
    /// The settings a config's root fields ask for.
    pub(crate) fn of(root: &crate::config::RootConfig) -> Self {
        let positive =
            |d: &Option<crate::config::GoDuration>| d.map(|d| d.0).filter(|d| !d.is_zero());
        let per_host = root
            .max_idle_connections_per_host
            .unwrap_or(crate::app::DEFAULT_POOL_IDLE_PER_HOST);
        let max_idle_per_host = if root.disable_keep_alives {
            0
        } else {
            root.max_idle_connections
                .map_or(per_host, |all| per_host.min(all))
        };
        Self {
            max_idle_per_host,
            idle_timeout: positive(&root.idle_connection_timeout)
                .unwrap_or(Duration::from_secs(90)),
            connect_timeout: positive(&root.dialer_timeout).unwrap_or(Duration::from_secs(10)),
            keep_alive: positive(&root.dialer_keep_alive),
            fallback_delay: positive(&root.dialer_fallback_delay),
            response_header_timeout: positive(&root.response_header_timeout),
            http2_only: root.use_h2c,
        }
    }
}

/// A pooled upstream client: HTTP/1.1 and HTTP/2 over rustls, redirects
/// never followed.
#[derive(Clone)]
pub(crate) struct HttpUpstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    response_header_timeout: Option<Duration>,
}

impl HttpUpstream {
    pub(crate) fn new(settings: &ClientSettings) -> Self {
        // Installing twice is harmless; the first provider wins.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(settings.keep_alive);
        if let Some(delay) = settings.fallback_delay {
            http.set_happy_eyeballs_timeout(Some(delay));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http();
        let https = if settings.http2_only {
            https.enable_http2().wrap_connector(http)
        } else {
            https.enable_all_versions().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .http2_only(settings.http2_only)
            .timer(TokioTimer::new())
            .build(https);
        Self {
            client,
            response_header_timeout: settings.response_header_timeout,
        }
    }
}

impl Service<Request<Body>> for HttpUpstream {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let host = request.uri().host().unwrap_or("unknown").to_owned();
        let attempt = Attempt::start(&mut request, &host);
        let future = self.client.request(request);
        let header_timeout = self.response_header_timeout;
        Box::pin(async move {
            let result = match header_timeout {
                None => future.await,
                Some(limit) => match tokio::time::timeout(limit, future).await {
                    Ok(result) => result,
                    Err(_) => {
                        attempt.failed("response_header_timeout");
                        return Ok(ErrorResponse::gateway_timeout(
                            "the upstream did not send its response headers within \
                             response_header_timeout",
                        )
                        .into_response());
                    }
                },
            };
            Ok(match result {
                Ok(response) => {
                    attempt.answered(response.status().as_u16());
                    response.map(Body::new)
                }
                Err(err) if is_body_timeout(&err) => {
                    attempt.failed("body_timeout");
                    body_timeout_error().into_response()
                }
                Err(err) => {
                    // The error names the failure kind, never the URL (which
                    // may carry a key in its query).
                    let kind = if err.is_connect() {
                        attempt.failed("connect");
                        "could not connect to the upstream"
                    } else {
                        attempt.failed("connection");
                        "the upstream connection failed"
                    };
                    tracing::warn!(error = %err, "upstream request failed");
                    ErrorResponse::bad_gateway(kind).into_response()
                }
            })
        })
    }
}

/// Calls the gateway's own router in-process, exactly as a request over a
/// socket would arrive: only the method, path, headers and body pass.
#[derive(Clone)]
pub(crate) struct InternalUpstream {
    router: Arc<OnceLock<Router>>,
    host: HeaderValue,
    max_calls: usize,
}

impl InternalUpstream {
    pub(crate) fn new(router: Arc<OnceLock<Router>>, host: HeaderValue, max_calls: usize) -> Self {
        Self {
            router,
            host,
            max_calls,
        }
    }
}

impl Service<Request<Body>> for InternalUpstream {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let router = self.router.get().cloned();
        let host = self.host.clone();
        let max_calls = self.max_calls;
        Box::pin(async move {
            let Some(router) = router else {
                return Ok(ErrorResponse::internal("the gateway is still starting").into_response());
            };
            let depth = request
                .extensions()
                .get::<CallDepth>()
                .copied()
                .unwrap_or_default()
                .0;
            if depth >= MAX_INTERNAL_DEPTH {
                return Ok(ErrorResponse::new(
                    http::StatusCode::LOOP_DETECTED,
                    "gateway_error",
                    "the request looped through the gateway's own endpoints",
                )
                .into_response());
            }
            let budget = request
                .extensions()
                .get::<CallBudget>()
                .cloned()
                .unwrap_or_default();
            if !budget.take(max_calls) {
                return Ok(ErrorResponse::new(
                    http::StatusCode::LOOP_DETECTED,
                    "gateway_error",
                    format!(
                        "the request made more than {max_calls} calls to the gateway's own endpoints"
                    ),
                )
                .with_code("too_many_internal_calls")
                .into_response());
            }
            let (parts, body) = request.into_parts();
            let path_and_query = parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned());
            let mut inner = Request::new(body);
            *inner.method_mut() = parts.method;
            *inner.uri_mut() = path_and_query.parse::<Uri>().unwrap_or_default();
            *inner.headers_mut() = parts.headers;
            inner.headers_mut().insert(HOST, host);
            inner.extensions_mut().insert(CallDepth(depth + 1));
            inner.extensions_mut().insert(budget);
            match router.oneshot(inner).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            }
        })
    }
}
