//! The one registry that maps `extra_config` namespaces to the crates that
//! own them, and the typed layer sets it fills: one slot per layer, stacked
//! in KrakenD's order by `ServiceBuilder`.
//!
//! A namespace the gateway does not implement is never silently ignored:
//! purely observational ones (telemetry, documentation) are warned about;
//! anything else may enforce security or cost, so the config is refused.

use std::convert::Infallible;
use std::path::Path;

use http::{Request, Response};
use serde_json::{Map, Value};
use switchboard_api_keys::{ApiKeys, ValidateApiKeyLayer};
use switchboard_body_generator::{GenerateBodyLayer, GenerateResponseBodyLayer};
use switchboard_core::config::{join_path, key_segment};
use switchboard_core::{Body, ConfigError};
use switchboard_header_modifier::ModifyHeadersLayer;
use switchboard_jwt_claims::ValidateJwtLayer;
use switchboard_llm_router::RouteLlmLayer;
use switchboard_lua::{LuaLayer, Scope};
use switchboard_policies::EvaluatePoliciesLayer;
use switchboard_quota::EnforceQuotaLayer;
use switchboard_rate_limit::{LimitRateLayer, Variant};
use switchboard_response_masker::MaskResponseLayer;
use switchboard_validation::{GuardPromptLayer, ValidateJsonSchemaLayer};
use tower::{Service, ServiceBuilder};

/// Where a namespace appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Root,
    Endpoint,
    Backend,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Root => "the root",
            Level::Endpoint => "an endpoint",
            Level::Backend => "a backend",
        }
    }
}

/// The layers of one endpoint, one slot per namespace, filled by the
/// registry. [`EndpointLayers::wrap`] stacks them in KrakenD's order
/// (SPEC §3.1), which is the order of the fields: the first sits
/// outermost, so it sees the request first and the response last.
#[derive(Default)]
pub(crate) struct EndpointLayers {
    /// `auth/api-keys` (keys declared at the root).
    pub(crate) api_keys: Option<ValidateApiKeyLayer>,
    /// `auth/validator`.
    pub(crate) jwt: Option<ValidateJwtLayer>,
    /// Limits and quotas, right after authentication: the service-wide
    /// ones (`qos/ratelimit/service`, `…/service/redis`, root
    /// `qos/ratelimit/tiered`), then the endpoint's.
    pub(crate) service_rate_limit: Option<LimitRateLayer>,
    pub(crate) service_rate_limit_redis: Option<LimitRateLayer>,
    pub(crate) service_tiered: Option<LimitRateLayer>,
    /// `qos/ratelimit/router` or `qos/ratelimit/router/redis`.
    pub(crate) rate_limit: Option<LimitRateLayer>,
    /// `qos/ratelimit/tiered`.
    pub(crate) tiered: Option<LimitRateLayer>,
    /// The root's `governance/quota`, then the endpoint's.
    pub(crate) service_quota: Option<EnforceQuotaLayer>,
    pub(crate) quota: Option<EnforceQuotaLayer>,
    /// The root's `modifier/lua-endpoint`, then the endpoint's (one layer),
    /// after authentication and limits, as KrakenD's router scripts. The
    /// Lua layers are never `Option`s: an empty one passes through, and
    /// the pipeline's type does not double as around an `Option` layer.
    pub(crate) lua_endpoint: LuaLayer,
    /// `modifier/lua-proxy`: as in KrakenD, outside the JSON schema and
    /// CEL checks (its `pre` runs before them, its `post` sees the merged
    /// answer after the layers below). Early in the stack, too, so that
    /// the `Option` layers around it double little of its type.
    pub(crate) lua_proxy: LuaLayer,
    /// `validation/json-schema`.
    pub(crate) json_schema: Option<ValidateJsonSchemaLayer>,
    /// `ai/prompt-guard`.
    pub(crate) prompt_guard: Option<GuardPromptLayer>,
    /// `security/policies`: `jwt` and `req` on the way in, `resp` on the
    /// way out (last, after masking and generation).
    pub(crate) policies: Option<EvaluatePoliciesLayer>,
    /// `validation/cel`.
    pub(crate) cel: Option<EvaluatePoliciesLayer>,
    /// `modifier/response-body`: masks the merged answer.
    pub(crate) mask: Option<MaskResponseLayer>,
    /// `modifier/response-body-generator`.
    pub(crate) response_body: Option<GenerateResponseBodyLayer>,
    /// `modifier/request-body-generator`: innermost, so policies see the
    /// client's own body.
    pub(crate) request_body: Option<GenerateBodyLayer>,
}

impl EndpointLayers {
    /// Stacks the layers around `proxy`: a static service, without a box.
    pub(crate) fn wrap<S>(self, proxy: S) -> impl PipelineService
    where
        S: PipelineService,
    {
        ServiceBuilder::new()
            .option_layer(self.api_keys)
            .option_layer(self.jwt)
            .option_layer(self.service_rate_limit)
            .option_layer(self.service_rate_limit_redis)
            .option_layer(self.service_tiered)
            .option_layer(self.rate_limit)
            .option_layer(self.tiered)
            .option_layer(self.service_quota)
            .option_layer(self.quota)
            .layer(self.lua_endpoint)
            .layer(self.lua_proxy)
            .option_layer(self.json_schema)
            .option_layer(self.prompt_guard)
            .option_layer(self.policies)
            .option_layer(self.cel)
            .option_layer(self.mask)
            .option_layer(self.response_body)
            .option_layer(self.request_body)
            .service(proxy)
    }
}

/// The layers of one backend, in KrakenD's order (SPEC §3.1), outermost
/// first: see [`EndpointLayers`].
#[derive(Default)]
pub(crate) struct BackendLayers {
    /// `qos/ratelimit/proxy`: the backend's own budget, before any work.
    pub(crate) rate_limit: Option<LimitRateLayer>,
    /// `governance/quota` on this backend.
    pub(crate) quota: Option<EnforceQuotaLayer>,
    /// `modifier/lua-backend`: around the backend call and what the
    /// modifiers below do to it.
    pub(crate) lua_backend: LuaLayer,
    /// `modifier/martian`, request scope.
    pub(crate) martian_request: Option<ModifyHeadersLayer>,
    /// `modifier/request-body-generator`.
    pub(crate) request_body: Option<GenerateBodyLayer>,
    /// `ai/prompt-guard`: after the generator, so it sees the final prompt.
    pub(crate) prompt_guard: Option<GuardPromptLayer>,
    /// `security/policies` (`req` in, `resp` out).
    pub(crate) policies: Option<EvaluatePoliciesLayer>,
    /// `validation/cel`.
    pub(crate) cel: Option<EvaluatePoliciesLayer>,
    /// `modifier/response-body`.
    pub(crate) mask: Option<MaskResponseLayer>,
    /// `modifier/response-body-generator`.
    pub(crate) response_body: Option<GenerateResponseBodyLayer>,
    /// `modifier/martian`, response scope: it sees the upstream answer
    /// first.
    pub(crate) martian_response: Option<ModifyHeadersLayer>,
    /// `qos/circuit-breaker`: sees the upstream's own answer.
    pub(crate) breaker: Option<crate::breaker::BreakerLayer>,
    /// `ai/llm`: innermost, speaks to the vendor after every request
    /// rewrite.
    pub(crate) llm: Option<RouteLlmLayer>,
}

impl BackendLayers {
    /// Whether no layer is set (a plain backend needs no request context).
    pub(crate) fn is_empty(&self) -> bool {
        self.rate_limit.is_none()
            && self.quota.is_none()
            && self.lua_backend.is_empty()
            && self.prompt_guard.is_none()
            && self.martian_request.is_none()
            && self.request_body.is_none()
            && self.policies.is_none()
            && self.cel.is_none()
            && self.mask.is_none()
            && self.response_body.is_none()
            && self.martian_response.is_none()
            && self.breaker.is_none()
            && self.llm.is_none()
    }

    /// Stacks the layers around `upstream`: a static service, without a box.
    pub(crate) fn wrap<S>(self, upstream: S) -> impl PipelineService
    where
        S: PipelineService,
    {
        ServiceBuilder::new()
            .option_layer(self.rate_limit)
            .option_layer(self.quota)
            .layer(self.lua_backend)
            .option_layer(self.martian_request)
            .option_layer(self.request_body)
            .option_layer(self.prompt_guard)
            .option_layer(self.policies)
            .option_layer(self.cel)
            .option_layer(self.mask)
            .option_layer(self.response_body)
            .option_layer(self.martian_response)
            .option_layer(self.breaker)
            .option_layer(self.llm)
            .service(upstream)
    }
}

/// What the root declares that endpoints build on.
#[derive(Default)]
pub(crate) struct RootLayers {
    /// The root `auth/api-keys` key ring, compiled once.
    pub(crate) api_keys: Option<ApiKeys>,
    /// Whether the root declares `auth/api-keys` (valid or not).
    pub(crate) declares_api_keys: bool,
    /// Redis pools, quota processors, the prompt-guard registry and the
    /// service-wide limits, built once from the root.
    pub(crate) governance: crate::governance::Governance,
    /// The root `modifier/lua-endpoint`, run on every endpoint.
    pub(crate) lua_endpoint: LuaLayer,
    /// The LLM circuit breakers, kept across config builds.
    pub(crate) breakers: std::sync::Arc<switchboard_llm_router::routing::Breakers>,
}

/// A request → response service that a pipeline is made of.
pub(crate) trait PipelineService:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> PipelineService for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The set a namespace builder fills.
pub(crate) enum Slots<'a> {
    Root(&'a mut RootLayers),
    Endpoint(&'a mut EndpointLayers),
    Backend(&'a mut BackendLayers),
}

impl Slots<'_> {
    fn level(&self) -> Level {
        match self {
            Slots::Root(_) => Level::Root,
            Slots::Endpoint(_) => Level::Endpoint,
            Slots::Backend(_) => Level::Backend,
        }
    }
}

/// What a namespace builder may need.
pub(crate) struct BuildContext<'a> {
    pub(crate) base_dir: &'a Path,
    pub(crate) root: &'a RootLayers,
    pub(crate) root_extra: &'a Map<String, Value>,
    /// Backends: the first host + `url_pattern` (an inline `ai/llm`
    /// endpoint).
    pub(crate) backend_url: Option<&'a str>,
    /// Backends: whether the endpoint's `output_encoding` is `streaming`.
    pub(crate) streaming: bool,
}

type Builder = fn(&Value, Slots<'_>, &BuildContext<'_>) -> Result<(), ConfigError>;

enum Kind {
    /// Built into layers.
    Layer {
        levels: &'static [Level],
        build: Builder,
    },
    /// Read by the gateway itself at the root.
    Builtin,
    /// Read by the gateway's own steps (`proxy`, `backend/conditional`,
    /// `backend/http`, `security/cors`, `security/bot-detector`): no layer.
    Proxy { levels: &'static [Level] },
    /// Only observes traffic: warned about, then ignored.
    Observational,
}

struct Entry {
    names: &'static [&'static str],
    kind: Kind,
}

const ENDPOINT_AND_BACKEND: &[Level] = &[Level::Endpoint, Level::Backend];

const REGISTRY: &[Entry] = &[
    Entry {
        names: &["router"],
        kind: Kind::Builtin,
    },
    Entry {
        names: &[
            "telemetry/opentelemetry",
            "telemetry/logging",
            "switchboard/telemetry",
        ],
        kind: Kind::Builtin,
    },
    Entry {
        names: &["proxy"],
        kind: Kind::Proxy {
            levels: ENDPOINT_AND_BACKEND,
        },
    },
    Entry {
        names: &["backend/http"],
        kind: Kind::Proxy {
            levels: &[Level::Backend],
        },
    },
    Entry {
        names: &["auth/signer"],
        kind: Kind::Proxy {
            levels: &[Level::Endpoint],
        },
    },
    Entry {
        names: &["security/cors"],
        kind: Kind::Proxy {
            levels: &[Level::Root],
        },
    },
    Entry {
        names: &["security/bot-detector"],
        kind: Kind::Proxy {
            levels: &[Level::Root, Level::Endpoint],
        },
    },
    Entry {
        names: &["backend/conditional"],
        kind: Kind::Proxy {
            levels: &[Level::Backend],
        },
    },
    Entry {
        names: &["modifier/lua-endpoint"],
        kind: Kind::Layer {
            levels: &[Level::Root, Level::Endpoint],
            build: build_lua_endpoint,
        },
    },
    Entry {
        names: &["modifier/lua-proxy"],
        kind: Kind::Layer {
            levels: &[Level::Endpoint],
            build: build_lua_proxy,
        },
    },
    Entry {
        names: &["modifier/lua-backend"],
        kind: Kind::Layer {
            levels: &[Level::Backend],
            build: build_lua_backend,
        },
    },
    Entry {
        names: &["modifier/martian"],
        kind: Kind::Layer {
            levels: &[Level::Backend],
            build: build_martian,
        },
    },
    Entry {
        names: &["modifier/request-body-generator", "modifier/body-generator"],
        kind: Kind::Layer {
            levels: ENDPOINT_AND_BACKEND,
            build: build_request_body,
        },
    },
    Entry {
        names: &["modifier/response-body-generator"],
        kind: Kind::Layer {
            levels: ENDPOINT_AND_BACKEND,
            build: build_response_body,
        },
    },
    Entry {
        names: &["security/policies"],
        kind: Kind::Layer {
            levels: ENDPOINT_AND_BACKEND,
            build: build_policies,
        },
    },
    Entry {
        names: &["validation/cel"],
        kind: Kind::Layer {
            levels: ENDPOINT_AND_BACKEND,
            build: build_cel,
        },
    },
    Entry {
        names: &["modifier/response-body"],
        kind: Kind::Layer {
            levels: ENDPOINT_AND_BACKEND,
            build: build_mask,
        },
    },
    Entry {
        names: &["auth/validator"],
        kind: Kind::Layer {
            levels: &[Level::Endpoint],
            build: build_jwt,
        },
    },
    Entry {
        names: &["auth/api-keys"],
        kind: Kind::Layer {
            levels: &[Level::Root, Level::Endpoint],
            build: build_api_keys,
        },
    },
    Entry {
        names: &["ai/providers"],
        kind: Kind::Layer {
            levels: &[Level::Root],
            build: crate::llm::check_providers,
        },
    },
    Entry {
        names: &["ai/classifiers"],
        kind: Kind::Layer {
            levels: &[Level::Root],
            build: crate::llm::check_classifiers,
        },
    },
    Entry {
        names: &["ai/router"],
        kind: Kind::Layer {
            levels: &[Level::Backend],
            build: build_router,
        },
    },
    Entry {
        names: &["ai/llm"],
        kind: Kind::Layer {
            levels: &[Level::Backend],
            build: build_llm,
        },
    },
    Entry {
        names: &["redis"],
        kind: Kind::Layer {
            levels: &[Level::Root],
            build: build_redis,
        },
    },
    Entry {
        names: &["governance/processors"],
        kind: Kind::Layer {
            levels: &[Level::Root],
            build: build_processors,
        },
    },
    Entry {
        names: &["qos/ratelimit/service"],
        kind: Kind::Layer {
            levels: &[Level::Root],
            build: build_service_rate_limit,
        },
    },
    Entry {
        names: &["qos/ratelimit/service/redis"],
        kind: Kind::Layer {
            levels: &[Level::Root],
            build: build_service_rate_limit_redis,
        },
    },
    Entry {
        names: &["governance/quota"],
        kind: Kind::Layer {
            levels: &[Level::Root, Level::Endpoint, Level::Backend],
            build: build_quota,
        },
    },
    Entry {
        names: &["qos/ratelimit/router"],
        kind: Kind::Layer {
            levels: &[Level::Endpoint],
            build: build_rate_limit,
        },
    },
    Entry {
        names: &["qos/ratelimit/router/redis"],
        kind: Kind::Layer {
            levels: &[Level::Endpoint],
            build: build_rate_limit_redis,
        },
    },
    Entry {
        names: &["qos/ratelimit/tiered"],
        kind: Kind::Layer {
            levels: &[Level::Root, Level::Endpoint],
            build: build_tiered,
        },
    },
    Entry {
        names: &["qos/ratelimit/proxy"],
        kind: Kind::Layer {
            levels: &[Level::Backend],
            build: build_proxy_rate_limit,
        },
    },
    Entry {
        names: &["qos/circuit-breaker"],
        kind: Kind::Layer {
            levels: &[Level::Backend],
            build: build_breaker,
        },
    },
    Entry {
        names: &["validation/json-schema"],
        kind: Kind::Layer {
            levels: &[Level::Endpoint],
            build: build_json_schema,
        },
    },
    Entry {
        names: &["ai/prompt-guard"],
        kind: Kind::Layer {
            levels: &[Level::Root, Level::Endpoint, Level::Backend],
            build: build_prompt_guard,
        },
    },
    Entry {
        names: &[
            "telemetry/metrics",
            "telemetry/opencensus",
            "telemetry/influx",
            "telemetry/gelf",
            "telemetry/logstash",
            "telemetry/newrelic",
            "telemetry/moesif",
            "documentation/openapi",
            "documentation/mcp",
            // Caching only saves backend calls: without it every request
            // reaches the backend, which enforces nothing less.
            "qos/http-cache",
        ],
        kind: Kind::Observational,
    },
];

/// Puts a layer in its slot; a namespace given twice (under an alias)
/// is a mistake, not a second layer.
fn fill<T>(slot: &mut Option<T>, layer: T) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::new(
            "",
            "this layer is configured twice (the namespace and its alias)",
        ));
    }
    *slot = Some(layer);
    Ok(())
}

fn build_llm(value: &Value, slots: Slots<'_>, ctx: &BuildContext<'_>) -> Result<(), ConfigError> {
    let layer = crate::llm::layer(value, ctx.root_extra, ctx.backend_url, ctx.streaming)?;
    match slots {
        Slots::Backend(set) => fill(&mut set.llm, layer),
        _ => Ok(()),
    }
}

fn build_router(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = crate::llm::router_layer(value, ctx.root_extra, ctx.streaming, &ctx.root.breakers)?;
    match slots {
        Slots::Backend(set) => fill(&mut set.llm, layer),
        _ => Ok(()),
    }
}

fn build_lua_endpoint(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = LuaLayer::try_from_config(value, Scope::Endpoint, ctx.base_dir)?;
    match slots {
        Slots::Root(set) => set.lua_endpoint = layer,
        Slots::Endpoint(set) => set.lua_endpoint = layer,
        Slots::Backend(_) => {}
    }
    Ok(())
}

fn build_lua_proxy(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = LuaLayer::try_from_config(value, Scope::Proxy, ctx.base_dir)?;
    if let Slots::Endpoint(set) = slots {
        set.lua_proxy = layer;
    }
    Ok(())
}

fn build_lua_backend(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = LuaLayer::try_from_config(value, Scope::Backend, ctx.base_dir)?;
    if let Slots::Backend(set) = slots {
        set.lua_backend = layer;
    }
    Ok(())
}

fn build_martian(value: &Value, slots: Slots<'_>, _: &BuildContext<'_>) -> Result<(), ConfigError> {
    let layer = ModifyHeadersLayer::try_from_config(value)?;
    if let Slots::Backend(set) = slots {
        if layer.has_request_modifiers() {
            set.martian_request = Some(layer.request_only());
        }
        if layer.has_response_modifiers() {
            set.martian_response = Some(layer.response_only());
        }
    }
    Ok(())
}

fn build_request_body(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = GenerateBodyLayer::try_from_config(value, ctx.base_dir)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.request_body, layer),
        Slots::Backend(set) => fill(&mut set.request_body, layer),
        Slots::Root(_) => Ok(()),
    }
}

fn build_response_body(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = GenerateResponseBodyLayer::try_from_config(value, ctx.base_dir)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.response_body, layer),
        Slots::Backend(set) => fill(&mut set.response_body, layer),
        Slots::Root(_) => Ok(()),
    }
}

fn build_policies(
    value: &Value,
    slots: Slots<'_>,
    _: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = EvaluatePoliciesLayer::try_from_config(value)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.policies, layer),
        Slots::Backend(set) => fill(&mut set.policies, layer),
        Slots::Root(_) => Ok(()),
    }
}

fn build_cel(value: &Value, slots: Slots<'_>, _: &BuildContext<'_>) -> Result<(), ConfigError> {
    let layer = EvaluatePoliciesLayer::try_from_cel_validation(value)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.cel, layer),
        Slots::Backend(set) => fill(&mut set.cel, layer),
        Slots::Root(_) => Ok(()),
    }
}

fn build_mask(value: &Value, slots: Slots<'_>, _: &BuildContext<'_>) -> Result<(), ConfigError> {
    let layer = MaskResponseLayer::try_from_config(value)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.mask, layer),
        Slots::Backend(set) => fill(&mut set.mask, layer),
        Slots::Root(_) => Ok(()),
    }
}

fn build_jwt(value: &Value, slots: Slots<'_>, ctx: &BuildContext<'_>) -> Result<(), ConfigError> {
    let layer = ValidateJwtLayer::try_from_config(value, ctx.base_dir)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.jwt, layer),
        _ => Ok(()),
    }
}

fn build_api_keys(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    match slots {
        Slots::Root(root) => {
            root.declares_api_keys = true;
            root.api_keys = Some(ApiKeys::try_from_config(value)?);
            Ok(())
        }
        Slots::Endpoint(set) => {
            let Some(keys) = &ctx.root.api_keys else {
                // Root errors are reported at the root; here they only stop
                // the build.
                let message = if ctx.root.declares_api_keys {
                    "the root auth/api-keys config is invalid"
                } else {
                    "needs the keys in the root extra_config[\"auth/api-keys\"]"
                };
                return Err(ConfigError::new("", message));
            };
            fill(&mut set.api_keys, keys.layer(value)?)
        }
        Slots::Backend(_) => Ok(()),
    }
}

/// Root governance namespaces fill no slot: the shared state was built
/// once (`Governance::from_root`, in config order independent of the
/// map's); a root builder reports that namespace's error.
fn root_governance(name: &str, slots: &Slots<'_>) -> Result<(), ConfigError> {
    match slots {
        Slots::Root(root) => root.governance.root_error(name).map_or(Ok(()), Err),
        _ => Ok(()),
    }
}

/// One root builder per shared-state namespace.
macro_rules! root_builder {
    ($name:ident, $namespace:literal) => {
        fn $name(_: &Value, slots: Slots<'_>, _: &BuildContext<'_>) -> Result<(), ConfigError> {
            root_governance($namespace, &slots)
        }
    };
}
root_builder!(build_redis, "redis");
root_builder!(build_processors, "governance/processors");
root_builder!(build_service_rate_limit, "qos/ratelimit/service");
root_builder!(
    build_service_rate_limit_redis,
    "qos/ratelimit/service/redis"
);

fn build_quota(value: &Value, slots: Slots<'_>, ctx: &BuildContext<'_>) -> Result<(), ConfigError> {
    match slots {
        Slots::Root(_) => root_governance("governance/quota", &slots),
        Slots::Endpoint(set) => fill(&mut set.quota, ctx.root.governance.quota_layer(value)?),
        Slots::Backend(set) => fill(&mut set.quota, ctx.root.governance.quota_layer(value)?),
    }
}

fn build_rate_limit(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = ctx.root.governance.rate_limit(value, Variant::Memory)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.rate_limit, layer),
        _ => Ok(()),
    }
}

fn build_rate_limit_redis(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = ctx.root.governance.rate_limit(value, Variant::Redis)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.rate_limit, layer),
        _ => Ok(()),
    }
}

fn build_tiered(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    match slots {
        Slots::Root(_) => root_governance("qos/ratelimit/tiered", &slots),
        Slots::Endpoint(set) => fill(&mut set.tiered, ctx.root.governance.tiered(value)?),
        Slots::Backend(_) => Ok(()),
    }
}

fn build_proxy_rate_limit(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = ctx.root.governance.proxy_rate_limit(value)?;
    match slots {
        Slots::Backend(set) => fill(&mut set.rate_limit, layer),
        _ => Ok(()),
    }
}

fn build_breaker(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer =
        crate::breaker::BreakerLayer::from_config(value, ctx.backend_url.unwrap_or("backend"))?;
    match slots {
        Slots::Backend(set) => fill(&mut set.breaker, layer),
        _ => Ok(()),
    }
}

fn build_json_schema(
    value: &Value,
    slots: Slots<'_>,
    _: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let layer = ValidateJsonSchemaLayer::try_from_config(value)?;
    match slots {
        Slots::Endpoint(set) => fill(&mut set.json_schema, layer),
        _ => Ok(()),
    }
}

fn build_prompt_guard(
    value: &Value,
    slots: Slots<'_>,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    match slots {
        Slots::Root(_) => root_governance("ai/prompt-guard", &slots),
        Slots::Endpoint(set) => fill(
            &mut set.prompt_guard,
            ctx.root.governance.guard_layer(value)?,
        ),
        Slots::Backend(set) => fill(
            &mut set.prompt_guard,
            ctx.root.governance.guard_layer(value)?,
        ),
    }
}

/// Why an unknown namespace refuses the config, with the nearest known
/// name when it looks misspelt.
fn unknown_namespace(name: &str, level: Level) -> String {
    let names = REGISTRY.iter().flat_map(|e| e.names.iter().copied());
    if let Some(near) = switchboard_core::config::did_you_mean(name, names) {
        let belongs = match entry(near).map(|e| &e.kind) {
            Some(Kind::Layer { levels, .. } | Kind::Proxy { levels }) => levels.contains(&level),
            Some(Kind::Builtin) => level == Level::Root,
            _ => true,
        };
        if belongs {
            return format!("unknown namespace {name:?}; did you mean {near:?}?");
        }
    }
    format!(
        "namespace {name:?} is not supported by Switchboard; it may enforce security or \
         cost, so the gateway refuses to run without it"
    )
}

/// Looks a namespace up, alias included.
fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.names.contains(&name))
}

/// Fills `slots` with the layers a set of namespaces asks for. What is
/// ignored goes to `warnings`; mistakes go to `errors` with their full
/// JSON path (`path` is where `extra` sits).
pub(crate) fn build_layers(
    extra: &Map<String, Value>,
    mut slots: Slots<'_>,
    path: &str,
    ctx: &BuildContext<'_>,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) {
    let level = slots.level();
    for (name, value) in extra {
        let at = join_path(path, &key_segment(name));
        match entry(name).map(|e| &e.kind) {
            Some(Kind::Layer { levels, build }) => {
                if !levels.contains(&level) {
                    errors.push(ConfigError::new(
                        at,
                        format!("namespace {name:?} does not belong in {}", level.name()),
                    ));
                    continue;
                }
                let slots = match &mut slots {
                    Slots::Root(set) => Slots::Root(set),
                    Slots::Endpoint(set) => Slots::Endpoint(set),
                    Slots::Backend(set) => Slots::Backend(set),
                };
                if let Err(err) = build(value, slots, ctx) {
                    errors.extend(err.at(&at).into_all());
                }
            }
            Some(Kind::Builtin) => {
                if level != Level::Root {
                    errors.push(ConfigError::new(
                        at,
                        format!("namespace {name:?} belongs at the root"),
                    ));
                }
            }
            Some(Kind::Proxy { levels }) => {
                if !levels.contains(&level) {
                    errors.push(ConfigError::new(
                        at,
                        format!("namespace {name:?} does not belong in {}", level.name()),
                    ));
                }
            }
            Some(Kind::Observational) => warnings.push(format!(
                "{at}: namespace {name:?} is observational and not implemented; ignored"
            )),
            None => errors.push(ConfigError::new(at, unknown_namespace(name, level))),
        }
    }
    if let Slots::Endpoint(set) = slots {
        ctx.root.governance.fill_service_layers(set);
        // The root's script runs first, then the endpoint's.
        set.lua_endpoint = ctx.root.lua_endpoint.and_then(&set.lua_endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_namespaces_refuse_and_observational_warn() {
        let root = RootLayers::default();
        let ctx = BuildContext {
            base_dir: Path::new("."),
            root: &root,
            root_extra: &Map::new(),
            backend_url: None,
            streaming: false,
        };
        let mut extra = Map::new();
        extra.insert("auth/gcp".to_owned(), Value::Null);
        extra.insert("telemetry/influx".to_owned(), Value::Null);
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let mut layers = EndpointLayers::default();
        build_layers(
            &extra,
            Slots::Endpoint(&mut layers),
            "$.endpoints[0].extra_config",
            &ctx,
            &mut warnings,
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "$.endpoints[0].extra_config[\"auth/gcp\"]");
        assert_eq!(warnings.len(), 1);
    }
}
