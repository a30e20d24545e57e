//! Helpers for tests that check what this crate exports (feature
//! `test-util`): `promtool check metrics`, and an in-process OTLP/HTTP
//! collector that decodes each export.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as AttributeValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;

/// Runs `promtool check metrics` on `text`: `Ok(false)` when promtool is
/// not installed, `Err` with its complaint when it refuses the text.
pub fn promtool_check(text: &str) -> Result<bool, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return Ok(false);
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// An OTLP/HTTP collector on 127.0.0.1: every `POST /v1/traces` is decoded
/// and its spans passed on.
#[derive(Debug)]
pub struct OtlpCollector {
    /// The port it listens on.
    pub port: u16,
    spans: mpsc::UnboundedReceiver<Result<Vec<Span>, String>>,
}

impl OtlpCollector {
    /// Starts the collector.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, spans) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let _ = tx.send(decode(request).await);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Ok(Self { port, spans })
    }

    /// Waits for at least `count` spans (each export is checked: path,
    /// content type, protobuf body).
    pub async fn spans(&mut self, count: usize) -> Result<Vec<Span>, String> {
        let mut spans = Vec::new();
        while spans.len() < count {
            match tokio::time::timeout(std::time::Duration::from_secs(30), self.spans.recv()).await
            {
                Ok(Some(batch)) => spans.extend(batch?),
                Ok(None) => return Err("the collector stopped".to_owned()),
                Err(_) => return Err(format!("only {} of {count} spans arrived", spans.len())),
            }
        }
        Ok(spans)
    }
}

async fn decode(request: Request<hyper::body::Incoming>) -> Result<Vec<Span>, String> {
    if request.uri().path() != "/v1/traces" {
        return Err(format!("export to {}", request.uri().path()));
    }
    let content_type = request.headers().get(http::header::CONTENT_TYPE).cloned();
    if content_type.as_ref().map(|v| v.as_bytes()) != Some(b"application/x-protobuf") {
        return Err(format!("content type {content_type:?}"));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let export = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())?;
    Ok(export
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect())
}

/// The value of attribute `key` of `span`.
pub fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AttributeValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that promtool accepts `text`; without promtool it only notes it,
/// unless `CI` is set (CI installs promtool).
#[allow(clippy::panic)]
pub fn assert_promtool_accepts(text: &str) {
    match promtool_check(text) {
        Ok(true) => {}
        Ok(false) => {
            assert!(std::env::var_os("CI").is_none(), "CI must install promtool");
            eprintln!("promtool not installed; skipping its check (CI installs it)");
        }
        Err(problem) => panic!("promtool refused the metrics: {problem}"),
    }
}
