//! KrakenD CE's own integration suite, run against Switchboard.
//!
//! `fixtures/krakend-ce/` holds KrakenD CE's `tests/fixtures/krakend.json`
//! and `tests/fixtures/specs/*.json`, copied unchanged (Apache-2.0, see its
//! `NOTICE.md`). This test does what KrakenD's `tests/integration.go` does:
//! it starts a fake backend (written here from integration.go's
//! description: the same paths, bodies and its check of `X-Forwarded-For`),
//! serves the config with the debug endpoint on (`krakend run -d`), sends
//! each spec's request with a client that behaves like Go's default one, and
//! compares status, headers and body the way integration.go's
//! `assertResponse` does.
//!
//! Two substitutions are made to the texts, and only these:
//! - the fixed ports (gateway 8080, backend 8081) become free loopback
//!   ports, so that the suite runs beside other tests;
//! - KrakenD's version strings become Switchboard's own name
//!   ([`switchboard::USER_AGENT`]): `KrakenD Version 2.13.8`, what KrakenD
//!   sends upstream as `User-Agent` and `X-Forwarded-Via`, and
//!   `Version 2.13.8`, what it answers in the `X-Krakend` header.
//!   Switchboard names itself upstream and in `X-Krakend`.
//!
//! The config loads unchanged. [`PENDING`] names specs that cannot pass
//! yet, with the reason (each one is checked to still fail, so the list
//! cannot go stale); [`EXCEPTED`] names the specs that need the internet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Specs that need the internet; never run.
const EXCEPTED: &[(&str, &str)] = &[("rss", "its backends are showrss.info feeds on the internet")];

/// Specs that cannot pass yet, with the reason. The test fails once one of
/// them passes, so that it leaves this list.
const PENDING: &[(&str, &str)] = &[];

/// KrakenD's version string in the specs.
const KRAKEND_VERSION: &str = "KrakenD Version 2.13.8";

/// KrakenD's `X-Krakend` response header in the specs.
const X_KRAKEND: &str = "\"X-Krakend\": [\"Version 2.13.8\"]";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/krakend-ce")
}

/// The config text with the fixed ports replaced.
fn config_text(gateway: u16, backend: u16) -> String {
    let text = std::fs::read_to_string(fixtures().join("krakend.json")).unwrap();
    text.replace("127.0.0.1:8081", &format!("127.0.0.1:{backend}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{gateway}"))
        .replace("localhost:8080", &format!("localhost:{gateway}"))
        .replace("\"port\": 8080", &format!("\"port\": {gateway}"))
}

/// Builds the gateway from `config` the way `krakend run -d` would (the
/// debug endpoint on, no environment).
fn build(config: &Value) -> Result<switchboard::App, Vec<String>> {
    let text = config.to_string();
    let strings = |errors: Vec<switchboard_core::ConfigError>| {
        errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let mut root = switchboard::config::parse_str(&text, &|_| None).map_err(strings)?;
    root.debug_endpoint = true;
    let loaded = switchboard::config::LoadedConfig {
        root,
        base_dir: fixtures(),
    };
    switchboard::build_app(&loaded).map_err(strings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krakend_ce_integration_suite() {
    let backend = FakeBackend::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = listener.local_addr().unwrap();
    let text = config_text(gateway.port(), backend.addr.port());
    let original: Value = serde_json::from_str(&text).unwrap();

    // KrakenD's config loads unchanged.
    let app = match build(&original) {
        Ok(app) => app,
        Err(errors) => panic!("krakend.json does not load unchanged: {errors:#?}"),
    };
    let mut problems = Vec::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        switchboard::serve(listener, app, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let client = GoClient::new();
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("specs"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    let total = names.len();
    let (mut passed, mut pending, mut excepted) = (Vec::new(), Vec::new(), Vec::new());
    for name in &names {
        if let Some((_, reason)) = EXCEPTED.iter().find(|(n, _)| n == name) {
            println!("EXCEPTED {name}: {reason}");
            excepted.push(name.clone());
            continue;
        }
        let spec = spec_text(name, gateway.port(), backend.addr.port());
        let result = run_spec(&client, &spec).await;
        let waiting = PENDING.iter().find(|(n, _)| n == name);
        match (result, waiting) {
            (Ok(()), None) => {
                println!("PASS {name}");
                passed.push(name.clone());
            }
            (Ok(()), Some((_, reason))) => {
                problems.push(format!(
                    "{name} passes now ({reason}): remove it from PENDING"
                ));
            }
            (Err(error), Some((_, reason))) => {
                println!("PENDING {name}: {reason}\n    {}", error.join("\n    "));
                pending.push(name.clone());
            }
            (Err(error), None) => {
                problems.push(format!("{name} fails:\n    {}", error.join("\n    ")));
            }
        }
    }
    println!(
        "{} of {} specs pass; {} pending, {} excepted",
        passed.len(),
        total,
        pending.len(),
        excepted.len()
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A spec's text with the ports and KrakenD's version string replaced.
fn spec_text(name: &str, gateway: u16, backend: u16) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("specs/{name}.json"))).unwrap();
    let text = text
        .replace("localhost:8080", &format!("localhost:{gateway}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{backend}"))
        .replace(KRAKEND_VERSION, switchboard::USER_AGENT)
        .replace(
            X_KRAKEND,
            &format!("\"X-Krakend\": [\"{}\"]", switchboard::USER_AGENT),
        );
    serde_json::from_str(&text).unwrap()
}

/// A client like Go's `http.DefaultClient`: sends only the headers it is
/// given plus `User-Agent: Go-http-client/1.1`, `Accept-Encoding: gzip`
/// (decompressed again) and a body's length; follows up to 10 redirects
/// the way Go does, with `Referer`.
struct GoClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What a request got: status, headers, body.
type Answer = (StatusCode, http::HeaderMap, Bytes);

impl GoClient {
    fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &http::HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Answer, String> {
        let (mut method, mut url, mut body) = (method, url.to_owned(), body);
        let mut headers = headers.clone();
        for _ in 0..=10 {
            let mut request = Request::new(Full::new(body.clone().unwrap_or_default()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = url.parse().map_err(|e| format!("{e}"))?;
            *request.headers_mut() = headers.clone();
            if body.is_none() && matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                request
                    .headers_mut()
                    .insert("content-length", http::HeaderValue::from_static("0"));
            }
            let response =
                tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
                    .await
                    .map_err(|_| "timeout".to_owned())?
                    .map_err(|e| format!("{e}"))?;
            let status = response.status();
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (parts, incoming) = response.into_parts();
            let bytes = incoming
                .collect()
                .await
                .map_err(|e| format!("{e}"))?
                .to_bytes();
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let Some(location) = location.filter(|_| redirect) else {
                return Ok((status, parts.headers, bytes));
            };
            let next = if location.starts_with('/') {
                let uri: http::Uri = url.parse().unwrap();
                format!(
                    "{}://{}{location}",
                    uri.scheme_str().unwrap(),
                    uri.authority().unwrap()
                )
            } else {
                location
            };
            if !matches!(status.as_u16(), 307 | 308)
                && method != http::Method::GET
                && method != http::Method::HEAD
            {
                method = http::Method::GET;
                body = None;
                headers.remove("content-type");
            }
            headers.insert("referer", http::HeaderValue::from_str(&url).unwrap());
            url = next;
        }
        Err("stopped after 10 redirects".to_owned())
    }
}

/// Sends one spec's request and checks the answer; the mismatches found.
async fn run_spec(client: &GoClient, spec: &Value) -> Result<(), Vec<String>> {
    let input = &spec["in"];
    let method = match input["method"].as_str() {
        None | Some("") => "GET",
        Some(m) => m,
    };
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    let url = input["url"].as_str().unwrap();
    let mut headers = http::HeaderMap::new();
    for (name, value) in input["header"].as_object().cloned().unwrap_or_default() {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
        );
    }
    if !headers.contains_key("user-agent") {
        headers.insert(
            "user-agent",
            http::HeaderValue::from_static("Go-http-client/1.1"),
        );
    }
    let asked_gzip = !headers.contains_key("accept-encoding");
    if asked_gzip {
        headers.insert("accept-encoding", http::HeaderValue::from_static("gzip"));
    }
    let body = match &input["body"] {
        Value::Null => None,
        Value::String(text) => Some(Bytes::from(text.clone())),
        other => Some(Bytes::from(go_json(other, false))),
    };
    let (status, mut actual_headers, mut bytes) =
        match client.send(method, url, &headers, body).await {
            Ok(answer) => answer,
            Err(error) => {
                if spec["error"].as_str() == Some(error.as_str()) {
                    return Ok(());
                }
                return Err(vec![format!("request failed: {error}")]);
            }
        };
    let encoded = actual_headers
        .get("content-encoding")
        .map(|v| v.as_bytes().to_vec());
    if matches!(encoded.as_deref(), Some(b"gzip" | b"x-gzip")) {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(bytes.as_ref())
            .read_to_end(&mut plain)
            .is_ok()
        {
            bytes = Bytes::from(plain);
            if asked_gzip {
                // Go's transport hides a compression it asked for.
                actual_headers.remove("content-encoding");
                actual_headers.remove("content-length");
            }
        }
    }
    check_response(status, &actual_headers, &bytes, &spec["out"])
}

/// integration.go's `assertResponse`.
fn check_response(
    status: StatusCode,
    headers: &http::HeaderMap,
    bytes: &[u8],
    expected: &Value,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let want_status = expected["status_code"].as_u64().unwrap_or(0);
    if u64::from(status.as_u16()) != want_status {
        errors.push(format!(
            "unexpected status code. have: {}, want: {want_status}",
            status.as_u16()
        ));
    }
    if let Some(want_headers) = expected["header"].as_object() {
        for (name, want) in want_headers {
            let want: Vec<&str> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let have: Vec<String> = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if have.is_empty() {
                if want.first().is_some_and(|v| !v.is_empty()) {
                    errors.push(format!("header {name} not present: {headers:?}"));
                }
            } else if have != want {
                errors.push(format!(
                    "unexpected value for header {name}. have: {have:?}, want: {want:?}"
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let want_body = &expected["body"];
    if let Some(schema) = expected
        .get("schema")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
    {
        if bytes.is_empty() {
            errors.push("cannot validate empty body".to_owned());
            return Err(errors);
        }
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| vec![format!("problem generating json-schema schema: {e}")])?;
        match serde_json::from_slice::<Value>(bytes) {
            Ok(body) => {
                for error in validator.iter_errors(&body) {
                    errors.push(format!("problem validating the body: {error}"));
                }
            }
            Err(e) => errors.push(format!("problem unmarshaling the body: {e}")),
        }
    } else {
        match want_body {
            Value::Null => {}
            Value::String(want) => {
                if *want != text {
                    errors.push(format!(
                        "unexpected body.\n\t\thave: {text}\n\t\twant: {want}"
                    ));
                }
            }
            want => {
                let have = serde_json::from_slice::<Value>(bytes).map(|v| as_go_value(&v));
                if have.as_ref().ok() != Some(&as_go_value(want)) {
                    errors.push(format!(
                        "unexpected body.\n\t\thave: {text}\n\t\twant: {want}"
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A JSON value as Go's `interface{}` holds it: every number a float64.
fn as_go_value(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(as_go_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), as_go_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// JSON as Go's `encoding/json` writes it: object keys sorted, and with
/// `html` the characters `<`, `>` and `&` escaped (as `json.Encoder`
/// does by default).
fn go_json(value: &Value, html: bool) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(
                    ordered
                        .into_iter()
                        .map(|(k, v)| (k.clone(), v))
                        .collect::<Map<_, _>>(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let text = sorted(value).to_string();
    if html {
        text.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
    } else {
        text
    }
}

// ---------------------------------------------------------------------------
// The fake backend: integration.go's `mockBackendBuilder`.
// ---------------------------------------------------------------------------

/// How long `/delayed/` waits (integration.go's `-krakend_delay` default).
const DELAY: Duration = Duration::from_millis(200);

struct FakeBackend {
    addr: SocketAddr,
}

impl FakeBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(handle);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr }
    }
}

type GoResponse = Response<Full<Bytes>>;

/// A handler that gave up: the connection is closed without an answer, as
/// Go's server does when a handler panics.
#[derive(Debug)]
struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("handler aborted")
    }
}

impl std::error::Error for Abort {}

/// Go's `http.ServeMux` with integration.go's patterns: `/param_forwarding/`,
/// `/collection/`, `/delayed/` and `/redirect/` are subtrees, `/xml` and
/// `/jwk/symmetric` exact paths.
async fn handle(request: Request<Incoming>) -> Result<GoResponse, Abort> {
    let path = request.uri().path().to_owned();
    let subtree = |prefix: &str| path.starts_with(prefix);
    if path == "/jwk/symmetric" {
        return Ok(symmetric_jwk());
    }
    let known = path == "/xml"
        || [
            "/param_forwarding/",
            "/collection/",
            "/delayed/",
            "/redirect/",
        ]
        .iter()
        .any(|p| subtree(p));
    if !known {
        // The mux sends a subtree's root without its slash to the subtree.
        if ["/param_forwarding", "/collection", "/delayed", "/redirect"].contains(&path.as_str()) {
            let mut location = format!("{path}/");
            if let Some(query) = request.uri().query() {
                location.push('?');
                location.push_str(query);
            }
            return Ok(go_redirect(request.method(), &location, 301));
        }
        return Ok(go_error(StatusCode::NOT_FOUND, "404 page not found"));
    }
    // checkXForwardedFor: one loopback IP, nothing else.
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<IpAddr>().ok());
    if !forwarded.is_some_and(|ip| ip.to_canonical().is_loopback()) {
        return Ok(go_error(StatusCode::BAD_REQUEST, "invalid X-Forwarded-For"));
    }
    if path == "/xml" {
        return Ok(xml());
    }
    if subtree("/collection/") {
        let items: Vec<Value> = (0..10)
            .map(|i| serde_json::json!({"path": path, "i": i}))
            .collect();
        return Ok(go_json_response(&Value::Array(items), Vec::new()));
    }
    if subtree("/delayed/") {
        tokio::time::sleep(DELAY).await;
        return Ok(echo(request).await);
    }
    if subtree("/redirect/") {
        return redirect(&request);
    }
    Ok(echo(request).await)
}

/// `echoEndpoint`: the path, the query, the headers (without
/// `X-Forwarded-For`) and `"foo": 42`; the body too with `?dump_body=1`.
async fn echo(request: Request<Incoming>) -> GoResponse {
    let (parts, body) = request.into_parts();
    let query = go_query(parts.uri.query().unwrap_or_default());
    let mut headers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        // Go's server keeps `Host`, `Transfer-Encoding` and `Trailer` out
        // of `r.Header`.
        if matches!(
            name.as_str(),
            "host" | "transfer-encoding" | "trailer" | "x-forwarded-for"
        ) {
            continue;
        }
        headers
            .entry(go_canonical(name.as_str()))
            .or_default()
            .push(Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
    }
    let mut out = Map::new();
    out.insert(
        "path".to_owned(),
        Value::String(parts.uri.path().to_owned()),
    );
    out.insert(
        "query".to_owned(),
        Value::Object(
            query
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Value::Array(v.iter().cloned().map(Value::String).collect()),
                    )
                })
                .collect(),
        ),
    );
    out.insert(
        "headers".to_owned(),
        Value::Object(
            headers
                .into_iter()
                .map(|(k, v)| (k, Value::Array(v)))
                .collect(),
        ),
    );
    out.insert("foo".to_owned(), Value::from(42));
    if query
        .get("dump_body")
        .and_then(|v| v.first())
        .map(String::as_str)
        == Some("1")
    {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        out.insert(
            "body".to_owned(),
            Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        );
    }
    go_json_response(
        &Value::Object(out),
        vec![("set-cookie", "test1=test1"), ("set-cookie", "test2=test2")],
    )
}

/// `redirectEndpoint`: redirects to `/param_forwarding/` with the same
/// query, with the status `?status=` names. Without `status` the Go
/// handler panics (an index out of range): the connection closes.
fn redirect(request: &Request<Incoming>) -> Result<GoResponse, Abort> {
    let raw = request.uri().query().unwrap_or_default();
    let query = go_query(raw);
    let status = query.get("status").and_then(|v| v.first()).ok_or(Abort)?;
    let Ok(code) = status.parse::<u16>() else {
        return Ok(go_error(
            StatusCode::BAD_REQUEST,
            &format!("strconv.Atoi: parsing {status:?}: invalid syntax"),
        ));
    };
    let location = if raw.is_empty() {
        "/param_forwarding/".to_owned()
    } else {
        format!("/param_forwarding/?{raw}")
    };
    Ok(go_redirect(request.method(), &location, code))
}

fn xml() -> GoResponse {
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<user type="admin">
  <name>Elliot</name>
  <social>
    <facebook>https://facebook.com</facebook>
    <twitter>https://twitter.com</twitter>
    <youtube>https://youtube.com</youtube>
  </social>
</user>"#;
    Response::builder()
        .header("content-type", "application/xml; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn symmetric_jwk() -> GoResponse {
    let body = r#"{
  "keys": [
    {
      "kty": "oct",
      "alg": "A128KW",
      "k": "GawgguFyGrWKav7AX4VKUg",
      "kid": "sim1"
    },
    {
      "kty": "oct",
      "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
      "kid": "sim2",
      "alg": "HS256"
    }
  ]
}"#;
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// `json.NewEncoder(rw).Encode(value)`: sorted keys, HTML escaped, a
/// newline at the end.
fn go_json_response(value: &Value, extra: Vec<(&str, &str)>) -> GoResponse {
    let mut builder = Response::builder().header("content-type", "application/json");
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(go_json(value, true) + "\n")))
        .unwrap()
}

/// Go's `http.Error`.
fn go_error(status: StatusCode, message: &str) -> GoResponse {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(Bytes::from(format!("{message}\n"))))
        .unwrap()
}

/// Go's `http.Redirect` to a path.
fn go_redirect(method: &http::Method, location: &str, code: u16) -> GoResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut builder = Response::builder()
        .status(status)
        .header("location", location);
    let mut body = Bytes::new();
    if method == http::Method::GET || method == http::Method::HEAD {
        builder = builder.header("content-type", "text/html; charset=utf-8");
        let text = status.canonical_reason().unwrap_or_default();
        let href = location.replace('&', "&amp;");
        body = Bytes::from(format!("<a href=\"{href}\">{text}</a>.\n\n"));
    }
    builder.body(Full::new(body)).unwrap()
}

/// Go's `url.ParseQuery`: decoded keys and values, in order per key.
fn go_query(raw: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(unescape(key)).or_default().push(unescape(value));
    }
    map
}

/// `url.QueryUnescape`: `+` is a space, `%XX` a byte.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `textproto.CanonicalMIMEHeaderKey`: `x-y-z` is `X-Y-Z`.
fn go_canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[test]
fn fake_backend_helpers_behave_like_go() {
    assert_eq!(go_canonical("x-y-Z"), "X-Y-Z");
    assert_eq!(go_canonical("accept-encoding"), "Accept-Encoding");
    assert_eq!(unescape("a%20b+c%zz%4"), "a b c%zz%4");
    assert_eq!(
        go_json(&serde_json::json!({"b": 1, "a": "<&>"}), true),
        r#"{"a":"\u003c\u0026\u003e","b":1}"#
    );
}
