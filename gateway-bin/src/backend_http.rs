//! KrakenD's `backend/http` on a backend: what a client learns of a
//! backend's error answer.
//!
//! - `return_error_code: true`: on an endpoint with this one backend, the
//!   backend's error status, content type and body are answered as they are
//!   (otherwise the gateway answers its own error).
//! - `return_error_details: "name"`: the error goes into the merged answer as
//!   `error_name: {http_status_code, http_body, http_body_encoding}`, and
//!   the answer is marked incomplete.

use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::buffer::response_bytes;
use switchboard_core::config::from_value;
use switchboard_core::{Body, ConfigError};
use tokio::time::Instant;

/// The most bytes of an error body kept in `return_error_details`.
const DETAIL_LIMIT: usize = 64 * 1024;

/// A backend's `backend/http`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BackendHttp {
    /// `return_error_code`.
    pub(crate) return_error_code: bool,
    /// `return_error_details`: the name under which the error is merged.
    pub(crate) error_details: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    return_error_code: bool,
    #[serde(default)]
    return_error_details: Option<String>,
}

impl BackendHttp {
    /// Reads `backend/http` (errors relative to it).
    pub(crate) fn from_config(value: Option<&Value>) -> Result<Self, ConfigError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let config: Config = from_value(value)?;
        if let Some(name) = &config.return_error_details
            && name.is_empty()
        {
            return Err(ConfigError::new(
                "return_error_details",
                "must name the backend (the key becomes error_<name>)",
            ));
        }
        Ok(Self {
            return_error_code: config.return_error_code,
            error_details: config.return_error_details,
        })
    }

    /// The key the error details are merged under.
    pub(crate) fn details_key(&self) -> Option<String> {
        self.error_details
            .as_ref()
            .map(|name| format!("error_{name}"))
    }
}

/// The details object of a backend's error answer.
pub(crate) async fn details(response: http::Response<Body>, deadline: Instant) -> Value {
    let status = response.status();
    let encoding = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match tokio::time::timeout_at(deadline, response_bytes(response, DETAIL_LIMIT)).await
    {
        Ok(Ok((_, bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    let mut map = Map::new();
    map.insert("http_status_code".to_owned(), Value::from(status.as_u16()));
    map.insert("http_body".to_owned(), Value::String(body));
    map.insert("http_body_encoding".to_owned(), Value::String(encoding));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config() {
        assert_eq!(
            BackendHttp::from_config(None).unwrap(),
            BackendHttp::default()
        );
        let http = BackendHttp::from_config(Some(&json!({"return_error_details": "a"}))).unwrap();
        assert_eq!(http.details_key().as_deref(), Some("error_a"));
        let http = BackendHttp::from_config(Some(&json!({"return_error_code": true}))).unwrap();
        assert!(http.return_error_code);
        let err = BackendHttp::from_config(Some(&json!({"return_error_detail": "a"}))).unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
        let err = BackendHttp::from_config(Some(&json!({"return_error_details": ""}))).unwrap_err();
        assert_eq!(err.path, "return_error_details");
        assert!(BackendHttp::from_config(Some(&json!({"return_error_code": "yes"}))).is_err());
    }
}
