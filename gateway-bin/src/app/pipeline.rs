//! The per-endpoint pipeline builder: checks an endpoint and its backends
//! and assembles the endpoint's static service.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use http::Method;
use http::header::HeaderValue;
use switchboard_core::ConfigError;
use switchboard_core::secrets::Secrets;
use tower::util::Either;

use super::entry::{EndpointEntry, KrakendAnswers};
use super::routes::{parse_method, validate_path};
use crate::config::{
    BackendConfig, DEFAULT_TIMEOUT, Encoding, EndpointConfig, RootConfig, normalize_host,
};
use crate::forward::{HeaderFilter, QueryFilter};
use crate::namespaces::{
    BackendLayers, BuildContext, EndpointLayers, PipelineService, Slots, build_layers,
};
use crate::proxy::{Backend, BackendRoute, EndpointState, Proxy, Shape};
use crate::strategy::{Condition, Strategy};
use crate::upstream::{HttpUpstream, InternalUpstream};
use crate::url_pattern::{Source, UrlPattern};

/// What the endpoint builder needs, gathered once (instead of long
/// argument lists).
pub(super) struct PipelineBuilder<'a> {
    pub(super) root: &'a RootConfig,
    pub(super) root_hosts: &'a [String],
    pub(super) root_is_self: bool,
    /// Whether the root `host` had a mistake (reported when the file was
    /// read).
    pub(super) root_hosts_invalid: bool,
    pub(super) body_limit: usize,
    /// `router.return_error_msg`.
    pub(super) return_error_msg: bool,
    /// Not `router.hide_version_header`.
    pub(super) version_header: bool,
    /// The config's secret values, when it has any: body generators scrub
    /// them from what they log.
    pub(super) secrets: Option<Arc<Secrets>>,
    pub(super) ctx: &'a BuildContext<'a>,
    pub(super) http: &'a HttpUpstream,
    pub(super) internal: &'a InternalUpstream,
    pub(super) warnings: &'a mut Vec<String>,
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
    pub(super) fn endpoint(
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
                version_header: self.version_header,
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
            accept_gzip: !self.root.disable_compression,
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

/// Whether a backend calls an LLM vendor through `ai/llm` or `ai/router`
/// (the gateway is then the vendor's client, not KrakenD's proxy).
fn calls_llm(backend: &BackendConfig) -> bool {
    backend.extra_config.contains_key("ai/llm") || backend.extra_config.contains_key("ai/router")
}

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

/// Whether an endpoint answers errors as KrakenD does: every endpoint but
/// the unified LLM ones, which answer in their client format's shape.
pub(super) fn krakend_endpoint(endpoint: &EndpointConfig) -> bool {
    !endpoint.backend.iter().any(calls_llm)
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
