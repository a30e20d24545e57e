//! The `auth/validator` config, as KrakenD spells it, and its compilation
//! into the immutable state one layer holds.

use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::parse_duration;

/// How long an unknown `kid` blocks the next key download when the config
/// sets no `failed_jwk_key_cooldown`.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);
/// KrakenD's `cache_duration` default: 15 minutes.
const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(900);

/// The `auth/validator` config, as KrakenD spells it. Deserialize it from
/// any serde format and pass it to
/// [`ValidateJwtLayer::from_config`](crate::ValidateJwtLayer::from_config);
/// it is checked and compiled there (unknown fields and the KrakenD options
/// Switchboard does not implement are refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ValidatorConfig {
    alg: String,
    #[serde(default)]
    jwk_local_path: Option<String>,
    #[serde(default)]
    jwk_url: Option<String>,
    #[serde(default)]
    disable_jwk_security: bool,
    #[serde(default)]
    cache: bool,
    #[serde(default)]
    cache_duration: Option<DurationField>,
    #[serde(default)]
    audience: Option<OneOrMany>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    roles_key: Option<String>,
    #[serde(default)]
    roles_key_is_nested: bool,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    scopes_key: Option<String>,
    #[serde(default)]
    scopes_matcher: ScopesMatcher,
    #[serde(default)]
    propagate_claims: Vec<(String, String)>,
    #[serde(default)]
    propagate_claims_preserve_array: bool,
    #[serde(default)]
    auth_header_name: Option<String>,
    #[serde(default)]
    cookie_key: Option<String>,
    #[serde(default)]
    leeway: Option<DurationField>,
    #[serde(default)]
    failed_jwk_key_cooldown: Option<DurationField>,
    #[serde(default)]
    key_identify_strategy: KeyIdentifyStrategy,
    #[serde(default)]
    operation_debug: bool,
    // Documented by KrakenD but not implemented: refused so that a config
    // never silently loses a protection it asked for.
    #[serde(default)]
    cipher_suites: Option<Value>,
    #[serde(default)]
    jwk_fingerprints: Option<Value>,
    #[serde(default)]
    jwk_local_ca: Option<Value>,
    #[serde(default)]
    secret_url: Option<Value>,
    #[serde(default)]
    cypher_key: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A duration as a Go duration string (`"1s"`) or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationField {
    Seconds(u64),
    Text(String),
}

impl DurationField {
    fn resolve(&self, field: &str) -> Result<Duration, ConfigError> {
        match self {
            Self::Seconds(secs) => Ok(Duration::from_secs(*secs)),
            Self::Text(text) => parse_duration(text).map_err(|msg| ConfigError::new(field, msg)),
        }
    }
}

/// Whether a token needs any or all of the configured scopes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ScopesMatcher {
    #[default]
    Any,
    All,
}

/// Which token header names the verification key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum KeyIdentifyStrategy {
    /// The `kid` header.
    #[default]
    #[serde(rename = "kid")]
    Kid,
    /// The `x5t` header (SHA-1 certificate thumbprint).
    #[serde(rename = "x5t")]
    X5t,
    /// The `x5t#S256` header (SHA-256 certificate thumbprint).
    #[serde(rename = "x5t#S256")]
    X5tS256,
    /// `kid`, then `x5t`.
    #[serde(rename = "kid_x5t")]
    KidX5t,
}

/// Where the verification keys come from.
#[derive(Debug, Clone)]
pub(crate) enum KeySourceConfig {
    /// A JWK set file, read once at load.
    Local(std::path::PathBuf),
    /// A JWK set URL, fetched and cached.
    Remote {
        url: http::Uri,
        allow_http: bool,
        refresh_after: Duration,
        cooldown: Duration,
    },
}

/// A claim copied into a request header.
#[derive(Debug, Clone)]
pub(crate) struct Propagation {
    pub(crate) claim: String,
    pub(crate) header: HeaderName,
}

/// Everything the validator needs, checked and compiled.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) alg: Algorithm,
    pub(crate) validation: Validation,
    pub(crate) audience: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) roles_key: String,
    pub(crate) roles_key_is_nested: bool,
    pub(crate) scopes: Vec<String>,
    pub(crate) scopes_key: String,
    pub(crate) scopes_matcher: ScopesMatcher,
    pub(crate) propagate: Vec<Propagation>,
    pub(crate) preserve_array: bool,
    pub(crate) auth_header: HeaderName,
    pub(crate) cookie_key: Option<String>,
    pub(crate) strategy: KeyIdentifyStrategy,
    pub(crate) operation_debug: bool,
    pub(crate) source: KeySourceConfig,
}

impl Settings {
    pub(crate) fn from_config(
        config: ValidatorConfig,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        config.compile(base_dir)
    }
}

fn refuse(field: &str, present: bool, why: &str) -> Result<(), ConfigError> {
    if present {
        Err(ConfigError::new(
            field,
            format!("`{field}` is not supported: {why}"),
        ))
    } else {
        Ok(())
    }
}

fn parse_alg(text: &str) -> Result<Algorithm, ConfigError> {
    let alg = match text {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "ES512" => {
            return Err(ConfigError::new(
                "alg",
                "ES512 is not supported (use ES256, ES384, RS*, PS*, HS* or EdDSA)",
            ));
        }
        other => {
            return Err(ConfigError::new(
                "alg",
                format!(
                    "unknown algorithm {other:?}: use one of HS256, HS384, HS512, RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
                ),
            ));
        }
    };
    Ok(alg)
}

fn header_name(field: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(field, format!("{name:?} is not a valid header name")))
}

impl ValidatorConfig {
    fn compile(self, base_dir: &Path) -> Result<Settings, ConfigError> {
        refuse(
            "cipher_suites",
            self.cipher_suites.is_some(),
            "the JWK client offers only rustls's modern AEAD cipher suites",
        )?;
        refuse(
            "jwk_fingerprints",
            self.jwk_fingerprints.is_some(),
            "certificate pinning is not implemented",
        )?;
        refuse(
            "jwk_local_ca",
            self.jwk_local_ca.is_some(),
            "the JWK client trusts the webpki root certificates only",
        )?;
        refuse(
            "secret_url",
            self.secret_url.is_some(),
            "encrypted JWK files are not implemented",
        )?;
        refuse(
            "cypher_key",
            self.cypher_key.is_some(),
            "encrypted JWK files are not implemented",
        )?;

        let alg = parse_alg(&self.alg)?;

        let source = match (&self.jwk_local_path, &self.jwk_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "jwk_url",
                    "set either `jwk_local_path` or `jwk_url`, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "",
                    "one of `jwk_local_path` or `jwk_url` is required",
                ));
            }
            (Some(path), None) => {
                if path.is_empty() {
                    return Err(ConfigError::new("jwk_local_path", "empty path"));
                }
                KeySourceConfig::Local(base_dir.join(path))
            }
            (None, Some(url)) => {
                let uri: http::Uri = url.parse().map_err(|e| {
                    ConfigError::new("jwk_url", format!("invalid URL {url:?}: {e}"))
                })?;
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if self.disable_jwk_security => {}
                    Some("http") => {
                        return Err(ConfigError::new(
                            "jwk_url",
                            "plain http is refused: use https, or set `disable_jwk_security` \
                             (development only)",
                        ));
                    }
                    _ => {
                        return Err(ConfigError::new(
                            "jwk_url",
                            format!("{url:?} must be an absolute https URL"),
                        ));
                    }
                }
                if uri.host().is_none() {
                    return Err(ConfigError::new("jwk_url", format!("{url:?} has no host")));
                }
                let refresh_after = match &self.cache_duration {
                    Some(field) => field.resolve("cache_duration")?,
                    None => DEFAULT_CACHE_DURATION,
                }
                .max(Duration::from_secs(1));
                // Keys are always held in memory: `cache: false` must not
                // turn every request into a download from the identity
                // provider, so `cache` only documents intent.
                let _ = self.cache;
                let cooldown = match &self.failed_jwk_key_cooldown {
                    Some(field) => field.resolve("failed_jwk_key_cooldown")?,
                    None => DEFAULT_COOLDOWN,
                }
                .max(Duration::from_secs(1));
                KeySourceConfig::Remote {
                    url: uri,
                    allow_http: self.disable_jwk_security,
                    refresh_after,
                    cooldown,
                }
            }
        };

        let leeway = match &self.leeway {
            Some(field) => field.resolve("leeway")?.as_secs(),
            None => 0,
        };

        let audience = match self.audience {
            None => Vec::new(),
            Some(OneOrMany::One(one)) => vec![one],
            Some(OneOrMany::Many(many)) => many,
        };
        if audience.iter().any(String::is_empty) {
            return Err(ConfigError::new("audience", "empty audience"));
        }

        let mut validation = Validation::new(alg);
        validation.leeway = leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Checked by the validator itself: every configured audience must
        // be present, where jsonwebtoken accepts any one of them.
        validation.validate_aud = false;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            if issuer.is_empty() {
                return Err(ConfigError::new("issuer", "empty issuer"));
            }
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if !audience.is_empty() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);

        let mut propagate = Vec::with_capacity(self.propagate_claims.len());
        for (i, (claim, header)) in self.propagate_claims.iter().enumerate() {
            if claim.is_empty() {
                return Err(ConfigError::new(
                    format!("propagate_claims[{i}][0]"),
                    "empty claim name",
                ));
            }
            propagate.push(Propagation {
                claim: claim.clone(),
                header: header_name(&format!("propagate_claims[{i}][1]"), header)?,
            });
        }

        let auth_header = header_name(
            "auth_header_name",
            self.auth_header_name.as_deref().unwrap_or("Authorization"),
        )?;

        if matches!(alg.family(), AlgorithmFamily::Hmac)
            && matches!(source, KeySourceConfig::Remote { .. })
        {
            tracing::warn!(
                "auth/validator: HMAC algorithm with a remote JWK set; shared secrets should not \
                 travel over the network"
            );
        }

        Ok(Settings {
            alg,
            validation,
            audience,
            roles: self.roles,
            roles_key: self.roles_key.unwrap_or_else(|| "roles".to_owned()),
            roles_key_is_nested: self.roles_key_is_nested,
            scopes: self.scopes,
            scopes_key: self.scopes_key.unwrap_or_else(|| "scope".to_owned()),
            scopes_matcher: self.scopes_matcher,
            propagate,
            preserve_array: self.propagate_claims_preserve_array,
            auth_header,
            cookie_key: self.cookie_key.filter(|k| !k.is_empty()),
            strategy: self.key_identify_strategy,
            operation_debug: self.operation_debug,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(value: Value) -> Result<Settings, ConfigError> {
        let config: ValidatorConfig = switchboard_core::config::from_value(&value)?;
        Settings::from_config(config, Path::new("/base"))
    }

    #[test]
    fn defaults_are_strict() {
        let s = compile(json!({"alg": "RS256", "jwk_local_path": "jwks.json"})).unwrap();
        assert_eq!(s.validation.leeway, 0);
        assert!(s.validation.validate_nbf);
        assert_eq!(s.validation.algorithms, vec![Algorithm::RS256]);
        assert!(s.validation.required_spec_claims.contains("exp"));
        assert_eq!(s.auth_header, http::header::AUTHORIZATION);
        match s.source {
            KeySourceConfig::Local(path) => assert_eq!(path, Path::new("/base/jwks.json")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let err = compile(json!({"alg": "none", "jwk_local_path": "x"})).unwrap_err();
        assert_eq!(err.path, "alg");
        let err = compile(json!({"alg": "RS256", "jwk_url": "http://idp/keys"})).unwrap_err();
        assert_eq!(err.path, "jwk_url");
        assert!(
            compile(
                json!({"alg": "RS256", "jwk_url": "http://idp/keys", "disable_jwk_security": true})
            )
            .is_ok()
        );
        let err = compile(json!({"alg": "RS256", "jwk_local_path": "x", "cipher_suites": [5]}))
            .unwrap_err();
        assert_eq!(err.path, "cipher_suites");
        let err = compile(json!({"alg": "RS256", "jwk_local_path": "x", "leeway": "5 parsecs"}))
            .unwrap_err();
        assert_eq!(err.path, "leeway");
        let err = compile(json!({"alg": "RS256", "jwk_local_path": "x", "scopes_matcher": "most"}))
            .unwrap_err();
        assert_eq!(err.path, "scopes_matcher");
        let err = compile(json!({"alg": "RS256", "jwk_local_path": "x", "bogus": 1})).unwrap_err();
        assert!(err.message.contains("bogus"));
        let err = compile(json!({"alg": "RS256"})).unwrap_err();
        assert!(err.message.contains("jwk_local_path"));
        let err = compile(json!({"alg": "RS256", "jwk_local_path": "x",
            "propagate_claims": [["sub", "bad header"]]}))
        .unwrap_err();
        assert_eq!(err.path, "propagate_claims[0][1]");
    }

    #[test]
    fn accepts_the_documented_fields() {
        let s = compile(json!({
            "alg": "ES256",
            "jwk_url": "https://idp.example.com/.well-known/jwks.json",
            "cache": true,
            "cache_duration": 60,
            "audience": ["a", "b"],
            "issuer": "https://idp.example.com/",
            "roles": ["admin"],
            "roles_key": "realm_access.roles",
            "roles_key_is_nested": true,
            "scopes": ["read"],
            "scopes_key": "scp",
            "scopes_matcher": "all",
            "propagate_claims": [["sub", "x-user"]],
            "auth_header_name": "X-Token",
            "cookie_key": "jwt",
            "leeway": "2s",
            "failed_jwk_key_cooldown": "30s",
            "key_identify_strategy": "x5t#S256",
            "operation_debug": true,
            "@comment": "ignored"
        }))
        .unwrap();
        assert_eq!(s.validation.leeway, 2);
        assert_eq!(s.scopes_matcher, ScopesMatcher::All);
        assert_eq!(s.strategy, KeyIdentifyStrategy::X5tS256);
        assert!(s.validation.required_spec_claims.contains("iss"));
        assert!(s.validation.required_spec_claims.contains("aud"));
        match s.source {
            KeySourceConfig::Remote {
                refresh_after,
                cooldown,
                ..
            } => {
                assert_eq!(refresh_after, Duration::from_secs(60));
                assert_eq!(cooldown, Duration::from_secs(30));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
