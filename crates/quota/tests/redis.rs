//! Quotas shared by two gateway instances through a real `redis-server`.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use serde_json::json;
use switchboard_core::{Body, Outcome, Usage, UsageReport};
use switchboard_quota::Quotas;
use switchboard_store::Stores;
use switchboard_store::testing::RedisServer;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

type Service = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// One gateway instance: its own connection to the shared Redis.
fn instance(
    server: &RedisServer,
    on_failure_allow: bool,
    weight: serde_json::Value,
    inner: Service,
) -> Service {
    let mut stores = Stores::try_from_config(&json!({"connection_pools": [
        {"name": "shared", "address": server.address(), "timeout": "100ms"}]}))
    .unwrap();
    let quotas = Quotas::try_from_config(&json!({"quotas": [{"name": "q", "connection_name": "shared",
        "on_failure_allow": on_failure_allow,
        "rules": [{"name": "r", "limits": [{"amount": 100, "unit": "hour"}, {"amount": 100000, "unit": "year"}]}]}]}), &mut stores)
    .unwrap();
    let mut attachment = json!({"quota_name": "q", "tier_key": "X-Plan",
        "tiers": [{"rule_name": "r", "tier_value_as": "*", "key": "X-User"}]});
    if let serde_json::Value::Object(extra) = weight {
        attachment.as_object_mut().unwrap().extend(extra);
    }
    BoxCloneService::new(quotas.layer(&attachment).unwrap().layer(inner))
}

fn ok() -> Service {
    BoxCloneService::new(service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    }))
}

fn request(user: &str) -> Request<Body> {
    Request::builder()
        .uri("/x")
        .header("x-user", user)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_100_of_1000() {
    let server = RedisServer::require();
    // A long timeout: this test is about atomicity, not outages.
    let instances = [
        instance(&server, false, json!({}), ok()),
        instance(&server, false, json!({}), ok()),
    ];
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let service = instances[i % 2].clone();
        let (admitted, refused) = (admitted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            // A 500 (the store timed out under this burst) is retried.
            loop {
                let status = service
                    .clone()
                    .oneshot(request("same"))
                    .await
                    .unwrap()
                    .status();
                match status {
                    StatusCode::OK => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 100);
    assert_eq!(refused.load(Ordering::SeqCst), 900);
}

#[tokio::test]
async fn token_usage_reconciles_across_instances() {
    let server = RedisServer::require();
    let llm = BoxCloneService::new(service_fn(|req: Request<Body>| async move {
        if let Some(report) = req.extensions().get::<UsageReport>() {
            report.record(Usage::new(30, 10));
            report.finish(Outcome::Complete);
        }
        Ok::<_, Infallible>(Response::new(Body::from("{}")))
    }));
    let weight = json!({"weight_strategy": "usage"});
    let a = instance(&server, false, weight.clone(), llm.clone());
    let b = instance(&server, false, weight, llm);
    let post = |user: &str| {
        Request::builder()
            .method("POST")
            .uri("/x")
            .header("x-user", user)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"max_tokens": 20}"#))
            .unwrap()
    };
    // 100 tokens an hour: two calls of 40 fit.
    assert_eq!(
        a.clone().oneshot(post("t")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        b.clone().oneshot(post("t")).await.unwrap().status(),
        StatusCode::OK
    );
    // Reconciliation with Redis runs in the background: wait until the
    // year counter shows exactly the two calls' 80 tokens.
    let reader =
        switchboard_store::RedisStore::connect(&server.url(), Duration::from_secs(1)).unwrap();
    let key = format!(
        "sb:quota:q:r:t:y{}",
        chrono::Datelike::year(&chrono::Utc::now())
    );
    let counter = [switchboard_store::Counter::new(
        key,
        u64::MAX,
        Duration::from_secs(60),
    )];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        use switchboard_store::Store;
        let used = reader
            .charge(&counter, 0, switchboard_store::ChargeMode::Always)
            .await
            .unwrap()
            .used[0];
        if used == 80 {
            break;
        }
        assert!(Instant::now() < deadline, "usage never reconciled: {used}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The third call's reservation (about 25 tokens) does not fit in 20.
    let refused = a.clone().oneshot(post("t")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["x-quota-remaining"], "20");
}

#[tokio::test]
async fn a_frozen_redis_follows_on_failure_allow_and_service_resumes() {
    let server = RedisServer::require();
    let allow = instance(&server, true, json!({}), ok());
    let deny = instance(&server, false, json!({}), ok());
    assert_eq!(
        allow.clone().oneshot(request("u")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        deny.clone().oneshot(request("u")).await.unwrap().status(),
        StatusCode::OK
    );
    server.pause();
    for _ in 0..3 {
        let started = Instant::now();
        let allowed = allow.clone().oneshot(request("u")).await.unwrap();
        assert_eq!(allowed.status(), StatusCode::OK);
        assert!(allowed.headers().get("x-quota-limit").is_none());
        let denied = deny.clone().oneshot(request("u")).await.unwrap();
        assert_eq!(denied.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Two decisions, each bounded by the 100 ms timeout (room for a
        // loaded machine), never a hang.
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    server.resume();
    let resumed = Instant::now();
    loop {
        let response = deny.clone().oneshot(request("u")).await.unwrap();
        if response.status() == StatusCode::OK {
            assert!(response.headers().get("x-quota-limit").is_some());
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
