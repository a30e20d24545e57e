//! Who is calling and which tier they are on: KrakenD's `strategy` + `key`
//! and `tier_key` + `tier_value` / `tier_value_as`, shared by quotas and
//! rate limits. Beyond KrakenD, callers and tiers may also come from a JWT
//! claim or from the API key the request was admitted with.

use http::{HeaderName, Request};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::{ApiKeyIdentity, Claims, ClientAddr, JsonBody, RouteParams};
use switchboard_policies::RequestCondition;

/// Where the caller's identity is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// A header named by `key`.
    #[default]
    Header,
    /// The client's IP address.
    Ip,
    /// An endpoint `{param}` named by `key`.
    Param,
    /// A JWT claim (dot path) named by `key` (Switchboard).
    Jwt,
    /// The API key the request was admitted with (Switchboard).
    ApiKey,
}

/// A compiled caller identity rule.
#[derive(Clone, Debug)]
pub struct Caller {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Header(HeaderName),
    Ip,
    Param(String),
    Jwt(String),
    ApiKey,
}

impl Caller {
    /// Compiles `strategy` + `key`; `key` is required for header, param and
    /// jwt.
    pub fn new(strategy: Strategy, key: Option<&str>) -> Result<Self, String> {
        let need = |what: &str| -> Result<String, String> {
            match key {
                Some(k) if !k.is_empty() => Ok(k.to_owned()),
                _ => Err(format!("strategy {what:?} needs a `key`")),
            }
        };
        let source = match strategy {
            Strategy::Header => {
                let name = need("header")?;
                Source::Header(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{name:?} is not a header name"))?,
                )
            }
            Strategy::Ip => Source::Ip,
            Strategy::Param => Source::Param(need("param")?),
            Strategy::Jwt => Source::Jwt(need("jwt")?),
            Strategy::ApiKey => Source::ApiKey,
        };
        Ok(Self { source })
    }

    /// The caller's identity, or `None` when the request does not carry it.
    pub fn identify<B>(&self, request: &Request<B>) -> Option<String> {
        let value = match &self.source {
            Source::Header(name) => {
                let raw = request.headers().get(name)?.to_str().ok()?;
                // A forwarding chain names the original client first.
                raw.split(',').next().unwrap_or(raw).trim().to_owned()
            }
            Source::Ip => request.extensions().get::<ClientAddr>()?.0.ip().to_string(),
            Source::Param(name) => request
                .extensions()
                .get::<RouteParams>()?
                .get(name)?
                .to_owned(),
            Source::Jwt(path) => scalar(request.extensions().get::<Claims>()?.get_path(path)?)?,
            Source::ApiKey => request
                .extensions()
                .get::<ApiKeyIdentity>()?
                .id()
                .to_owned(),
        };
        (!value.is_empty()).then_some(value)
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Where the tier (plan) of a request is read: `tier_key` names a header,
/// or, beyond KrakenD, `JWT.<claim path>` or `api_key.role`.
#[derive(Clone, Debug)]
pub enum TierKey {
    /// A header.
    Header(HeaderName),
    /// A JWT claim.
    Jwt(String),
    /// The role of the request's API key.
    ApiKeyRole,
}

impl TierKey {
    /// Parses a `tier_key`.
    pub fn parse(tier_key: &str) -> Result<Self, String> {
        if tier_key.eq_ignore_ascii_case("api_key.role") {
            return Ok(Self::ApiKeyRole);
        }
        if let Some(path) = tier_key
            .strip_prefix("JWT.")
            .or_else(|| tier_key.strip_prefix("jwt."))
        {
            if path.is_empty() {
                return Err("`JWT.` needs a claim path".to_owned());
            }
            return Ok(Self::Jwt(path.to_owned()));
        }
        HeaderName::from_bytes(tier_key.as_bytes())
            .map(Self::Header)
            .map_err(|_| {
                format!("{tier_key:?} is not a header name, `JWT.<claim>` or `api_key.role`")
            })
    }

    /// The request's tier value.
    pub fn value<B>(&self, request: &Request<B>) -> Option<String> {
        match self {
            Self::Header(name) => request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Self::Jwt(path) => request
                .extensions()
                .get::<Claims>()
                .and_then(|c| c.get_path(path))
                .and_then(scalar),
            Self::ApiKeyRole => request
                .extensions()
                .get::<ApiKeyIdentity>()
                .map(|i| i.role().to_owned()),
        }
    }
}

/// How a tier's `tier_value` is compared.
#[derive(Debug)]
pub enum TierMatch {
    /// Equal to the request's tier value.
    Literal(String),
    /// A CEL expression over the request.
    Policy(RequestCondition),
    /// Always.
    Any,
}

impl TierMatch {
    /// Compiles `tier_value` + `tier_value_as` (`literal` by default).
    pub fn new(tier_value: Option<&str>, tier_value_as: Option<&str>) -> Result<Self, String> {
        match tier_value_as.unwrap_or("literal") {
            "literal" => Ok(Self::Literal(
                tier_value
                    .ok_or_else(|| "a literal tier needs `tier_value`".to_owned())?
                    .to_owned(),
            )),
            "policy" => {
                let source =
                    tier_value.ok_or_else(|| "a policy tier needs `tier_value`".to_owned())?;
                RequestCondition::compile(source)
                    .map(Self::Policy)
                    .map_err(|e| format!("tier_value: {e}"))
            }
            "*" => Ok(Self::Any),
            other => Err(format!(
                "tier_value_as {other:?} is not one of literal, policy, *"
            )),
        }
    }

    /// Whether a request with this tier value is on the tier.
    pub fn matches<B>(&self, value: Option<&str>, request: &Request<B>) -> bool {
        match self {
            Self::Literal(literal) => value == Some(literal.as_str()),
            Self::Policy(condition) => {
                condition.matches(request, request.extensions().get::<JsonBody>())
            }
            Self::Any => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Request<()> {
        let mut request = Request::builder()
            .header("x-user", "alice")
            .header("x-plan", "gold")
            .header("x-forwarded-for", "10.0.0.9, 10.0.0.1")
            .body(())
            .unwrap();
        let ext = request.extensions_mut();
        ext.insert(ClientAddr("127.0.0.7:5000".parse().unwrap()));
        ext.insert(RouteParams::from_iter([(
            "team".to_owned(),
            "red".to_owned(),
        )]));
        ext.insert(Claims::new(
            json!({"sub": "u1", "org": {"id": 42}, "plan": "pro"}),
        ));
        ext.insert(ApiKeyIdentity::new("abcd", "admin"));
        request
    }

    #[test]
    fn every_caller_strategy() {
        let r = request();
        let id = |s, k| Caller::new(s, k).unwrap().identify(&r);
        assert_eq!(
            id(Strategy::Header, Some("X-User")).as_deref(),
            Some("alice")
        );
        assert_eq!(
            id(Strategy::Header, Some("X-Forwarded-For")).as_deref(),
            Some("10.0.0.9")
        );
        assert_eq!(id(Strategy::Ip, None).as_deref(), Some("127.0.0.7"));
        assert_eq!(id(Strategy::Param, Some("team")).as_deref(), Some("red"));
        assert_eq!(id(Strategy::Jwt, Some("org.id")).as_deref(), Some("42"));
        assert_eq!(id(Strategy::ApiKey, None).as_deref(), Some("abcd"));
        assert_eq!(id(Strategy::Header, Some("X-None")), None);
        assert!(Caller::new(Strategy::Header, None).is_err());
        assert!(Caller::new(Strategy::Param, Some("")).is_err());
    }

    #[test]
    fn every_tier_key_and_match() {
        let r = request();
        let value = |k: &str| TierKey::parse(k).unwrap().value(&r);
        assert_eq!(value("X-Plan").as_deref(), Some("gold"));
        assert_eq!(value("JWT.plan").as_deref(), Some("pro"));
        assert_eq!(value("api_key.role").as_deref(), Some("admin"));
        assert!(TierKey::parse("bad header").is_err());

        let literal = TierMatch::new(Some("gold"), None).unwrap();
        assert!(literal.matches(Some("gold"), &r));
        assert!(!literal.matches(Some("Gold"), &r));
        assert!(!literal.matches(None, &r));
        let policy = TierMatch::new(Some("JWT.plan == 'pro'"), Some("policy")).unwrap();
        assert!(policy.matches(None, &r));
        assert!(!policy.matches(None, &Request::new(())));
        assert!(TierMatch::new(None, Some("*")).unwrap().matches(None, &r));
        assert!(TierMatch::new(None, None).is_err());
        assert!(TierMatch::new(Some("x"), Some("regex")).is_err());
        assert!(TierMatch::new(Some("(("), Some("policy")).is_err());
    }
}
