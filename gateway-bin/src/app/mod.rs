//! Builds the gateway from a loaded config: one tower pipeline per endpoint,
//! mounted on one router.

mod entry;
mod pipeline;
mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodFilter, MethodRouter, any, get};
use http::header::HeaderValue;
use http::{Request, Response};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::config::from_value;
use switchboard_core::secrets::Secrets;
use switchboard_core::{Body, ConfigError, ErrorResponse, SharedState};
use switchboard_telemetry::{RecordMetricsLayer, Telemetry, TelemetrySettings};

use crate::config::{LoadedConfig, RootConfig, normalize_host};
use crate::echo;
use crate::lint::{Lint, fanout_lints, lints};
use crate::namespaces::{BuildContext, RootLayers, Slots, build_layers};
use crate::upstream::{ClientSettings, HttpUpstream, InternalUpstream};
use pipeline::{PipelineBuilder, krakend_endpoint};
use routes::{RouteCheck, is_self_host, route_shape, validate_health_path};

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
    /// KrakenD: no `X-Krakend` header on the answers.
    #[serde(default)]
    hide_version_header: bool,
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
    let http = HttpUpstream::new(&ClientSettings::of(root));
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
        version_header: !router_options.hide_version_header,
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
            // `any` routes no single method: `route_layer` would panic
            // ("a route_layer before any routes"); `layer` covers it.
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
                .or(root.max_shutdown_wait_time)
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

#[cfg(test)]
mod tests {
    use super::routes::validate_path;
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
