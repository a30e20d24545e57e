//! The one bounded way to collect a body.
//!
//! A Content-Length over the limit is refused before a byte is read; a body
//! without one is read until it passes the limit, then refused.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, request, response};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::{Body, BodyLimit, BoxError, ErrorResponse, JsonBody};

/// The error a body yields when its peer paused longer than allowed between
/// two chunks. Reading such a request body answers 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct BodyTimeout(pub std::time::Duration);

/// Whether an error, or any error it wraps, is a [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(current) = source {
        if current.is::<BodyTimeout>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// The response for a client that stopped sending its body.
pub fn body_timeout_error() -> ErrorResponse {
    ErrorResponse::new(
        http::StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        "the client stopped sending the request body",
    )
}

/// Refuses a declared Content-Length over `limit`.
pub fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<(), ErrorResponse> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(ErrorResponse::payload_too_large(limit)),
        _ => Ok(()),
    }
}

/// Collects a body of at most `limit` bytes. Over the limit: 413. A body
/// that fails while being read: 400.
pub async fn collect<B>(body: B, limit: usize) -> Result<Bytes, ErrorResponse>
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ErrorResponse::payload_too_large(limit))
        }
        Err(err) if is_body_timeout(err.as_ref()) => Err(body_timeout_error()),
        Err(err) => Err(ErrorResponse::bad_request(format!(
            "failed to read the request body: {err}"
        ))),
    }
}

/// Buffers a request body within the request's [`BodyLimit`] (the default
/// when none is set). Returns the parts and the bytes.
pub async fn request_bytes(
    request: Request<Body>,
) -> Result<(request::Parts, Bytes), ErrorResponse> {
    let limit = BodyLimit::of(request.extensions());
    check_content_length(request.headers(), limit)?;
    let (parts, body) = request.into_parts();
    let bytes = collect(body, limit).await?;
    Ok((parts, bytes))
}

/// Buffers a response body within `limit` bytes. Over the limit, or a body
/// that fails while being read, is an upstream failure: 502.
pub async fn response_bytes(
    response: Response<Body>,
    limit: usize,
) -> Result<(response::Parts, Bytes), ErrorResponse> {
    let (parts, body) = response.into_parts();
    if check_content_length(&parts.headers, limit).is_err() {
        return Err(ErrorResponse::bad_gateway(format!(
            "upstream response body is larger than the limit of {limit} bytes"
        )));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ErrorResponse::bad_gateway(format!(
                "upstream response body is larger than the limit of {limit} bytes"
            )))
        }
        Err(err) => Err(ErrorResponse::bad_gateway(format!(
            "failed to read the upstream response body: {err}"
        ))),
    }
}

/// Whether a Content-Type names JSON (`application/json`, `…+json`).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Whether a Content-Type names a server-sent event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
        .unwrap_or(false)
}

/// Makes the request's JSON body available as [`JsonBody`], parsing it once.
///
/// Returns the request with its body restored and the parsed value, or
/// `None` when the body is empty or not JSON. A [`JsonBody`] already in the
/// extensions is reused without reading the body.
pub async fn json_request(
    request: Request<Body>,
) -> Result<(Request<Body>, Option<JsonBody>), ErrorResponse> {
    if let Some(existing) = request.extensions().get::<JsonBody>().cloned() {
        return Ok((request, Some(existing)));
    }
    let (mut parts, bytes) = request_bytes(request).await?;
    let parsed = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .map(JsonBody::new)
    };
    if let Some(json) = &parsed {
        parts.extensions.insert(json.clone());
    }
    Ok((Request::from_parts(parts, Body::from(bytes)), parsed))
}

/// Replaces a body after a rewrite, fixing `Content-Length` and, when given,
/// `Content-Type`.
pub fn set_body_headers(headers: &mut HeaderMap, length: usize, content_type: Option<&str>) {
    headers.insert(CONTENT_LENGTH, length.into());
    headers.remove(http::header::TRANSFER_ENCODING);
    if let Some(value) = content_type.and_then(|ct| http::HeaderValue::from_str(ct).ok()) {
        headers.insert(CONTENT_TYPE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[tokio::test]
    async fn declared_length_over_limit_is_refused_unread() {
        let request = Request::builder()
            .header(CONTENT_LENGTH, "2000")
            .extension(BodyLimit(1000))
            .body(Body::from(vec![b'a'; 2000]))
            .unwrap();
        let err = request_bytes(request).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn undeclared_length_over_limit_is_refused() {
        let request = Request::builder()
            .extension(BodyLimit(10))
            .body(Body::from(vec![b'a'; 11]))
            .unwrap();
        let err = request_bytes(request).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn json_body_is_parsed_once_and_restored() {
        let request = Request::builder()
            .body(Body::from(r#"{"content":"hi"}"#))
            .unwrap();
        let (request, json) = json_request(request).await.unwrap();
        assert_eq!(json.unwrap().value()["content"], "hi");
        assert!(request.extensions().get::<JsonBody>().is_some());
        let (_, bytes) = request_bytes(request).await.unwrap();
        assert_eq!(&bytes[..], br#"{"content":"hi"}"#);
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        assert!(is_event_stream(&headers));
        headers.insert(CONTENT_TYPE, "application/vnd.api+json".parse().unwrap());
        assert!(is_json_content_type(&headers));
    }
}
