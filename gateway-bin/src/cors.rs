//! KrakenD's `security/cors` (root): CORS with the semantics KrakenD has
//! (rs/cors), around the whole router.
//!
//! tower-http's `CorsLayer` sets the configured headers on every answer; it
//! does not refuse a preflight whose method or headers are not allowed,
//! which KrakenD configs rely on (such a preflight is answered without any
//! `Access-Control-Allow-*` header, so the browser blocks the request).
//! This layer therefore implements the checks itself:
//!
//! - a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered
//!   by the gateway (204 by default, `options_success_status`) unless
//!   `options_passthrough`; when the origin, the method and every requested
//!   header are allowed, it carries `Access-Control-Allow-Origin` (`*` when
//!   every origin is allowed), `-Methods` (the requested one), `-Headers`
//!   (as requested), `-Credentials` and `Access-Control-Max-Age`;
//! - any other request with an allowed `Origin` and method gets
//!   `Access-Control-Allow-Origin`, `-Expose-Headers` and `-Credentials` on
//!   its answer; `Vary: Origin` is always added.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderName, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::config::from_value;
use switchboard_core::future::BoxFuture;
use switchboard_core::{Body, ConfigError};
use tower::{Layer, Service, ServiceExt};

use crate::config::GoDuration;

const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorsConfig {
    #[serde(default)]
    allow_origins: Vec<String>,
    #[serde(default)]
    allow_methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    max_age: Option<GoDuration>,
    #[serde(default)]
    options_passthrough: bool,
    #[serde(default)]
    options_success_status: Option<u16>,
    #[serde(default)]
    allow_private_network: bool,
    /// Accepted for compatibility: decisions are logged at debug level.
    #[serde(default)]
    debug: bool,
}

/// How an allowed origin is matched.
#[derive(Clone, Debug)]
enum OriginRule {
    Exact(String),
    /// One `*` in the pattern: a prefix and a suffix.
    Wildcard(String, String),
}

/// A compiled `security/cors`.
#[derive(Clone, Debug)]
pub(crate) struct Cors {
    all_origins: bool,
    origins: Vec<OriginRule>,
    /// Uppercase.
    methods: Vec<String>,
    all_headers: bool,
    /// Lowercase.
    headers: Vec<String>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    passthrough: bool,
    success: StatusCode,
    private_network: bool,
}

impl Cors {
    /// Reads `security/cors` (errors relative to it).
    pub(crate) fn from_config(value: &Value) -> Result<Self, ConfigError> {
        let config: CorsConfig = from_value(value)?;
        let _ = config.debug;
        let mut origins = Vec::new();
        let mut all_origins = config.allow_origins.is_empty();
        for (i, origin) in config.allow_origins.iter().enumerate() {
            let origin = origin.to_ascii_lowercase();
            if origin == "*" {
                all_origins = true;
                continue;
            }
            match origin.split_once('*') {
                Some((prefix, suffix)) if !suffix.contains('*') => {
                    origins.push(OriginRule::Wildcard(prefix.to_owned(), suffix.to_owned()));
                }
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("allow_origins[{i}]"),
                        "an origin may hold one `*` at most",
                    ));
                }
                None => origins.push(OriginRule::Exact(origin)),
            }
        }
        let mut methods = Vec::new();
        let listed = if config.allow_methods.is_empty() {
            vec!["GET".to_owned(), "POST".to_owned(), "HEAD".to_owned()]
        } else {
            config.allow_methods.clone()
        };
        for (i, method) in listed.iter().enumerate() {
            if Method::from_bytes(method.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    format!("allow_methods[{i}]"),
                    format!("{method:?} is not an HTTP method"),
                ));
            }
            methods.push(method.to_ascii_uppercase());
        }
        let listed = if config.allow_headers.is_empty() {
            vec![
                "Accept".to_owned(),
                "Content-Type".to_owned(),
                "X-Requested-With".to_owned(),
            ]
        } else {
            config.allow_headers.clone()
        };
        let mut all_headers = false;
        let mut headers = vec!["origin".to_owned()];
        for (i, header) in listed.iter().enumerate() {
            if header == "*" {
                all_headers = true;
                continue;
            }
            if HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    format!("allow_headers[{i}]"),
                    format!("{header:?} is not a header name"),
                ));
            }
            headers.push(header.to_ascii_lowercase());
        }
        let expose = if config.expose_headers.is_empty() {
            None
        } else {
            for (i, header) in config.expose_headers.iter().enumerate() {
                if HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        format!("expose_headers[{i}]"),
                        format!("{header:?} is not a header name"),
                    ));
                }
            }
            HeaderValue::from_str(&config.expose_headers.join(", ")).ok()
        };
        let success = match config.options_success_status {
            None => StatusCode::NO_CONTENT,
            Some(code) => StatusCode::from_u16(code)
                .ok()
                .filter(|s| s.is_success())
                .ok_or_else(|| {
                    ConfigError::new("options_success_status", "must be a 2xx status")
                })?,
        };
        let max_age = config
            .max_age
            .map(|d| d.0.as_secs())
            .filter(|s| *s > 0)
            .map(HeaderValue::from);
        Ok(Self {
            all_origins,
            origins,
            methods,
            all_headers,
            headers,
            expose,
            credentials: config.allow_credentials,
            max_age,
            passthrough: config.options_passthrough,
            success,
            private_network: config.allow_private_network,
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.all_origins {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Exact(exact) => *exact == origin,
            OriginRule::Wildcard(prefix, suffix) => {
                origin.len() >= prefix.len() + suffix.len()
                    && origin.starts_with(prefix.as_str())
                    && origin.ends_with(suffix.as_str())
            }
        })
    }

    fn method_allowed(&self, method: &str) -> bool {
        let method = method.to_ascii_uppercase();
        method == "OPTIONS" || self.methods.contains(&method)
    }

    fn headers_allowed(&self, requested: &str) -> bool {
        self.all_headers
            || requested
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .all(|h| self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.all_origins {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight.
    fn preflight(&self, request: &HeaderMap) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.success;
        let headers = response.headers_mut();
        for vary in [
            "Origin",
            "Access-Control-Request-Method",
            "Access-Control-Request-Headers",
        ] {
            headers.append(VARY, HeaderValue::from_static(vary));
        }
        let Some(origin) = request.get(ORIGIN) else {
            return response;
        };
        let method = request
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let requested = request.get(ACCESS_CONTROL_REQUEST_HEADERS);
        let allowed = origin.to_str().is_ok_and(|o| self.origin_allowed(o))
            && self.method_allowed(method)
            && requested
                .map(|v| v.to_str().is_ok_and(|h| self.headers_allowed(h)))
                .unwrap_or(true);
        if !allowed {
            tracing::debug!("CORS preflight refused");
            return response;
        }
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if let Ok(method) = HeaderValue::from_str(&method.to_ascii_uppercase()) {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, method);
        }
        if let Some(requested) = requested {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if self.private_network && request.contains_key(REQUEST_PRIVATE_NETWORK) {
            headers.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        response
    }

    /// The headers an actual request's answer gets.
    fn actual(&self, method: &Method, request: &HeaderMap, response: &mut HeaderMap) {
        response.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = request.get(ORIGIN) else {
            return;
        };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o))
            || !self.method_allowed(method.as_str())
        {
            return;
        }
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if let Some(expose) = &self.expose {
            response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        if self.credentials {
            response.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The layer around the router.
#[derive(Clone)]
pub(crate) struct CorsLayer {
    cors: Arc<Cors>,
}

impl CorsLayer {
    pub(crate) fn new(cors: Cors) -> Self {
        Self {
            cors: Arc::new(cors),
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsService {
            inner,
            cors: Arc::clone(&self.cors),
        }
    }
}

/// See [`CorsLayer`].
#[derive(Clone)]
pub(crate) struct CorsService<S> {
    inner: S,
    cors: Arc<Cors>,
}

impl<S> Service<Request<Body>> for CorsService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let cors = Arc::clone(&self.cors);
        let is_preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            let response = cors.preflight(request.headers());
            if !cors.passthrough {
                return Box::pin(async move { Ok(response) });
            }
            let inner = self.inner.clone();
            return Box::pin(async move {
                let (preflight, _) = response.into_parts();
                let mut answer = inner.oneshot(request).await?;
                for (name, value) in &preflight.headers {
                    answer.headers_mut().append(name, value.clone());
                }
                Ok(answer)
            });
        }
        let method = request.method().clone();
        let headers = request.headers().clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut response = inner.oneshot(request).await?;
            cors.actual(&method, &headers, response.headers_mut());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture() -> Cors {
        Cors::from_config(&json!({
            "allow_origins": ["*"],
            "allow_methods": ["POST", "GET"],
            "allow_headers": ["Origin", "Authorization", "Content-Type"],
            "expose_headers": ["Content-Length"],
            "max_age": "12h"
        }))
        .unwrap()
    }

    fn preflight(cors: &Cors, pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut request = HeaderMap::new();
        for (name, value) in pairs {
            request.insert(*name, HeaderValue::from_static(value));
        }
        cors.preflight(&request).headers().clone()
    }

    #[test]
    fn preflights_as_krakend() {
        let cors = fixture();
        let ok = preflight(
            &cors,
            &[
                ("origin", "http://foo.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "content-type,origin"),
            ],
        );
        assert_eq!(ok[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(ok[ACCESS_CONTROL_ALLOW_METHODS], "GET");
        assert_eq!(ok[ACCESS_CONTROL_ALLOW_HEADERS], "content-type,origin");
        assert_eq!(ok[ACCESS_CONTROL_MAX_AGE], "43200");
        let method = preflight(
            &cors,
            &[
                ("origin", "http://foo.example"),
                ("access-control-request-method", "PUT"),
            ],
        );
        assert!(!method.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let header = preflight(
            &cors,
            &[
                ("origin", "http://foo.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "X-PINGOTHER"),
            ],
        );
        assert!(!header.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!header.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
    }

    #[test]
    fn origins_and_actual_requests() {
        let cors = Cors::from_config(&json!({
            "allow_origins": ["https://*.example.com", "https://app.test"],
            "allow_credentials": true
        }))
        .unwrap();
        assert!(cors.origin_allowed("https://a.example.com"));
        assert!(cors.origin_allowed("HTTPS://APP.TEST"));
        assert!(!cors.origin_allowed("https://example.com.evil"));
        assert!(!cors.origin_allowed("https://evil.test"));
        let mut request = HeaderMap::new();
        request.insert(ORIGIN, HeaderValue::from_static("https://app.test"));
        let mut response = HeaderMap::new();
        cors.actual(&Method::GET, &request, &mut response);
        assert_eq!(response[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.test");
        assert_eq!(response[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(response[VARY], "Origin");
        let mut response = HeaderMap::new();
        cors.actual(&Method::DELETE, &request, &mut response);
        assert!(!response.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn config_errors() {
        let err = |v: Value| Cors::from_config(&v).unwrap_err().path;
        assert_eq!(err(json!({"allow_origins": ["a*b*"]})), "allow_origins[0]");
        assert_eq!(err(json!({"allow_methods": ["G T"]})), "allow_methods[0]");
        assert_eq!(err(json!({"allow_headers": ["a b"]})), "allow_headers[0]");
        assert_eq!(err(json!({"max_age": "12 parsecs"})), "max_age");
        assert_eq!(
            err(json!({"options_success_status": 500})),
            "options_success_status"
        );
        assert_eq!(err(json!({"allow_origin": ["*"]})), "allow_origin");
    }
}
