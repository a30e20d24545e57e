//! Rewriting one request or response body with a compiled generator.

use self::response_body::parse_response_body;
use http::header::CONTENT_ENCODING;
use http::{Request, Response};
use serde_json::{Map, Value};
use switchboard_core::buffer::{
    is_event_stream, json_request, request_bytes, response_bytes, set_body_headers,
};
use switchboard_core::{Body, Claims, ErrorResponse, JsonBody, RouteParams};

use std::sync::Arc;

use switchboard_core::secrets::Secrets;

use crate::config::Generator;
use crate::data::{headers_map, redacted, request_metadata};
use crate::engine::RenderError;

impl Generator {
    /// The request data a response template reads, taken before the request
    /// goes on (empty when it reads none).
    pub(crate) fn capture_request<B>(&self, request: &Request<B>) -> Map<String, Value> {
        if !self.uses.any_request_metadata() {
            return Map::new();
        }
        request_metadata(
            &self.uses,
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions().get::<RouteParams>(),
            request.extensions().get::<Claims>(),
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
            Some(json) if self.uses.req_body => Some(json.clone()),
            _ => None,
        };
        self.render_request(request, body)
    }

    pub(crate) async fn rewrite_request(
        &self,
        request: Request<Body>,
    ) -> Result<Request<Body>, ErrorResponse> {
        let (request, body) = if self.uses.req_body {
            // The fast path: a template that reads only `req_body` fields
            // renders from the body's bytes, without parsing it into a
            // value; anything it cannot decide goes the usual way below.
            let request = if self.template.renders_raw() && !self.debug {
                let (parts, bytes) = request_bytes(request).await?;
                if let Some(rendered) = self.template.render_raw(&bytes) {
                    return Ok(self.with_body(parts, rendered));
                }
                Request::from_parts(parts, Body::from(bytes))
            } else {
                request
            };
            let (request, json) = json_request(request).await?;
            match json {
                Some(json) => (request, Some(json)),
                None => {
                    let (parts, bytes) = request_bytes(request).await?;
                    if !bytes.iter().all(u8::is_ascii_whitespace) {
                        return Err(ErrorResponse::bad_request(
                            "the request body must be JSON: this endpoint builds the upstream body from it",
                        )
                        .with_code("invalid_json"));
                    }
                    (Request::from_parts(parts, Body::empty()), None)
                }
            }
        } else {
            (request, None)
        };
        self.render_request(request, body)
    }

    /// The names templates read by reference: `variables` always,
    /// `req_body` / `resp_body` when the template reads them.
    fn borrowed<'a>(
        &'a self,
        name: &'static str,
        body: &'a Value,
        used: bool,
    ) -> Vec<(&'static str, &'a Value)> {
        let mut borrowed = vec![("variables", &self.variables)];
        if used {
            borrowed.push((name, body));
        }
        borrowed
    }

    fn log_input(
        &self,
        which: &str,
        data: &Map<String, Value>,
        borrowed: &[(&str, &Value)],
        secrets: Option<&Secrets>,
    ) {
        if self.debug {
            let mut all = data.clone();
            for (name, value) in borrowed {
                all.insert((*name).to_owned(), (*value).clone());
            }
            tracing::debug!(
                target: "switchboard::body_generator",
                input = %redacted(&all, secrets),
                "{which} body generator input"
            );
        }
    }

    fn render_request(
        &self,
        request: Request<Body>,
        body: Option<JsonBody>,
    ) -> Result<Request<Body>, ErrorResponse> {
        let mut data = self.capture_request(&request);
        let secrets = request.extensions().get::<Arc<Secrets>>().cloned();
        let (mut parts, _original_body) = request.into_parts();
        // The parsed client body no longer describes the body; a later
        // layer that needs the new one parses it on demand, so a large
        // prompt is not parsed again when nobody reads it. Removed first,
        // so that the body below is usually the last reference.
        parts.extensions.remove::<JsonBody>();
        // A direct template reads the body in place; tera needs it owned
        // (moved out of the shared value when nobody else holds it).
        let for_tera = self.uses.req_body && !self.template.has_direct_plan();
        let body = if for_tera {
            data.insert(
                "req_body".to_owned(),
                body.map_or(Value::Null, JsonBody::into_value),
            );
            None
        } else {
            body
        };
        let borrowed = self.borrowed(
            "req_body",
            body.as_ref().map_or(&Value::Null, JsonBody::value),
            self.uses.req_body && !for_tera,
        );
        self.log_input("request", &data, &borrowed, secrets.as_deref());
        let rendered = self
            .template
            .render_borrowing(&mut data, &borrowed)
            .map_err(|err| {
                log_render_error("request", &err, secrets.as_deref());
                template_failed("request")
            })?;
        if self.debug {
            tracing::debug!(
                target: "switchboard::body_generator",
                output = %scrub(&rendered, secrets.as_deref()),
                "request body generator output"
            );
        }
        Ok(self.with_body(parts, rendered))
    }

    /// The request with its rendered body and the headers that describe it.
    fn with_body(&self, mut parts: http::request::Parts, rendered: String) -> Request<Body> {
        set_body_headers(&mut parts.headers, rendered.len(), Some(&self.content_type));
        Request::from_parts(parts, Body::from(rendered))
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
        secrets: Option<Arc<Secrets>>,
    ) -> Response<Body> {
        if is_event_stream(response.headers()) {
            return response;
        }
        if !self.uses.resp_body {
            return self.rewrite_response_now(response, data, secrets.as_deref());
        }
        match response_bytes(response, limit).await {
            Ok((parts, bytes)) => {
                self.render_response(parts, parse_response_body(&bytes), data, secrets.as_deref())
            }
            Err(err) => err.into_response(),
        }
    }

    /// Renders the response body when nothing must be read first (see
    /// [`must_read_response`](Self::must_read_response)).
    pub(crate) fn rewrite_response_now(
        &self,
        response: Response<Body>,
        data: Map<String, Value>,
        secrets: Option<&Secrets>,
    ) -> Response<Body> {
        if is_event_stream(response.headers()) {
            return response;
        }
        let (parts, _body) = response.into_parts();
        self.render_response(parts, Value::Null, data, secrets)
    }

    fn render_response(
        &self,
        mut parts: http::response::Parts,
        body: Value,
        mut data: Map<String, Value>,
        secrets: Option<&Secrets>,
    ) -> Response<Body> {
        // The parsed answer is owned here: it goes into the data as it is.
        if self.uses.resp_body {
            data.insert("resp_body".to_owned(), body);
        }
        let borrowed = self.borrowed("resp_body", &Value::Null, false);
        if self.uses.resp_headers {
            data.insert("resp_headers".to_owned(), headers_map(&parts.headers));
        }
        if self.uses.resp_status {
            data.insert("resp_status".to_owned(), Value::from(parts.status.as_u16()));
        }
        self.log_input("response", &data, &borrowed, secrets);
        let rendered = match self.template.render_borrowing(&mut data, &borrowed) {
            Ok(rendered) => rendered,
            Err(err) => {
                log_render_error("response", &err, secrets);
                return template_failed("response").into_response();
            }
        };
        if self.debug {
            tracing::debug!(
                target: "switchboard::body_generator",
                output = %scrub(&rendered, secrets),
                "response body generator output"
            );
        }
        parts.headers.remove(CONTENT_ENCODING);
        set_body_headers(&mut parts.headers, rendered.len(), Some(&self.content_type));
        Response::from_parts(parts, Body::from(rendered))
    }
}

/// A render failure as the client sees it: which template, never the
/// engine's message (it can name files and quote data).
fn template_failed(which: &str) -> ErrorResponse {
    ErrorResponse::internal(format!("the {which} body template failed")).with_code("template_error")
}

/// The engine's message goes to the log, with configured secrets scrubbed.
fn log_render_error(which: &str, err: &RenderError, secrets: Option<&Secrets>) {
    tracing::warn!(
        target: "switchboard::body_generator",
        error = %scrub(&err.message, secrets),
        "{which} body template failed"
    );
}

fn scrub<'a>(text: &'a str, secrets: Option<&Secrets>) -> std::borrow::Cow<'a, str> {
    match secrets {
        Some(secrets) => secrets.scrub(text),
        None => std::borrow::Cow::Borrowed(text),
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
