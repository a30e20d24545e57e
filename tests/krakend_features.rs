//! End-to-end tests of KrakenD features over loopback: backend `timeout`,
//! `proxy` (`static`, `flatmap_filter`, `shadow`, `sequential`), the XML,
//! RSS, safejson and string encodings, `negotiate`, `backend/http`,
//! `security/cors`, `security/bot-detector`, JWT claims named by URL and
//! the `modifier/lua-*` scripts.
//! Every mock backend records what it received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use switchboard_core::Body;
use switchboard_e2e::{Gateway, MockUpstream, client, eventually, json_response};

fn text_response(status: StatusCode, content_type: &str, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn config(endpoints: Value) -> Value {
    json!({"version": 3, "timeout": "10s", "endpoints": endpoints})
}

const USER_XML: &str = "<?xml version=\"1.0\"?>\n<user type=\"admin\"><name>Elliot</name>\
    <social><facebook>https://facebook.com</facebook><twitter>https://twitter.com</twitter>\
    </social></user>";

async fn xml_backend() -> MockUpstream {
    MockUpstream::start(|_| async { text_response(StatusCode::OK, "application/xml", USER_XML) })
        .await
}

#[tokio::test]
async fn backend_timeout_drops_that_backend_and_marks_the_answer_incomplete() {
    let fast = MockUpstream::json(json!({"fast": true})).await;
    // Never answers: only its own timeout can end the call.
    let (_keep, parked) = tokio::sync::watch::channel(());
    let slow = MockUpstream::start(move |_| {
        let mut parked = parked.clone();
        async move {
            let _ = parked.changed().await;
            json_response(StatusCode::OK, &json!({"slow": true}))
        }
    })
    .await;
    let gateway = Gateway::start(config(json!([{
        "endpoint": "/t",
        "backend": [
            {"host": [fast.url()], "url_pattern": "/fast", "group": "first"},
            {"host": [slow.url()], "url_pattern": "/slow", "group": "second", "timeout": "200ms"}
        ]
    }])))
    .await;
    let response = client().get(gateway.url("/t")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"first": {"fast": true}})
    );
    assert_eq!((fast.count(), slow.count()), (1, 1));
}

#[tokio::test]
async fn backend_timeout_is_validated_at_load() {
    let errors = Gateway::try_start_in(
        config(json!([{"endpoint": "/t", "backend": [
            {"host": ["http://127.0.0.1:9"], "url_pattern": "/", "timeout": "soon"}
        ]}])),
        std::path::Path::new("."),
    )
    .await
    .err()
    .unwrap();
    assert!(
        errors[0].starts_with("$.endpoints[0].backend[0].timeout"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn static_data_by_strategy() {
    let up = MockUpstream::json(json!({"live": 1, "foo": 0})).await;
    let down = MockUpstream::start(|_| async {
        json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"e": 1}))
    })
    .await;
    let gateway = Gateway::start(config(json!([
        {"endpoint": "/always", "backend": [{"host": [up.url()], "url_pattern": "/a"}],
         "extra_config": {"proxy": {"static": {"strategy": "always", "data": {"foo": 42, "bar": "foobar"}}}}},
        {"endpoint": "/errored-ok", "backend": [{"host": [up.url()], "url_pattern": "/a"}],
         "extra_config": {"proxy": {"static": {"strategy": "errored", "data": {"fallback": true}}}}},
        {"endpoint": "/errored-down", "backend": [
            {"host": [down.url()], "url_pattern": "/x"},
            {"host": [down.url()], "url_pattern": "/y"}],
         "extra_config": {"proxy": {"static": {"strategy": "errored", "data": {"fallback": true}}}}},
        {"endpoint": "/incomplete", "backend": [
            {"host": [up.url()], "url_pattern": "/a"},
            {"host": [down.url()], "url_pattern": "/x"}],
         "extra_config": {"proxy": {"static": {"strategy": "incomplete", "data": {"partial": true}}}}},
        {"endpoint": "/complete", "backend": [
            {"host": [up.url()], "url_pattern": "/a"},
            {"host": [down.url()], "url_pattern": "/x"}],
         "extra_config": {"proxy": {"static": {"strategy": "complete", "data": {"never": true}}}}}
    ])))
    .await;
    let http = client();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = gateway.url(path);
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status();
            let completed = response.headers()["x-krakend-completed"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, completed, response.json::<Value>().await.unwrap())
        }
    };
    // Static data overrides the backend's keys.
    assert_eq!(
        get("/always").await,
        (
            StatusCode::OK,
            "true".to_owned(),
            json!({"live": 1, "foo": 42, "bar": "foobar"})
        )
    );
    assert_eq!(
        get("/errored-ok").await,
        (
            StatusCode::OK,
            "true".to_owned(),
            json!({"live": 1, "foo": 0})
        )
    );
    assert_eq!(
        get("/errored-down").await,
        (
            StatusCode::OK,
            "false".to_owned(),
            json!({"fallback": true})
        )
    );
    assert_eq!(
        get("/incomplete").await,
        (
            StatusCode::OK,
            "false".to_owned(),
            json!({"live": 1, "foo": 0, "partial": true})
        )
    );
    assert_eq!(
        get("/complete").await,
        (
            StatusCode::OK,
            "false".to_owned(),
            json!({"live": 1, "foo": 0})
        )
    );
    assert_eq!(down.count(), 4);
}

#[tokio::test]
async fn flatmap_filter_on_a_backend_and_on_the_endpoint() {
    let items: Vec<Value> = (0..3).map(|i| json!({"i": i, "path": "/c"})).collect();
    let collection = MockUpstream::json(Value::Array(items)).await;
    let gateway = Gateway::start(config(json!([
        {"endpoint": "/flat", "backend": [{
            "host": [collection.url()], "url_pattern": "/collection", "is_collection": true,
            // Ignored once a flatmap filter is set, as in KrakenD.
            "deny": ["paths"],
            "extra_config": {"proxy": {"flatmap_filter": [
                {"type": "move", "args": ["collection", "paths"]},
                {"type": "del", "args": ["paths.*.i"]},
                {"type": "move", "args": ["paths.*.path", "paths.*.url"]}
            ]}}
        }]},
        {"endpoint": "/merged", "backend": [
            {"host": [collection.url()], "url_pattern": "/collection", "is_collection": true, "group": "a"},
            {"host": [collection.url()], "url_pattern": "/collection", "is_collection": true, "group": "b"}
        ], "extra_config": {"proxy": {"flatmap_filter": [
            {"type": "append", "args": ["b.collection", "a.collection"]},
            {"type": "del", "args": ["b"]}
        ]}}}
    ])))
    .await;
    let body: Value = client()
        .get(gateway.url("/flat"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"paths": [{"url": "/c"}, {"url": "/c"}, {"url": "/c"}]})
    );
    let body: Value = client()
        .get(gateway.url("/merged"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["a"]["collection"].as_array().unwrap().len(), 6);
    assert!(body.get("b").is_none(), "{body}");
    assert_eq!(collection.count(), 3);
}

#[tokio::test]
async fn flatmap_filter_errors_have_json_paths() {
    let errors = Gateway::try_start_in(
        config(json!([{"endpoint": "/f", "backend": [{
            "host": ["http://127.0.0.1:9"], "url_pattern": "/",
            "extra_config": {"proxy": {"flatmap_filter": [{"type": "copy", "args": ["a", "b"]}]}}
        }]}])),
        std::path::Path::new("."),
    )
    .await
    .err()
    .unwrap();
    assert!(
        errors[0]
            .starts_with("$.endpoints[0].backend[0].extra_config.proxy.flatmap_filter[0].type"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn shadow_backend_gets_a_copy_and_never_answers() {
    let main = MockUpstream::json(json!({"main": true})).await;
    let shadow = MockUpstream::json(json!({"shadow": true})).await;
    let gateway = Gateway::start(config(json!([{
        "endpoint": "/s", "method": "POST",
        "backend": [
            {"host": [main.url()], "url_pattern": "/main"},
            {"host": [shadow.url()], "url_pattern": "/mirror",
             "extra_config": {"proxy": {"shadow": true}}}
        ]
    }])))
    .await;
    let response = client()
        .post(gateway.url("/s"))
        .json(&json!({"q": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"main": true})
    );
    assert!(eventually(Duration::from_secs(10), || shadow.count() == 1).await);
    let mirrored = &shadow.requests()[0];
    assert_eq!(mirrored.path(), "/mirror");
    assert_eq!(mirrored.json(), json!({"q": 1}));
    assert_eq!(main.requests()[0].json(), json!({"q": 1}));
}

#[tokio::test]
async fn sequential_placeholders_propagation_and_incomplete_chains() {
    let backend = MockUpstream::start(|request| async move {
        match request.path() {
            "/first" => json_response(StatusCode::OK, &json!({"foo": 42, "other": "x"})),
            "/second/42" => json_response(StatusCode::OK, &json!({"second": "ok"})),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "no"})),
        }
    })
    .await;
    let host = backend.url();
    let gateway = Gateway::start(config(json!([
        {"endpoint": "/ok", "extra_config": {"proxy": {"sequential": true}}, "backend": [
            {"host": [host], "url_pattern": "/first", "allow": ["foo"]},
            {"host": [host], "url_pattern": "/second/{resp0_foo}"}
        ]},
        {"endpoint": "/grouped", "extra_config": {"proxy": {
            "sequential": true, "sequential_propagated_params": ["resp0_first.foo"]}}, "backend": [
            {"host": [host], "url_pattern": "/first", "group": "first", "allow": ["foo"]},
            {"host": [host], "url_pattern": "/second/{resp0_first.foo}", "group": "second"}
        ]},
        {"endpoint": "/incomplete", "extra_config": {"proxy": {"sequential": true}}, "backend": [
            {"host": [host], "url_pattern": "/first", "allow": ["foo"]},
            {"host": [host], "url_pattern": "/missing/{resp0_foo}"}
        ]}
    ])))
    .await;
    let get = |path: &'static str| {
        let url = gateway.url(path);
        async move {
            let response = client().get(url).send().await.unwrap();
            let completed = response.headers()["x-krakend-completed"]
                .to_str()
                .unwrap()
                .to_owned();
            (
                response.status(),
                completed,
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    assert_eq!(
        get("/ok").await,
        (
            StatusCode::OK,
            "true".to_owned(),
            json!({"foo": 42, "second": "ok"})
        )
    );
    assert_eq!(
        get("/grouped").await,
        (
            StatusCode::OK,
            "true".to_owned(),
            json!({"first": {"foo": 42}, "second": {"second": "ok"}})
        )
    );
    assert_eq!(
        get("/incomplete").await,
        (StatusCode::OK, "false".to_owned(), json!({"foo": 42}))
    );
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert!(paths.contains(&"/missing/42".to_owned()), "{paths:?}");
    assert_eq!(paths.iter().filter(|p| *p == "/second/42").count(), 2);
}

#[tokio::test]
async fn xml_and_negotiated_encodings() {
    let xml = xml_backend().await;
    let json_backend =
        MockUpstream::json(json!({"foo": 42, "list": ["a", "b"], "query": {}})).await;
    let text = MockUpstream::start(|_| async {
        text_response(StatusCode::OK, "text/plain", "hello <world>")
    })
    .await;
    let gateway = Gateway::start(config(json!([
        {"endpoint": "/xml/xml", "output_encoding": "xml",
         "backend": [{"host": [xml.url()], "url_pattern": "/xml", "encoding": "xml"}]},
        {"endpoint": "/xml/json", "output_encoding": "xml",
         "backend": [{"host": [json_backend.url()], "url_pattern": "/json"}]},
        {"endpoint": "/negotiate", "output_encoding": "negotiate",
         "backend": [{"host": [xml.url()], "url_pattern": "/xml", "encoding": "xml"}]},
        {"endpoint": "/string", "output_encoding": "string",
         "backend": [{"host": [text.url()], "url_pattern": "/t", "encoding": "string"}]}
    ])))
    .await;
    let http = client();
    let response = http.get(gateway.url("/xml/xml")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/xml");
    assert_eq!(
        response.text().await.unwrap(),
        "<user type=\"admin\"><name>Elliot</name><social><facebook>https://facebook.com\
         </facebook><twitter>https://twitter.com</twitter></social></user>"
    );
    let response = http.get(gateway.url("/xml/json")).send().await.unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "<doc><foo>42</foo><list>a</list><list>b</list><query/></doc>"
    );

    let negotiate = |accept: &'static str| {
        let http = http.clone();
        let url = gateway.url("/negotiate");
        async move {
            let response = http.get(url).header("accept", accept).send().await.unwrap();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (content_type, response.text().await.unwrap())
        }
    };
    let (content_type, body) = negotiate("application/json; charset=utf-8").await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"user": {"-type": "admin", "name": "Elliot", "social": {
            "facebook": "https://facebook.com", "twitter": "https://twitter.com"}}})
    );
    let (content_type, body) = negotiate("text/plain").await;
    assert_eq!(content_type, "application/yaml; charset=utf-8");
    assert_eq!(
        body,
        "user:\n  -type: admin\n  name: Elliot\n  social:\n    facebook: https://facebook.com\n    \
         twitter: https://twitter.com\n"
    );
    let (content_type, body) = negotiate("application/xml").await;
    assert_eq!(content_type, "application/xml");
    assert!(body.starts_with("<user type=\"admin\">"), "{body}");

    let response = http.get(gateway.url("/string")).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap(), "hello <world>");
    assert_eq!(xml.count(), 4);
}

#[tokio::test]
async fn rss_and_safejson_backends_are_read() {
    let feed = MockUpstream::start(|_| async {
        text_response(
            StatusCode::OK,
            "application/rss+xml",
            "<rss version=\"2.0\"><channel><title>Shows</title>\
             <item><title>one</title></item><item><title>two</title></item></channel></rss>",
        )
    })
    .await;
    let array = MockUpstream::json(json!([1, 2])).await;
    let gateway = Gateway::start(config(json!([
        {"endpoint": "/rss", "backend": [{"host": [feed.url()], "url_pattern": "/feed.rss",
            "encoding": "rss", "group": "schedule", "allow": ["title", "items"]}]},
        {"endpoint": "/safe", "backend": [{"host": [array.url()], "url_pattern": "/a",
            "encoding": "safejson"}]}
    ])))
    .await;
    let body: Value = client()
        .get(gateway.url("/rss"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"schedule": {"title": "Shows", "items": [{"title": "one"}, {"title": "two"}]}})
    );
    let body: Value = client()
        .get(gateway.url("/safe"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"collection": [1, 2]}));
}

#[tokio::test]
async fn backend_http_error_details_and_codes() {
    let ok = MockUpstream::json(json!({"foo": 42})).await;
    let missing = MockUpstream::start(|_| async {
        text_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n",
        )
    })
    .await;
    let gateway = Gateway::start(config(json!([
        {"endpoint": "/detail_error", "backend": [
            {"host": [ok.url()], "url_pattern": "/a",
             "extra_config": {"backend/http": {"return_error_details": "backend_a"}}},
            {"host": [missing.url()], "url_pattern": "/",
             "extra_config": {"backend/http": {"return_error_details": "backend_b"}}}
        ]},
        {"endpoint": "/code", "backend": [
            {"host": [missing.url()], "url_pattern": "/",
             "extra_config": {"backend/http": {"return_error_code": true}}}
        ]}
    ])))
    .await;
    let response = client()
        .get(gateway.url("/detail_error"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"foo": 42, "error_backend_b": {
            "http_status_code": 404,
            "http_body": "404 page not found\n",
            "http_body_encoding": "text/plain; charset=utf-8"
        }})
    );
    let response = client().get(gateway.url("/code")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await.unwrap(), "404 page not found\n");
    assert_eq!(missing.count(), 2);
}

#[tokio::test]
async fn cors_preflights_and_actual_requests() {
    let backend = MockUpstream::json(json!({"foo": 42})).await;
    let mut config = config(json!([{
        "endpoint": "/p", "backend": [{"host": [backend.url()], "url_pattern": "/p"}]
    }]));
    config["extra_config"] = json!({"security/cors": {
        "allow_origins": ["*"],
        "allow_methods": ["POST", "GET"],
        "allow_headers": ["Origin", "Authorization", "Content-Type"],
        "expose_headers": ["Content-Length"],
        "max_age": "12h"
    }});
    let gateway = Gateway::start(config).await;
    let http = client();
    let preflight = |method: &'static str, headers: Option<&'static str>| {
        let http = http.clone();
        let url = gateway.url("/p");
        async move {
            let mut request = http
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", "http://foo.example")
                .header("access-control-request-method", method);
            if let Some(headers) = headers {
                request = request.header("access-control-request-headers", headers);
            }
            request.send().await.unwrap()
        }
    };
    let response = preflight("GET", Some("content-type,origin")).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(response.headers()["access-control-allow-methods"], "GET");
    assert_eq!(
        response.headers()["access-control-allow-headers"],
        "content-type,origin"
    );
    assert_eq!(response.headers()["access-control-max-age"], "43200");
    for response in [
        preflight("PUT", None).await,
        preflight("POST", Some("X-PINGOTHER")).await,
    ] {
        assert_eq!(response.status(), 204);
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{:?}",
            response.headers()
        );
        assert!(
            response
                .headers()
                .get("access-control-allow-methods")
                .is_none()
        );
    }
    // Preflights never reach a backend.
    assert_eq!(backend.count(), 0);
    let response = http
        .get(gateway.url("/p"))
        .header("origin", "http://foo.example.tld")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "Content-Length"
    );
    assert_eq!(response.headers()["vary"], "Origin");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn bot_detector_refuses_bots_before_any_backend() {
    let backend = MockUpstream::json(json!({"foo": 42})).await;
    let mut config = config(json!([
        {"endpoint": "/p", "backend": [{"host": [backend.url()], "url_pattern": "/p"}]},
        {"endpoint": "/strict", "backend": [{"host": [backend.url()], "url_pattern": "/s"}],
         "extra_config": {"security/bot-detector": {"deny": ["curl/8"]}}}
    ]));
    config["extra_config"] = json!({"security/bot-detector": {
        "deny": ["a", "b"],
        "allow": ["c", "Pingdom.com_bot_version_1.1"],
        "patterns": ["(Pingdom.com_bot_version_).*", "(facebookexternalhit)/.*"]
    }});
    let gateway = Gateway::start(config).await;
    let get = |path: &'static str, agent: &'static str| {
        let url = gateway.url(path);
        async move {
            let response = client()
                .get(url)
                .header("user-agent", agent)
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    for agent in [
        "a",
        "b",
        "Pingdom.com_bot_version_1.14",
        "facebookexternalhit/1.2.3",
    ] {
        assert_eq!(
            get("/p", agent).await,
            (StatusCode::FORBIDDEN, String::new()),
            "{agent}"
        );
    }
    assert_eq!(backend.count(), 0);
    assert_eq!(
        get("/p", "Pingdom.com_bot_version_1.1").await.0,
        StatusCode::OK
    );
    assert_eq!(get("/p", "curl/8").await.0, StatusCode::OK);
    assert_eq!(get("/strict", "curl/8").await.0, StatusCode::FORBIDDEN);
    assert_eq!(get("/strict", "c").await.0, StatusCode::OK);
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn jwt_claims_named_by_url_fill_url_patterns() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let backend = MockUpstream::json(json!({"ok": true})).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.json"),
        json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c2VjcmV0"}]}).to_string(),
    )
    .unwrap();
    let gateway = Gateway::start_in(
        config(json!([{
            "endpoint": "/cel/jwt/{id}",
            "extra_config": {"auth/validator": {
                "alg": "HS256", "jwk_local_path": "keys.json", "audience": ["api"]
            }},
            "backend": [{"host": [backend.url()],
                "url_pattern": "/param_forwarding/{id}/{JWT.sub}/{JWT.http://example.com/custom}"}]
        }])),
        dir.path(),
    )
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &json!({"sub": "u1", "aud": "api", "exp": exp, "http://example.com/custom": "a b"}),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let response = client()
        .get(gateway.url("/cel/jwt/7"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(backend.requests()[0].path(), "/param_forwarding/7/u1/a%20b");
}

#[tokio::test]
async fn signer_signs_static_data_with_a_remote_jwk() {
    let jwks = MockUpstream::json(json!({"keys": [
        {"kty": "oct", "kid": "sim2", "alg": "HS256", "k": "c2VjcmV0"}
    ]}))
    .await;
    let backend = MockUpstream::json(json!({"message": "pong"})).await;
    let gateway = Gateway::start(config(json!([{
        "endpoint": "/token",
        "backend": [{"host": [backend.url()], "url_pattern": "/b", "deny": ["message"]}],
        "extra_config": {
            "proxy": {"static": {"strategy": "always", "data": {
                "access_token": {"sub": "u1", "aud": "api", "exp": 4_102_444_800_u64}}}},
            "auth/signer": {
                "alg": "HS256", "kid": "sim2", "keys_to_sign": ["access_token"],
                "jwk_url": format!("{}/jwk/symmetric", jwks.url()),
                "disable_jwk_security": true
            }
        }
    }])))
    .await;
    for _ in 0..2 {
        let response = client().get(gateway.url("/token")).send().await.unwrap();
        // As KrakenD's signer: a fresh answer, without the proxy's marks.
        assert!(response.headers().get("x-krakend-completed").is_none());
        assert!(response.headers().get("cache-control").is_none());
        assert_eq!(response.headers()["x-krakend"], switchboard::USER_AGENT);
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["api"]);
        let decoded = jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "u1");
        assert_eq!(decoded.header.kid.as_deref(), Some("sim2"));
    }
    // The key set is fetched once and kept.
    assert_eq!(jwks.count(), 1);
    assert_eq!(jwks.requests()[0].path(), "/jwk/symmetric");
}

#[tokio::test]
async fn sequential_chain_reads_a_no_op_backend_without_merging_it() {
    let first = MockUpstream::json(json!({"id": "abc"})).await;
    let second = MockUpstream::json(json!({"second": true})).await;
    let gateway = Gateway::start(config(json!([{
        "endpoint": "/chain",
        "extra_config": {"proxy": {"sequential": true}},
        "backend": [
            {"host": [first.url()], "url_pattern": "/first", "encoding": "no-op"},
            {"host": [second.url()], "url_pattern": "/items/{resp0_id}"}
        ]
    }])))
    .await;
    let body: Value = client()
        .get(gateway.url("/chain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"second": true}));
    assert_eq!(second.requests()[0].path(), "/items/abc");
}

#[tokio::test]
async fn circuit_breaker_stops_calling_a_failing_backend() {
    let down = MockUpstream::start(|_| async {
        json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "down"}))
    })
    .await;
    let gateway = Gateway::start(config(json!([{
        "endpoint": "/cb",
        "backend": [{"host": [down.url()], "url_pattern": "/x",
            "extra_config": {
                "qos/circuit-breaker": {"interval": 60, "timeout": 600, "max_errors": 2},
                "qos/http-cache": {}
            }}]
    }])))
    .await;
    for _ in 0..4 {
        let response = client().get(gateway.url("/cb")).send().await.unwrap();
        assert!(!response.status().is_success());
    }
    // Two failures open the breaker: the next calls never leave the gateway.
    assert_eq!(down.count(), 2);
}

#[tokio::test]
async fn lua_scripts_on_a_krakend_endpoint() {
    let backend = MockUpstream::json(json!({"items": [{"id": 1}, {"id": 2}]})).await;
    let endpoints = json!([
        {
            "endpoint": "/users/{id}",
            "input_headers": ["X-Root"],
            "backend": [{
                "host": [backend.url()], "url_pattern": "/users",
                "extra_config": {"modifier/lua-backend": {
                    "pre": "local r = request.load(); r:url(r:url() .. '/' .. r:params('Id')); r:headers('X-From-Lua', 'yes')"
                }}
            }],
            "extra_config": {"modifier/lua-proxy": {
                "pre": "request.load():headers('X-Proxy-Lua', 'p')",
                "post": "local d = response.load():data(); d:set('total', d:get('items'):len())"
            }}
        },
        {
            "endpoint": "/broken",
            "backend": [{
                "host": [backend.url()], "url_pattern": "/b",
                "extra_config": {"modifier/lua-backend": {"pre": "error('boom')"}}
            }]
        },
        {
            "endpoint": "/teapot",
            "backend": [{
                "host": [backend.url()], "url_pattern": "/t",
                "extra_config": {"modifier/lua-backend": {"pre": "custom_error('{\"msg\":\"tea\"}', 418)"}}
            }]
        }
    ]);
    let gateway = Gateway::start(json!({
        "version": 3,
        "extra_config": {
            "router": {"return_error_msg": true},
            "modifier/lua-endpoint": {"pre": "local c = ctx.load(); c:headers('X-Root', c:method() .. ' ' .. c:url())"}
        },
        "endpoints": endpoints
    }))
    .await;
    let response = client().get(gateway.url("/users/7")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"items": [{"id": 1}, {"id": 2}], "total": 2})
    );
    let seen = &backend.requests()[0];
    assert_eq!(seen.path(), "/users/7");
    assert_eq!(seen.headers["x-from-lua"], "yes");
    // What lua-proxy sets reaches the backend past input_headers, as in
    // KrakenD (its request is the one already filtered).
    assert_eq!(seen.headers["x-proxy-lua"], "p");
    // The root's lua-endpoint ran first, on the client's request.
    assert_eq!(seen.headers["x-root"], "GET /users/7");

    // A failing script: KrakenD's 500 with the message (return_error_msg).
    let response = client().get(gateway.url("/broken")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    let text = response.text().await.unwrap();
    assert!(text.contains("boom"), "{text}");
    assert_eq!(backend.count(), 1, "the failed script stopped the call");

    let response = client().get(gateway.url("/teapot")).send().await.unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"msg": "tea"})
    );
}

#[tokio::test]
async fn lua_mistakes_fail_at_load_with_their_json_path() {
    let errors = Gateway::try_start_in(
        config(json!([
            {"endpoint": "/a", "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}],
             "extra_config": {"modifier/lua-proxy": {"sources": ["no/such/file.lua"]}}},
            {"endpoint": "/b", "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/",
             "extra_config": {"modifier/lua-backend": {"pre": "local = 1"}}}]}
        ])),
        std::path::Path::new("."),
    )
    .await
    .err()
    .unwrap();
    assert!(
        errors.iter().any(
            |e| e.starts_with("$.endpoints[0].extra_config[\"modifier/lua-proxy\"].sources[0]")
        ),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e
            .starts_with("$.endpoints[1].backend[0].extra_config[\"modifier/lua-backend\"].pre")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn x_krakend_names_the_gateway_unless_hidden() {
    let backend = MockUpstream::json(json!({"a": 1})).await;
    for hide in [false, true] {
        let gateway = Gateway::start(json!({
            "version": 3,
            "extra_config": {"router": {"hide_version_header": hide}},
            "endpoints": [{"endpoint": "/a", "backend": [{"host": [backend.url()], "url_pattern": "/a"}]}]
        }))
        .await;
        let response = client().get(gateway.url("/a")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let header = response
            .headers()
            .get("x-krakend")
            .map(|v| v.to_str().unwrap().to_owned());
        let expected = (!hide).then(|| switchboard::USER_AGENT.to_owned());
        assert_eq!(header, expected);
    }
}

/// A config with the root's HTTP client fields and one endpoint on `mock`.
fn client_config(mock: &MockUpstream, root: Value) -> Value {
    let mut config = json!({"version": 3, "timeout": "10s", "endpoints": [
        {"endpoint": "/c", "backend": [{"host": [mock.url()], "url_pattern": "/x"}]}
    ]});
    for (key, value) in root.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

async fn get_ok(gateway: &Gateway, times: usize) {
    let http = client();
    for _ in 0..times {
        let response = http.get(gateway.url("/c")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn root_http_client_fields_shape_upstream_calls() {
    // Default: HTTP/1.1 on one kept-alive connection, gzip asked for.
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(client_config(&mock, json!({}))).await;
    get_ok(&gateway, 3).await;
    let seen = mock.requests();
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].headers["accept-encoding"], "gzip");
    assert_eq!(mock.accepted_connections(), 1);

    // use_h2c: HTTP/2 over cleartext; disable_compression: no gzip asked
    // for; disable_keep_alives: a connection per request.
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(client_config(
        &mock,
        json!({"use_h2c": true, "disable_compression": true}),
    ))
    .await;
    get_ok(&gateway, 3).await;
    let seen = mock.requests();
    assert!(
        seen.iter().all(|r| r.version == http::Version::HTTP_2),
        "{seen:?}"
    );
    assert!(!seen[0].headers.contains_key("accept-encoding"), "{seen:?}");
    assert_eq!(
        mock.accepted_connections(),
        1,
        "h2 multiplexes one connection"
    );

    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(client_config(&mock, json!({"disable_keep_alives": true}))).await;
    get_ok(&gateway, 3).await;
    assert_eq!(mock.accepted_connections(), 3);

    // The other fields load (the dialer's settings apply to every new
    // connection) and are checked.
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(client_config(
        &mock,
        json!({
            "dialer_timeout": "5s", "dialer_keep_alive": "30s", "dialer_fallback_delay": "300ms",
            "max_idle_connections": 10, "expect_continue_timeout": "1s", "dns_cache_ttl": "30s",
            "max_shutdown_wait_time": "5s", "sequential_start": true
        }),
    ))
    .await;
    get_ok(&gateway, 1).await;
    let errors = Gateway::try_start_in(
        client_config(&mock, json!({"dialer_timeout": "soon"})),
        std::path::Path::new("."),
    )
    .await
    .err()
    .unwrap();
    assert!(errors[0].starts_with("$.dialer_timeout"), "{errors:?}");
}

#[tokio::test]
async fn response_header_timeout_bounds_the_wait_for_headers() {
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&answered);
    let mock = MockUpstream::start(move |_| {
        let flag = std::sync::Arc::clone(&flag);
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            json_response(StatusCode::OK, &json!({"late": true}))
        }
    })
    .await;
    let gateway = Gateway::start(client_config(
        &mock,
        json!({"response_header_timeout": "200ms"}),
    ))
    .await;
    let response = client().get(gateway.url("/c")).send().await.unwrap();
    // The endpoint's 10 s were not waited for: the headers' bound ended
    // the call while the upstream was still working on it.
    assert!(!answered.load(std::sync::atomic::Ordering::SeqCst));
    assert!(response.status().is_server_error(), "{}", response.status());
    assert_eq!(mock.count(), 1);
}
