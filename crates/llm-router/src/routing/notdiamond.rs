//! The `notdiamond` classifier: what is sent to Not Diamond's model-select
//! API and how its answer maps back to a candidate. Pure; the router sends
//! the request through its HTTP client.

use std::fmt;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use switchboard_core::{ConfigError, JsonBody, RouteParams, lookup_path};

use super::config::{Metric, NotDiamondConfig, Tradeoff};

const DEFAULT_BASE_URL: &str = "https://api.notdiamond.ai";
const SELECT_PATH: &str = "/v2/modelRouter/modelSelect";

/// What of the request is classified.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Content {
    WholeBody,
    Body(String),
    Param(String),
    Header(String),
    Query(String),
}

/// A compiled `notdiamond` classifier.
pub struct NotDiamond {
    url: String,
    credentials: String,
    content: Content,
    tradeoff: Option<Tradeoff>,
    cost_quality_tradeoff: Option<i64>,
    metric: Option<Metric>,
    hash_content: bool,
}

impl fmt::Debug for NotDiamond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotDiamond")
            .field("url", &self.url)
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// One candidate as Not Diamond names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The vendor (`openai`, `anthropic`, `google`, ...).
    pub provider: String,
    /// The model.
    pub model: String,
}

impl Candidate {
    /// A candidate from our vendor name (`gemini` is `google` there).
    pub fn new(vendor: &str, model: &str) -> Self {
        let provider = match vendor {
            "gemini" => "google",
            other => other,
        };
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
        }
    }
}

impl NotDiamond {
    /// Compiles the config; errors are relative to the `notdiamond` object.
    pub fn from_config(config: &NotDiamondConfig) -> Result<Self, ConfigError> {
        if config.credentials.is_empty() {
            return Err(ConfigError::new("credentials", "must not be empty"));
        }
        if config.tradeoff.is_some() && config.cost_quality_tradeoff.is_some() {
            return Err(ConfigError::new(
                "cost_quality_tradeoff",
                "set either tradeoff or cost_quality_tradeoff, not both",
            ));
        }
        let base = config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ConfigError::new("base_url", "must be an http(s) URL"));
        }
        let content = match config.req_content.as_deref() {
            None | Some("") => Content::WholeBody,
            Some(path) => parse_content(path)
                .ok_or_else(|| ConfigError::new("req_content", format!("unknown source {path:?}: use req_body.x, req_params.X, req_headers.X or req_query_string.x")))?,
        };
        Ok(Self {
            url: format!("{}{SELECT_PATH}", base.trim_end_matches('/')),
            credentials: config.credentials.clone(),
            content,
            tradeoff: config.tradeoff,
            cost_quality_tradeoff: config.cost_quality_tradeoff,
            metric: config.metric,
            hash_content: !config.disable_hash_content,
        })
    }

    /// The text classified for `request`; `None` when the source is absent.
    pub fn content<B>(&self, request: &Request<B>, body: Option<&JsonBody>) -> Option<String> {
        let as_text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match &self.content {
            Content::WholeBody => body.map(|b| as_text(b.value())),
            Content::Body(path) => body.and_then(|b| lookup_path(b.value(), path)).map(as_text),
            Content::Param(name) => request
                .extensions()
                .get::<RouteParams>()
                .and_then(|p| {
                    p.get(name).or_else(|| {
                        // KrakenD capitalises parameter names.
                        p.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v)
                    })
                })
                .map(str::to_owned),
            Content::Header(name) => request
                .headers()
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Content::Query(name) => request.uri().query().and_then(|q| {
                q.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == name).then(|| v.to_owned())
                })
            }),
        }
    }

    /// The model-select request for `content` among `candidates`.
    pub fn request(&self, content: &str, candidates: &[Candidate]) -> Request<Bytes> {
        let mut body = json!({
            "messages": [{"role": "user", "content": content}],
            "llm_providers": candidates
                .iter()
                .map(|c| json!({"provider": c.provider, "model": c.model}))
                .collect::<Vec<_>>(),
            "hash_content": self.hash_content,
        });
        if let Some(object) = body.as_object_mut() {
            if let Some(tradeoff) = self.tradeoff {
                let name = match tradeoff {
                    Tradeoff::Cost => "cost",
                    Tradeoff::Latency => "latency",
                };
                object.insert("tradeoff".to_owned(), json!(name));
            }
            if let Some(n) = self.cost_quality_tradeoff {
                object.insert("cost_quality_tradeoff".to_owned(), json!(n));
            }
            if let Some(Metric::Accuracy) = self.metric {
                object.insert("metric".to_owned(), json!("accuracy"));
            }
        }
        let mut request = Request::new(Bytes::from(body.to_string()));
        *request.method_mut() = http::Method::POST;
        if let Ok(uri) = self.url.parse() {
            *request.uri_mut() = uri;
        }
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {}", self.credentials)) {
            let mut value = value;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        request
    }
}

/// The candidate Not Diamond chose, by index; `None` when its answer
/// names none of them (or is not an answer at all).
pub fn parse_choice(body: &[u8], candidates: &[Candidate]) -> Option<usize> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let chosen = value
        .get("providers")
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .or_else(|| value.get("provider"))?;
    let provider = chosen.get("provider")?.as_str()?;
    let model = chosen.get("model")?.as_str()?;
    candidates
        .iter()
        .position(|c| c.provider == provider && c.model == model)
}

fn parse_content(path: &str) -> Option<Content> {
    let (source, rest) = path.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    let rest = rest.to_owned();
    Some(match source {
        "req_body" => Content::Body(rest),
        "req_params" => Content::Param(rest),
        "req_headers" => Content::Header(rest),
        "req_query_string" | "req_querystring" => Content::Query(rest),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier(extra: Value) -> Result<NotDiamond, ConfigError> {
        let mut config = json!({"credentials": "nd-key"});
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let config: NotDiamondConfig = switchboard_core::config::from_value(&config)?;
        NotDiamond::from_config(&config)
    }

    fn candidates() -> Vec<Candidate> {
        vec![
            Candidate::new("openai", "gpt-5-nano"),
            Candidate::new("gemini", "gemini-3.5-flash"),
        ]
    }

    #[test]
    fn request_carries_the_documented_fields() {
        let nd = classifier(
            json!({"tradeoff": "latency", "metric": "accuracy", "base_url": "http://127.0.0.1:9/"}),
        )
        .unwrap();
        let request = nd.request("hello", &candidates());
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:9/v2/modelRouter/modelSelect"
        );
        assert_eq!(request.headers()["authorization"], "Bearer nd-key");
        assert!(request.headers()["authorization"].is_sensitive());
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(body["messages"][0]["content"], "hello");
        assert_eq!(body["llm_providers"][1]["provider"], "google");
        assert_eq!(body["tradeoff"], "latency");
        assert_eq!(body["metric"], "accuracy");
        assert_eq!(body["hash_content"], true);
        assert!(!format!("{nd:?}").contains("nd-key"));
    }

    #[test]
    fn content_sources() {
        let mut request = Request::builder()
            .uri("/x?topic=code")
            .header("x-task", "summarise")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(RouteParams::from_iter([("id".to_owned(), "42".to_owned())]));
        let body = JsonBody::new(json!({"contents": "write a poem", "meta": {"k": 1}}));
        let take = |path: Option<&str>| {
            let extra = path.map_or(json!({}), |p| json!({"req_content": p}));
            classifier(extra).unwrap().content(&request, Some(&body))
        };
        assert_eq!(take(None).unwrap(), body.value().to_string());
        assert_eq!(take(Some("req_body.contents")).unwrap(), "write a poem");
        assert_eq!(take(Some("req_body.meta")).unwrap(), r#"{"k":1}"#);
        assert_eq!(take(Some("req_params.Id")).unwrap(), "42");
        assert_eq!(take(Some("req_headers.X-Task")).unwrap(), "summarise");
        assert_eq!(take(Some("req_query_string.topic")).unwrap(), "code");
        assert_eq!(take(Some("req_body.missing")), None);
    }

    #[test]
    fn config_mistakes() {
        assert_eq!(
            classifier(json!({"tradeoff": "cost", "cost_quality_tradeoff": 3}))
                .unwrap_err()
                .path,
            "cost_quality_tradeoff"
        );
        assert_eq!(
            classifier(json!({"req_content": "body.x"}))
                .unwrap_err()
                .path,
            "req_content"
        );
        assert!(classifier(json!({"tradeoff": "quality"})).is_err());
    }

    #[test]
    fn choices() {
        let c = candidates();
        let answer = br#"{"providers": [{"provider": "google", "model": "gemini-3.5-flash"}], "session_id": "s"}"#;
        assert_eq!(parse_choice(answer, &c), Some(1));
        assert_eq!(parse_choice(br#"{"providers": []}"#, &c), None);
        assert_eq!(
            parse_choice(br#"{"providers": [{"provider": "x", "model": "y"}]}"#, &c),
            None
        );
        assert_eq!(parse_choice(b"not json", &c), None);
    }
}
