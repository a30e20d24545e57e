//! Builds the gateway from a loaded config: one tower pipeline per endpoint,
//! mounted on one router.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::routing::{MethodFilter, MethodRouter, any, get};
use http::header::HeaderValue;
use http::{Method, Request, Response};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::buffer::{check_content_length, collect};
use switchboard_core::config::from_value;
use switchboard_core::{Body, BodyLimit, ConfigError, ErrorResponse, RouteParams};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::config::{
    BackendConfig, DEFAULT_TIMEOUT, Encoding, EndpointConfig, LoadedConfig, RootConfig,
    normalize_host,
};
use crate::echo;
use crate::forward::{HeaderFilter, QueryFilter};
use crate::lint::{Lint, lints};
use crate::namespaces::{BuildContext, Level, apply_stages, build_stages};
use crate::proxy::{BackendRoute, EndpointState, PipelineService, Proxy, Shape};
use crate::strategy::{Condition, Strategy};
use crate::upstream::{HttpUpstream, InternalUpstream};
use crate::url_pattern::{Source, UrlPattern};

/// Server settings read from the root of the config.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Where to listen.
    pub listen: String,
    /// How long a client may take to send its headers (and, on HTTP/1.1,
    /// how long a keep-alive connection may idle between requests).
    pub read_header_timeout: Duration,
    /// The longest pause between two chunks of a request body.
    pub read_timeout: Duration,
    /// The most bytes of request headers.
    pub max_header_bytes: usize,
    /// How long in-flight requests and streams get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Whether to log one line per request.
    pub access_log: bool,
    /// Paths not logged.
    pub logger_skip_paths: Vec<String>,
}

/// A built gateway: the router with every endpoint, its server settings and
/// the lints found in the config.
#[derive(Clone)]
pub struct App {
    router: Router,
    settings: ServerSettings,
    lints: Vec<Lint>,
    endpoints: usize,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("settings", &self.settings)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The router serving every endpoint (usable in tests with `oneshot`).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The server settings.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// What `check` warns about.
    pub fn lints(&self) -> &[Lint] {
        &self.lints
    }

    /// How many endpoints the config declares.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }
}

/// The root `router` namespace (KrakenD's HTTP router options).
#[derive(Debug, Default, Deserialize)]
struct RouterOptions {
    #[serde(default)]
    max_payload_size: Option<usize>,
    #[serde(default)]
    disable_access_log: bool,
    #[serde(default)]
    logger_skip_paths: Vec<String>,
    #[serde(default)]
    health_path: Option<String>,
    #[serde(default)]
    shutdown_timeout: Option<crate::config::GoDuration>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// Builds the gateway. Every config error is returned, each with its JSON
/// path.
pub fn build_app(loaded: &LoadedConfig) -> Result<App, Vec<ConfigError>> {
    let root = &loaded.root;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let router_options: RouterOptions = match root.extra_config.get("router") {
        Some(value) => from_value(value).map_err(|e| vec![e.at("$.extra_config.router")])?,
        None => RouterOptions::default(),
    };
    for key in router_options.other.keys() {
        warnings.push(format!(
            "$.extra_config.router.{key}: router option not implemented; ignored"
        ));
    }
    let body_limit = router_options
        .max_payload_size
        .unwrap_or(switchboard_core::DEFAULT_BODY_LIMIT);

    let ctx = BuildContext {
        base_dir: &loaded.base_dir,
        root_extra: &root.extra_config,
        backend_url: None,
        streaming: false,
    };
    // Root namespaces build no layer; they are checked here.
    build_stages(
        &root.extra_config,
        Level::Root,
        "$.extra_config",
        &ctx,
        &mut warnings,
        &mut errors,
    );

    for (field, set) in [
        ("cache_ttl", root.cache_ttl.is_some()),
        ("write_timeout", root.write_timeout.is_some()),
        ("disable_rest", root.disable_rest),
    ] {
        if set {
            warnings.push(format!(
                "$.{field}: accepted for compatibility; has no effect"
            ));
        }
    }
    if root.output_encoding == Some(Encoding::String) {
        errors.push(ConfigError::new(
            "$.output_encoding",
            "\"string\" is a backend encoding; endpoints answer json, json-collection or no-op",
        ));
    }

    let mut root_hosts = Vec::new();
    for (i, host) in root.host.iter().enumerate() {
        match normalize_host(host) {
            Ok(host) => root_hosts.push(host),
            Err(message) => errors.push(ConfigError::new(format!("$.host[{i}]"), message)),
        }
    }
    let root_is_self =
        !root_hosts.is_empty() && root_hosts.iter().all(|h| is_self_host(h, root.port));
    let self_host = root_hosts
        .first()
        .and_then(|h| h.split_once("://").map(|(_, a)| a.to_owned()))
        .and_then(|a| HeaderValue::from_str(&a).ok())
        .unwrap_or_else(|| HeaderValue::from_static("localhost"));

    let cell: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let http = HttpUpstream::new();
    let internal = InternalUpstream::new(Arc::clone(&cell), self_host);

    let mut routes: BTreeMap<String, Vec<(Method, PipelineService, String)>> = BTreeMap::new();
    let mut shapes = BTreeSet::new();
    for (i, endpoint) in root.endpoints.iter().enumerate() {
        let at = format!("$.endpoints[{i}]");
        let built = build_endpoint(
            endpoint,
            &at,
            root,
            &root_hosts,
            root_is_self,
            body_limit,
            &ctx,
            &http,
            &internal,
            &mut warnings,
        );
        match built {
            Ok((method, service)) => {
                let shape = route_shape(&endpoint.endpoint);
                if !shapes.insert((shape.clone(), method.clone())) {
                    errors.push(ConfigError::new(
                        format!("{at}.endpoint"),
                        format!(
                            "{} {} is declared twice (or clashes with another path of the same shape)",
                            method, endpoint.endpoint
                        ),
                    ));
                    continue;
                }
                routes
                    .entry(endpoint.endpoint.clone())
                    .or_default()
                    .push((method, service, at));
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut router = Router::new();
    let health_path = router_options
        .health_path
        .clone()
        .unwrap_or_else(|| "/__health".to_owned());
    router = router.route(&health_path, get(health));
    router = router.route(crate::metrics::METRICS_PATH, get(crate::metrics::handler));
    if root.echo_endpoint {
        router = router
            .route("/__echo/", any(echo::echo))
            .route("/__echo/{*rest}", any(echo::echo));
    }
    if root.debug_endpoint {
        router = router
            .route("/__debug/", any(echo::echo))
            .route("/__debug/{*rest}", any(echo::echo));
    }
    for (path, methods) in routes {
        let mut method_router: MethodRouter = MethodRouter::new();
        let first_at = methods.first().map(|m| m.2.clone()).unwrap_or_default();
        for (method, service, at) in methods {
            let filter = MethodFilter::try_from(method.clone()).map_err(|_| {
                vec![ConfigError::new(
                    format!("{at}.method"),
                    format!("method {method} cannot be routed"),
                )]
            })?;
            method_router = method_router.on_service(filter, service);
        }
        let method_router = method_router.fallback(method_not_allowed);
        // The path was validated; a router that still refuses it is a
        // config error, not a crash.
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            router.clone().route(&path, method_router)
        }));
        match attempt {
            Ok(next) => router = next,
            Err(_) => {
                return Err(vec![ConfigError::new(
                    format!("{first_at}.endpoint"),
                    format!("path {path:?} clashes with another endpoint"),
                )]);
            }
        }
    }
    let router = router.fallback(echo::not_found);
    let _ = cell.set(router.clone());

    let lints = lints(root, &warnings);
    Ok(App {
        router,
        settings: ServerSettings {
            listen: format!(
                "{}:{}",
                root.listen_ip
                    .clone()
                    .unwrap_or_else(|| "0.0.0.0".to_owned()),
                root.port
            ),
            // hyper's header timer also runs while an HTTP/1.1 keep-alive
            // connection waits for its next request: it is the idle limit too.
            read_header_timeout: [root.read_header_timeout, root.idle_timeout]
                .into_iter()
                .flatten()
                .map(|d| d.0)
                .min()
                .unwrap_or(Duration::from_secs(10)),
            read_timeout: root
                .read_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
            max_header_bytes: root.max_header_bytes.unwrap_or(64 * 1024),
            shutdown_grace: router_options
                .shutdown_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
            access_log: !router_options.disable_access_log,
            logger_skip_paths: router_options.logger_skip_paths,
        },
        lints,
        endpoints: root.endpoints.len(),
    })
}

async fn health() -> Response<Body> {
    let mut response = Response::new(Body::from(r#"{"status":"ok"}"#));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn method_not_allowed(request: Request<Body>) -> Response<Body> {
    ErrorResponse::method_not_allowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}

/// Whether a normalised host is this gateway (loopback on its own port).
fn is_self_host(host: &str, port: u16) -> bool {
    let Ok(uri) = host.parse::<http::Uri>() else {
        return false;
    };
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let host_port = uri.port_u16().unwrap_or(default_port);
    let name = uri.host().unwrap_or_default();
    let loopback = matches!(name, "localhost" | "0.0.0.0" | "[::1]" | "::1" | "[::]")
        || name.starts_with("127.");
    loopback && host_port == port
}

/// A path with its parameter names erased: two paths of the same shape
/// clash in the router.
fn route_shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn validate_path(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("endpoint {path:?} must start with '/'"));
    }
    if path.starts_with("/__health")
        || path.starts_with("/__echo")
        || path.starts_with("/__debug")
        || path.starts_with(crate::metrics::METRICS_PATH)
    {
        return Err(format!("endpoint {path:?} is reserved for the gateway"));
    }
    let mut params = Vec::new();
    for segment in path.split('/').skip(1) {
        if let Some(inner) = segment.strip_prefix('{') {
            let name = inner
                .strip_suffix('}')
                .ok_or_else(|| format!("segment {segment:?} must be a whole {{param}}"))?;
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!("parameter {segment:?} has an invalid name"));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter {name:?} appears twice"));
            }
            params.push(name.to_owned());
        } else if segment.contains(['{', '}', '*']) {
            return Err(format!(
                "segment {segment:?} must be a literal or a whole {{param}}"
            ));
        } else if segment == "." || segment == ".." {
            return Err("endpoint paths must not contain '.' or '..' segments".to_owned());
        }
    }
    Ok(params)
}

fn parse_method(method: &str) -> Result<Method, String> {
    let upper = method.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid method {method:?}"))
        }
        _ => Err(format!(
            "method {method:?} is not supported (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)"
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_endpoint(
    endpoint: &EndpointConfig,
    at: &str,
    root: &RootConfig,
    root_hosts: &[String],
    root_is_self: bool,
    body_limit: usize,
    ctx: &BuildContext<'_>,
    http: &HttpUpstream,
    internal: &InternalUpstream,
    warnings: &mut Vec<String>,
) -> Result<(Method, PipelineService), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let params = validate_path(&endpoint.endpoint)
        .map_err(|m| vec![ConfigError::new(format!("{at}.endpoint"), m)])?;
    let method = parse_method(&endpoint.method)
        .map_err(|m| vec![ConfigError::new(format!("{at}.method"), m)])?;
    if endpoint.backend.is_empty() {
        errors.push(ConfigError::new(
            format!("{at}.backend"),
            "an endpoint needs at least one backend",
        ));
    }
    let headers = HeaderFilter::new(&endpoint.input_headers)
        .map_err(|m| vec![ConfigError::new(format!("{at}.input_headers"), m)])?;
    let query = QueryFilter::new(&endpoint.input_query_strings);
    let encoding = endpoint
        .output_encoding
        .or(root.output_encoding)
        .unwrap_or(Encoding::Json);
    let timeout = endpoint
        .timeout
        .or(root.timeout)
        .map(|d| d.0)
        .unwrap_or(DEFAULT_TIMEOUT);
    if endpoint.concurrent_calls.is_some_and(|n| n > 1) {
        warnings.push(format!(
            "{at}.concurrent_calls: backends are called once; concurrent_calls is ignored"
        ));
    }
    if encoding == Encoding::String {
        errors.push(ConfigError::new(
            format!("{at}.output_encoding"),
            "\"string\" is a backend encoding; endpoints answer json, json-collection or no-op",
        ));
    }
    if endpoint.cache_ttl.is_some() {
        warnings.push(format!(
            "{at}.cache_ttl: Switchboard does not cache responses; ignored"
        ));
    }
    if encoding == Encoding::NoOp && endpoint.backend.len() > 1 {
        errors.push(ConfigError::new(
            format!("{at}.output_encoding"),
            "no-op passes one backend through; this endpoint has several",
        ));
    }
    let has_jwt = endpoint.extra_config.contains_key("auth/validator");
    let strategy = Strategy::from_config(endpoint.extra_config.get("proxy")).unwrap_or_else(|e| {
        errors.push(e.at(&format!("{at}.extra_config.proxy")));
        Strategy::Parallel
    });

    let mut backends = Vec::new();
    for (j, backend) in endpoint.backend.iter().enumerate() {
        let bat = format!("{at}.backend[{j}]");
        match build_backend(
            backend,
            &bat,
            endpoint,
            &method,
            &params,
            &headers,
            has_jwt,
            root_hosts,
            root_is_self,
            ctx,
            http,
            internal,
            warnings,
        ) {
            Ok(route) => {
                if route.encoding == Encoding::NoOp && endpoint.backend.len() > 1 {
                    errors.push(ConfigError::new(
                        format!("{bat}.encoding"),
                        "no-op passes one backend through; this endpoint has several",
                    ));
                }
                let mut route = route;
                if backend.extra_config.contains_key("ai/llm")
                    && backend.extra_config.contains_key("ai/router")
                {
                    errors.push(ConfigError::new(
                        format!("{bat}.extra_config"),
                        "a backend takes ai/llm (one provider) or ai/router (routed), not both",
                    ));
                }
                if let Some(value) = backend.extra_config.get("backend/conditional") {
                    match Condition::from_config(value, &headers) {
                        Ok(condition) => route.condition = Some(condition),
                        Err(e) => errors
                            .push(e.at(&format!("{bat}.extra_config[\"backend/conditional\"]"))),
                    }
                }
                if !matches!(strategy, Strategy::Sequential { .. })
                    && let Some(name) = route.pattern.sources().find_map(|s| match s {
                        Source::Param(name) if crate::strategy::is_response_placeholder(name) => {
                            Some(name)
                        }
                        _ => None,
                    })
                {
                    errors.push(ConfigError::new(
                        format!("{bat}.url_pattern"),
                        format!("{{{name}}} needs the endpoint's proxy strategy \"sequential\""),
                    ));
                }
                backends.push(route);
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    let conditions: Vec<Option<&Condition>> =
        backends.iter().map(|b| b.condition.as_ref()).collect();
    if let Err(message) = crate::strategy::check_conditions(&conditions) {
        errors.push(ConfigError::new(format!("{at}.backend"), message));
    }
    let stages = build_stages(
        &endpoint.extra_config,
        Level::Endpoint,
        &format!("{at}.extra_config"),
        ctx,
        warnings,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    let proxy = Proxy::new(EndpointState {
        backends,
        headers,
        query,
        encoding,
        timeout,
        strategy,
    });
    let pipeline = apply_stages(stages, BoxCloneSyncService::new(proxy));
    let entry = EndpointEntry {
        limit: body_limit,
        has_params: !params.is_empty(),
        inner: pipeline,
    };
    Ok((method, BoxCloneSyncService::new(entry)))
}

#[allow(clippy::too_many_arguments)]
fn build_backend(
    backend: &BackendConfig,
    at: &str,
    endpoint: &EndpointConfig,
    endpoint_method: &Method,
    params: &[String],
    headers: &HeaderFilter,
    has_jwt: bool,
    root_hosts: &[String],
    root_is_self: bool,
    ctx: &BuildContext<'_>,
    http: &HttpUpstream,
    internal: &InternalUpstream,
    warnings: &mut Vec<String>,
) -> Result<BackendRoute, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let pattern = UrlPattern::parse(&backend.url_pattern)
        .map_err(|m| vec![ConfigError::new(format!("{at}.url_pattern"), m)])?;
    for source in pattern.sources() {
        let problem = match source {
            // `{respN_x}` is checked with the endpoint's strategy.
            Source::Param(name)
                if !params.iter().any(|p| p == name)
                    && !crate::strategy::is_response_placeholder(name) =>
            {
                Some(format!(
                    "{{{name}}} is not a parameter of endpoint {:?}",
                    endpoint.endpoint
                ))
            }
            Source::Header(name) if !headers.allows(name) => Some(format!(
                "{{input_headers.{name}}} needs {name:?} in the endpoint's input_headers"
            )),
            Source::Query(name)
                if !endpoint
                    .input_query_strings
                    .iter()
                    .any(|q| q == name || q == "*") =>
            {
                Some(format!(
                    "{{input_query_strings.{name}}} needs {name:?} in the endpoint's input_query_strings"
                ))
            }
            Source::Jwt(claim) if !has_jwt => Some(format!(
                "{{jwt.{claim}}} needs \"auth/validator\" in the endpoint's extra_config"
            )),
            _ => None,
        };
        if let Some(message) = problem {
            errors.push(ConfigError::new(format!("{at}.url_pattern"), message));
        }
    }
    let method = match &backend.method {
        Some(m) => {
            parse_method(m).map_err(|m| vec![ConfigError::new(format!("{at}.method"), m)])?
        }
        None => endpoint_method.clone(),
    };
    if backend.disable_host_sanitize {
        warnings.push(format!(
            "{at}.disable_host_sanitize: hosts are always normalised; ignored"
        ));
    }
    if let Some(sd) = &backend.sd
        && sd != "static"
    {
        errors.push(ConfigError::new(
            format!("{at}.sd"),
            format!("service discovery {sd:?} is not supported; use static hosts"),
        ));
    }
    let (hosts, is_internal) = if backend.host.is_empty() {
        (root_hosts.to_vec(), root_is_self)
    } else {
        let mut hosts = Vec::new();
        for (k, host) in backend.host.iter().enumerate() {
            match normalize_host(host) {
                Ok(h) => hosts.push(h),
                Err(m) => errors.push(ConfigError::new(format!("{at}.host[{k}]"), m)),
            }
        }
        (hosts, false)
    };
    if hosts.is_empty() && errors.is_empty() {
        errors.push(ConfigError::new(
            format!("{at}.host"),
            "no host: set the backend's host or the root host",
        ));
    }
    let mut mapping = Vec::new();
    for (from, to) in &backend.mapping {
        match to.as_str() {
            Some(to) => mapping.push((from.clone(), to.to_owned())),
            None => errors.push(ConfigError::new(
                format!("{at}.mapping.{from}"),
                "mapping values must be strings",
            )),
        }
    }
    let backend_url = hosts
        .first()
        .map(|host| format!("{host}{}", backend.url_pattern));
    let ctx = &BuildContext {
        backend_url: backend_url.as_deref(),
        streaming: endpoint.output_encoding == Some(Encoding::Streaming),
        ..*ctx
    };
    let stages = build_stages(
        &backend.extra_config,
        Level::Backend,
        &format!("{at}.extra_config"),
        ctx,
        warnings,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    let upstream: PipelineService = if is_internal {
        BoxCloneSyncService::new(internal.clone())
    } else {
        BoxCloneSyncService::new(http.clone())
    };
    let fixed_uri = BackendRoute::fixed_uri(&hosts, &pattern);
    let needs_context = is_internal || !stages.is_empty();
    Ok(BackendRoute {
        fixed_uri,
        needs_context,
        condition: None,
        pattern,
        method,
        hosts,
        next_host: AtomicUsize::new(0),
        encoding: backend.encoding.unwrap_or(Encoding::Json),
        shape: Shape {
            group: backend.group.clone(),
            target: backend.target.clone(),
            is_collection: backend.is_collection
                || backend.encoding == Some(Encoding::JsonCollection),
            allow: backend.allow.clone(),
            deny: backend.deny.clone(),
            mapping,
        },
        service: apply_stages(stages, upstream),
    })
}

/// The outermost service of an endpoint: records the body limit and the
/// path parameters, and refuses oversized bodies before any layer runs. A
/// body without a declared length is buffered (bounded) so that nothing
/// reaches a backend until it is known to fit.
#[derive(Clone)]
struct EndpointEntry {
    limit: usize,
    /// Whether the path declares `{params}` (most do not: no extraction).
    has_params: bool,
    inner: PipelineService,
}

impl Service<Request<Body>> for EndpointEntry {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.limit;
        let has_params = self.has_params;
        let inner = self.inner.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            if let Err(error) = check_content_length(&parts.headers, limit) {
                return Ok(error.into_response());
            }
            if has_params {
                let params = RawPathParams::from_request_parts(&mut parts, &())
                    .await
                    .map(|raw| {
                        raw.iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect::<RouteParams>()
                    })
                    .unwrap_or_default();
                parts.extensions.insert(params);
            }
            parts.extensions.insert(BodyLimit(limit));
            let body = if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
                body
            } else {
                match collect(body, limit).await {
                    Ok(bytes) => Body::from(bytes),
                    Err(error) => return Ok(error.into_response()),
                }
            };
            inner.oneshot(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_hosts() {
        assert!(is_self_host("http://localhost:8080", 8080));
        assert!(is_self_host("http://127.0.0.1:9000", 9000));
        assert!(!is_self_host("http://localhost:8081", 8080));
        assert!(!is_self_host("https://api.openai.com", 8080));
    }

    #[test]
    fn paths() {
        assert_eq!(validate_path("/a/{id}/b").unwrap(), vec!["id".to_owned()]);
        assert!(validate_path("a").is_err());
        assert!(validate_path("/a/x{id}").is_err());
        assert!(validate_path("/a/{id}/{id}").is_err());
        assert!(validate_path("/__echo/x").is_err());
        assert_eq!(route_shape("/a/{x}/b"), route_shape("/a/{y}/b"));
    }
}
