//! The compiled `ai/classifiers` and `ai/router`, and the routing decision:
//! which provider(s) serve a request, in which failover order.
//!
//! Pure and synchronous: the decision reads the request's headers,
//! extensions (claims, route params) and parsed body; a classifier's HTTP
//! call happens afterwards, in the service, with [`Plan::Classify`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{HeaderName, Request, StatusCode};
use switchboard_core::{ConfigError, ErrorResponse, JsonBody};
use switchboard_policies::RequestCondition;

use super::config::{
    ClassifierEngine, ClassifiersConfig, FanOutMode, GateRule, RouteConfig, RouterConfig,
};
use super::notdiamond::NotDiamond;

/// A compiled gate.
enum Gate {
    Header { name: HeaderName, value: String },
    Policy(RequestCondition),
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header { name, .. } => write!(f, "Header({name})"),
            Self::Policy(condition) => write!(f, "Policy({condition:?})"),
        }
    }
}

impl Gate {
    fn passes<B>(&self, request: &Request<B>, body: Option<&JsonBody>) -> bool {
        match self {
            // KrakenD reads the first value (Go's `Header.Get`).
            Self::Header { name, value } => request
                .headers()
                .get(name)
                .is_some_and(|v| v.as_bytes() == value.as_bytes()),
            Self::Policy(condition) => condition.matches(request, body),
        }
    }
}

/// The compiled `ai/classifiers`, shared by every router of the service.
#[derive(Debug, Default)]
pub struct Classifiers {
    gates: Vec<(String, Gate)>,
    classifiers: Vec<(String, NotDiamond)>,
}

impl Classifiers {
    /// Compiles gates (CEL once) and classifiers. Errors are relative to the
    /// `ai/classifiers` object.
    pub fn from_config(config: &ClassifiersConfig) -> Result<Self, ConfigError> {
        let mut gates: Vec<(String, Gate)> = Vec::with_capacity(config.gates.len());
        for (i, gate) in config.gates.iter().enumerate() {
            let at = |field: &str| format!("gates[{i}]{field}");
            if gate.name.is_empty() {
                return Err(ConfigError::new(at(".name"), "must not be empty"));
            }
            if gates.iter().any(|(name, _)| *name == gate.name) {
                return Err(ConfigError::new(
                    at(".name"),
                    format!("gate {:?} is declared twice", gate.name),
                ));
            }
            let compiled = match gate.rule {
                GateRule::Header => {
                    let header = gate.header.as_ref().ok_or_else(|| {
                        ConfigError::new(at(""), "rule \"header\" needs a `header` object")
                    })?;
                    if gate.policy.is_some() {
                        return Err(ConfigError::new(
                            at(".policy"),
                            "rule \"header\" takes no `policy`",
                        ));
                    }
                    let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                        ConfigError::new(at(".header.name"), "not a valid header name")
                    })?;
                    Gate::Header {
                        name,
                        value: header.value.clone(),
                    }
                }
                GateRule::Policy => {
                    let policy = gate.policy.as_ref().ok_or_else(|| {
                        ConfigError::new(at(""), "rule \"policy\" needs a `policy` object")
                    })?;
                    if gate.header.is_some() {
                        return Err(ConfigError::new(
                            at(".header"),
                            "rule \"policy\" takes no `header`",
                        ));
                    }
                    let condition = RequestCondition::compile(&policy.value).map_err(|m| {
                        ConfigError::new(
                            at(".policy.value"),
                            format!("invalid CEL expression: {m}"),
                        )
                    })?;
                    Gate::Policy(condition)
                }
            };
            gates.push((gate.name.clone(), compiled));
        }
        let mut classifiers: Vec<(String, NotDiamond)> = Vec::new();
        for (i, classifier) in config.classifiers.iter().enumerate() {
            let at = format!("classifiers[{i}]");
            if classifier.name.is_empty() {
                return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
            }
            if classifiers.iter().any(|(name, _)| *name == classifier.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("classifier {:?} is declared twice", classifier.name),
                ));
            }
            let ClassifierEngine::Notdiamond = classifier.engine;
            let settings = classifier.notdiamond.as_ref().ok_or_else(|| {
                ConfigError::new(
                    at.clone(),
                    "engine \"notdiamond\" needs a `notdiamond` object",
                )
            })?;
            let compiled =
                NotDiamond::from_config(settings).map_err(|e| e.at(&format!("{at}.notdiamond")))?;
            classifiers.push((classifier.name.clone(), compiled));
        }
        Ok(Self { gates, classifiers })
    }

    fn gate(&self, name: &str) -> Option<usize> {
        self.gates.iter().position(|(n, _)| n == name)
    }

    fn classifier_index(&self, name: &str) -> Option<usize> {
        self.classifiers.iter().position(|(n, _)| n == name)
    }

    /// A classifier by the index a [`Plan::Classify`] names.
    pub fn classifier(&self, index: usize) -> Option<&NotDiamond> {
        self.classifiers.get(index).map(|(_, c)| c)
    }

    /// A classifier's name, for logs.
    pub fn classifier_name(&self, index: usize) -> &str {
        self.classifiers.get(index).map_or("", |(n, _)| n.as_str())
    }
}

/// What serves one request. Providers are indices into the inventory the
/// router was compiled with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plan {
    /// Try these in order: the choice first, then its failover.
    Chain(Vec<usize>),
    /// Ask a classifier to pick among `candidates`; without an answer take
    /// `failover`. See [`Plan::after_classification`].
    Classify {
        /// The classifier's index in [`Classifiers`].
        classifier: usize,
        /// The providers it picks from.
        candidates: Vec<usize>,
        /// The route's (or router's) failover.
        failover: Option<usize>,
    },
    /// Send to all at once.
    FanOut {
        /// The providers.
        providers: Vec<usize>,
        /// How their answers make one.
        mode: FanOutMode,
    },
}

impl Plan {
    /// The chain once the classifier answered (`Some(index into
    /// candidates)`) or gave no answer (`None`): the choice, then the
    /// failover. Empty when there is neither.
    pub fn after_classification(
        candidates: &[usize],
        failover: Option<usize>,
        choice: Option<usize>,
    ) -> Vec<usize> {
        let chosen = choice.and_then(|i| candidates.get(i).copied());
        dedup(chosen.into_iter().chain(failover).collect())
    }
}

/// The answer when no route matches.
pub fn no_route() -> ErrorResponse {
    ErrorResponse::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "no ai/router route matched the request",
    )
    .with_code("no_route_matched")
    .no_retry()
}

enum Target {
    Provider(usize),
    Classify {
        classifier: usize,
        providers: Vec<usize>,
    },
    Nested(Vec<Route>),
    Weighted(Vec<(usize, u32)>),
    /// Model names (aliases, and inventory names when `names` is set) to
    /// the providers serving them.
    Models(HashMap<String, Vec<usize>>),
    FanOut {
        providers: Vec<usize>,
        mode: FanOutMode,
    },
}

struct Route {
    gates: Vec<usize>,
    target: Target,
    failover: Option<usize>,
}

/// A compiled `ai/router`.
pub struct Router {
    classifiers: Arc<Classifiers>,
    inventory: Vec<String>,
    routes: Vec<Route>,
    failover: Option<usize>,
    reads_body: bool,
    /// Model names `models` routes resolve (aliases and inventory names).
    model_names: std::collections::HashSet<String>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .field("failover", &self.failover)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Compiles `config` against the gates and classifiers of the service
    /// and the inventory of provider names (`ai/providers`); errors are
    /// relative to the `ai/router` object.
    pub fn compile(
        config: &RouterConfig,
        classifiers: Arc<Classifiers>,
        inventory: &[&str],
    ) -> Result<Self, ConfigError> {
        let shared = Arc::clone(&classifiers);
        let mut builder = Builder {
            classifiers: &shared,
            inventory,
            reads_body: false,
            model_names: std::collections::HashSet::new(),
        };
        if config.routes.is_empty() {
            return Err(ConfigError::new("routes", "needs at least one route"));
        }
        let routes = builder.routes(&config.routes, "routes")?;
        let failover = config
            .failover
            .as_deref()
            .map(|name| builder.provider(name, "failover"))
            .transpose()?;
        let reads_body = builder.reads_body
            || classifiers.gates.iter().any(|(_, gate)| match gate {
                Gate::Policy(c) => c.reads_body(),
                Gate::Header { .. } => false,
            });
        Ok(Self {
            inventory: inventory.iter().map(|s| (*s).to_owned()).collect(),
            classifiers,
            routes,
            failover,
            reads_body,
            model_names: builder.model_names,
        })
    }

    /// Whether `model` is a name a `models` route resolves (so the vendor
    /// must not receive it as its model).
    pub fn knows_model(&self, model: &str) -> bool {
        self.model_names.contains(model)
    }

    /// The shared classifiers.
    pub fn classifiers(&self) -> &Arc<Classifiers> {
        &self.classifiers
    }

    /// A provider's inventory name.
    pub fn provider_name(&self, index: usize) -> &str {
        self.inventory.get(index).map_or("", String::as_str)
    }

    /// Whether a decision may read the parsed JSON body (policy gates over
    /// `req_body`, routes on `model`, classifiers).
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }

    /// Decides. Routes are tried top to bottom; the first whose gates all
    /// pass is taken (nested routes only within it). `Err` when none
    /// matches: answer it, whatever `failover` says.
    pub fn decide<B>(
        &self,
        request: &Request<B>,
        body: Option<&JsonBody>,
    ) -> Result<Plan, ErrorResponse> {
        let mut memo: Vec<Option<bool>> = vec![None; self.classifiers.gates.len()];
        let mut gate = |index: usize| -> bool {
            match memo.get(index).copied().flatten() {
                Some(known) => known,
                None => {
                    let passed = self
                        .classifiers
                        .gates
                        .get(index)
                        .is_some_and(|(_, g)| g.passes(request, body));
                    if let Some(slot) = memo.get_mut(index) {
                        *slot = Some(passed);
                    }
                    passed
                }
            }
        };
        let model = body
            .and_then(|b| b.value().get("model"))
            .and_then(|m| m.as_str());
        decide_in(&self.routes, self.failover, &mut gate, model).ok_or_else(no_route)
    }
}

fn decide_in(
    routes: &[Route],
    inherited: Option<usize>,
    gate: &mut impl FnMut(usize) -> bool,
    model: Option<&str>,
) -> Option<Plan> {
    for route in routes {
        if !route.gates.iter().all(|g| gate(*g)) {
            continue;
        }
        let failover = route.failover.or(inherited);
        let plan = match &route.target {
            Target::Provider(p) => {
                Plan::Chain(dedup(vec![*p].into_iter().chain(failover).collect()))
            }
            Target::Classify {
                classifier,
                providers,
            } => Plan::Classify {
                classifier: *classifier,
                candidates: providers.clone(),
                failover,
            },
            // A matching route with nested routes decides within them: if
            // none of them matches, nothing does.
            Target::Nested(inner) => return decide_in(inner, inherited, gate, model),
            Target::Weighted(choices) => {
                Plan::Chain(weighted_chain(choices, fastrand::u32(..), failover))
            }
            // A model the route does not know: the route does not match.
            Target::Models(models) => match model.and_then(|m| models.get(m)) {
                Some(list) => Plan::Chain(dedup(list.iter().copied().chain(failover).collect())),
                None => continue,
            },
            Target::FanOut { providers, mode } => Plan::FanOut {
                providers: providers.clone(),
                mode: *mode,
            },
        };
        return Some(plan);
    }
    None
}

/// The weighted pick (`roll` a random number), then the others heaviest
/// first, then the failover.
fn weighted_chain(choices: &[(usize, u32)], roll: u32, failover: Option<usize>) -> Vec<usize> {
    let total: u64 = choices.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut first = None;
    if total > 0 {
        let mut point = u64::from(roll) % total;
        for (provider, weight) in choices {
            let weight = u64::from(*weight);
            if point < weight {
                first = Some(*provider);
                break;
            }
            point -= weight;
        }
    }
    let mut rest: Vec<(usize, u32)> = choices
        .iter()
        .filter(|(p, _)| Some(*p) != first)
        .copied()
        .collect();
    rest.sort_by_key(|(_, weight)| std::cmp::Reverse(*weight));
    dedup(
        first
            .into_iter()
            .chain(rest.into_iter().map(|(p, _)| p))
            .chain(failover)
            .collect(),
    )
}

fn dedup(list: Vec<usize>) -> Vec<usize> {
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

struct Builder<'a> {
    classifiers: &'a Classifiers,
    inventory: &'a [&'a str],
    reads_body: bool,
    model_names: std::collections::HashSet<String>,
}

impl Builder<'_> {
    fn provider(&self, name: &str, path: &str) -> Result<usize, ConfigError> {
        self.inventory
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| {
                ConfigError::new(
                    path,
                    format!("provider {name:?} is not declared in ai/providers"),
                )
            })
    }

    fn providers(&self, names: &[String], path: &str) -> Result<Vec<usize>, ConfigError> {
        if names.is_empty() {
            return Err(ConfigError::new(path, "needs at least one provider"));
        }
        names
            .iter()
            .enumerate()
            .map(|(i, n)| self.provider(n, &format!("{path}[{i}]")))
            .collect()
    }

    fn routes(&mut self, routes: &[RouteConfig], path: &str) -> Result<Vec<Route>, ConfigError> {
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(r, &format!("{path}[{i}]")))
            .collect()
    }

    fn route(&mut self, route: &RouteConfig, path: &str) -> Result<Route, ConfigError> {
        let at = |field: &str| format!("{path}.{field}");
        let gates = match &route.gates {
            None => Vec::new(),
            Some(names) if names.is_empty() => {
                return Err(ConfigError::new(
                    at("gates"),
                    "needs at least one gate (leave it out for a catch-all route)",
                ));
            }
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    self.classifiers.gate(name).ok_or_else(|| {
                        ConfigError::new(
                            format!("{path}.gates[{i}]"),
                            format!("gate {name:?} is not declared in ai/classifiers"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let targets = [
            route.provider.is_some(),
            route.classifier.is_some() || route.providers.is_some(),
            route.routes.is_some(),
            route.weighted.is_some(),
            route.models.is_some(),
            route.fan_out.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if route.provider.is_some() && route.classifier.is_some() {
            return Err(ConfigError::new(
                at("classifier"),
                "`provider` and `classifier` exclude each other",
            ));
        }
        if route.classifier.is_some() != route.providers.is_some() {
            let (field, other) = if route.classifier.is_some() {
                ("classifier", "providers")
            } else {
                ("providers", "classifier")
            };
            return Err(ConfigError::new(
                at(field),
                format!("`{field}` needs `{other}`"),
            ));
        }
        if route.routes.is_some() && route.failover.is_some() {
            return Err(ConfigError::new(
                at("failover"),
                "a route with nested `routes` takes no `failover` (set it on the nested routes)",
            ));
        }
        if targets != 1 {
            return Err(ConfigError::new(
                path,
                "a route needs exactly one of `provider`, `classifier` + `providers`, `routes`, `weighted`, `models`, `fan_out`",
            ));
        }
        let target = if let Some(name) = &route.provider {
            Target::Provider(self.provider(name, &at("provider"))?)
        } else if let (Some(classifier), Some(providers)) = (&route.classifier, &route.providers) {
            let index = self
                .classifiers
                .classifier_index(classifier)
                .ok_or_else(|| {
                    ConfigError::new(
                        at("classifier"),
                        format!("classifier {classifier:?} is not declared in ai/classifiers"),
                    )
                })?;
            self.reads_body = true;
            Target::Classify {
                classifier: index,
                providers: self.providers(providers, &at("providers"))?,
            }
        } else if let Some(inner) = &route.routes {
            if inner.is_empty() {
                return Err(ConfigError::new(at("routes"), "needs at least one route"));
            }
            Target::Nested(self.routes(inner, &at("routes"))?)
        } else if let Some(weighted) = &route.weighted {
            if weighted.is_empty() {
                return Err(ConfigError::new(
                    at("weighted"),
                    "needs at least one provider",
                ));
            }
            if weighted.iter().all(|w| w.weight == 0) {
                return Err(ConfigError::new(
                    at("weighted"),
                    "at least one weight must be above 0",
                ));
            }
            let mut choices = Vec::with_capacity(weighted.len());
            for (i, w) in weighted.iter().enumerate() {
                let p = self.provider(&w.provider, &format!("{path}.weighted[{i}].provider"))?;
                choices.push((p, w.weight));
            }
            Target::Weighted(choices)
        } else if let Some(models) = &route.models {
            if models.aliases.is_empty() && !models.names {
                return Err(ConfigError::new(
                    at("models"),
                    "needs `aliases` or `names: true`",
                ));
            }
            let mut aliases = HashMap::new();
            for (alias, providers) in &models.aliases {
                let key = switchboard_core::config::key_segment(alias);
                aliases.insert(
                    alias.clone(),
                    self.providers(providers, &format!("{path}.models.aliases.{key}"))?,
                );
            }
            if models.names {
                for (index, name) in self.inventory.iter().enumerate() {
                    aliases
                        .entry((*name).to_owned())
                        .or_insert_with(|| vec![index]);
                }
            }
            self.reads_body = true;
            self.model_names.extend(aliases.keys().cloned());
            Target::Models(aliases)
        } else if let Some(fan_out) = &route.fan_out {
            if fan_out.providers.len() < 2 {
                return Err(ConfigError::new(
                    at("fan_out.providers"),
                    "a fan-out needs at least two providers",
                ));
            }
            Target::FanOut {
                providers: self.providers(&fan_out.providers, &at("fan_out.providers"))?,
                mode: fan_out.mode,
            }
        } else {
            return Err(ConfigError::new(path, "a route needs a target"));
        };
        let failover = route
            .failover
            .as_deref()
            .map(|name| self.provider(name, &at("failover")))
            .transpose()?;
        Ok(Route {
            gates,
            target,
            failover,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use switchboard_core::Claims;

    const INVENTORY: [&str; 4] = ["fast-chat", "reasoning", "cheap", "backup"];

    fn classifiers() -> Arc<Classifiers> {
        let config: ClassifiersConfig = switchboard_core::config::from_value(&json!({
            "gates": [
                {"name": "plan_pro", "rule": "header", "header": {"name": "X-Plan", "value": "pro"}},
                {"name": "is_code", "rule": "policy", "policy": {"value": "getHeader('X-Task') == 'code'"}},
                {"name": "jwt_gold", "rule": "policy", "policy": {"value": "JWT.tier == 'gold'"}},
                {"@comment": "a gate on the body", "name": "long", "rule": "policy",
                 "policy": {"value": "size(req_body.contents) > 10"}}
            ],
            "classifiers": [{"name": "smart", "engine": "notdiamond",
                             "notdiamond": {"credentials": "k", "base_url": "http://127.0.0.1:1"}}]
        }))
        .unwrap();
        Arc::new(Classifiers::from_config(&config).unwrap())
    }

    fn router(config: Value) -> Result<Router, ConfigError> {
        let config: RouterConfig = switchboard_core::config::from_value(&config)?;
        Router::compile(&config, classifiers(), &INVENTORY)
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder();
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    fn names(router: &Router, plan: &Plan) -> Vec<String> {
        match plan {
            Plan::Chain(list) => list
                .iter()
                .map(|p| router.provider_name(*p).to_owned())
                .collect(),
            other => panic!("not a chain: {other:?}"),
        }
    }

    fn krakend_example() -> Router {
        router(json!({"failover": "fast-chat", "routes": [
            {"gates": ["plan_pro"], "routes": [
                {"gates": ["is_code"], "provider": "reasoning", "failover": "cheap"},
                {"classifier": "smart", "providers": ["fast-chat", "reasoning"]}]},
            {"provider": "backup"}]}))
        .unwrap()
    }

    #[test]
    fn first_match_wins_and_all_gates_must_pass() {
        let r = router(json!({"routes": [
            {"gates": ["plan_pro", "is_code"], "provider": "reasoning"},
            {"gates": ["plan_pro"], "provider": "cheap"},
            {"gates": ["plan_pro"], "provider": "backup"}]}))
        .unwrap();
        let both = r
            .decide(&req(&[("x-plan", "pro"), ("x-task", "code")]), None)
            .unwrap();
        assert_eq!(names(&r, &both), ["reasoning"]);
        let one = r.decide(&req(&[("x-plan", "pro")]), None).unwrap();
        assert_eq!(names(&r, &one), ["cheap"], "first match, not the later one");
    }

    #[test]
    fn header_gates_are_exact() {
        let r =
            router(json!({"routes": [{"gates": ["plan_pro"], "provider": "reasoning"}]})).unwrap();
        assert!(r.decide(&req(&[("x-plan", "Pro")]), None).is_err());
        assert!(r.decide(&req(&[("x-plan", "pro ")]), None).is_err());
        assert!(r.decide(&req(&[("X-PLAN", "pro")]), None).is_ok());
    }

    #[test]
    fn gateless_route_is_the_catch_all() {
        let r = krakend_example();
        let plan = r.decide(&req(&[]), None).unwrap();
        assert_eq!(names(&r, &plan), ["backup", "fast-chat"]);
    }

    #[test]
    fn nested_routes_and_route_failover_overrides_router_failover() {
        let r = krakend_example();
        let plan = r
            .decide(&req(&[("x-plan", "pro"), ("x-task", "code")]), None)
            .unwrap();
        assert_eq!(names(&r, &plan), ["reasoning", "cheap"]);
        let plan = r.decide(&req(&[("x-plan", "pro")]), None).unwrap();
        assert_eq!(
            plan,
            Plan::Classify {
                classifier: 0,
                candidates: vec![0, 1],
                failover: Some(0)
            }
        );
        assert_eq!(
            Plan::after_classification(&[0, 1], Some(0), Some(1)),
            [1, 0]
        );
        assert_eq!(Plan::after_classification(&[0, 1], Some(0), None), [0]);
        assert!(Plan::after_classification(&[0, 1], None, None).is_empty());
    }

    #[test]
    fn a_matching_parent_whose_nested_routes_do_not_match_matches_nothing() {
        let r = router(json!({"failover": "backup", "routes": [
            {"gates": ["plan_pro"], "routes": [{"gates": ["is_code"], "provider": "reasoning"}]},
            {"provider": "cheap"}]}))
        .unwrap();
        let err = r.decide(&req(&[("x-plan", "pro")]), None).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.message().contains("no ai/router route matched"));
    }

    #[test]
    fn no_match_fails_even_with_a_failover() {
        let r = router(json!({"failover": "backup", "routes": [{"gates": ["plan_pro"], "provider": "reasoning"}]})).unwrap();
        let err = r.decide(&req(&[]), None).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.json_body()["error"]["code"], "no_route_matched");
    }

    #[test]
    fn jwt_and_body_gates() {
        let r = router(json!({"routes": [
            {"gates": ["jwt_gold"], "provider": "reasoning"},
            {"gates": ["long"], "provider": "cheap"},
            {"provider": "fast-chat"}]}))
        .unwrap();
        assert!(r.reads_body());
        let mut gold = req(&[]);
        gold.extensions_mut()
            .insert(Claims::new(json!({"tier": "gold"})));
        assert_eq!(names(&r, &r.decide(&gold, None).unwrap()), ["reasoning"]);
        let body = JsonBody::new(json!({"contents": "a rather long question"}));
        assert_eq!(
            names(&r, &r.decide(&req(&[]), Some(&body)).unwrap()),
            ["cheap"]
        );
        // No claims, no body: the gates fail closed.
        assert_eq!(
            names(&r, &r.decide(&req(&[]), None).unwrap()),
            ["fast-chat"]
        );
    }

    #[test]
    fn models_route_on_aliases_and_names() {
        let r = router(json!({"failover": "backup", "routes": [
            {"models": {"aliases": {"fast": ["fast-chat", "cheap"]}, "names": true}},
            {"provider": "reasoning"}]}))
        .unwrap();
        let body = |m: &str| JsonBody::new(json!({"model": m}));
        let plan = r.decide(&req(&[]), Some(&body("fast"))).unwrap();
        assert_eq!(names(&r, &plan), ["fast-chat", "cheap", "backup"]);
        let plan = r.decide(&req(&[]), Some(&body("cheap"))).unwrap();
        assert_eq!(names(&r, &plan), ["cheap", "backup"]);
        let plan = r.decide(&req(&[]), Some(&body("gpt-unknown"))).unwrap();
        assert_eq!(names(&r, &plan), ["reasoning", "backup"], "falls through");
    }

    #[test]
    fn weighted_choice() {
        let choices = [(0, 70), (1, 30), (2, 0)];
        assert_eq!(weighted_chain(&choices, 0, None), [0, 1, 2]);
        assert_eq!(weighted_chain(&choices, 69, None), [0, 1, 2]);
        assert_eq!(weighted_chain(&choices, 70, Some(3)), [1, 0, 2, 3]);
        assert_eq!(weighted_chain(&choices, 199, None), [1, 0, 2]);
        let r = router(json!({"routes": [{"weighted": [
            {"provider": "fast-chat", "weight": 1}, {"provider": "cheap", "weight": 1}]}]}))
        .unwrap();
        let mut seen = [0usize; 2];
        for _ in 0..200 {
            let plan = r.decide(&req(&[]), None).unwrap();
            let first = names(&r, &plan)[0].clone();
            seen[usize::from(first == "cheap")] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "both are picked: {seen:?}");
    }

    #[test]
    fn fan_out_plan() {
        let r = router(json!({"routes": [{"fan_out": {"providers": ["fast-chat", "cheap"], "mode": "first"}}]})).unwrap();
        assert_eq!(
            r.decide(&req(&[]), None).unwrap(),
            Plan::FanOut {
                providers: vec![0, 2],
                mode: FanOutMode::First
            }
        );
    }

    #[test]
    fn config_rules() {
        let err = |config: Value| router(config).unwrap_err();
        assert_eq!(err(json!({"routes": []})).path, "routes");
        assert_eq!(
            err(json!({"routes": [{"provider": "nope"}]})).path,
            "routes[0].provider"
        );
        assert_eq!(
            err(json!({"routes": [{"provider": "cheap", "classifier": "smart", "providers": ["cheap"]}]})).path,
            "routes[0].classifier"
        );
        assert_eq!(
            err(json!({"routes": [{"classifier": "smart"}]})).path,
            "routes[0].classifier"
        );
        assert_eq!(
            err(json!({"routes": [{"providers": ["cheap"]}]})).path,
            "routes[0].providers"
        );
        assert_eq!(
            err(json!({"routes": [{"routes": [{"provider": "cheap"}], "failover": "backup"}]}))
                .path,
            "routes[0].failover"
        );
        assert_eq!(
            err(json!({"routes": [{"gates": [], "provider": "cheap"}]})).path,
            "routes[0].gates"
        );
        assert_eq!(
            err(json!({"routes": [{"gates": ["ghost"], "provider": "cheap"}]})).path,
            "routes[0].gates[0]"
        );
        assert_eq!(
            err(json!({"routes": [{"gates": ["plan_pro"]}]})).path,
            "routes[0]"
        );
        assert_eq!(
            err(json!({"routes": [{"provider": "cheap"}], "failover": "ghost"})).path,
            "failover"
        );
        assert!(
            err(json!({"routes": [{"provider": "cheap", "bogus": 1}]}))
                .message
                .contains("bogus")
        );
        assert_eq!(
            err(json!({"routes": [{"routes": [{"gates": ["plan_pro"], "classifier": "ghost", "providers": ["cheap"]}]}]})).path,
            "routes[0].routes[0].classifier"
        );
    }

    #[test]
    fn classifier_config_rules() {
        let err = |config: Value| {
            let config: ClassifiersConfig = switchboard_core::config::from_value(&config).unwrap();
            Classifiers::from_config(&config).unwrap_err()
        };
        assert_eq!(
            err(json!({"gates": [{"name": "g", "rule": "header"}]})).path,
            "gates[0]"
        );
        assert_eq!(
            err(json!({"gates": [{"name": "g", "rule": "policy", "policy": {"value": "1 +"}}]}))
                .path,
            "gates[0].policy.value"
        );
        assert_eq!(
            err(json!({"gates": [
                {"name": "g", "rule": "header", "header": {"name": "X", "value": "1"}},
                {"name": "g", "rule": "header", "header": {"name": "X", "value": "2"}}]}))
            .path,
            "gates[1].name"
        );
        assert_eq!(
            err(json!({"classifiers": [{"name": "c", "engine": "notdiamond"}]})).path,
            "classifiers[0]"
        );
        assert_eq!(
            err(json!({"classifiers": [{"name": "c", "engine": "notdiamond", "notdiamond": {"credentials": ""}}]})).path,
            "classifiers[0].notdiamond.credentials"
        );
    }
}
