//! The layer end to end, with an inner service that counts its calls:
//! nothing may reach it on a rejection.

// Test helpers outside `#[test]` functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_core::Body;
use switchboard_jwt_claims::ValidateJwtLayer;
use tower::{Layer, ServiceExt};

fn rsa_config() -> Value {
    json!({
        "alg": "RS256",
        "jwk_local_path": "rsa_jwks.json",
        "audience": ["gateway"],
        "issuer": "https://idp.example.com/",
        "propagate_claims": [["sub", "x-user"], ["org.tier", "x-tier"], ["roles", "x-roles"]]
    })
}

fn layer(config: Value) -> ValidateJwtLayer {
    ValidateJwtLayer::try_from_config(&config, &fixtures()).unwrap()
}

async fn run(
    layer: &ValidateJwtLayer,
    request: Request<Body>,
) -> (StatusCode, Seen, http::HeaderMap) {
    let seen = Seen::default();
    let response = layer.layer(seen.service()).oneshot(request).await.unwrap();
    (response.status(), seen, response.headers().clone())
}

async fn expect_status(layer: &ValidateJwtLayer, token: &str, status: StatusCode, case: &str) {
    let (got, seen, headers) = run(layer, bearer(token)).await;
    assert_eq!(got, status, "{case}");
    if status.is_success() {
        assert_eq!(seen.calls(), 1, "{case}");
    } else {
        assert_eq!(seen.calls(), 0, "{case}: the inner service was called");
        assert_eq!(headers["x-should-retry"], "false", "{case}");
    }
    if status == StatusCode::UNAUTHORIZED {
        let www = headers["www-authenticate"].to_str().unwrap();
        assert!(www.starts_with("Bearer"), "{case}");
    }
}

#[tokio::test]
async fn valid_rs256_token_sets_claims_and_propagates() {
    let layer = layer(rsa_config());
    let mut request = bearer(&rs256("rsa-1", &claims()));
    // Forged copies of propagated headers must not survive.
    request
        .headers_mut()
        .insert("x-user", "admin".parse().unwrap());
    request
        .headers_mut()
        .append("x-tier", "platinum".parse().unwrap());
    let (status, seen, _) = run(&layer, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.calls(), 1);
    let headers = seen.last_headers();
    assert_eq!(
        headers.get_all("x-user").iter().collect::<Vec<_>>(),
        ["user-1"]
    );
    assert_eq!(
        headers.get_all("x-tier").iter().collect::<Vec<_>>(),
        ["gold"]
    );
    assert_eq!(headers["x-roles"], "user,admin");
    let claims = seen.last_claims().expect("claims extension");
    assert_eq!(claims.get_path("org.id"), Some(&json!("acme")));
}

#[tokio::test]
async fn forged_propagated_header_is_stripped_even_without_the_claim() {
    let layer = layer(rsa_config());
    let mut body = claims();
    body.as_object_mut().unwrap().remove("org");
    let mut request = bearer(&rs256("rsa-1", &body));
    request
        .headers_mut()
        .insert("x-tier", "platinum".parse().unwrap());
    let (status, seen, _) = run(&layer, request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen.last_headers().get("x-tier").is_none());
}

#[tokio::test]
async fn valid_hs256_token_from_an_oct_jwk() {
    let layer = layer(json!({"alg": "HS256", "jwk_local_path": "hmac_jwks.json"}));
    expect_status(&layer, &hs256("hmac-1", &claims()), StatusCode::OK, "hs256").await;
    // The only key in the set serves a token without `kid`.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(HMAC_SECRET),
    )
    .unwrap();
    expect_status(&layer, &token, StatusCode::OK, "hs256 without kid").await;
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"not the secret"),
    )
    .unwrap();
    expect_status(
        &layer,
        &wrong,
        StatusCode::UNAUTHORIZED,
        "hs256 wrong secret",
    )
    .await;
}

#[tokio::test]
async fn hostile_token_matrix() {
    let layer = layer(rsa_config());
    let unauthorized = StatusCode::UNAUTHORIZED;

    // alg: none, with and without a signature part.
    let none_header = b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    let payload = b64(claims().to_string().as_bytes());
    expect_status(
        &layer,
        &format!("{none_header}.{payload}."),
        unauthorized,
        "alg none",
    )
    .await;
    expect_status(
        &layer,
        &format!("{none_header}.{payload}"),
        unauthorized,
        "alg none, 2 parts",
    )
    .await;
    let none_upper = b64(br#"{"alg":"NONE","typ":"JWT","kid":"rsa-1"}"#);
    expect_status(
        &layer,
        &format!("{none_upper}.{payload}."),
        unauthorized,
        "alg NONE",
    )
    .await;

    // Algorithm confusion: HS256 keyed with the RSA public key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = sign_with(
        header,
        &claims(),
        &EncodingKey::from_secret(&fixture("rsa_public.pem")),
    );
    expect_status(&layer, &confused, unauthorized, "alg confusion").await;

    // Another algorithm of the same family is refused too.
    let mut header = Header::new(Algorithm::RS512);
    header.kid = Some("rsa-1".into());
    let rs512 = sign_with(header, &claims(), &rsa_key());
    expect_status(
        &layer,
        &rs512,
        unauthorized,
        "RS512 where RS256 is configured",
    )
    .await;

    // Signed by a key that is not the one the kid names.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let wrong_signature = sign_with(header, &claims(), &other_rsa_key());
    expect_status(&layer, &wrong_signature, unauthorized, "wrong signature").await;

    // A flipped signature byte.
    let good = rs256("rsa-1", &claims());
    let (head, signature) = good.rsplit_once('.').unwrap();
    let mut sig = signature.as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(sig).unwrap());
    expect_status(&layer, &tampered, unauthorized, "tampered signature").await;

    // A tampered payload under a valid signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut escalated = claims();
    escalated["sub"] = json!("root");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(escalated.to_string().as_bytes()),
        parts[2]
    );
    expect_status(&layer, &forged, unauthorized, "tampered payload").await;

    let mut expired = claims();
    expired["exp"] = json!(now() - 10);
    expect_status(&layer, &rs256("rsa-1", &expired), unauthorized, "expired").await;

    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    expect_status(&layer, &rs256("rsa-1", &no_exp), unauthorized, "no exp").await;

    let mut early = claims();
    early["nbf"] = json!(now() + 300);
    expect_status(
        &layer,
        &rs256("rsa-1", &early),
        unauthorized,
        "not yet valid",
    )
    .await;

    let mut audience = claims();
    audience["aud"] = json!("someone-else");
    expect_status(
        &layer,
        &rs256("rsa-1", &audience),
        unauthorized,
        "wrong audience",
    )
    .await;
    audience.as_object_mut().unwrap().remove("aud");
    expect_status(
        &layer,
        &rs256("rsa-1", &audience),
        unauthorized,
        "no audience",
    )
    .await;

    let mut issuer = claims();
    issuer["iss"] = json!("https://evil.example.com/");
    expect_status(
        &layer,
        &rs256("rsa-1", &issuer),
        unauthorized,
        "wrong issuer",
    )
    .await;
    issuer.as_object_mut().unwrap().remove("iss");
    expect_status(&layer, &rs256("rsa-1", &issuer), unauthorized, "no issuer").await;

    expect_status(
        &layer,
        &rs256("rsa-404", &claims()),
        unauthorized,
        "unknown kid",
    )
    .await;
    expect_status(
        &layer,
        &rs256("../../etc/passwd", &claims()),
        unauthorized,
        "kid path",
    )
    .await;
    expect_status(&layer, &rs256("", &claims()), unauthorized, "empty kid").await;

    // Header-borne key locations are ignored: the configured keys decide.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.jku = Some("https://evil.example.com/jwks.json".into());
    header.x5u = Some("https://evil.example.com/cert.pem".into());
    let with_jku = sign_with(header.clone(), &claims(), &rsa_key());
    expect_status(
        &layer,
        &with_jku,
        StatusCode::OK,
        "jku ignored, valid signature",
    )
    .await;
    let attacker_jku = sign_with(header, &claims(), &other_rsa_key());
    expect_status(
        &layer,
        &attacker_jku,
        unauthorized,
        "jku with the attacker's key",
    )
    .await;

    // An embedded `jwk` (the attacker's public key) is not trusted.
    let jwks: Value = serde_json::from_slice(&fixture("rsa_jwks.json")).unwrap();
    let mut attacker_jwk = jwks["keys"][1].clone();
    attacker_jwk["kid"] = json!("rsa-1");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.jwk = Some(serde_json::from_value(attacker_jwk).unwrap());
    let embedded = sign_with(header, &claims(), &other_rsa_key());
    expect_status(&layer, &embedded, unauthorized, "embedded jwk").await;

    // `crit` names extensions nobody here understands.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.crit = Some(vec!["exp-ext".into()]);
    let crit = sign_with(header, &claims(), &rsa_key());
    expect_status(&layer, &crit, unauthorized, "crit").await;

    let mut big = claims();
    big["padding"] = json!("x".repeat(100 * 1024));
    expect_status(&layer, &rs256("rsa-1", &big), unauthorized, "100 KB token").await;

    expect_status(&layer, "not-a-jwt", unauthorized, "no dots").await;
    expect_status(&layer, "a.b.c", unauthorized, "garbage parts").await;
    expect_status(&layer, "e30=.e30=.e30=", unauthorized, "padded base64").await;
    expect_status(&layer, "!!!.@@@.###", unauthorized, "malformed base64").await;
    let claims_array = format!("{}.{}.x", parts[0], b64(b"[1,2]"));
    expect_status(&layer, &claims_array, unauthorized, "claims not an object").await;
}

#[tokio::test]
async fn missing_or_odd_authorization() {
    let layer = layer(rsa_config());
    let request = Request::builder().uri("/").body(Body::empty()).unwrap();
    let (status, seen, headers) = run(&layer, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.calls(), 0);
    assert_eq!(headers["www-authenticate"], "Bearer");

    let token = rs256("rsa-1", &claims());
    let request = Request::builder()
        .header("authorization", format!("Basic {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(run(&layer, request).await.0, StatusCode::UNAUTHORIZED);

    let request = Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(run(&layer, request).await.0, StatusCode::UNAUTHORIZED);

    let request = Request::builder()
        .header("authorization", "Bearer ")
        .body(Body::empty())
        .unwrap();
    assert_eq!(run(&layer, request).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn custom_header_and_cookie() {
    let mut config = rsa_config();
    config["auth_header_name"] = json!("X-Token");
    config["cookie_key"] = json!("session");
    let layer = layer(config);
    let token = rs256("rsa-1", &claims());
    let request = Request::builder()
        .header("x-token", &token)
        .body(Body::empty())
        .unwrap();
    assert_eq!(run(&layer, request).await.0, StatusCode::OK);
    let request = Request::builder()
        .header("cookie", format!("theme=dark; session={token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(run(&layer, request).await.0, StatusCode::OK);
    // Authorization is not the configured header here.
    assert_eq!(
        run(&layer, bearer(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn leeway_is_explicit() {
    let mut late = claims();
    late["exp"] = json!(now() - 5);
    let token = rs256("rsa-1", &late);
    expect_status(
        &layer(rsa_config()),
        &token,
        StatusCode::UNAUTHORIZED,
        "no leeway",
    )
    .await;
    let mut config = rsa_config();
    config["leeway"] = json!("1m");
    expect_status(&layer(config), &token, StatusCode::OK, "1m leeway").await;
}

#[tokio::test]
async fn every_configured_audience_is_required() {
    let mut config = rsa_config();
    config["audience"] = json!(["gateway", "billing"]);
    let layer = layer(config);
    let token = rs256("rsa-1", &claims());
    expect_status(
        &layer,
        &token,
        StatusCode::UNAUTHORIZED,
        "one of two audiences",
    )
    .await;
    let mut both = claims();
    both["aud"] = json!(["billing", "gateway", "other"]);
    expect_status(
        &layer,
        &rs256("rsa-1", &both),
        StatusCode::OK,
        "both audiences",
    )
    .await;
}

#[tokio::test]
async fn roles_and_scopes() {
    let forbidden = StatusCode::FORBIDDEN;
    let mut config = rsa_config();
    config["roles"] = json!(["admin"]);
    expect_status(
        &layer(config.clone()),
        &rs256("rsa-1", &claims()),
        StatusCode::OK,
        "role",
    )
    .await;
    config["roles"] = json!(["superuser"]);
    expect_status(
        &layer(config),
        &rs256("rsa-1", &claims()),
        forbidden,
        "missing role",
    )
    .await;

    let mut nested = claims();
    nested["realm_access"] = json!({"roles": ["ops"]});
    let mut config = rsa_config();
    config["roles"] = json!(["ops"]);
    config["roles_key"] = json!("realm_access.roles");
    expect_status(
        &layer(config.clone()),
        &rs256("rsa-1", &nested),
        forbidden,
        "nested, flag off",
    )
    .await;
    config["roles_key_is_nested"] = json!(true);
    expect_status(
        &layer(config),
        &rs256("rsa-1", &nested),
        StatusCode::OK,
        "nested role",
    )
    .await;

    let mut config = rsa_config();
    config["scopes"] = json!(["chat:read", "admin:all"]);
    expect_status(
        &layer(config.clone()),
        &rs256("rsa-1", &claims()),
        StatusCode::OK,
        "any scope",
    )
    .await;
    config["scopes_matcher"] = json!("all");
    expect_status(
        &layer(config.clone()),
        &rs256("rsa-1", &claims()),
        forbidden,
        "all scopes",
    )
    .await;
    config["scopes"] = json!(["chat:read", "chat:write"]);
    expect_status(
        &layer(config.clone()),
        &rs256("rsa-1", &claims()),
        StatusCode::OK,
        "all present",
    )
    .await;
    let mut listed = claims();
    listed["scp"] = json!(["chat:read", "chat:write"]);
    config["scopes_key"] = json!("scp");
    expect_status(
        &layer(config),
        &rs256("rsa-1", &listed),
        StatusCode::OK,
        "scope list",
    )
    .await;
}

#[tokio::test]
async fn jwks_url_loads_keys_and_caches_them() {
    let (addr, fetches) = jwks_server(fixture("rsa_jwks.json"), None).await;
    let layer = layer(json!({
        "alg": "RS256",
        "jwk_url": format!("http://{addr}/jwks"),
        "disable_jwk_security": true,
        "cache": true
    }));
    for _ in 0..20 {
        expect_status(
            &layer,
            &rs256("rsa-1", &claims()),
            StatusCode::OK,
            "remote key",
        )
        .await;
    }
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_cause_at_most_one_fetch_per_cooldown() {
    let (addr, fetches) = jwks_server(fixture("rsa_jwks.json"), None).await;
    let cooldown = Duration::from_secs(1);
    let layer = layer(json!({
        "alg": "RS256",
        "jwk_url": format!("http://{addr}/jwks"),
        "disable_jwk_security": true,
        "failed_jwk_key_cooldown": "1s"
    }));
    expect_status(
        &layer,
        &rs256("rsa-1", &claims()),
        StatusCode::OK,
        "warm up",
    )
    .await;
    let count = || fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(count(), 1);
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;

    // Tokens are signed once; each request names a different random kid.
    let base = rs256("rsa-1", &claims());
    let rest = std::sync::Arc::new(base.split_once('.').unwrap().1.to_owned());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let seen = Seen::default();
    let service = layer.layer(seen.service());
    for i in 0..10_000u64 {
        let kid = format!("kid-{:x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let header = b64(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
        let service = service.clone();
        let rest = rest.clone();
        tasks.spawn(async move {
            service
                .oneshot(bearer(&format!("{header}.{rest}")))
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let elapsed = started.elapsed();
    assert_eq!(seen.calls(), 0);
    let refreshes = count() - 1;
    let allowed = (elapsed.as_secs_f64() / cooldown.as_secs_f64()).floor() as usize + 1;
    assert!(
        refreshes >= 1,
        "an unknown kid after the cooldown refreshes the set"
    );
    assert!(
        refreshes <= allowed,
        "{refreshes} downloads in {elapsed:?} with a {cooldown:?} cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_jwks_server_does_not_stall_cached_keys() {
    // The first download answers; every later one hangs forever.
    let (addr, fetches) = jwks_server(fixture("rsa_jwks.json"), Some(1)).await;
    let layer = layer(json!({
        "alg": "RS256",
        "jwk_url": format!("http://{addr}/jwks"),
        "disable_jwk_security": true,
        "cache": true,
        "cache_duration": 1,
        "failed_jwk_key_cooldown": "1s"
    }));
    expect_status(
        &layer,
        &rs256("rsa-1", &claims()),
        StatusCode::OK,
        "warm up",
    )
    .await;
    // The set is now stale: the next request starts a refresh that hangs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = rs256("rsa-1", &claims());
    let started = Instant::now();
    for _ in 0..200 {
        let one = Instant::now();
        expect_status(&layer, &token, StatusCode::OK, "cached key").await;
        assert!(
            one.elapsed() < Duration::from_millis(500),
            "a request waited on the JWKS server"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one hanging refresh"
    );
}

#[tokio::test]
async fn unreachable_jwks_fails_closed_and_fast() {
    // Bind then drop a listener: nothing answers on that port.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let layer = layer(json!({
        "alg": "RS256",
        "jwk_url": format!("http://{addr}/jwks"),
        "disable_jwk_security": true
    }));
    let started = Instant::now();
    for _ in 0..50 {
        expect_status(
            &layer,
            &rs256("rsa-1", &claims()),
            StatusCode::UNAUTHORIZED,
            "no keys",
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn config_errors_name_the_field() {
    let err = ValidateJwtLayer::try_from_config(
        &json!({"alg": "RS256", "jwk_local_path": "missing.json"}),
        &fixtures(),
    )
    .unwrap_err();
    assert_eq!(err.path, "jwk_local_path");
    // A set without keys for the algorithm is refused at load.
    let err = ValidateJwtLayer::try_from_config(
        &json!({"alg": "RS256", "jwk_local_path": "hmac_jwks.json"}),
        &fixtures(),
    )
    .unwrap_err();
    assert_eq!(err.path, "jwk_local_path");
}

#[test]
fn building_outside_a_runtime_does_not_block() {
    let started = Instant::now();
    let layer = ValidateJwtLayer::try_from_config(
        &json!({"alg": "RS256", "jwk_url": "https://192.0.2.1/jwks.json"}),
        &fixtures(),
    );
    assert!(layer.is_ok());
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// The layer reads only the request head: behind it may sit a service with
/// other body types (a hyper service answering `Full<Bytes>` to
/// `Request<String>`), and its refusals come back in that body type.
#[tokio::test]
async fn any_request_and_response_body() {
    use http_body_util::{BodyExt, Full};

    let layer = layer(rsa_config());
    let inner = tower::service_fn(|request: Request<String>| async move {
        let tier = request.headers()["x-tier"].to_str().unwrap().to_owned();
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
            format!("{tier}:{}", request.body()),
        ))))
    });
    let service = layer.layer(inner);

    let token = rs256("rsa-1", &claims());
    let request = Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body("prompt".to_owned())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"gold:prompt");

    let request = Request::builder()
        .header("authorization", "Bearer not-a-token")
        .body(String::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert!(json["error"]["message"].is_string(), "{json}");
}
