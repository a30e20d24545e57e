//! Token validation per request with cached keys.

#![allow(missing_docs)]
// A bench that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use switchboard_jwt_claims::ValidateJwtLayer;
use tower::{Layer, ServiceExt};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = [
        (
            "rs256",
            json!({"alg": "RS256", "jwk_local_path": "rsa_jwks.json",
                   "audience": ["gateway"], "issuer": "https://idp.example.com/",
                   "propagate_claims": [["sub", "x-user"]]}),
            common::rs256("rsa-1", &common::claims()),
        ),
        (
            "hs256",
            json!({"alg": "HS256", "jwk_local_path": "hmac_jwks.json",
                   "audience": ["gateway"], "issuer": "https://idp.example.com/",
                   "propagate_claims": [["sub", "x-user"]]}),
            common::hs256("hmac-1", &common::claims()),
        ),
    ];
    for (name, config, token) in cases {
        let layer = ValidateJwtLayer::try_from_config(&config, &common::fixtures()).unwrap();
        let seen = common::Seen::default();
        let service = layer.layer(seen.service());
        c.bench_function(&format!("validate_{name}"), |b| {
            b.iter(|| {
                let response = runtime
                    .block_on(service.clone().oneshot(common::bearer(&token)))
                    .unwrap();
                assert_eq!(response.status(), http::StatusCode::OK);
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
