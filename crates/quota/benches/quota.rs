//! One request through the quota layer in memory (weight 1 and tokens).

use std::convert::Infallible;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use serde_json::json;
use switchboard_core::{Body, Outcome, Usage, UsageReport};
use switchboard_quota::Quotas;
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
    let Ok(quotas) = Quotas::try_from_config(
        &json!({"quotas": [{"name": "q", "rules": [{"name": "r", "limits": [
            {"amount": 1e15, "unit": "minute"}, {"amount": 1e15, "unit": "day"}]}]}]}),
        &mut stores,
    ) else {
        return;
    };
    let tiers =
        json!([{"rule_name": "r", "tier_value": "gold", "strategy": "header", "key": "X-User"}]);
    let (Ok(one), Ok(tokens)) = (
        quotas.layer(&json!({"quota_name": "q", "tier_key": "X-Plan", "tiers": tiers})),
        quotas.layer(&json!({"quota_name": "q", "tier_key": "X-Plan", "tiers": tiers, "weight_strategy": "usage"})),
    ) else {
        return;
    };
    let inner = service_fn(|req: Request<Body>| async move {
        if let Some(report) = req.extensions().get::<UsageReport>() {
            report.record(Usage::new(100, 20));
            report.finish(Outcome::Complete);
        }
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let request = || {
        Request::builder()
            .method("POST")
            .header("x-plan", "gold")
            .header("x-user", "ada")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}"#,
            ))
            .unwrap_or_default()
    };
    let one = one.layer(inner);
    c.bench_function("quota weight 1 (memory)", |b| {
        b.iter(|| runtime.block_on(one.clone().oneshot(request())))
    });
    let tokens = tokens.layer(inner);
    c.bench_function("quota tokens reserve+reconcile (memory)", |b| {
        b.iter(|| runtime.block_on(tokens.clone().oneshot(request())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
