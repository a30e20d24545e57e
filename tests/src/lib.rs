//! Harness for the end-to-end tests: mock vendors that record what they
//! receive, and a gateway served on loopback from a config.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchboard_core::Body;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A request as a mock upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// The HTTP version the request came in on.
    pub version: http::Version,
    /// Path and query, as sent on the wire.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the upstream received JSON")
    }
}

type Handler = Arc<
    dyn Fn(Recorded) -> std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// A mock vendor on 127.0.0.1 that records every request.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    closed: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl MockUpstream {
    /// Starts a mock answering with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (rec, cl, acc) = (
            Arc::clone(&received),
            Arc::clone(&closed),
            Arc::clone(&accepted),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let rec = Arc::clone(&rec);
                let cl = Arc::clone(&cl);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let rec = Arc::clone(&rec);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let recorded = Recorded {
                                method: parts.method,
                                version: parts.version,
                                uri: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.as_str().to_owned())
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            rec.lock().unwrap().push(recorded.clone());
                            Ok::<_, Infallible>(handler(recorded).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    cl.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            received,
            closed,
            accepted,
        }
    }

    /// A mock answering every request with this JSON.
    pub async fn json(value: Value) -> Self {
        Self::start(move |_| {
            let value = value.clone();
            async move { json_response(StatusCode::OK, &value) }
        })
        .await
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// How many connections this mock has accepted.
    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many connections to this mock have ended.
    pub fn closed_connections(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

/// A streamed `text/event-stream` response whose chunks the test sends.
pub fn sse_response() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|item| item.map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b))))
    });
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::new(http_body_util::StreamBody::new(stream)))
        .unwrap();
    (tx, response)
}

/// A gateway served on 127.0.0.1 from a config.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Serves `config`. The text `GATEWAY` in it is replaced by the
    /// gateway's own `127.0.0.1:PORT`, and `port` is set to that port, so
    /// backends without a host call the gateway itself.
    pub async fn start(config: Value) -> Self {
        Self::start_in(config, Path::new(".")).await
    }

    /// As [`Gateway::start`], with relative paths resolved against `base_dir`.
    pub async fn start_in(config: Value, base_dir: &Path) -> Self {
        Self::try_start_in(config, base_dir)
            .await
            .unwrap_or_else(|errors| panic!("config refused: {errors:?}"))
    }

    /// As [`Gateway::start_in`], returning config errors as text.
    pub async fn try_start_in(config: Value, base_dir: &Path) -> Result<Self, Vec<String>> {
        Self::try_start_with_env(config, base_dir, &|name| std::env::var(name).ok()).await
    }

    /// As [`Gateway::try_start_in`], with `{{ env "NAME" }}` looked up in `env`.
    pub async fn try_start_with_env(
        config: Value,
        base_dir: &Path,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Self, Vec<String>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = config;
        config["port"] = Value::from(addr.port());
        let text = config.to_string().replace("GATEWAY", &addr.to_string());
        let root = switchboard::config::parse_str(&text, env)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let loaded = switchboard::config::LoadedConfig {
            root,
            base_dir: base_dir.to_path_buf(),
        };
        let app = switchboard::build_app(&loaded)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            switchboard::serve(listener, app, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks the gateway to stop and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A plain HTTP client with no retries and no proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Waits until `check` holds, up to `timeout`.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
