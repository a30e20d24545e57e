//! An axum app that speaks OpenAI chat completions in front of Acme, a
//! made-up vendor: the custom [`TranslateToAcmeLayer`] translates the
//! dialect, Switchboard's `ModifyHeadersLayer` removes the client's
//! credential and injects the vendor key. Acme itself is a mock in the same
//! process, so everything works offline.
//!
//! ```text
//! ACME_API_KEY=demo-key cargo run -p example-custom-vendor-layer
//! cargo run -p example-custom-vendor-layer -- --self-test
//! ```

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use example_custom_vendor_layer::TranslateToAcmeLayer;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_core::{Body, ConfigError};
use switchboard_header_modifier::ModifyHeadersLayer;
use tower::{ServiceBuilder, ServiceExt};

const ADDR: &str = "127.0.0.1:3001";
const PATH: &str = "/v1/chat/completions";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("ACME_API_KEY").unwrap_or_else(|_| "demo-key".to_owned());
    let app = app(&key)?;
    if std::env::args().skip(1).any(|arg| arg == "--self-test") {
        return self_test(app).await;
    }
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("listening on http://{ADDR}");
    println!(
        "try: curl -s http://{ADDR}{PATH} -H 'Content-Type: application/json' \\\n  \
         -d '{{\"model\": \"gpt-4o\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
    );
    println!("     (add \"stream\": true and curl -N for an event stream)");
    axum::serve(listener, app).await?;
    Ok(())
}

/// The layers in front of Acme, outermost first: the dialect translation,
/// then the credentials.
fn app(key: &str) -> Result<Router, ConfigError> {
    let translate = TranslateToAcmeLayer::try_from_config(&json!({
        "engines": {"gpt-4o": "acme-large", "gpt-4o-mini": "acme-small"},
        "default_engine": "acme-small"
    }))?;
    // The same object a gateway config holds under `modifier/martian`.
    let credentials = ModifyHeadersLayer::try_from_config(&json!({
        "fifo.Group": {
            "scope": ["request"],
            "modifiers": [
                {"header.Blacklist": {"scope": ["request"], "names": ["Authorization"]}},
                {"header.Modifier": {"scope": ["request"], "name": "X-Acme-Key", "value": key}}
            ]
        }
    }))?;
    let acme = Router::new()
        .route(PATH, post(mock_acme))
        .with_state(Arc::new(key.to_owned()));
    Ok(acme.layer(ServiceBuilder::new().layer(translate).layer(credentials)))
}

/// The mock vendor: checks its key, refuses what is not Acme's dialect and
/// answers the last prompt line back, whole or as an event stream.
async fn mock_acme(
    State(key): State<Arc<String>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let fault = |status: StatusCode, reason: &str| {
        (status, Json(json!({"fault": {"reason": reason}}))).into_response()
    };
    if headers.get("x-acme-key").and_then(|v| v.to_str().ok()) != Some(key.as_str()) {
        return fault(StatusCode::UNAUTHORIZED, "unknown API key");
    }
    if headers.contains_key(AUTHORIZATION) {
        return fault(StatusCode::BAD_REQUEST, "a client credential reached Acme");
    }
    let (Some(engine), Some(prompt)) = (
        request.get("engine").and_then(Value::as_str),
        request.get("prompt").and_then(Value::as_str),
    ) else {
        return fault(StatusCode::BAD_REQUEST, "engine and prompt are required");
    };
    let said = prompt
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("user: "))
        .unwrap_or("nothing");
    let text = format!("{engine} heard: {said}");
    let tokens =
        json!({"in": prompt.split_whitespace().count(), "out": text.split_whitespace().count()});

    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut events: Vec<Result<Bytes, std::convert::Infallible>> = text
            .split_inclusive(' ')
            .map(|word| {
                let data = json!({"text": word});
                Ok(Bytes::from(format!("event: token\ndata: {data}\n\n")))
            })
            .collect();
        let end = json!({"finish": "stop", "tokens": tokens});
        events.push(Ok(Bytes::from(format!("event: end\ndata: {end}\n\n"))));
        return (
            [(CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(futures_util::stream::iter(events)),
        )
            .into_response();
    }
    Json(json!({
        "id": "acme-1",
        "created": 1_700_000_000,
        "output": {"text": text},
        "finish": "stop",
        "tokens": tokens
    }))
    .into_response()
}

/// Sends requests through the whole stack in-process and checks the answers.
async fn self_test(app: Router) -> Result<(), Box<dyn std::error::Error>> {
    let chat = |body: String| {
        Request::post(PATH)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, "Bearer client-token")
            .body(Body::from(body))
    };
    let cases = [
        (
            "chat",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]})
                .to_string(),
            StatusCode::OK,
            "acme-large heard: Hello",
        ),
        (
            "stream",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
                .to_string(),
            StatusCode::OK,
            "data: [DONE]",
        ),
        (
            "not JSON",
            "hello".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    let mut failed = 0;
    for (name, body, status, needle) in cases {
        let response = app.clone().oneshot(chat(body)?).await?;
        let got = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let ok = got == status && text.contains(needle);
        println!(
            "{} {name}: {got}\n{}\n",
            if ok { "ok  " } else { "FAIL" },
            text.trim_end()
        );
        failed += usize::from(!ok);
    }
    if failed > 0 {
        return Err(format!("{failed} self-test case(s) failed").into());
    }
    println!("self-test passed");
    Ok(())
}
