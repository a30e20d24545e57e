//! The gateway's parts working together, end to end over loopback:
//! refusals counted on `/metrics`, quota counters, rate-limit buckets and
//! circuit breakers surviving a config reload, the breaker gauge, a span
//! per attempt with GenAI attributes at an in-process OTLP collector, and
//! the usage of the provider that answered after a failover reaching the
//! quota and the token counters.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard::config::load_file;
use switchboard::{
    Live, Reloader, SharedState, TelemetryListeners, build_app_with, serve_live,
    start_telemetry_listeners,
};
use switchboard_e2e::{MockUpstream, client, json_response, sse_response};
use switchboard_telemetry::testing::{
    AttributeValue, OtlpCollector, Span, assert_promtool_accepts, attribute,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A gateway served from a config file, reloadable as SIGHUP and `--watch`
/// reload it.
struct Served {
    addr: SocketAddr,
    live: Live,
    reloader: Reloader,
    listeners: TelemetryListeners,
    file: PathBuf,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Served {
    async fn start(config: &Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchboard.json");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = config.clone();
        config["port"] = Value::from(addr.port());
        std::fs::write(&file, config.to_string()).unwrap();
        let state = SharedState::new();
        let app = build_app_with(&load_file(&file).unwrap(), &state).unwrap();
        let listeners = start_telemetry_listeners(&app).await.unwrap();
        let live = Live::new(app);
        let reloader = Reloader::new(&file, None, state, live.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = live.clone();
        tokio::spawn(async move {
            serve_live(listener, serving, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            live,
            reloader,
            listeners,
            file,
            _dir: dir,
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Rewrites the config file with `config` and reloads it.
    async fn reload(&self, config: &Value) -> u64 {
        let mut config = config.clone();
        config["port"] = Value::from(self.addr.port());
        std::fs::write(&self.file, config.to_string()).unwrap();
        self.reloader.reload().await.expect("the config reloads")
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.listeners.metrics[0]);
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }
}

/// The value of one series; panics when it is absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// What a scripted vendor does with one request.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// A chat completion with `prompt_tokens` and `completion_tokens`.
    Answer(&'static str, u64, u64),
    /// A 500 with an OpenAI error body.
    Fail,
    /// A streamed answer saying `text`, its last chunk the usage.
    Stream(&'static str, u64, u64),
}

/// A vendor that acts from its script in order, then `then` forever.
async fn vendor(script: Vec<Act>, then: Act) -> MockUpstream {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    MockUpstream::start(move |_| {
        let act = script.lock().unwrap().pop_front().unwrap_or(then);
        async move {
            match act {
                Act::Answer(text, input, output) => json_response(
                    StatusCode::OK,
                    &json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                        "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": input, "completion_tokens": output,
                            "total_tokens": input + output}}),
                ),
                Act::Stream(text, input, output) => {
                    let (tx, response) = sse_response();
                    tokio::spawn(async move {
                        let chunks = [
                            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
                            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                                "choices": [{"index": 0, "delta": {"content": text}}]}),
                            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                                "choices": [], "usage": {"prompt_tokens": input,
                                    "completion_tokens": output, "total_tokens": input + output}}),
                        ];
                        for chunk in chunks {
                            let _ = tx.send(Bytes::from(format!("data: {chunk}\n\n"))).await;
                        }
                        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                    });
                    response
                }
                Act::Fail => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": {"message": "vendor says 500", "type": "server_error"}}),
                ),
            }
        }
    })
    .await
}

fn provider(name: &str, vendor: &MockUpstream) -> Value {
    json!({"name": name, "provider": "openai-compatible", "model": format!("model-{name}"),
        "endpoint": format!("{}/v1/chat/completions", vendor.url()),
        "credentials": format!("sk-{name}"), "format": "openai"})
}

/// An `ai/router` endpoint over providers `a` and `b`, with a token quota
/// of `budget` per day (header `X-Team`), a Prometheus listener, and an
/// extra endpoint limited to one request per hour per client.
fn routed_config(
    a: &MockUpstream,
    b: &MockUpstream,
    plain: &MockUpstream,
    router: Value,
    budget: u64,
) -> Value {
    let upstream = plain.url();
    json!({
        "version": 3,
        "extra_config": {
            "telemetry/opentelemetry": {"exporters": {
                "prometheus": [{"name": "local", "port": 0, "listen_ip": "127.0.0.1"}]}},
            "governance/processors": {"quotas": [{"name": "tokens",
                "rules": [{"name": "team", "limits": [{"amount": budget, "unit": "day"}]}]}]},
            "ai/providers": {"providers": [provider("a", a), provider("b", b)]}
        },
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "timeout": "20s",
             "extra_config": {"governance/quota": {"quota_name": "tokens", "tier_key": "X-Team",
                "weight_strategy": "usage",
                "tiers": [{"rule_name": "team", "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]}},
             "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/unused",
                "extra_config": {"ai/router": router}}]},
            {"endpoint": "/limited", "method": "GET",
             "extra_config": {"qos/ratelimit/router": {"client_max_rate": 1, "client_capacity": 1,
                "every": "1h", "strategy": "ip"}},
             "backend": [{"host": [upstream], "url_pattern": "/plain"}]}
        ]
    })
}

async fn chat(served: &Served, max_tokens: u64) -> reqwest::Response {
    client()
        .post(served.url("/v1/chat/completions"))
        .header("x-team", "red")
        .json(&json!({"model": "x", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn answer_text(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What the quota has left for the team, read through a call too big to
/// fit (a refusal shows what remains, with no reservation in it).
async fn quota_remaining(served: &Served) -> u64 {
    let response = chat(served, 1_000_000).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    response.headers()["x-quota-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A failover whose secondary reports known usage: the quota is charged
/// that usage and the token counters name the secondary; then a reload
/// keeps the quota's counter, the rate-limit bucket and the open breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_rate_limit_and_breaker_state_survive_a_reload() {
    let a = vendor(vec![], Act::Fail).await;
    let b = vendor(vec![], Act::Answer("from b", 3, 2)).await;
    let router = json!({"failover": "b", "routes": [{"provider": "a"}],
        "circuit_breaker": {"interval": 60, "timeout": 3600, "max_errors": 1}});
    let plain = MockUpstream::json(json!({"ok": true})).await;
    let config = routed_config(&a, &b, &plain, router, 100);
    let served = Served::start(&config).await;

    let text = served.metrics().await;
    assert_eq!(sample(&text, r#"switchboard_breaker_state{name="a"}"#), 0.0);
    assert_eq!(sample(&text, r#"switchboard_breaker_state{name="b"}"#), 0.0);

    // a fails once: its breaker opens; b answers 3 + 2 tokens.
    assert_eq!(answer_text(chat(&served, 20).await).await, "from b");
    assert_eq!((a.count(), b.count()), (1, 1));
    assert_eq!(quota_remaining(&served).await, 95);
    let limited = client().get(served.url("/limited")).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::OK);
    let text = served.metrics().await;
    assert_eq!(sample(&text, r#"switchboard_breaker_state{name="a"}"#), 2.0);
    assert_eq!(sample(&text, r#"switchboard_breaker_state{name="b"}"#), 0.0);

    // A reload with a changed config (another endpoint) builds everything anew.
    let mut changed = config.clone();
    changed["endpoints"].as_array_mut().unwrap().push(
        json!({"endpoint": "/new", "backend": [{"host": [plain.url()], "url_pattern": "/x"}]}),
    );
    assert_eq!(served.reload(&changed).await, 2);
    assert_eq!(served.live.current().generation(), 2);

    // The breaker is still open: a is not called.
    assert_eq!(answer_text(chat(&served, 20).await).await, "from b");
    assert_eq!((a.count(), b.count()), (1, 2));
    // The quota kept what was spent before the reload.
    assert_eq!(quota_remaining(&served).await, 90);
    // The client's one request this hour was spent before the reload.
    let limited = client().get(served.url("/limited")).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let text = served.metrics().await;
    assert_eq!(sample(&text, r#"switchboard_breaker_state{name="a"}"#), 2.0);
    assert_eq!(sample(&text, "switchboard_config_generation"), 2.0);
    // The usage of the provider that answered, never of the one that failed.
    let b_labels = r#"provider="b",model="m",tier="default""#;
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_in_total{{{b_labels}}}")),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("krakend_llm_tokens_out_total{{{b_labels}}}")
        ),
        4.0
    );
    assert!(!text.contains(r#"krakend_llm_tokens_in_total{provider="a""#));
    assert_eq!(
        sample(
            &text,
            r#"switchboard_upstream_errors_total{provider="a",kind="status_5xx"}"#
        ),
        1.0
    );
    // Two quota refusals (the reads of what remains), one rate-limit one.
    let rejections = |endpoint: &str, kind: &str| {
        sample(
            &text,
            &format!(r#"switchboard_rejections_total{{endpoint="{endpoint}",kind="{kind}"}}"#),
        )
    };
    assert_eq!(rejections("/v1/chat/completions", "quota"), 2.0);
    assert_eq!(rejections("/limited", "rate_limit"), 1.0);
    assert_promtool_accepts(&text);
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key) {
        Some(AttributeValue::IntValue(value)) => Some(*value),
        _ => None,
    }
}

fn string<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key) {
        Some(AttributeValue::StringValue(value)) => Some(value),
        _ => None,
    }
}

/// A request whose first attempt gets a 500 and is retried: the request
/// span, its backend span, two attempt spans under it with the GenAI
/// attributes, the usage on the successful one; the failure counted for
/// the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_exports_a_span_per_attempt() {
    let mut collector = OtlpCollector::start().await.unwrap();
    let a = vendor(vec![Act::Fail], Act::Answer("from a", 11, 4)).await;
    let b = vendor(vec![], Act::Answer("from b", 1, 1)).await;
    let router = json!({"failover": "b", "routes": [{"provider": "a"}],
        "retry": {"attempts": 2, "backoff": "1ms"}});
    let plain = MockUpstream::json(json!({"ok": true})).await;
    let mut config = routed_config(&a, &b, &plain, router, 1000);
    config["extra_config"]["telemetry/opentelemetry"]["exporters"]["otlp"] = json!([
        {"name": "local", "host": "127.0.0.1", "port": collector.port, "use_http": true}
    ]);
    let served = Served::start(&config).await;
    assert_eq!(answer_text(chat(&served, 20).await).await, "from a");
    assert_eq!((a.count(), b.count()), (2, 0));
    let tracing = served.live.current().telemetry().tracing().clone();
    tokio::task::spawn_blocking(move || tracing.flush())
        .await
        .unwrap();

    // The request, its backend call, two attempts.
    let spans = collector.spans(4).await.unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 4, "{names:?}");
    let root = spans
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert!(root.parent_span_id.is_empty());
    let backend = spans
        .iter()
        .find(|s| s.name.starts_with("backend "))
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(backend.parent_span_id, root.span_id);
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "chat model-a").collect();
    assert_eq!(attempts.len(), 2, "{names:?}");
    attempts.sort_by_key(|s| int(s, "switchboard.attempt"));
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id, backend.span_id);
        assert_eq!(string(attempt, "gen_ai.provider.name"), Some("a"));
        assert_eq!(string(attempt, "gen_ai.request.model"), Some("model-a"));
        assert_eq!(string(attempt, "gen_ai.operation.name"), Some("chat"));
    }
    let (first, retry) = (attempts[0], attempts[1]);
    assert_eq!(int(first, "switchboard.attempt"), Some(1));
    assert_eq!(string(first, "switchboard.attempt.reason"), Some("first"));
    assert_eq!(int(first, "http.response.status_code"), Some(500));
    assert_eq!(first.status.as_ref().map(|s| s.code), Some(2), "an error");
    assert_eq!(int(first, "gen_ai.usage.input_tokens"), None);
    assert_eq!(int(retry, "switchboard.attempt"), Some(2));
    assert_eq!(string(retry, "switchboard.attempt.reason"), Some("retry"));
    assert_eq!(int(retry, "http.response.status_code"), Some(200));
    assert_eq!(int(retry, "gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(int(retry, "gen_ai.usage.output_tokens"), Some(4));
    assert_ne!(retry.status.as_ref().map(|s| s.code), Some(2));
    // Each vendor request carried its own attempt's traceparent.
    let sent: Vec<String> = a
        .requests()
        .iter()
        .map(|r| r.headers["traceparent"].to_str().unwrap().to_owned())
        .collect();
    for (request, attempt) in sent.iter().zip([first, retry]) {
        let span_id = request.split('-').nth(2).unwrap();
        assert_eq!(
            span_id,
            switchboard_telemetry::testing::hex(&attempt.span_id)
        );
    }
    // The request span has the answer's usage too.
    assert_eq!(int(root, "gen_ai.usage.input_tokens"), Some(11));

    let text = served.metrics().await;
    assert_eq!(
        sample(
            &text,
            r#"switchboard_upstream_errors_total{provider="a",kind="status_5xx"}"#
        ),
        1.0
    );
    assert!(!text.contains(r#"switchboard_upstream_errors_total{provider="127.0.0.1""#));
}

/// A streamed request fails over to `b`: b's attempt span is marked as a
/// failover and carries the usage b streamed, which is also what the quota
/// is charged and the token counters count, for b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_failover_charges_and_reports_the_secondary_usage() {
    let mut collector = OtlpCollector::start().await.unwrap();
    let a = vendor(vec![], Act::Fail).await;
    let b = vendor(vec![], Act::Stream("from b", 7, 5)).await;
    let router = json!({"failover": "b", "routes": [{"provider": "a"}]});
    let plain = MockUpstream::json(json!({"ok": true})).await;
    let mut config = routed_config(&a, &b, &plain, router, 1000);
    config["extra_config"]["telemetry/opentelemetry"]["exporters"]["otlp"] = json!([
        {"name": "local", "host": "127.0.0.1", "port": collector.port, "use_http": true}
    ]);
    let served = Served::start(&config).await;
    let response = client()
        .post(served.url("/v1/chat/completions"))
        .header("x-team", "red")
        .json(&json!({"model": "x", "max_tokens": 20, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let streamed = response.text().await.unwrap();
    assert!(streamed.contains("from b"), "{streamed}");
    assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");
    assert_eq!(quota_remaining(&served).await, 1000 - 12);
    let text = served.metrics().await;
    let b_labels = r#"provider="b",model="m",tier="default""#;
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_in_total{{{b_labels}}}")),
        7.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("krakend_llm_tokens_out_total{{{b_labels}}}")
        ),
        5.0
    );
    let tracing = served.live.current().telemetry().tracing().clone();
    tokio::task::spawn_blocking(move || tracing.flush())
        .await
        .unwrap();
    // Two requests: the answered one (request, backend, two attempts) and
    // the refused one (its request span only).
    let spans = collector.spans(5).await.unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 5, "{names:?}");
    let on_b = spans
        .iter()
        .find(|s| s.name == "chat model-b")
        .unwrap_or_else(|| panic!("{names:?}"));
    let on_a = spans
        .iter()
        .find(|s| s.name == "chat model-a")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(on_a.parent_span_id, on_b.parent_span_id);
    assert_eq!(string(on_b, "switchboard.attempt.reason"), Some("failover"));
    assert_eq!(int(on_b, "switchboard.attempt"), Some(2));
    assert_eq!(string(on_b, "gen_ai.provider.name"), Some("b"));
    assert_eq!(int(on_b, "gen_ai.usage.input_tokens"), Some(7));
    assert_eq!(int(on_b, "gen_ai.usage.output_tokens"), Some(5));
    assert_eq!(int(on_a, "gen_ai.usage.input_tokens"), None);
    let refused = spans
        .iter()
        .filter(|s| s.name == "POST /v1/chat/completions")
        .find(|s| string(s, "switchboard.rejection") == Some("quota"));
    assert!(refused.is_some(), "{names:?}");
}

/// Refusals of every kind and level reach `switchboard_rejections_total`:
/// a backend-level quota (its refusal passes through the endpoint's JSON
/// handling) and a JSON-schema guard.
#[tokio::test]
async fn backend_quota_and_schema_refusals_are_counted() {
    let plain = MockUpstream::json(json!({"ok": true})).await;
    let config = json!({
        "version": 3,
        "extra_config": {
            "telemetry/opentelemetry": {"exporters": {
                "prometheus": [{"name": "local", "port": 0, "listen_ip": "127.0.0.1"}]}},
            "governance/processors": {"quotas": [{"name": "requests",
                "rules": [{"name": "one", "limits": [{"amount": 1, "unit": "day"}]}]}]}
        },
        "endpoints": [
            {"endpoint": "/backend-quota", "input_headers": ["X-Team"],
             "backend": [{"host": [plain.url()], "url_pattern": "/x",
                "extra_config": {"governance/quota": {"quota_name": "requests", "tier_key": "X-Team",
                    "tiers": [{"rule_name": "one", "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]}}}]},
            {"endpoint": "/schema", "method": "POST",
             "extra_config": {"validation/json-schema": {"type": "object", "required": ["prompt"]}},
             "backend": [{"host": [plain.url()], "url_pattern": "/x"}]}
        ]
    });
    let served = Served::start(&config).await;
    let http = client();
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let response = http
            .get(served.url("/backend-quota"))
            .header("x-team", "red")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }
    for (body, expected) in [
        (json!({"prompt": "hi"}), StatusCode::OK),
        (json!({"other": 1}), StatusCode::BAD_REQUEST),
    ] {
        let response = http
            .post(served.url("/schema"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{text}");
    }
    assert_eq!(plain.count(), 2);
    let text = served.metrics().await;
    let rejections = |endpoint: &str, kind: &str| {
        sample(
            &text,
            &format!(r#"switchboard_rejections_total{{endpoint="{endpoint}",kind="{kind}"}}"#),
        )
    };
    assert_eq!(rejections("/backend-quota", "quota"), 1.0);
    assert_eq!(rejections("/schema", "guard"), 1.0);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("switchboard_rejections_total{"))
            .count(),
        2
    );
}
