//! `validation/json-schema`: the request body must match a JSON Schema.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use serde_json::Value;
use switchboard_core::buffer::json_request;
use switchboard_core::{Body, ConfigError, ErrorResponse, JsonBody, Rejection};
use tower::{Layer, Service};

/// Validates the request body against a JSON Schema (KrakenD CE's
/// `validation/json-schema`, whose value is the schema itself). A body that
/// is not JSON or does not match answers 400 with `x-should-retry: false`,
/// naming the failing path; nothing reaches the inner service.
#[derive(Clone)]
pub struct ValidateJsonSchemaLayer {
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for ValidateJsonSchemaLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateJsonSchemaLayer")
            .finish_non_exhaustive()
    }
}

impl ValidateJsonSchemaLayer {
    /// Compiles a schema (drafts 4 to 2020-12, detected from `$schema`).
    /// Remote `$ref`s are not fetched.
    pub fn try_from_config(schema: &Value) -> Result<Self, ConfigError> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(ConfigError::new("", "a JSON Schema is an object"));
        }
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            ConfigError::new(
                pointer_to_path(&e.schema_path().to_string()),
                format!("invalid JSON Schema: {e}"),
            )
        })?;
        Ok(Self {
            validator: Arc::new(validator),
        })
    }

    /// The first problem with a body, if any: the JSON pointer of the
    /// failing value and what is wrong.
    pub fn check(&self, body: &Value) -> Result<(), (String, String)> {
        match self.validator.validate(body) {
            Ok(()) => Ok(()),
            Err(error) => {
                let path = error.instance_path().to_string();
                Err((
                    if path.is_empty() {
                        "/".to_owned()
                    } else {
                        path
                    },
                    error.to_string(),
                ))
            }
        }
    }
}

/// `/a/0/b` as a config path `a[0].b`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').filter(|s| !s.is_empty()) {
        if segment.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            out = switchboard_core::config::join_path(
                &out,
                &switchboard_core::config::key_segment(segment),
            );
        }
    }
    out
}

impl<S> Layer<S> for ValidateJsonSchemaLayer {
    type Service = ValidateJsonSchema<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateJsonSchema {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ValidateJsonSchemaLayer`] builds.
#[derive(Clone, Debug)]
pub struct ValidateJsonSchema<S> {
    inner: S,
    layer: ValidateJsonSchemaLayer,
}

impl<S> Service<Request<Body>> for ValidateJsonSchema<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
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
        let layer = self.layer.clone();
        async move {
            let (request, body) = match json_request(request).await {
                Ok(parsed) => parsed,
                Err(error) => return Ok(error.into_response()),
            };
            let Some(body) = body else {
                return Ok(Rejection::Guard.mark(
                    ErrorResponse::bad_request(
                        "the request body must be JSON matching the endpoint's schema",
                    )
                    .with_code("schema_validation_failed")
                    .into_response(),
                ));
            };
            match layer.check(JsonBody::value(&body)) {
                Ok(()) => inner.call(request).await,
                Err((path, message)) => Ok(Rejection::Guard.mark(
                    ErrorResponse::bad_request(format!(
                        "the request body does not match the schema at {path}: {message}"
                    ))
                    .with_code("schema_validation_failed")
                    .into_response(),
                )),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::json;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn layer() -> ValidateJsonSchemaLayer {
        ValidateJsonSchemaLayer::try_from_config(&json!({
            "type": "object",
            "required": ["messages"],
            "properties": {"messages": {"type": "array", "items": {"type": "object",
                "required": ["content"], "properties": {"content": {"type": "string", "maxLength": 20}}}}}
        }))
        .unwrap()
    }

    async fn run(body: &str) -> (u16, Value, bool) {
        let service = layer().layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("{\"ok\": true}")))
        }));
        let request = Request::builder()
            .method("POST")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        // A refusal is marked for the metrics; an answer passed on is not.
        assert_eq!(
            response
                .extensions()
                .get::<switchboard_core::Rejection>()
                .is_some(),
            status == 400
        );
        let no_retry = response
            .headers()
            .get("x-should-retry")
            .is_some_and(|v| v == "false");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            no_retry,
        )
    }

    #[tokio::test]
    async fn matching_bodies_pass_and_others_name_the_path() {
        assert_eq!(run(r#"{"messages": [{"content": "hi"}]}"#).await.0, 200);
        let (status, body, no_retry) =
            run(r#"{"messages": [{"content": "hi"}, {"content": 3}]}"#).await;
        assert_eq!(status, 400);
        assert!(no_retry);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("/messages/1/content"), "{message}");
        assert_eq!(body["error"]["code"], "schema_validation_failed");
        let (status, body, _) = run(r#"{}"#).await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("messages")
        );
        assert_eq!(run("not json").await.0, 400);
        assert_eq!(run("").await.0, 400);
    }

    #[test]
    fn an_invalid_schema_fails_at_load() {
        let err = ValidateJsonSchemaLayer::try_from_config(
            &json!({"properties": {"a": {"type": "strange"}}}),
        )
        .unwrap_err();
        assert!(err.message.contains("invalid JSON Schema"), "{err}");
        assert!(ValidateJsonSchemaLayer::try_from_config(&json!([1])).is_err());
    }
}
