//! The last steps of an endpoint, around its proxy: KrakenD's endpoint
//! `proxy.static` data and `proxy.flatmap_filter` on the merged answer and
//! the `shadow` backends that get a copy of each request
//! ([`ExtendedProxy`]), and the `output_encoding`s `xml`, `negotiate` and
//! `string` ([`render`], outermost, so every layer before it works on JSON).
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
use tower::Service;

use crate::proxy::Proxy;

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

/// What the endpoint adds to a merged answer: static data and the endpoint's flatmap filter.
#[derive(Clone, Debug, Default)]
pub(crate) struct Finishing {
    pub(crate) static_data: Option<StaticData>,
    pub(crate) flatmap: Option<Flatmap>,
    /// `auth/signer`, after the static data (which it may sign).
    pub(crate) signer: Option<crate::signer::SharedSigner>,
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
            signer: None,
        })
    }

    /// Whether there is anything to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.static_data.is_none() && self.flatmap.is_none() && self.signer.is_none()
    }
}

/// The endpoint's proxy with KrakenD's extras: `shadow` backends get a copy
/// of each request (their answers are dropped), and [`Finishing`] runs on
/// the answer. One concrete type, so the endpoint's layer stack is
/// instantiated once whatever is configured.
#[derive(Clone)]
pub(crate) struct ExtendedProxy {
    proxy: Proxy,
    shadows: Option<Proxy>,
    finishing: Option<Arc<Finishing>>,
}

impl ExtendedProxy {
    pub(crate) fn new(proxy: Proxy, shadows: Option<Proxy>, finishing: Finishing) -> Self {
        Self {
            proxy,
            shadows,
            finishing: (!finishing.is_empty()).then(|| Arc::new(finishing)),
        }
    }
}

impl Service<Request<Body>> for ExtendedProxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.shadows.is_none() && self.finishing.is_none() {
            return self.proxy.call(request);
        }
        let mut proxy = self.proxy.clone();
        let shadows = self.shadows.clone();
        let finishing = self.finishing.clone();
        Box::pin(async move {
            let request = match shadows {
                Some(shadows) => match mirror(request, shadows).await {
                    Ok(request) => request,
                    Err(response) => return Ok(response),
                },
                None => request,
            };
            let response = proxy.call(request).await?;
            Ok(match finishing {
                Some(finishing) => finish(&finishing, response).await,
                None => response,
            })
        })
    }
}

/// Sends a copy of the request to the shadow backends in the background
/// (KrakenD's traffic mirroring) and gives the request back: a shadow's
/// answer, error or slowness never reaches the client.
async fn mirror(
    request: Request<Body>,
    mut shadows: Proxy,
) -> Result<Request<Body>, Response<Body>> {
    let (parts, body) = request.into_parts();
    let bytes = match collect(body, BodyLimit::of(&parts.extensions)).await {
        Ok(bytes) => bytes,
        Err(error) => return Err(error.into_response()),
    };
    let mut copy = Request::new(Body::from(bytes.clone()));
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = parts.version;
    *copy.headers_mut() = parts.headers.clone();
    *copy.extensions_mut() = parts.extensions.clone();
    tokio::spawn(async move {
        let Ok(response) = shadows.call(copy).await;
        let status = response.status();
        // Read to the end so that the connection is reused.
        let _ = response.into_body().collect().await;
        tracing::debug!(status = status.as_u16(), "shadow backend answered");
    });
    Ok(Request::from_parts(parts, Body::from(bytes)))
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
            // Whatever marked the failure no longer applies.
            parts.extensions = http::Extensions::new();
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
    if let Some(signer) = &finishing.signer
        && let Err(message) = signer.sign(&mut value).await
    {
        tracing::warn!(error = %message, "auth/signer could not sign the answer");
        return switchboard_core::ErrorResponse::internal("the answer could not be signed")
            .into_response();
    }
    if finishing.signer.is_some() {
        // KrakenD's signer answers a fresh response: neither the cache
        // header nor the completeness mark of the proxy's answer.
        parts.headers.remove(http::header::CACHE_CONTROL);
        parts.headers.remove(COMPLETED);
    }
    // KrakenD writes object keys in sorted order; an answer these steps
    // rewrote is written the same way.
    let bytes = serde_json::to_vec(&crate::signer::sorted(&value)).unwrap_or_default();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

async fn read_json(body: Body) -> Option<Value> {
    let bytes = body.collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Whether an `output_encoding` is written by [`render`].
pub(crate) fn needs_render(encoding: Encoding) -> bool {
    matches!(
        encoding,
        Encoding::Xml | Encoding::Negotiate | Encoding::String
    )
}

/// What [`render`] writes, chosen from the request before it is passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Xml,
    Yaml,
    Text,
}

/// The format an answer is written in (`None`: JSON as it is).
pub(crate) fn output_for(encoding: Encoding, headers: &http::HeaderMap) -> Option<Output> {
    match encoding {
        Encoding::Xml => Some(Output::Xml),
        Encoding::String => Some(Output::Text),
        Encoding::Negotiate => match negotiate(headers.get(ACCEPT).and_then(|v| v.to_str().ok())) {
            Negotiated::Json => None,
            Negotiated::Yaml => Some(Output::Yaml),
            Negotiated::Xml => Some(Output::Xml),
        },
        _ => None,
    }
}

/// Writes a successful answer of the proxy in `output`; errors the gateway
/// answers itself stay JSON.
pub(crate) async fn render(output: Output, response: Response<Body>) -> Response<Body> {
    if response.extensions().get::<Rendered>().is_none() || !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Some(value) = read_json(body).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let (content_type, bytes): (&'static str, Bytes) = match output {
        Output::Text => {
            let text = match value.get("content") {
                Some(Value::String(text)) => text.clone(),
                _ => String::new(),
            };
            ("text/plain; charset=utf-8", Bytes::from(text))
        }
        Output::Yaml => (
            "application/yaml; charset=utf-8",
            Bytes::from(json_to_yaml(&value)),
        ),
        Output::Xml => ("application/xml", Bytes::from(json_to_xml(&value))),
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(parts, Body::from(bytes))
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
