//! The listeners telemetry owns: the Prometheus scrape listener
//! (`exporters.prometheus[]`, `GET /metrics`) and the admin listener with
//! the dashboard (`switchboard/telemetry.admin`, off by default, loopback
//! unless configured, every data request behind a bearer token).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use subtle::ConstantTimeEq;
use switchboard_core::{Body, ErrorResponse};
use tokio::net::TcpListener;

use crate::config::{AdminConfig, resolve_token};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};

const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");

async fn serve_with<H>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> Response<Body> + Clone + Send + Sync + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    serve_with(listener, move |request: Request<Incoming>| {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                text(StatusCode::OK, METRICS_CONTENT_TYPE, metrics.encode())
            }
            (&Method::GET, _) => {
                ErrorResponse::not_found("the metrics are at /metrics").into_response()
            }
            _ => ErrorResponse::method_not_allowed("only GET is served here").into_response(),
        }
    })
    .await;
}

/// The admin listener's address and token, checked.
#[derive(Clone)]
pub struct Admin {
    /// Where to listen.
    pub addr: std::net::SocketAddr,
    token: Arc<str>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// From the config (already validated; `None` if the token's variable
    /// disappeared or the address does not parse).
    pub fn from_config(config: &AdminConfig) -> Option<Self> {
        let ip = config.listen_ip.parse().ok()?;
        Some(Self {
            addr: std::net::SocketAddr::new(ip, config.port),
            token: Arc::from(resolve_token(&config.token)?),
        })
    }

    fn authorized<B>(&self, request: &Request<B>) -> bool {
        request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(self.token.as_bytes())))
    }

    fn handle<B>(&self, request: &Request<B>, metrics: &Metrics) -> Response<Body> {
        if request.method() != Method::GET {
            return ErrorResponse::method_not_allowed("only GET is served here").into_response();
        }
        match request.uri().path() {
            // The page and its assets hold no data; the data asks for the token.
            "/__dashboard" | "/__dashboard/" => {
                text(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_HTML)
            }
            "/__dashboard/dashboard.js" => text(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                DASHBOARD_JS,
            ),
            "/__dashboard/dashboard.css" => {
                text(StatusCode::OK, "text/css; charset=utf-8", DASHBOARD_CSS)
            }
            "/__dashboard/metrics" => {
                if self.authorized(request) {
                    text(StatusCode::OK, METRICS_CONTENT_TYPE, metrics.encode())
                } else {
                    let mut response = ErrorResponse::new(
                        StatusCode::UNAUTHORIZED,
                        "authentication_error",
                        "the dashboard needs its bearer token",
                    )
                    .into_response();
                    response
                        .headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    response
                }
            }
            _ => ErrorResponse::not_found("the dashboard is at /__dashboard").into_response(),
        }
    }
}

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, admin: Admin, metrics: Arc<Metrics>) {
    let admin = Arc::new(admin);
    serve_with(listener, move |request: Request<Incoming>| {
        admin.handle(&request, &metrics)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_needs_the_token_and_the_page_does_not() {
        let admin = Admin {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Arc::from("0123456789abcdef"),
        };
        let metrics = Metrics::new();
        let get = |path: &str, token: Option<&str>| {
            let mut request = Request::get(path).body(()).unwrap();
            if let Some(token) = token {
                request.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
            }
            admin.handle(&request, &metrics).status()
        };
        assert_eq!(get("/__dashboard", None), StatusCode::OK);
        assert_eq!(get("/__dashboard/metrics", None), StatusCode::UNAUTHORIZED);
        assert_eq!(
            get("/__dashboard/metrics", Some("wrong-token-000000")),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get("/__dashboard/metrics", Some("0123456789abcdef")),
            StatusCode::OK
        );
        assert_eq!(get("/elsewhere", None), StatusCode::NOT_FOUND);
    }
}
