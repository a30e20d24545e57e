//! The one registry that maps `extra_config` namespaces to the crates that
//! own them, and says where in a pipeline each layer sits.
//!
//! A namespace the gateway does not implement is never silently ignored:
//! purely observational ones (telemetry, documentation) are warned about;
//! anything else may enforce security or cost, so the config is refused.

use std::convert::Infallible;
use std::path::Path;

use http::{Request, Response};
use serde_json::{Map, Value};
use switchboard_api_keys::ApiKeys;
use switchboard_body_generator::{GenerateBodyLayer, GenerateResponseBodyLayer};
use switchboard_core::config::{join_path, key_segment};
use switchboard_core::{Body, ConfigError};
use switchboard_header_modifier::ModifyHeadersLayer;
use switchboard_jwt_claims::ValidateJwtLayer;
use switchboard_policies::EvaluatePoliciesLayer;
use switchboard_response_masker::MaskResponseLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::proxy::PipelineService;

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

/// A layer placed in a pipeline: lower `order` sits further out (sees the
/// request first and the response last).
pub(crate) struct Stage {
    pub(crate) order: u8,
    pub(crate) apply: Box<dyn FnOnce(PipelineService) -> PipelineService + Send>,
}

/// What a namespace builder may need.
pub(crate) struct BuildContext<'a> {
    pub(crate) base_dir: &'a Path,
    pub(crate) root_extra: &'a Map<String, Value>,
    /// Backends: the first host + `url_pattern` (an inline `ai/llm`
    /// endpoint).
    pub(crate) backend_url: Option<&'a str>,
    /// Backends: whether the endpoint's `output_encoding` is `streaming`.
    pub(crate) streaming: bool,
}

type Builder = fn(&Value, Level, &BuildContext<'_>) -> Result<Vec<Stage>, ConfigError>;

enum Kind {
    /// Built into layers.
    Layer {
        levels: &'static [Level],
        build: Builder,
    },
    /// Read by the gateway itself at the root.
    Builtin,
    /// Read by the proxy itself (`proxy`, `backend/conditional`): no layer.
    Proxy { levels: &'static [Level] },
    /// Only observes traffic: warned about, then ignored.
    Observational,
}

struct Entry {
    names: &'static [&'static str],
    kind: Kind,
}

/// Pipeline positions, outermost first. Endpoint: authentication, then
/// policies, then response masking and generation on the way out, then the
/// request body generator. Backend: martian request modifiers, the body
/// generator, policies, masking, the response body generator, martian
/// response modifiers (innermost, so it sees the upstream answer first).
mod order {
    pub(super) const API_KEYS: u8 = 10;
    pub(super) const JWT: u8 = 20;
    pub(super) const MARTIAN_REQUEST: u8 = 25;
    pub(super) const REQUEST_BODY: u8 = 28;
    pub(super) const POLICIES: u8 = 40;
    pub(super) const CEL: u8 = 41;
    pub(super) const MASK: u8 = 50;
    pub(super) const RESPONSE_BODY: u8 = 60;
    pub(super) const ENDPOINT_REQUEST_BODY: u8 = 70;
    pub(super) const MARTIAN_RESPONSE: u8 = 80;
    /// Innermost: speaks to the vendor, after every request rewrite.
    pub(super) const LLM: u8 = 90;
}

const ENDPOINT_AND_BACKEND: &[Level] = &[Level::Endpoint, Level::Backend];

const REGISTRY: &[Entry] = &[
    Entry {
        names: &["router"],
        kind: Kind::Builtin,
    },
    Entry {
        names: &["proxy"],
        kind: Kind::Proxy {
            levels: &[Level::Endpoint],
        },
    },
    Entry {
        names: &["backend/conditional"],
        kind: Kind::Proxy {
            levels: &[Level::Backend],
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
        names: &[
            "telemetry/logging",
            "telemetry/metrics",
            "telemetry/opentelemetry",
            "telemetry/opencensus",
            "telemetry/influx",
            "telemetry/gelf",
            "telemetry/logstash",
            "telemetry/newrelic",
            "telemetry/moesif",
            "documentation/openapi",
            "documentation/mcp",
        ],
        kind: Kind::Observational,
    },
];

fn stage<L>(order: u8, layer: L) -> Stage
where
    L: Layer<PipelineService> + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    Stage {
        order,
        apply: Box::new(move |inner| BoxCloneSyncService::new(layer.layer(inner))),
    }
}

fn build_llm(value: &Value, _: Level, ctx: &BuildContext<'_>) -> Result<Vec<Stage>, ConfigError> {
    Ok(vec![stage(
        order::LLM,
        crate::llm::layer(value, ctx.root_extra, ctx.backend_url, ctx.streaming)?,
    )])
}

fn build_router(
    value: &Value,
    _: Level,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Stage>, ConfigError> {
    Ok(vec![stage(
        order::LLM,
        crate::llm::router_layer(value, ctx.root_extra, ctx.streaming)?,
    )])
}

fn build_martian(value: &Value, _: Level, _: &BuildContext<'_>) -> Result<Vec<Stage>, ConfigError> {
    let layer = ModifyHeadersLayer::try_from_config(value)?;
    let mut stages = Vec::new();
    if layer.has_request_modifiers() {
        stages.push(stage(order::MARTIAN_REQUEST, layer.request_only()));
    }
    if layer.has_response_modifiers() {
        stages.push(stage(order::MARTIAN_RESPONSE, layer.response_only()));
    }
    Ok(stages)
}

fn build_request_body(
    value: &Value,
    level: Level,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Stage>, ConfigError> {
    let layer = GenerateBodyLayer::try_from_config(value, ctx.base_dir)?;
    let order = match level {
        Level::Backend => order::REQUEST_BODY,
        _ => order::ENDPOINT_REQUEST_BODY,
    };
    Ok(vec![stage(order, layer)])
}

fn build_response_body(
    value: &Value,
    _: Level,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Stage>, ConfigError> {
    let layer = GenerateResponseBodyLayer::try_from_config(value, ctx.base_dir)?;
    Ok(vec![stage(order::RESPONSE_BODY, layer)])
}

fn build_policies(
    value: &Value,
    _: Level,
    _: &BuildContext<'_>,
) -> Result<Vec<Stage>, ConfigError> {
    Ok(vec![stage(
        order::POLICIES,
        EvaluatePoliciesLayer::try_from_config(value)?,
    )])
}

fn build_cel(value: &Value, _: Level, _: &BuildContext<'_>) -> Result<Vec<Stage>, ConfigError> {
    Ok(vec![stage(
        order::CEL,
        EvaluatePoliciesLayer::try_from_cel_validation(value)?,
    )])
}

fn build_mask(value: &Value, _: Level, _: &BuildContext<'_>) -> Result<Vec<Stage>, ConfigError> {
    Ok(vec![stage(
        order::MASK,
        MaskResponseLayer::try_from_config(value)?,
    )])
}

fn build_jwt(value: &Value, _: Level, ctx: &BuildContext<'_>) -> Result<Vec<Stage>, ConfigError> {
    Ok(vec![stage(
        order::JWT,
        ValidateJwtLayer::try_from_config(value, ctx.base_dir)?,
    )])
}

fn build_api_keys(
    value: &Value,
    level: Level,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Stage>, ConfigError> {
    if level == Level::Root {
        ApiKeys::try_from_config(value)?;
        return Ok(Vec::new());
    }
    let Some(root) = ctx.root_extra.get("auth/api-keys") else {
        return Err(ConfigError::new(
            "",
            "needs the keys in the root extra_config[\"auth/api-keys\"]",
        ));
    };
    // Root errors are reported at the root; here they only stop the build.
    let keys = ApiKeys::try_from_config(root)
        .map_err(|_| ConfigError::new("", "the root auth/api-keys config is invalid"))?;
    Ok(vec![stage(order::API_KEYS, keys.layer(value)?)])
}

/// Looks a namespace up, alias included.
fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.names.contains(&name))
}

/// The layers a set of namespaces asks for, outermost first. What is
/// ignored goes to `warnings`; mistakes go to `errors` with their full JSON
/// path (`path` is where `extra` sits).
pub(crate) fn build_stages(
    extra: &Map<String, Value>,
    level: Level,
    path: &str,
    ctx: &BuildContext<'_>,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Stage> {
    let mut stages = Vec::new();
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
                match build(value, level, ctx) {
                    Ok(built) => stages.extend(built),
                    Err(err) => errors.push(err.at(&at)),
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
            None => errors.push(ConfigError::new(
                at,
                format!(
                    "namespace {name:?} is not supported by Switchboard; it may enforce \
                     security or cost, so the gateway refuses to run without it"
                ),
            )),
        }
    }
    stages.sort_by_key(|s| s.order);
    stages
}

/// Wraps `inner` in the stages, outermost first in the list.
pub(crate) fn apply_stages(stages: Vec<Stage>, inner: PipelineService) -> PipelineService {
    stages
        .into_iter()
        .rev()
        .fold(inner, |service, stage| (stage.apply)(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_namespaces_refuse_and_observational_warn() {
        let ctx = BuildContext {
            base_dir: Path::new("."),
            root_extra: &Map::new(),
            backend_url: None,
            streaming: false,
        };
        let mut extra = Map::new();
        extra.insert("qos/ratelimit/router".to_owned(), Value::Null);
        extra.insert("telemetry/logging".to_owned(), Value::Null);
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        build_stages(
            &extra,
            Level::Endpoint,
            "$.endpoints[0].extra_config",
            &ctx,
            &mut warnings,
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].path,
            "$.endpoints[0].extra_config[\"qos/ratelimit/router\"]"
        );
        assert_eq!(warnings.len(), 1);
    }
}
