//! The layer with `service_fn` inner services standing in for the LLM layer
//! (they record usage into the request's report as it would).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{Datelike, Utc};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_core::{
    ApiKeyIdentity, Body, Claims, ClientAddr, Outcome, RouteParams, Usage, UsageReport,
};
use switchboard_store::{ChargeMode, Counter, SharedStore, Stores};
use tower::{Layer, ServiceExt, service_fn};

use crate::{EnforceQuotaLayer, Quotas};

type BoxService = tower::util::BoxCloneService<Request<Body>, Response<Body>, Infallible>;

fn quotas(rules: Value, stores: &mut Stores) -> Quotas {
    Quotas::try_from_config(&json!({"quotas": [{"name": "q", "rules": rules,
        "prices": {"openai/gpt-x": {"input": 2.0, "output": 8.0}, "*": {"input": 10.0, "output": 10.0}}}]}), stores)
        .unwrap()
}

fn ok_service() -> BoxService {
    tower::util::BoxCloneService::new(service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    }))
}

/// An LLM stand-in that reports `usage` and finishes the report.
fn llm_service(input: u64, output: u64) -> BoxService {
    tower::util::BoxCloneService::new(service_fn(move |req: Request<Body>| async move {
        if let Some(report) = req.extensions().get::<UsageReport>() {
            report.record(Usage::new(input, output).with_source("openai", "gpt-x"));
            report.finish(Outcome::Complete);
        }
        Ok::<_, Infallible>(Response::new(Body::from("{}")))
    }))
}

/// A streaming stand-in: `chunks` chunks, each adding `per_chunk` output
/// tokens to the report; the report ends with the stream, or is dropped
/// (cancelled) with the body.
fn streaming_service(input: u64, chunks: u64, per_chunk: u64) -> BoxService {
    tower::util::BoxCloneService::new(service_fn(move |req: Request<Body>| async move {
        let report = req
            .extensions()
            .get::<UsageReport>()
            .cloned()
            .unwrap_or_default();
        drop(req);
        report.record(Usage::new(input, 0));
        let stream =
            futures_util::stream::unfold((0u64, report), move |(sent, report)| async move {
                if sent == chunks {
                    report.finish(Outcome::Complete);
                    return None;
                }
                report.update(|u| u.output_tokens += per_chunk);
                Some((
                    Ok::<_, Infallible>(Bytes::from("data: x\n\n")),
                    (sent + 1, report),
                ))
            });
        let mut response = Response::new(Body::from_stream(stream));
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        Ok::<_, Infallible>(response)
    }))
}

fn stack(layer: &EnforceQuotaLayer, inner: BoxService) -> BoxService {
    tower::util::BoxCloneService::new(layer.layer(inner))
}

fn get(headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().uri("/x");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::empty()).unwrap()
}

fn post(body: Value, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/x")
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

async fn used(store: &SharedStore, rule: &str, caller: &str) -> u64 {
    let key = format!("sb:quota:q:{rule}:{caller}:y{}", Utc::now().year());
    store
        .charge(
            &[Counter::new(key, u64::MAX, Duration::from_secs(60))],
            0,
            ChargeMode::Always,
        )
        .await
        .unwrap()
        .used[0]
}

async fn body_json(response: Response<Body>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn user_tiers() -> Value {
    json!([{"rule_name": "gold", "tier_value": "gold", "strategy": "header", "key": "X-User"},
           {"rule_name": "free", "tier_value_as": "*", "strategy": "header", "key": "X-User"}])
}

#[tokio::test]
async fn counts_requests_and_answers_429_with_the_headers() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "gold", "limits": [{"amount": 3, "unit": "minute"}]},
                               {"name": "free", "limits": [{"amount": 1, "unit": "day"}]}]),
        &mut stores,
    );
    let layer = quotas
        .layer(&json!({"quota_name": "q", "tier_key": "X-Plan", "tiers": user_tiers()}))
        .unwrap();
    let service = stack(&layer, ok_service());
    for remaining in ["2", "1", "0"] {
        let response = service
            .clone()
            .oneshot(get(&[("x-plan", "gold"), ("x-user", "a")]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response
                .extensions()
                .get::<switchboard_core::Rejection>()
                .is_none()
        );
        assert_eq!(response.headers()["x-quota-limit"], "3");
        assert_eq!(response.headers()["x-quota-remaining"], remaining);
    }
    let refused = service
        .clone()
        .oneshot(get(&[("x-plan", "gold"), ("x-user", "a")]))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.extensions().get::<switchboard_core::Rejection>(),
        Some(&switchboard_core::Rejection::Quota)
    );
    assert_eq!(refused.headers()["x-quota-remaining"], "0");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // The minute reopens soon: clients may retry.
    assert!(refused.headers().get("x-should-retry").is_none());
    assert_eq!(body_json(refused).await["error"]["code"], "quota_exceeded");
    // Another caller has its own counter.
    let other = service
        .clone()
        .oneshot(get(&[("x-plan", "gold"), ("x-user", "b")]))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // The free tier (`*`) allows one a day: a hard stop.
    assert_eq!(
        service
            .clone()
            .oneshot(get(&[("x-user", "c")]))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let hard = service
        .clone()
        .oneshot(get(&[("x-user", "c")]))
        .await
        .unwrap();
    assert_eq!(hard.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(hard.headers()["x-should-retry"], "false");
    let retry: u64 = hard.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 60);
}

#[tokio::test]
async fn a_thousand_concurrent_requests_admit_exactly_the_limit() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "gold", "limits": [{"amount": 100, "unit": "hour"}, {"amount": 1000, "unit": "year"}]}]),
        &mut stores,
    );
    let layer = quotas.layer(&json!({"quota_name": "q", "tier_key": "X-Plan",
        "tiers": [{"rule_name": "gold", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]})).unwrap();
    let service = stack(&layer, ok_service());
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let service = service.clone();
            let admitted = admitted.clone();
            tokio::spawn(async move {
                let response = service.oneshot(get(&[("x-user", "same")])).await.unwrap();
                if response.status() == StatusCode::OK {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 100);
}

#[tokio::test]
async fn every_tier_and_caller_form() {
    let mut stores = Stores::default();
    let rules = json!([{"name": "r", "limits": [{"amount": 1, "unit": "year"}]}]);
    let quotas = quotas(rules, &mut stores);
    let store = stores.memory();
    let cases: Vec<(Value, Request<Body>, &str)> = vec![
        (
            json!({"tier_key": "X-Plan", "tiers": [{"rule_name": "r", "tier_value": "pro", "strategy": "ip"}]}),
            {
                let mut r = get(&[("x-plan", "pro")]);
                r.extensions_mut()
                    .insert(ClientAddr("10.1.2.3:9".parse().unwrap()));
                r
            },
            "10.1.2.3",
        ),
        (
            json!({"tier_key": "X-Plan", "tiers": [{"rule_name": "r", "tier_value": "req_headers['X-Plan'][0] in ['pro', 'max']", "tier_value_as": "policy", "strategy": "param", "key": "team"}]}),
            {
                let mut r = get(&[("x-plan", "max")]);
                r.extensions_mut().insert(RouteParams::from_iter([(
                    "team".to_owned(),
                    "blue".to_owned(),
                )]));
                r
            },
            "blue",
        ),
        (
            json!({"tier_key": "JWT.plan", "tiers": [{"rule_name": "r", "tier_value": "pro", "strategy": "jwt", "key": "sub"}]}),
            {
                let mut r = get(&[]);
                r.extensions_mut()
                    .insert(Claims::new(json!({"plan": "pro", "sub": "u-7"})));
                r
            },
            "u-7",
        ),
        (
            json!({"tier_key": "api_key.role", "tiers": [{"rule_name": "r", "tier_value": "team-a", "strategy": "api_key"}]}),
            {
                let mut r = get(&[]);
                r.extensions_mut()
                    .insert(ApiKeyIdentity::new("k-1", "team-a"));
                r
            },
            "k-1",
        ),
    ];
    for (config, request, caller) in cases {
        let mut config = config;
        config["quota_name"] = json!("q");
        let service = stack(&quotas.layer(&config).unwrap(), ok_service());
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{config}");
        assert_eq!(used(&store, "r", caller).await, 1, "{config}");
    }
}

#[tokio::test]
async fn unmatched_tiers_answer_400_unless_allowed() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "gold", "limits": [{"amount": 1, "unit": "year"}]}]),
        &mut stores,
    );
    let config = json!({"quota_name": "q", "tier_key": "X-Plan",
        "tiers": [{"rule_name": "gold", "tier_value": "gold", "strategy": "header", "key": "X-User"}]});
    let service = stack(&quotas.layer(&config).unwrap(), ok_service());
    let response = service
        .clone()
        .oneshot(get(&[("x-plan", "silver"), ("x-user", "a")]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-should-retry"], "false");
    assert!(
        body_json(response).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Plan")
    );
    // A matching tier without the caller's identity is unmatched too.
    let response = service
        .clone()
        .oneshot(get(&[("x-plan", "gold")]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let mut allow = config.clone();
    allow["on_unmatched_tier_allow"] = json!(true);
    let service = stack(&quotas.layer(&allow).unwrap(), ok_service());
    for _ in 0..3 {
        let response = service
            .clone()
            .oneshot(get(&[("x-plan", "silver")]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("x-quota-limit").is_none());
    }
}

#[tokio::test]
async fn token_usage_is_charged_exactly_with_multipliers() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "t", "limits": [{"amount": 100000, "unit": "year"}]}]),
        &mut stores,
    );
    let store = stores.memory();
    let layer = quotas.layer(&json!({"quota_name": "q", "tier_key": "X-Plan", "weight_strategy": "usage",
        "output_multiplier": 3, "tiers": [{"rule_name": "t", "tier_value_as": "*", "key": "X-User"}]})).unwrap();
    let service = stack(&layer, llm_service(120, 30));
    let response = service
        .clone()
        .oneshot(post(
            json!({"max_tokens": 50, "messages": []}),
            &[("x-user", "a")],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(used(&store, "t", "a").await, 120 + 30 * 3);
    // The unified interface's `weight_key: usage` counts the same tokens.
    let layer = quotas
        .layer(
            &json!({"quota_name": "q", "tier_key": "X-Plan", "weight_key": "usage",
        "tiers": [{"rule_name": "t", "tier_value_as": "*", "key": "X-User"}]}),
        )
        .unwrap();
    stack(&layer, llm_service(5, 7))
        .oneshot(post(json!({}), &[("x-user", "b")]))
        .await
        .unwrap();
    assert_eq!(used(&store, "t", "b").await, 12);
}

#[tokio::test]
async fn streams_are_charged_what_was_streamed_and_a_disconnect_releases_the_rest() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "t", "limits": [{"amount": 100000, "unit": "year"}]}]),
        &mut stores,
    );
    let store = stores.memory();
    let layer = quotas
        .layer(
            &json!({"quota_name": "q", "tier_key": "X-Plan", "weight_strategy": "usage",
        "tiers": [{"rule_name": "t", "tier_value_as": "*", "key": "X-User"}]}),
        )
        .unwrap();
    let service = stack(&layer, streaming_service(10, 8, 5));

    // Whole stream: 10 in + 8 × 5 out. While it runs, the reservation holds.
    let response = service
        .clone()
        .oneshot(post(json!({"max_tokens": 1000}), &[("x-user", "whole")]))
        .await
        .unwrap();
    assert!(used(&store, "t", "whole").await >= 1000);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len(), 8 * 9);
    assert_eq!(used(&store, "t", "whole").await, 50);

    // The client leaves after three chunks: 10 in + 3 × 5 out, no more.
    let response = service
        .clone()
        .oneshot(post(json!({"max_tokens": 1000}), &[("x-user", "left")]))
        .await
        .unwrap();
    let mut body = response.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    assert_eq!(used(&store, "t", "left").await, 25);
}

#[tokio::test]
async fn a_reservation_that_does_not_fit_is_refused_before_the_call() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "t", "limits": [{"amount": 1000, "unit": "year"}]}]),
        &mut stores,
    );
    let store = stores.memory();
    let layer = quotas
        .layer(
            &json!({"quota_name": "q", "tier_key": "X-Plan", "weight_strategy": "usage",
        "tiers": [{"rule_name": "t", "tier_value_as": "*", "key": "X-User"}]}),
        )
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let inner = tower::util::BoxCloneService::new(service_fn(move |_req: Request<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Body::empty())) }
    }));
    let service = stack(&layer, inner);
    let response = service
        .clone()
        .oneshot(post(json!({"max_tokens": 5000}), &[("x-user", "a")]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A call that ends without usage (a failure) gives its reservation back.
    let response = service
        .clone()
        .oneshot(post(json!({"max_tokens": 500}), &[("x-user", "a")]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(used(&store, "t", "a").await, 0);
}

#[tokio::test]
async fn money_is_counted_in_millionths_of_the_price_table() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "usd", "limits": [{"amount": 1, "unit": "month"}, {"amount": 5, "unit": "year"}]}]),
        &mut stores,
    );
    let store = stores.memory();
    let layer = quotas
        .layer(
            &json!({"quota_name": "q", "tier_key": "X-Plan", "weight_strategy": "cost",
        "tiers": [{"rule_name": "usd", "tier_value_as": "*", "key": "X-User"}]}),
        )
        .unwrap();
    let service = stack(&layer, llm_service(100_000, 50_000));
    let response = service
        .clone()
        .oneshot(post(
            json!({"model": "gpt-x", "max_tokens": 100}),
            &[("x-user", "a")],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // 0.1M × 2 + 0.05M × 8 = 0.6 currency units.
    assert_eq!(used(&store, "usd", "a").await, 600_000);
    assert!(
        quotas
            .layer(
                &json!({"quota_name": "q", "tier_key": "X", "weight_strategy": "cost",
        "tiers": [{"rule_name": "usd", "tier_value_as": "*", "key": "X-User"}]})
            )
            .is_ok()
    );
}

#[tokio::test]
async fn response_weights_from_body_and_header() {
    let mut stores = Stores::default();
    let quotas = quotas(
        json!([{"name": "w", "limits": [{"amount": 100, "unit": "year"}]}]),
        &mut stores,
    );
    let store = stores.memory();
    let inner = tower::util::BoxCloneService::new(service_fn(|_req: Request<Body>| async {
        let mut response = Response::new(Body::from(r#"{"meta": {"units": 7}}"#));
        response
            .headers_mut()
            .insert("x-units", "4".parse().unwrap());
        Ok::<_, Infallible>(response)
    }));
    let body = quotas
        .layer(
            &json!({"quota_name": "q", "tier_key": "X", "weight_key": "meta.units",
        "tiers": [{"rule_name": "w", "tier_value_as": "*", "key": "X-User"}]}),
        )
        .unwrap();
    let response = stack(&body, inner.clone())
        .oneshot(get(&[("x-user", "a")]))
        .await
        .unwrap();
    assert_eq!(body_json(response).await["meta"]["units"], 7);
    assert_eq!(used(&store, "w", "a").await, 7);
    let header = quotas.layer(&json!({"quota_name": "q", "tier_key": "X", "weight_key": "X-Units", "weight_strategy": "header",
        "tiers": [{"rule_name": "w", "tier_value_as": "*", "key": "X-User"}]})).unwrap();
    stack(&header, inner)
        .oneshot(get(&[("x-user", "b")]))
        .await
        .unwrap();
    assert_eq!(used(&store, "w", "b").await, 4);
}

#[tokio::test]
async fn hashed_keys_hide_the_caller() {
    let mut stores = Stores::default();
    let quotas = Quotas::try_from_config(
        &json!({"quotas": [{"name": "q", "hash_keys": true,
        "rules": [{"name": "r", "limits": [{"amount": 5, "unit": "year"}]}]}]}),
        &mut stores,
    )
    .unwrap();
    let store = stores.memory();
    let layer = quotas
        .layer(&json!({"quota_name": "q", "tier_key": "X",
        "tiers": [{"rule_name": "r", "tier_value_as": "*", "key": "X-User"}]}))
        .unwrap();
    stack(&layer, ok_service())
        .oneshot(get(&[("x-user", "mary@example.com")]))
        .await
        .unwrap();
    assert_eq!(used(&store, "r", "mary@example.com").await, 0);
}

#[test]
fn config_mistakes_name_their_path() {
    let mut stores = Stores::default();
    let err = Quotas::try_from_config(
        &json!({"quotas": [{"name": "q", "connection_name": "nope", "rules": []}]}),
        &mut stores,
    )
    .unwrap_err();
    assert_eq!(err.path, "quotas[0].connection_name");
    let err = Quotas::try_from_config(&json!({"quotas": [{"name": "q", "rules": [{"name": "r", "limits": [{"amount": 1, "unit": "fortnight"}]}]}]}), &mut stores).unwrap_err();
    assert_eq!(err.path, "quotas[0].rules[0].limits[0].unit");
    let quotas = quotas(
        json!([{"name": "r", "limits": [{"amount": 1, "unit": "day"}]}]),
        &mut stores,
    );
    let err = quotas.layer(&json!({"quota_name": "q", "tier_key": "X", "tiers": [{"rule_name": "nope", "tier_value_as": "*", "key": "X-User"}]})).unwrap_err();
    assert_eq!(err.path, "tiers[0].rule_name");
    let err = quotas
        .layer(&json!({"quota_name": "other", "tier_key": "X", "tiers": []}))
        .unwrap_err();
    assert_eq!(err.path, "quota_name");
    let err = quotas.layer(&json!({"quota_name": "q", "tier_key": "X", "tiers": [{"rule_name": "r", "tier_value": "((", "tier_value_as": "policy"}]})).unwrap_err();
    assert_eq!(err.path, "tiers[0].tier_value");
    let err = quotas.layer(&json!({"quota_name": "q", "tier_key": "X", "tiers": [{"rule_name": "r", "tier_value_as": "*", "key": "X-User"}], "extra": 1})).unwrap_err();
    assert!(err.message.contains("extra"));
}
