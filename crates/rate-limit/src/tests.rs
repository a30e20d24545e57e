use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use switchboard_core::{Body, Claims, ClientAddr};
use switchboard_store::Stores;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

use crate::{LimitRateLayer, Variant};

type Service = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

fn ok() -> Service {
    BoxCloneService::new(service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    }))
}

fn router(config: Value) -> Service {
    let mut stores = Stores::default();
    let layer =
        LimitRateLayer::try_from_config(&config, Variant::Memory, "GET /x", &mut stores).unwrap();
    BoxCloneService::new(layer.layer(ok()))
}

fn request(headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().uri("/x");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut request = builder.body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr("10.0.0.1:1000".parse().unwrap()));
    request
}

async fn statuses(service: &Service, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            service
                .clone()
                .oneshot(request(headers))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn max_rate_answers_503_with_the_headers() {
    let service = router(json!({"max_rate": 0.001, "capacity": 2, "every": "1s"}));
    let first = service.clone().oneshot(request(&[])).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers()["ratelimit-policy"],
        "\"endpoint\";q=0.001;w=1"
    );
    assert_eq!(first.headers()["ratelimit"], "\"endpoint\";r=1");
    assert_eq!(statuses(&service, 1, &[]).await, [200]);
    let refused = service.clone().oneshot(request(&[])).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.extensions().get::<switchboard_core::Rejection>(),
        Some(&switchboard_core::Rejection::RateLimit)
    );
    assert!(
        first
            .extensions()
            .get::<switchboard_core::Rejection>()
            .is_none()
    );
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 900, "{retry}");
    assert!(
        refused.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"endpoint\";r=0;t=")
    );
}

#[tokio::test]
async fn client_max_rate_answers_429_per_client() {
    let service = router(
        json!({"client_max_rate": 1, "client_capacity": 2, "every": "1h", "strategy": "header", "key": "X-User"}),
    );
    assert_eq!(
        statuses(&service, 3, &[("x-user", "a")]).await,
        [200, 200, 429]
    );
    assert_eq!(
        statuses(&service, 3, &[("x-user", "b")]).await,
        [200, 200, 429]
    );
    // No identity: one shared bucket, never a way around the limit.
    assert_eq!(statuses(&service, 3, &[]).await, [200, 200, 429]);
    let refused = service
        .clone()
        .oneshot(request(&[("x-user", "a")]))
        .await
        .unwrap();
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3000, "{retry}");
}

#[tokio::test]
async fn both_limits_together() {
    let service = router(
        json!({"max_rate": 1, "capacity": 3, "client_max_rate": 1, "client_capacity": 2, "every": "1h", "strategy": "ip"}),
    );
    let first = service.clone().oneshot(request(&[])).await.unwrap();
    assert_eq!(
        first.headers()["ratelimit"],
        "\"endpoint\";r=2, \"client\";r=1"
    );
    assert_eq!(statuses(&service, 2, &[]).await, [200, 429]);
    // The endpoint bucket had 3 and the refused call took one too.
    assert_eq!(statuses(&service, 1, &[]).await, [503]);
}

#[tokio::test]
async fn jwt_and_param_strategies() {
    let service = router(
        json!({"client_max_rate": 1, "client_capacity": 1, "every": "1h", "strategy": "jwt", "key": "sub"}),
    );
    let with = |sub: &str| {
        let mut r = request(&[]);
        r.extensions_mut().insert(Claims::new(json!({"sub": sub})));
        r
    };
    assert_eq!(
        service.clone().oneshot(with("a")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        service.clone().oneshot(with("a")).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        service.clone().oneshot(with("b")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tiers_pick_their_own_limits() {
    let mut stores = Stores::default();
    let layer = LimitRateLayer::try_from_tiered_config(&json!({"tier_key": "X-Plan", "tiers": [
        {"tier_value": "gold", "ratelimit": {"client_max_rate": 1, "client_capacity": 3, "every": "1h", "strategy": "header", "key": "X-User"}},
        {"tier_value": "JWT.plan == 'silver'", "tier_value_as": "policy", "ratelimit": {"client_max_rate": 1, "client_capacity": 2, "every": "1h", "strategy": "header", "key": "X-User"}},
        {"tier_value_as": "*", "ratelimit": {"client_max_rate": 1, "client_capacity": 1, "every": "1h", "strategy": "header", "key": "X-User"}}
    ]}), "GET /x", &mut stores).unwrap();
    let service: Service = BoxCloneService::new(layer.layer(ok()));
    assert_eq!(
        statuses(&service, 4, &[("x-plan", "gold"), ("x-user", "u")]).await,
        [200, 200, 200, 429]
    );
    let silver = || {
        let mut r = request(&[("x-user", "u")]);
        r.extensions_mut()
            .insert(Claims::new(json!({"plan": "silver"})));
        r
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(
            service
                .clone()
                .oneshot(silver())
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(seen, [200, 200, 429]);
    assert_eq!(statuses(&service, 2, &[("x-user", "u")]).await, [200, 429]);
}

#[tokio::test]
async fn backend_limits() {
    let mut stores = Stores::default();
    let layer = LimitRateLayer::try_from_proxy_config(
        &json!({"max_rate": 1, "capacity": 1, "every": "1h"}),
        "b0",
        &mut stores,
    )
    .unwrap();
    let service: Service = BoxCloneService::new(layer.layer(ok()));
    assert_eq!(statuses(&service, 2, &[]).await, [200, 503]);
}

#[test]
fn config_mistakes_name_their_field() {
    let mut stores = Stores::default();
    let err = |config: Value, variant| {
        LimitRateLayer::try_from_config(&config, variant, "s", &mut Stores::default()).unwrap_err()
    };
    assert_eq!(
        err(json!({}), Variant::Memory).message,
        "needs `max_rate` or `client_max_rate`"
    );
    assert_eq!(
        err(json!({"max_rate": -1}), Variant::Memory).path,
        "max_rate"
    );
    assert_eq!(
        err(json!({"max_rate": 1, "every": "often"}), Variant::Memory).path,
        "every"
    );
    assert_eq!(
        err(
            json!({"client_max_rate": 1, "strategy": "header"}),
            Variant::Memory
        )
        .path,
        "key"
    );
    assert_eq!(
        err(
            json!({"max_rate": 1, "connection_name": "r"}),
            Variant::Memory
        )
        .path,
        "connection_name"
    );
    assert_eq!(
        err(json!({"max_rate": 1}), Variant::Redis).path,
        "connection_name"
    );
    assert_eq!(
        err(
            json!({"max_rate": 1, "connection_pool": "nope"}),
            Variant::Redis
        )
        .path,
        "connection_pool"
    );
    assert!(
        err(json!({"max_rate": 1, "bogus": 1}), Variant::Memory)
            .message
            .contains("bogus")
    );
    let tiered = LimitRateLayer::try_from_tiered_config(
        &json!({"tier_key": "X", "tiers": [{"tier_value": "a", "ratelimit": {"max_rate": 0}}]}),
        "s",
        &mut stores,
    )
    .unwrap_err();
    assert_eq!(tiered.path, "tiers[0].ratelimit.max_rate");
    let tiered = LimitRateLayer::try_from_tiered_config(
        &json!({"tier_key": "X", "tiers": [{"tier_value": "a"}]}),
        "s",
        &mut stores,
    )
    .unwrap_err();
    assert_eq!(tiered.path, "tiers[0]");
}
