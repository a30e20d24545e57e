//! Rewriting one request or response body with a compiled generator.

use self::response_body::parse_response_body;
use http::header::CONTENT_ENCODING;
use http::{Request, Response};
use serde_json::{Map, Value};
use switchboard_core::buffer::{
    is_event_stream, json_request, request_bytes, response_bytes, set_body_headers,
};
use switchboard_core::{Body, Claims, ErrorResponse, JsonBody, RouteParams};

use crate::config::Generator;
use crate::data::{headers_map, redacted, request_metadata};

impl Generator {
    /// The request data a response template reads, taken before the request
    /// goes on (empty when it reads none).
    pub(crate) fn capture_request<B>(&self, request: &Request<B>) -> Map<String, Value> {
        if !self.uses.any_request_metadata() {
            let mut data = Map::new();
            data.insert("variables".to_owned(), self.variables.clone());
            return data;
        }
        request_metadata(
            &self.uses,
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions().get::<RouteParams>(),
            request.extensions().get::<Claims>(),
            &self.variables,
        )
    }

    /// Replaces the request body with the rendered template.
    /// Whether the request body must be read before the template runs (it
    /// reads `req_body` and no layer has parsed the body yet).
    pub(crate) fn must_read_body<B>(&self, request: &Request<B>) -> bool {
        self.uses.req_body && request.extensions().get::<JsonBody>().is_none()
    }

    /// Renders the request body when nothing must be read first (see
    /// [`must_read_body`](Self::must_read_body)).
    pub(crate) fn rewrite_request_now(
        &self,
        request: Request<Body>,
    ) -> Result<Request<Body>, ErrorResponse> {
        let body = match request.extensions().get::<JsonBody>() {
            Some(json) if self.uses.req_body => json.value().clone(),
            _ => Value::Null,
        };
        self.render_request(request, body)
    }

    pub(crate) async fn rewrite_request(
        &self,
        request: Request<Body>,
    ) -> Result<Request<Body>, ErrorResponse> {
        let (request, body) = if self.uses.req_body {
            let (request, json) = json_request(request).await?;
            match json {
                Some(json) => (request, json.value().clone()),
                None => {
                    let (parts, bytes) = request_bytes(request).await?;
                    if !bytes.iter().all(u8::is_ascii_whitespace) {
                        return Err(ErrorResponse::bad_request(
                            "the request body must be JSON: this endpoint builds the upstream body from it",
                        )
                        .with_code("invalid_json"));
                    }
                    (Request::from_parts(parts, Body::empty()), Value::Null)
                }
            }
        } else {
            (request, Value::Null)
        };
        self.render_request(request, body)
    }

    fn render_request(
        &self,
        request: Request<Body>,
        body: Value,
    ) -> Result<Request<Body>, ErrorResponse> {
        let mut data = self.capture_request(&request);
        let (mut parts, _original_body) = request.into_parts();
        if self.uses.req_body {
            data.insert("req_body".to_owned(), body);
        }
        if self.debug {
            tracing::debug!(
                target: "switchboard::body_generator",
                input = %redacted(&data),
                "request body generator input"
            );
        }
        let rendered = self.template.render_map(&mut data).map_err(|err| {
            tracing::warn!(target: "switchboard::body_generator", error = %err, "request body template failed");
            ErrorResponse::internal(format!("the request body template failed: {}", err.message))
        })?;
        if self.debug {
            tracing::debug!(
                target: "switchboard::body_generator",
                output = %rendered,
                "request body generator output"
            );
        }
        set_body_headers(&mut parts.headers, rendered.len(), Some(&self.content_type));
        // The parsed client body no longer describes the body; a later
        // layer that needs the new one parses it on demand, so a large
        // prompt is not parsed again when nobody reads it.
        parts.extensions.remove::<JsonBody>();
        Ok(Request::from_parts(parts, Body::from(rendered)))
    }

    /// Replaces the response body with the rendered template. Event streams
    /// pass through untouched.
    /// Whether the response body must be read before the template runs.
    pub(crate) fn must_read_response(&self, response: &Response<Body>) -> bool {
        self.uses.resp_body && !is_event_stream(response.headers())
    }

    pub(crate) async fn rewrite_response(
        &self,
        response: Response<Body>,
        data: Map<String, Value>,
        limit: usize,
    ) -> Response<Body> {
        if is_event_stream(response.headers()) {
            return response;
        }
        if !self.uses.resp_body {
            return self.rewrite_response_now(response, data);
        }
        match response_bytes(response, limit).await {
            Ok((parts, bytes)) => self.render_response(parts, parse_response_body(&bytes), data),
            Err(err) => err.into_response(),
        }
    }

    /// Renders the response body when nothing must be read first (see
    /// [`must_read_response`](Self::must_read_response)).
    pub(crate) fn rewrite_response_now(
        &self,
        response: Response<Body>,
        data: Map<String, Value>,
    ) -> Response<Body> {
        if is_event_stream(response.headers()) {
            return response;
        }
        let (parts, _body) = response.into_parts();
        self.render_response(parts, Value::Null, data)
    }

    fn render_response(
        &self,
        mut parts: http::response::Parts,
        body: Value,
        mut data: Map<String, Value>,
    ) -> Response<Body> {
        if self.uses.resp_body {
            data.insert("resp_body".to_owned(), body);
        }
        if self.uses.resp_headers {
            data.insert("resp_headers".to_owned(), headers_map(&parts.headers));
        }
        if self.uses.resp_status {
            data.insert("resp_status".to_owned(), Value::from(parts.status.as_u16()));
        }
        if self.debug {
            tracing::debug!(
                target: "switchboard::body_generator",
                input = %redacted(&data),
                "response body generator input"
            );
        }
        let rendered = match self.template.render_map(&mut data) {
            Ok(rendered) => rendered,
            Err(err) => {
                tracing::warn!(target: "switchboard::body_generator", error = %err, "response body template failed");
                return ErrorResponse::internal(format!(
                    "the response body template failed: {}",
                    err.message
                ))
                .into_response();
            }
        };
        if self.debug {
            tracing::debug!(
                target: "switchboard::body_generator",
                output = %rendered,
                "response body generator output"
            );
        }
        parts.headers.remove(CONTENT_ENCODING);
        set_body_headers(&mut parts.headers, rendered.len(), Some(&self.content_type));
        Response::from_parts(parts, Body::from(rendered))
    }
}

mod response_body {
    use serde_json::Value;

    /// A response body as template data: parsed JSON, the text when it is
    /// not JSON, `null` when empty.
    pub(super) fn parse_response_body(bytes: &[u8]) -> Value {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}
