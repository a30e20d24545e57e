//! The layer between a client and a backend, both over loopback HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::any;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_core::{Body, RouteParams};
use switchboard_lua::{LuaLayer, Scope};
use tower::ServiceBuilder;

/// The backend: answers what it received, and counts the calls.
async fn start_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    async fn echo(
        State(calls): State<Arc<AtomicUsize>>,
        request: Request<axum::body::Body>,
    ) -> axum::Json<Value> {
        calls.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        axum::Json(json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or_default(),
            "tenant": parts.headers.get("x-tenant").map(|v| v.to_str().unwrap()),
            "body": String::from_utf8_lossy(&body),
            "items": [{"id": 1}, {"id": 2}],
        }))
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(any(echo))
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

/// The gateway: the layer around a client that sends each request to the
/// URL it carries (as a backend call does), or, in front of that, the
/// backend's URL built from the client's path.
async fn start_gateway(layer: LuaLayer, backend: SocketAddr) -> SocketAddr {
    let client = reqwest::Client::new();
    let upstream = tower::service_fn(move |request: Request<Body>| {
        let client = client.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let mut call = client
                .request(parts.method.clone(), parts.uri.to_string())
                .body(body);
            for (name, value) in &parts.headers {
                if name != http::header::HOST {
                    call = call.header(name, value);
                }
            }
            let answer = call.send().await.unwrap();
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            let bytes = answer.bytes().await.unwrap();
            Ok::<_, std::convert::Infallible>(response.body(Body::from(bytes)).unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .map_request(move |mut request: Request<Body>| {
            // What the gateway does before a backend layer: the backend's
            // whole URL, the route's parameters.
            let path_and_query = request.uri().path_and_query().unwrap().as_str().to_owned();
            *request.uri_mut() = format!("http://{backend}{path_and_query}").parse().unwrap();
            request
                .extensions_mut()
                .insert(RouteParams::from_iter([("id".to_owned(), "7".to_owned())]));
            request
        })
        .layer(layer)
        .service(upstream);
    let app = Router::new().fallback_service(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn layer(config: Value, scope: Scope) -> LuaLayer {
    LuaLayer::try_from_config(&config, scope, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn get(gateway: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let answer = reqwest::get(format!("http://{gateway}{path}"))
        .await
        .unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    (status, headers, answer.text().await.unwrap())
}

#[tokio::test]
async fn backend_scripts_rewrite_the_request_and_the_answer() {
    let (backend, calls) = start_backend().await;
    let gateway = start_gateway(
        layer(
            json!({
                "pre": "local r = request.load(); r:url(r:url() .. '/' .. r:params('Id')); r:headers('X-Tenant', 'acme'); r:method('POST'); r:body('hi')",
                "post": "local d = response.load():data(); d:set('n', d:get('items'):len()); d:set('list', {'a', 'b'}); d:get('items'):get(0):set('id', 10); d:del('query'); d:set('nothing', nil); d:set('null', luaNil.new()); d:set('null_is_truthy', d:get('null') ~= nil)"
            }),
            Scope::Backend,
        ),
        backend,
    )
    .await;
    let (status, headers, body) = get(gateway, "/users").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["path"], "/users/7");
    assert_eq!(value["method"], "POST");
    assert_eq!(value["tenant"], "acme");
    assert_eq!(value["body"], "hi");
    assert_eq!(value["n"], 2);
    // KrakenD's quirk: a Lua array set directly is an object keyed "1".."N".
    assert_eq!(value["list"], json!({"1": "a", "2": "b"}));
    // Tables are shared: the nested change is in the answer.
    assert_eq!(value["items"][0]["id"], 10);
    assert!(value.get("query").is_none());
    // As KrakenD: setting nil sets nothing; luaNil is JSON null, and a
    // script reads a null as luaNil (not nil).
    assert!(value.get("nothing").is_none());
    assert_eq!(value.get("null"), Some(&Value::Null));
    assert_eq!(value["null_is_truthy"], true);
    // Keys are written sorted, as KrakenD writes a map.
    assert!(body.find("\"body\"").unwrap() < body.find("\"items\"").unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_script_error_is_a_500_with_its_message() {
    let (backend, calls) = start_backend().await;
    let gateway = start_gateway(
        layer(json!({"pre": "local x = nil; x.field = 1"}), Scope::Proxy),
        backend,
    )
    .await;
    let (status, headers, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers["content-type"], "application/json");
    let value: Value = serde_json::from_str(&body).unwrap();
    let message = value["error"]["message"].as_str().unwrap();
    assert!(message.contains("attempt to index"), "{message}");
    assert_eq!(value["error"]["code"], "script_error");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the request stopped");
}

#[tokio::test]
async fn custom_error_answers_its_status_and_message() {
    let (backend, _) = start_backend().await;
    let gateway = start_gateway(
        layer(
            json!({"pre": "custom_error('{\"msg\":\"teapot\"}', 418)"}),
            Scope::Backend,
        ),
        backend,
    )
    .await;
    let (status, headers, body) = get(gateway, "/").await;
    assert_eq!(status.as_u16(), 418);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, r#"{"msg":"teapot"}"#);

    let gateway = start_gateway(
        layer(
            json!({"post": "custom_error('nope', 403, 'text/x-nope')"}),
            Scope::Proxy,
        ),
        backend,
    )
    .await;
    let (status, headers, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "text/x-nope");
    assert_eq!(body, "nope");

    // Without a status: a 500.
    let gateway = start_gateway(
        layer(json!({"pre": "custom_error('broken')"}), Scope::Proxy),
        backend,
    )
    .await;
    let (status, _, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("broken"), "{body}");
}

#[tokio::test]
async fn skip_next_does_not_call_the_backend() {
    let (backend, calls) = start_backend().await;
    let gateway = start_gateway(
        layer(
            json!({
                "skip_next": true,
                "post": "local r = response.load(); r:data():set('complete', r:isComplete()); r:statusCode(202)"
            }),
            Scope::Proxy,
        ),
        backend,
    )
    .await;
    let (status, headers, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["x-krakend-completed"], "false");
    assert_eq!(body, r#"{"complete":false}"#);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn without_allow_open_libs_there_is_no_os_or_io() {
    let (backend, calls) = start_backend().await;
    let closed = start_gateway(
        layer(
            json!({"pre": "os.execute('touch /tmp/lua-was-here')"}),
            Scope::Proxy,
        ),
        backend,
    )
    .await;
    let (status, _, body) = get(closed, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("'os'"), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let probe = "local d = response.load():data(); \
        d:set('os', type(os)); d:set('io', type(io)); d:set('require', type(require)); \
        d:set('dofile', type(dofile)); d:set('string', type(string.format)); d:set('debug', type(debug))";
    let closed = start_gateway(layer(json!({"post": probe}), Scope::Proxy), backend).await;
    let (_, _, body) = get(closed, "/").await;
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            &value["os"],
            &value["io"],
            &value["require"],
            &value["dofile"],
            &value["string"],
            &value["debug"]
        ),
        (
            &json!("nil"),
            &json!("nil"),
            &json!("nil"),
            &json!("nil"),
            &json!("function"),
            &json!("nil")
        )
    );

    let open = start_gateway(
        layer(
            json!({"post": probe, "allow_open_libs": true}),
            Scope::Proxy,
        ),
        backend,
    )
    .await;
    let (_, _, body) = get(open, "/").await;
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["os"], "table");
    assert_eq!(value["io"], "table");
    assert_eq!(value["require"], "function");
    assert_eq!(value["debug"], "nil");
}

#[tokio::test]
async fn endpoint_scripts_get_ctx() {
    let (backend, _) = start_backend().await;
    let gateway = start_gateway(
        layer(
            json!({"pre": "local c = ctx.load(); c:headers('X-Tenant', c:query('t')); c:query('added', 'yes')"}),
            Scope::Endpoint,
        ),
        backend,
    )
    .await;
    let (status, _, body) = get(gateway, "/p?t=blue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["tenant"], "blue");
    assert_eq!(value["query"], "added=yes&t=blue");
}

#[tokio::test]
async fn a_runaway_script_is_stopped() {
    let (backend, _) = start_backend().await;
    let gateway = start_gateway(
        layer(json!({"pre": "while true do end"}), Scope::Proxy),
        backend,
    )
    .await;
    let (status, _, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("ran longer"), "{body}");

    let hungry = "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 100000) .. i end";
    let gateway = start_gateway(layer(json!({"pre": hungry}), Scope::Proxy), backend).await;
    let (status, _, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("memory"), "{body}");
}

#[tokio::test]
async fn framing_headers_a_script_sets_do_not_break_the_answer() {
    let (backend, _) = start_backend().await;
    let gateway = start_gateway(
        layer(
            json!({
                "pre": "local r = request.load(); r:headers('Content-Length', '999'); r:body('abc')",
                "post": "local r = response.load(); r:headers('Content-Length', '1'); r:headers('X-Done', 'yes')"
            }),
            Scope::Backend,
        ),
        backend,
    )
    .await;
    let (status, headers, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-done"], "yes");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["body"], "abc");
}

#[tokio::test]
async fn sources_define_functions_and_live_reads_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("lib.lua");
    std::fs::write(&source, "function tag() return 'one' end").unwrap();
    let (backend, _) = start_backend().await;
    let config = json!({
        "sources": ["lib.lua"],
        "live": true,
        "pre": "request.load():headers('X-Tenant', tag())"
    });
    let live = LuaLayer::try_from_config(&config, Scope::Backend, dir.path()).unwrap();
    let gateway = start_gateway(live, backend).await;
    let (_, _, body) = get(gateway, "/").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["tenant"],
        "one"
    );
    std::fs::write(&source, "function tag() return 'two' end").unwrap();
    let (_, _, body) = get(gateway, "/").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["tenant"],
        "two"
    );
}

#[test]
fn config_mistakes_fail_at_load_with_their_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let error =
        |config: Value, scope: Scope| LuaLayer::try_from_config(&config, scope, dir).unwrap_err();
    let missing = error(
        json!({"sources": ["ok.lua", "no/such/file.lua"]}),
        Scope::Proxy,
    );
    // The first source is missing too: it is the one reported.
    assert_eq!(missing.path, "sources[0]");
    assert!(missing.message.contains("ok.lua"), "{}", missing.message);

    let syntax = error(json!({"pre": "local = 1"}), Scope::Proxy);
    assert_eq!(syntax.path, "pre");
    assert!(
        syntax.message.contains("syntax error"),
        "{}",
        syntax.message
    );

    let syntax = error(json!({"post": "if then"}), Scope::Backend);
    assert_eq!(syntax.path, "post");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bad.lua"), "function (").unwrap();
    let bad = LuaLayer::try_from_config(&json!({"sources": ["bad.lua"]}), Scope::Proxy, tmp.path())
        .unwrap_err();
    assert_eq!(bad.path, "sources[0]");

    std::fs::write(tmp.path().join("fails.lua"), "error('at load')").unwrap();
    let fails =
        LuaLayer::try_from_config(&json!({"sources": ["fails.lua"]}), Scope::Proxy, tmp.path())
            .unwrap_err();
    assert_eq!(fails.path, "sources");
    assert!(fails.message.contains("at load"), "{}", fails.message);

    // KrakenD's `md5` checksums of the sources, checked at load.
    std::fs::write(tmp.path().join("ok.lua"), "x = 1").unwrap();
    let md5 = |sum: &str| {
        LuaLayer::try_from_config(
            &json!({"sources": ["ok.lua"], "md5": {"ok.lua": sum}}),
            Scope::Proxy,
            tmp.path(),
        )
    };
    // `printf 'x = 1' | md5sum`
    let sum = "d37ffc54b67ce8de1f01efb1f2e33689";
    assert!(md5(sum).is_ok());
    let wrong = md5("a7e5e6d5e2e8d3c7d8c7e1a1b1c1d1e1").unwrap_err();
    assert_eq!(wrong.path, "md5[\"ok.lua\"]");
    assert!(wrong.message.contains(sum), "{wrong}");
    let stray = LuaLayer::try_from_config(
        &json!({"sources": ["ok.lua"], "md5": {"other.lua": sum}}),
        Scope::Proxy,
        tmp.path(),
    )
    .unwrap_err();
    assert_eq!(stray.path, "md5[\"other.lua\"]");

    let post = error(json!({"post": "x = 1"}), Scope::Endpoint);
    assert_eq!(post.path, "post");
    let unknown = error(json!({"pree": "x = 1"}), Scope::Proxy);
    assert!(unknown.to_string().contains("pree"), "{unknown}");
}

#[tokio::test]
async fn an_event_stream_passes_without_post() {
    let app = Router::new().fallback(any(|| async {
        (
            [("content-type", "text/event-stream")],
            "data: 1\n\ndata: 2\n\n",
        )
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gateway = start_gateway(
        layer(
            json!({"post": "response.load():data():set('x', 1)"}),
            Scope::Proxy,
        ),
        backend,
    )
    .await;
    let (status, _, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "data: 1\n\ndata: 2\n\n");
}

#[tokio::test]
async fn http_response_calls_another_service() {
    let (backend, calls) = start_backend().await;
    let (other, other_calls) = start_backend().await;
    let pre = format!(
        "local r = http_response.new('http://{other}/lookup?x=1', 'POST', 'ping', {{['X-Tenant'] = 'from-call'}}); \
         local d = json_like(r:body()); \
         request.load():headers('X-Tenant', r:statusCode() .. ' ' .. r:headers('Content-Type') .. ' ' .. d)"
    );
    let gateway = start_gateway(
        layer(
            json!({
                "pre": format!("function json_like(s) return string.match(s, '\"tenant\":\"([^\"]*)\"') end; {pre}")
            }),
            Scope::Backend,
        ),
        backend,
    )
    .await;
    let (status, _, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["tenant"], "200 application/json from-call");
    assert_eq!(
        (
            calls.load(Ordering::SeqCst),
            other_calls.load(Ordering::SeqCst)
        ),
        (1, 1)
    );

    // A call that fails is the script's error.
    let gateway = start_gateway(
        layer(
            json!({"pre": "http_response.new('http://127.0.0.1:1/')"}),
            Scope::Proxy,
        ),
        backend,
    )
    .await;
    let (status, _, body) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("http_response.new"), "{body}");

    // Not while the sources load.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("call.lua"),
        format!("http_response.new('http://{other}/')"),
    )
    .unwrap();
    let error =
        LuaLayer::try_from_config(&json!({"sources": ["call.lua"]}), Scope::Proxy, tmp.path())
            .unwrap_err();
    assert!(
        error.message.contains("only run in pre and post"),
        "{error}"
    );
}
