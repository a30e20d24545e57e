//! `/__echo/`: answers what it received, as JSON (SPEC §4.6). Credentials
//! are shown as present, never with their values.

use std::collections::BTreeMap;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response};
use serde_json::{Map, Value, json};
use switchboard_core::buffer::request_bytes;
use switchboard_core::{Body, ErrorResponse};

use switchboard_core::krakend::{canonical_header_name, decode_query_component};

const REDACTED: &str = "[redacted]";

/// Headers whose values are secrets.
fn is_secret_header(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key" | "api-key"
    ) || name.contains("token")
        || name.contains("secret")
}

/// Query parameters whose values are secrets.
fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "key" | "api_key" | "apikey" | "api-key" | "access_token" | "token" | "password" | "secret"
    )
}

/// Answers the echo object for a request.
pub(crate) async fn echo(request: Request<Body>) -> Response<Body> {
    let (parts, bytes) = match request_bytes(request).await {
        Ok(buffered) => buffered,
        Err(error) => return error.into_response(),
    };
    let query = parts.uri.query().map(redact_query).unwrap_or_default();
    let path = parts.uri.path();
    let uri = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let body = json!({
        "req_uri": uri,
        "req_uri_details": {
            "user": "",
            "host": host,
            "path": path,
            "query": query,
            "fragment": "",
        },
        "req_method": parts.method.as_str(),
        "req_querystring": querystring(&query),
        "req_body": String::from_utf8_lossy(&bytes),
        "req_headers": headers(&parts.headers),
    });
    let mut response = Response::new(Body::from(body.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn redact_query(raw: &str) -> String {
    raw.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_param(&decode_query_component(key)) => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn querystring(raw: &str) -> Value {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(decode_query_component(key).into_owned())
            .or_default()
            .push(Value::String(decode_query_component(value).into_owned()));
    }
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::Array(v)))
            .collect::<Map<_, _>>(),
    )
}

fn headers(headers: &HeaderMap) -> Value {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, value) in headers {
        let shown = if is_secret_header(name.as_str()) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        map.entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(Value::String(shown));
    }
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::Array(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A 404 for paths no endpoint serves.
pub(crate) async fn not_found(request: Request<Body>) -> Response<Body> {
    ErrorResponse::not_found(format!("no endpoint serves {}", request.uri().path())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn echoes_and_redacts() {
        let request = Request::builder()
            .method("POST")
            .uri("/__echo/123?a=1&a=2&key=sk-secret")
            .header("authorization", "Bearer sk-secret")
            .header("x-llm", "openai")
            .body(Body::from("hello"))
            .unwrap();
        let response = echo(request).await;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(!text.contains("sk-secret"), "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["req_uri_details"]["path"], "/__echo/123");
        assert_eq!(value["req_querystring"]["a"], json!(["1", "2"]));
        assert_eq!(value["req_headers"]["X-Llm"], json!(["openai"]));
        assert_eq!(value["req_body"], "hello");
        assert_eq!(value["req_method"], "POST");
    }
}
