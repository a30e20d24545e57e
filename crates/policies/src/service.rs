use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchboard_core::buffer::{is_event_stream, json_request, response_bytes};
use switchboard_core::future::{LayerFuture, OnResponse, Posted};
use switchboard_core::{Body, BodyLimit, Claims, JsonBody, RouteParams};
use tower::Service;

use crate::engine::{Activation, Engine};
use crate::headers::{header_lists, query_lists};
use crate::policy::PolicySet;
use crate::vars::{Var, VarSet};
use switchboard_core::krakend::capitalise;

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
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error, ResponseCheck>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = &self.state;
        let needs_body = !state.request_sets.is_empty()
            && state.request_vars.contains(Var::ReqBody)
            && request.extensions().get::<JsonBody>().is_none();
        if needs_body {
            // A policy reads a body no layer has parsed yet: read it first.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            let state = Arc::clone(&self.state);
            return LayerFuture::boxed(async move {
                let limit = BodyLimit::of(request.extensions());
                let request = match json_request(request).await {
                    Ok((request, body)) => match state.check_request(&request, body.as_ref()) {
                        None => request,
                        Some(denied) => return Ok(denied),
                    },
                    Err(error) => return Ok(error.into_response()),
                };
                let response = inner.call(request).await?;
                Ok(match state.check_response(response, limit) {
                    Posted::Ready(response) => response,
                    Posted::Later(checked) => checked.await,
                })
            });
        }
        let body = request.extensions().get::<JsonBody>();
        if let Some(denied) = state.check_request(&request, body) {
            return LayerFuture::respond(denied);
        }
        if state.response_set.is_none() {
            return LayerFuture::pass(self.inner.call(request));
        }
        let check = ResponseCheck {
            state: Arc::clone(&self.state),
            limit: BodyLimit::of(request.extensions()),
        };
        LayerFuture::then(self.inner.call(request), check)
    }
}

/// The `resp` policies of an [`EvaluatePolicies`], run on the inner
/// response.
pub struct ResponseCheck {
    state: Arc<State>,
    limit: usize,
}

impl fmt::Debug for ResponseCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCheck").finish_non_exhaustive()
    }
}

impl OnResponse for ResponseCheck {
    fn on_response(self, response: Response<Body>) -> Posted {
        self.state.check_response(response, self.limit)
    }
}

impl State {
    /// Runs the JWT and request policies on a request whose body, when a
    /// policy reads `req_body`, is already parsed. Returns the denial.
    fn check_request(
        &self,
        request: &Request<Body>,
        body: Option<&JsonBody>,
    ) -> Option<Response<Body>> {
        if self.request_sets.is_empty() {
            return None;
        }
        let mut activation = self.engine.activation();
        bind_request(&mut activation, self.request_vars, request, body);
        self.request_sets
            .iter()
            .find_map(|set| set.evaluate(&activation, self.debug))
            .map(|denied| denied.into_response())
    }

    /// Runs the response policies. Buffers the body only when a policy
    /// reads `resp_data`; a `text/event-stream` answer is never buffered,
    /// so such a policy denies it.
    fn check_response(self: &Arc<Self>, response: Response<Body>, limit: usize) -> Posted {
        let Some(set) = &self.response_set else {
            return Posted::Ready(response);
        };
        let vars = set.vars();
        if !vars.contains(Var::RespData) {
            return Posted::Ready(self.evaluate_response(set, response, None));
        }
        if is_event_stream(response.headers()) {
            tracing::debug!("resp_data is not available for an event stream: denied");
            return Posted::Ready(
                set.deny("reading resp_data of an event stream")
                    .into_response(),
            );
        }
        let state = Arc::clone(self);
        Posted::Later(Box::pin(async move {
            let Some(set) = &state.response_set else {
                return response;
            };
            match response_bytes(response, limit).await {
                Ok((parts, bytes)) => {
                    let data = if bytes.iter().all(u8::is_ascii_whitespace) {
                        Some(serde_json::Value::Object(serde_json::Map::new()))
                    } else {
                        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
                    };
                    let response = Response::from_parts(parts, Body::from(bytes));
                    state.evaluate_response(set, response, data.as_ref())
                }
                Err(error) => error.into_response(),
            }
        }))
    }

    fn evaluate_response(
        &self,
        set: &PolicySet,
        response: Response<Body>,
        data: Option<&serde_json::Value>,
    ) -> Response<Body> {
        let mut activation = self.engine.activation();
        bind_response(&mut activation, set.vars(), &response, data);
        match set.evaluate(&activation, self.debug) {
            None => response,
            Some(denied) => denied.into_response(),
        }
    }
}

/// Binds the request variables in `vars`, and only those.
pub(crate) fn bind_request<B>(
    activation: &mut Activation,
    vars: VarSet,
    request: &Request<B>,
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
    if vars.contains(Var::ReqBody)
        && let Some(body) = body
    {
        activation.set_json(Var::ReqBody, body.value());
    }
    if vars.contains(Var::Jwt)
        && let Some(claims) = request.extensions().get::<Claims>()
    {
        activation.set_json(Var::Jwt, claims.value());
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
    if vars.contains(Var::RespData)
        && let Some(data) = data
    {
        activation.set_json(Var::RespData, data);
    }
    if vars.contains(Var::Now) {
        activation.set_timestamp(Var::Now, chrono::Utc::now());
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use switchboard_core::SHOULD_RETRY;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::EvaluatePoliciesLayer;

    const SEED: &str = "req_headers['X-Llm'][0] in ['gemini','openai']";

    /// A service answering `status` with `body` (JSON), counting its calls.
    fn upstream(
        calls: Arc<AtomicUsize>,
        status: StatusCode,
        content_type: &'static str,
        body: &'static str,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        service_fn(move |_request: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
                Ok(response)
            }
        })
    }

    async fn run(config: Value, request: Request<Body>) -> (Response<Body>, usize) {
        run_with(
            config,
            request,
            StatusCode::OK,
            "application/json",
            r#"{"ok":true,"n":3}"#,
        )
        .await
    }

    async fn run_with(
        config: Value,
        request: Request<Body>,
        status: StatusCode,
        content_type: &'static str,
        body: &'static str,
    ) -> (Response<Body>, usize) {
        let layer = EvaluatePoliciesLayer::try_from_config(&config).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let service = layer.layer(upstream(Arc::clone(&calls), status, content_type, body));
        let response = service.oneshot(request).await.unwrap();
        let count = calls.load(Ordering::SeqCst);
        (response, count)
    }

    fn with_header(name: &str, value: &str) -> Request<Body> {
        Request::builder()
            .uri("/multi-llm")
            .header(name, value)
            .body(Body::empty())
            .unwrap()
    }

    async fn body_json(response: Response<Body>) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn seed() -> Value {
        json!({"auto_join_policies": true, "debug": false, "req": {"policies": [SEED]}})
    }

    #[tokio::test]
    async fn seed_policy_passes_known_llms_in_any_case() {
        for (name, value) in [("x-llm", "openai"), ("X-LLM", "gemini")] {
            let (response, calls) = run(seed(), with_header(name, value)).await;
            assert_eq!(response.status(), StatusCode::OK, "{name}: {value}");
            assert_eq!(calls, 1);
        }
    }

    #[tokio::test]
    async fn seed_policy_denies_unknown_llm_without_calling_upstream() {
        let (response, calls) = run(seed(), with_header("x-llm", "cohere")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
        assert_eq!(calls, 0);
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], "policy_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("req"));
    }

    #[tokio::test]
    async fn missing_header_denies() {
        let request = Request::builder()
            .uri("/multi-llm")
            .body(Body::empty())
            .unwrap();
        let (response, calls) = run(seed(), request).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(calls, 0);
    }

    #[tokio::test]
    async fn denial_names_the_failed_policy() {
        let config = json!({"req": {"policies": ["req_method == 'GET'", "req_path == '/other'"]}});
        let (response, calls) = run(config, with_header("x", "y")).await;
        assert_eq!(calls, 0);
        let body = body_json(response).await;
        assert_eq!(
            body["error"]["message"],
            "request denied by policy req.policies[1]"
        );
    }

    #[tokio::test]
    async fn custom_error_body_and_status() {
        let config = json!({"req": {
            "policies": ["req_querystring['tier'][0] == 'gold'"],
            "error": {"status": 403, "body": "{\"msg\":\"gold only\"}", "content_type": "application/json"}
        }});
        let request = Request::builder()
            .uri("/x?tier=silver")
            .body(Body::empty())
            .unwrap();
        let (response, calls) = run(config.clone(), request).await;
        assert_eq!(calls, 0);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(body_json(response).await, json!({"msg": "gold only"}));

        let request = Request::builder()
            .uri("/x?tier=gold")
            .body(Body::empty())
            .unwrap();
        let (response, calls) = run(config, request).await;
        assert_eq!((response.status(), calls), (StatusCode::OK, 1));
    }

    #[tokio::test]
    async fn custom_body_defaults_to_plain_text() {
        let config =
            json!({"req": {"policies": ["false"], "error": {"body": "down for maintenance"}}});
        let (response, _) = run(config, with_header("x", "y")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"down for maintenance");
    }

    #[tokio::test]
    async fn non_boolean_result_denies() {
        let config = json!({"req": {"policies": ["req_method"]}});
        let (response, calls) = run(config, with_header("x", "y")).await;
        assert_eq!(
            (response.status(), calls),
            (StatusCode::INTERNAL_SERVER_ERROR, 0)
        );
    }

    #[tokio::test]
    async fn jwt_policy_with_claims() {
        let config = json!({"jwt": {"policies": ["JWT.role in ['admin', 'root']"]}});
        let request = |role: &str| {
            Request::builder()
                .uri("/x")
                .extension(Claims::new(json!({"role": role, "sub": "u1"})))
                .body(Body::empty())
                .unwrap()
        };
        let (response, calls) = run(config.clone(), request("admin")).await;
        assert_eq!((response.status(), calls), (StatusCode::OK, 1));
        let (response, calls) = run(config.clone(), request("guest")).await;
        assert_eq!((response.status(), calls), (StatusCode::UNAUTHORIZED, 0));
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
        let no_claims = Request::builder().uri("/x").body(Body::empty()).unwrap();
        let (response, calls) = run(config, no_claims).await;
        assert_eq!((response.status(), calls), (StatusCode::UNAUTHORIZED, 0));
    }

    #[tokio::test]
    async fn jwt_policies_run_before_req_policies() {
        let config = json!({
            "jwt": {"policies": ["JWT.role == 'admin'"]},
            "req": {"policies": ["false"], "error": {"status": 418}}
        });
        let request = Request::builder()
            .extension(Claims::new(json!({"role": "guest"})))
            .body(Body::empty())
            .unwrap();
        let (response, _) = run(config, request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn req_body_is_read_only_when_referenced() {
        let config = json!({"req": {"policies": ["req_body.model.startsWith('gpt-')", "size(req_body.messages) < 3"]}});
        let request = |body: &'static str| {
            Request::builder()
                .method("POST")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap()
        };
        let layer = EvaluatePoliciesLayer::try_from_config(&config).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let service = layer.layer(service_fn(move |request: Request<Body>| {
            let record = Arc::clone(&record);
            async move {
                let parsed = request.extensions().get::<JsonBody>().is_some();
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                record.lock().unwrap().push((parsed, bytes));
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }
        }));
        let response = service
            .clone()
            .oneshot(request(r#"{"model":"gpt-4o","messages":[1]}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = service
            .oneshot(request(r#"{"model":"claude"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].0, "the parsed body is shared with later layers");
        assert_eq!(&seen[0].1[..], br#"{"model":"gpt-4o","messages":[1]}"#);
    }

    #[tokio::test]
    async fn body_is_not_buffered_without_req_body() {
        // A body that fails when read: untouched unless a policy reads it.
        let failing = Body::new(http_body_util::StreamBody::new(futures_util::stream::once(
            async { Err::<http_body::Frame<bytes::Bytes>, _>(std::io::Error::other("boom")) },
        )));
        let request = Request::builder()
            .header("x-llm", "openai")
            .body(failing)
            .unwrap();
        let (response, calls) = run(seed(), request).await;
        assert_eq!((response.status(), calls), (StatusCode::OK, 1));
    }

    #[tokio::test]
    async fn resp_policies_on_status_and_data() {
        let config = json!({"resp": {
            "policies": ["resp_status == 200", "resp_data.ok && resp_data.n.between(1, 5)"],
            "error": {"status": 502}
        }});
        let (response, calls) = run(config.clone(), with_header("x", "y")).await;
        assert_eq!((response.status(), calls), (StatusCode::OK, 1));
        assert_eq!(body_json(response).await, json!({"ok": true, "n": 3}));

        let (response, calls) = run_with(
            config.clone(),
            with_header("x", "y"),
            StatusCode::OK,
            "application/json",
            r#"{"ok":false}"#,
        )
        .await;
        assert_eq!((response.status(), calls), (StatusCode::BAD_GATEWAY, 1));
        assert_eq!(response.headers()[SHOULD_RETRY], "false");

        let (response, _) = run_with(
            config,
            with_header("x", "y"),
            StatusCode::CREATED,
            "application/json",
            r#"{"ok":true,"n":3}"#,
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn resp_headers_and_metadata_names() {
        let config = json!({"resp": {"policies": [
            "resp_headers['Content-Type'][0] == 'application/json'",
            "resp_metadata_status == 200 && resp_completed"
        ]}});
        let (response, _) = run(config, with_header("x", "y")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn event_streams_are_not_buffered() {
        // Status-only policies still run on a stream...
        let config = json!({"resp": {"policies": ["resp_status == 200"]}});
        let (response, _) = run_with(
            config,
            with_header("x", "y"),
            StatusCode::OK,
            "text/event-stream",
            "data: {}\n\n",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        // ...but a policy on resp_data cannot see a stream, so it denies.
        let config = json!({"resp": {"policies": ["has(resp_data.ok)"]}});
        let (response, _) = run_with(
            config,
            with_header("x", "y"),
            StatusCode::OK,
            "text/event-stream",
            "data: {}\n\n",
        )
        .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn route_params_are_capitalised_as_in_krakend() {
        let config = json!({"req": {"policies": ["req_params.Nick.matches('^k') && req_params.nick == 'kate'"]}});
        let params: RouteParams = [("nick".to_owned(), "kate".to_owned())]
            .into_iter()
            .collect();
        let request = Request::builder()
            .extension(params)
            .body(Body::empty())
            .unwrap();
        let (response, _) = run(config, request).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn advanced_macros_in_request_policies() {
        let config = json!({"req": {"policies": [
            "hasHeader('x-tenant') && isEmpty(req_headers['X-Missing'])",
            "inCIDR(req_headers['X-Forwarded-For'][0], ['10.0.0.0/8'])",
            "timestamp(now) > timestamp('2023-01-01T10:00:20.000-05:00')"
        ]}});
        let request = Request::builder()
            .header("X-TENANT", "a")
            .header("x-forwarded-for", "10.2.3.4")
            .body(Body::empty())
            .unwrap();
        let (response, _) = run(config.clone(), request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (response, _) = run(config, with_header("x-forwarded-for", "10.2.3.4")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn disabled_macros_make_them_undeclared() {
        let config = json!({"disable_macros": true, "req": {"policies": ["between(2, 1, 3)"]}});
        let (response, calls) = run(config, with_header("x", "y")).await;
        assert_eq!(
            (response.status(), calls),
            (StatusCode::INTERNAL_SERVER_ERROR, 0)
        );
    }

    #[tokio::test]
    async fn cel_validation_denies_with_500() {
        let layer = EvaluatePoliciesLayer::try_from_cel_validation(&json!([
            {"check_expr": "req_method == 'GET'"},
            {"check_expr": "'ok' in resp_data"}
        ]))
        .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let service = layer.layer(upstream(
            Arc::clone(&calls),
            StatusCode::OK,
            "application/json",
            r#"{"ok":1}"#,
        ));
        let post = Request::builder()
            .method("POST")
            .body(Body::empty())
            .unwrap();
        let response = service.clone().oneshot(post).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let get = Request::builder().body(Body::empty()).unwrap();
        let response = service.oneshot(get).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn layer_and_service_are_send_sync_clone() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<EvaluatePoliciesLayer>();
        check::<
            EvaluatePolicies<
                tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>,
            >,
        >();
    }
}
