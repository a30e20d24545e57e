//! Allocations per request of the pipeline glue, counted by a counting
//! global allocator (deterministic, unlike timings).
//!
//! The endpoint has six stages: `security/policies` and
//! `modifier/response-body` at the endpoint, `modifier/martian` (request and
//! response scope), `security/policies` and `modifier/response-body` on its
//! backend, which calls the gateway's own `/__health` in-process (no
//! sockets, so every allocation is this request's). The glue is what the
//! six-stage request allocates beyond the same endpoint without stages and
//! beyond each layer's own work, measured by running that layer alone
//! around a service that answers what `/__health` answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::convert::Infallible;
use std::path::PathBuf;

use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use switchboard::config::{LoadedConfig, parse_str};
use switchboard_core::Body;
use tower::{Layer, ServiceExt, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The glue budget for six stages. Issue 9's target is 8; the glue
/// measures 9 since the endpoint without stages lost 40 allocations (123 →
/// 83) and the six-stage one 39 (171 → 132): the request's extension map
/// now crosses its first growth (at the 4th entry) only when the stages
/// add theirs, so that growth counts as glue here (docs/performance.md).
const GLUE_BUDGET: isize = 9;

fn policies() -> Value {
    json!({"req": {"policies": ["req_method == 'GET'"]}, "resp": {"policies": ["resp_status == 200"]}})
}

fn mask() -> Value {
    json!({"modifiers": [{"regexp": {"field": "status", "find": "ok", "replace": "ok"}}]})
}

fn martian() -> Value {
    json!({"fifo.Group": {"scope": ["request", "response"], "modifiers": [
        {"header.Blacklist": {"scope": ["request"], "names": ["X-Not-Sent"]}},
        {"header.Blacklist": {"scope": ["response"], "names": ["X-Not-Answered"]}}
    ]}})
}

fn app(stages: bool) -> axum::Router {
    let (endpoint_extra, backend_extra) = if stages {
        (
            json!({"security/policies": policies(), "modifier/response-body": mask()}),
            json!({"modifier/martian": martian(), "security/policies": policies(), "modifier/response-body": mask()}),
        )
    } else {
        (json!({}), json!({}))
    };
    let config = json!({
        "version": 3,
        "port": 8080,
        "host": ["http://localhost:8080"],
        "endpoints": [{
            "endpoint": "/six",
            "method": "GET",
            "extra_config": endpoint_extra,
            "backend": [{"url_pattern": "/__health", "extra_config": backend_extra}]
        }]
    });
    let root = parse_str(&config.to_string(), &|_| None).unwrap();
    let loaded = LoadedConfig {
        root,
        base_dir: PathBuf::from("."),
    };
    switchboard::build_app(&loaded).unwrap().router()
}

fn request() -> Request<Body> {
    Request::builder().uri("/six").body(Body::empty()).unwrap()
}

/// What `/__health` answers, for the layers measured alone.
fn health() -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(r#"{"status":"ok"}"#))
        .unwrap()
}

/// Allocations of one call, after a first call that warms every lazy
/// cache (the router's, the regex engines', the CEL programs').
fn allocations<F, Fut>(runtime: &tokio::runtime::Runtime, call: F) -> isize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Response<Body>>,
{
    let run = || {
        runtime.block_on(async {
            let response = call().await;
            assert_eq!(response.status(), 200);
            let _ = response.into_body().collect().await.unwrap();
        });
    };
    run();
    run();
    let region = Region::new(GLOBAL);
    run();
    region.change().allocations as isize
}

#[test]
fn six_stage_glue_stays_within_budget() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = app(false);
    let six = app(true);
    let base = allocations(&runtime, || {
        bare.clone().oneshot(request()).map_ok_response()
    });
    let total = allocations(&runtime, || {
        six.clone().oneshot(request()).map_ok_response()
    });

    // Each layer's own work, alone around a service answering `/__health`.
    let inner = || service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(health()) });
    let alone = allocations(&runtime, || inner().oneshot(request()).map_ok_response());
    let martian =
        switchboard_header_modifier::ModifyHeadersLayer::try_from_config(&martian()).unwrap();
    let policies =
        switchboard_policies::EvaluatePoliciesLayer::try_from_config(&policies()).unwrap();
    let mask = switchboard_response_masker::MaskResponseLayer::try_from_config(&mask()).unwrap();
    let own = [
        allocations(&runtime, || {
            martian
                .request_only()
                .layer(inner())
                .oneshot(request())
                .map_ok_response()
        }),
        allocations(&runtime, || {
            martian
                .response_only()
                .layer(inner())
                .oneshot(request())
                .map_ok_response()
        }),
        allocations(&runtime, || {
            policies.layer(inner()).oneshot(request()).map_ok_response()
        }),
        allocations(&runtime, || {
            mask.layer(inner()).oneshot(request()).map_ok_response()
        }),
    ];
    // Policies and masking run twice: at the endpoint and on the backend.
    let own_work =
        (own[0] - alone) + (own[1] - alone) + 2 * (own[2] - alone) + 2 * (own[3] - alone);
    let glue = total - base - own_work;
    println!(
        "allocations per request: no stages {base}, six stages {total}, layers' own work {own_work}, glue {glue}"
    );
    assert!(
        glue <= GLUE_BUDGET,
        "six stages cost {glue} glue allocations per request (budget {GLUE_BUDGET}): \
         no stages {base}, six stages {total}, layers' own work {own_work}"
    );
}

/// `oneshot` futures give `Result<Response, Infallible>`; the measurement
/// wants the response.
trait OkResponse: Sized {
    fn map_ok_response(self) -> impl std::future::Future<Output = Response<Body>>;
}

impl<F, E> OkResponse for F
where
    F: std::future::Future<Output = Result<Response<Body>, E>>,
    E: std::fmt::Debug,
{
    async fn map_ok_response(self) -> Response<Body> {
        self.await.unwrap()
    }
}
