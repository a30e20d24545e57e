//! A limit of R per second over five seconds, on one instance in memory and
//! on two instances sharing a real `redis-server`.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use serde_json::json;
use switchboard_core::Body;
use switchboard_rate_limit::{LimitRateLayer, Variant};
use switchboard_store::Stores;
use switchboard_store::testing::RedisServer;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

type Service = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

const RATE: f64 = 40.0;
const CAPACITY: u64 = 4;

fn ok() -> Service {
    BoxCloneService::new(service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }))
}

fn instance(variant: Variant, stores: &mut Stores, on_failure_allow: bool) -> Service {
    let mut config = json!({"max_rate": RATE, "capacity": CAPACITY, "every": "1s"});
    if variant == Variant::Redis {
        config["connection_name"] = json!("shared");
        config["on_failure_allow"] = json!(on_failure_allow);
    }
    let layer = LimitRateLayer::try_from_config(&config, variant, "POST /chat", stores).unwrap();
    BoxCloneService::new(layer.layer(ok()))
}

fn redis_stores(server: &RedisServer) -> Stores {
    Stores::try_from_config(
        &json!({"connection_pools": [{"name": "shared", "address": server.address()}]}),
    )
    .unwrap()
}

/// Sends requests for five seconds round-robin over `instances`; checks that
/// what was admitted is R × elapsed within one bucket.
async fn five_seconds(instances: &[Service]) {
    let started = Instant::now();
    let mut admitted = 0u64;
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(5) {
        let service = instances[sent % instances.len()].clone();
        sent += 1;
        let status = service
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap()
            .status();
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = RATE * elapsed;
    let admitted = admitted as f64;
    assert!(
        (admitted - expected).abs() <= CAPACITY as f64 + 1.0,
        "admitted {admitted} of {sent} in {elapsed:.2} s; expected {expected:.0} ± {CAPACITY}"
    );
}

#[tokio::test]
async fn one_instance_in_memory() {
    let mut stores = Stores::default();
    five_seconds(&[instance(Variant::Memory, &mut stores, false)]).await;
}

#[tokio::test]
async fn two_instances_share_one_budget_in_redis() {
    let server = RedisServer::require();
    let a = instance(Variant::Redis, &mut redis_stores(&server), false);
    let b = instance(Variant::Redis, &mut redis_stores(&server), false);
    five_seconds(&[a, b]).await;
}

#[tokio::test]
async fn a_frozen_redis_follows_on_failure_allow_and_service_resumes() {
    let server = RedisServer::require();
    let allow = instance(Variant::Redis, &mut redis_stores(&server), true);
    let block = instance(Variant::Redis, &mut redis_stores(&server), false);
    assert_eq!(
        allow
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    server.pause();
    for _ in 0..3 {
        let started = Instant::now();
        let allowed = allow
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(allowed.status(), StatusCode::OK);
        assert!(allowed.headers().get("ratelimit").is_none());
        let blocked = block
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(blocked.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    server.resume();
    let resumed = Instant::now();
    loop {
        let response = block
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        if response.headers().get("ratelimit").is_some() {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
