use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::from_value;
use tower::Layer;

use crate::config::{CelCheck, PoliciesConfig};
use crate::engine::Engine;
use crate::headers::referenced_header_names;
use crate::policy::{PolicySet, Source};
use crate::service::{EvaluatePolicies, State};
use crate::vars::{Var, VarSet};

/// Applies [`EvaluatePolicies`]: CEL policies compiled once, evaluated on
/// every request (JWT policies first, then request policies) and response.
///
/// Built from `security/policies` with
/// [`try_from_config`](Self::try_from_config) or from CE's
/// `validation/cel` with [`try_from_cel_validation`](Self::try_from_cel_validation).
#[derive(Clone, Debug)]
pub struct EvaluatePoliciesLayer {
    state: Arc<State>,
}

impl EvaluatePoliciesLayer {
    /// Compiles a `security/policies` object. An invalid expression fails
    /// with its path (`req.policies[1]`) and the parser's message.
    pub fn try_from_config(value: &Value) -> Result<Self, ConfigError> {
        Self::from_config(from_value(value)?)
    }

    /// Compiles a typed `security/policies` config.
    pub fn from_config(config: PoliciesConfig) -> Result<Self, ConfigError> {
        if config.req.is_none() && config.resp.is_none() && config.jwt.is_none() {
            return Err(ConfigError::new(
                "",
                "security/policies needs at least one of req, resp or jwt",
            ));
        }
        let engine = Engine::new(!config.disable_macros).map_err(|e| ConfigError::new("", e))?;
        let set = |name: &str, entry: &Option<crate::config::PolicySetConfig>, status| {
            entry.as_ref().map_or(Ok(None), |entry| {
                PolicySet::from_config(&engine, name, entry, config.auto_join_policies, status)
            })
        };
        let jwt = set("jwt", &config.jwt, StatusCode::UNAUTHORIZED);
        let req = set("req", &config.req, StatusCode::INTERNAL_SERVER_ERROR);
        let resp = set("resp", &config.resp, StatusCode::INTERNAL_SERVER_ERROR);
        // Each set is compiled: the mistakes of all three are reported.
        match (jwt, req, resp) {
            (Ok(jwt), Ok(req), Ok(resp)) => {
                Ok(Self::from_sets(engine, jwt, req, resp, config.debug))
            }
            (jwt, req, resp) => Err(ConfigError::from_errors(
                [jwt.err(), req.err(), resp.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )
            .unwrap_or_else(|| ConfigError::new("", "invalid security/policies"))),
        }
    }

    /// Compiles CE's `validation/cel`: a list of `{"check_expr": "..."}`.
    ///
    /// A check that reads `JWT` runs with the JWT policies (401 when it
    /// fails), one that reads a `resp_` variable on the response, any other
    /// on the request; a failed request or response check answers 500, as
    /// KrakenD does. Advanced macros are not available, as in KrakenD CE.
    pub fn try_from_cel_validation(value: &Value) -> Result<Self, ConfigError> {
        Self::from_cel_checks(&from_value::<Vec<CelCheck>>(value)?)
    }

    /// Compiles typed `validation/cel` checks.
    pub fn from_cel_checks(checks: &[CelCheck]) -> Result<Self, ConfigError> {
        let engine = Engine::new(false).map_err(|e| ConfigError::new("", e))?;
        let (mut jwt, mut req, mut resp) = (Vec::new(), Vec::new(), Vec::new());
        let mut errors = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            let path = format!("[{i}].check_expr");
            let vars = match engine.compile(&check.check_expr) {
                Ok(compiled) => compiled.vars(),
                Err(message) => {
                    errors.push(ConfigError::new(
                        path,
                        format!("invalid CEL expression: {message}"),
                    ));
                    continue;
                }
            };
            let source = Source {
                path,
                text: &check.check_expr,
                evaluator: Some(i),
            };
            if vars.contains(Var::Jwt) {
                jwt.push(source);
            } else if vars.has_response_var() {
                resp.push(source);
            } else {
                req.push(source);
            }
        }
        // Every check was compiled: each mistake is reported.
        if let Some(error) = ConfigError::from_errors(errors) {
            return Err(error);
        }
        let set = |sources: &[Source<'_>], status| {
            if sources.is_empty() {
                Ok(None)
            } else {
                PolicySet::compile(&engine, "", sources, false, None, status).map(Some)
            }
        };
        let jwt = set(&jwt, StatusCode::UNAUTHORIZED)?;
        let req = set(&req, StatusCode::INTERNAL_SERVER_ERROR)?;
        let resp = set(&resp, StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(Self::from_sets(engine, jwt, req, resp, false))
    }

    fn from_sets(
        engine: Engine,
        jwt: Option<PolicySet>,
        req: Option<PolicySet>,
        resp: Option<PolicySet>,
        debug: bool,
    ) -> Self {
        let request_sets: Vec<PolicySet> = jwt.into_iter().chain(req).collect();
        let request_vars = request_sets
            .iter()
            .fold(VarSet::default(), |acc, set| acc.union(set.vars()));
        Self {
            state: Arc::new(State {
                engine,
                request_sets,
                request_vars,
                response_set: resp,
                debug,
            }),
        }
    }

    /// Canonical names of the headers the request-side policies read as
    /// `req_headers['X']`, `req_headers.X` or `hasHeader('X')`. Found in the
    /// source text, best effort: meant for linting routes.
    pub fn referenced_request_headers(&self) -> Vec<String> {
        referenced_header_names(self.state.request_sets.iter().flat_map(PolicySet::sources))
    }

    /// Whether any policy runs on the request (JWT or request policies).
    pub fn has_request_policies(&self) -> bool {
        !self.state.request_sets.is_empty()
    }

    /// Whether any policy runs on the response.
    pub fn has_response_policies(&self) -> bool {
        self.state.response_set.is_some()
    }
}

impl<S> Layer<S> for EvaluatePoliciesLayer {
    type Service = EvaluatePolicies<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EvaluatePolicies::new(inner, Arc::clone(&self.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_bad_expression_is_reported() {
        let err = EvaluatePoliciesLayer::try_from_config(&serde_json::json!({
            "req": {"policies": ["req_method ==", "true", "1 +"]},
            "resp": {"policies": ["resp_status =="]}
        }))
        .err()
        .unwrap();
        let paths: Vec<String> = err.into_all().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            ["req.policies[0]", "req.policies[2]", "resp.policies[0]"]
        );
        let err = EvaluatePoliciesLayer::try_from_cel_validation(&serde_json::json!([
            {"check_expr": "a =="}, {"check_expr": "true"}, {"check_expr": "b +"}
        ]))
        .err()
        .unwrap();
        let paths: Vec<String> = err.into_all().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["[0].check_expr", "[2].check_expr"]);
    }

    #[test]
    fn compile_errors_name_the_policy() {
        let err = EvaluatePoliciesLayer::try_from_config(&json!({
            "req": {"policies": ["true", "req_method =="]}
        }))
        .unwrap_err();
        assert_eq!(err.path, "req.policies[1]");
        assert!(
            err.message.contains("invalid CEL expression"),
            "{}",
            err.message
        );
        assert!(err.message.contains("ERROR"), "{}", err.message);
    }

    #[test]
    fn compile_errors_with_auto_join_still_name_the_policy() {
        let err = EvaluatePoliciesLayer::try_from_config(&json!({
            "auto_join_policies": true,
            "jwt": {"policies": ["JWT.sub != ''", "'a'.matches('(')"]}
        }))
        .unwrap_err();
        assert_eq!(err.path, "jwt.policies[1]");
    }

    #[test]
    fn bad_status_and_empty_config_are_refused() {
        let err = EvaluatePoliciesLayer::try_from_config(&json!({
            "resp": {"policies": ["true"], "error": {"status": 200}}
        }))
        .unwrap_err();
        assert_eq!(err.path, "resp.error.status");
        assert!(EvaluatePoliciesLayer::try_from_config(&json!({})).is_err());
        let err =
            EvaluatePoliciesLayer::try_from_config(&json!({"req": {"policies": "x"}})).unwrap_err();
        assert_eq!(err.path, "req.policies");
    }

    #[test]
    fn cel_validation_paths() {
        let err = EvaluatePoliciesLayer::try_from_cel_validation(&json!([
            {"check_expr": "true"},
            {"check_expr": "req_params.Nick.matches('k.*'"}
        ]))
        .unwrap_err();
        assert_eq!(err.path, "[1].check_expr");
        let layer = EvaluatePoliciesLayer::try_from_cel_validation(&json!([
            {"check_expr": "'website' in resp_data"},
            {"check_expr": "has(JWT.sub)"}
        ]))
        .unwrap();
        assert!(layer.has_request_policies() && layer.has_response_policies());
    }

    #[test]
    fn referenced_headers_for_linting() {
        let layer = EvaluatePoliciesLayer::try_from_config(&json!({
            "jwt": {"policies": ["JWT.role == 'admin'"]},
            "req": {"policies": ["req_headers['x-llm'][0] in ['gemini','openai']"]},
            "resp": {"policies": ["resp_headers['X-Other'][0] == 'x'"]}
        }))
        .unwrap();
        assert_eq!(layer.referenced_request_headers(), vec!["X-Llm"]);
    }
}
