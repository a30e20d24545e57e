//! KrakenD's `security/bot-detector` (root: every request; endpoint: that
//! endpoint): a request whose `User-Agent` is a bot is answered 403 with an
//! empty body before anything else runs.
//!
//! In KrakenD's order: a `User-Agent` listed in `allow` (exact) passes; one
//! listed in `deny` (exact) is a bot; one that any of `patterns` (regular
//! expressions, unanchored) matches is a bot; an empty or missing one is a
//! bot only with `empty_user_agent_is_bot`. `cache_size` is accepted: the
//! check is a set look-up and linear-time regexes, with no cache needed.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::USER_AGENT;
use http::{Request, Response, StatusCode};
use regex::RegexSet;
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::config::from_value;
use switchboard_core::future::LayerFuture;
use switchboard_core::{Body, ConfigError};
use tower::{Layer, Service};

/// The largest compiled size of the patterns together.
const PATTERN_SIZE_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    cache_size: Option<u64>,
    #[serde(default)]
    empty_user_agent_is_bot: bool,
}

/// A compiled bot detector.
#[derive(Debug)]
pub(crate) struct BotDetector {
    allow: HashSet<String>,
    deny: HashSet<String>,
    patterns: RegexSet,
    empty_is_bot: bool,
}

impl BotDetector {
    /// Reads `security/bot-detector` (errors relative to it).
    pub(crate) fn from_config(value: &Value) -> Result<Self, ConfigError> {
        let config: Config = from_value(value)?;
        let _ = config.cache_size;
        for (i, pattern) in config.patterns.iter().enumerate() {
            regex::RegexBuilder::new(pattern)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    ConfigError::new(format!("patterns[{i}]"), format!("invalid pattern: {e}"))
                })?;
        }
        let patterns = regex::RegexSetBuilder::new(&config.patterns)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| ConfigError::new("patterns", format!("invalid patterns: {e}")))?;
        Ok(Self {
            allow: config.allow.into_iter().collect(),
            deny: config.deny.into_iter().collect(),
            patterns,
            empty_is_bot: config.empty_user_agent_is_bot,
        })
    }

    /// Whether a `User-Agent` (missing: `None`) is a bot.
    pub(crate) fn is_bot(&self, user_agent: Option<&str>) -> bool {
        let user_agent = user_agent.unwrap_or_default();
        if user_agent.is_empty() {
            return self.empty_is_bot;
        }
        if self.allow.contains(user_agent) {
            return false;
        }
        self.deny.contains(user_agent) || self.patterns.is_match(user_agent)
    }
}

impl BotDetector {
    /// KrakenD's answer to a bot (403, empty body), or `None` to go on.
    pub(crate) fn refuse(&self, headers: &http::HeaderMap) -> Option<Response<Body>> {
        // A User-Agent that is not text is judged as empty.
        let user_agent = headers
            .get(USER_AGENT)
            .map(|v| v.to_str().unwrap_or_default());
        if !self.is_bot(user_agent) {
            return None;
        }
        tracing::debug!("request refused by the bot detector");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::FORBIDDEN;
        Some(response)
    }
}

/// Refuses bots before the inner service.
#[derive(Clone)]
pub(crate) struct BotDetectorLayer {
    detector: Arc<BotDetector>,
}

impl BotDetectorLayer {
    pub(crate) fn new(detector: BotDetector) -> Self {
        Self {
            detector: Arc::new(detector),
        }
    }
}

impl<S> Layer<S> for BotDetectorLayer {
    type Service = BotDetectorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BotDetectorService {
            inner,
            detector: Arc::clone(&self.detector),
        }
    }
}

/// See [`BotDetectorLayer`].
#[derive(Clone)]
pub(crate) struct BotDetectorService<S> {
    inner: S,
    detector: Arc<BotDetector>,
}

impl<S> Service<Request<Body>> for BotDetectorService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = LayerFuture<S::Future, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.detector.refuse(request.headers()) {
            Some(refusal) => LayerFuture::respond(refusal),
            None => LayerFuture::inner(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn krakend_fixture_rules() {
        let detector = BotDetector::from_config(&json!({
            "deny": ["a", "b"],
            "allow": ["c", "Pingdom.com_bot_version_1.1"],
            "patterns": ["(Pingdom.com_bot_version_).*", "(facebookexternalhit)/.*"]
        }))
        .unwrap();
        assert!(detector.is_bot(Some("a")));
        assert!(detector.is_bot(Some("b")));
        assert!(!detector.is_bot(Some("c")));
        assert!(!detector.is_bot(Some("Pingdom.com_bot_version_1.1")));
        assert!(detector.is_bot(Some("Pingdom.com_bot_version_1.14")));
        assert!(detector.is_bot(Some("facebookexternalhit/1.2.3")));
        assert!(!detector.is_bot(Some("some")));
        assert!(!detector.is_bot(None));
        let strict = BotDetector::from_config(&json!({"empty_user_agent_is_bot": true})).unwrap();
        assert!(strict.is_bot(None));
        assert!(strict.is_bot(Some("")));
        assert!(!strict.is_bot(Some("curl/8")));
    }

    #[test]
    fn config_errors() {
        let err = |v: Value| BotDetector::from_config(&v).unwrap_err().path;
        assert_eq!(err(json!({"patterns": ["ok", "("]})), "patterns[1]");
        assert_eq!(err(json!({"deny": "a"})), "deny");
        assert_eq!(err(json!({"denied": []})), "denied");
    }
}
