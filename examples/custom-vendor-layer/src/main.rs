//! An axum app that serves OpenAI Chat Completions and Anthropic Messages
//! in front of Acme, a made-up vendor, through Switchboard's `RouteLlm`
//! layer and the example's own [`AcmeAdapter`]. Acme itself is a mock in
//! the same process, so everything works offline.
//!
//! ```text
//! cargo run -p example-custom-vendor-layer
//! cargo run -p example-custom-vendor-layer -- --self-test
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use example_custom_vendor_layer::AcmeAdapter;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_core::Body;
use switchboard_llm_router::{ClientFormat, Provider, ProviderSettings, RouteLlmLayer, Secret};
use tower::{Layer, ServiceExt, service_fn};

const ADDR: &str = "127.0.0.1:3001";
const KEY: &str = "demo-key";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = app();
    if std::env::args().skip(1).any(|arg| arg == "--self-test") {
        return self_test(app).await;
    }
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("listening on http://{ADDR}");
    println!(
        "try: curl -s http://{ADDR}/v1/chat/completions -H 'Content-Type: application/json' \\\n  \
         -d '{{\"model\": \"acme\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
    );
    println!("     or POST /v1/messages in Anthropic's format; add \"stream\": true for events");
    axum::serve(listener, app).await?;
    Ok(())
}

/// The same Acme provider behind both client formats.
fn app() -> Router {
    let settings = ProviderSettings::new(
        "acme",
        "http://acme.internal/v2/generate",
        "acme-large",
        Secret::new(KEY),
    );
    let provider = Provider::with_adapter(Arc::new(AcmeAdapter), settings);
    let openai = RouteLlmLayer::for_provider(provider.clone()).with_format(ClientFormat::OpenAi);
    let anthropic = RouteLlmLayer::for_provider(provider).with_format(ClientFormat::Anthropic);
    Router::new()
        .route_service("/v1/chat/completions", openai.layer(service_fn(mock_acme)))
        .route_service("/v1/messages", anthropic.layer(service_fn(mock_acme)))
}

/// Acme, in process: checks its key and answers in its own dialect.
async fn mock_acme(request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let authorized = request
        .headers()
        .get("x-acme-key")
        .is_some_and(|key| key == KEY);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = |status: StatusCode, body: Body| {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    };
    if !authorized {
        let fault = json!({"fault": {"reason": "bad key"}}).to_string();
        return answer(StatusCode::UNAUTHORIZED, Body::from(fault));
    }
    let prompt = asked["turns"][0]["text"].as_str().unwrap_or_default();
    let reply = format!("Acme heard: {prompt}");
    if asked["stream"] == true {
        let lines: Vec<Result<Bytes, Infallible>> = reply
            .split_inclusive(' ')
            .map(|word| Ok(Bytes::from(format!("{}\n", json!({"delta": word})))))
            .chain(std::iter::once(Ok(Bytes::from(format!(
                "{}\n",
                json!({"done": true, "tokens": {"in": 4, "out": 3}})
            )))))
            .collect();
        return answer(
            StatusCode::OK,
            Body::from_stream(futures_util::stream::iter(lines)),
        );
    }
    let whole = json!({"id": "a1", "output": {"text": reply}, "tokens": {"in": 4, "out": 3}});
    answer(StatusCode::OK, Body::from(whole.to_string()))
}

/// Drives the app in process and checks what comes back.
async fn self_test(app: Router) -> Result<(), Box<dyn std::error::Error>> {
    let call = |path: &str, body: Value| {
        Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
    };
    let response = app
        .clone()
        .oneshot(call(
            "/v1/chat/completions",
            json!({"model": "acme", "messages": [{"role": "user", "content": "Hello"}]}),
        )?)
        .await?;
    let chat: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "Acme heard: Hello"
    );
    assert_eq!(chat["usage"]["total_tokens"], 7);

    let response = app
        .clone()
        .oneshot(call(
            "/v1/messages",
            json!({"model": "acme", "max_tokens": 20, "stream": true,
                "messages": [{"role": "user", "content": "Hi there"}]}),
        )?)
        .await?;
    let text = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("\"text\":\"heard: \""), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );

    let response = app
        .oneshot(call(
            "/v1/chat/completions",
            json!({"model": "acme", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]}),
        )?)
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(error["error"]["param"], "tools");
    println!("self-test passed");
    Ok(())
}
