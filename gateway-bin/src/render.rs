//! The last steps of an endpoint, around its proxy: KrakenD's endpoint
//! `proxy.static` data and `proxy.flatmap_filter` on the merged answer
//! ([`Finish`]), the `shadow` backends that get a copy of each request
//! ([`Shadow`]), and the `output_encoding`s `xml`, `negotiate` and `string`
//! ([`Render`], outermost, so every layer before it works on JSON).
//!
//! Each sees the answers the proxy wrote (marked [`Rendered`]); errors the
//! gateway answers itself pass untouched.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::buffer::collect;
use switchboard_core::config::from_value;
use switchboard_core::future::BoxFuture;
use switchboard_core::{Body, BodyLimit, ConfigError};
use tower::{Service, ServiceExt};

use crate::config::Encoding;
use crate::encoding::{Negotiated, json_to_xml, json_to_yaml, negotiate};
use crate::flatmap::Flatmap;
use crate::proxy::COMPLETED;

/// Marks an answer the proxy wrote from JSON data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rendered {
    /// Whether every backend answered.
    pub(crate) completed: bool,
}

/// When `proxy.static` data is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StaticStrategy {
    /// Every time.
    Always,
    /// When no backend failed.
    Success,
    /// When every backend answered (the same as `success` here).
    Complete,
    /// When a backend failed (or all did).
    Errored,
    /// When the answer is incomplete (or there is none).
    Incomplete,
}

/// The endpoint's `proxy.static`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StaticData {
    strategy: StaticStrategy,
    data: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticConfig {
    strategy: StaticStrategy,
    data: Map<String, Value>,
}

impl StaticData {
    /// Reads `proxy.static` (errors relative to it).
    pub(crate) fn from_config(value: &Value) -> Result<Self, ConfigError> {
        let config: StaticConfig = from_value(value)?;
        Ok(Self {
            strategy: config.strategy,
            data: config.data,
        })
    }

    /// Whether the data applies to an answer (`None`: the proxy answered
    /// an error of its own).
    fn matches(&self, completed: Option<bool>) -> bool {
        match self.strategy {
            StaticStrategy::Always => true,
            StaticStrategy::Success | StaticStrategy::Complete => completed == Some(true),
            StaticStrategy::Errored | StaticStrategy::Incomplete => completed != Some(true),
        }
    }
}

/// What [`Finish`] does: static data and the endpoint's flatmap filter.
#[derive(Clone, Debug, Default)]
pub(crate) struct Finishing {
    pub(crate) static_data: Option<StaticData>,
    pub(crate) flatmap: Option<Flatmap>,
}

impl Finishing {
    /// Reads the endpoint `proxy` namespace's `static` and
    /// `flatmap_filter` (errors relative to the namespace).
    pub(crate) fn from_config(value: Option<&Value>) -> Result<Self, ConfigError> {
        let Some(Value::Object(map)) = value else {
            return Ok(Self::default());
        };
        let static_data = map
            .get("static")
            .map(|v| StaticData::from_config(v).map_err(|e| e.at("static")))
            .transpose()?;
        let flatmap = map
            .get("flatmap_filter")
            .map(|v| Flatmap::from_config(v).map_err(|e| e.at("flatmap_filter")))
            .transpose()?;
        Ok(Self {
            static_data,
            flatmap,
        })
    }

    /// Whether there is anything to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.static_data.is_none() && self.flatmap.is_none()
    }
}

/// Applies [`Finishing`] to the proxy's answers.
#[derive(Clone)]
pub(crate) struct Finish<S> {
    inner: S,
    finishing: Arc<Finishing>,
}

impl<S> Finish<S> {
    pub(crate) fn new(inner: S, finishing: Finishing) -> Self {
        Self {
            inner,
            finishing: Arc::new(finishing),
        }
    }
}

impl<S> Service<Request<Body>> for Finish<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let finishing = Arc::clone(&self.finishing);
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            Ok(finish(&finishing, response).await)
        })
    }
}

async fn finish(finishing: &Finishing, response: Response<Body>) -> Response<Body> {
    let completed = response.extensions().get::<Rendered>().map(|r| r.completed);
    let static_applies = finishing
        .static_data
        .as_ref()
        .is_some_and(|s| s.matches(completed));
    if completed.is_none() && !static_applies {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut value = match completed {
        Some(_) => match read_json(body).await {
            Some(value) => value,
            None => return Response::from_parts(parts, Body::empty()),
        },
        None => {
            // The proxy failed as a whole: the static data is the answer,
            // incomplete.
            parts.status = StatusCode::OK;
            parts.headers.clear();
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            parts
                .headers
                .insert(COMPLETED, HeaderValue::from_static("false"));
            parts.extensions.insert(Rendered { completed: false });
            Value::Object(Map::new())
        }
    };
    if let Some(flatmap) = &finishing.flatmap
        && completed.is_some()
    {
        flatmap.apply(&mut value);
    }
    if static_applies && let Some(static_data) = &finishing.static_data {
        if !value.is_object() {
            value = Value::Object(Map::new());
        }
        if let Value::Object(map) = &mut value {
            for (key, item) in &static_data.data {
                map.insert(key.clone(), item.clone());
            }
        }
    }
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

async fn read_json(body: Body) -> Option<Value> {
    let bytes = body.collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Writes the proxy's successful answers in an `output_encoding` other
/// than JSON.
#[derive(Clone)]
pub(crate) struct Render<S> {
    inner: S,
    encoding: Encoding,
}

impl<S> Render<S> {
    pub(crate) fn new(inner: S, encoding: Encoding) -> Self {
        Self { inner, encoding }
    }

    /// Whether an encoding needs this step.
    pub(crate) fn needed(encoding: Encoding) -> bool {
        matches!(
            encoding,
            Encoding::Xml | Encoding::Negotiate | Encoding::String
        )
    }
}

impl<S> Service<Request<Body>> for Render<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let format = match self.encoding {
            Encoding::Xml => Some(Negotiated::Xml),
            Encoding::Negotiate => Some(negotiate(
                request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()),
            )),
            _ => None,
        };
        let string = self.encoding == Encoding::String;
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            if response.extensions().get::<Rendered>().is_none()
                || !response.status().is_success()
                || format == Some(Negotiated::Json)
            {
                return Ok(response);
            }
            let (mut parts, body) = response.into_parts();
            let Some(value) = read_json(body).await else {
                return Ok(Response::from_parts(parts, Body::empty()));
            };
            let (content_type, bytes): (&'static str, Bytes) = if string {
                let text = match value.get("content") {
                    Some(Value::String(text)) => text.clone(),
                    _ => String::new(),
                };
                ("text/plain; charset=utf-8", Bytes::from(text))
            } else {
                match format {
                    Some(Negotiated::Yaml) => (
                        "application/yaml; charset=utf-8",
                        Bytes::from(json_to_yaml(&value)),
                    ),
                    _ => ("application/xml", Bytes::from(json_to_xml(&value))),
                }
            };
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            Ok(Response::from_parts(parts, Body::from(bytes)))
        })
    }
}

/// Sends a copy of every request to the `shadow` backends (KrakenD's
/// traffic mirroring) and answers from the others alone: a shadow's
/// answer, error or slowness never reaches the client.
#[derive(Clone)]
pub(crate) struct Shadow<S, P> {
    inner: S,
    shadows: P,
}

impl<S, P> Shadow<S, P> {
    pub(crate) fn new(inner: S, shadows: P) -> Self {
        Self { inner, shadows }
    }
}

impl<S, P> Service<Request<Body>> for Shadow<S, P>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    P: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    P::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let shadows = self.shadows.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match collect(body, BodyLimit::of(&parts.extensions)).await {
                Ok(bytes) => bytes,
                Err(error) => return Ok(error.into_response()),
            };
            let mut copy = Request::new(Body::from(bytes.clone()));
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.version_mut() = parts.version;
            *copy.headers_mut() = parts.headers.clone();
            *copy.extensions_mut() = parts.extensions.clone();
            tokio::spawn(async move {
                // Read to the end so that the connection is reused.
                let Ok(response) = shadows.oneshot(copy).await;
                let status = response.status();
                let _ = response.into_body().collect().await;
                tracing::debug!(status = status.as_u16(), "shadow backend answered");
            });
            inner
                .oneshot(Request::from_parts(parts, Body::from(bytes)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn static_config_and_strategies() {
        let read = |v: Value| Finishing::from_config(Some(&v));
        let finishing = read(json!({"static": {"strategy": "errored", "data": {"a": 1}}})).unwrap();
        let data = finishing.static_data.unwrap();
        assert!(data.matches(Some(false)));
        assert!(data.matches(None));
        assert!(!data.matches(Some(true)));
        for (strategy, complete, incomplete, failed) in [
            ("always", true, true, true),
            ("success", true, false, false),
            ("complete", true, false, false),
            ("errored", false, true, true),
            ("incomplete", false, true, true),
        ] {
            let data = StaticData::from_config(&json!({"strategy": strategy, "data": {}})).unwrap();
            assert_eq!(data.matches(Some(true)), complete, "{strategy}");
            assert_eq!(data.matches(Some(false)), incomplete, "{strategy}");
            assert_eq!(data.matches(None), failed, "{strategy}");
        }
        let err = read(json!({"static": {"strategy": "sometimes", "data": {}}})).unwrap_err();
        assert_eq!(err.path, "static.strategy");
        let err = read(json!({"static": {"strategy": "always", "data": [1]}})).unwrap_err();
        assert_eq!(err.path, "static.data");
        let err = read(json!({"flatmap_filter": [{"type": "x", "args": []}]})).unwrap_err();
        assert_eq!(err.path, "flatmap_filter[0].type");
        assert!(read(json!({"sequential": true})).unwrap().is_empty());
    }
}
