//! Builds the gateway from a loaded config: one tower pipeline per endpoint,
//! mounted on one router.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::routing::{MethodFilter, MethodRouter, any, get};
use futures_util::FutureExt;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::buffer::{check_content_length, collect};
use switchboard_core::config::from_value;
use switchboard_core::future::LayerFuture;
use switchboard_core::secrets::Secrets;
use switchboard_core::{
    Body, BodyLimit, ConfigError, ErrorResponse, KrakendError, RouteParams, SharedState,
};
use switchboard_telemetry::{RecordMetricsLayer, Telemetry, TelemetrySettings};
use tower::Service;
use tower::util::Either;

use crate::config::{
    BackendConfig, DEFAULT_TIMEOUT, Encoding, EndpointConfig, LoadedConfig, RootConfig,
    normalize_host,
};
use crate::echo;
use crate::forward::{HeaderFilter, QueryFilter};
use crate::lint::{Lint, fanout_lints, lints};
use crate::namespaces::{
    BackendLayers, BuildContext, EndpointLayers, PipelineService, RootLayers, Slots, build_layers,
};
use crate::proxy::{Backend, BackendRoute, EndpointState, Proxy, Shape};
use crate::strategy::{Condition, Strategy};
use crate::upstream::{CallBudget, HttpUpstream, InternalUpstream, PoolSettings};
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
    /// How long a whole request body may take to arrive, however steadily
    /// it trickles.
    pub body_timeout: Duration,
    /// How long a response write may wait for a client that takes no
    /// bytes before the connection is closed.
    pub send_timeout: Duration,
    /// The most concurrent streams on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
}

/// A built gateway: the router with every endpoint, its server settings and
/// the lints found in the config.
#[derive(Clone)]
pub struct App {
    router: Router,
    settings: ServerSettings,
    lints: Vec<Lint>,
    endpoints: usize,
    telemetry: Arc<Telemetry>,
    telemetry_settings: TelemetrySettings,
    generation: u64,
    secrets: Arc<Secrets>,
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

    /// Metrics and traces of this build (the metrics outlive reloads).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The telemetry namespaces of the config.
    pub fn telemetry_settings(&self) -> &TelemetrySettings {
        &self.telemetry_settings
    }

    /// Which build of the config this is: 1 for the first, +1 per build
    /// sharing the same [`SharedState`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The config's secret values, scrubbed from everything returned.
    pub fn secrets(&self) -> Arc<Secrets> {
        Arc::clone(&self.secrets)
    }
}

/// The root `router` namespace (KrakenD's HTTP router options).
#[derive(Debug, Default, Deserialize)]
struct RouterOptions {
    /// KrakenD names it `max_payload`.
    #[serde(default, alias = "max_payload")]
    max_payload_size: Option<usize>,
    #[serde(default)]
    disable_access_log: bool,
    #[serde(default)]
    logger_skip_paths: Vec<String>,
    #[serde(default)]
    health_path: Option<String>,
    /// KrakenD: a failed backend's error message is the body of the 500.
    #[serde(default)]
    return_error_msg: bool,
    /// KrakenD: no redirect of a path whose case (or dot segments, or
    /// double slashes) differs from an endpoint's.
    #[serde(default)]
    disable_redirect_fixed_path: bool,
    /// KrakenD: no redirect of a path that differs from an endpoint's by a
    /// trailing slash.
    #[serde(default)]
    disable_redirect_trailing_slash: bool,
    #[serde(default)]
    shutdown_timeout: Option<crate::config::GoDuration>,
    /// Switchboard: the deadline for a whole request body.
    #[serde(default)]
    body_timeout: Option<crate::config::GoDuration>,
    /// Switchboard: the most gateway-internal calls one request may cause.
    #[serde(default)]
    max_internal_calls: Option<usize>,
    /// Switchboard: the most concurrent streams per HTTP/2 connection.
    #[serde(default)]
    http2_max_concurrent_streams: Option<u32>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// Builds the gateway. Every config error is returned, each with its JSON
/// path.
pub fn build_app(loaded: &LoadedConfig) -> Result<App, Vec<ConfigError>> {
    build_app_with(loaded, &SharedState::new())
}

/// Builds the gateway with state kept from earlier builds (metrics, quota
/// and breaker state survive a reload this way).
pub fn build_app_with(loaded: &LoadedConfig, state: &SharedState) -> Result<App, Vec<ConfigError>> {
    match build_app_checked(loaded, state) {
        Ok(app) => Ok(app),
        Err(mut errors) => {
            if errors.is_empty() {
                errors.push(ConfigError::new(
                    "$",
                    "the config has mistakes (reported when it was read)",
                ));
            }
            Err(errors)
        }
    }
}

/// Whether a field anywhere in the config had a mistake when it was read
/// leniently ([`crate::config::parse_str_lenient`]).
fn read_badly(root: &RootConfig) -> bool {
    root.invalid.any()
        || root
            .endpoints
            .iter()
            .any(|e| e.invalid.any() || e.backend.iter().any(|b| b.invalid.any()))
}

/// As [`build_app_with`], for `check`: the errors are only those of the
/// build (none repeats a mistake found when the file was read), and a
/// config read with mistakes never builds.
pub(crate) fn build_app_checked(
    loaded: &LoadedConfig,
    state: &SharedState,
) -> Result<App, Vec<ConfigError>> {
    let root = &loaded.root;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let router_options: RouterOptions = match root.extra_config.get("router") {
        Some(value) => from_value(value).unwrap_or_else(|e| {
            errors.extend(e.at("$.extra_config.router").into_all());
            RouterOptions::default()
        }),
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
    let cors = root.extra_config.get("security/cors").and_then(|value| {
        crate::cors::Cors::from_config(value)
            .map_err(|e| errors.push(e.at("$.extra_config[\"security/cors\"]")))
            .ok()
    });
    let bots = root
        .extra_config
        .get("security/bot-detector")
        .and_then(|value| {
            crate::bot_detector::BotDetector::from_config(value)
                .map_err(|e| errors.push(e.at("$.extra_config[\"security/bot-detector\"]")))
                .ok()
        });

    // Root namespaces build no layer of their own: they are checked here,
    // and what endpoints build on (the API key ring) is compiled once.
    let mut root_layers = RootLayers {
        governance: crate::governance::Governance::from_root(&root.extra_config, state),
        breakers: crate::ops::breakers(state),
        ..RootLayers::default()
    };
    build_layers(
        &root.extra_config,
        Slots::Root(&mut root_layers),
        "$.extra_config",
        &BuildContext {
            base_dir: &loaded.base_dir,
            root: &RootLayers::default(),
            root_extra: &root.extra_config,
            backend_url: None,
            streaming: false,
        },
        &mut warnings,
        &mut errors,
    );
    let ctx = BuildContext {
        base_dir: &loaded.base_dir,
        root: &root_layers,
        root_extra: &root.extra_config,
        backend_url: None,
        streaming: false,
    };

    for (field, set) in [("disable_rest", root.disable_rest)] {
        if set {
            warnings.push(format!(
                "$.{field}: accepted for compatibility; has no effect"
            ));
        }
    }
    if let Some(encoding) = root.output_encoding
        && let Err(message) = crate::encoding::check_output(encoding)
    {
        errors.push(ConfigError::new("$.output_encoding", message));
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

    let health_path = router_options
        .health_path
        .clone()
        .unwrap_or_else(|| "/__health".to_owned());
    if let Err(message) = validate_health_path(&health_path) {
        errors.push(ConfigError::new(
            "$.extra_config.router.health_path",
            message,
        ));
    }
    if router_options.max_internal_calls == Some(0) {
        errors.push(ConfigError::new(
            "$.extra_config.router.max_internal_calls",
            "must be at least 1",
        ));
    }
    if root.max_idle_connections_per_host == Some(0) {
        errors.push(ConfigError::new(
            "$.max_idle_connections_per_host",
            "must be at least 1",
        ));
    }
    let max_internal_calls = router_options
        .max_internal_calls
        .unwrap_or(DEFAULT_MAX_INTERNAL_CALLS);

    let cell: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let http = HttpUpstream::new(&PoolSettings {
        max_idle_per_host: root
            .max_idle_connections_per_host
            .unwrap_or(DEFAULT_POOL_IDLE_PER_HOST),
        idle_timeout: root
            .idle_connection_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(90)),
    });
    let internal = InternalUpstream::new(Arc::clone(&cell), self_host, max_internal_calls);

    // The gateway's own paths, then every endpoint path, in a throwaway
    // router: a clash is reported here, with the path it clashes with.
    let mut clashes = RouteCheck::default();
    clashes.reserve(&health_path);
    if root.echo_endpoint {
        clashes.reserve("/__echo/");
        clashes.reserve("/__echo/{*rest}");
    }
    if root.debug_endpoint {
        clashes.reserve("/__debug");
        clashes.reserve("/__debug/");
        clashes.reserve("/__debug/{*rest}");
    }

    // Each endpoint's static pipeline, by path; it goes into one method
    // router per path (with its metrics layer around it, once the
    // telemetry is known), so the router's own box is the endpoint's only
    // one.
    let mut routes: BTreeMap<String, Vec<(MethodFilter, _)>> = BTreeMap::new();
    let secrets = Arc::new(crate::secret_values::collect(root));
    // Paths where some endpoint calls an LLM through `ai/*`: their 405 stays
    // the JSON error.
    let mut llm_paths: BTreeSet<String> = BTreeSet::new();
    let mut shapes = BTreeSet::new();
    let mut builder = PipelineBuilder {
        root,
        root_hosts: &root_hosts,
        root_is_self,
        root_hosts_invalid: root.invalid.has("host"),
        body_limit,
        return_error_msg: router_options.return_error_msg,
        secrets: (!secrets.is_empty()).then(|| Arc::clone(&secrets)),
        ctx: &ctx,
        http: &http,
        internal: &internal,
        warnings: &mut warnings,
    };
    for (i, endpoint) in root.endpoints.iter().enumerate() {
        let at = format!("$.endpoints[{i}]");
        if endpoint.invalid.has("*") {
            // Not an endpoint at all: reported when the file was read.
            continue;
        }
        let (method, service) = match builder.endpoint(endpoint, &at) {
            Ok(built) => built,
            Err(mut errs) => {
                errors.append(&mut errs);
                continue;
            }
        };
        let shape = route_shape(&endpoint.endpoint);
        if !shapes.insert((shape, method.clone())) {
            errors.push(ConfigError::new(
                format!("{at}.endpoint"),
                format!(
                    "{} {} is declared twice (or clashes with another path of the same shape)",
                    method, endpoint.endpoint
                ),
            ));
            continue;
        }
        if !routes.contains_key(&endpoint.endpoint)
            && let Err(message) = clashes.insert(&endpoint.endpoint)
        {
            errors.push(ConfigError::new(format!("{at}.endpoint"), message));
            continue;
        }
        let Ok(filter) = MethodFilter::try_from(method.clone()) else {
            errors.push(ConfigError::new(
                format!("{at}.method"),
                format!("method {method} cannot be routed"),
            ));
            continue;
        };
        if !krakend_endpoint(endpoint) {
            llm_paths.insert(endpoint.endpoint.clone());
        }
        routes
            .entry(endpoint.endpoint.clone())
            .or_default()
            .push((filter, service));
    }
    let telemetry_settings =
        match TelemetrySettings::from_extra(&root.extra_config, "$.extra_config") {
            Ok(settings) => settings,
            Err(errs) => {
                errors.extend(errs.into_iter().flat_map(ConfigError::into_all));
                TelemetrySettings::default()
            }
        };
    if !errors.is_empty() || read_badly(root) {
        return Err(errors);
    }
    let telemetry = crate::ops::telemetry_for(state, &telemetry_settings).map_err(|e| vec![e])?;

    let mut router = Router::new();
    let generation = crate::ops::next_generation(state);
    let metered = RecordMetricsLayer::new(telemetry.clone());
    router = router.route(
        &health_path,
        get(move || health(generation)).route_layer(metered.clone()),
    );
    if root.echo_endpoint {
        let scrub = Arc::clone(&secrets);
        let echo =
            any(move |request: Request<Body>| echo::echo(request, body_limit, Arc::clone(&scrub)))
                .layer(metered.clone());
        router = router
            .route("/__echo/", echo.clone())
            .route("/__echo/{*rest}", echo);
    }
    if root.debug_endpoint {
        let scrub = Arc::clone(&secrets);
        let debug =
            any(move |request: Request<Body>| echo::debug(request, body_limit, Arc::clone(&scrub)))
                .layer(metered);
        router = router
            .route("/__debug", debug.clone())
            .route("/__debug/", debug.clone())
            .route("/__debug/{*rest}", debug);
    }
    let fixes = Arc::new(echo::PathFixes::new(
        routes.keys().map(String::as_str),
        !router_options.disable_redirect_fixed_path,
        !router_options.disable_redirect_trailing_slash,
    ));
    for (path, services) in routes {
        let llm = llm_paths.contains(&path);
        let mut method_router = MethodRouter::new();
        for (filter, service) in services {
            // The endpoint's series are looked up here, once.
            let metered = RecordMetricsLayer::for_endpoint(telemetry.clone(), &path, llm);
            method_router =
                method_router.on_service(filter, tower::Layer::layer(&metered, service));
        }
        let fallback = if llm {
            method_router.fallback(method_not_allowed)
        } else {
            method_router.fallback(echo::krakend_method_not_allowed)
        };
        router = router.route(&path, fallback);
    }
    let router =
        router.fallback(move |request: Request<Body>| echo::not_found(Arc::clone(&fixes), request));
    // KrakenD runs these on every request, before routing: bots first,
    // then CORS around everything (a preflight never reaches a route).
    let router = match bots {
        Some(bots) => router.layer(crate::bot_detector::BotDetectorLayer::new(bots)),
        None => router,
    };
    let router = match cors {
        Some(cors) => router.layer(crate::cors::CorsLayer::new(cors)),
        None => router,
    };
    let _ = cell.set(router.clone());

    let mut lints = lints(root, &warnings);
    lints.extend(fanout_lints(
        root,
        max_internal_calls,
        usize::from(crate::upstream::MAX_INTERNAL_DEPTH),
    ));
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
            body_timeout: router_options
                .body_timeout
                .map(|d| d.0)
                .unwrap_or(DEFAULT_BODY_TIMEOUT),
            send_timeout: root
                .write_timeout
                .map(|d| d.0)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_SEND_TIMEOUT),
            http2_max_concurrent_streams: router_options
                .http2_max_concurrent_streams
                .unwrap_or(DEFAULT_H2_STREAMS),
        },
        lints,
        endpoints: root.endpoints.len(),
        telemetry,
        telemetry_settings,
        generation,
        secrets,
    })
}

/// The deadline for a whole request body.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a response write may wait for a client that reads nothing.
pub(crate) const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent streams per HTTP/2 connection.
pub(crate) const DEFAULT_H2_STREAMS: u32 = 100;
/// Gateway-internal calls one client request may cause in all.
pub(crate) const DEFAULT_MAX_INTERNAL_CALLS: usize = 64;
/// Idle pooled connections kept per upstream host.
pub(crate) const DEFAULT_POOL_IDLE_PER_HOST: usize = 1024;

/// A health path the router can mount and no endpoint can shadow.
fn validate_health_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("health_path {path:?} must start with '/'"));
    }
    if path.contains(['{', '}', '*', '?', '#', ':'])
        || path.split('/').any(|s| s == "." || s == "..")
    {
        return Err(format!(
            "health_path {path:?} must be a literal path (no {{params}}, ':', wildcards, query or dot segments)"
        ));
    }
    if path.starts_with("/__echo") || path.starts_with("/__debug") {
        return Err(format!("health_path {path:?} is reserved for the gateway"));
    }
    Ok(())
}

/// KrakenD's health answer (`agents`: the async agents, none here; `now`:
/// the time), with the config generation.
async fn health(generation: u64) -> Response<Body> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = format!(
        r#"{{"agents":{{}},"now":"{now}","status":"ok","config_generation":{generation}}}"#
    );
    let mut response = Response::new(Body::from(body));
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
    if path.starts_with("/__health") || path.starts_with("/__echo") || path.starts_with("/__debug")
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

/// What the endpoint builder needs, gathered once (instead of long
/// argument lists).
struct PipelineBuilder<'a> {
    root: &'a RootConfig,
    root_hosts: &'a [String],
    root_is_self: bool,
    /// Whether the root `host` had a mistake (reported when the file was
    /// read).
    root_hosts_invalid: bool,
    body_limit: usize,
    /// `router.return_error_msg`.
    return_error_msg: bool,
    /// The config's secret values, when it has any: body generators scrub
    /// them from what they log.
    secrets: Option<Arc<Secrets>>,
    ctx: &'a BuildContext<'a>,
    http: &'a HttpUpstream,
    internal: &'a InternalUpstream,
    warnings: &'a mut Vec<String>,
}

/// What a backend needs to know of its endpoint.
struct EndpointFacts<'a> {
    endpoint: &'a EndpointConfig,
    method: &'a Method,
    /// `None` when the path had a mistake: its parameters are unknown.
    params: Option<&'a [String]>,
    headers: &'a HeaderFilter,
    has_jwt: bool,
}

impl PipelineBuilder<'_> {
    /// One endpoint: its method and its whole static pipeline.
    fn endpoint(
        &mut self,
        endpoint: &EndpointConfig,
        at: &str,
    ) -> Result<(Method, impl PipelineService + use<>), Vec<ConfigError>> {
        let mut errors = Vec::new();
        // A field with a mistake (reported when the file was read) holds
        // its default: what depends on it is not checked again.
        let invalid = &endpoint.invalid;
        let params = if invalid.has("endpoint") {
            None
        } else {
            validate_path(&endpoint.endpoint)
                .map_err(|m| errors.push(ConfigError::new(format!("{at}.endpoint"), m)))
                .ok()
        };
        let method = parse_method(&endpoint.method).unwrap_or_else(|m| {
            errors.push(ConfigError::new(format!("{at}.method"), m));
            Method::GET
        });
        if endpoint.backend.is_empty() && !invalid.has("backend") {
            errors.push(ConfigError::new(
                format!("{at}.backend"),
                "an endpoint needs at least one backend",
            ));
        }
        let headers = if invalid.has("input_headers") {
            HeaderFilter::All
        } else {
            HeaderFilter::new(&endpoint.input_headers).unwrap_or_else(|m| {
                errors.push(ConfigError::new(format!("{at}.input_headers"), m));
                HeaderFilter::All
            })
        };
        let query = QueryFilter::new(&endpoint.input_query_strings);
        let encoding = endpoint
            .output_encoding
            .or(self.root.output_encoding)
            .unwrap_or(Encoding::Json);
        let timeout = endpoint
            .timeout
            .or(self.root.timeout)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_TIMEOUT);
        if endpoint.concurrent_calls.is_some_and(|n| n > 1) {
            self.warnings.push(format!(
                "{at}.concurrent_calls: backends are called once; concurrent_calls is ignored"
            ));
        }
        if let Err(message) = crate::encoding::check_output(encoding) {
            errors.push(ConfigError::new(format!("{at}.output_encoding"), message));
        }
        let cache_control = endpoint
            .cache_ttl
            .or(self.root.cache_ttl)
            .map(|ttl| ttl.0.as_secs())
            .filter(|secs| *secs > 0)
            .and_then(|secs| HeaderValue::from_str(&format!("public, max-age={secs}")).ok());
        if encoding == Encoding::NoOp && endpoint.backend.len() > 1 {
            errors.push(ConfigError::new(
                format!("{at}.output_encoding"),
                "no-op passes one backend through; this endpoint has several",
            ));
        }
        if encoding == Encoding::Streaming && endpoint.backend.len() > 1 {
            errors.push(ConfigError::new(
                format!("{at}.output_encoding"),
                "streaming passes one backend's stream through; this endpoint has several",
            ));
        }
        let has_jwt = endpoint.extra_config.contains_key("auth/validator");
        let mut finishing =
            crate::render::Finishing::from_config(endpoint.extra_config.get("proxy"))
                .unwrap_or_else(|e| {
                    errors.push(e.at(&format!("{at}.extra_config.proxy")));
                    crate::render::Finishing::default()
                });
        if let Some(value) = endpoint.extra_config.get("auth/signer") {
            match crate::signer::Signer::from_config(value, self.ctx.base_dir) {
                Ok(signer) => finishing.signer = Some(Arc::new(signer)),
                Err(e) => errors.push(e.at(&format!("{at}.extra_config[\"auth/signer\"]"))),
            }
        }
        let bots = endpoint
            .extra_config
            .get("security/bot-detector")
            .and_then(|value| {
                crate::bot_detector::BotDetector::from_config(value)
                    .map_err(|e| {
                        errors.push(e.at(&format!("{at}.extra_config[\"security/bot-detector\"]")))
                    })
                    .ok()
            })
            .map(Arc::new);
        let strategy =
            Strategy::from_config(endpoint.extra_config.get("proxy")).unwrap_or_else(|e| {
                errors.extend(e.at(&format!("{at}.extra_config.proxy")).into_all());
                Strategy::Parallel
            });

        let mut backends = Vec::new();
        let mut shadows = Vec::new();
        for (j, backend) in endpoint.backend.iter().enumerate() {
            let bat = format!("{at}.backend[{j}]");
            if backend.invalid.has("*") {
                // Not a backend at all: reported when the file was read.
                continue;
            }
            let of = EndpointFacts {
                endpoint,
                method: &method,
                params: params.as_deref(),
                headers: &headers,
                has_jwt,
            };
            match self.backend(backend, &bat, &of) {
                Ok(route) => {
                    // A sequential chain may read a no-op backend's answer
                    // (`resp0`) without merging it.
                    if route.encoding == Encoding::NoOp
                        && endpoint.backend.len() > 1
                        && !matches!(strategy, Strategy::Sequential { .. })
                    {
                        errors.push(ConfigError::new(
                            format!("{bat}.encoding"),
                            "no-op passes one backend through; this endpoint has several",
                        ));
                    }
                    let mut route = route;
                    check_backend_strategy(
                        backend,
                        &bat,
                        &headers,
                        &strategy,
                        &mut route,
                        &mut errors,
                    );
                    let backend_proxy = crate::strategy::BackendProxy::from_config(
                        backend.extra_config.get("proxy"),
                    )
                    .unwrap_or_else(|e| {
                        errors.push(e.at(&format!("{bat}.extra_config.proxy")));
                        crate::strategy::BackendProxy::default()
                    });
                    route.shape.flatmap = backend_proxy.flatmap.map(Arc::new);
                    if backend_proxy.shadow {
                        shadows.push(route);
                    } else {
                        backends.push(route);
                    }
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        let conditions: Vec<Option<&Condition>> =
            backends.iter().map(|b| b.condition.as_ref()).collect();
        if let Err(message) = crate::strategy::check_conditions(&conditions) {
            errors.push(ConfigError::new(format!("{at}.backend"), message));
        }
        let mut layers = EndpointLayers::default();
        build_layers(
            &endpoint.extra_config,
            Slots::Endpoint(&mut layers),
            &format!("{at}.extra_config"),
            self.ctx,
            self.warnings,
            &mut errors,
        );
        if backends.is_empty() && !shadows.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.backend"),
                "every backend is a shadow: the endpoint needs one that answers",
            ));
        }
        // A field with a mistake reported when the file was read fails the
        // endpoint too, though nothing new is reported here.
        let read_badly = invalid.any() || endpoint.backend.iter().any(|b| b.invalid.any());
        if !errors.is_empty() || read_badly {
            return Err(errors);
        }
        let krakend = krakend_endpoint(endpoint);
        let shadow_proxy = (!shadows.is_empty()).then(|| {
            Proxy::new(EndpointState {
                backends: shadows,
                headers: headers.clone(),
                query: query.clone(),
                encoding: Encoding::Json,
                timeout,
                strategy: Strategy::Parallel,
                cache_control: None,
                krakend_errors: krakend,
            })
        });
        let proxy = Proxy::new(EndpointState {
            backends,
            headers,
            query,
            encoding,
            timeout,
            strategy,
            cache_control,
            krakend_errors: krakend,
        });
        let proxy = crate::render::ExtendedProxy::new(proxy, shadow_proxy, finishing);
        let entry = EndpointEntry {
            answers: KrakendAnswers {
                enabled: krakend,
                return_error_msg: self.return_error_msg,
            },
            limit: self.body_limit,
            has_params: params.as_ref().is_some_and(|p| !p.is_empty()),
            calls_gateway: self.root_is_self && endpoint.backend.iter().any(|b| b.host.is_empty()),
            bots,
            render: crate::render::needs_render(encoding).then_some(encoding),
            secrets: self
                .secrets
                .clone()
                .filter(|_| uses_body_generator(endpoint)),
            inner: layers.wrap(proxy),
        };
        Ok((method, entry))
    }

    fn backend(
        &mut self,
        backend: &BackendConfig,
        at: &str,
        of: &EndpointFacts<'_>,
    ) -> Result<BackendRoute, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let invalid = &backend.invalid;
        // `None` when the pattern had a mistake: its placeholders are not
        // checked, and the backend is not built.
        let pattern = if invalid.has("url_pattern") {
            None
        } else {
            UrlPattern::parse(&backend.url_pattern)
                .map_err(|m| errors.push(ConfigError::new(format!("{at}.url_pattern"), m)))
                .ok()
        };
        for source in pattern.iter().flat_map(UrlPattern::sources) {
            let problem = match source {
                // `{respN_x}` is checked with the endpoint's strategy.
                Source::Param(name)
                    if of
                        .params
                        .is_some_and(|params| !params.iter().any(|p| p == name))
                        && !crate::strategy::is_response_placeholder(name) =>
                {
                    Some(format!(
                        "{{{name}}} is not a parameter of endpoint {:?}",
                        of.endpoint.endpoint
                    ))
                }
                Source::Header(name) if !of.headers.allows(name) => Some(format!(
                    "{{input_headers.{name}}} needs {name:?} in the endpoint's input_headers"
                )),
                Source::Query(name)
                    if !of.endpoint.invalid.has("input_query_strings")
                        && !of
                            .endpoint
                            .input_query_strings
                            .iter()
                            .any(|q| q == name || q == "*") =>
                {
                    Some(format!(
                        "{{input_query_strings.{name}}} needs {name:?} in the endpoint's input_query_strings"
                    ))
                }
                Source::Jwt(claim) if !of.has_jwt => Some(format!(
                    "{{jwt.{claim}}} needs \"auth/validator\" in the endpoint's extra_config"
                )),
                _ => None,
            };
            if let Some(message) = problem {
                errors.push(ConfigError::new(format!("{at}.url_pattern"), message));
            }
        }
        let method = match &backend.method {
            Some(m) => parse_method(m).unwrap_or_else(|m| {
                errors.push(ConfigError::new(format!("{at}.method"), m));
                of.method.clone()
            }),
            None => of.method.clone(),
        };
        if backend.disable_host_sanitize {
            self.warnings.push(format!(
                "{at}.disable_host_sanitize: hosts are always normalised; ignored"
            ));
        }
        if let Some(encoding) = backend.encoding
            && let Err(message) = crate::encoding::check_backend(encoding)
        {
            errors.push(ConfigError::new(format!("{at}.encoding"), message));
        }
        let http_options =
            crate::backend_http::BackendHttp::from_config(backend.extra_config.get("backend/http"))
                .unwrap_or_else(|e| {
                    errors.push(e.at(&format!("{at}.extra_config[\"backend/http\"]")));
                    crate::backend_http::BackendHttp::default()
                });
        if let Some(sd) = &backend.sd
            && sd != "static"
        {
            errors.push(ConfigError::new(
                format!("{at}.sd"),
                format!("service discovery {sd:?} is not supported; use static hosts"),
            ));
        }
        let (hosts, is_internal) = if backend.host.is_empty() {
            (self.root_hosts.to_vec(), self.root_is_self)
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
        let hosts_unknown =
            invalid.has("host") || (backend.host.is_empty() && self.root_hosts_invalid);
        if hosts.is_empty() && errors.is_empty() && !hosts_unknown {
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
        let ctx = BuildContext {
            backend_url: backend_url.as_deref(),
            streaming: of.endpoint.output_encoding == Some(Encoding::Streaming),
            ..*self.ctx
        };
        let mut layers = BackendLayers::default();
        build_layers(
            &backend.extra_config,
            Slots::Backend(&mut layers),
            &format!("{at}.extra_config"),
            &ctx,
            self.warnings,
            &mut errors,
        );
        let Some(pattern) = pattern.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let upstream = if is_internal {
            Either::Right(self.internal.clone())
        } else {
            Either::Left(self.http.clone())
        };
        let fixed_uri = BackendRoute::fixed_uri(&hosts, &pattern);
        let needs_context = is_internal || !layers.is_empty();
        Ok(BackendRoute {
            fixed_uri,
            needs_context,
            krakend_client: !calls_llm(backend),
            condition: None,
            timeout: backend.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
            http: http_options,
            pattern,
            method,
            host_values: BackendRoute::host_values(&hosts),
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
                flatmap: None,
            },
            service: Box::new(Backend(layers.wrap(upstream))),
        })
    }
}

/// The paths the router will hold, in a throwaway `matchit` router, so that
/// a clash is a config error naming both paths (axum would panic).
#[derive(Default)]
struct RouteCheck {
    router: matchit::Router<String>,
}

impl RouteCheck {
    /// A path the gateway serves itself.
    fn reserve(&mut self, path: &str) {
        // The gateway's own paths never clash with each other.
        let _ = self.router.insert(path, path.to_owned());
    }

    /// An endpoint path; the message names what it clashes with.
    fn insert(&mut self, path: &str) -> Result<(), String> {
        self.router
            .insert(path, path.to_owned())
            .map_err(|error| match error {
                matchit::InsertError::Conflict { with } => {
                    format!("path {path:?} clashes with {with:?}")
                }
                other => format!("path {path:?} cannot be routed: {other}"),
            })
    }
}

/// The outermost service of an endpoint: records the body limit and the
/// path parameters, and refuses oversized bodies before any layer runs. A
/// body without a declared length is buffered (bounded) so that nothing
/// reaches a backend until it is known to fit.
#[derive(Clone)]
struct EndpointEntry<S> {
    /// KrakenD's answers to rejections, on KrakenD endpoints.
    answers: KrakendAnswers,
    limit: usize,
    /// Whether the path declares `{params}` (most do not: no extraction).
    has_params: bool,
    /// Whether a backend calls the gateway itself: the request then gets
    /// the budget of internal calls its whole tree shares.
    calls_gateway: bool,
    /// The endpoint's `security/bot-detector`.
    bots: Option<Arc<crate::bot_detector::BotDetector>>,
    /// An `output_encoding` written after every layer (xml, negotiate,
    /// string).
    render: Option<Encoding>,
    /// The config's secrets, for the body generators of this endpoint and
    /// its backends (only set when there are both).
    secrets: Option<Arc<Secrets>>,
    inner: S,
}

impl<S: PipelineService> Service<Request<Body>> for EndpointEntry<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = LayerFuture<S::Future, Infallible, KrakendAnswers>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        use http_body::Body as _;
        let limit = self.limit;
        if let Some(bots) = &self.bots
            && let Some(refusal) = bots.refuse(request.headers())
        {
            return LayerFuture::respond(refusal);
        }
        if let Some(output) = self
            .render
            .and_then(|encoding| crate::render::output_for(encoding, request.headers()))
        {
            let clone = self.clone();
            let mut plain = std::mem::replace(self, clone);
            plain.render = None;
            return LayerFuture::boxed(async move {
                let Ok(response) = plain.call(request).await;
                Ok(crate::render::render(output, response).await)
            });
        }
        let (mut parts, body) = request.into_parts();
        if let Err(error) = check_content_length(&parts.headers, limit) {
            return LayerFuture::respond(error.into_response());
        }
        if self.has_params {
            // The router put the matched values in the extensions: the
            // extractor is ready at once.
            let params = RawPathParams::from_request_parts(&mut parts, &())
                .now_or_never()
                .and_then(Result::ok)
                .map(|raw| {
                    raw.iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect::<RouteParams>()
                })
                .unwrap_or_default();
            parts.extensions.insert(params);
        }
        if limit != switchboard_core::DEFAULT_BODY_LIMIT {
            // Without one, readers take the default: one entry fewer, and
            // the request's extension map is not grown.
            parts.extensions.insert(BodyLimit(limit));
        }
        if let Some(secrets) = &self.secrets {
            parts.extensions.insert(Arc::clone(secrets));
        }
        if self.calls_gateway && parts.extensions.get::<CallBudget>().is_none() {
            parts.extensions.insert(CallBudget::default());
        }
        let answers = self.answers;
        if parts.headers.contains_key(http::header::CONTENT_LENGTH) || body.is_end_stream() {
            return LayerFuture::then(self.inner.call(Request::from_parts(parts, body)), answers);
        }
        // A body of unknown length is read (bounded) before anything goes
        // upstream.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        LayerFuture::boxed(async move {
            match collect(body, limit).await {
                Ok(bytes) => inner
                    .call(Request::from_parts(parts, Body::from(bytes)))
                    .await
                    .map(|response| answers.apply(response)),
                Err(error) => Ok(error.into_response()),
            }
        })
    }
}

/// Whether a backend calls an LLM vendor through `ai/llm` or `ai/router`
/// (the gateway is then the vendor's client, not KrakenD's proxy).
fn calls_llm(backend: &BackendConfig) -> bool {
    backend.extra_config.contains_key("ai/llm") || backend.extra_config.contains_key("ai/router")
}

/// Whether an endpoint answers errors as KrakenD does: every endpoint but
/// the unified LLM ones, which answer in their client format's shape.
/// Whether the endpoint or one of its backends renders a body template.
fn uses_body_generator(endpoint: &EndpointConfig) -> bool {
    const NAMES: [&str; 3] = [
        "modifier/request-body-generator",
        "modifier/body-generator",
        "modifier/response-body-generator",
    ];
    std::iter::once(&endpoint.extra_config)
        .chain(endpoint.backend.iter().map(|b| &b.extra_config))
        .any(|extra| NAMES.iter().any(|name| extra.contains_key(*name)))
}

fn krakend_endpoint(endpoint: &EndpointConfig) -> bool {
    !endpoint.backend.iter().any(calls_llm)
}

/// Rewrites a rejection the way KrakenD answers it (see
/// [`KrakendError`]), on KrakenD endpoints.
#[derive(Clone, Copy, Debug)]
struct KrakendAnswers {
    enabled: bool,
    return_error_msg: bool,
}

impl KrakendAnswers {
    fn apply(self, response: Response<Body>) -> Response<Body> {
        if !self.enabled || response.extensions().get::<KrakendError>().is_none() {
            return response;
        }
        let (mut parts, _json) = response.into_parts();
        let Some(answer) = parts.extensions.remove::<KrakendError>() else {
            return Response::from_parts(parts, Body::empty());
        };
        let headers = &mut parts.headers;
        headers.remove(http::header::CONTENT_TYPE);
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(crate::proxy::COMPLETED);
        let body = match answer {
            KrakendError::Empty => Body::empty(),
            KrakendError::Message(message) => {
                headers.insert(crate::proxy::COMPLETED, HeaderValue::from_static("false"));
                if self.return_error_msg {
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    Body::from(message)
                } else {
                    Body::empty()
                }
            }
        };
        Response::from_parts(parts, body)
    }
}

impl switchboard_core::future::OnResponse for KrakendAnswers {
    fn on_response(self, response: Response<Body>) -> switchboard_core::future::Posted {
        switchboard_core::future::Posted::Ready(self.apply(response))
    }
}

/// A backend's `backend/conditional`, and the checks that need the
/// endpoint's strategy: `{respN_x}` only in a sequential proxy; `ai/llm` or
/// `ai/router`, not both.
fn check_backend_strategy(
    backend: &BackendConfig,
    at: &str,
    headers: &HeaderFilter,
    strategy: &Strategy,
    route: &mut BackendRoute,
    errors: &mut Vec<ConfigError>,
) {
    if backend.extra_config.contains_key("ai/llm") && backend.extra_config.contains_key("ai/router")
    {
        errors.push(ConfigError::new(
            format!("{at}.extra_config"),
            "a backend takes ai/llm (one provider) or ai/router (routed), not both",
        ));
    }
    if let Some(value) = backend.extra_config.get("backend/conditional") {
        match Condition::from_config(value, headers) {
            Ok(condition) => route.condition = Some(condition),
            Err(e) => errors.extend(
                e.at(&format!("{at}.extra_config[\"backend/conditional\"]"))
                    .into_all(),
            ),
        }
    }
    if !matches!(strategy, Strategy::Sequential { .. })
        && let Some(name) = route.pattern.sources().find_map(|s| match s {
            Source::Param(name) if crate::strategy::is_response_placeholder(name) => Some(name),
            _ => None,
        })
    {
        errors.push(ConfigError::new(
            format!("{at}.url_pattern"),
            format!("{{{name}}} needs the endpoint's proxy strategy \"sequential\""),
        ));
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
