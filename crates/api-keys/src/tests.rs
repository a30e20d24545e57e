//! The layer with an inner service that records what reached it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use switchboard_core::Body;
use tower::{Layer, ServiceExt};

use crate::ApiKeys;
use crate::hash::{HashKind, to_hex};

type Seen = Arc<Mutex<Vec<Request<()>>>>;

async fn run(keys: &ApiKeys, endpoint: Value, request: Request<Body>) -> (StatusCode, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let inner = tower::service_fn(move |request: Request<Body>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(request.map(|_| ()));
            Ok::<_, Infallible>(Response::new(Body::from("ok")))
        }
    });
    let layer = keys.layer(&endpoint).unwrap();
    let response = layer.layer(inner).oneshot(request).await.unwrap();
    if !response.status().is_success() {
        assert!(
            seen.lock().unwrap().is_empty(),
            "a refused request reached the inner service"
        );
        assert_eq!(response.headers()["x-should-retry"], "false");
    }
    (response.status(), seen)
}

fn root() -> Value {
    json!({
        "strategy": "header",
        "identifier": "Authorization",
        "propagate_role": "X-Role",
        "keys": [
            {"key": "4d2c61e1-34c4-e96c-9456-15bd983c5019", "roles": ["role1", "role2"], "@description": "ACME"},
            {"key": "58427514-be32-0b52-b7c6-d01fada30497", "roles": ["role1", "role3"]}
        ]
    })
}

fn with_header(name: &str, value: &str) -> Request<Body> {
    Request::builder()
        .uri("/chat?x=1")
        .header(name, value)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn right_key_passes_and_is_stripped() {
    let keys = ApiKeys::try_from_config(&root()).unwrap();
    let mut request = with_header(
        "authorization",
        "Bearer 58427514-be32-0b52-b7c6-d01fada30497",
    );
    // A client cannot pick the role the backend sees.
    request
        .headers_mut()
        .insert("x-role", "role2".parse().unwrap());
    let (status, seen) = run(&keys, json!({"roles": ["role2", "role3"]}), request).await;
    assert_eq!(status, StatusCode::OK);
    {
        let seen = seen.lock().unwrap();
        assert!(seen[0].headers().get("authorization").is_none());
        assert_eq!(seen[0].headers()["x-role"], "role3");
    }

    let request = with_header("authorization", "4d2c61e1-34c4-e96c-9456-15bd983c5019");
    let (status, seen) = run(&keys, json!({}), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap()[0].headers()["x-role"], "ANY");
}

#[tokio::test]
async fn wrong_or_missing_key_is_401() {
    let keys = ApiKeys::try_from_config(&root()).unwrap();
    for value in [
        "Bearer nope",
        "4d2c61e1-34c4-e96c-9456-15bd983c501",
        "Bearer ",
        "4D2C61E1-34C4-E96C-9456-15BD983C5019",
    ] {
        let (status, _) = run(
            &keys,
            json!({"roles": ["role1"]}),
            with_header("authorization", value),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{value}");
    }
    let request = Request::builder().uri("/").body(Body::empty()).unwrap();
    assert_eq!(
        run(&keys, json!({"roles": ["role1"]}), request).await.0,
        StatusCode::UNAUTHORIZED
    );
    let request = Request::builder()
        .header("authorization", "4d2c61e1-34c4-e96c-9456-15bd983c5019")
        .header("authorization", "nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        run(&keys, json!({}), request).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn wrong_role_is_403() {
    let keys = ApiKeys::try_from_config(&root()).unwrap();
    let request = with_header(
        "authorization",
        "Bearer 4d2c61e1-34c4-e96c-9456-15bd983c5019",
    );
    let (status, _) = run(&keys, json!({"roles": ["role3"]}), request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_hash_with_salt() {
    for (name, kind) in [
        ("sha256", HashKind::Sha256),
        ("sha1", HashKind::Sha1),
        ("fnv128", HashKind::Fnv128),
    ] {
        let stored = to_hex(&kind.presented(b"mySalt", b"client-secret"));
        let keys = ApiKeys::try_from_config(&json!({
            "hash": name,
            "salt": "mySalt",
            "keys": [{"key": stored, "roles": ["user"]}]
        }))
        .unwrap();
        let ok = with_header("authorization", "Bearer client-secret");
        assert_eq!(
            run(&keys, json!({"roles": ["user"]}), ok).await.0,
            StatusCode::OK,
            "{name}"
        );
        // The stored digest itself is not a key.
        let digest = with_header("authorization", &format!("Bearer {stored}"));
        assert_eq!(
            run(&keys, json!({}), digest).await.0,
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
        // Without the salt the digest differs.
        let unsalted = to_hex(&kind.presented(b"", b"client-secret"));
        let keys = ApiKeys::try_from_config(&json!({
            "hash": name, "salt": "mySalt", "keys": [{"key": unsalted, "roles": []}]
        }))
        .unwrap();
        let request = with_header("authorization", "client-secret");
        assert_eq!(
            run(&keys, json!({}), request).await.0,
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
    }
}

#[tokio::test]
async fn query_string_strategy() {
    let keys = ApiKeys::try_from_config(&json!({
        "strategy": "query_string",
        "keys": [{"key": "s3cret", "roles": ["a"]}]
    }))
    .unwrap();
    let request = Request::builder()
        .uri("/chat?model=x&key=s3cret&stream=true")
        .body(Body::empty())
        .unwrap();
    let (status, seen) = run(&keys, json!({"roles": ["a"]}), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap()[0].uri(), "/chat?model=x&stream=true");
    let request = Request::builder()
        .uri("/chat?key=wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        run(&keys, json!({}), request).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A header does not count under the query string strategy.
    let request = with_header("authorization", "s3cret");
    assert_eq!(
        run(&keys, json!({}), request).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn endpoint_overrides() {
    let keys = ApiKeys::try_from_config(&json!({"keys": [{"key": "k", "roles": ["a"]}]})).unwrap();
    let endpoint = json!({"roles": ["a"], "strategy": "query_string", "identifier": "api_key"});
    let request = Request::builder()
        .uri("/x?api_key=k")
        .body(Body::empty())
        .unwrap();
    assert_eq!(run(&keys, endpoint, request).await.0, StatusCode::OK);
    let endpoint = json!({"identifier": "X-Key"});
    let (status, seen) = run(&keys, endpoint, with_header("x-key", "k")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen.lock().unwrap()[0].headers().get("x-key").is_none());
}

#[test]
fn config_errors() {
    let err = ApiKeys::try_from_config(&json!({"keys": [{"key": "a"}, {"key": "a"}]})).unwrap_err();
    assert_eq!(err.path, "keys[1].key");
    let err = ApiKeys::try_from_config(&json!({"keys": [], "hash": "md5"})).unwrap_err();
    assert_eq!(err.path, "hash");
    let err =
        ApiKeys::try_from_config(&json!({"keys": [{"key": "zz"}], "hash": "sha256"})).unwrap_err();
    assert_eq!(err.path, "keys[0].key");
    let err =
        ApiKeys::try_from_config(&json!({"keys": [{"key": "a", "role": ["x"]}]})).unwrap_err();
    assert!(err.path.starts_with("keys[0]"));
    let keys = ApiKeys::try_from_config(&json!({"keys": []})).unwrap();
    let err = keys.layer(&json!({"roles": "admin"})).unwrap_err();
    assert_eq!(err.path, "roles");
    let err = keys
        .layer(&json!({"identifier": "bad header"}))
        .unwrap_err();
    assert_eq!(err.path, "identifier");
}

#[test]
fn debug_never_shows_keys() {
    let keys = ApiKeys::try_from_config(&json!({
        "salt": "pepper", "keys": [{"key": "super-secret-key", "roles": ["a"]}]
    }))
    .unwrap();
    let text = format!("{keys:?} {:?}", keys.layer(&json!({})).unwrap());
    assert!(!text.contains("super-secret-key"));
    assert!(!text.contains("pepper"));
}
