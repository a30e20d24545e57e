//! Identity end to end: JWT claim routing, a hostile-token matrix, and
//! path-based routing behind API keys. Nothing may reach a vendor on a
//! rejection.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const DEMO_SECRET: &[u8] = b"switchboard-demo-secret-change-me-0123456789";

fn demo_token(model: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("demo-hs256".to_owned());
    let claims = json!({
        "sub": "user-1",
        "aud": "switchboard",
        "iss": "https://idp.example.com/",
        "exp": now() + 600,
        "preferred_ai_model": model,
    });
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(DEMO_SECRET)).unwrap()
}

async fn vendors() -> (MockUpstream, MockUpstream) {
    (
        MockUpstream::json(json!({"vendor": "openai"})).await,
        MockUpstream::json(json!({"vendor": "gemini"})).await,
    )
}

fn jwt_routing_config(openai: &MockUpstream, gemini: &MockUpstream) -> Value {
    let text = std::fs::read_to_string(repo("examples/configs/jwt-routing.json")).unwrap();
    serde_json::from_str(
        &text
            .replace("https://api.openai.com", &openai.url())
            .replace("https://generativelanguage.googleapis.com", &gemini.url())
            .replace("localhost:8080", "GATEWAY"),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_claim_routing_reaches_the_vendor_the_identity_provider_chose() {
    let (openai, gemini) = vendors().await;
    let gateway = Gateway::start_in(
        jwt_routing_config(&openai, &gemini),
        &repo("examples/configs"),
    )
    .await;
    let http = client();

    let response = http
        .post(gateway.url("/multi-llm"))
        .bearer_auth(demo_token("gemini"))
        .header("Content-Type", "application/json")
        .body(r#"{"content":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["vendor"], "gemini");
    let seen = gemini.requests().pop().unwrap();
    assert_eq!(seen.path(), "/v1beta/models/gemini-pro:generateContent");
    assert_eq!(
        seen.json(),
        json!({"contents": [{"parts": [{"text": "hello"}]}]})
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "the token stays at the gateway"
    );

    let response = http
        .post(gateway.url("/multi-llm"))
        .bearer_auth(demo_token("openai"))
        .body(r#"{"content":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["vendor"], "openai");
    let seen = openai.requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer YOUR_OPENI_API_KEY");

    // A model outside the jwt policy, or a claim built to escape the path.
    for (model, status) in [
        ("cohere", StatusCode::UNAUTHORIZED),
        ("../__echo/x", StatusCode::UNAUTHORIZED),
    ] {
        let response = http
            .post(gateway.url("/multi-llm"))
            .bearer_auth(demo_token(model))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{model}");
    }
    // The inner endpoints validate the token too: calling them directly
    // without one gets nowhere.
    for path in ["/_llm/openai", "/_llm/gemini"] {
        let response = http
            .post(gateway.url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(openai.count(), 1);
    assert_eq!(gemini.count(), 1);
}

#[tokio::test]
async fn a_claim_that_tries_to_leave_the_path_reaches_nothing_even_without_a_policy() {
    let (openai, gemini) = vendors().await;
    let mut config = jwt_routing_config(&openai, &gemini);
    config["endpoints"][0]["extra_config"]
        .as_object_mut()
        .unwrap()
        .remove("security/policies");
    let gateway = Gateway::start_in(config, &repo("examples/configs")).await;
    for model in ["../__echo/x", "..", "openai/../gemini", "openai?x=1"] {
        let response = client()
            .post(gateway.url("/multi-llm"))
            .bearer_auth(demo_token(model))
            .body("{}")
            .send()
            .await
            .unwrap();
        // A 400 for a refused value; a value that names no inner endpoint
        // fails the outer one (the inner 404 is a failed backend: 500).
        assert!(
            matches!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_REQUEST
            ),
            "{model}: {}",
            response.status()
        );
    }
    assert_eq!(openai.count() + gemini.count(), 0);
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rs256(kid: &str, claims: &Value) -> String {
    let key = std::fs::read(repo("crates/jwt-claims/tests/fixtures/rsa_private.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&key).unwrap()).unwrap()
}

fn good_claims() -> Value {
    json!({
        "sub": "user-1",
        "aud": "gateway",
        "iss": "https://idp.example.com/",
        "exp": now() + 600,
        "preferred_ai_model": "openai",
    })
}

#[tokio::test]
async fn hostile_tokens_never_reach_a_vendor() {
    let openai = MockUpstream::json(json!({"vendor": "openai"})).await;
    let gateway = Gateway::start_in(
        json!({
            "version": 3,
            "host": ["GATEWAY"],
            "endpoints": [
                {
                    "endpoint": "/chat",
                    "method": "POST",
                    "extra_config": {"auth/validator": {
                        "alg": "RS256",
                        "jwk_local_path": "rsa_jwks.json",
                        "audience": ["gateway"],
                        "issuer": "https://idp.example.com/"
                    }},
                    "backend": [{"url_pattern": "/_llm/{jwt.preferred_ai_model}"}]
                },
                {
                    "endpoint": "/_llm/openai",
                    "method": "POST",
                    "backend": [{"host": [openai.url()], "url_pattern": "/v1/chat/completions"}]
                }
            ]
        }),
        &repo("crates/jwt-claims/tests/fixtures"),
    )
    .await;
    let http = client();
    let send = |token: String| {
        let http = http.clone();
        let url = gateway.url("/chat");
        async move {
            http.post(url)
                .header("Authorization", format!("Bearer {token}"))
                .body("{}")
                .send()
                .await
                .unwrap()
        }
    };

    // The valid token passes: the matrix below differs from it in one way each.
    let response = send(rs256("rsa-1", &good_claims())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(openai.count(), 1);

    let public_pem =
        std::fs::read(repo("crates/jwt-claims/tests/fixtures/rsa_public.pem")).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".to_owned());
    let alg_confusion = jsonwebtoken::encode(
        &hs_header,
        &good_claims(),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let payload = b64(good_claims().to_string().as_bytes());
    let alg_none = format!(
        "{}.{payload}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#)
    );
    let valid = rs256("rsa-1", &good_claims());
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut tampered_claims = good_claims();
    tampered_claims["preferred_ai_model"] = json!("gemini");
    let wrong_signature = format!(
        "{head}.{}.{signature}",
        b64(tampered_claims.to_string().as_bytes())
    );
    let other_key =
        std::fs::read(repo("crates/jwt-claims/tests/fixtures/rsa2_private.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    let signed_by_other_key = jsonwebtoken::encode(
        &header,
        &good_claims(),
        &EncodingKey::from_rsa_pem(&other_key).unwrap(),
    )
    .unwrap();
    let mut jku_header = Header::new(Algorithm::RS256);
    jku_header.kid = Some("attacker".to_owned());
    jku_header.jku = Some("https://attacker.example/jwks.json".to_owned());
    let jku = jsonwebtoken::encode(
        &jku_header,
        &good_claims(),
        &EncodingKey::from_rsa_pem(&other_key).unwrap(),
    )
    .unwrap();
    let mut escaping = good_claims();
    escaping["preferred_ai_model"] = json!("../__echo/x");

    let mut expired = good_claims();
    expired["exp"] = json!(now() - 120);
    let mut not_yet = good_claims();
    not_yet["nbf"] = json!(now() + 600);
    let mut wrong_aud = good_claims();
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = good_claims();
    wrong_iss["iss"] = json!("https://evil.example.com/");
    let mut no_exp = good_claims();
    no_exp.as_object_mut().unwrap().remove("exp");

    let unauthorized = StatusCode::UNAUTHORIZED;
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("alg none", alg_none, unauthorized),
        (
            "HS256 signed with the RSA public key",
            alg_confusion,
            unauthorized,
        ),
        ("wrong signature", wrong_signature, unauthorized),
        ("signed by another key", signed_by_other_key, unauthorized),
        ("expired", rs256("rsa-1", &expired), unauthorized),
        ("not yet valid", rs256("rsa-1", &not_yet), unauthorized),
        ("no exp", rs256("rsa-1", &no_exp), unauthorized),
        ("wrong audience", rs256("rsa-1", &wrong_aud), unauthorized),
        ("wrong issuer", rs256("rsa-1", &wrong_iss), unauthorized),
        (
            "unknown kid",
            rs256("rsa-404", &good_claims()),
            unauthorized,
        ),
        (
            "kid with path characters",
            rs256("../../../etc/passwd", &good_claims()),
            unauthorized,
        ),
        ("jku pointing elsewhere", jku, unauthorized),
        (
            "100 KB token",
            format!("{}.{}.{}", head, "A".repeat(100 * 1024), signature),
            unauthorized,
        ),
        (
            "malformed base64",
            "e30.!!!not-base64!!!.sig".to_owned(),
            unauthorized,
        ),
        ("not a JWT", "hello".to_owned(), unauthorized),
        (
            "claim value ../__echo/x",
            rs256("rsa-1", &escaping),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (case, token, expected) in cases {
        let response = send(token).await;
        assert_eq!(response.status(), expected, "{case}");
        if expected == unauthorized {
            // As KrakenD: a rejected token answers with an empty body.
            assert_eq!(response.headers()["x-should-retry"], "false", "{case}");
            assert!(response.headers().get("content-type").is_none(), "{case}");
            assert_eq!(response.text().await.unwrap(), "", "{case}");
        } else {
            // The inner endpoint the claim names does not exist.
            assert_eq!(response.headers()["x-krakend-completed"], "false");
        }
    }
    let response = http
        .post(gateway.url("/chat"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no token");
    assert_eq!(openai.count(), 1, "no hostile token reached the vendor");
}

fn api_keys_config(openai: &MockUpstream, mistral: &MockUpstream) -> Value {
    let text = std::fs::read_to_string(repo("examples/configs/api-keys.json")).unwrap();
    serde_json::from_str(
        &text
            .replace("https://api.openai.com", &openai.url())
            .replace("https://api.mistral.ai", &mistral.url()),
    )
    .unwrap()
}

#[tokio::test]
async fn path_based_routing_behind_api_keys() {
    let openai = MockUpstream::json(json!({"vendor": "openai"})).await;
    let mistral = MockUpstream::json(json!({"vendor": "mistral"})).await;
    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-openai-vendor".to_owned()),
        "MISTRAL_API_KEY" => Some("sk-mistral-vendor".to_owned()),
        _ => None,
    };
    let gateway = Gateway::try_start_with_env(
        api_keys_config(&openai, &mistral),
        &repo("examples/configs"),
        &env,
    )
    .await
    .unwrap();
    let http = client();
    let call = |path: &str, key: Option<&str>| {
        let mut request = http
            .post(gateway.url(path))
            .header("Content-Type", "application/json")
            .body(r#"{"content":"hi"}"#);
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        request.send()
    };

    let response = call("/llm/openai", Some("sk-team-a-demo-key"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["vendor"], "openai");
    let seen = openai.requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-openai-vendor");
    assert!(!String::from_utf8_lossy(&seen.body).contains("sk-team-a"));
    assert_eq!(
        seen.json(),
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    );

    let response = call("/llm/mistral", Some("sk-team-b-demo-key"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = mistral.requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-mistral-vendor");
    assert_eq!(seen.json()["model"], "mistral-medium");

    for (path, key, status) in [
        (
            "/llm/openai",
            Some("sk-team-b-demo-key"),
            StatusCode::FORBIDDEN,
        ),
        ("/llm/openai", Some("sk-wrong"), StatusCode::UNAUTHORIZED),
        ("/llm/openai", None, StatusCode::UNAUTHORIZED),
        ("/llm/mistral", Some(""), StatusCode::UNAUTHORIZED),
    ] {
        let response = call(path, key).await.unwrap();
        assert_eq!(response.status(), status, "{path} {key:?}");
        assert_eq!(response.headers()["x-should-retry"], "false");
    }
    assert_eq!(openai.count(), 1);
    assert_eq!(mistral.count(), 1);
    for seen in openai.requests().iter().chain(mistral.requests().iter()) {
        for (_, value) in &seen.headers {
            assert!(!value.to_str().unwrap_or_default().contains("demo-key"));
        }
    }
}
