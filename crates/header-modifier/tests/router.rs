//! The layer inside an axum Router, driven with `oneshot`.

#![allow(clippy::unwrap_used)] // test helpers: a failure should stop the test

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::json;
use switchboard_header_modifier::ModifyHeadersLayer;
use tower::ServiceExt;

/// Stands in for the vendor: reports what it received.
async fn vendor(
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: String,
) -> ([(&'static str, &'static str); 2], String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let report = json!({ "authorization": auth, "uri": uri.to_string(), "body": body });
    (
        [("server", "vendor/1.0"), ("x-request-id", "abc")],
        report.to_string(),
    )
}

fn config() -> serde_json::Value {
    json!({
        "fifo.Group": {
            "scope": ["request", "response"],
            "modifiers": [
                { "header.Modifier": { "scope": ["request"], "name": "Authorization", "value": "Bearer sk-from-env" } },
                { "querystring.Modifier": { "scope": ["request"], "name": "api-version", "value": "1" } },
                { "header.Blacklist": { "scope": ["response"], "names": ["Server"] } },
                { "header.Copy": { "scope": ["response"], "from": "X-Request-Id", "to": "X-Upstream-Request-Id" } }
            ]
        }
    })
}

async fn call(app: Router, request: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn injects_the_key_and_cleans_the_response() {
    let layer = ModifyHeadersLayer::try_from_config(&config()).unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(vendor))
        .layer(layer);
    let request = Request::post("/v1/chat/completions")
        .header("authorization", "Bearer client-token")
        .body(Body::from("hi"))
        .unwrap();
    let (status, headers, report) = call(app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["authorization"], "Bearer sk-from-env");
    assert_eq!(report["uri"], "/v1/chat/completions?api-version=1");
    assert_eq!(report["body"], "hi");
    assert!(headers.get("server").is_none());
    assert_eq!(headers["x-upstream-request-id"], "abc");
}

#[tokio::test]
async fn split_scopes_compose() {
    let layer = ModifyHeadersLayer::try_from_config(&config()).unwrap();
    // Request-only: the response keeps its Server header.
    let app = Router::new()
        .route("/v1/chat/completions", post(vendor))
        .layer(layer.request_only());
    let request = Request::post("/v1/chat/completions")
        .body(Body::empty())
        .unwrap();
    let (_, headers, report) = call(app, request).await;
    assert_eq!(report["authorization"], "Bearer sk-from-env");
    assert_eq!(headers["server"], "vendor/1.0");

    // Response-only: the request is untouched.
    let app = Router::new()
        .route("/v1/chat/completions", post(vendor))
        .layer(layer.response_only());
    let request = Request::post("/v1/chat/completions")
        .body(Body::empty())
        .unwrap();
    let (_, headers, report) = call(app, request).await;
    assert_eq!(report["authorization"], "");
    assert!(headers.get("server").is_none());
}

#[tokio::test]
async fn body_modifier_replaces_both_bodies() {
    let layer = ModifyHeadersLayer::try_from_config(&json!({
        "body.Modifier": {
            "scope": ["request", "response"],
            "contentType": "application/json",
            "body": "eyJtc2ciOiJ5b3Ugcm9jayEifQ=="
        }
    }))
    .unwrap();
    let app = Router::new()
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                assert_eq!(headers["content-type"], "application/json");
                assert_eq!(headers["content-length"], body.len().to_string().as_str());
                format!("upstream saw {body}")
            }),
        )
        .layer(layer);
    let request = Request::post("/echo")
        .header("content-type", "text/plain")
        .body(Body::from("original"))
        .unwrap();
    let (status, headers, body) = call(app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"msg": "you rock!"}));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["content-length"], "19");
}
