//! The gateway's own accept loop: header-read, body and idle timeouts,
//! HTTP/1.1 and HTTP/2, graceful shutdown that drains in-flight requests and
//! streams.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use switchboard_core::Body;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::app::App;
use crate::body::IdleTimeoutBody;
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
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
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
        let live = live.clone();
        let settings = settings.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = live.current().router();
            let read_timeout = settings.read_timeout;
            // The method and path are copied only when the line is written.
            let access = (settings.access_log
                && tracing::enabled!(tracing::Level::INFO)
                && !settings
                    .logger_skip_paths
                    .iter()
                    .any(|p| p == request.uri().path()))
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
            let started = Instant::now();
            let mut request =
                request.map(|body| Body::new(IdleTimeoutBody::new(body, read_timeout)));
            request
                .extensions_mut()
                .insert(switchboard_core::ClientAddr(peer));
            async move {
                let response: Response<Body> = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
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
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
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
