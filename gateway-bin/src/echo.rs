//! `/__echo/`: answers what it received, as JSON (SPEC §4.6). Credentials
//! are shown as present, never with their values.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use switchboard_core::buffer::request_bytes;
use switchboard_core::secrets::{REDACTED, Secrets, is_secret_header};
use switchboard_core::{Body, BodyLimit};

use switchboard_core::krakend::{canonical_header_name, decode_query_component};

/// Answers the echo object for a request. Credentials never show: secret
/// header and query names, values marked sensitive and every configured
/// secret are `[redacted]` (the one rule of `switchboard_core::secrets`).
pub(crate) async fn echo(
    mut request: Request<Body>,
    limit: usize,
    secrets: Arc<Secrets>,
) -> Response<Body> {
    request.extensions_mut().insert(BodyLimit(limit));
    let (parts, bytes) = match request_bytes(request).await {
        Ok(buffered) => buffered,
        Err(error) => return error.into_response(),
    };
    let query = parts
        .uri
        .query()
        .map(|q| secrets.redact_query(q))
        .unwrap_or_default();
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
    let text = body.to_string();
    let mut response = Response::new(Body::from(secrets.scrub(&text).into_owned()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
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
        let shown = if is_secret_header(name, value) {
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

/// KrakenD's `/__debug/`: logs the request (at DEBUG, credentials
/// redacted as in the echo) and answers `{"message":"pong"}`.
pub(crate) async fn debug(
    mut request: Request<Body>,
    limit: usize,
    secrets: Arc<Secrets>,
) -> Response<Body> {
    request.extensions_mut().insert(BodyLimit(limit));
    let (parts, bytes) = match request_bytes(request).await {
        Ok(buffered) => buffered,
        Err(error) => return error.into_response(),
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        let query = parts
            .uri
            .query()
            .map(|q| secrets.redact_query(q))
            .unwrap_or_default();
        let headers = headers(&parts.headers).to_string();
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
        tracing::debug!(
            method = %parts.method,
            path = parts.uri.path(),
            query = %query,
            headers = %secrets.scrub(&headers),
            body = %secrets.scrub(&body),
            "debug endpoint"
        );
    }
    let mut response = Response::new(Body::from(r#"{"message":"pong"}"#));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A text answer as KrakenD's router writes it.
fn router_text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// KrakenD's 405 on its endpoints: `405 method not allowed` as text.
pub(crate) async fn krakend_method_not_allowed() -> Response<Body> {
    let mut response = router_text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed");
    response
        .headers_mut()
        .insert(crate::proxy::COMPLETED, HeaderValue::from_static("false"));
    response
}

/// The endpoint paths, for the router's redirects of a path that differs
/// from one only by letter case, dot segments, double slashes or a trailing
/// slash (KrakenD's `disable_redirect_fixed_path` and
/// `disable_redirect_trailing_slash`, both off by default).
#[derive(Debug)]
pub(crate) struct PathFixes {
    /// Each path's segments; `None` for a `{param}`.
    routes: Vec<Vec<Option<String>>>,
    fix_case: bool,
    fix_slash: bool,
}

impl PathFixes {
    pub(crate) fn new<'a>(
        paths: impl Iterator<Item = &'a str>,
        fix_case: bool,
        fix_slash: bool,
    ) -> Self {
        let routes = paths
            .map(|path| {
                path.split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect()
            })
            .collect();
        Self {
            routes,
            fix_case,
            fix_slash,
        }
    }

    /// The path to redirect `path` to, if one endpoint serves its fixed
    /// form.
    fn fix(&self, path: &str) -> Option<String> {
        let mut candidates = Vec::new();
        if self.fix_slash {
            candidates.push(toggle_slash(path));
        }
        if self.fix_case {
            let clean = clean_path(path);
            candidates.push(clean.clone());
            if self.fix_slash {
                candidates.push(toggle_slash(&clean));
            }
        }
        candidates
            .iter()
            .find_map(|candidate| self.lookup(candidate, self.fix_case))
            .filter(|fixed| fixed != path)
    }

    /// The route `path` matches (literal segments compared ignoring ASCII
    /// case when `fold`), written with the route's own literals.
    fn lookup(&self, path: &str, fold: bool) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.routes.iter().find_map(|route| {
            if route.len() != segments.len() {
                return None;
            }
            let mut fixed = Vec::with_capacity(route.len());
            for (want, have) in route.iter().zip(&segments) {
                match want {
                    None if !have.is_empty() => fixed.push(*have),
                    None => return None,
                    Some(literal) if literal == have => fixed.push(literal.as_str()),
                    Some(literal) if fold && literal.eq_ignore_ascii_case(have) => {
                        fixed.push(literal.as_str());
                    }
                    Some(_) => return None,
                }
            }
            Some(fixed.join("/"))
        })
    }
}

/// `path` with a trailing slash added or removed.
fn toggle_slash(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        Some(_) => path.to_owned(),
        None => format!("{path}/"),
    }
}

/// `path` without double slashes and dot segments (always absolute).
fn clean_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    let mut clean = format!("/{}", out.join("/"));
    if path.ends_with('/') && clean.len() > 1 {
        clean.push('/');
    }
    clean
}

/// Paths no endpoint serves: KrakenD's `404 page not found` as text, or a
/// redirect (301 for GET, 307 otherwise) to the endpoint path the request
/// meant.
pub(crate) async fn not_found(fixes: Arc<PathFixes>, request: Request<Body>) -> Response<Body> {
    if let Some(fixed) = fixes.fix(request.uri().path()) {
        let location = match request.uri().query() {
            Some(query) => format!("{fixed}?{query}"),
            None => fixed,
        };
        if let Ok(location) = HeaderValue::from_str(&location) {
            let status = if request.method() == http::Method::GET {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::TEMPORARY_REDIRECT
            };
            let mut response = Response::new(Body::empty());
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
            return response;
        }
    }
    router_text(StatusCode::NOT_FOUND, "404 page not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn fixes_case_slashes_and_dots() {
        let fixes = PathFixes::new(["/static", "/a/{id}/B", "/dir/"].into_iter(), true, true);
        assert_eq!(fixes.fix("/StAtic").as_deref(), Some("/static"));
        assert_eq!(fixes.fix("/static/").as_deref(), Some("/static"));
        assert_eq!(fixes.fix("/a/XyZ/b").as_deref(), Some("/a/XyZ/B"));
        assert_eq!(fixes.fix("//static").as_deref(), Some("/static"));
        assert_eq!(fixes.fix("/x/../static").as_deref(), Some("/static"));
        assert_eq!(fixes.fix("/dir").as_deref(), Some("/dir/"));
        assert_eq!(fixes.fix("/static"), None);
        assert_eq!(fixes.fix("/other"), None);
        // Never a redirect off the gateway.
        assert_eq!(fixes.fix("//evil.example/static"), None);
        let strict = PathFixes::new(["/static"].into_iter(), false, false);
        assert_eq!(strict.fix("/StAtic"), None);
        assert_eq!(strict.fix("/static/"), None);
    }

    #[tokio::test]
    async fn echoes_and_redacts() {
        let request = Request::builder()
            .method("POST")
            .uri("/__echo/123?a=1&a=2&key=sk-secret")
            .header("authorization", "Bearer sk-secret")
            .header("x-llm", "openai")
            .body(Body::from("hello"))
            .unwrap();
        let response = echo(request, 1024, Arc::default()).await;
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
