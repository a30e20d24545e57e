//! End-to-end tests of Gemini and Bedrock behind the OpenAI client format:
//! the gateway over loopback in front of mock vendors that check what they
//! receive (the key header, the SigV4 signature recomputed here from the
//! bytes received, the body shape, the model in the URL), streamed and not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_e2e::{Gateway, MockUpstream, Recorded, client, json_response, sse_response};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/llm")
            .join(path),
    )
    .unwrap()
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

/// A mock vendor that answers 418 naming the problem when `check` fails.
async fn vendor(
    check: fn(&Recorded) -> Result<(), String>,
    answer: fn(&Recorded) -> http::Response<switchboard_core::Body>,
) -> MockUpstream {
    MockUpstream::start(move |recorded: Recorded| async move {
        match check(&recorded) {
            Ok(()) => answer(&recorded),
            Err(problem) => json_response(
                StatusCode::IM_A_TEAPOT,
                &json!({"error": {"message": problem}}),
            ),
        }
    })
    .await
}

/// Streams `bytes` in small uneven pieces with `content_type`.
fn streamed(bytes: Vec<u8>, content_type: &'static str) -> http::Response<switchboard_core::Body> {
    let (tx, mut response) = sse_response();
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    tokio::spawn(async move {
        let bytes = Bytes::from(bytes);
        let mut at = 0;
        let mut step = 7;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            if tx.send(bytes.slice(at..end)).await.is_err() {
                return;
            }
            at = end;
            step = step * 3 % 61 + 5;
        }
    });
    response
}

fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

// ------------------------------------------------------------------ Gemini

fn gemini_check(r: &Recorded) -> Result<(), String> {
    if header(r, "x-goog-api-key") != Some("gm-key") || r.headers.contains_key("authorization") {
        return Err(format!("bad auth headers {:?}", r.headers));
    }
    let streamed = r.path() == "/v1beta/models/gemini-test:streamGenerateContent";
    if !streamed && r.path() != "/v1beta/models/gemini-test:generateContent" {
        return Err(format!("bad path {}", r.path()));
    }
    if streamed && !r.uri.ends_with("?alt=sse") {
        return Err(format!("stream without alt=sse: {}", r.uri));
    }
    let body = r.json();
    let ok = body["contents"][0]["role"] == "user"
        && body["contents"][0]["parts"][0]["text"] == "Capital of France?"
        && body["system_instruction"]["parts"][0]["text"] == "Answer briefly."
        && body["generationConfig"]["maxOutputTokens"] == 64
        && body.get("model").is_none();
    if !ok {
        return Err(format!("bad body {body}"));
    }
    Ok(())
}

fn gemini_answer(r: &Recorded) -> http::Response<switchboard_core::Body> {
    if r.path().ends_with(":streamGenerateContent") {
        streamed(fixture("gemini/stream.sse"), "text/event-stream")
    } else {
        json_response(StatusCode::OK, &fixture_json("gemini/response.json"))
    }
}

fn gemini_config(mock: &MockUpstream) -> Value {
    json!({
        "version": 3,
        "extra_config": {"ai/providers": {"providers": [
            {"name": "gem", "provider": "gemini", "model": "gemini-test", "credentials": "gm-key",
             "endpoint": format!("{}/v1beta/models/gemini-test:generateContent", mock.url()),
             "format": "openai"}
        ]}},
        "endpoints": [
            {"endpoint": "/gemini/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [mock.url()], "url_pattern": "/unused",
                "extra_config": {"ai/llm": {"provider": "gem"}}}]},
            {"endpoint": "/gemini-inline/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [mock.url()],
                "url_pattern": "/v1beta/models/gemini-test:generateContent",
                "extra_config": {"ai/llm": {"format": "openai",
                    "gemini": {"v1beta": {"credentials": "gm-key"}}}}}]}
        ]
    })
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "gemini-test", "max_tokens": 64, "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "Answer briefly."},
                     {"role": "user", "content": "Capital of France?"}]})
}

#[tokio::test]
async fn gemini_through_the_openai_format() {
    let mock = vendor(gemini_check, gemini_answer).await;
    let gateway = Gateway::start(gemini_config(&mock)).await;
    let mut body = chat_body(false);
    body.as_object_mut().unwrap().remove("stream_options");
    let response = client()
        .post(gateway.url("/gemini/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "The capital of France is **Paris**. It sits on the Seine."
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // Thinking tokens count as output; cached ones are reported.
    assert_eq!(answer["usage"]["prompt_tokens"], 12);
    assert_eq!(answer["usage"]["completion_tokens"], 47);
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn gemini_streams_through_the_openai_format() {
    let mock = vendor(gemini_check, gemini_answer).await;
    let gateway = Gateway::start(gemini_config(&mock)).await;
    for path in [
        "/gemini/v1/chat/completions",
        "/gemini-inline/v1/chat/completions",
    ] {
        let response = client()
            .post(gateway.url(path))
            .json(&chat_body(true))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let chunks = data_lines(&text);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            content,
            "The capital of France is **Paris**. It sits on the Seine."
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["usage"]["total_tokens"], 59, "{text}");
    }
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn gemini_errors_keep_their_meaning() {
    let mock = MockUpstream::start(|_| async {
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &fixture_json("gemini/error_429.json"),
        );
        response
            .headers_mut()
            .insert("retry-after", "17".parse().unwrap());
        response
    })
    .await;
    let gateway = Gateway::start(gemini_config(&mock)).await;
    let response = client()
        .post(gateway.url("/gemini/v1/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "17");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

// ----------------------------------------------------------------- Bedrock

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLETOKEN";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 encoding as SigV4 wants it (unreserved characters kept).
fn uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The SigV4 region Bedrock signs for when the host names none.
fn fallback_region() -> String {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_owned())
}

/// Recomputes the request's Signature Version 4 from what was received.
fn verify_sigv4(r: &Recorded) -> Result<(), String> {
    let auth = header(r, "authorization").ok_or("no authorization")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| format!("not SigV4: {auth}"))?;
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|part| part.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in {auth}"))
    };
    let credential = field("Credential=")?;
    let signed_headers = field("SignedHeaders=")?;
    let signature = field("Signature=")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("bad credential scope {credential}"));
    };
    if *key != ACCESS_KEY || *service != "bedrock" || *region != fallback_region() {
        return Err(format!("bad credential scope {credential}"));
    }
    if header(r, "x-amz-security-token") != Some(SESSION_TOKEN) {
        return Err("no session token".into());
    }
    let amz_date = header(r, "x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("x-amz-date outside the scope".into());
    }
    for required in ["host", "x-amz-date", "x-amz-security-token", "content-type"] {
        if !signed_headers.split(';').any(|h| h == required) {
            return Err(format!("{required} is not signed"));
        }
    }
    // Non-S3 services encode each path segment once more.
    let path: Vec<String> = r.path().split('/').map(uri_encode).collect();
    let mut query: Vec<&str> = r
        .uri
        .split_once('?')
        .map(|(_, q)| q.split('&').collect())
        .unwrap_or_default();
    query.sort_unstable();
    let mut canonical = format!("{}\n{}\n{}\n", r.method, path.join("/"), query.join("&"));
    for name in signed_headers.split(';') {
        let value = header(r, name).ok_or_else(|| format!("signed header {name} missing"))?;
        canonical.push_str(&format!("{name}:{}\n", value.trim()));
    }
    canonical.push_str(&format!(
        "\n{signed_headers}\n{}",
        hex(&Sha256::digest(&r.body))
    ));
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/bedrock/aws4_request\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut signing_key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), date.as_bytes());
    for part in [region.as_bytes(), b"bedrock", b"aws4_request"] {
        signing_key = hmac(&signing_key, part);
    }
    let expected = hex(&hmac(&signing_key, string_to_sign.as_bytes()));
    if expected != signature {
        return Err(format!(
            "signature mismatch: expected {expected}, got {signature}; canonical request:\n{canonical}"
        ));
    }
    Ok(())
}

fn bedrock_body_check(r: &Recorded) -> Result<(), String> {
    let body = r.json();
    let ok = body["messages"][0]["role"] == "user"
        && body["messages"][0]["content"][0]["text"] == "Capital of France?"
        && body["system"][0]["text"] == "Answer briefly."
        && body["inferenceConfig"]["maxTokens"] == 100
        && body.get("model").is_none();
    if ok {
        Ok(())
    } else {
        Err(format!("bad body {body}"))
    }
}

fn bedrock_signed_check(r: &Recorded) -> Result<(), String> {
    let action = r
        .path()
        .strip_prefix("/model/eu.meta.llama3-2-1b-instruct-v1:0/")
        .ok_or_else(|| format!("bad path {}", r.path()))?;
    if action != "converse" && action != "converse-stream" {
        return Err(format!("bad action {action}"));
    }
    verify_sigv4(r)?;
    bedrock_body_check(r)
}

fn bedrock_key_check(r: &Recorded) -> Result<(), String> {
    if header(r, "authorization") != Some("Bearer bedrock-api-key-test") {
        return Err(format!("bad auth {:?}", header(r, "authorization")));
    }
    if r.headers.contains_key("x-amz-date") {
        return Err("an API key request is not signed".into());
    }
    bedrock_body_check(r)
}

fn bedrock_answer(r: &Recorded) -> http::Response<switchboard_core::Body> {
    let tools = r.json()["toolConfig"].is_object();
    match (r.path().ends_with("/converse-stream"), tools) {
        (true, true) => streamed(
            fixture("bedrock/stream_tools.bin"),
            "application/vnd.amazon.eventstream",
        ),
        (true, false) => streamed(
            fixture("bedrock/stream_error.bin"),
            "application/vnd.amazon.eventstream",
        ),
        (false, _) => json_response(StatusCode::OK, &fixture_json("bedrock/response.json")),
    }
}

fn bedrock_config(signed: &MockUpstream, keyed: &MockUpstream) -> Value {
    json!({
        "version": 3,
        "extra_config": {"ai/providers": {"providers": [
            {"name": "nova", "provider": "bedrock", "credentials": "bedrock-api-key-test",
             "endpoint": format!("{}/model/eu.amazon.nova-lite-v1:0/converse", keyed.url()),
             "format": "openai", "variables": {"max_tokens": 100}}
        ]}},
        "endpoints": [
            {"endpoint": "/bedrock/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [signed.url()],
                "url_pattern": "/model/eu.meta.llama3-2-1b-instruct-v1:0/converse",
                "extra_config": {"ai/llm": {"format": "openai", "bedrock": {"v1": {
                    "credentials": format!("{ACCESS_KEY}:{SECRET_KEY}:{SESSION_TOKEN}"),
                    "variables": {"max_tokens": 100}}}}}}]},
            {"endpoint": "/bedrock-key/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [keyed.url()], "url_pattern": "/unused",
                "extra_config": {"ai/llm": {"provider": "nova"}}}]}
        ]
    })
}

fn bedrock_chat(stream: bool) -> Value {
    let mut body = chat_body(stream);
    body.as_object_mut().unwrap().remove("max_tokens");
    body
}

#[tokio::test]
async fn bedrock_signed_and_keyed_through_the_openai_format() {
    let signed = vendor(bedrock_signed_check, bedrock_answer).await;
    let keyed = vendor(bedrock_key_check, bedrock_answer).await;
    let gateway = Gateway::start(bedrock_config(&signed, &keyed)).await;
    for (path, mock, model) in [
        (
            "/bedrock/v1/chat/completions",
            &signed,
            "eu.meta.llama3-2-1b-instruct-v1:0",
        ),
        (
            "/bedrock-key/v1/chat/completions",
            &keyed,
            "eu.amazon.nova-lite-v1:0",
        ),
    ] {
        let mut body = bedrock_chat(false);
        body.as_object_mut().unwrap().remove("stream_options");
        let response = client()
            .post(gateway.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "The capital of France is Paris."
        );
        // The model in the URL answers, whatever the client named.
        assert_eq!(answer["model"], model, "{path}");
        assert_eq!(answer["usage"]["prompt_tokens"], 15);
        assert_eq!(answer["usage"]["completion_tokens"], 9);
        assert_eq!(mock.count(), 1, "{path}");
    }
    // The client's own key never reaches the vendor.
    let response = client()
        .post(gateway.url("/bedrock/v1/chat/completions"))
        .bearer_auth("client-secret")
        .json(
            &json!({"messages": [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of France?"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let last = signed.requests().pop().unwrap();
    assert!(
        header(&last, "authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 ")
    );
}

#[tokio::test]
async fn bedrock_streams_tool_calls_and_mid_stream_errors() {
    let signed = vendor(bedrock_signed_check, bedrock_answer).await;
    let keyed = vendor(bedrock_key_check, bedrock_answer).await;
    let gateway = Gateway::start(bedrock_config(&signed, &keyed)).await;
    let mut body = bedrock_chat(true);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let response = client()
        .post(gateway.url("/bedrock/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = data_lines(&text);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .map(|_| c)
        })
        .collect();
    assert_eq!(
        calls[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris", "unit": "celsius"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 470);
    let sent = signed.requests().pop().unwrap();
    assert_eq!(
        sent.path(),
        "/model/eu.meta.llama3-2-1b-instruct-v1:0/converse-stream"
    );

    // A throttling exception mid-stream ends the stream as an error.
    let response = client()
        .post(gateway.url("/bedrock/v1/chat/completions"))
        .json(&bedrock_chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = data_lines(&text).pop().unwrap();
    assert_eq!(last["error"]["type"], "rate_limit_error", "{text}");
}

#[tokio::test]
async fn bedrock_refuses_what_converse_cannot_express() {
    let signed = vendor(bedrock_signed_check, bedrock_answer).await;
    let keyed = vendor(bedrock_key_check, bedrock_answer).await;
    let gateway = Gateway::start(bedrock_config(&signed, &keyed)).await;
    let mut body = bedrock_chat(false);
    body["seed"] = json!(7);
    let response = client()
        .post(gateway.url("/bedrock/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "seed", "{error}");
    assert_eq!(signed.count(), 0);
}

#[tokio::test]
async fn bedrock_config_refuses_unknown_variables() {
    let mock = MockUpstream::json(json!({})).await;
    let mut config = bedrock_config(&mock, &mock);
    config["extra_config"]["ai/providers"]["providers"][0]["variables"] =
        json!({"max_tokens": 100, "presence_penalty": 1});
    let errors = match Gateway::try_start_in(config, Path::new(".")).await {
        Ok(_) => panic!("an unknown bedrock variable was accepted"),
        Err(errors) => errors.join("\n"),
    };
    assert!(errors.contains("presence_penalty"), "{errors}");
}
