//! What the telemetry layer costs per request: a plain answer through
//! `RecordMetrics` against the same answer without it.

#![allow(clippy::unwrap_used, missing_docs)]
use std::convert::Infallible;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::BodyExt;
use switchboard_core::Body;
use switchboard_telemetry::{
    EndpointPattern, Metrics, RecordMetricsLayer, Telemetry, TelemetrySettings, Tracing,
};
use tower::{Layer, ServiceExt, service_fn};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inner = service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    });
    let telemetry = Arc::new(Telemetry::new(
        Arc::new(Metrics::new()),
        Tracing::disabled(),
        &TelemetrySettings::default(),
    ));
    let layered = RecordMetricsLayer::new(telemetry).layer(inner);
    let request = || {
        let mut request = Request::get("/bench").body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(EndpointPattern(Arc::from("/bench")));
        request
    };
    c.bench_function("bare", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = inner.oneshot(request()).await.unwrap();
                response.into_body().collect().await.unwrap();
            })
        })
    });
    c.bench_function("record_metrics", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = layered.clone().oneshot(request()).await.unwrap();
                response.into_body().collect().await.unwrap();
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
