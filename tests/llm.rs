//! End-to-end tests of the unified LLM endpoints: the gateway over loopback
//! in front of mock vendors that check the auth header, the body shape and
//! the model they receive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, Recorded, client, json_response, sse_response};

/// A mock vendor that refuses requests without the expected key, then
/// answers with `answer`.
async fn vendor<F, Fut>(check: fn(&Recorded) -> Result<(), String>, answer: F) -> MockUpstream
where
    F: Fn(Recorded) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = http::Response<switchboard_core::Body>> + Send + 'static,
{
    MockUpstream::start(move |recorded: Recorded| {
        let answer = answer.clone();
        async move {
            match check(&recorded) {
                Ok(()) => answer(recorded).await,
                Err(problem) => json_response(
                    StatusCode::IM_A_TEAPOT,
                    &json!({"error": {"message": problem}}),
                ),
            }
        }
    })
    .await
}

fn openai_check(r: &Recorded) -> Result<(), String> {
    if r.headers.get("authorization").map(|v| v.as_bytes()) != Some(b"Bearer sk-openai") {
        return Err(format!("bad auth {:?}", r.headers.get("authorization")));
    }
    if r.path() != "/v1/chat/completions" {
        return Err(format!("bad path {}", r.path()));
    }
    let body = r.json();
    if body["model"] != "gpt-test" || !body["messages"].is_array() {
        return Err(format!("bad body {body}"));
    }
    if body["stream"] == true && body["stream_options"]["include_usage"] != true {
        return Err("stream without include_usage".into());
    }
    Ok(())
}

fn anthropic_check(r: &Recorded) -> Result<(), String> {
    if r.headers.get("x-api-key").map(|v| v.as_bytes()) != Some(b"sk-ant")
        || r.headers.get("anthropic-version").is_none()
        || r.headers.get("authorization").is_some()
    {
        return Err("bad auth headers".into());
    }
    if r.path() != "/v1/messages" {
        return Err(format!("bad path {}", r.path()));
    }
    let body = r.json();
    if body["model"] != "claude-test" || !body["max_tokens"].is_u64() {
        return Err(format!("bad body {body}"));
    }
    if body["messages"]
        .as_array()
        .is_none_or(|m| m.iter().any(|m| m["role"] == "system"))
    {
        return Err(format!("system in messages {body}"));
    }
    Ok(())
}

fn openai_answer() -> Value {
    json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
}

fn anthropic_answer() -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "output_tokens": 9}})
}

/// Two unified endpoints per vendor mock: OpenAI and Anthropic clients.
fn config(openai: &MockUpstream, anthropic: &MockUpstream) -> Value {
    json!({
        "version": 3,
        "extra_config": {"ai/providers": {"providers": [
            {"name": "gpt", "provider": "openai-compatible", "model": "gpt-test",
             "endpoint": format!("{}/v1/chat/completions", openai.url()), "credentials": "sk-openai",
             "format": "openai"},
            {"name": "claude", "provider": "anthropic", "model": "claude-test",
             "endpoint": format!("{}/v1/messages", anthropic.url()), "credentials": "sk-ant",
             "variables": {"max_tokens": 256}}
        ]}},
        "endpoints": [
            {"endpoint": "/openai/gpt/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [openai.url()], "url_pattern": "/unused",
                "extra_config": {"ai/llm": {"provider": "gpt"}}}]},
            {"endpoint": "/openai/claude/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [anthropic.url()], "url_pattern": "/v1/messages",
                "extra_config": {"ai/llm": {"format": "openai", "anthropic": {"v1": {
                    "credentials": "sk-ant", "variables": {"model": "claude-test"}}}}}}]},
            {"endpoint": "/anthropic/gpt/v1/messages", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [openai.url()], "url_pattern": "/v1/chat/completions",
                "extra_config": {"ai/llm": {"format": "anthropic", "openai-compatible": {"v1": {
                    "credentials": "sk-openai", "variables": {"model": "gpt-test"}}}}}}]},
            {"endpoint": "/anthropic/claude/v1/messages", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [anthropic.url()], "url_pattern": "/v1/messages",
                "extra_config": {"ai/llm": {"format": "anthropic", "anthropic": {"v1": {
                    "credentials": "sk-ant", "variables": {"model": "claude-test"}}}}}}]},
            {"endpoint": "/unified/claude", "method": "POST",
             "backend": [{"host": [anthropic.url()], "url_pattern": "/unused",
                "extra_config": {"ai/llm": {"provider": "claude"}}}]},
            {"endpoint": "/openai/gpt/v1/models", "method": "GET", "output_encoding": "no-op",
             "backend": [{"host": [openai.url()], "url_pattern": "/unused",
                "extra_config": {"ai/llm": {"provider": "gpt"}}}]}
        ]
    })
}

async fn sse_text(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    response.text().await.unwrap()
}

fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn event_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

#[tokio::test]
async fn openai_client_to_both_vendor_dialects() {
    let openai = vendor(openai_check, |_| async {
        json_response(StatusCode::OK, &openai_answer())
    })
    .await;
    let anthropic = vendor(anthropic_check, |_| async {
        json_response(StatusCode::OK, &anthropic_answer())
    })
    .await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let http = client();

    let body = json!({"model": "whatever", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    let response = http
        .post(gateway.url("/openai/gpt/v1/chat/completions"))
        .header("authorization", "Bearer client-key-never-forwarded")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(value["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(value["usage"]["total_tokens"], 15);
    let sent = openai.requests()[0].json();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );

    let tools = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let response = http
        .post(gateway.url("/openai/claude/v1/chat/completions"))
        .json(&json!({"model": "x", "tools": tools, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    let choice = &value["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(value["usage"]["prompt_tokens"], 20);
    let sent = anthropic.requests()[0].json();
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");
}

#[tokio::test]
async fn anthropic_client_and_unified_body() {
    let openai = vendor(openai_check, |_| async {
        json_response(StatusCode::OK, &openai_answer())
    })
    .await;
    let anthropic = vendor(anthropic_check, |_| async {
        json_response(StatusCode::OK, &anthropic_answer())
    })
    .await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let http = client();

    let response = http
        .post(gateway.url("/anthropic/gpt/v1/messages"))
        .json(
            &json!({"model": "m", "max_tokens": 50, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["type"], "message");
    assert_eq!(
        value["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(value["stop_reason"], "end_turn");
    assert_eq!(value["usage"]["input_tokens"], 12);
    assert!(value["id"].as_str().unwrap().starts_with("msg_"));
    let sent = openai.requests()[0].json();
    assert_eq!(sent["max_tokens"], 50);

    let response = http
        .post(gateway.url("/unified/claude"))
        .json(&json!({"instructions": "Be brief.", "contents": "Weather?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(
        value,
        json!({"ai_gateway_response": [{"contents": ["Let me check."]}], "usage": 29})
    );
    // The provider's variables fill what the client left out.
    assert_eq!(anthropic.requests()[0].json()["max_tokens"], 256);

    let models: Value = http
        .get(gateway.url("/openai/gpt/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt", "claude"]);
}

const OPENAI_TOOL_STREAM: &[&str] = &[
    "data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-s\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-s\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-s\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-s\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-s\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":7,\"total_tokens\":37}}\n\n",
    "data: [DONE]\n\n",
];

/// A mock that streams `chunks`, each split in two to test reassembly.
async fn streaming_vendor(
    check: fn(&Recorded) -> Result<(), String>,
    chunks: &'static [&'static str],
) -> MockUpstream {
    vendor(check, move |_| async move {
        let (tx, response) = sse_response();
        tokio::spawn(async move {
            for chunk in chunks {
                let (a, b) = chunk.split_at(chunk.len() / 2);
                for piece in [a, b] {
                    if tx.send(Bytes::from_static(piece.as_bytes())).await.is_err() {
                        return;
                    }
                }
            }
        });
        response
    })
    .await
}

#[tokio::test]
async fn openai_vendor_stream_to_anthropic_and_openai_clients() {
    let openai = streaming_vendor(openai_check, OPENAI_TOOL_STREAM).await;
    let anthropic = MockUpstream::json(json!({})).await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let http = client();

    let text = sse_text(
        http.post(gateway.url("/anthropic/gpt/v1/messages"))
            .json(&json!({"model": "m", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "Weather?"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        event_names(&text),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{text}"
    );
    let events = data_lines(&text);
    assert_eq!(events[4]["content_block"]["name"], "weather");
    let json: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(events[8]["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[8]["usage"]["output_tokens"], 7);

    // The OpenAI client that did not ask for usage does not get it.
    let text = sse_text(
        http.post(gateway.url("/openai/gpt/v1/chat/completions"))
            .json(&json!({"model": "m", "stream": true,
                "messages": [{"role": "user", "content": "Weather?"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = data_lines(&text);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{text}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    // With include_usage, the last chunk before [DONE] carries it.
    let text = sse_text(
        http.post(gateway.url("/openai/gpt/v1/chat/completions"))
            .json(
                &json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Weather?"}]}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let chunks = data_lines(&text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 37);
}

const ANTHROPIC_STREAM: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" le monde\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

#[tokio::test]
async fn anthropic_vendor_stream_to_openai_client() {
    let openai = MockUpstream::json(json!({})).await;
    let anthropic = streaming_vendor(anthropic_check, ANTHROPIC_STREAM).await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let text = sse_text(
        client()
            .post(gateway.url("/openai/claude/v1/chat/completions"))
            .json(
                &json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Salut"}]}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let chunks = data_lines(&text);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Bonjour le monde");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 25);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(anthropic.requests()[0].json()["stream"], true);
}

#[tokio::test]
async fn vendor_errors_keep_status_and_retry_after() {
    let failing = |r: &Recorded| -> Result<(), String> {
        let _ = r;
        Ok(())
    };
    let openai = vendor(failing, |r: Recorded| async move {
        let status = match r.json()["messages"][0]["content"].as_str() {
            Some("400") => StatusCode::BAD_REQUEST,
            Some("401") => StatusCode::UNAUTHORIZED,
            Some("429") => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = json_response(
            status,
            &json!({"error": {"message": format!("vendor says {}", status.as_u16()),
                "type": "x", "code": "vendor_code"}}),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", "17".parse().unwrap());
        }
        response
    })
    .await;
    let anthropic = MockUpstream::json(json!({})).await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let http = client();
    for (code, anthropic_type) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
    ] {
        let response = http
            .post(gateway.url("/anthropic/gpt/v1/messages"))
            .json(&json!({"model": "m", "max_tokens": 5,
                "messages": [{"role": "user", "content": code.to_string()}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        if code == 429 {
            assert_eq!(response.headers()["retry-after"], "17");
        }
        let value: Value = response.json().await.unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["error"]["type"], anthropic_type);
        assert_eq!(value["error"]["message"], format!("vendor says {code}"));

        let response = http
            .post(gateway.url("/openai/gpt/v1/chat/completions"))
            .json(
                &json!({"model": "m", "messages": [{"role": "user", "content": code.to_string()}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        let value: Value = response.json().await.unwrap();
        assert_eq!(value["error"]["message"], format!("vendor says {code}"));
        assert_eq!(value["error"]["code"], "vendor_code");
    }
}

#[tokio::test]
async fn unsupported_fields_are_refused_before_the_vendor() {
    let openai = MockUpstream::json(json!({})).await;
    let anthropic = MockUpstream::json(json!({})).await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let response = client()
        .post(gateway.url("/openai/claude/v1/chat/completions"))
        .json(&json!({"model": "m", "seed": 3, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["error"]["param"], "seed");
    assert!(value["error"]["message"].as_str().unwrap().contains("seed"));
    let response = client()
        .post(gateway.url("/anthropic/claude/v1/messages"))
        .json(
            &json!({"model": "m", "max_tokens": 5, "thinking": {"type": "enabled"},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["type"], "error");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thinking")
    );
    assert_eq!(anthropic.count(), 0);
}

const OPENAI_FAILING_STREAM: &[&str] = &[
    "data: {\"id\":\"c\",\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hal\"}}]}\n\n",
    "data: {\"error\":{\"message\":\"upstream overloaded\",\"type\":\"server_error\"}}\n\n",
];

const ANTHROPIC_FAILING_STREAM: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_f\",\"model\":\"claude-test\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hal\"}}\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
];

#[tokio::test]
async fn mid_stream_errors_end_the_stream_as_errors() {
    let openai = streaming_vendor(openai_check, OPENAI_FAILING_STREAM).await;
    let anthropic = streaming_vendor(anthropic_check, ANTHROPIC_FAILING_STREAM).await;
    let gateway = Gateway::start(config(&openai, &anthropic)).await;
    let http = client();

    // OpenAI vendor error → Anthropic client: an `error` event, no stop.
    let text = sse_text(
        http.post(gateway.url("/anthropic/gpt/v1/messages"))
            .json(&json!({"model": "m", "max_tokens": 5, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names = event_names(&text);
    assert_eq!(names.last(), Some(&"error"), "{text}");
    assert!(!names.contains(&"message_stop"));
    let last = data_lines(&text).pop().unwrap();
    assert_eq!(last["error"]["message"], "upstream overloaded");

    // Anthropic vendor error → OpenAI client: an error chunk, no [DONE].
    let text = sse_text(
        http.post(gateway.url("/openai/claude/v1/chat/completions"))
            .json(&json!({"model": "m", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!text.contains("[DONE]"), "{text}");
    let last = data_lines(&text).pop().unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["message"], "Overloaded");
    assert!(
        data_lines(&text)
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
}

#[tokio::test]
async fn config_mistakes_name_their_path() {
    let bad = json!({"version": 3,
        "extra_config": {"ai/providers": {"providers": [{"name": "x", "provider": "skynet"}]}},
        "endpoints": []});
    let errors = Gateway::try_start_in(bad, std::path::Path::new("."))
        .await
        .err()
        .unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("$.extra_config[\"ai/providers\"].providers[0].provider")),
        "{errors:?}"
    );
    let bad = json!({"version": 3, "endpoints": [{"endpoint": "/x", "method": "POST",
        "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/v1/messages",
            "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "k",
                "variables": {"model": "m", "temperature": "hot"}}}}}}]}]});
    let errors = Gateway::try_start_in(bad, std::path::Path::new("."))
        .await
        .err()
        .unwrap();
    assert!(
        errors.iter().any(|e| e.contains(
            "$.endpoints[0].backend[0].extra_config[\"ai/llm\"].anthropic.v1.variables.temperature"
        )),
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| !e.contains("\"k\"")));
}
