//! Token extraction, verification, role and scope checks and claim
//! propagation: the per-request work of the layer, without tower types.

use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::errors::ErrorKind;
use serde_json::Value;
use switchboard_core::{ErrorResponse, KrakendError, lookup_path};

use crate::config::{ScopesMatcher, Settings};
use crate::store::{KeyError, KeyStore};

fn key_rejection(error: KeyError) -> Rejection {
    match error {
        KeyError::Unknown => Rejection::Invalid("unknown signing key".into()),
        KeyError::Ambiguous => Rejection::Invalid("the token names no signing key".into()),
    }
}

/// Tokens longer than this are refused before any decoding.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No token: 401 without an error code.
    Missing,
    /// A token that is not valid: 401.
    Invalid(String),
    /// A valid token without the required role or scope: 403.
    Forbidden(String),
}

impl Rejection {
    pub(crate) fn into_error(self) -> ErrorResponse {
        match self {
            Self::Missing => ErrorResponse::unauthorized("missing bearer token")
                .with_code("missing_token")
                .with_krakend(KrakendError::Empty)
                .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
            Self::Invalid(why) => ErrorResponse::unauthorized(format!("invalid token: {why}"))
                .with_code("invalid_token")
                .with_krakend(KrakendError::Empty)
                .with_header(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                ),
            Self::Forbidden(why) => ErrorResponse::forbidden(why)
                .with_code("insufficient_scope")
                .with_krakend(KrakendError::Empty),
        }
    }
}

/// The compiled validator one layer shares between its services.
pub(crate) struct Validator {
    pub(crate) settings: Settings,
    pub(crate) keys: KeyStore,
}

impl Validator {
    /// The token of a request: the configured header (`Bearer` scheme), or
    /// the configured cookie when the header is absent.
    pub(crate) fn extract<'a>(&self, headers: &'a HeaderMap) -> Result<&'a str, Rejection> {
        let mut values = headers.get_all(&self.settings.auth_header).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(Rejection::Invalid(format!(
                    "more than one {} header",
                    self.settings.auth_header
                )));
            }
            let text = value
                .to_str()
                .map_err(|_| Rejection::Invalid("the header is not visible ASCII".into()))?
                .trim();
            let token = match strip_bearer(text) {
                Some(token) => token,
                // A custom header may carry the bare token; Authorization
                // must say which scheme it uses.
                None if self.settings.auth_header != AUTHORIZATION => text,
                None => return Err(Rejection::Invalid("not a Bearer authorization".into())),
            };
            return check_size(token);
        }
        if let Some(name) = &self.settings.cookie_key
            && let Some(token) = cookie(headers, name)
        {
            return check_size(token);
        }
        Err(Rejection::Missing)
    }

    /// Verifies a token with the keys at hand. `None` when the token names
    /// a key that is not cached yet and a download may bring it: then
    /// [`verify`](Self::verify) waits for it.
    pub(crate) fn try_verify(&self, token: &str) -> Option<Result<Value, Rejection>> {
        let header = match self.check_header(token) {
            Ok(header) => header,
            Err(rejection) => return Some(Err(rejection)),
        };
        let key = self.keys.cached_key(&header, self.settings.strategy)?;
        Some(
            key.map_err(key_rejection)
                .and_then(|key| self.decode(token, &key)),
        )
    }

    /// Verifies a token and returns its claims object, waiting for at most
    /// one key download when the token names an unknown key.
    pub(crate) async fn verify(&self, token: &str) -> Result<Value, Rejection> {
        let header = self.check_header(token)?;
        // `jku`, `x5u`, `x5c` and an embedded `jwk` are ignored: keys come
        // from the configured source only.
        let key = self
            .keys
            .key_for(&header, self.settings.strategy)
            .await
            .map_err(key_rejection)?;
        self.decode(token, &key)
    }

    fn check_header(&self, token: &str) -> Result<jsonwebtoken::Header, Rejection> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Rejection::Invalid("malformed token".into()))?;
        // The algorithm comes from the config alone; the header must agree
        // exactly (this also rules out `none` and HMAC-with-a-public-key).
        if header.alg != self.settings.alg {
            return Err(Rejection::Invalid("unexpected algorithm".into()));
        }
        // No header extension is understood, so none may be critical.
        if header.crit.is_some() {
            return Err(Rejection::Invalid("unsupported critical header".into()));
        }
        Ok(header)
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Value, Rejection> {
        let settings = &self.settings;
        let data = jsonwebtoken::decode::<Value>(token, key, &settings.validation)
            .map_err(|e| Rejection::Invalid(describe(e.kind())))?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(Rejection::Invalid(
                "the claims are not a JSON object".into(),
            ));
        }
        if !settings.audience.is_empty() && !has_all_audiences(&claims, &settings.audience) {
            return Err(Rejection::Invalid("invalid audience".into()));
        }
        Ok(claims)
    }

    /// Checks roles and scopes.
    pub(crate) fn authorize(&self, claims: &Value) -> Result<(), Rejection> {
        let settings = &self.settings;
        if !settings.roles.is_empty() {
            let value = if settings.roles_key_is_nested {
                lookup_path(claims, &settings.roles_key)
            } else {
                claims.get(&settings.roles_key)
            };
            let held = strings(value, false);
            if !settings.roles.iter().any(|r| held.contains(&r.as_str())) {
                return Err(Rejection::Forbidden(
                    "the token lacks a required role".into(),
                ));
            }
        }
        if !settings.scopes.is_empty() {
            let value = claims
                .get(&settings.scopes_key)
                .or_else(|| lookup_path(claims, &settings.scopes_key));
            let held = strings(value, true);
            let has = |s: &String| held.contains(&s.as_str());
            let ok = match settings.scopes_matcher {
                ScopesMatcher::Any => settings.scopes.iter().any(has),
                ScopesMatcher::All => settings.scopes.iter().all(has),
            };
            if !ok {
                return Err(Rejection::Forbidden(
                    "the token lacks a required scope".into(),
                ));
            }
        }
        Ok(())
    }

    /// Replaces the propagated headers: whatever the client sent under
    /// those names is removed, then the claims are written.
    pub(crate) fn propagate(&self, claims: &Value, headers: &mut HeaderMap) {
        for p in &self.settings.propagate {
            headers.remove(&p.header);
        }
        for p in &self.settings.propagate {
            let Some(value) = lookup_path(claims, &p.claim) else {
                continue;
            };
            for text in render(value, self.settings.preserve_array) {
                match HeaderValue::from_str(&text) {
                    Ok(v) => {
                        headers.append(p.header.clone(), v);
                    }
                    Err(_) => {
                        tracing::debug!(claim = %p.claim, "auth/validator: claim not propagated: not a valid header value");
                    }
                }
            }
        }
    }
}

fn check_size(token: &str) -> Result<&str, Rejection> {
    if token.is_empty() {
        return Err(Rejection::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Invalid("token too large".into()));
    }
    Ok(token)
}

fn strip_bearer(text: &str) -> Option<&str> {
    let (scheme, rest) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidIssuer => "invalid issuer".into(),
        ErrorKind::InvalidAlgorithm => "unexpected algorithm".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim `{claim}`"),
        _ => "malformed token".into(),
    }
}

fn has_all_audiences(claims: &Value, wanted: &[String]) -> bool {
    let held = strings(claims.get("aud"), false);
    wanted.iter().all(|w| held.contains(&w.as_str()))
}

/// The strings of a claim: an array of strings, or one string (split on
/// whitespace when `split`, as OAuth `scope` claims are).
fn strings(value: Option<&Value>, split: bool) -> Vec<&str> {
    match value {
        Some(Value::String(s)) if split => s.split_whitespace().collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A claim as header values: scalars as text, arrays joined with commas
/// (or one value per item with `preserve_array`), objects as JSON.
fn render(value: &Value, preserve_array: bool) -> Vec<String> {
    match value {
        Value::Array(items) if preserve_array => items.iter().filter_map(scalar).collect(),
        Value::Array(items) => {
            vec![
                items
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        }
        other => scalar(other).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(strip_bearer("Bearer abc"), Some("abc"));
        assert_eq!(strip_bearer("bearer  abc"), Some("abc"));
        assert_eq!(strip_bearer("Basic abc"), None);
        assert_eq!(strip_bearer("abc"), None);
    }

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; jwt=tok; b=2"));
        assert_eq!(cookie(&headers, "jwt"), Some("tok"));
        assert_eq!(cookie(&headers, "jw"), None);
    }

    #[test]
    fn claim_rendering() {
        assert_eq!(render(&json!("x"), false), vec!["x"]);
        assert_eq!(render(&json!(3), false), vec!["3"]);
        assert_eq!(render(&json!(["a", "b"]), false), vec!["a,b"]);
        assert_eq!(render(&json!(["a", "b"]), true), vec!["a", "b"]);
        assert_eq!(render(&json!({"k": 1}), false), vec![r#"{"k":1}"#]);
        assert!(render(&json!(null), false).is_empty());
    }

    #[test]
    fn audiences_must_all_be_present() {
        let claims = json!({"aud": ["a", "b"]});
        assert!(has_all_audiences(&claims, &["a".into(), "b".into()]));
        assert!(!has_all_audiences(&claims, &["a".into(), "c".into()]));
        assert!(has_all_audiences(&json!({"aud": "a"}), &["a".into()]));
        assert!(!has_all_audiences(&json!({}), &["a".into()]));
    }

    #[test]
    fn scope_strings() {
        assert_eq!(strings(Some(&json!("a b")), true), vec!["a", "b"]);
        assert_eq!(strings(Some(&json!("a b")), false), vec!["a b"]);
        assert_eq!(strings(Some(&json!(["a", 1])), true), vec!["a"]);
    }
}
