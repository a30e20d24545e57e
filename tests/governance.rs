//! End-to-end tests of cost control and governance: the gateway over
//! loopback, quotas and rate limits in memory and shared by two gateways
//! through a real `redis-server`, token usage from real LLM endpoints
//! (mock vendors reporting known usage), validation before the vendor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client, json_response, sse_response};
use switchboard_store::testing::RedisServer;

fn quota_config(upstream: &MockUpstream, redis: Option<&RedisServer>) -> Value {
    let mut processor = json!({"name": "plans", "on_failure_allow": false,
        "rules": [{"name": "gold", "limits": [{"amount": 100, "unit": "hour"}]},
                  {"name": "free", "limits": [{"amount": 1, "unit": "day"}]}]});
    let mut root = json!({});
    if let Some(redis) = redis {
        processor["connection_name"] = json!("shared");
        // A generous timeout: the burst below is about atomicity, and a
        // loaded test machine may take seconds to poll a thousand tasks.
        root["redis"] = json!({"connection_pools": [{"name": "shared", "address": redis.address(), "timeout": "20s"}]});
    }
    root["governance/processors"] = json!({"quotas": [processor]});
    json!({
        "version": 3,
        "extra_config": root,
        "endpoints": [{"endpoint": "/q", "method": "GET", "timeout": "60s",
            "backend": [{"host": [upstream.url()], "url_pattern": "/x"}],
            "extra_config": {"governance/quota": {"quota_name": "plans", "tier_key": "X-Plan",
                "tiers": [{"rule_name": "gold", "tier_value": "gold", "strategy": "header", "key": "X-User"},
                          {"rule_name": "free", "tier_value": "free", "strategy": "header", "key": "X-User"}]}}}]
    })
}

/// Sends 1000 concurrent requests spread over the gateways; counts 200s.
async fn burst(gateways: &[&Gateway]) -> (u64, u64) {
    let http = client();
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let url = gateways[i % gateways.len()].url("/q");
        let (http, ok, refused) = (http.clone(), ok.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let response = http
                .get(url)
                .header("x-plan", "gold")
                .header("x-user", "ada")
                .send()
                .await
                .unwrap();
            match response.status() {
                StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                StatusCode::TOO_MANY_REQUESTS => refused.fetch_add(1, Ordering::SeqCst),
                other => panic!(
                    "unexpected {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            };
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (ok.load(Ordering::SeqCst), refused.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_admit_exactly_100_in_memory() {
    let upstream = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(quota_config(&upstream, None)).await;
    assert_eq!(burst(&[&gateway]).await, (100, 900));
    assert_eq!(upstream.count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_exactly_100() {
    let redis = RedisServer::require();
    let upstream = MockUpstream::json(json!({"ok": true})).await;
    let a = Gateway::start(quota_config(&upstream, Some(&redis))).await;
    let b = Gateway::start(quota_config(&upstream, Some(&redis))).await;
    assert_eq!(burst(&[&a, &b]).await, (100, 900));
    assert_eq!(upstream.count(), 100);
}

#[tokio::test]
async fn quota_headers_hard_stops_and_unmatched_tiers() {
    let upstream = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(quota_config(&upstream, None)).await;
    let http = client();
    let first = http
        .get(gateway.url("/q"))
        .header("x-plan", "free")
        .header("x-user", "bo")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-quota-limit"], "1");
    assert_eq!(first.headers()["x-quota-remaining"], "0");
    let second = http
        .get(gateway.url("/q"))
        .header("x-plan", "free")
        .header("x-user", "bo")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    // A day does not reopen within a minute: SDK clients must not retry.
    assert_eq!(second.headers()["x-should-retry"], "false");
    let retry: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 60);
    let unmatched = http
        .get(gateway.url("/q"))
        .header("x-plan", "platinum")
        .header("x-user", "bo")
        .send()
        .await
        .unwrap();
    assert_eq!(unmatched.status(), StatusCode::BAD_REQUEST);
    let body: Value = unmatched.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_tier_unmatched");
    assert_eq!(upstream.count(), 1);
}

fn openai_vendor_answer() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
}

fn llm_config(vendor: &MockUpstream, redis: &RedisServer, amount: u64) -> Value {
    json!({
        "version": 3,
        "extra_config": {
            "redis": {"connection_pools": [{"name": "shared", "address": redis.address(), "timeout": "2s"}]},
            "governance/processors": {"quotas": [{"name": "tokens", "connection_name": "shared",
                "rules": [{"name": "team", "limits": [{"amount": amount, "unit": "day"}]}]}]},
            "ai/providers": {"providers": [
                {"name": "gpt", "provider": "openai-compatible", "model": "gpt-test",
                 "endpoint": format!("{}/v1/chat/completions", vendor.url()), "credentials": "sk-openai", "format": "openai"},
                {"name": "claude", "provider": "anthropic", "model": "claude-test",
                 "endpoint": format!("{}/v1/messages", vendor.url()), "credentials": "sk-ant",
                 "variables": {"max_tokens": 256}, "format": "anthropic", "streaming": true}]}
        },
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "output_encoding": "no-op", "timeout": "10s",
             "extra_config": {"governance/quota": {"quota_name": "tokens", "tier_key": "X-Team", "weight_strategy": "usage",
                "tiers": [{"rule_name": "team", "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]}},
             "backend": [{"host": [vendor.url()], "url_pattern": "/unused", "extra_config": {"ai/llm": {"provider": "gpt"}}}]},
            {"endpoint": "/v1/messages", "method": "POST", "output_encoding": "no-op", "timeout": "10s",
             "extra_config": {"governance/quota": {"quota_name": "tokens", "tier_key": "X-Team", "weight_strategy": "usage",
                "tiers": [{"rule_name": "team", "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]}},
             "backend": [{"host": [vendor.url()], "url_pattern": "/unused", "extra_config": {"ai/llm": {"provider": "claude"}}}]}
        ]
    })
}

/// What the quota has counted for a team today, read through a refused
/// call: a 429 shows what remains without a reservation in it.
async fn remaining_after_refusal(gateway: &Gateway, team: &str, path: &str) -> u64 {
    let response = client()
        .post(gateway.url(path))
        .header("x-team", team)
        .json(&json!({"model": "m", "max_tokens": 100000, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    response.headers()["x-quota-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn until_remaining(gateway: &Gateway, team: &str, path: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let remaining = remaining_after_refusal(gateway, team, path).await;
        if remaining == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "remaining {remaining}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn token_usage_is_charged_exactly_across_two_gateways() {
    let redis = RedisServer::require();
    let vendor =
        MockUpstream::start(|_| async { json_response(StatusCode::OK, &openai_vendor_answer()) })
            .await;
    let a = Gateway::start(llm_config(&vendor, &redis, 1000)).await;
    let b = Gateway::start(llm_config(&vendor, &redis, 1000)).await;
    for gateway in [&a, &b, &a] {
        let response = client()
            .post(gateway.url("/v1/chat/completions"))
            .header("x-team", "red")
            .json(&json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("x-quota-remaining"));
        response.bytes().await.unwrap();
    }
    // Three calls of 12 + 3 tokens: 45 charged, the reservations gone.
    until_remaining(&b, "red", "/v1/chat/completions", 1000 - 45).await;
    assert_eq!(vendor.count(), 3);
}

const ANTHROPIC_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const ANTHROPIC_DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
const ANTHROPIC_END: &str = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[tokio::test]
async fn streams_are_charged_and_a_disconnect_releases_the_reservation() {
    let redis = RedisServer::require();
    // The vendor streams a whole answer when the prompt says "whole";
    // otherwise it stalls after the first delta, as a long answer would.
    let vendor = MockUpstream::start(|recorded| async move {
        let whole = recorded.json().to_string().contains("whole");
        let (tx, response) = sse_response();
        tokio::spawn(async move {
            let _ = tx
                .send(Bytes::from_static(ANTHROPIC_START.as_bytes()))
                .await;
            let _ = tx
                .send(Bytes::from_static(ANTHROPIC_DELTA.as_bytes()))
                .await;
            if whole {
                let _ = tx.send(Bytes::from_static(ANTHROPIC_END.as_bytes())).await;
            } else {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        response
    })
    .await;
    let gateway = Gateway::start(llm_config(&vendor, &redis, 5000)).await;
    let http = client();
    let ask = |team: &'static str, text: &'static str| {
        http.post(gateway.url("/v1/messages"))
            .header("x-team", team)
            .json(&json!({"model": "m", "max_tokens": 2000, "stream": true,
                "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    let whole = ask("blue", "whole").await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    let text = whole.text().await.unwrap();
    assert!(text.contains("message_stop"), "{text}");
    // 25 in + 9 out.
    until_remaining(&gateway, "blue", "/v1/messages", 5000 - 34).await;

    let mut cut = ask("green", "stall").await.unwrap();
    let first = cut.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // While the stream runs, its reservation (2000 output tokens and more) holds.
    assert!(remaining_after_refusal(&gateway, "green", "/v1/messages").await < 3000);
    drop(cut);
    // The client left: charged the 25 + 1 tokens streamed, the rest released.
    until_remaining(&gateway, "green", "/v1/messages", 5000 - 26).await;
}

#[tokio::test]
async fn rate_limits_answer_with_krakend_statuses_and_headers() {
    let upstream = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "extra_config": {"qos/ratelimit/service": {"max_rate": 1, "capacity": 3, "every": "1h"}},
        "endpoints": [
            {"endpoint": "/client", "method": "GET", "backend": [{"host": [upstream.url()], "url_pattern": "/x"}],
             "extra_config": {"qos/ratelimit/router": {"client_max_rate": 1, "client_capacity": 1, "every": "1h", "strategy": "ip"}}},
            {"endpoint": "/other", "method": "GET", "backend": [{"host": [upstream.url()], "url_pattern": "/x"}]}
        ]
    }))
    .await;
    let http = client();
    let ok = http.get(gateway.url("/client")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let policies: Vec<&str> = ok
        .headers()
        .get_all("ratelimit-policy")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        policies,
        ["\"client\";q=1;w=3600", "\"endpoint\";q=1;w=3600"]
    );
    let limited = http.get(gateway.url("/client")).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 3000
    );
    // The service-wide bucket (3) is shared by every endpoint; the client
    // refusal above took one of its tokens too.
    assert_eq!(
        http.get(gateway.url("/other"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let exhausted = http.get(gateway.url("/other")).send().await.unwrap();
    assert_eq!(exhausted.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(exhausted.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn schema_and_prompt_guards_refuse_before_the_vendor() {
    let upstream = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "extra_config": {"ai/prompt-guard": {"guards": [
            {"name": "no-secrets", "kind": "regex", "severity": "critical", "config": {"patterns": ["sk-[A-Za-z0-9]{20,}"]}},
            {"name": "short", "kind": "policy", "severity": "low", "config": {"expressions": ["size(body.contents) > 100"]}}]}},
        "endpoints": [{"endpoint": "/ask", "method": "POST",
            "backend": [{"host": [upstream.url()], "url_pattern": "/x"}],
            "extra_config": {
                "validation/json-schema": {"type": "object", "required": ["contents"],
                    "properties": {"contents": {"type": "string"}}},
                "ai/prompt-guard": {"guards": ["!low"]}}}]
    }))
    .await;
    let http = client();
    let post = |body: Value| http.post(gateway.url("/ask")).json(&body).send();
    assert_eq!(
        post(json!({"contents": "hello"})).await.unwrap().status(),
        StatusCode::OK
    );
    let invalid = post(json!({"contents": ["not", "a", "string"]}))
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert_eq!(invalid.headers()["x-should-retry"], "false");
    let body: Value = invalid.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/contents"),
        "{body}"
    );
    let secret = post(json!({"contents": "my key is sk-abcdefghijklmnopqrstuvwxyz"}))
        .await
        .unwrap();
    assert_eq!(secret.status(), StatusCode::BAD_REQUEST);
    let body: Value = secret.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-secrets"),
        "{body}"
    );
    // The low-severity guard is excluded on this endpoint.
    assert_eq!(
        post(json!({"contents": "x".repeat(200)}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn config_mistakes_name_their_path() {
    let upstream = MockUpstream::json(json!({})).await;
    let errors = Gateway::try_start_in(json!({
        "version": 3,
        "extra_config": {"governance/processors": {"quotas": [{"name": "q", "connection_name": "nope", "rules": []}]}},
        "endpoints": [{"endpoint": "/q", "backend": [{"host": [upstream.url()], "url_pattern": "/x"}],
            "extra_config": {"qos/ratelimit/router/redis": {"max_rate": 1, "connection_name": "missing"},
                "governance/quota": {"quota_name": "q", "tier_key": "X", "tiers": []}}}]
    }), std::path::Path::new("."))
    .await
    .err()
    .unwrap();
    let text = errors.join("\n");
    assert!(
        text.contains("$.extra_config[\"governance/processors\"].quotas[0].connection_name"),
        "{text}"
    );
    assert!(
        text.contains(
            "$.endpoints[0].extra_config[\"qos/ratelimit/router/redis\"].connection_name"
        ),
        "{text}"
    );
    assert!(
        text.contains("$.endpoints[0].extra_config[\"governance/quota\"]"),
        "{text}"
    );
}

#[tokio::test]
async fn the_governance_example_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs");
    let text = std::fs::read_to_string(dir.join("governance.json")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
    let gateway = Gateway::try_start_with_env(config, &dir, &env)
        .await
        .unwrap();
    // Without a key the endpoint refuses before any limit is spent.
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A valid key with a body the schema refuses: 400 before the vendor.
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("authorization", "team-b-key")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-should-retry"], "false");
    // The quota ran first (SPEC order) and shows team-b's monthly budget.
    assert_eq!(response.headers()["x-quota-limit"], "50000000");
}
