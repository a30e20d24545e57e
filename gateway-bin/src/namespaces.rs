//! The one registry that maps `extra_config` namespaces to the crates that
//! own them, and says where in a pipeline each layer sits.
//!
//! A namespace the gateway does not implement is never silently ignored:
//! purely observational ones (telemetry, documentation) are warned about;
//! anything else may enforce security or cost, so the config is refused.

use std::path::Path;

use serde_json::{Map, Value};
use switchboard_core::ConfigError;
use switchboard_core::config::{join_path, key_segment};

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
    /// A namespace whose layer another namespace builds (e.g. the root
    /// key store of `auth/api-keys` read by each endpoint).
    RootData,
    /// Only observes traffic: warned about, then ignored.
    Observational,
}

struct Entry {
    names: &'static [&'static str],
    kind: Kind,
}

const REGISTRY: &[Entry] = &[
    Entry {
        names: &["router"],
        kind: Kind::Builtin,
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

/// Looks a namespace up, alias included.
fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.names.contains(&name))
}

/// The layers a set of namespaces asks for, and warnings for what is
/// ignored. Errors carry the full JSON path (`path` is where `extra` sits).
pub(crate) fn build_stages(
    extra: &Map<String, Value>,
    level: Level,
    path: &str,
    ctx: &BuildContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Stage>, Vec<ConfigError>> {
    let mut stages = Vec::new();
    let mut errors = Vec::new();
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
            Some(Kind::Builtin | Kind::RootData) => {
                if level != Level::Root {
                    errors.push(ConfigError::new(
                        at,
                        format!("namespace {name:?} belongs at the root"),
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
    if errors.is_empty() {
        stages.sort_by_key(|s| s.order);
        Ok(stages)
    } else {
        Err(errors)
    }
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
        };
        let mut extra = Map::new();
        extra.insert("qos/ratelimit/router".to_owned(), Value::Null);
        extra.insert("telemetry/logging".to_owned(), Value::Null);
        let mut warnings = Vec::new();
        let Err(errors) = build_stages(
            &extra,
            Level::Endpoint,
            "$.endpoints[0].extra_config",
            &ctx,
            &mut warnings,
        ) else {
            panic!("an unknown namespace must refuse");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].path,
            "$.endpoints[0].extra_config[\"qos/ratelimit/router\"]"
        );
        assert_eq!(warnings.len(), 1);
    }
}
