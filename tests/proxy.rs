//! End-to-end tests of the gateway's proxying: real HTTP over loopback
//! against mock upstreams that record what they receive.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use switchboard_e2e::{Gateway, MockUpstream, client, eventually, json_response, sse_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn one_backend(endpoint: Value) -> Value {
    json!({"version": 3, "endpoints": [endpoint]})
}

#[tokio::test]
async fn hostile_placeholder_values_never_reach_another_path() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [
            {
                "endpoint": "/h",
                "input_headers": ["X-Target"],
                "backend": [{"host": [mock.url()], "url_pattern": "/v1/{input_headers.X-Target}/end"}]
            },
            {
                "endpoint": "/p/{name}",
                "backend": [{"host": [mock.url()], "url_pattern": "/v1/{name}/end"}]
            },
            {
                "endpoint": "/q",
                "input_query_strings": ["t"],
                "backend": [{"host": [mock.url()], "url_pattern": "/v1/{input_query_strings.t}/end"}]
            }
        ]
    }))
    .await;
    let http = client();
    let long = "a".repeat(10 * 1024);
    let hostile = [
        "../x",
        "..",
        ".",
        "%2e%2e",
        "a/b",
        "a?b",
        "a#b",
        "",
        "..%2f..%2fadmin",
        long.as_str(),
    ];
    for value in hostile {
        let before = mock.count();
        let response = http
            .get(gateway.url("/h"))
            .header("X-Target", value)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if matches!(value, "" | "." | "..") {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{value:?}");
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("x-target")
            );
            assert_eq!(mock.count(), before, "{value:?} reached the upstream");
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{value:?}");
        let seen = mock.requests().pop().unwrap();
        let path = seen.path().to_owned();
        let middle = path
            .strip_prefix("/v1/")
            .and_then(|p| p.strip_suffix("/end"))
            .unwrap_or_else(|| panic!("{value:?} reached {path}"));
        assert!(!middle.contains('/'), "{value:?} -> {path}");
        assert!(!middle.is_empty());
        assert!(
            !seen.uri.contains('?'),
            "{value:?} added a query: {}",
            seen.uri
        );
        let decoded = percent_decode(middle);
        assert_eq!(decoded, value, "the value arrives intact as one segment");
    }

    // The same through a path parameter and a query string.
    for (path, expected) in [
        ("/p/..%2F..%2Fadmin", Some("../../admin")),
        ("/p/%2e%2e", None),
        ("/p/a%3Fb", Some("a?b")),
    ] {
        let before = mock.count();
        let status = raw_get(gateway.addr, path).await;
        match expected {
            Some(expected) => {
                assert_eq!(status, 200, "{path}");
                let seen = mock.requests().pop().unwrap();
                let middle = seen
                    .path()
                    .strip_prefix("/v1/")
                    .unwrap()
                    .strip_suffix("/end")
                    .unwrap()
                    .to_owned();
                assert_eq!(percent_decode(&middle), expected);
            }
            None => {
                assert_eq!(status, 400, "{path}");
                assert_eq!(mock.count(), before);
            }
        }
    }
    let response = http
        .get(gateway.url("/q?t=a%2Fb%23c"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        mock.requests().pop().unwrap().uri,
        "/v1/a%2Fb%23c/end?t=a%2Fb%23c"
    );
    let response = http.get(gateway.url("/q")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// A GET sent as raw bytes, so that no client normalises the path first.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn only_listed_headers_and_query_strings_are_forwarded() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/chat",
        "method": "POST",
        "input_headers": ["X-Request-Id"],
        "input_query_strings": ["page"],
        "backend": [{"host": [mock.url()], "url_pattern": "/v1/chat?key=server-key"}]
    })))
    .await;
    let response = client()
        .post(gateway.url("/chat?page=2&Page=3&secret=1"))
        .header("Authorization", "Bearer client-token")
        .header("X-Request-Id", "abc")
        .header("X-Secret", "nope")
        .header("Cookie", "session=1")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "1")
        .header("Content-Type", "application/json")
        .body(r#"{"content":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = mock.requests().pop().unwrap();
    assert_eq!(seen.uri, "/v1/chat?key=server-key&page=2");
    assert_eq!(seen.headers["x-request-id"], "abc");
    assert_eq!(seen.headers["content-type"], "application/json");
    for absent in ["authorization", "x-secret", "cookie", "x-hop"] {
        assert!(seen.headers.get(absent).is_none(), "{absent} was forwarded");
    }
    assert_eq!(seen.body, Bytes::from_static(br#"{"content":"hi"}"#));
    assert_eq!(seen.method, http::Method::POST);
}

#[tokio::test]
async fn sse_chunks_reach_the_client_one_by_one() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mock = MockUpstream::start(move |_| {
        let mut release = release_rx.clone();
        async move {
            let (tx, mut response) = sse_response();
            let headers = response.headers_mut();
            headers.insert("x-request-id", "req-123".parse().unwrap());
            headers.insert("set-cookie", "vendor=1".parse().unwrap());
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: {\"n\":1}\n\n"))
                    .await
                    .unwrap();
                // The second event waits until the client has seen the first.
                release.wait_for(|released| *released).await.unwrap();
                tx.send(Bytes::from_static(b"data: {\"n\":2}\n\n"))
                    .await
                    .unwrap();
                tx.send(Bytes::from_static(b"data: [DONE]\n\n"))
                    .await
                    .unwrap();
            });
            response
        }
    })
    .await;
    // A json endpoint: the event stream must still stream, never be parsed.
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/stream",
        "method": "POST",
        "timeout": "10s",
        "backend": [{"host": [mock.url()], "url_pattern": "/v1/chat/completions"}]
    })))
    .await;
    let mut response = client()
        .post(gateway.url("/stream"))
        .body(r#"{"stream":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-request-id"], "req-123");
    assert!(response.headers().get("set-cookie").is_none());
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first event arrives before the upstream sends the second")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: {\"n\":1}\n\n");
    release_tx.send(true).unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: {\"n\":2}\n\ndata: [DONE]\n\n");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_nothing_upstream() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "extra_config": {"router": {"max_payload_size": 1_048_576}},
        "endpoints": [{
            "endpoint": "/upload",
            "method": "POST",
            "backend": [{"host": [mock.url()], "url_pattern": "/in", "encoding": "no-op"}],
            "output_encoding": "no-op"
        }]
    }))
    .await;
    let http = client();
    let big = vec![b'x'; 10 * 1024 * 1024];
    let response = http
        .post(gateway.url("/upload"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");

    // Without a Content-Length (chunked), the limit holds too.
    let chunks = futures_util::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 64 * 1024]))),
    );
    let response = http
        .post(gateway.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(mock.count(), 0, "nothing may reach the upstream");

    let response = http
        .post(gateway.url("/upload"))
        .body(vec![b'z'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(mock.requests()[0].body.len(), 1000);
}

#[tokio::test]
async fn a_client_that_drops_mid_stream_closes_the_upstream_connection() {
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mock = MockUpstream::start(move |_| {
        let closed_tx = closed_tx.clone();
        async move {
            let (tx, response) = sse_response();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: first\n\n"))
                    .await
                    .unwrap();
                // Resolves when the gateway drops the upstream response.
                tx.closed().await;
                let _ = closed_tx.send(()).await;
            });
            response
        }
    })
    .await;
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/stream",
        "timeout": "30s",
        "backend": [{"host": [mock.url()], "url_pattern": "/s"}]
    })))
    .await;
    let mut response = client().get(gateway.url("/stream")).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    drop(response);
    tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
        .await
        .expect("the upstream stream was cancelled")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || mock.closed_connections() >= 1).await,
        "the upstream connection was closed"
    );
}

#[tokio::test]
async fn a_slow_client_is_cut_off_at_the_header_timeout() {
    let gateway = Gateway::start(json!({
        "version": 3,
        "read_header_timeout": "300ms",
        "endpoints": []
    }))
    .await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /__health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not cut off");
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
}

#[tokio::test]
async fn two_backends_merge_and_a_failure_marks_the_response_incomplete() {
    let good = MockUpstream::json(json!({"a": 1, "shared": "good"})).await;
    let other = MockUpstream::json(json!({"b": 2})).await;
    let bad = MockUpstream::start(|_| async {
        json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "boom"}))
    })
    .await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [
            {
                "endpoint": "/ok",
                "backend": [
                    {"host": [good.url()], "url_pattern": "/a"},
                    {"host": [other.url()], "url_pattern": "/b", "group": "other"}
                ]
            },
            {
                "endpoint": "/partial",
                "backend": [
                    {"host": [good.url()], "url_pattern": "/a"},
                    {"host": [bad.url()], "url_pattern": "/b"}
                ]
            }
        ]
    }))
    .await;
    let response = client().get(gateway.url("/ok")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-krakend-completed"], "true");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"a": 1, "shared": "good", "other": {"b": 2}}));

    let response = client().get(gateway.url("/partial")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"a": 1, "shared": "good"}));
    assert_eq!(bad.count(), 1);
}

#[tokio::test]
async fn endpoint_timeout_answers_504() {
    let slow = MockUpstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        json_response(StatusCode::OK, &json!({}))
    })
    .await;
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/slow",
        "timeout": "200ms",
        "backend": [{"host": [slow.url()], "url_pattern": "/"}]
    })))
    .await;
    let started = std::time::Instant::now();
    let response = client().get(gateway.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn hosts_round_robin_and_redirects_leave_no_configured_host() {
    let target = MockUpstream::json(json!({"followed": true})).await;
    let location = format!("{}/elsewhere", target.url());
    let a = MockUpstream::start(move |_| {
        let location = location.clone();
        async move {
            http::Response::builder()
                .status(StatusCode::FOUND)
                .header("location", location)
                .body(switchboard_core::Body::empty())
                .unwrap()
        }
    })
    .await;
    let b = MockUpstream::json(json!({"from": "b"})).await;
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/rr",
        "backend": [{"host": [a.url(), b.url()], "url_pattern": "/x"}]
    })))
    .await;
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http.get(gateway.url("/rr")).send().await.unwrap().status());
    }
    assert_eq!(a.count(), 2);
    assert_eq!(b.count(), 2);
    assert_eq!(target.count(), 0, "a redirect to another host was followed");
    // KrakenD follows redirects; Switchboard only within the backend's own
    // hosts, and answers 502 for any other target.
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
}

#[tokio::test]
async fn redirects_within_the_backend_hosts_are_followed() {
    let mock = MockUpstream::start(|r| async move {
        match r.path() {
            "/old" => http::Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header("location", "/new?x=1")
                .body(switchboard_core::Body::empty())
                .unwrap(),
            "/loop" => http::Response::builder()
                .status(StatusCode::FOUND)
                .header("location", "/loop")
                .body(switchboard_core::Body::empty())
                .unwrap(),
            "/away" => http::Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", "http://169.254.169.254/latest/meta-data")
                .body(switchboard_core::Body::empty())
                .unwrap(),
            _ => json_response(StatusCode::OK, &json!({"path": r.uri})),
        }
    })
    .await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [
            {"endpoint": "/old", "backend": [{"host": [mock.url()], "url_pattern": "/old"}]},
            {"endpoint": "/loop", "backend": [{"host": [mock.url()], "url_pattern": "/loop"}]},
            {"endpoint": "/away", "backend": [{"host": [mock.url()], "url_pattern": "/away"}]}
        ]
    }))
    .await;
    let http = client();
    let response = http.get(gateway.url("/old")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"path": "/new?x=1"})
    );
    let followed = mock.requests().pop().unwrap();
    assert_eq!(
        followed.headers["referer"],
        format!("{}/old", mock.url()).as_str()
    );
    let before = mock.count();
    // Go's client gives up after 10 redirects; KrakenD answers that 500.
    let response = http.get(gateway.url("/loop")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(mock.count() - before, 11, "the first call and 10 redirects");
    let response = http.get(gateway.url("/away")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "redirect_refused");
}

#[tokio::test]
async fn no_op_passes_status_headers_and_body_untouched() {
    let mock = MockUpstream::start(|_| async {
        http::Response::builder()
            .status(StatusCode::IM_A_TEAPOT)
            .header("content-type", "text/plain")
            .header("x-vendor", "v")
            .header("connection", "x-internal")
            .header("x-internal", "hop")
            .body(switchboard_core::Body::from("not json"))
            .unwrap()
    })
    .await;
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/raw",
        "output_encoding": "no-op",
        "backend": [{"host": [mock.url()], "url_pattern": "/raw", "encoding": "no-op"}]
    })))
    .await;
    let response = client().get(gateway.url("/raw")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(response.headers()["x-vendor"], "v");
    assert!(response.headers().get("x-internal").is_none());
    assert_eq!(response.text().await.unwrap(), "not json");
}

#[tokio::test]
async fn json_encoding_reemits_and_keeps_vendor_errors() {
    let mock = MockUpstream::start(|r| async move {
        if r.path() == "/limited" {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": {"message": "slow down"}}),
            );
            let headers = response.headers_mut();
            headers.insert("retry-after", "7".parse().unwrap());
            headers.insert("x-should-retry", "true".parse().unwrap());
            headers.insert("x-internal-vendor", "1".parse().unwrap());
            response
        } else if r.path() == "/text" {
            http::Response::new(switchboard_core::Body::from("plain"))
        } else {
            json_response(StatusCode::OK, &json!({"id": "chatcmpl-1", "choices": []}))
        }
    })
    .await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "endpoints": [
            {"endpoint": "/ok", "backend": [{"host": [mock.url()], "url_pattern": "/ok"}]},
            {"endpoint": "/limited", "backend": [{"host": [mock.url()], "url_pattern": "/limited"}]},
            {"endpoint": "/text", "backend": [{"host": [mock.url()], "url_pattern": "/text"}]}
        ]
    }))
    .await;
    let http = client();
    let response = http.get(gateway.url("/ok")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["id"], "chatcmpl-1");
    // As KrakenD: a backend's error status, or a body that is not JSON,
    // is a 500 on a json endpoint, without the backend's body (its message
    // only with `router.return_error_msg`).
    let response = http.get(gateway.url("/limited")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    assert!(response.headers().get("x-internal-vendor").is_none());
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(response.text().await.unwrap(), "");
    let response = http.get(gateway.url("/text")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.text().await.unwrap(), "");

    let verbose = Gateway::start(json!({
        "version": 3,
        "extra_config": {"router": {"return_error_msg": true}},
        "endpoints": [
            {"endpoint": "/limited", "backend": [{"host": [mock.url()], "url_pattern": "/limited?key=secret"}]},
            {"endpoint": "/text", "backend": [{"host": [mock.url()], "url_pattern": "/text"}]}
        ]
    }))
    .await;
    let response = http.get(verbose.url("/limited")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        response.text().await.unwrap(),
        format!(
            "invalid status code 429 [GET /limited]: {}/limited",
            mock.url()
        )
    );
    let response = http.get(verbose.url("/text")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.text().await.unwrap().contains("not JSON"));

    // A no-op endpoint passes the vendor's answer on untouched.
    let raw = Gateway::start(one_backend(json!({
        "endpoint": "/limited", "output_encoding": "no-op",
        "backend": [{"host": [mock.url()], "url_pattern": "/limited", "encoding": "no-op"}]
    })))
    .await;
    let response = http.get(raw.url("/limited")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
}

#[tokio::test]
async fn health_echo_404_and_405() {
    let mock = MockUpstream::json(json!({})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "echo_endpoint": true,
        "endpoints": [{"endpoint": "/only-post", "method": "POST", "backend": [{"host": [mock.url()], "url_pattern": "/"}]}]
    }))
    .await;
    let http = client();
    let response = http.get(gateway.url("/__health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = http
        .put(gateway.url("/__echo/a/b?x=1"))
        .header("Authorization", "Bearer secret-token")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains("secret-token"));
    let echo: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(echo["req_uri"], "/__echo/a/b?x=1");
    assert_eq!(echo["req_uri_details"]["path"], "/__echo/a/b");
    assert_eq!(echo["req_method"], "PUT");
    assert_eq!(echo["req_body"], "payload");
    assert_eq!(echo["req_querystring"]["x"], json!(["1"]));
    // KrakenD's router answers these as text.
    let response = http.get(gateway.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.text().await.unwrap(), "404 page not found");
    let response = http.get(gateway.url("/only-post")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["x-krakend-completed"], "false");
    assert_eq!(response.text().await.unwrap(), "405 method not allowed");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let mock = MockUpstream::json(json!({"ok": 1})).await;
    let gateway = Gateway::start(one_backend(json!({
        "endpoint": "/h2",
        "backend": [{"host": [mock.url()], "url_pattern": "/"}]
    })))
    .await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(gateway.url("/h2")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"ok": 1}));
}

#[tokio::test]
async fn shutdown_drains_in_flight_streams() {
    let mock = MockUpstream::start(|_| async {
        let (tx, response) = sse_response();
        tokio::spawn(async move {
            for i in 0..5 {
                tx.send(Bytes::from(format!("data: {i}\n\n")))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        response
    })
    .await;
    let mut gateway = Gateway::start(one_backend(json!({
        "endpoint": "/stream",
        "timeout": "10s",
        "backend": [{"host": [mock.url()], "url_pattern": "/s"}]
    })))
    .await;
    let mut response = client().get(gateway.url("/stream")).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");
    let addr = gateway.addr;
    let task = gateway.begin_shutdown().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn self_calls_run_the_inner_endpoint_pipeline() {
    // The seed's /multi-llm shape, without extra_config.
    let openai = MockUpstream::json(json!({"vendor": "openai"})).await;
    let gemini = MockUpstream::json(json!({"vendor": "gemini"})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "host": ["GATEWAY"],
        "endpoints": [
            {
                "endpoint": "/multi-llm",
                "method": "POST",
                "input_headers": ["X-Llm"],
                "backend": [{"url_pattern": "/_llm/{input_headers.X-Llm}"}]
            },
            {
                "endpoint": "/_llm/gemini",
                "method": "POST",
                "backend": [{"host": [gemini.url()], "url_pattern": "/v1beta/models/gemini-pro:generateContent?key=k"}]
            },
            {
                "endpoint": "/_llm/openai",
                "method": "POST",
                "backend": [{"host": [openai.url()], "url_pattern": "/v1/chat/completions"}]
            }
        ]
    }))
    .await;
    let http = client();
    let response = http
        .post(gateway.url("/multi-llm"))
        .header("X-LLM", "openai")
        .header("Authorization", "Bearer client")
        .header("Content-Type", "application/json")
        .body(r#"{"content":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"vendor": "openai"})
    );
    let seen = openai.requests().pop().unwrap();
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(seen.body, Bytes::from_static(br#"{"content":"hello"}"#));
    assert!(seen.headers.get("authorization").is_none());
    assert!(
        seen.headers.get("x-llm").is_none(),
        "the inner endpoint does not forward X-Llm"
    );

    let response = http
        .post(gateway.url("/multi-llm"))
        .header("x-llm", "gemini")
        .body(r#"{"content":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        gemini.requests().pop().unwrap().uri,
        "/v1beta/models/gemini-pro:generateContent?key=k"
    );

    // A value naming no inner endpoint reaches no vendor: the inner 404
    // is a failed backend, a 500 as KrakenD answers it.
    for value in ["cohere", "../__echo/x", "openai/../gemini"] {
        let response = http
            .post(gateway.url("/multi-llm"))
            .header("X-Llm", value)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{value}"
        );
    }
    assert_eq!(openai.count(), 1);
    assert_eq!(gemini.count(), 1);
}

#[tokio::test]
async fn unsupported_namespaces_refuse_to_start() {
    let errors = Gateway::try_start_in(
        json!({
            "version": 3,
            "endpoints": [{
                "endpoint": "/a",
                "extra_config": {"auth/revoker": {"N": 10}},
                "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]
            }]
        }),
        std::path::Path::new("."),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        errors[0].contains("$.endpoints[0].extra_config[\"auth/revoker\"]"),
        "{errors:?}"
    );
    assert!(errors[0].contains("not supported"), "{errors:?}");
}

#[tokio::test]
async fn idle_keep_alive_connections_and_stalled_bodies_are_cut_off() {
    let mock = MockUpstream::json(json!({"ok": true})).await;
    let gateway = Gateway::start(json!({
        "version": 3,
        "idle_timeout": "300ms",
        "read_timeout": "300ms",
        "endpoints": [{
            "endpoint": "/in",
            "method": "POST",
            "backend": [{"host": [mock.url()], "url_pattern": "/in"}]
        }]
    }))
    .await;

    // A keep-alive connection that stays idle after a response is closed.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /__health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A body that stops halfway is cut off; nothing reaches the upstream.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the stalled body was not cut off");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}
