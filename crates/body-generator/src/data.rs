//! Template data, as KrakenD names it, built from request and response
//! parts. No tower types here.

use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value};
use switchboard_core::krakend::{canonical_header_name, capitalise, query_pairs};
use switchboard_core::{Claims, RouteParams};

use crate::engine::BodyTemplate;

/// Which top-level names a template reads, so that only those are built.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Uses {
    pub(crate) req_body: bool,
    pub(crate) req_headers: bool,
    pub(crate) req_params: bool,
    pub(crate) req_querystring: bool,
    pub(crate) req_path: bool,
    pub(crate) req_method: bool,
    pub(crate) jwt: bool,
    pub(crate) resp_body: bool,
    pub(crate) resp_headers: bool,
    pub(crate) resp_status: bool,
}

impl Uses {
    pub(crate) fn of(template: &BodyTemplate) -> Self {
        Self {
            req_body: template.mentions("req_body"),
            req_headers: template.mentions("req_headers"),
            req_params: template.mentions("req_params"),
            req_querystring: template.mentions("req_querystring"),
            req_path: template.mentions("req_path"),
            req_method: template.mentions("req_method"),
            jwt: template.mentions("JWT"),
            resp_body: template.mentions("resp_body"),
            resp_headers: template.mentions("resp_headers"),
            resp_status: template.mentions("resp_status"),
        }
    }

    /// Whether the template reads anything of the request besides its body.
    pub(crate) fn any_request_metadata(&self) -> bool {
        self.req_headers
            || self.req_params
            || self.req_querystring
            || self.req_path
            || self.req_method
            || self.jwt
    }
}

/// Headers as a map of lists, names in Go's canonical form (`X-Llm`,
/// `Content-Type`), as KrakenD templates and policies spell them.
pub(crate) fn headers_map(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let entry = map
            .entry(canonical_header_name(name.as_str()))
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    Value::Object(map)
}

/// The query string as a map of lists.
pub(crate) fn query_map(uri: &Uri) -> Value {
    let mut map = Map::new();
    for (key, value) in query_pairs(uri.query()) {
        let entry = map
            .entry(key.into_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(value.into_owned()));
        }
    }
    Value::Object(map)
}

/// Route parameters. KrakenD exposes `{id}` as `Id` (first letter upper
/// case); the name as written in the endpoint is available too.
pub(crate) fn params_map(params: Option<&RouteParams>) -> Value {
    let mut map = Map::new();
    for (name, value) in params.into_iter().flat_map(RouteParams::iter) {
        if !name.is_empty() {
            map.entry(capitalise(name))
                .or_insert_with(|| Value::String(value.to_owned()));
        }
        map.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Value::Object(map)
}

/// The request data a template uses (everything but `req_body`).
pub(crate) fn request_metadata(
    uses: &Uses,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: Option<&RouteParams>,
    claims: Option<&Claims>,
    variables: &Value,
) -> Map<String, Value> {
    let mut data = Map::new();
    if uses.req_headers {
        data.insert("req_headers".to_owned(), headers_map(headers));
    }
    if uses.req_params {
        data.insert("req_params".to_owned(), params_map(params));
    }
    if uses.req_querystring {
        data.insert("req_querystring".to_owned(), query_map(uri));
    }
    if uses.req_path {
        data.insert("req_path".to_owned(), Value::String(uri.path().to_owned()));
    }
    if uses.req_method {
        data.insert(
            "req_method".to_owned(),
            Value::String(method.as_str().to_owned()),
        );
    }
    if uses.jwt {
        data.insert(
            "JWT".to_owned(),
            claims.map_or(Value::Null, |c| c.value().clone()),
        );
    }
    data.insert("variables".to_owned(), variables.clone());
    data
}

/// Headers whose values never reach a log.
fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || name.contains("key")
        || name.contains("token")
        || name.contains("secret")
        || name.contains("auth")
}

/// A copy of the data for a debug log, with secret header values replaced.
pub(crate) fn redacted(data: &Map<String, Value>) -> Value {
    let mut copy = data.clone();
    for key in ["req_headers", "resp_headers"] {
        if let Some(Value::Object(headers)) = copy.get_mut(key) {
            for (name, value) in headers.iter_mut() {
                if is_secret_header(name) {
                    *value = Value::Array(vec![Value::String("[redacted]".to_owned())]);
                }
            }
        }
    }
    Value::Object(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps() {
        let mut headers = HeaderMap::new();
        headers.append("x-llm", "openai".parse().unwrap());
        headers.append("x-llm", "gemini".parse().unwrap());
        assert_eq!(
            headers_map(&headers),
            json!({"X-Llm": ["openai", "gemini"]})
        );
        let uri: Uri = "/a?x=1&x=2&y=%20z".parse().unwrap();
        assert_eq!(query_map(&uri), json!({"x": ["1", "2"], "y": [" z"]}));
        let params: RouteParams = [("id".to_owned(), "7".to_owned())].into_iter().collect();
        assert_eq!(params_map(Some(&params)), json!({"Id": "7", "id": "7"}));
    }

    #[test]
    fn secrets_are_redacted() {
        let mut data = Map::new();
        data.insert(
            "req_headers".to_owned(),
            json!({"Authorization": ["Bearer x"], "X-Api-Key": ["k"], "X-Llm": ["openai"]}),
        );
        let out = redacted(&data);
        assert_eq!(out["req_headers"]["Authorization"][0], "[redacted]");
        assert_eq!(out["req_headers"]["X-Api-Key"][0], "[redacted]");
        assert_eq!(out["req_headers"]["X-Llm"][0], "openai");
    }
}
