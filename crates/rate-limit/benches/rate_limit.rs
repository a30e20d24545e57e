//! One request through an endpoint + client limit in memory.

use std::convert::Infallible;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use serde_json::json;
use switchboard_core::Body;
use switchboard_rate_limit::{LimitRateLayer, Variant};
use switchboard_store::Stores;
use tower::{Layer, ServiceExt, service_fn};

fn bench(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut stores = Stores::default();
    let Ok(layer) = LimitRateLayer::try_from_config(
        &json!({"max_rate": 1e12, "capacity": 1_000_000_000_000u64, "client_max_rate": 1e12,
                "client_capacity": 1_000_000_000_000u64, "strategy": "header", "key": "X-User"}),
        Variant::Memory,
        "bench",
        &mut stores,
    ) else {
        return;
    };
    let service = layer.layer(service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    c.bench_function("rate limit endpoint + client (memory)", |b| {
        b.iter(|| {
            let request = Request::builder()
                .header("x-user", "ada")
                .body(Body::empty())
                .unwrap_or_default();
            runtime.block_on(service.clone().oneshot(request))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
