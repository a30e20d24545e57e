use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use switchboard_core::buffer::{is_event_stream, json_request, response_bytes};
use switchboard_core::{Body, BodyLimit, Claims, JsonBody, RouteParams};
use tower::Service;

use crate::engine::{Activation, Engine};
use crate::headers::{header_lists, query_lists};
use crate::policy::PolicySet;
use crate::vars::{Var, VarSet};

/// The compiled policies a layer shares with its services.
pub(crate) struct State {
    pub(crate) engine: Engine,
    /// JWT policies first, then request policies.
    pub(crate) request_sets: Vec<PolicySet>,
    pub(crate) request_vars: VarSet,
    pub(crate) response_set: Option<PolicySet>,
    pub(crate) debug: bool,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("request_sets", &self.request_sets.len())
            .field("response_set", &self.response_set.is_some())
            .finish_non_exhaustive()
    }
}

/// Evaluates CEL policies: JWT and request policies before the inner
/// service is called (a denial answers without calling it), response
/// policies on its answer. See the crate documentation.
#[derive(Clone, Debug)]
pub struct EvaluatePolicies<S> {
    inner: S,
    state: Arc<State>,
}

impl<S> EvaluatePolicies<S> {
    pub(crate) fn new(inner: S, state: Arc<State>) -> Self {
        Self { inner, state }
    }
}

impl<S> Service<Request<Body>> for EvaluatePolicies<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let limit = request
                .extensions()
                .get::<BodyLimit>()
                .copied()
                .unwrap_or_default()
                .0;
            let request = match state.check_request(request).await {
                Ok(request) => request,
                Err(denied) => return Ok(denied),
            };
            let response = inner.call(request).await?;
            Ok(state.check_response(response, limit).await)
        })
    }
}

impl State {
    /// Runs the JWT and request policies. Buffers the body only when a
    /// policy reads `req_body`.
    async fn check_request(&self, request: Request<Body>) -> Result<Request<Body>, Response<Body>> {
        if self.request_sets.is_empty() {
            return Ok(request);
        }
        let vars = self.request_vars;
        let (request, body) = if vars.contains(Var::ReqBody) {
            json_request(request).await.map_err(|e| e.into_response())?
        } else {
            (request, None)
        };
        let mut activation = self.engine.activation();
        bind_request(&mut activation, vars, &request, body.as_ref());
        for set in &self.request_sets {
            set.evaluate(&activation, self.debug)
                .map_err(|e| e.into_response())?;
        }
        Ok(request)
    }

    /// Runs the response policies. Buffers the body only when a policy
    /// reads `resp_data`; a `text/event-stream` answer is never buffered,
    /// so such a policy denies it.
    async fn check_response(&self, response: Response<Body>, limit: usize) -> Response<Body> {
        let Some(set) = &self.response_set else {
            return response;
        };
        let vars = set.vars();
        let (response, data) = if vars.contains(Var::RespData) {
            if is_event_stream(response.headers()) {
                tracing::debug!("resp_data is not available for an event stream: denied");
                return set.deny("reading resp_data of an event stream").into_response();
            }
            match response_bytes(response, limit).await {
                Ok((parts, bytes)) => {
                    let data = if bytes.iter().all(u8::is_ascii_whitespace) {
                        Some(serde_json::Value::Object(serde_json::Map::new()))
                    } else {
                        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
                    };
                    (Response::from_parts(parts, Body::from(bytes)), data)
                }
                Err(error) => return error.into_response(),
            }
        } else {
            (response, None)
        };
        let mut activation = self.engine.activation();
        bind_response(&mut activation, vars, &response, data.as_ref());
        match set.evaluate(&activation, self.debug) {
            Ok(()) => response,
            Err(denied) => denied.into_response(),
        }
    }
}

/// Binds the request variables in `vars`, and only those.
fn bind_request(
    activation: &mut Activation,
    vars: VarSet,
    request: &Request<Body>,
    body: Option<&JsonBody>,
) {
    if vars.contains(Var::ReqMethod) {
        activation.set_string(Var::ReqMethod, request.method().as_str());
    }
    if vars.contains(Var::ReqPath) {
        activation.set_string(Var::ReqPath, request.uri().path());
    }
    if vars.contains(Var::ReqParams) {
        // KrakenD capitalises the first letter (`{nick}` is `req_params.Nick`);
        // the name as written is kept too.
        let params = request.extensions().get::<RouteParams>();
        let capitalised: Vec<(String, &str)> = params
            .into_iter()
            .flat_map(RouteParams::iter)
            .map(|(k, v)| (capitalise(k), v))
            .collect();
        let entries = params
            .into_iter()
            .flat_map(RouteParams::iter)
            .chain(capitalised.iter().map(|(k, v)| (k.as_str(), *v)));
        activation.set_string_map(Var::ReqParams, entries);
    }
    if vars.contains(Var::ReqHeaders) {
        activation.set_string_lists(Var::ReqHeaders, &header_lists(request.headers()));
    }
    if vars.contains(Var::ReqQuerystring) {
        activation.set_string_lists(Var::ReqQuerystring, &query_lists(request.uri().query()));
    }
    if vars.contains(Var::ReqBody) {
        if let Some(body) = body {
            activation.set_json(Var::ReqBody, body.value());
        }
    }
    if vars.contains(Var::Jwt) {
        if let Some(claims) = request.extensions().get::<Claims>() {
            activation.set_json(Var::Jwt, claims.value());
        }
    }
    if vars.contains(Var::Now) {
        activation.set_timestamp(Var::Now, chrono::Utc::now());
    }
}

/// Binds the response variables in `vars`, and only those.
fn bind_response(
    activation: &mut Activation,
    vars: VarSet,
    response: &Response<Body>,
    data: Option<&serde_json::Value>,
) {
    let status = i64::from(response.status().as_u16());
    for var in [Var::RespStatus, Var::RespMetadataStatus] {
        if vars.contains(var) {
            activation.set_int(var, status);
        }
    }
    if vars.contains_any(&[Var::RespHeaders, Var::RespMetadataHeaders]) {
        let headers = header_lists(response.headers());
        for var in [Var::RespHeaders, Var::RespMetadataHeaders] {
            if vars.contains(var) {
                activation.set_string_lists(var, &headers);
            }
        }
    }
    if vars.contains(Var::RespCompleted) {
        activation.set_bool(Var::RespCompleted, response.status().as_u16() < 400);
    }
    if vars.contains(Var::RespData) {
        if let Some(data) = data {
            activation.set_json(Var::RespData, data);
        }
    }
    if vars.contains(Var::Now) {
        activation.set_timestamp(Var::Now, chrono::Utc::now());
    }
}

fn capitalise(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
