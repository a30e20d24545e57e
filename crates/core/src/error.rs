use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::Body;

/// The header that tells OpenAI-style SDK clients not to retry a denial.
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Every rejection the gateway makes, as one response type.
///
/// By default it renders an OpenAI-shaped body,
/// `{"error": {"message": ..., "type": ..., "code": ...}}`; a config may set
/// its own body and content type instead (KrakenD's `error` objects).
#[derive(Clone)]
pub struct ErrorResponse {
    // Boxed so that `Result<_, ErrorResponse>` stays one pointer wide.
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    status: StatusCode,
    kind: &'static str,
    message: String,
    code: Option<String>,
    retryable: bool,
    custom_body: Option<(Bytes, HeaderValue)>,
    headers: HeaderMap,
    krakend: Option<KrakendError>,
}

/// Marks a response the gateway made itself from an [`ErrorResponse`] (as
/// opposed to one a backend sent), so that a layer above can tell its own
/// rejections from an upstream's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayAnswer;

/// How KrakenD answers a rejection where its answer differs from the JSON
/// error: carried as an extension of the error's response, so that an
/// endpoint that answers the KrakenD way (every endpoint but the unified
/// LLM ones) can replace the JSON body by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KrakendError {
    /// An error KrakenD's router reports: the message as
    /// `text/plain; charset=utf-8` when `router.return_error_msg` is set,
    /// an empty body otherwise, with `X-Krakend-Completed: false`.
    Message(String),
    /// The status alone, with an empty body (KrakenD's JWT rejections).
    Empty,
}

impl fmt::Debug for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponse")
            .field("status", &self.inner.status)
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("code", &self.inner.code)
            .field("retryable", &self.inner.retryable)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.inner.status.as_u16(),
            self.inner.kind,
            self.inner.message
        )
    }
}

impl std::error::Error for ErrorResponse {}

impl ErrorResponse {
    /// An error with a status, an error `type` and a human message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                status,
                kind,
                message: message.into(),
                code: None,
                retryable: true,
                custom_body: None,
                headers: HeaderMap::new(),
                krakend: None,
            }),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).no_retry()
    }

    /// 401: missing or invalid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message).no_retry()
    }

    /// 403: valid credentials without the right to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message).no_retry()
    }

    /// 404: no endpoint here.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message).no_retry()
    }

    /// 405: the path exists for other methods.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            message,
        )
        .no_retry()
    }

    /// 413: the body is over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body is larger than the limit of {limit} bytes"),
        )
        .with_code("body_too_large")
        .no_retry()
    }

    /// 500: the gateway failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "gateway_error", message)
    }

    /// 502: the upstream failed or answered something unusable.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    /// 504: the upstream did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message)
    }

    /// Sets the machine-readable `code`.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.inner.code = Some(code.into());
        self
    }

    /// Marks the error deterministic: clients get `x-should-retry: false`.
    #[must_use]
    pub fn no_retry(mut self) -> Self {
        self.inner.retryable = false;
        self
    }

    /// Replaces the JSON error body by a body the config chose.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>, content_type: HeaderValue) -> Self {
        self.inner.custom_body = Some((body.into(), content_type));
        self
    }

    /// Adds a header to the response (e.g. `WWW-Authenticate`).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.inner.headers.append(name, value);
        self
    }

    /// How KrakenD answers this rejection (see [`KrakendError`]).
    #[must_use]
    pub fn with_krakend(mut self, answer: KrakendError) -> Self {
        self.inner.krakend = Some(answer);
        self
    }

    /// Changes the status, keeping everything else.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = status;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// The error `type`.
    pub fn kind(&self) -> &'static str {
        self.inner.kind
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The error `code`, when set.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// Whether a client may retry.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }

    /// The JSON body this error renders when the config set none.
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.inner.message,
                "type": self.inner.kind,
                "code": self.inner.code,
            }
        })
    }

    /// Renders the response.
    pub fn into_response(self) -> Response<Body> {
        self.into_response_with()
    }

    /// Renders the response with any body that can be made of bytes (what a
    /// layer generic over the response body answers with).
    pub fn into_response_with<B: From<Bytes>>(self) -> Response<B> {
        let (bytes, content_type) = match self.inner.custom_body.clone() {
            Some(custom) => custom,
            None => (
                Bytes::from(self.json_body().to_string()),
                HeaderValue::from_static("application/json"),
            ),
        };
        let mut response = Response::new(B::from(bytes.clone()));
        *response.status_mut() = self.inner.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        if !self.inner.retryable {
            headers.insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        for (name, value) in &self.inner.headers {
            headers.append(name.clone(), value.clone());
        }
        let extensions = response.extensions_mut();
        extensions.insert(GatewayAnswer);
        if let Some(answer) = self.inner.krakend {
            extensions.insert(answer);
        }
        response
    }
}

impl axum_core::response::IntoResponse for ErrorResponse {
    fn into_response(self) -> axum_core::response::Response {
        ErrorResponse::into_response(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_openai_shaped_json() {
        let response = ErrorResponse::bad_request("missing header X-Llm")
            .with_code("missing_value")
            .into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[SHOULD_RETRY], "false");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["message"], "missing header X-Llm");
        assert_eq!(value["error"]["type"], "invalid_request_error");
        assert_eq!(value["error"]["code"], "missing_value");
    }

    #[tokio::test]
    async fn custom_body_replaces_json() {
        let response = ErrorResponse::internal("denied")
            .with_body("nope", HeaderValue::from_static("text/plain"))
            .into_response();
        assert_eq!(response.headers()[CONTENT_TYPE], "text/plain");
        assert!(response.headers().get(SHOULD_RETRY).is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"nope");
    }
}
