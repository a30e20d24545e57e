//! The tower glue: [`LuaLayer`] and [`RunLua`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use serde_json::Value;
use switchboard_core::buffer::{request_bytes, response_bytes};
use switchboard_core::future::LayerFuture;
use switchboard_core::{Body, ConfigError, ErrorResponse, KrakendError, RouteParams};
use tower::{Layer, Service};

use crate::config::{LuaConfig, Scope};
use crate::engine::{
    Failure, Headers, Objects, RequestData, ResponseData, Script, Shared, canonical,
};

/// The largest answer a `post` script reads.
const RESPONSE_LIMIT: usize = 32 << 20;

/// The header KrakenD marks complete answers with.
const COMPLETED: HeaderName = HeaderName::from_static("x-krakend-completed");

/// Runs KrakenD Lua scripts (`modifier/lua-endpoint`, `modifier/lua-proxy`
/// or `modifier/lua-backend`) around the inner service. Cloning is cheap:
/// the compiled scripts and their pools of Lua states are shared.
///
/// A layer may hold no script ([`LuaLayer::default`]): its service then
/// only calls the inner one, so a pipeline can always hold the layer
/// rather than an `Option` of it. It may hold several
/// ([`LuaLayer::and_then`]: a root script, then an endpoint's): their
/// `pre`s run in order, their `post`s in reverse.
#[derive(Clone, Debug, Default)]
pub struct LuaLayer {
    scripts: Arc<[Arc<Script>]>,
}

impl LuaLayer {
    /// Reads the namespace's object: the sources are found (relative to
    /// the working directory, then to `base_dir`, the config file's
    /// directory), read and run once, `pre` and `post` compiled. A
    /// mistake is an error whose path is relative to the object
    /// (`sources[1]`, `pre`).
    pub fn try_from_config(
        config: &Value,
        scope: Scope,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        Self::from_config(LuaConfig::read(config, scope)?, scope, base_dir)
    }

    /// The same from a typed config (what [`LuaLayer::try_from_config`]
    /// deserializes): the sources are read, checked and run once.
    ///
    /// ```
    /// use std::path::Path;
    /// use switchboard_lua::{LuaConfig, LuaLayer, Scope};
    ///
    /// let mut config = LuaConfig::default();
    /// config.pre = Some("local r = request.load(); r:headers('X-Seen', 'yes')".to_owned());
    /// let layer = LuaLayer::from_config(config, Scope::Proxy, Path::new(".")).unwrap();
    /// assert!(!layer.is_empty());
    ///
    /// // lua-endpoint has no `post`: refused, naming the field.
    /// let mut config = LuaConfig::default();
    /// config.post = Some("print('late')".to_owned());
    /// let error = LuaLayer::from_config(config, Scope::Endpoint, Path::new(".")).unwrap_err();
    /// assert!(error.to_string().contains("post"));
    /// ```
    pub fn from_config(
        config: LuaConfig,
        scope: Scope,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let script = Arc::new(Script::new(config, scope, base_dir)?);
        Ok(Self {
            scripts: Arc::from([script]),
        })
    }

    /// This layer's scripts, then `inner`'s (inside them).
    #[must_use]
    pub fn and_then(&self, inner: &LuaLayer) -> LuaLayer {
        Self {
            scripts: self
                .scripts
                .iter()
                .chain(inner.scripts.iter())
                .cloned()
                .collect(),
        }
    }

    /// Whether the layer holds no script.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }
}

impl<S> Layer<S> for LuaLayer {
    type Service = RunLua<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RunLua {
            inner,
            scripts: Arc::clone(&self.scripts),
        }
    }
}

/// The service of [`LuaLayer`].
#[derive(Clone, Debug)]
pub struct RunLua<S> {
    inner: S,
    scripts: Arc<[Arc<Script>]>,
}

impl<S> Service<Request<Body>> for RunLua<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error, ()>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self
            .scripts
            .iter()
            .all(|s| !s.has_pre() && !s.has_post() && !s.config.skip_next)
        {
            return LayerFuture::inner(self.inner.call(request));
        }
        let scripts = Arc::clone(&self.scripts);
        // The service that was made ready goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        LayerFuture::boxed(async move {
            let mut request = request;
            // How many scripts ran their `pre` (their `post`s run), and
            // whether the last of them skips the layers inside it.
            let mut entered = 0;
            let mut skip = false;
            for script in scripts.iter() {
                if script.has_pre() {
                    request = match pre(script, request).await {
                        Ok(request) => request,
                        Err(response) => return Ok(*response),
                    };
                }
                entered += 1;
                if script.config.skip_next {
                    skip = true;
                    break;
                }
            }
            let mut response = if skip {
                drop(request);
                skipped()
            } else {
                inner.call(request).await?
            };
            for script in scripts[..entered].iter().rev() {
                if script.has_post() {
                    response = post(script, response).await;
                }
            }
            Ok(response)
        })
    }
}

/// Runs a script off the async workers.
async fn run(script: &Arc<Script>, post: bool, objects: Objects) -> Result<(), Failure> {
    let script = Arc::clone(script);
    match tokio::task::spawn_blocking(move || script.run(post, &objects)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Script(
            "the Lua script stopped abnormally".to_owned(),
        )),
    }
}

/// The answer of a failed script.
fn failure(script: &Script, failure: Failure) -> Response<Body> {
    let namespace = script.scope.namespace();
    match failure {
        Failure::Custom(custom) => {
            let status = custom
                .status
                .filter(|s| *s != -1)
                .and_then(|s| u16::try_from(s).ok())
                .and_then(|s| StatusCode::from_u16(s).ok());
            let Some(status) = status else {
                return script_error(namespace, custom.message);
            };
            tracing::debug!(
                namespace,
                status = status.as_u16(),
                "custom_error from a script"
            );
            let content_type = custom
                .content_type
                .as_deref()
                .and_then(|ct| HeaderValue::from_str(ct).ok())
                .unwrap_or_else(|| {
                    if serde_json::from_str::<Value>(&custom.message).is_ok() {
                        HeaderValue::from_static("application/json")
                    } else {
                        HeaderValue::from_static("text/plain; charset=utf-8")
                    }
                });
            let mut response = ErrorResponse::new(status, "script_error", custom.message.clone())
                .with_code("custom_error")
                .with_body(custom.message, content_type)
                .no_retry()
                .into_response();
            response
                .headers_mut()
                .insert(COMPLETED, HeaderValue::from_static("false"));
            response
        }
        Failure::Script(message) => script_error(namespace, message),
    }
}

fn script_error(namespace: &'static str, message: String) -> Response<Body> {
    tracing::warn!(namespace, error = %message, "Lua script failed");
    ErrorResponse::internal(message.clone())
        .with_code("script_error")
        .no_retry()
        .with_krakend(KrakendError::Message(message))
        .into_response()
}

/// What `skip_next` answers before `post`: an empty object, incomplete
/// (as KrakenD's empty response).
fn skipped() -> Response<Body> {
    let mut response = Response::new(Body::from("{}"));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(COMPLETED, HeaderValue::from_static("false"));
    response
}

fn go_headers(headers: &HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, value) in headers {
        out.entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

fn header_map(headers: &Headers) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, values) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        for value in values {
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            out.append(name.clone(), value);
        }
    }
    Ok(out)
}

/// KrakenD names a route parameter with its first letter upper case.
fn krakend_param(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

async fn pre(
    script: &Arc<Script>,
    request: Request<Body>,
) -> Result<Request<Body>, Box<Response<Body>>> {
    let (parts, bytes) = request_bytes(request)
        .await
        .map_err(|e| Box::new(e.into_response()))?;
    let params = parts.extensions.get::<RouteParams>().cloned();
    let uri = &parts.uri;
    let url = match script.scope {
        Scope::Backend => uri.to_string(),
        Scope::Proxy => String::new(),
        Scope::Endpoint => uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
    };
    let data = RequestData {
        method: parts.method.as_str().to_owned(),
        url,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        params: params
            .iter()
            .flat_map(RouteParams::iter)
            .map(|(k, v)| (krakend_param(k), v.to_owned()))
            .collect(),
        headers: go_headers(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        ctx: script.scope == Scope::Endpoint,
        changed: Default::default(),
    };
    let shared = Shared::new(data);
    let objects = Objects {
        request: Some(shared.clone()),
        response: None,
        as_ctx: script.scope == Scope::Endpoint,
    };
    if let Err(e) = run(script, false, objects).await {
        return Err(Box::new(failure(script, e)));
    }
    let data = shared.take();
    apply_request(script.scope, parts, bytes, params, data)
        .map_err(|m| Box::new(script_error(script.scope.namespace(), m)))
}

fn apply_request(
    scope: Scope,
    mut parts: http::request::Parts,
    bytes: Bytes,
    params: Option<RouteParams>,
    data: RequestData,
) -> Result<Request<Body>, String> {
    let changed = data.changed;
    if changed.method {
        parts.method = Method::from_bytes(data.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", data.method))?;
    }
    if changed.url && scope != Scope::Proxy {
        parts.uri = data
            .url
            .parse::<Uri>()
            .map_err(|_| format!("invalid URL {:?}", data.url))?;
        if scope == Scope::Backend && parts.uri.scheme().is_none() {
            return Err(format!("the backend URL {:?} is not absolute", data.url));
        }
    }
    if changed.path || changed.query {
        let path = if changed.path {
            data.path.clone()
        } else {
            parts.uri.path().to_owned()
        };
        let query = if changed.query {
            data.query.clone()
        } else {
            parts.uri.query().unwrap_or_default().to_owned()
        };
        let path_and_query = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let mut builder = Uri::builder();
        if let Some(scheme) = parts.uri.scheme() {
            builder = builder.scheme(scheme.clone());
        }
        if let Some(authority) = parts.uri.authority() {
            builder = builder.authority(authority.clone());
        }
        parts.uri = builder
            .path_and_query(path_and_query.as_str())
            .build()
            .map_err(|_| format!("invalid path or query {path_and_query:?}"))?;
    }
    if changed.headers {
        let headers = header_map(&data.headers)?;
        if scope == Scope::Proxy {
            // KrakenD's proxy request is already filtered by
            // `input_headers`: what the script set reaches the backends.
            let mut script = Vec::new();
            for name in parts.headers.keys().chain(headers.keys()) {
                let before: Vec<&HeaderValue> = parts.headers.get_all(name).iter().collect();
                let after: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
                if before != after && !script.iter().any(|(n, _)| n == name) {
                    script.push((name.clone(), after.into_iter().cloned().collect()));
                }
            }
            parts
                .extensions
                .insert(switchboard_core::ScriptHeaders(Arc::new(script)));
        }
        parts.headers = headers;
    }
    if changed.params {
        // Back to the names the endpoint's patterns use.
        let known: BTreeMap<String, String> = params
            .iter()
            .flat_map(RouteParams::iter)
            .map(|(k, _)| (krakend_param(k), k.to_owned()))
            .collect();
        let renamed = data.params.into_iter().map(|(k, v)| {
            let name = known.get(&k).cloned().unwrap_or_else(|| {
                let mut chars = k.chars();
                match chars.next() {
                    Some(first) => first.to_lowercase().chain(chars).collect(),
                    None => String::new(),
                }
            });
            (name, v)
        });
        parts.extensions.insert(RouteParams::from_iter(renamed));
    }
    let body = if changed.body {
        Bytes::from(data.body)
    } else {
        bytes
    };
    if changed.body || changed.headers {
        // The body is whole now: its length is known, whatever the
        // script wrote in the framing headers.
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        if changed.body || parts.headers.contains_key(CONTENT_LENGTH) || !body.is_empty() {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
    }
    Ok(Request::from_parts(parts, Body::from(body)))
}

async fn post(script: &Arc<Script>, response: Response<Body>) -> Response<Body> {
    if switchboard_core::buffer::is_event_stream(response.headers()) {
        // A stream is passed on as it comes: `post` would have to wait for
        // its end.
        tracing::debug!(
            namespace = script.scope.namespace(),
            "post script skipped on an event stream"
        );
        return response;
    }
    let (parts, bytes) = match response_bytes(response, RESPONSE_LIMIT).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let value = serde_json::from_slice::<Value>(&bytes).ok();
    let was_object = matches!(value, Some(Value::Object(_)));
    let complete = match parts.headers.get(&COMPLETED) {
        Some(v) => v.as_bytes() == b"true",
        None => parts.status.is_success(),
    };
    let data = ResponseData {
        status: parts.status.as_u16(),
        complete,
        headers: go_headers(&parts.headers),
        value,
        table: None,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        changed: Default::default(),
    };
    let shared = Shared::new(data);
    let objects = Objects {
        request: None,
        response: Some(shared.clone()),
        as_ctx: false,
    };
    if let Err(e) = run(script, true, objects).await {
        return failure(script, e);
    }
    let data = shared.take();
    apply_response(script.scope, parts, bytes, data, was_object)
        .unwrap_or_else(|m| script_error(script.scope.namespace(), m))
}

fn apply_response(
    scope: Scope,
    mut parts: http::response::Parts,
    bytes: Bytes,
    data: ResponseData,
    was_object: bool,
) -> Result<Response<Body>, String> {
    let changed = data.changed;
    if changed.headers {
        parts.headers = header_map(&data.headers)?;
    }
    if changed.status {
        parts.status = StatusCode::from_u16(data.status)
            .map_err(|_| format!("invalid status code {}", data.status))?;
    }
    if changed.complete {
        parts.headers.insert(
            COMPLETED,
            HeaderValue::from_static(if data.complete { "true" } else { "false" }),
        );
    }
    let body = if changed.body {
        Some(Bytes::from(data.body))
    } else if let Some(table) = &data.table {
        let mut value = table.to_json()?;
        if scope == Scope::Backend
            && !was_object
            && let Value::Object(map) = &mut value
            && map.len() == 1
            && let Some(collection) = map.remove("collection")
        {
            value = collection;
        }
        if !parts.headers.get(CONTENT_TYPE).is_some_and(|ct| {
            ct.as_bytes()
                .windows(4)
                .any(|w| w.eq_ignore_ascii_case(b"json"))
        }) {
            parts.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        Some(Bytes::from(
            serde_json::to_vec(&value).map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    let body = match body {
        Some(body) => {
            parts.headers.remove(http::header::CONTENT_ENCODING);
            body
        }
        None => bytes,
    };
    // Written from whole bytes: the server frames it, whatever the
    // script or the backend said.
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, Body::from(body)))
}
