//! Observability and operations end to end: `/metrics` on the exporter's
//! listener after known traffic, spans at an in-process OTLP/HTTP collector,
//! the dashboard in headless Chromium, and config reload under load.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard::config::{LoadedConfig, load_file, parse_str};
use switchboard::{
    Live, Reloader, SharedState, TelemetryListeners, build_app_with, serve_live,
    start_telemetry_listeners,
};
use switchboard_e2e::{MockUpstream, client, json_response, sse_response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Served {
    addr: SocketAddr,
    live: Live,
    listeners: TelemetryListeners,
    _stop: oneshot::Sender<()>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.listeners.metrics[0])
    }
}

async fn serve_config(config: Value) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = config;
    config["port"] = Value::from(addr.port());
    let root = parse_str(&config.to_string(), &|_| None).unwrap();
    let loaded = LoadedConfig {
        root,
        base_dir: PathBuf::from("."),
    };
    let app = build_app_with(&loaded, &SharedState::new()).unwrap();
    let listeners = start_telemetry_listeners(&app).await.unwrap();
    let live = Live::new(app);
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = live.clone();
    tokio::spawn(async move {
        serve_live(listener, serving, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Served {
        addr,
        live,
        listeners,
        _stop: stop,
    }
}

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

use switchboard_telemetry::testing::assert_promtool_accepts as promtool_accepts;

/// An address nothing listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Plain, streamed, failed and refused traffic against a known config.
async fn known_traffic(served: &Served) {
    let http = client();
    for _ in 0..3 {
        let response = http.get(served.url("/plain")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }
    for _ in 0..2 {
        let response = http.post(served.url("/stream")).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body = response.bytes().await.unwrap();
        assert_eq!(&body[..], b"data: one\n\ndata: two\n\n");
    }
    let response = http.get(served.url("/broken")).send().await.unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    response.bytes().await.unwrap();
    for _ in 0..2 {
        let response = http.get(served.url("/guarded")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        response.bytes().await.unwrap();
    }
    // A quota of one request a day: the second is refused.
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let response = http
            .get(served.url("/quota"))
            .header("x-team", "red")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        response.bytes().await.unwrap();
    }
}

async fn traffic_gateway(extra: Value) -> (Served, MockUpstream) {
    let mock = MockUpstream::start(|recorded| async move {
        if recorded.path() == "/events" {
            let (tx, response) = sse_response();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: one\n\n")).await.unwrap();
                tx.send(Bytes::from_static(b"data: two\n\n")).await.unwrap();
            });
            response
        } else {
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
    })
    .await;
    let mut root_extra = json!({
        "telemetry/opentelemetry": {
            "service_name": "switchboard-e2e",
            "exporters": {"prometheus": [{"name": "local", "port": 0, "listen_ip": "127.0.0.1"}]}
        },
        "auth/api-keys": {
            "strategy": "header",
            "identifier": "Authorization",
            "keys": [{"key": "team-a-key-0123456789", "roles": ["a"]}]
        },
        "governance/processors": {"quotas": [{"name": "requests",
            "rules": [{"name": "one", "limits": [{"amount": 1, "unit": "day"}]}]}]}
    });
    for (k, v) in extra.as_object().unwrap() {
        root_extra[k] = v.clone();
    }
    let config = json!({
        "version": 3,
        "extra_config": root_extra,
        "endpoints": [
            {"endpoint": "/plain", "backend": [{"host": [mock.url()], "url_pattern": "/json"}]},
            {"endpoint": "/stream", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [mock.url()], "url_pattern": "/events", "encoding": "no-op"}]},
            {"endpoint": "/broken", "backend": [{"host": [closed_port().await], "url_pattern": "/x"}]},
            {"endpoint": "/guarded", "extra_config": {"auth/api-keys": {"roles": ["a"]}},
             "backend": [{"host": [mock.url()], "url_pattern": "/json"}]},
            {"endpoint": "/quota", "extra_config": {"governance/quota": {"quota_name": "requests",
                "tier_key": "X-Team",
                "tiers": [{"rule_name": "one", "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]}},
             "backend": [{"host": [mock.url()], "url_pattern": "/json"}]}
        ]
    });
    (serve_config(config).await, mock)
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let (served, _mock) = traffic_gateway(json!({})).await;
    known_traffic(&served).await;
    // The main listener no longer serves metrics.
    let old = client().get(served.url("/__metrics")).send().await.unwrap();
    assert_eq!(old.status(), StatusCode::NOT_FOUND);

    let response = client().get(served.metrics_url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let req = |endpoint: &str, method: &str, status: u16| {
        sample(
            &text,
            &format!(
                r#"switchboard_requests_total{{endpoint="{endpoint}",method="{method}",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(req("/plain", "GET", 200), 3.0);
    assert_eq!(req("/stream", "POST", 200), 2.0);
    // An unreachable backend fails a KrakenD endpoint with a 500.
    assert_eq!(req("/broken", "GET", 500), 1.0);
    assert_eq!(req("/guarded", "GET", 401), 2.0);
    assert_eq!(req("/quota", "GET", 200), 1.0);
    assert_eq!(req("/quota", "GET", 429), 1.0);
    // The quota's refusal, and nothing else, counts as a rejection.
    assert_eq!(
        sample(
            &text,
            r#"switchboard_rejections_total{endpoint="/quota",kind="quota"}"#
        ),
        1.0
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("switchboard_rejections_total{"))
            .count(),
        1
    );
    let count = |metric: &str, endpoint: &str| {
        sample(
            &text,
            &format!(r#"{metric}_count{{endpoint="{endpoint}"}}"#),
        )
    };
    assert_eq!(count("switchboard_request_duration_seconds", "/plain"), 3.0);
    assert_eq!(count("switchboard_request_duration_seconds", "/quota"), 2.0);
    // Only the admitted request waited for the backend.
    assert_eq!(
        count("switchboard_upstream_duration_seconds", "/quota"),
        1.0
    );
    assert_eq!(count("switchboard_gateway_duration_seconds", "/plain"), 3.0);
    assert_eq!(
        count("switchboard_upstream_duration_seconds", "/plain"),
        3.0
    );
    assert_eq!(
        count("switchboard_request_duration_seconds", "/stream"),
        2.0
    );
    assert_eq!(
        count("switchboard_time_to_first_token_seconds", "/stream"),
        2.0
    );
    assert_eq!(
        count("switchboard_upstream_duration_seconds", "/broken"),
        1.0
    );
    assert_eq!(
        count("switchboard_request_duration_seconds", "/guarded"),
        2.0
    );
    // Refused before any backend: no upstream wait recorded.
    assert!(!text.contains(r#"switchboard_upstream_duration_seconds_count{endpoint="/guarded"}"#));
    assert_eq!(
        sample(&text, r#"switchboard_active_streams{endpoint="/stream"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"switchboard_upstream_errors_total{provider="127.0.0.1",kind="connect"}"#
        ),
        1.0
    );
    assert_eq!(sample(&text, "switchboard_config_generation"), 1.0);
    // No raw path or key ever becomes a label.
    assert!(!text.contains("team-a-key"));
    promtool_accepts(&text);
}

mod otlp {
    use super::*;
    use switchboard_telemetry::testing::{OtlpCollector, Span, hex};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_reach_the_collector_and_traceparent_reaches_the_vendor() {
        let mut collector = OtlpCollector::start().await.unwrap();
        let port = collector.port;
        let one = MockUpstream::json(json!({"a": 1})).await;
        let two = MockUpstream::json(json!({"b": 2})).await;
        let served = serve_config(json!({
            "version": 3,
            "extra_config": {"telemetry/opentelemetry": {
                "service_name": "switchboard-e2e",
                "skip_paths": ["/__health"],
                "exporters": {"otlp": [{"name": "local", "host": "127.0.0.1", "port": port, "use_http": true}]}
            }},
            "endpoints": [{"endpoint": "/both", "backend": [
                {"host": [one.url()], "url_pattern": "/one"},
                {"host": [two.url()], "url_pattern": "/two"}
            ]}]
        }))
        .await;
        let response = client().get(served.url("/both")).send().await.unwrap();
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"a": 1, "b": 2})
        );
        let health = client().get(served.url("/__health")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let tracing = served.live.current().telemetry().tracing().clone();
        tokio::task::spawn_blocking(move || tracing.flush())
            .await
            .unwrap();

        let spans = collector.spans(5).await.unwrap();
        // The request, two backend calls, one attempt each; /__health skipped.
        assert_eq!(
            spans.len(),
            5,
            "{:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let root = spans.iter().find(|s| s.name == "GET /both").unwrap();
        assert!(root.parent_span_id.is_empty());
        let backends: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name.starts_with("backend "))
            .collect();
        assert_eq!(backends.len(), 2);
        assert!(backends.iter().all(|b| b.parent_span_id == root.span_id));
        let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "GET 127.0.0.1").collect();
        assert_eq!(attempts.len(), 2);
        for attempt in &attempts {
            assert!(backends.iter().any(|b| b.span_id == attempt.parent_span_id));
        }
        // Each vendor got a traceparent naming its attempt's span.
        for mock in [&one, &two] {
            let sent = mock.requests()[0].headers["traceparent"]
                .to_str()
                .unwrap()
                .to_owned();
            let parts: Vec<&str> = sent.split('-').collect();
            assert_eq!(parts[1], hex(&root.trace_id));
            assert!(
                attempts.iter().any(|a| hex(&a.span_id) == parts[2]),
                "{sent}"
            );
        }
    }
}

/// Reload under load: a client keeps sending while the config flips between
/// two versions a thousand times, with an invalid one offered in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reloads_under_load_serve_whole_versions() {
    let vendor = MockUpstream::start(|recorded| async move {
        // /a1 → {"one":"a"}, /b2 → {"two":"b"}, …
        let path = recorded.path().trim_start_matches('/');
        let (version, part) = path.split_at(1);
        let key = if part == "1" { "one" } else { "two" };
        json_response(StatusCode::OK, &json!({ key: version }))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchboard.json");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let version = |v: &str| {
        json!({
            "version": 3,
            "port": addr.port(),
            "endpoints": [{"endpoint": "/v", "backend": [
                {"host": [vendor.url()], "url_pattern": format!("/{v}1")},
                {"host": [vendor.url()], "url_pattern": format!("/{v}2")}
            ]}]
        })
        .to_string()
    };
    let (a, b) = (version("a"), version("b"));
    let invalid = json!({"version": 3, "port": addr.port(), "endpoints": [{"endpoint": "no-slash", "backend": [{"host": [vendor.url()], "url_pattern": "/a1"}]}]}).to_string();
    std::fs::write(&file, &a).unwrap();
    let state = SharedState::new();
    let app = build_app_with(&load_file(&file).unwrap(), &state).unwrap();
    let live = Live::new(app);
    let reloader = Reloader::new(&file, None, state, live.clone());
    let (_stop, stopped) = oneshot::channel::<()>();
    let serving = live.clone();
    tokio::spawn(async move {
        let _ = serve_live(listener, serving, async {
            let _ = stopped.await;
        })
        .await;
    });

    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (done, served, seen) = (done.clone(), served.clone(), seen.clone());
        let url = format!("http://{addr}/v");
        clients.push(tokio::spawn(async move {
            let http = client();
            while !done.load(Ordering::SeqCst) {
                let response = http.get(&url).send().await.expect("no request fails");
                assert_eq!(response.status(), StatusCode::OK);
                let body: Value = response.json().await.unwrap();
                let one = body["one"].as_str().unwrap().to_owned();
                assert_eq!(
                    body["two"],
                    one.as_str(),
                    "a response mixed versions: {body}"
                );
                seen.lock().unwrap().insert(one);
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let mut generation = 1;
    for i in 0..1000 {
        let next = if i % 2 == 0 { &b } else { &a };
        write_atomically(&file, next);
        generation = reloader.reload().await.expect("a valid config reloads");
        if i % 50 == 0 {
            write_atomically(&file, &invalid);
            let errors = reloader
                .reload()
                .await
                .expect_err("an invalid config is refused");
            assert!(
                errors[0].to_string().contains("$.endpoints[0].endpoint"),
                "{errors:?}"
            );
            // The old config still serves.
            let body: Value = client()
                .get(format!("http://{addr}/v"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let expected = if i % 2 == 0 { "b" } else { "a" };
            assert_eq!(body["one"], expected);
        }
    }
    done.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    assert!(served.load(Ordering::SeqCst) > 0);
    assert_eq!(
        *seen.lock().unwrap(),
        ["a", "b"].map(String::from).into_iter().collect()
    );
    let health: Value = client()
        .get(format!("http://{addr}/__health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["config_generation"], generation);
    assert!(generation > 1000);
    let metrics = live.current().telemetry().metrics().encode();
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_config_reloads_total{result="applied"}"#
        ),
        1000.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_config_reloads_total{result="refused"}"#
        ),
        20.0
    );
    // Counters survived every rebuild: one registry across all generations.
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_requests_total{endpoint="/v",method="GET",status="200"}"#
        ) as usize,
        served.load(Ordering::SeqCst) + 20
    );
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const CLAUDE_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// Token usage from the real LLM layer (OpenAI answer, Anthropic stream)
/// reaches the KrakenD token counters, calls and cost.
#[tokio::test]
async fn llm_usage_reaches_the_token_counters() {
    let openai = MockUpstream::json(json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}))
    .await;
    let anthropic = MockUpstream::start(|_| async {
        let (tx, response) = sse_response();
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(CLAUDE_STREAM.as_bytes())).await;
        });
        response
    })
    .await;
    let served = serve_config(json!({
        "version": 3,
        "extra_config": {
            "telemetry/opentelemetry": {"exporters": {"prometheus": [{"name": "p", "port": 0, "listen_ip": "127.0.0.1"}]}},
            "switchboard/telemetry": {"prices": {"gpt/*": {"input": 1.0, "output": 2.0}}},
            "ai/providers": {"providers": [
                {"name": "gpt", "provider": "openai-compatible", "model": "gpt-test",
                 "endpoint": format!("{}/v1/chat/completions", openai.url()), "credentials": "sk-openai", "format": "openai"},
                {"name": "claude", "provider": "anthropic", "model": "claude-test",
                 "endpoint": format!("{}/v1/messages", anthropic.url()), "credentials": "sk-ant",
                 "variables": {"max_tokens": 256}}
            ]}
        },
        "endpoints": [
            {"endpoint": "/gpt", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [openai.url()], "url_pattern": "/unused", "extra_config": {"ai/llm": {"provider": "gpt"}}}]},
            {"endpoint": "/claude", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": [anthropic.url()], "url_pattern": "/v1/messages",
                "extra_config": {"ai/llm": {"format": "anthropic", "anthropic": {"v1": {
                    "credentials": "sk-ant", "variables": {"model": "claude-test"}}}}}}]}
        ]
    }))
    .await;
    let http = client();
    for _ in 0..2 {
        let response = http
            .post(served.url("/gpt"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }
    let response = http
        .post(served.url("/claude"))
        .json(&json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response.bytes().await.unwrap();

    let text = client()
        .get(served.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gpt = r#"provider="gpt",model="gpt-test",tier="default""#;
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_in_total{{{gpt}}}")),
        24.0
    );
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_out_total{{{gpt}}}")),
        6.0
    );
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_total{{{gpt}}}")),
        30.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_llm_calls_total{{{gpt},outcome="complete"}}"#)
        ),
        2.0
    );
    // 2 × (12 × 1 + 3 × 2) per million
    let cost = sample(&text, &format!("switchboard_llm_cost_total{{{gpt}}}"));
    assert!((cost - 0.000036).abs() < 1e-12, "{cost}");
    // The streamed call: usage from message_start and message_delta.
    let claude = r#"provider="anthropic",model="claude-test",tier="default""#;
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_in_total{{{claude}}}")),
        25.0
    );
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_out_total{{{claude}}}")),
        7.0
    );
    assert!(!text.contains(r#"switchboard_llm_cost_total{provider="anthropic""#));
    assert_eq!(
        sample(
            &text,
            r#"switchboard_time_to_first_token_seconds_count{endpoint="/claude"}"#
        ),
        1.0
    );
    promtool_accepts(&text);
}
