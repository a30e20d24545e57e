//! Regression tests for the reliability and security defects found by a
//! black-box attack on the gateway: each test reproduces one numbered
//! defect over loopback, against the real server and mock vendors.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client, json_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any single wait in these tests may take before it counts as a
/// hang (never a timing assertion: the gateway's own deadlines are 1 s).
const HANG: Duration = Duration::from_secs(15);

async fn raw(gateway: &Gateway, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_all(&mut stream).await
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match tokio::time::timeout(HANG, stream.read_to_end(&mut out)).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!(
            "the gateway kept the connection open: {}",
            String::from_utf8_lossy(&out)
        ),
    }
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn json_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {answer:?}"))
}

async fn start_err(config: Value) -> Vec<String> {
    match Gateway::try_start_in(config, Path::new(".")).await {
        Ok(_) => panic!("the config was accepted"),
        Err(errors) => errors,
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

// 1 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_01_silent_and_half_preface_connections_are_closed() {
    let gateway = Gateway::start(json!({"version": 3, "read_header_timeout": "1s"})).await;
    let mut silent = TcpStream::connect(gateway.addr).await.unwrap();
    let mut half_preface = TcpStream::connect(gateway.addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut half_head = TcpStream::connect(gateway.addr).await.unwrap();
    half_head
        .write_all(b"GET /__health HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    assert_eq!(read_all(&mut silent).await, "");
    assert_eq!(read_all(&mut half_preface).await, "");
    let answer = read_all(&mut half_head).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(json_of(&answer)["error"]["message"].is_string());
    let health = client().get(gateway.url("/__health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

// 2 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_02_a_client_that_stops_reading_is_disconnected() {
    const SIZE: usize = 20 * 1024 * 1024;
    let big = json!({"data": "x".repeat(SIZE)});
    let mock = MockUpstream::json(big).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "write_timeout": "1s",
        "endpoints": [{"endpoint": "/big", "timeout": "30s",
            "backend": [{"host": [mock.url()], "url_pattern": "/big"}]}]
    }))
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Read nothing for longer than the send deadline, counted from when
    // the upstream was asked (the gateway then buffers the answer).
    assert!(switchboard_e2e::eventually(HANG, || mock.count() == 1).await);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut received = 0usize;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(HANG, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the connection stayed open after {received} bytes"),
        }
    }
    assert!(
        received < SIZE,
        "the whole {received}-byte answer was held for a client that read nothing"
    );
}

// 3 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_03_a_trickled_body_is_cut_by_the_body_deadline() {
    let gateway = Gateway::start(json!({
        "version": 3,
        "echo_endpoint": true,
        "extra_config": {"router": {"body_timeout": "1s"}}
    }))
    .await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"POST /__echo/ HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut head))
        .await
        .expect("the trickled body was never cut")
        .unwrap();
    let answer = String::from_utf8_lossy(&head[..n]);
    assert_eq!(status_of(&answer), 408, "{answer}");
    trickle.abort();
}

// 4 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_04_echo_redacts_every_secret_and_config_value() {
    let env = |name: &str| match name {
        "GOOG" => Some("AIza-env-secret-0123".to_owned()),
        "TENANT" => Some("tenant-secret-value-1".to_owned()),
        _ => None,
    };
    let config = json!({
        "version": 3,
        "host": ["http://GATEWAY"],
        "echo_endpoint": true,
        "endpoints": [{
            "endpoint": "/chat",
            "method": "POST",
            "input_headers": ["*"],
            "backend": [{
                "url_pattern": "/__echo/v1?x-goog-api-key=AIza-pattern-secret-9",
                "extra_config": {"modifier/martian": {"fifo.Group": {
                    "scope": ["request"],
                    "modifiers": [
                        {"header.Modifier": {"scope": ["request"], "name": "X-Goog-Api-Key",
                            "value": "{{ env \"GOOG\" }}"}},
                        {"header.Modifier": {"scope": ["request"], "name": "X-Tenant",
                            "value": "{{ env \"TENANT\" }}"}}
                    ]
                }}}
            }]
        }]
    });
    let gateway = Gateway::try_start_with_env(config, Path::new("."), &env)
        .await
        .unwrap();
    let response = client()
        .post(gateway.url("/chat"))
        .header("Ocp-Apim-Subscription-Key", "azure-client-key-1")
        .header("Anthropic-Api-Key", "sk-ant-client-key-2")
        .header("X-Auth", "client-auth-value-3")
        .header("X-Llm", "openai")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for secret in [
        "AIza-env-secret-0123",
        "tenant-secret-value-1",
        "AIza-pattern-secret-9",
        "azure-client-key-1",
        "sk-ant-client-key-2",
        "client-auth-value-3",
    ] {
        assert!(!text.contains(secret), "{secret} echoed in clear: {text}");
    }
    let echoed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(echoed["req_headers"]["X-Llm"], json!(["openai"]));
    assert_eq!(
        echoed["req_headers"]["X-Goog-Api-Key"],
        json!(["[redacted]"])
    );
    // Templates use the same rule as the echo.
    for name in ["X-Goog-Api-Key", "Ocp-Apim-Subscription-Key", "X-Auth"] {
        assert!(switchboard_core::secrets::is_secret_name(name));
    }
}

// 5 ---------------------------------------------------------------------

/// A vendor that answers with both a `Content-Length` and chunked coding.
async fn chunked_with_length_vendor(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\
                     Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn defect_05_noop_passthrough_drops_a_length_sent_with_chunked_coding() {
    let body = r#"{"answer":"twenty-four"}"#;
    let vendor = chunked_with_length_vendor(body).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [{"endpoint": "/p", "output_encoding": "no-op",
            "backend": [{"host": [vendor], "url_pattern": "/p", "encoding": "no-op"}]}]
    }))
    .await;
    let response = client().get(gateway.url("/p")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(
        response
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("5".to_owned())
    );
    assert_eq!(response.text().await.unwrap(), body);
}

// 6 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_06_echo_obeys_max_payload_size() {
    let gateway = Gateway::start(json!({
        "version": 3,
        "echo_endpoint": true,
        "extra_config": {"router": {"max_payload_size": 1024}}
    }))
    .await;
    let response = client()
        .post(gateway.url("/__echo/x"))
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without a declared length as well.
    let stream = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 512]))),
    );
    let response = client()
        .post(gateway.url("/__echo/x"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let small = client()
        .post(gateway.url("/__echo/x"))
        .body(vec![b'a'; 512])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::OK);
}

// 7 ---------------------------------------------------------------------

fn cel_endpoint(expression: &str) -> Value {
    json!({
        "version": 3,
        "endpoints": [{"endpoint": "/c",
            "extra_config": {"validation/cel": [{"check_expr": expression}]},
            "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}]}]
    })
}

#[tokio::test]
async fn defect_07_bad_configs_are_errors_never_crashes() {
    for path in ["", "health", "/__echo", "/a/{x}"] {
        let errors = start_err(json!({
            "version": 3,
            "extra_config": {"router": {"health_path": path}}
        }))
        .await;
        assert!(
            errors[0].contains("$.extra_config.router.health_path"),
            "{errors:?}"
        );
    }
    let parens = "(".repeat(100_000) + "true" + &")".repeat(100_000);
    let chain_50k = vec!["1"; 50_000].join(" + ") + " > 0";
    let chain_1500 = vec!["1"; 1500].join(" + ") + " > 0";
    for expression in [parens, chain_50k, chain_1500] {
        let errors = start_err(cel_endpoint(&expression)).await;
        assert!(errors[0].contains("validation/cel"), "{errors:?}");
    }
    let nested = format!(
        "{}{{}}{}",
        "{{ if .req_body }}".repeat(2000),
        "{{ end }}".repeat(2000)
    );
    let errors = start_err(json!({
        "version": 3,
        "endpoints": [{"endpoint": "/t", "method": "POST",
            "extra_config": {"modifier/request-body-generator": {"template": b64(&nested)}},
            "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}]}]
    }))
    .await;
    assert!(errors[0].contains("nested deeper"), "{errors:?}");

    // What check accepts, a request can evaluate: the largest CEL chain
    // within the bounds runs at the first request.
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let mut config = cel_endpoint(&(vec!["1"; 250].join(" + ") + " > 0"));
    config["endpoints"][0]["backend"][0]["host"] = json!([mock.url()]);
    let gateway = Gateway::start(config).await;
    let response = client().get(gateway.url("/c")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// 8 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_08_wildcard_input_headers_send_content_type_once() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [{"endpoint": "/w", "method": "POST", "input_headers": ["*"],
            "backend": [{"host": [mock.url()], "url_pattern": "/w"}]}]
    }))
    .await;
    let response = client()
        .post(gateway.url("/w"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = mock.requests().pop().unwrap();
    let types: Vec<_> = seen.headers.get_all("content-type").iter().collect();
    assert_eq!(types.len(), 1, "{types:?}");
}

// 9 ---------------------------------------------------------------------

#[tokio::test]
async fn defect_09_duplicate_json_keys_cannot_bypass_a_body_policy() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [{"endpoint": "/m", "method": "POST",
            "extra_config": {"security/policies": {"req": {"policies": ["req_body.model == 'gpt-4o'"]}}},
            "backend": [{"host": [mock.url()], "url_pattern": "/m"}]}]
    }))
    .await;
    let http = client();
    let ok = http
        .post(gateway.url("/m"))
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let before = mock.count();
    let smuggled = http
        .post(gateway.url("/m"))
        .header("content-type", "application/json")
        .body(r#"{"model":"evil","model":"gpt-4o"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(smuggled.status(), StatusCode::BAD_REQUEST);
    let body: Value = smuggled.json().await.unwrap();
    assert_eq!(body["error"]["code"], "duplicate_json_key");
    assert_eq!(
        mock.count(),
        before,
        "the ambiguous body reached the upstream"
    );
}

// 10 --------------------------------------------------------------------

#[tokio::test]
async fn defect_10_user_info_in_a_backend_host_is_refused() {
    let errors = start_err(json!({
        "version": 3,
        "endpoints": [{"endpoint": "/u",
            "backend": [{"host": ["http://u:hunter2-secret@127.0.0.1:9"], "url_pattern": "/"}]}]
    }))
    .await;
    assert!(
        errors[0].contains("$.endpoints[0].backend[0].host[0]"),
        "{errors:?}"
    );
    assert!(errors[0].contains("user info"), "{errors:?}");
}

// 11 --------------------------------------------------------------------

#[tokio::test]
async fn defect_11_files_the_config_names_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.tmpl");
    std::fs::write(&big, vec![b' '; 5 * 1024 * 1024]).unwrap();
    for path in ["/dev/zero", big.to_str().unwrap()] {
        let errors = start_err(json!({
            "version": 3,
            "endpoints": [{"endpoint": "/t", "method": "POST",
                "extra_config": {"modifier/request-body-generator": {"path": path}},
                "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}]}]
        }))
        .await;
        assert!(
            errors[0].contains("not a regular file") || errors[0].contains("larger than"),
            "{errors:?}"
        );
    }
    let errors = start_err(json!({
        "version": 3,
        "endpoints": [{"endpoint": "/j",
            "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/dev/zero"}},
            "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}]}]
    }))
    .await;
    assert!(errors[0].contains("not a regular file"), "{errors:?}");
}

// 12 --------------------------------------------------------------------

fn many_endpoints(n: usize) -> switchboard::config::LoadedConfig {
    let endpoints: Vec<Value> = (0..n)
        .map(|i| {
            json!({"endpoint": format!("/e{i}/{{id}}"),
                "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": format!("/v/{{id}}/{i}")}]})
        })
        .collect();
    let text = json!({"version": 3, "endpoints": endpoints}).to_string();
    switchboard::config::LoadedConfig {
        root: switchboard::config::parse_str(&text, &|_| None).unwrap(),
        base_dir: ".".into(),
    }
}

fn best_load_time(config: &switchboard::config::LoadedConfig) -> Duration {
    (0..2)
        .map(|_| {
            let started = Instant::now();
            let app = switchboard::build_app(config).unwrap();
            assert_eq!(app.endpoint_count(), config.root.endpoints.len());
            started.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn defect_12_config_load_grows_linearly_with_endpoints() {
    // Quadratic growth makes four times the endpoints take sixteen times
    // as long; linear, about four. The ratio, not a duration, is checked.
    let small = many_endpoints(2_000);
    let large = many_endpoints(8_000);
    let t_small = best_load_time(&small);
    let t_large = best_load_time(&large);
    let ratio = t_large.as_secs_f64() / t_small.as_secs_f64().max(1e-6);
    assert!(
        ratio < 9.0,
        "2,000 endpoints: {t_small:?}, 8,000: {t_large:?} (x{ratio:.1})"
    );
}

// 13 --------------------------------------------------------------------

#[tokio::test]
async fn defect_13_self_calls_are_bounded_per_request_and_warned_about() {
    let mock = MockUpstream::json(json!({"leaf": true})).await;
    let mut backends: Vec<Value> = (0..4)
        .map(|_| json!({"url_pattern": "/fan", "method": "GET"}))
        .collect();
    backends.push(json!({"url_pattern": "/leaf", "method": "GET"}));
    let config = json!({
        "version": 3,
        "host": ["http://GATEWAY"],
        "endpoints": [
            {"endpoint": "/fan", "timeout": "30s", "backend": backends},
            {"endpoint": "/leaf", "backend": [{"host": [mock.url()], "url_pattern": "/x"}]}
        ]
    });
    // check warns.
    let text = config.to_string().replace("GATEWAY", "127.0.0.1:8080");
    let loaded = switchboard::config::LoadedConfig {
        root: switchboard::config::parse_str(&text, &|_| None).unwrap(),
        base_dir: ".".into(),
    };
    let app = switchboard::build_app(&loaded).unwrap();
    assert!(
        app.lints()
            .iter()
            .any(|l| l.path == "$.endpoints[0]" && l.message.contains("max_internal_calls")),
        "{:?}",
        app.lints()
    );
    let gateway = Gateway::start(config).await;
    let response = client().get(gateway.url("/fan")).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert!(
        mock.count() <= 64,
        "one request made {} leaf calls",
        mock.count()
    );
}

// 14 --------------------------------------------------------------------

#[tokio::test]
async fn defect_14_transfer_codings_and_host_headers() {
    let gateway = Gateway::start(json!({"version": 3, "echo_endpoint": true})).await;
    let answer = raw(
        &gateway,
        b"POST /__echo/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 501, "{answer}");
    assert_eq!(
        json_of(&answer)["error"]["code"],
        "unsupported_transfer_coding"
    );
    let answer = raw(
        &gateway,
        b"GET /__echo/ HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(json_of(&answer)["error"]["code"], "invalid_host");
    let answer = raw(
        &gateway,
        b"GET /__echo/ HTTP/1.1\r\nHost: a/evil\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    let answer = raw(
        &gateway,
        b"POST /__echo/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

// 15 --------------------------------------------------------------------

#[tokio::test]
async fn defect_15_secrets_and_engine_messages_never_reach_the_client() {
    // A vendor that echoes the key it was sent in its error.
    let vendor = MockUpstream::start(|request| async move {
        let key = request
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"message": format!("Incorrect API key provided: {key}")}}),
        )
    })
    .await;
    let env = |name: &str| (name == "KEY").then(|| "sk-live-configured-0001".to_owned());
    let config = json!({
        "version": 3,
        "endpoints": [
            {"endpoint": "/v", "method": "POST",
             "backend": [{"host": [vendor.url()], "url_pattern": "/v1/chat",
                "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"],
                    "name": "Authorization", "value": "Bearer {{ env \"KEY\" }}"}}}}]},
            {"endpoint": "/t", "method": "POST",
             "extra_config": {"modifier/request-body-generator": {"template": b64("{{ missing_var_etc_passwd }}")}},
             "backend": [{"host": [vendor.url()], "url_pattern": "/v1/chat"}]}
        ]
    });
    let gateway = Gateway::try_start_with_env(config, Path::new("."), &env)
        .await
        .unwrap();
    let http = client();
    let response = http
        .post(gateway.url("/v"))
        .body("{}")
        .send()
        .await
        .unwrap();
    // As KrakenD: a backend's error status is a 500 on a json endpoint;
    // the vendor's body (and the key it echoes) stays behind.
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = response.text().await.unwrap();
    assert!(!text.contains("sk-live-configured-0001"), "{text}");
    assert!(!text.contains("Incorrect API key"), "{text}");

    let response = http
        .post(gateway.url("/t"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("missing_var_etc_passwd"), "{message}");
    assert_eq!(body["error"]["code"], "template_error");

    // Protocol-level refusals have the documented JSON body too.
    let answer = raw(&gateway, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(json_of(&answer)["error"]["message"].is_string());
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let answer = raw(&gateway, huge.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(json_of(&answer)["error"]["code"], "headers_too_large");
}

// 16 --------------------------------------------------------------------

async fn rounds(gateway: &Gateway, concurrent: usize) {
    let http = client();
    for _ in 0..3 {
        let calls = (0..concurrent).map(|_| http.get(gateway.url("/pool")).send());
        for response in futures_util::future::join_all(calls).await {
            assert_eq!(response.unwrap().status(), StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn defect_16_the_upstream_pool_size_is_a_setting() {
    // The mock answers slowly enough that the requests of a round overlap.
    let slow = || {
        MockUpstream::start(|_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            json_response(StatusCode::OK, &json!({"ok": true}))
        })
    };
    let mock = slow().await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "max_idle_connections_per_host": 64,
        "endpoints": [{"endpoint": "/pool", "timeout": "10s",
            "backend": [{"host": [mock.url()], "url_pattern": "/x"}]}]
    }))
    .await;
    rounds(&gateway, 30).await;
    assert!(
        mock.accepted_connections() <= 30,
        "{} upstream connections for 30 concurrent requests",
        mock.accepted_connections()
    );
    // A pool smaller than the concurrency churns: the setting is used.
    let mock = slow().await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "max_idle_connections_per_host": 2,
        "endpoints": [{"endpoint": "/pool", "timeout": "10s",
            "backend": [{"host": [mock.url()], "url_pattern": "/x"}]}]
    }))
    .await;
    rounds(&gateway, 30).await;
    assert!(mock.accepted_connections() > 30);
}
