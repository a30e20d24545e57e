//! The seed's example config, run end to end against mock vendors.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client, json_response, sse_response};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs")
}

/// The seed config (`examples/configs/seed.json`: the seed with `"method":
/// "POST"` on `/multi-llm` and `/_llm/gemini`, a 60s timeout, the
/// `X-Llm` check repeated on the inner endpoints and the masking pattern
/// bounded for streams, so that `check` has nothing to warn about) with
/// the vendors' hosts pointed at mocks and `localhost:8080` at the gateway
/// itself.
fn seed_config(openai: &MockUpstream, gemini: &MockUpstream) -> Value {
    let text = std::fs::read_to_string(configs_dir().join("seed.json")).unwrap();
    let text = text
        .replace("https://api.openai.com", &openai.url())
        .replace("https://generativelanguage.googleapis.com", &gemini.url())
        .replace("localhost:8080", "GATEWAY");
    serde_json::from_str(&text).unwrap()
}

async fn vendors() -> (MockUpstream, MockUpstream) {
    let openai = MockUpstream::json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi from OpenAI"}}]
    }))
    .await;
    let gemini = MockUpstream::json(json!({
        "candidates": [{"content": {"parts": [{"text": "Hi from Gemini"}]}}]
    }))
    .await;
    (openai, gemini)
}

#[tokio::test]
async fn seed_header_routing_reaches_each_vendor_in_its_dialect() {
    let (openai, gemini) = vendors().await;
    let gateway = Gateway::start_in(seed_config(&openai, &gemini), &configs_dir()).await;
    let http = client();
    let content = "Say \"hi\" \\ to </script> {{ .req_body }} 😀\n";

    let response = http
        .post(gateway.url("/multi-llm"))
        .header("X-LLM", "openai")
        .header("Authorization", "Bearer client-token")
        .header("Content-Type", "application/json")
        .body(json!({"content": content}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hi from OpenAI");
    let seen = openai.requests().pop().unwrap();
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(
        seen.headers["authorization"], "Bearer YOUR_OPENI_API_KEY",
        "the seed's martian modifier injects the vendor key (never the client's)"
    );
    assert_eq!(seen.json(), json!({"content": content}));

    let response = http
        .post(gateway.url("/multi-llm"))
        .header("x-llm", "gemini")
        .header("Content-Type", "application/json")
        .body(json!({"content": content}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        "Hi from Gemini"
    );
    let seen = gemini.requests().pop().unwrap();
    assert_eq!(
        seen.uri,
        "/v1beta/models/gemini-pro:generateContent?key=YOUR_API_KEY"
    );
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(
        seen.json(),
        json!({"contents": [{"parts": [{"text": content}]}]}),
        "the seed's gemini.tmpl generated the vendor payload"
    );
    assert_eq!(
        seen.headers["content-length"].to_str().unwrap(),
        seen.body.len().to_string()
    );
}

#[tokio::test]
async fn seed_policy_denies_unknown_vendors_before_anything_leaves() {
    let (openai, gemini) = vendors().await;
    let gateway = Gateway::start_in(seed_config(&openai, &gemini), &configs_dir()).await;
    let http = client();
    for header in [
        Some("cohere"),
        Some("OpenAI"),
        Some("../__echo/x"),
        Some(""),
        None,
    ] {
        let mut request = http
            .post(gateway.url("/multi-llm"))
            .header("Content-Type", "application/json")
            .body(r#"{"content":"hi"}"#);
        if let Some(value) = header {
            request = request.header("X-Llm", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "KrakenD's default policy status, for {header:?}"
        );
        assert_eq!(response.headers()["x-should-retry"], "false");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    assert_eq!(openai.count(), 0);
    assert_eq!(gemini.count(), 0);
}

#[tokio::test]
async fn seed_resp_mask_masks_the_echo() {
    let (openai, gemini) = vendors().await;
    let gateway = Gateway::start_in(seed_config(&openai, &gemini), &configs_dir()).await;
    let response = client()
        .get(gateway.url("/resp-mask"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["req_uri_details"]["path"], "/__echo/XXX-6789");
    assert_eq!(
        body["req_uri"], "/__echo/123456789",
        "only the configured field changes"
    );
    assert_eq!(body["req_method"], "GET");
}

#[tokio::test]
async fn vendor_keys_come_from_the_environment() {
    let (openai, gemini) = vendors().await;
    let env =
        |name: &str| (name == "SWITCHBOARD_E2E_OPENAI_KEY").then(|| "sk-from-env-123".to_owned());
    let mut config = seed_config(&openai, &gemini);
    config["endpoints"][2]["backend"][0]["extra_config"]["modifier/martian"]["header.Modifier"]["value"] =
        json!("Bearer {{ env \"SWITCHBOARD_E2E_OPENAI_KEY\" }}");
    let gateway = Gateway::try_start_with_env(config, &configs_dir(), &env)
        .await
        .unwrap();
    let response = client()
        .post(gateway.url("/multi-llm"))
        .header("X-Llm", "openai")
        .body(r#"{"content":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        openai.requests().pop().unwrap().headers["authorization"],
        "Bearer sk-from-env-123"
    );

    let mut missing = seed_config(&openai, &gemini);
    missing["endpoints"][2]["backend"][0]["extra_config"]["modifier/martian"]["header.Modifier"]
        ["value"] = json!("Bearer {{ env \"SWITCHBOARD_E2E_UNSET_KEY\" }}");
    let errors = Gateway::try_start_with_env(missing, &configs_dir(), &env)
        .await
        .err()
        .unwrap();
    assert!(
        errors[0].contains("SWITCHBOARD_E2E_UNSET_KEY"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("$.endpoints[2].backend[0].extra_config"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_streamed_card_number_split_across_events_reaches_the_client_masked() {
    let (next_tx, next_rx) = tokio::sync::watch::channel(0usize);
    let parts = ["Your card is 4111 11", "11 1111 ", "1111, keep it safe."];
    let vendor = MockUpstream::start(move |_| {
        let mut next = next_rx.clone();
        async move {
            let (tx, response) = sse_response();
            tokio::spawn(async move {
                for (i, part) in parts.iter().enumerate() {
                    // Each event waits until the client saw the previous one.
                    next.wait_for(|n| *n >= i).await.unwrap();
                    let event = json!({"choices": [{"index": 0, "delta": {"content": part}}]});
                    tx.send(Bytes::from(format!("data: {event}\n\n")))
                        .await
                        .unwrap();
                }
                next.wait_for(|n| *n >= parts.len()).await.unwrap();
                tx.send(Bytes::from_static(b"data: [DONE]\n\n"))
                    .await
                    .unwrap();
            });
            response
        }
    })
    .await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [{
            "endpoint": "/v1/chat/completions",
            "method": "POST",
            "timeout": "10s",
            "backend": [{
                "host": [vendor.url()],
                "url_pattern": "/v1/chat/completions",
                "extra_config": {
                    "modifier/response-body": {
                        "streaming": true,
                        "modifiers": [{"regexp": {
                            "field": "choices.*.delta.content",
                            "find": "\\b(?:\\d[ -]?){13,16}\\b",
                            "replace": "[card] "
                        }}]
                    }
                }
            }]
        }]
    }))
    .await;
    let mut response = client()
        .post(gateway.url("/v1/chat/completions"))
        .body(r#"{"stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut released = 0;
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("each event arrives before the vendor sends the next")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event = buffer[..end].to_owned();
            buffer.drain(..end + 2);
            events.push(event);
            released += 1;
            next_tx.send(released).unwrap();
        }
    }
    let text: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(!text.contains("4111") && !text.contains("1111"), "{text}");
    assert_eq!(text, "Your card is [card] , keep it safe.", "{events:?}");
    // One event out per event in, as each arrives (the vendor waits for the
    // client to see each one), plus one that flushes the held-back tail
    // before [DONE].
    assert_eq!(events.len(), parts.len() + 2, "{events:?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]");
}

#[tokio::test]
async fn vendor_errors_fail_the_endpoint_as_krakend_does() {
    let openai = MockUpstream::start(|_| async {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
        )
    })
    .await;
    let (_, gemini) = vendors().await;
    let gateway = Gateway::start_in(seed_config(&openai, &gemini), &configs_dir()).await;
    let response = client()
        .post(gateway.url("/multi-llm"))
        .header("X-Llm", "openai")
        .body(r#"{"content":"hi"}"#)
        .send()
        .await
        .unwrap();
    // The seed's endpoints are KrakenD json endpoints: a backend's error
    // status fails the inner endpoint with a 500, and so the outer one;
    // the vendor's body stays behind.
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    assert!(!response.text().await.unwrap().contains("Rate limit"));
    assert_eq!(openai.count(), 1);
}
