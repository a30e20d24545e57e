//! The layers around a `service_fn` inner service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_body_generator::{GenerateBodyLayer, GenerateResponseBodyLayer};
use switchboard_core::{Body, BodyLimit, Claims, JsonBody, RouteParams};
use tower::{Layer, ServiceExt, service_fn};

fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn body_json(body: Body) -> Value {
    let bytes = body.collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
}

/// Headers, `JsonBody` extension and body the inner service received.
type Received = (http::HeaderMap, Option<JsonBody>, Vec<u8>);

/// What the inner service saw.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Option<Received>>>);

/// Runs `request` through the request generator and an echo-less inner
/// service that records what it received.
async fn run(layer: &GenerateBodyLayer, request: Request<Body>) -> (Response<Body>, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let inner = service_fn(move |request: Request<Body>| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes().to_vec();
            *record.0.lock().unwrap() = Some((
                parts.headers,
                parts.extensions.get::<JsonBody>().cloned(),
                bytes,
            ));
            Ok::<_, Infallible>(Response::new(Body::from("upstream")))
        }
    });
    let response = layer.layer(inner).oneshot(request).await.unwrap();
    (response, seen)
}

#[tokio::test]
async fn inner_service_receives_the_rendered_body() {
    let layer = GenerateBodyLayer::try_from_config(
        &json!({"path": "templates/anthropic.tmpl", "debug": true}),
        &base_dir(),
    )
    .unwrap();
    let content = "say \"hi\"\n</script> {{ .req_body }}";
    let request = Request::post("/_llm/anthropic")
        .header(CONTENT_TYPE, "text/plain")
        .header("authorization", "Bearer secret")
        .body(Body::from(json!({"content": content}).to_string()))
        .unwrap();
    let (response, seen) = run(&layer, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (headers, json_body, bytes) = seen.0.lock().unwrap().take().unwrap();
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[CONTENT_LENGTH], bytes.len().to_string().as_str());
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent["model"], "claude-3-sonnet-20240229");
    assert_eq!(sent["messages"][0]["content"], content);
    // Later layers never see the client's parsed body; they parse the new
    // one if they need it.
    assert!(json_body.is_none());
}

#[tokio::test]
async fn non_json_body_is_a_400_json_error() {
    let layer =
        GenerateBodyLayer::try_from_config(&json!({"path": "templates/openai.tmpl"}), &base_dir())
            .unwrap();
    let request = Request::post("/x").body(Body::from("content=hi")).unwrap();
    let (response, seen) = run(&layer, request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let body = body_json(response.into_body()).await;
    assert_eq!(body["error"]["code"], "invalid_json");
    assert!(
        seen.0.lock().unwrap().is_none(),
        "inner service must not be called"
    );
}

#[tokio::test]
async fn empty_body_renders_null_content() {
    let layer =
        GenerateBodyLayer::try_from_config(&json!({"path": "templates/cohere.tmpl"}), &base_dir())
            .unwrap();
    let (response, seen) = run(&layer, Request::post("/x").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, _, bytes) = seen.0.lock().unwrap().take().unwrap();
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent["message"], Value::Null);
}

#[tokio::test]
async fn body_not_read_when_template_ignores_it() {
    let layer = GenerateBodyLayer::try_from_config(
        &json!({"template": b64("<q>{{ .req_method }} {{ .req_path }}</q>"), "content_type": "application/xml"}),
        &base_dir(),
    )
    .unwrap();
    let request = Request::get("/a/b")
        .extension(JsonBody::new(json!({"old": true})))
        .body(Body::from("not json at all"))
        .unwrap();
    let (response, seen) = run(&layer, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (headers, json_body, bytes) = seen.0.lock().unwrap().take().unwrap();
    assert_eq!(bytes, b"<q>GET /a/b</q>");
    assert_eq!(headers[CONTENT_TYPE], "application/xml");
    assert_eq!(headers[CONTENT_LENGTH], "15");
    assert!(json_body.is_none(), "a non-JSON output removes JsonBody");
}

#[tokio::test]
async fn oversize_body_is_413() {
    let layer =
        GenerateBodyLayer::try_from_config(&json!({"path": "templates/gemini.tmpl"}), &base_dir())
            .unwrap();
    let content = "x".repeat(2000);
    let request = Request::post("/x")
        .extension(BodyLimit(1000))
        .body(Body::from(json!({"content": content}).to_string()))
        .unwrap();
    let (response, seen) = run(&layer, request).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen.0.lock().unwrap().is_none());
}

#[tokio::test]
async fn all_template_data() {
    let template = r#"{
  "method": {{ .req_method | toJson }},
  "path": {{ toJson .req_path }},
  "llm": {{ index .req_headers "X-Llm" 0 | toJson }},
  "id": {{ .req_params.Id | toJson }},
  "plain_id": {{ .req_params.id | toJson }},
  "q": {{ index .req_querystring "q" | toJson }},
  "sub": {{ .JWT.sub | toJson }},
  "tier": {{ .variables.tier | upper | toJson }},
  "model": {{ .req_body.model | default "gpt-4o" | toJson }},
  "tags": [{{- range $i, $t := .req_body.tags }}{{ if $i }},{{ end }}{{ toJson $t }}{{ end -}}]
}"#;
    let layer = GenerateBodyLayer::try_from_config(
        &json!({"template": b64(template), "variables": {"tier": "gold"}}),
        &base_dir(),
    )
    .unwrap();
    let params: RouteParams = [("id".to_owned(), "42".to_owned())].into_iter().collect();
    let request = Request::post("/users/42?q=a&q=b")
        .header("x-llm", "gemini")
        .extension(params)
        .extension(Claims::new(json!({"sub": "alice"})))
        .body(Body::from(r#"{"tags": ["a", "b"]}"#))
        .unwrap();
    let (_, seen) = run(&layer, request).await;
    let (_, _, bytes) = seen.0.lock().unwrap().take().unwrap();
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        sent,
        json!({
            "method": "POST",
            "path": "/users/42",
            "llm": "gemini",
            "id": "42",
            "plain_id": "42",
            "q": ["a", "b"],
            "sub": "alice",
            "tier": "GOLD",
            "model": "gpt-4o",
            "tags": ["a", "b"]
        })
    );
}

#[tokio::test]
async fn tera_templates_work_too() {
    let layer = GenerateBodyLayer::try_from_config(
        &json!({"template": b64(r#"{"prompt": {{ req_body.content | json_encode() }}, "v": "{{ variables.v }}"}"#), "variables": {"v": "1"}}),
        &base_dir(),
    )
    .unwrap();
    let request = Request::post("/x")
        .body(Body::from(r#"{"content": "a\"b"}"#))
        .unwrap();
    let (_, seen) = run(&layer, request).await;
    let (_, _, bytes) = seen.0.lock().unwrap().take().unwrap();
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent, json!({"prompt": "a\"b", "v": "1"}));
}

#[test]
fn unsupported_go_constructs_fail_at_load() {
    for (template, construct, line) in [
        ("{\n\"a\": {{ template \"x\" }}\n}", "template", 2),
        ("{{ define \"x\" }}a{{ end }}", "define", 1),
        (
            "\n\n\n{{ with .req_body }}{{ .content }}{{ end }}",
            "with",
            4,
        ),
        (
            "{\n\"a\": {{ .req_body.content | sha256sum }}\n}",
            "sha256sum",
            2,
        ),
        ("{{ printf \"%s\" .req_body.content }}", "printf", 1),
        ("{{ if .req_body }}\nopen", "never closed", 1),
    ] {
        let err =
            GenerateBodyLayer::try_from_config(&json!({"template": b64(template)}), &base_dir())
                .unwrap_err();
        assert_eq!(err.path, "template");
        assert!(
            err.message.starts_with(&format!("line {line}:")) && err.message.contains(construct),
            "{template:?}: {}",
            err.message
        );
        // The response generator compiles the same way.
        assert!(
            GenerateResponseBodyLayer::try_from_config(
                &json!({"template": b64(template)}),
                &base_dir()
            )
            .is_err()
        );
    }
}

#[tokio::test]
async fn response_generator_rewrites_the_upstream_body() {
    let template = r#"{"data": {{ toJson .resp_body }}, "status_code": {{ toJson .resp_status }}, "server": {{ index .resp_headers "X-Server" 0 | toJson }}, "path": {{ toJson .req_path }}}"#;
    let layer = GenerateResponseBodyLayer::try_from_config(
        &json!({"template": b64(template)}),
        &base_dir(),
    )
    .unwrap();
    let inner = service_fn(|_request: Request<Body>| async {
        let response = Response::builder()
            .status(StatusCode::CREATED)
            .header("x-server", "mock")
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, "13")
            .body(Body::from(r#"{"answer":42}"#))
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let response = layer
        .layer(inner)
        .oneshot(Request::get("/resp").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let length: usize = response.headers()[CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(length, bytes.len());
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        body,
        json!({"data": {"answer": 42}, "status_code": 201, "server": "mock", "path": "/resp"})
    );
}

#[tokio::test]
async fn response_generator_leaves_event_streams_alone() {
    let layer = GenerateResponseBodyLayer::try_from_config(
        &json!({"template": b64("{{ toJson .resp_body }}")}),
        &base_dir(),
    )
    .unwrap();
    let inner = service_fn(|_request: Request<Body>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .body(Body::from("data: x\n\n"))
                .unwrap(),
        )
    });
    let response = layer
        .layer(inner)
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"data: x\n\n");
}

#[tokio::test]
async fn response_over_limit_is_502() {
    let layer = GenerateResponseBodyLayer::try_from_config(
        &json!({"template": b64("{{ toJson .resp_body }}")}),
        &base_dir(),
    )
    .unwrap();
    let inner = service_fn(|_request: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("y".repeat(100))))
    });
    let response = layer
        .layer(inner)
        .oneshot(
            Request::get("/")
                .extension(BodyLimit(10))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}
