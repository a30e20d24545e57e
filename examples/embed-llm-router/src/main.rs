//! An OpenAI-compatible chat endpoint in front of any vendor, built from
//! Switchboard's LLM router alone: `RouteLlmLayer` stacked over a pooled
//! hyper client in a plain axum app.
//!
//! ```text
//! # the inventory is KrakenD's ai/providers object:
//! SWITCHBOARD_PROVIDERS='{"providers": [{"name": "claude", "provider": "anthropic",
//!   "credentials": "sk-ant-...", "format": "openai"}]}' cargo run -p example-embed-llm-router
//! # offline, against a mock vendor on loopback:
//! cargo run -p example-embed-llm-router -- --self-test
//! ```

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};
use switchboard_core::Body;
use switchboard_llm_router::{ClientFormat, Providers, RouteLlmLayer};
use tower::{Layer, ServiceExt};

const ADDR: &str = "127.0.0.1:3002";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().skip(1).any(|arg| arg == "--self-test") {
        return self_test().await;
    }
    let config: Value = serde_json::from_str(
        &std::env::var("SWITCHBOARD_PROVIDERS")
            .map_err(|_| "set SWITCHBOARD_PROVIDERS to an ai/providers object")?,
    )?;
    let providers = Providers::from_config(&config)?;
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("listening on http://{ADDR}/v1/chat/completions");
    axum::serve(listener, app(providers)).await?;
    Ok(())
}

/// The app: chats and the model list go through the router layer, whose
/// inner service is the HTTP client that reaches the vendors.
fn app(providers: Providers) -> Router {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(https);
    let vendors = client.map_response(|response| response.map(Body::new));
    let llm = RouteLlmLayer::new(providers)
        .with_format(ClientFormat::OpenAi)
        .layer(vendors);
    Router::new()
        .route_service("/v1/chat/completions", llm.clone())
        .route_service("/v1/models", llm)
        .route("/healthz", get(|| async { "ok" }))
}

/// A mock OpenAI-compatible vendor on loopback, the app in front of it,
/// one chat through both.
async fn self_test() -> Result<(), Box<dyn std::error::Error>> {
    let vendor = Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|headers: http::HeaderMap, body: String| async move {
            if headers
                .get("authorization")
                .is_none_or(|v| v != "Bearer local-key")
            {
                return (StatusCode::UNAUTHORIZED, "{}".to_owned());
            }
            let asked: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let answer = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                "model": asked["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
            (StatusCode::OK, answer.to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let vendor_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, vendor).await });

    let providers = Providers::from_config(&json!({"providers": [{
        "name": "local", "provider": "openai-compatible", "model": "tiny-llm",
        "endpoint": format!("http://{vendor_addr}/v1/chat/completions"),
        "credentials": "local-key"}]}))?;
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"model": "local", "messages": [{"role": "user", "content": "ping"}]})
                .to_string(),
        ))?;
    let response = app(providers).oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let chat: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(chat["choices"][0]["message"]["content"], "pong");
    assert_eq!(chat["model"], "tiny-llm");
    println!("self-test passed: {}", chat["usage"]);
    Ok(())
}
