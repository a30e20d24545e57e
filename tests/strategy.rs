//! End-to-end tests of `proxy.strategy` and `backend/conditional` against
//! mock upstreams over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client, json_response};

fn endpoint(extra: Value, backends: Vec<Value>) -> Value {
    json!({"version": 3, "endpoints": [{
        "endpoint": "/e", "method": "POST", "input_headers": ["X-Tier"],
        "extra_config": extra, "backend": backends}]})
}

async fn failing(status: StatusCode) -> MockUpstream {
    MockUpstream::start(move |_| async move { json_response(status, &json!({"error": "down"})) })
        .await
}

#[tokio::test]
async fn fallback_calls_the_next_backend_only_when_the_current_fails() {
    let down = failing(StatusCode::SERVICE_UNAVAILABLE).await;
    let up = MockUpstream::json(json!({"from": "second"})).await;
    let unused = MockUpstream::json(json!({"from": "third"})).await;
    let gateway = Gateway::start(endpoint(
        json!({"proxy": {"strategy": "fallback"}}),
        vec![
            json!({"host": [down.url()], "url_pattern": "/a"}),
            json!({"host": [up.url()], "url_pattern": "/b"}),
            json!({"host": [unused.url()], "url_pattern": "/c"}),
        ],
    ))
    .await;
    let response = client()
        .post(gateway.url("/e"))
        .json(&json!({"q": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"from": "second"})
    );
    assert_eq!((down.count(), up.count(), unused.count()), (1, 1, 0));
    // Both got the client's body.
    assert_eq!(up.requests()[0].json(), json!({"q": 1}));
    assert_eq!(down.requests()[0].json(), json!({"q": 1}));
}

#[tokio::test]
async fn fallback_answers_the_last_failure_when_all_fail() {
    let a = failing(StatusCode::SERVICE_UNAVAILABLE).await;
    let b = failing(StatusCode::TOO_MANY_REQUESTS).await;
    let gateway = Gateway::start(endpoint(
        json!({"proxy": {"strategy": "fallback"}}),
        vec![
            json!({"host": [a.url()], "url_pattern": "/a"}),
            json!({"host": [b.url()], "url_pattern": "/b"}),
        ],
    ))
    .await;
    let response = client().post(gateway.url("/e")).send().await.unwrap();
    // The last backend failed: a 500, as KrakenD answers a failed backend.
    assert_eq!(response.status(), 500);
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn sequential_passes_earlier_answers_to_later_url_patterns() {
    let users = MockUpstream::json(json!({"id": 42, "org": {"slug": "acme"}})).await;
    let orders = MockUpstream::json(json!({"orders": [1, 2]})).await;
    let gateway = Gateway::start(endpoint(
        json!({"proxy": {"strategy": "sequential"}}),
        vec![
            json!({"host": [users.url()], "url_pattern": "/user"}),
            json!({"host": [orders.url()], "url_pattern": "/orders/{resp0_id}/{resp0_org.slug}"}),
        ],
    ))
    .await;
    let response = client().post(gateway.url("/e")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 42);
    assert_eq!(body["orders"], json!([1, 2]));
    assert_eq!(orders.requests()[0].path(), "/orders/42/acme");
}

#[tokio::test]
async fn sequential_aborts_on_a_failure() {
    let down = failing(StatusCode::INTERNAL_SERVER_ERROR).await;
    let never = MockUpstream::json(json!({})).await;
    let gateway = Gateway::start(endpoint(
        json!({"proxy": {"sequential": true}}),
        vec![
            json!({"host": [down.url()], "url_pattern": "/a"}),
            json!({"host": [never.url()], "url_pattern": "/b/{resp0_id}"}),
        ],
    ))
    .await;
    let response = client().post(gateway.url("/e")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(never.count(), 0);
}

#[tokio::test]
async fn response_placeholders_need_the_sequential_strategy() {
    let mock = MockUpstream::json(json!({})).await;
    let errors = Gateway::try_start_in(
        endpoint(
            json!({}),
            vec![json!({"host": [mock.url()], "url_pattern": "/b/{resp0_id}"})],
        ),
        std::path::Path::new("."),
    )
    .await
    .err()
    .expect("the config is refused");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("backend[0].url_pattern") && e.contains("sequential")),
        "{errors:?}"
    );
}

fn conditional(extra: Value, a: &MockUpstream, b: &MockUpstream, c: &MockUpstream) -> Value {
    endpoint(
        extra,
        vec![
            json!({"host": [a.url()], "url_pattern": "/gold", "group": "gold",
                   "extra_config": {"backend/conditional": {"strategy": "header", "name": "X-Tier", "value": "gold"}}}),
            json!({"host": [b.url()], "url_pattern": "/silver", "group": "silver",
                   "extra_config": {"backend/conditional": {"strategy": "policy",
                       "value": "req_body.plan == 'silver' || getHeader('X-Tier') == 'silver'"}}}),
            json!({"host": [c.url()], "url_pattern": "/default", "group": "default",
                   "extra_config": {"backend/conditional": {"strategy": "fallback"}}}),
        ],
    )
}

#[tokio::test]
async fn conditional_backends_run_by_header_policy_or_fallback() {
    let gold = MockUpstream::json(json!({"who": "gold"})).await;
    let silver = MockUpstream::json(json!({"who": "silver"})).await;
    let default = MockUpstream::json(json!({"who": "default"})).await;
    let gateway = Gateway::start(conditional(json!({}), &gold, &silver, &default)).await;
    let http = client();
    let ask = |tier: Option<&'static str>, body: Value| {
        let mut request = http.post(gateway.url("/e")).json(&body);
        if let Some(tier) = tier {
            request = request.header("X-Tier", tier);
        }
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(
        ask(Some("gold"), json!({})).await,
        json!({"gold": {"who": "gold"}})
    );
    // The header value is case-sensitive: "Gold" matches nothing → fallback.
    assert_eq!(
        ask(Some("Gold"), json!({})).await,
        json!({"default": {"who": "default"}})
    );
    assert_eq!(
        ask(None, json!({"plan": "silver"})).await,
        json!({"silver": {"who": "silver"}})
    );
    // Both conditional rules pass: both run and merge, the fallback does not.
    let both = ask(Some("gold"), json!({"plan": "silver"})).await;
    assert_eq!(
        both,
        json!({"gold": {"who": "gold"}, "silver": {"who": "silver"}})
    );
    assert_eq!((gold.count(), silver.count(), default.count()), (2, 2, 1));
}

#[tokio::test]
async fn two_conditional_fallbacks_are_refused() {
    let m = MockUpstream::json(json!({})).await;
    let errors = Gateway::try_start_in(
        endpoint(
            json!({}),
            vec![
                json!({"host": [m.url()], "url_pattern": "/a", "extra_config": {"backend/conditional": {"strategy": "fallback"}}}),
                json!({"host": [m.url()], "url_pattern": "/b", "extra_config": {"backend/conditional": {"strategy": "fallback"}}}),
            ],
        ),
        std::path::Path::new("."),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        errors.iter().any(|e| e.contains("one backend")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn the_strategies_example_config_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/configs/strategies.json")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    let gateway = Gateway::try_start_in(config, &root.join("examples/configs")).await;
    assert!(gateway.is_ok(), "{:?}", gateway.err());
}
