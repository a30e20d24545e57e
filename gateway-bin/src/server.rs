//! The gateway's own accept loop: header-read deadline from accept, body,
//! idle and send timeouts, HTTP/1.1 and HTTP/2, protocol checks, panics as
//! 500s, and graceful shutdown that drains in-flight requests and streams.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use bytes::BytesMut;
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use switchboard_core::secrets::Secrets;
use switchboard_core::{Body, ErrorResponse};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::app::{App, ServerSettings};
use crate::body::IdleTimeoutBody;
use crate::conn::{self, ConnIo, Detected};
use crate::ops::Live;

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests and streams finish within the
/// grace period.
pub async fn serve<F>(listener: TcpListener, app: App, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    serve_live(listener, Live::new(app), shutdown).await
}

/// As [`serve`], answering each request with the app `live` holds when it
/// arrives (a reload swaps it; the server settings stay the first app's).
pub async fn serve_live<F>(listener: TcpListener, live: Live, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let settings = Arc::new(live.current().settings().clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.read_header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = RequestService {
            live: live.clone(),
            settings: Arc::clone(&settings),
            peer: Some(peer),
        };
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let settings = Arc::clone(&settings);
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buffer = BytesMut::new();
            // The header-read deadline runs from accept: a client that
            // sends nothing, or half a preface, is closed like one that
            // sends half a head.
            let detected = tokio::time::timeout(
                settings.read_header_timeout,
                conn::detect(&mut stream, &mut buffer, settings.max_header_bytes),
            )
            .await;
            match detected {
                Ok(Ok(Detected::Http1 | Detected::Http2)) => {}
                Ok(Ok(Detected::Closed) | Err(_)) => return,
                Err(_elapsed) => {
                    if !buffer.is_empty() && !buffer.starts_with(b"PRI ") {
                        conn::reject(&mut stream, conn::head_timeout(), settings.send_timeout)
                            .await;
                    }
                    return;
                }
                Ok(Ok(Detected::Reject(error))) => {
                    conn::reject(&mut stream, error, settings.send_timeout).await;
                    return;
                }
            }
            let io = ConnIo::new(stream, buffer.freeze(), settings.send_timeout);
            let service =
                hyper::service::service_fn(move |request: Request<Incoming>| service.call(request));
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

/// What every request goes through before the router: protocol checks
/// hyper leaves to the application, the body deadlines, the access log,
/// panics turned into 500s, and secrets scrubbed from error answers.
#[derive(Clone)]
struct RequestService {
    live: Live,
    settings: Arc<ServerSettings>,
    peer: Option<std::net::SocketAddr>,
}

impl RequestService {
    /// Answers with the app live when the request arrives (a reload swaps
    /// it for the next request; this one finishes on its own app).
    fn call<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<B>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<switchboard_core::BoxError>,
    {
        let app = self.live.current();
        handle(
            app.router(),
            Arc::clone(&self.settings),
            app.secrets(),
            self.peer,
            request,
        )
    }
}

/// One request through the checks, deadlines, access log and panic guard.
fn handle<B>(
    router: Router,
    settings: Arc<ServerSettings>,
    secrets: Arc<Secrets>,
    peer: Option<std::net::SocketAddr>,
    request: Request<B>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<switchboard_core::BoxError>,
{
    // The method and path are copied only when the line is written.
    let access = (settings.access_log
        && tracing::enabled!(tracing::Level::INFO)
        && !settings
            .logger_skip_paths
            .iter()
            .any(|p| p == request.uri().path()))
    .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let started = Instant::now();
    let refused = refuse(&request);
    let deadline = tokio::time::Instant::now() + settings.body_timeout;
    let mut request = request.map(|body| {
        Body::new(IdleTimeoutBody::new(body, settings.read_timeout).with_deadline(deadline))
    });
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(switchboard_core::ClientAddr(peer));
    }
    async move {
        let response = match refused {
            Some(error) => error.into_response(),
            None => {
                let call = AssertUnwindSafe(router.oneshot(request)).catch_unwind();
                match call.await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(
                            panic = %secrets.scrub(&what),
                            "a request handler panicked"
                        );
                        ErrorResponse::internal("the gateway failed while handling the request")
                            .with_code("internal_error")
                            .into_response()
                    }
                }
            }
        };
        let response = scrub_error(response, &secrets);
        if let Some((method, path)) = access {
            tracing::info!(
                %method,
                path,
                status = response.status().as_u16(),
                latency_ms = %format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
                "request"
            );
        }
        Ok::<_, Infallible>(response)
    }
}

/// Requests that must not reach any endpoint, whatever the router says:
/// a transfer coding other than `chunked` (the body would be forwarded
/// still coded), several `Host` headers or one that is not an authority.
fn refuse<B>(request: &Request<B>) -> Option<ErrorResponse> {
    let codings = request.headers().get_all(TRANSFER_ENCODING);
    for value in codings {
        let text = value.to_str().unwrap_or("?");
        if text
            .split(',')
            .map(str::trim)
            .any(|coding| !coding.eq_ignore_ascii_case("chunked"))
        {
            return Some(
                ErrorResponse::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "invalid_request_error",
                    format!("transfer coding {text:?} is not supported; send the body chunked or with a Content-Length"),
                )
                .with_code("unsupported_transfer_coding")
                .no_retry(),
            );
        }
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Some(
                ErrorResponse::bad_request("the request has more than one Host header")
                    .with_code("invalid_host"),
            );
        }
        let valid = host.to_str().ok().is_some_and(|h| {
            !h.is_empty()
                && !h.contains(['@', '/', '?', '#', '\\', ' ', '\t'])
                && h.parse::<http::uri::Authority>().is_ok()
        });
        if !valid {
            return Some(
                ErrorResponse::bad_request("the Host header is not a host[:port]")
                    .with_code("invalid_host"),
            );
        }
    }
    None
}

/// An error answer (4xx, 5xx) never carries a configured secret, whether
/// the gateway wrote it or an upstream did (a vendor echoing the key).
fn scrub_error(response: Response<Body>, secrets: &Arc<Secrets>) -> Response<Body> {
    if secrets.is_empty() || response.status().as_u16() < 400 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    for value in parts.headers.values_mut() {
        *value = secrets.scrub_header(value);
    }
    Response::from_parts(parts, secrets.scrub_body(body))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_panic_answers_500_json() {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let router = Router::new().route("/boom", get(boom));
        let settings = Arc::new(ServerSettings {
            listen: String::new(),
            read_header_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_header_bytes: 1024,
            shutdown_grace: Duration::from_secs(1),
            access_log: false,
            logger_skip_paths: Vec::new(),
            body_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            http2_max_concurrent_streams: 1,
        });
        let request = Request::get("/boom")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = handle(
            router,
            settings,
            Arc::new(Secrets::default()),
            None,
            request,
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["code"], "internal_error");
    }
}
