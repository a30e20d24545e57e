//! What counts as a provider failure, and when and how long to wait before
//! trying again: exponential backoff with jitter, `Retry-After` honoured,
//! a per-request attempt budget and an overall deadline.
//!
//! Pure logic over statuses, headers and `Instant`s.

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use switchboard_core::ConfigError;

/// Why one attempt at a provider failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// No connection (refused, reset, DNS, TLS).
    Connect,
    /// No answer in time.
    Timeout,
    /// An error status from the provider.
    Status(StatusCode),
    /// A 200 whose body (or first stream event) is the vendor's error.
    ErrorBody,
    /// The provider's circuit breaker is open: it was not called.
    CircuitOpen,
    /// The provider cannot express the request (a feature its vendor
    /// lacks): the next one may.
    Unsupported,
}

impl FailureKind {
    /// Whether trying the same provider again may help. Credentials or
    /// routing problems (401, 403, 404) and an open breaker move on to the
    /// next provider at once.
    pub fn is_retryable(self) -> bool {
        match self {
            Self::Connect | Self::Timeout | Self::ErrorBody => true,
            Self::Status(status) => {
                status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                    || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
            }
            Self::CircuitOpen | Self::Unsupported => false,
        }
    }

    /// Whether the circuit breaker counts it (an open breaker is not a call).
    pub fn counts_for_breaker(self) -> bool {
        !matches!(self, Self::CircuitOpen | Self::Unsupported)
    }
}

/// Whether an answer's status is the provider failing (retry or fail over)
/// rather than the request being wrong (answer the client as it is).
///
/// Failures: 408, 429, every 5xx, and 401/403/404 — the client sends no
/// credentials or URL of its own to the vendor, so those are the gateway's
/// provider set-up failing, and another provider may serve. Other 4xx
/// (400 invalid request, 413, 422, ...) say the request itself is at fault:
/// another provider would refuse it too.
pub fn status_is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429) || status.is_server_error()
}

/// Whether a 200 JSON body is a vendor error in disguise:
/// `{"error": {...}}` or `{"type": "error"}` without any answer field.
pub fn is_error_body(body: &serde_json::Value) -> bool {
    let Some(object) = body.as_object() else {
        return false;
    };
    let has_answer = ["choices", "content", "candidates", "output", "message"]
        .iter()
        .any(|k| object.get(*k).is_some_and(|v| !v.is_null()));
    if has_answer {
        return false;
    }
    object.get("error").is_some_and(|e| !e.is_null())
        || object.get("type").and_then(|t| t.as_str()) == Some("error")
}

/// How long the provider asks to be left alone: `retry-after-ms`
/// (OpenAI), else `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (relative
/// to `now`; a date in the past means now).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// `ai/router` `retry`: our addition (KrakenD has no retries). Without it
/// every provider is tried once and failures fail over.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Tries per provider, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Tries in all for one request, across the whole chain (default:
    /// `attempts` × the chain's length).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The first backoff (`"200ms"`); doubles on every retry.
    #[serde(default)]
    pub backoff: Option<String>,
    /// The longest backoff.
    #[serde(default)]
    pub max_backoff: Option<String>,
    /// The longest `Retry-After` honoured: a provider asking for more is
    /// not retried but failed over at once.
    #[serde(default)]
    pub max_retry_after: Option<String>,
    /// How long one request may take in all, retries and failover included.
    #[serde(default)]
    pub deadline: Option<String>,
    /// How long one attempt may take: to the whole answer, or for a stream
    /// to its first real event. A slower provider fails over.
    #[serde(default)]
    pub attempt_timeout: Option<String>,
}

fn default_attempts() -> u32 {
    1
}

/// The compiled retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per provider.
    pub attempts: u32,
    /// Tries in all, when capped.
    pub max_attempts: Option<u32>,
    /// The first backoff.
    pub backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// The overall deadline.
    pub deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            max_attempts: None,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// Compiles the config; errors name the field.
    pub fn from_config(config: &RetryConfig) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let duration = |field: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => switchboard_core::config::parse_duration(text)
                .map_err(|message| ConfigError::new(field, message)),
        };
        if config.attempts == 0 {
            return Err(ConfigError::new("attempts", "must be at least 1"));
        }
        if config.max_attempts == Some(0) {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        let deadline = match &config.deadline {
            None => None,
            Some(_) => Some(duration("deadline", &config.deadline, Duration::ZERO)?)
                .filter(|d| !d.is_zero()),
        };
        Ok(Self {
            attempts: config.attempts,
            max_attempts: config.max_attempts,
            backoff: duration("backoff", &config.backoff, defaults.backoff)?,
            max_backoff: duration("max_backoff", &config.max_backoff, defaults.max_backoff)?,
            max_retry_after: duration(
                "max_retry_after",
                &config.max_retry_after,
                defaults.max_retry_after,
            )?,
            deadline,
        })
    }

    /// The wait before retry number `retry` (1 for the first retry):
    /// `Retry-After` when the provider sent one, else the exponential
    /// backoff with jitter (a random point in its upper half, so many
    /// clients retrying together spread out). `None`: do not retry this
    /// provider (it asks for longer than `max_retry_after`).
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(asked) = retry_after {
            return (asked <= self.max_retry_after).then_some(asked);
        }
        let exponent = retry.saturating_sub(1).min(20);
        let full = self
            .backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        let half = full / 2;
        let jitter = half.mul_f64(fastrand::f64());
        Some(half + jitter)
    }
}

/// The attempts and time one request has left.
#[derive(Clone, Debug)]
pub struct Budget {
    attempts_left: Option<u32>,
    deadline: Option<Instant>,
}

impl Budget {
    /// A fresh budget for a request starting `now`.
    pub fn new(policy: &RetryPolicy, now: Instant) -> Self {
        Self {
            attempts_left: policy.max_attempts,
            deadline: policy.deadline.map(|d| now + d),
        }
    }

    /// The overall deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Takes one attempt; `false` when none is left or the deadline passed.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        match &mut self.attempts_left {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }

    /// Whether waiting `wait` from `now` still leaves time before the
    /// deadline.
    pub fn may_wait(&self, wait: Duration, now: Instant) -> bool {
        self.deadline.is_none_or(|d| now + wait < d) && self.attempts_left != Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failure_statuses() {
        for code in [401, 403, 404, 408, 429, 500, 502, 503, 504] {
            assert!(
                status_is_failure(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [200, 400, 413, 422] {
            assert!(
                !status_is_failure(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn retryable_kinds() {
        assert!(FailureKind::Connect.is_retryable());
        assert!(FailureKind::Timeout.is_retryable());
        assert!(FailureKind::Status(StatusCode::TOO_MANY_REQUESTS).is_retryable());
        assert!(FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
        assert!(!FailureKind::Status(StatusCode::NOT_IMPLEMENTED).is_retryable());
        assert!(!FailureKind::Status(StatusCode::UNAUTHORIZED).is_retryable());
        assert!(!FailureKind::CircuitOpen.is_retryable());
        assert!(!FailureKind::CircuitOpen.counts_for_breaker());
    }

    #[test]
    fn error_bodies_on_200() {
        assert!(is_error_body(&json!({"error": {"message": "overloaded"}})));
        assert!(is_error_body(
            &json!({"type": "error", "error": {"type": "overloaded_error"}})
        ));
        assert!(!is_error_body(&json!({"choices": [], "error": null})));
        assert!(!is_error_body(&json!({"choices": [{"message": {}}]})));
        assert!(!is_error_body(&json!({"error": null})));
        assert!(!is_error_body(&json!([1])));
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:02 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
    }

    fn policy(config: serde_json::Value) -> RetryPolicy {
        let config: RetryConfig = switchboard_core::config::from_value(&config).unwrap();
        RetryPolicy::from_config(&config).unwrap()
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = policy(json!({"attempts": 5, "backoff": "100ms", "max_backoff": "350ms"}));
        for _ in 0..50 {
            let first = p.wait(1, None).unwrap();
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = p.wait(2, None).unwrap();
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = p.wait(10, None).unwrap();
            assert!(capped >= Duration::from_millis(175) && capped <= Duration::from_millis(350));
        }
    }

    #[test]
    fn retry_after_wins_until_the_cap() {
        let p = policy(json!({"attempts": 2, "max_retry_after": "5s"}));
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.wait(1, Some(Duration::from_secs(6))), None);
    }

    #[test]
    fn budget_counts_attempts_and_deadline() {
        let p = policy(json!({"max_attempts": 2, "deadline": "1s"}));
        let t = Instant::now();
        let mut budget = Budget::new(&p, t);
        assert!(budget.take(t));
        assert!(budget.may_wait(Duration::from_millis(500), t));
        assert!(!budget.may_wait(Duration::from_secs(1), t));
        assert!(budget.take(t));
        assert!(!budget.take(t));
        let mut budget = Budget::new(&p, t);
        assert!(!budget.take(t + Duration::from_secs(1)));
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad: RetryConfig =
            switchboard_core::config::from_value(&json!({"backoff": "fast"})).unwrap();
        assert_eq!(RetryPolicy::from_config(&bad).unwrap_err().path, "backoff");
        let bad: RetryConfig =
            switchboard_core::config::from_value(&json!({"attempts": 0})).unwrap();
        assert_eq!(RetryPolicy::from_config(&bad).unwrap_err().path, "attempts");
        assert!(switchboard_core::config::from_value::<RetryConfig>(&json!({"tries": 1})).is_err());
    }
}
