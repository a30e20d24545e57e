//! The baseline: a bare hyper reverse proxy. It forwards every request to
//! one upstream over a pooled keep-alive client and streams the answer back,
//! with nothing else — the physical limit for proxying on the machine.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Serves the bare proxy on `listen`, forwarding to `upstream`
/// (`http://host:port`).
pub async fn run(listen: SocketAddr, upstream: &str) -> std::io::Result<()> {
    let upstream: Uri = upstream
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let authority = upstream
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let host = HeaderValue::from_str(&authority)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = TcpListener::bind(listen).await?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let authority = authority.clone();
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let client = client.clone();
                let authority = authority.clone();
                let host = host.clone();
                async move {
                    let (mut parts, body) = request.into_parts();
                    let path = parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/");
                    let uri = Uri::builder()
                        .scheme("http")
                        .authority(authority.as_str())
                        .path_and_query(path)
                        .build();
                    let Ok(uri) = uri else {
                        return Ok::<_, Infallible>(status(StatusCode::BAD_REQUEST));
                    };
                    parts.uri = uri;
                    parts.headers.insert(header::HOST, host);
                    let upstream = Request::from_parts(parts, body);
                    Ok(match client.request(upstream).await {
                        Ok(response) => response.map(BodyExt::boxed),
                        Err(_) => status(StatusCode::BAD_GATEWAY),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response
}
