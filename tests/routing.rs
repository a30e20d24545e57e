//! End-to-end tests of `ai/router` failure semantics: mock vendors that fail
//! on command (refuse, hang, 429 with Retry-After, 500, 200 with an error
//! body, die after k stream events) behind the gateway over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client, eventually, json_response, sse_response};

/// What a mock vendor does with one request.
#[derive(Clone, Debug)]
enum Act {
    /// A chat completion saying `text`.
    Answer(&'static str),
    /// An error status, with `Retry-After` seconds when set.
    Status(u16, Option<u64>),
    /// 200 with an error body.
    ErrorBody,
    /// Never answers.
    Hang,
    /// A stream saying `text`, complete.
    Stream(&'static str),
    /// A stream that sends `k` text events, then ends without its end marker.
    StreamDies(usize),
    /// A stream whose first event is an error.
    StreamError,
}

/// A scripted vendor: acts from the script in order, then `then` forever.
/// Records when each request came.
struct Vendor {
    mock: MockUpstream,
    script: Arc<Mutex<(VecDeque<Act>, Act)>>,
    times: Arc<Mutex<Vec<Instant>>>,
}

impl Vendor {
    async fn start(script: Vec<Act>, then: Act) -> Self {
        let script = Arc::new(Mutex::new((VecDeque::from(script), then)));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (s, t) = (Arc::clone(&script), Arc::clone(&times));
        let mock = MockUpstream::start(move |_| {
            let act = {
                let mut guard = s.lock().unwrap();
                let (queue, then) = &mut *guard;
                queue.pop_front().unwrap_or_else(|| then.clone())
            };
            t.lock().unwrap().push(Instant::now());
            async move { act_on(act).await }
        })
        .await;
        Self {
            mock,
            script,
            times,
        }
    }

    fn set(&self, then: Act) {
        self.script.lock().unwrap().1 = then;
    }

    fn count(&self) -> usize {
        self.mock.count()
    }

    fn endpoint(&self) -> String {
        format!("{}/v1/chat/completions", self.mock.url())
    }
}

fn completion(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
}

fn chunk(text: &str) -> Bytes {
    let value = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    Bytes::from(format!("data: {value}\n\n"))
}

async fn act_on(act: Act) -> http::Response<switchboard_core::Body> {
    match act {
        Act::Answer(text) => json_response(StatusCode::OK, &completion(text)),
        Act::Status(code, retry_after) => {
            let mut response = json_response(
                StatusCode::from_u16(code).unwrap(),
                &json!({"error": {"message": format!("vendor says {code}"), "type": "server_error"}}),
            );
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
            }
            response
        }
        Act::ErrorBody => json_response(
            StatusCode::OK,
            &json!({"error": {"message": "overloaded", "type": "server_error"}}),
        ),
        Act::Hang => std::future::pending().await,
        Act::Stream(text) => {
            let (tx, response) = sse_response();
            tokio::spawn(async move {
                let role = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]});
                let _ = tx.send(Bytes::from(format!("data: {role}\n\n"))).await;
                for word in text.split_inclusive(' ') {
                    let _ = tx.send(chunk(word)).await;
                }
                let stop = json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                let _ = tx.send(Bytes::from(format!("data: {stop}\n\n"))).await;
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            response
        }
        Act::StreamDies(k) => {
            let (tx, response) = sse_response();
            tokio::spawn(async move {
                for i in 0..k {
                    let _ = tx.send(chunk(&format!("part{i} "))).await;
                }
                // Dropping the sender ends the body without [DONE].
            });
            response
        }
        Act::StreamError => {
            let (tx, response) = sse_response();
            tokio::spawn(async move {
                let role = json!({"id": "c", "model": "m",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]});
                let _ = tx.send(Bytes::from(format!("data: {role}\n\n"))).await;
                let error = json!({"error": {"message": "overloaded", "type": "server_error"}});
                let _ = tx.send(Bytes::from(format!("data: {error}\n\n"))).await;
            });
            response
        }
    }
}

fn provider(name: &str, endpoint: &str) -> Value {
    json!({"name": name, "provider": "openai-compatible", "model": format!("model-{name}"),
        "endpoint": endpoint, "credentials": format!("sk-{name}"), "format": "openai"})
}

fn config(providers: Vec<Value>, router: Value) -> Value {
    json!({
        "version": 3,
        "extra_config": {
            "ai/providers": {"providers": providers},
            "ai/classifiers": {"gates": [
                {"name": "pro", "rule": "header", "header": {"name": "X-Plan", "value": "pro"}},
                {"name": "code", "rule": "policy", "policy": {"value": "getHeader('X-Task') == 'code'"}}
            ]}
        },
        "endpoints": [{
            "endpoint": "/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
            "input_headers": ["X-Plan", "X-Task"], "timeout": "20s",
            "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/unused",
                "extra_config": {"ai/router": router}}]
        }]
    })
}

/// A URL nothing listens on.
async fn refused_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1/chat/completions")
}

async fn ask(gateway: &Gateway, stream: bool) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"model": "x", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn answer_text(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn stream_text(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn failover_router() -> Value {
    json!({"failover": "b", "retry": {"attempt_timeout": "1s"}, "routes": [{"provider": "a"}]})
}

#[tokio::test]
async fn primary_fails_secondary_answers_non_streamed() {
    for (act, a_calls) in [
        (Act::Status(500, None), 1),
        (Act::Status(429, None), 1),
        (Act::Status(503, Some(1)), 1),
        (Act::ErrorBody, 1),
        (Act::Hang, 1),
        (Act::StreamError, 1),
    ] {
        let a = Vendor::start(vec![], act.clone()).await;
        let b = Vendor::start(vec![], Act::Answer("from b")).await;
        let gateway = Gateway::start(config(
            vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
            failover_router(),
        ))
        .await;
        let response = ask(&gateway, false).await;
        assert_eq!(answer_text(response).await, "from b", "{act:?}");
        assert_eq!((a.count(), b.count()), (a_calls, 1), "{act:?}");
    }
    // A refused connection fails over too.
    let b = Vendor::start(vec![], Act::Answer("from b")).await;
    let gateway = Gateway::start(config(
        vec![
            provider("a", &refused_endpoint().await),
            provider("b", &b.endpoint()),
        ],
        failover_router(),
    ))
    .await;
    assert_eq!(answer_text(ask(&gateway, false).await).await, "from b");
}

#[tokio::test]
async fn a_client_error_is_answered_without_failover() {
    let a = Vendor::start(vec![], Act::Status(400, None)).await;
    let b = Vendor::start(vec![], Act::Answer("from b")).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        failover_router(),
    ))
    .await;
    assert_eq!(ask(&gateway, false).await.status(), 400);
    assert_eq!((a.count(), b.count()), (1, 0));
}

#[tokio::test]
async fn when_every_provider_fails_the_client_gets_one_final_error_not_to_retry() {
    let a = Vendor::start(vec![], Act::Status(500, None)).await;
    let b = Vendor::start(vec![], Act::Status(503, None)).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        failover_router(),
    ))
    .await;
    let response = ask(&gateway, false).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("503"),
        "{body}"
    );
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn primary_fails_secondary_answers_streamed_one_clean_answer() {
    for act in [
        Act::Status(500, None),
        Act::StreamError,
        Act::StreamDies(0),
        Act::ErrorBody,
        Act::Hang,
    ] {
        let a = Vendor::start(vec![], act.clone()).await;
        let b = Vendor::start(vec![], Act::Stream("hello from b")).await;
        let gateway = Gateway::start(config(
            vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
            failover_router(),
        ))
        .await;
        let response = ask(&gateway, true).await;
        assert_eq!(response.status(), 200, "{act:?}");
        let text = response.text().await.unwrap();
        assert_eq!(stream_text(&text), "hello from b", "{act:?}: {text}");
        assert!(text.contains("[DONE]"), "{act:?}: {text}");
        assert!(
            !text.contains("overloaded"),
            "{act:?}: nothing of a leaks: {text}"
        );
        assert_eq!((a.count(), b.count()), (1, 1), "{act:?}");
    }
}

#[tokio::test]
async fn a_stream_that_dies_after_its_first_byte_ends_in_an_error_not_a_second_answer() {
    let a = Vendor::start(vec![], Act::StreamDies(2)).await;
    let b = Vendor::start(vec![], Act::Stream("from b")).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        failover_router(),
    ))
    .await;
    let response = ask(&gateway, true).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(stream_text(&text), "part0 part1 ", "{text}");
    assert!(!text.contains("[DONE]"), "not a normal finish: {text}");
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .next_back()
        .unwrap();
    assert!(
        last["error"].is_object(),
        "the stream ends with an error: {text}"
    );
    assert_eq!(b.count(), 0, "nothing is spliced in after the first byte");
}

#[tokio::test]
async fn retries_wait_what_retry_after_says() {
    let a = Vendor::start(vec![Act::Status(429, Some(1))], Act::Answer("from a")).await;
    let b = Vendor::start(vec![], Act::Answer("from b")).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"failover": "b", "retry": {"attempts": 2, "backoff": "10ms"}, "routes": [{"provider": "a"}]}),
    ))
    .await;
    assert_eq!(answer_text(ask(&gateway, false).await).await, "from a");
    assert_eq!((a.count(), b.count()), (2, 0));
    let times = a.times.lock().unwrap().clone();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(900),
        "waited {gap:?}, Retry-After said 1s"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_over_at_once() {
    let a = Vendor::start(vec![], Act::Status(429, Some(120))).await;
    let b = Vendor::start(vec![], Act::Answer("from b")).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"failover": "b", "retry": {"attempts": 3, "max_retry_after": "5s"}, "routes": [{"provider": "a"}]}),
    ))
    .await;
    assert_eq!(answer_text(ask(&gateway, false).await).await, "from b");
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn retries_back_off_on_5xx_within_the_attempt_budget() {
    let a = Vendor::start(vec![], Act::Status(502, None)).await;
    let b = Vendor::start(vec![], Act::Status(502, None)).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"failover": "b", "retry": {"attempts": 3, "max_attempts": 4, "backoff": "5ms"},
               "routes": [{"provider": "a"}]}),
    ))
    .await;
    assert_eq!(ask(&gateway, false).await.status(), 502);
    assert_eq!((a.count(), b.count()), (3, 1), "4 attempts in all");
}

#[tokio::test]
async fn an_open_breaker_stops_calls_and_a_half_open_probe_restores_it() {
    let a = Vendor::start(vec![], Act::Status(500, None)).await;
    let b = Vendor::start(vec![], Act::Answer("from b")).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"failover": "b", "routes": [{"provider": "a"}],
               "circuit_breaker": {"interval": 60, "timeout": 1, "max_errors": 2, "log_status_change": true}}),
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(answer_text(ask(&gateway, false).await).await, "from b");
    }
    assert_eq!(a.count(), 2, "the breaker opened after max_errors failures");
    assert_eq!(b.count(), 5);
    a.set(Act::Answer("from a"));
    // Wait out the breaker's timeout (not a timing assertion).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(answer_text(ask(&gateway, false).await).await, "from a");
    assert_eq!(a.count(), 3, "one probe");
    assert_eq!(answer_text(ask(&gateway, false).await).await, "from a");
    assert_eq!((a.count(), b.count()), (4, 5), "closed again");
}

#[tokio::test]
async fn cancelling_the_client_cancels_every_attempt() {
    let a = Vendor::start(vec![], Act::Hang).await;
    let b = Vendor::start(vec![], Act::Hang).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"failover": "b", "routes": [{"fan_out": {"providers": ["a", "b"], "mode": "first"}}]}),
    ))
    .await;
    let request = client()
        .post(gateway.url("/v1/chat/completions"))
        .timeout(Duration::from_millis(300))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert!(request.is_err(), "the client gave up");
    assert!(
        eventually(Duration::from_secs(5), || a.mock.closed_connections() >= 1
            && b.mock.closed_connections() >= 1)
        .await,
        "both vendors see their connections close"
    );

    // Streamed: the client drops mid-stream, the vendor's connection closes.
    let slow = MockUpstream::start(|_| async {
        let (tx, response) = sse_response();
        tokio::spawn(async move {
            for i in 0.. {
                if tx.send(chunk(&format!("w{i} "))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        response
    })
    .await;
    let endpoint = format!("{}/v1/chat/completions", slow.url());
    let gateway = Gateway::start(config(
        vec![provider("a", &endpoint)],
        json!({"routes": [{"provider": "a"}]}),
    ))
    .await;
    let mut response = ask(&gateway, true).await;
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    assert!(
        eventually(Duration::from_secs(5), || slow.closed_connections() >= 1).await,
        "the vendor stream is closed"
    );
}

#[tokio::test]
async fn hedging_takes_the_first_good_answer_and_cancels_the_rest() {
    let a = Vendor::start(vec![], Act::Hang).await;
    let b = Vendor::start(vec![], Act::Answer("from b")).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"routes": [{"fan_out": {"providers": ["a", "b"], "mode": "first"}}]}),
    ))
    .await;
    assert_eq!(answer_text(ask(&gateway, false).await).await, "from b");
    assert!(
        eventually(Duration::from_secs(5), || a.mock.closed_connections() >= 1).await,
        "the hanging attempt was cancelled"
    );
}

#[tokio::test]
async fn fan_out_groups_answers_per_provider_and_marks_failures() {
    let a = Vendor::start(vec![], Act::Answer("from a")).await;
    let b = Vendor::start(vec![], Act::Status(500, None)).await;
    let gateway = Gateway::start(config(
        vec![provider("a", &a.endpoint()), provider("b", &b.endpoint())],
        json!({"routes": [{"fan_out": {"providers": ["a", "b"]}}]}),
    ))
    .await;
    let response = ask(&gateway, false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["a"]["choices"][0]["message"]["content"], "from a");
    assert_eq!(body["b"]["error"]["status"], 500);
}

#[tokio::test]
async fn router_rules_end_to_end() {
    let fast = Vendor::start(vec![], Act::Answer("fast")).await;
    let smart = Vendor::start(vec![], Act::Answer("smart")).await;
    let backup = Vendor::start(vec![], Act::Answer("backup")).await;
    let gateway = Gateway::start(config(
        vec![
            provider("fast", &fast.endpoint()),
            provider("smart", &smart.endpoint()),
            provider("backup", &backup.endpoint()),
        ],
        json!({"failover": "backup", "routes": [
            {"gates": ["pro"], "routes": [
                {"gates": ["code"], "provider": "smart", "failover": "fast"}]},
            {"models": {"aliases": {"quick": ["fast"]}, "names": true}},
            {"gates": ["code"], "provider": "smart"}
        ]}),
    ))
    .await;
    let http = client();
    let send = |plan: Option<&str>, task: Option<&str>, model: &str| {
        let mut request = http
            .post(gateway.url("/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(plan) = plan {
            request = request.header("X-Plan", plan.to_owned());
        }
        if let Some(task) = task {
            request = request.header("X-Task", task.to_owned());
        }
        request.send()
    };
    // Nested routes inside a matching parent.
    let r = send(Some("pro"), Some("code"), "x").await.unwrap();
    assert_eq!(answer_text(r).await, "smart");
    // The parent matched but none of its nested routes: no match at all,
    // even with a router failover.
    let r = send(Some("pro"), None, "quick").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no ai/router route matched")
    );
    // The model names an alias, and an inventory name; the vendor gets the
    // provider's own model, not the alias.
    let r = send(None, None, "quick").await.unwrap();
    assert_eq!(answer_text(r).await, "fast");
    assert_eq!(fast.mock.requests()[0].json()["model"], "model-fast");
    let r = send(None, None, "backup").await.unwrap();
    assert_eq!(answer_text(r).await, "backup");
    // First match wins: the model route comes before the code gate.
    let r = send(None, Some("code"), "quick").await.unwrap();
    assert_eq!(answer_text(r).await, "fast");
    let r = send(None, Some("code"), "unknown").await.unwrap();
    assert_eq!(answer_text(r).await, "smart");
    // Nothing matches.
    let r = send(None, None, "unknown").await.unwrap();
    assert_eq!(r.status(), 400);

    // Route failover overrides the router's: smart fails → fast, not backup.
    smart.set(Act::Status(500, None));
    let r = send(Some("pro"), Some("code"), "x").await.unwrap();
    assert_eq!(answer_text(r).await, "fast");
    // A route without its own failover takes the router's.
    let r = send(None, Some("code"), "x").await.unwrap();
    assert_eq!(answer_text(r).await, "backup");
}

#[tokio::test]
async fn a_classifier_picks_and_its_silence_fails_over() {
    let fast = Vendor::start(vec![], Act::Answer("fast")).await;
    let smart = Vendor::start(vec![], Act::Answer("smart")).await;
    let picks = MockUpstream::start(|r| async move {
        let body = r.json();
        assert_eq!(r.path(), "/v2/modelRouter/modelSelect");
        assert_eq!(r.headers["authorization"], "Bearer nd-key");
        if body["messages"][0]["content"] == "hard question" {
            json_response(
                StatusCode::OK,
                &json!({"providers": [{"provider": "openai-compatible", "model": "model-smart"}]}),
            )
        } else {
            json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({}))
        }
    })
    .await;
    let mut config = config(
        vec![
            provider("fast", &fast.endpoint()),
            provider("smart", &smart.endpoint()),
        ],
        json!({"routes": [{"classifier": "nd", "providers": ["fast", "smart"], "failover": "fast"}]}),
    );
    config["extra_config"]["ai/classifiers"]["classifiers"] = json!([{"name": "nd", "engine": "notdiamond",
        "notdiamond": {"credentials": "nd-key", "base_url": picks.url(), "req_content": "req_body.messages.0.content"}}]);
    let gateway = Gateway::start(config).await;
    let ask_with = |text: &'static str| {
        client()
            .post(gateway.url("/v1/chat/completions"))
            .json(&json!({"messages": [{"role": "user", "content": text}]}))
            .send()
    };
    assert_eq!(
        answer_text(ask_with("hard question").await.unwrap()).await,
        "smart"
    );
    assert_eq!(answer_text(ask_with("easy").await.unwrap()).await, "fast");
    assert_eq!(picks.count(), 2);
}

#[tokio::test]
async fn the_routing_example_config_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/configs/llm-routing.json")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let gateway = Gateway::try_start_with_env(config, &root.join("examples/configs"), &|_| {
        Some("sk-test".to_owned())
    })
    .await;
    assert!(gateway.is_ok(), "{:?}", gateway.err());
}
