//! How an endpoint with several backends calls them: KrakenD's endpoint
//! `proxy.strategy` (`parallel`, `sequential` with `{resp0_x}`, `fallback`)
//! and each backend's `backend/conditional` (`header`, `policy`,
//! `fallback`), for any backend.
//!
//! Config reading and the choice of backends are pure; [`handle`] drives
//! the proxy's own helpers to call them.

use http::{Request, Response, StatusCode, request};
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::buffer::collect;
use switchboard_core::config::from_value;
use switchboard_core::{Body, BodyLimit, ConfigError, ErrorResponse, JsonBody, RouteParams};
use switchboard_policies::RequestCondition;
use tokio::time::Instant;

use crate::forward::HeaderFilter;
use crate::proxy::{self, BackendRoute, EndpointState};

/// The endpoint's `proxy.strategy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Every backend at once, answers merged (the default).
    Parallel,
    /// One after the other; a backend's `url_pattern` may use `{respN_x}`
    /// from answer N; a failure aborts.
    Sequential {
        /// `sequential_propagated_params`: when set, only these `respN_x`.
        propagated: Vec<String>,
    },
    /// The next backend only when the current one fails.
    Fallback,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyConfig {
    #[serde(default)]
    strategy: Option<String>,
    /// Deprecated spelling of `strategy: sequential`.
    #[serde(default)]
    sequential: Option<bool>,
    #[serde(default)]
    sequential_propagated_params: Vec<String>,
    /// Read by [`crate::render::Finishing`].
    #[serde(default, rename = "static")]
    _static: Option<Value>,
    /// Read by [`crate::render::Finishing`].
    #[serde(default)]
    flatmap_filter: Option<Value>,
}

/// A backend's `proxy` namespace: `flatmap_filter` and `shadow`.
#[derive(Debug, Default)]
pub(crate) struct BackendProxy {
    pub(crate) flatmap: Option<crate::flatmap::Flatmap>,
    /// The backend gets a copy of each request; its answer is ignored.
    pub(crate) shadow: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendProxyConfig {
    #[serde(default)]
    flatmap_filter: Option<Value>,
    #[serde(default)]
    shadow: bool,
}

impl BackendProxy {
    /// Reads a backend's `extra_config.proxy` (errors relative to it).
    pub(crate) fn from_config(value: Option<&Value>) -> Result<Self, ConfigError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let config: BackendProxyConfig = from_value(value)?;
        let flatmap = config
            .flatmap_filter
            .as_ref()
            .map(|v| crate::flatmap::Flatmap::from_config(v).map_err(|e| e.at("flatmap_filter")))
            .transpose()?;
        Ok(Self {
            flatmap,
            shadow: config.shadow,
        })
    }
}

impl Strategy {
    /// Reads the endpoint's `extra_config.proxy` (errors relative to it).
    pub(crate) fn from_config(value: Option<&Value>) -> Result<Self, ConfigError> {
        let Some(value) = value else {
            return Ok(Self::Parallel);
        };
        let config: ProxyConfig = from_value(value)?;
        let _ = &config.flatmap_filter;
        let sequential = || Self::Sequential {
            propagated: config.sequential_propagated_params.clone(),
        };
        match (config.strategy.as_deref(), config.sequential) {
            (Some("sequential"), _) | (None, Some(true)) => Ok(sequential()),
            (Some("parallel"), Some(true)) | (Some("fallback"), Some(true)) => Err(
                ConfigError::new("sequential", "contradicts `strategy`; remove one of them"),
            ),
            (Some("parallel") | None, _) => Ok(Self::Parallel),
            (Some("fallback"), _) => Ok(Self::Fallback),
            (Some(other), _) => Err(ConfigError::new(
                "strategy",
                format!("unknown strategy {other:?}: use parallel, sequential or fallback"),
            )),
        }
    }
}

/// A backend's `backend/conditional`.
#[derive(Debug)]
pub(crate) enum Condition {
    /// Run when the (forwarded) header has exactly this value.
    Header { name: String, value: String },
    /// Run when the CEL expression is true.
    Policy(RequestCondition),
    /// Run only when every other conditional backend's rule failed.
    Fallback,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionalConfig {
    strategy: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

impl Condition {
    /// Reads `backend/conditional` (errors relative to it). A header must
    /// be forwarded (`input_headers`) to be seen.
    pub(crate) fn from_config(value: &Value, headers: &HeaderFilter) -> Result<Self, ConfigError> {
        let config: ConditionalConfig = from_value(value)?;
        match config.strategy.as_str() {
            "header" => {
                let name = config
                    .name
                    .ok_or_else(|| ConfigError::new("name", "the header strategy needs `name`"))?;
                let value = config.value.ok_or_else(|| {
                    ConfigError::new("value", "the header strategy needs `value`")
                })?;
                let lower = name.to_ascii_lowercase();
                if !headers.allows(&lower) {
                    return Err(ConfigError::new(
                        "name",
                        format!("{name:?} must be in the endpoint's input_headers to be seen"),
                    ));
                }
                Ok(Self::Header { name: lower, value })
            }
            "policy" => {
                if config.name.is_some() {
                    return Err(ConfigError::new(
                        "name",
                        "only the header strategy takes `name`",
                    ));
                }
                let source = config.value.ok_or_else(|| {
                    ConfigError::new("value", "the policy strategy needs `value`")
                })?;
                RequestCondition::compile(&source)
                    .map(Self::Policy)
                    .map_err(|m| ConfigError::new("value", format!("invalid CEL expression: {m}")))
            }
            "fallback" => {
                if config.name.is_some() || config.value.is_some() {
                    return Err(ConfigError::new(
                        "strategy",
                        "the fallback strategy takes no `name` or `value`",
                    ));
                }
                Ok(Self::Fallback)
            }
            other => Err(ConfigError::new(
                "strategy",
                format!("unknown strategy {other:?}: use header, policy or fallback"),
            )),
        }
    }

    fn reads_body(&self) -> bool {
        matches!(self, Self::Policy(c) if c.reads_body())
    }
}

/// Checks the endpoint-wide rules: one fallback backend at most.
pub(crate) fn check_conditions(conditions: &[Option<&Condition>]) -> Result<(), String> {
    let fallbacks = conditions
        .iter()
        .filter(|c| matches!(c, Some(Condition::Fallback)))
        .count();
    if fallbacks > 1 {
        return Err("only one backend of an endpoint may be the conditional fallback".to_owned());
    }
    Ok(())
}

/// Whether a `{placeholder}` is a sequential proxy's `respN_x`.
pub(crate) fn is_response_placeholder(name: &str) -> bool {
    name.strip_prefix("resp")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(n, field)| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !field.is_empty()
        })
}

/// Which backends run for `request`: the unconditioned ones, those whose
/// rule passes, and the fallback only when every conditional rule failed.
fn selected<B>(
    backends: &[BackendRoute],
    request: &Request<B>,
    body: Option<&JsonBody>,
) -> Vec<usize> {
    let mut chosen = Vec::with_capacity(backends.len());
    let mut any_conditional_passed = false;
    let mut fallback = None;
    for (i, backend) in backends.iter().enumerate() {
        match &backend.condition {
            None => chosen.push(i),
            Some(Condition::Fallback) => fallback = Some(i),
            Some(condition) => {
                if passes(condition, request, body) {
                    any_conditional_passed = true;
                    chosen.push(i);
                }
            }
        }
    }
    if let Some(i) = fallback
        && !any_conditional_passed
    {
        chosen.push(i);
        chosen.sort_unstable();
    }
    chosen
}

fn passes<B>(condition: &Condition, request: &Request<B>, body: Option<&JsonBody>) -> bool {
    match condition {
        // The value is literal and case-sensitive; the name is not.
        Condition::Header { name, value } => request
            .headers()
            .get(name.as_str())
            .is_some_and(|v| v.as_bytes() == value.as_bytes()),
        Condition::Policy(c) => c.matches(request, body),
        Condition::Fallback => false,
    }
}

/// Flattens an answer's fields into `respN_field` (nested as
/// `respN_a.b`) route parameters; only scalars become values.
fn response_params(
    index: usize,
    value: &Value,
    propagated: &[String],
    out: &mut Vec<(String, String)>,
) {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            Value::Number(n) => out.push((prefix.to_owned(), n.to_string())),
            Value::Bool(b) => out.push((prefix.to_owned(), b.to_string())),
            Value::Null | Value::Array(_) => {}
        }
    }
    let whole = format!("resp{index}");
    if propagated.contains(&whole) {
        out.push((whole, value.to_string()));
    }
    let Value::Object(map) = value else { return };
    let mut found = Vec::new();
    for (k, v) in map {
        walk(&format!("resp{index}_{k}"), v, &mut found);
    }
    out.extend(
        found
            .into_iter()
            .filter(|(name, _)| propagated.is_empty() || propagated.iter().any(|p| p == name)),
    );
}

/// Runs an endpoint whose backends have conditions or whose strategy is
/// not the plain parallel merge.
pub(crate) async fn handle(
    state: &EndpointState,
    parts: request::Parts,
    body: Body,
) -> Result<Response<Body>, ErrorResponse> {
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .copied()
        .unwrap_or_default()
        .0;
    let bytes = collect(body, limit).await?;
    let needs_body = state
        .backends
        .iter()
        .any(|b| b.condition.as_ref().is_some_and(Condition::reads_body));
    let parsed = match parts.extensions.get::<JsonBody>() {
        Some(json) => Some(json.clone()),
        None if needs_body => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .map(JsonBody::new),
        None => None,
    };
    let deadline = Instant::now() + state.timeout;
    if let Strategy::Sequential { propagated } = &state.strategy {
        return sequential(state, parts, bytes, parsed.as_ref(), propagated, deadline).await;
    }
    let probe = Request::from_parts(parts, ());
    let chosen = selected(&state.backends, &probe, parsed.as_ref());
    let (parts, ()) = probe.into_parts();
    if chosen.is_empty() {
        return Err(no_backend());
    }
    match &state.strategy {
        Strategy::Parallel => {
            if let [only] = chosen.as_slice() {
                return proxy::call_single(state, *only, &parts, bytes, deadline).await;
            }
            proxy::merge(state, &chosen, &parts, bytes, deadline).await
        }
        Strategy::Fallback => {
            let mut last = None;
            for (n, index) in chosen.iter().enumerate() {
                let result =
                    proxy::call_single(state, *index, &parts, bytes.clone(), deadline).await;
                let failed = match &result {
                    Ok(response) => !response.status().is_success(),
                    Err(_) => true,
                };
                if !failed || n + 1 == chosen.len() {
                    return result;
                }
                tracing::debug!(backend = index, "backend failed; falling back to the next");
                last = Some(result);
            }
            last.unwrap_or_else(|| Err(ErrorResponse::bad_gateway("every backend failed")))
        }
        // Handled above.
        Strategy::Sequential { .. } => Err(ErrorResponse::internal("unreachable strategy")),
    }
}

fn no_backend() -> ErrorResponse {
    ErrorResponse::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "no backend of this endpoint matched the request's conditions",
    )
    .with_code("no_backend_matched")
    .no_retry()
}

/// The sequential proxy: each backend in order, its condition evaluated
/// just before its turn so a `policy` can read earlier answers
/// (`req_params.Resp0_x`); the conditional fallback runs when no
/// conditional backend before it ran. A failure aborts.
async fn sequential(
    state: &EndpointState,
    mut parts: request::Parts,
    bytes: bytes::Bytes,
    body: Option<&JsonBody>,
    propagated: &[String],
    deadline: Instant,
) -> Result<Response<Body>, ErrorResponse> {
    let mut merged = Map::new();
    let mut ran = 0usize;
    let mut completed = true;
    let mut conditional_passed = false;
    for (index, backend) in state.backends.iter().enumerate() {
        let run = {
            let probe = Request::from_parts(parts, ());
            let run = match &backend.condition {
                None => true,
                Some(Condition::Fallback) => !conditional_passed,
                Some(condition) => {
                    let passed = passes(condition, &probe, body);
                    conditional_passed |= passed;
                    passed
                }
            };
            parts = probe.into_parts().0;
            run
        };
        if !run {
            continue;
        }
        ran += 1;
        // As KrakenD: the first backend failing fails the endpoint; a later
        // one ends the chain with what was gathered, marked incomplete.
        let value = match proxy::call_json(state, backend, &parts, bytes.clone(), deadline).await {
            Ok(value) => proxy::reshape(value, &backend.shape),
            Err(error) if merged.is_empty() && ran == 1 => return Err(error),
            Err(error) => {
                tracing::warn!(backend = index, error = %error, "sequential backend failed");
                completed = false;
                break;
            }
        };
        let mut params: Vec<(String, String)> = parts
            .extensions
            .get::<RouteParams>()
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        response_params(index, &value, propagated, &mut params);
        parts.extensions.insert(RouteParams::from_iter(params));
        if backend.encoding == crate::config::Encoding::NoOp {
            // Read for the next backends only, as in KrakenD.
            continue;
        }
        match value {
            Value::Object(map) => merged.extend(map),
            other => {
                merged.insert("collection".to_owned(), other);
            }
        }
    }
    if ran == 0 {
        return Err(no_backend());
    }
    Ok(proxy::json_response(
        StatusCode::OK,
        Value::Object(merged),
        state.encoding,
        completed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategies() {
        assert_eq!(Strategy::from_config(None).unwrap(), Strategy::Parallel);
        assert_eq!(
            Strategy::from_config(Some(&json!({"strategy": "fallback"}))).unwrap(),
            Strategy::Fallback
        );
        assert_eq!(
            Strategy::from_config(Some(&json!({"sequential": true}))).unwrap(),
            Strategy::Sequential { propagated: vec![] }
        );
        assert_eq!(
            Strategy::from_config(Some(
                &json!({"strategy": "sequential", "sequential_propagated_params": ["resp0_id"]})
            ))
            .unwrap(),
            Strategy::Sequential {
                propagated: vec!["resp0_id".to_owned()]
            }
        );
        assert_eq!(
            Strategy::from_config(Some(&json!({"strategy": "random"})))
                .unwrap_err()
                .path,
            "strategy"
        );
        assert_eq!(
            Strategy::from_config(Some(&json!({"strategy": "fallback", "sequential": true})))
                .unwrap_err()
                .path,
            "sequential"
        );
        assert!(Strategy::from_config(Some(&json!({"shadow": true}))).is_err());
        assert_eq!(
            Strategy::from_config(Some(
                &json!({"static": {"strategy": "always", "data": {}}, "flatmap_filter": []})
            ))
            .unwrap(),
            Strategy::Parallel
        );
        let backend = BackendProxy::from_config(Some(&json!({"shadow": true}))).unwrap();
        assert!(backend.shadow && backend.flatmap.is_none());
        let err = BackendProxy::from_config(Some(
            &json!({"flatmap_filter": [{"type": "mv", "args": []}]}),
        ))
        .unwrap_err();
        assert_eq!(err.path, "flatmap_filter[0].type");
        assert!(BackendProxy::from_config(Some(&json!({"sequential": true}))).is_err());
    }

    #[test]
    fn conditions_config() {
        let headers = HeaderFilter::new(&["X-Tier".to_owned()]).unwrap();
        let err = |v: Value| Condition::from_config(&v, &headers).unwrap_err().path;
        assert_eq!(err(json!({"strategy": "header", "value": "a"})), "name");
        assert_eq!(
            err(json!({"strategy": "header", "name": "X-Other", "value": "a"})),
            "name"
        );
        assert_eq!(err(json!({"strategy": "policy", "value": "1 +"})), "value");
        assert_eq!(
            err(json!({"strategy": "fallback", "value": "x"})),
            "strategy"
        );
        assert_eq!(err(json!({"strategy": "coin"})), "strategy");
        assert!(matches!(
            Condition::from_config(
                &json!({"strategy": "header", "name": "X-Tier", "value": "a"}),
                &headers
            ),
            Ok(Condition::Header { .. })
        ));
        assert!(
            check_conditions(&[Some(&Condition::Fallback), Some(&Condition::Fallback)]).is_err()
        );
        assert!(check_conditions(&[Some(&Condition::Fallback), None]).is_ok());
    }

    #[test]
    fn response_placeholders() {
        assert!(is_response_placeholder("resp0_id"));
        assert!(is_response_placeholder("resp12_a.b"));
        assert!(!is_response_placeholder("resp_id"));
        assert!(!is_response_placeholder("respx_id"));
        assert!(!is_response_placeholder("resp0_"));
        let mut out = Vec::new();
        response_params(
            0,
            &json!({"id": 7, "user": {"name": "a"}, "l": [1]}),
            &[],
            &mut out,
        );
        assert_eq!(
            out,
            [
                ("resp0_id".to_owned(), "7".to_owned()),
                ("resp0_user.name".to_owned(), "a".to_owned())
            ]
        );
        let mut out = Vec::new();
        response_params(
            1,
            &json!({"id": 7, "x": 1}),
            &["resp1_x".to_owned()],
            &mut out,
        );
        assert_eq!(out, [("resp1_x".to_owned(), "1".to_owned())]);
        let mut out = Vec::new();
        response_params(0, &json!({"a": 1}), &["resp0".to_owned()], &mut out);
        assert_eq!(out, [("resp0".to_owned(), "{\"a\":1}".to_owned())]);
    }
}
