//! KrakenD's `auth/signer` (endpoint): the values of `keys_to_sign` in the
//! answer are replaced by JWTs signed with the key `kid` of a JWK set
//! (`jwk_local_path`, or `jwk_url`, fetched on first use and kept).
//!
//! Tokens are written as KrakenD writes them: the protected header
//! `{"alg","kid","typ":"JWT"}` and the payload with object keys in sorted
//! order, so the same claims give the same token. HMAC keys (`kty: oct`,
//! HS256/384/512) are supported; asymmetric signing keys are refused at
//! load. `full_serialization: true` writes the JWS JSON serialization
//! (`{"payload","protected","signature"}`) instead of the compact form.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::ConfigError;
use switchboard_core::config::from_value;
use tokio::sync::OnceCell;

/// The largest JWK set read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    alg: String,
    kid: String,
    keys_to_sign: Vec<String>,
    #[serde(default)]
    jwk_url: Option<String>,
    #[serde(default)]
    jwk_local_path: Option<String>,
    #[serde(default)]
    full_serialization: bool,
    #[serde(default)]
    disable_jwk_security: bool,
    /// Accepted: the key set is fetched once and kept.
    #[serde(default)]
    cache: Option<bool>,
    /// Accepted: TLS uses rustls' default suites.
    #[serde(default)]
    cipher_suites: Vec<u16>,
}

enum KeySource {
    Local(EncodingKey),
    Remote(Box<Remote>),
}

struct Remote {
    url: http::Uri,
    client: HttpsClient,
    key: OnceCell<EncodingKey>,
}

/// A compiled `auth/signer`.
pub(crate) struct Signer {
    alg: Algorithm,
    kid: String,
    keys: Vec<String>,
    full: bool,
    source: KeySource,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads `auth/signer` (errors relative to it); a local key set is
    /// read now.
    pub(crate) fn from_config(value: &Value, base_dir: &Path) -> Result<Self, ConfigError> {
        let config: Config = from_value(value)?;
        let _ = (config.cache, &config.cipher_suites);
        let alg = match config.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384"
            | "ES512" | "EdDSA" => {
                return Err(ConfigError::new(
                    "alg",
                    format!(
                        "{} signing is not supported; auth/signer signs with HMAC keys \
                         (HS256, HS384, HS512)",
                        config.alg
                    ),
                ));
            }
            other => {
                return Err(ConfigError::new(
                    "alg",
                    format!("unknown algorithm {other:?}"),
                ));
            }
        };
        if config.keys_to_sign.is_empty() {
            return Err(ConfigError::new(
                "keys_to_sign",
                "name at least one key of the answer to sign",
            ));
        }
        let source = match (&config.jwk_local_path, &config.jwk_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "jwk_url",
                    "set jwk_url or jwk_local_path, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "jwk_local_path",
                    "set jwk_local_path or jwk_url",
                ));
            }
            (Some(path), None) => {
                let bytes = switchboard_core::config::read_file_bounded(
                    &base_dir.join(path),
                    MAX_JWKS_BYTES as u64,
                )
                .map_err(|m| ConfigError::new("jwk_local_path", m))?;
                let key = find_key(&bytes, &config.kid)
                    .map_err(|m| ConfigError::new("jwk_local_path", m))?;
                KeySource::Local(key)
            }
            (None, Some(url)) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|_| ConfigError::new("jwk_url", format!("invalid URL {url:?}")))?;
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if config.disable_jwk_security => {}
                    Some("http") => {
                        return Err(ConfigError::new(
                            "jwk_url",
                            "an http:// key set needs disable_jwk_security: true",
                        ));
                    }
                    _ => {
                        return Err(ConfigError::new(
                            "jwk_url",
                            "jwk_url must be an https:// URL",
                        ));
                    }
                }
                KeySource::Remote(Box::new(Remote {
                    url: uri,
                    client: https_client(config.disable_jwk_security)
                        .map_err(|m| ConfigError::new("jwk_url", m))?,
                    key: OnceCell::new(),
                }))
            }
        };
        Ok(Self {
            alg,
            kid: config.kid,
            keys: config.keys_to_sign,
            full: config.full_serialization,
            source,
        })
    }

    async fn key(&self) -> Result<&EncodingKey, String> {
        match &self.source {
            KeySource::Local(key) => Ok(key),
            KeySource::Remote(remote) => {
                remote
                    .key
                    .get_or_try_init(|| async {
                        let bytes = download(&remote.client, &remote.url).await?;
                        find_key(&bytes, &self.kid)
                    })
                    .await
            }
        }
    }

    /// Signs the configured keys of `value` in place. A key that is not in
    /// the answer is left out; a key set that cannot be had is an error.
    pub(crate) async fn sign(&self, value: &mut Value) -> Result<(), String> {
        let Value::Object(map) = value else {
            return Ok(());
        };
        if !self.keys.iter().any(|k| map.contains_key(k)) {
            return Ok(());
        }
        let key = self.key().await?;
        for name in &self.keys {
            let Some(claims) = map.get_mut(name) else {
                continue;
            };
            *claims = self.token(claims, key)?;
        }
        Ok(())
    }

    fn token(&self, claims: &Value, key: &EncodingKey) -> Result<Value, String> {
        let alg = match self.alg {
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            _ => "HS256",
        };
        let mut header = Map::new();
        header.insert("alg".to_owned(), Value::from(alg));
        header.insert("kid".to_owned(), Value::from(self.kid.as_str()));
        header.insert("typ".to_owned(), Value::from("JWT"));
        let protected = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
        let payload = URL_SAFE_NO_PAD.encode(sorted(claims).to_string());
        let message = format!("{protected}.{payload}");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, self.alg)
            .map_err(|e| format!("signing failed: {e}"))?;
        if self.full {
            let mut out = Map::new();
            out.insert("payload".to_owned(), Value::String(payload));
            out.insert("protected".to_owned(), Value::String(protected));
            out.insert("signature".to_owned(), Value::String(signature));
            return Ok(Value::Object(out));
        }
        Ok(Value::String(format!("{message}.{signature}")))
    }
}

/// A copy of `value` with every object's keys in sorted order.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k.as_str()])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The HMAC key `kid` of a JWK set.
fn find_key(bytes: &[u8], kid: &str) -> Result<EncodingKey, String> {
    let set: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the JWK set is not JSON: {e}"))?;
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWK set has no \"keys\" list")?;
    let key = keys
        .iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
        .ok_or_else(|| format!("the JWK set has no key with kid {kid:?}"))?;
    if key.get("kty").and_then(Value::as_str) != Some("oct") {
        return Err(format!(
            "key {kid:?} is not an HMAC key (kty \"oct\"): only HMAC signing is supported"
        ));
    }
    let secret = key
        .get("k")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("key {kid:?} has no \"k\""))?;
    let secret = URL_SAFE_NO_PAD
        .decode(secret.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(secret))
        .map_err(|_| format!("key {kid:?}: \"k\" is not base64url"))?;
    if secret.is_empty() {
        return Err(format!("key {kid:?} is empty"));
    }
    Ok(EncodingKey::from_secret(&secret))
}

fn https_client(allow_http: bool) -> Result<HttpsClient, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if allow_http {
        builder.https_or_http()
    } else {
        builder.https_only()
    };
    let connector = builder.enable_http1().build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

async fn download(client: &HttpsClient, url: &http::Uri) -> Result<Bytes, String> {
    let request = http::Request::get(url.clone())
        .header(
            http::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "the JWK set download timed out".to_owned())?
        .map_err(|e| format!("the JWK set download failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("the JWK set URL answered {}", response.status()));
    }
    Ok(Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the JWK set failed: {e}"))?
        .to_bytes())
}

/// A shared signer.
pub(crate) type SharedSigner = Arc<Signer>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(dir: &Path, extra: Value) -> Result<Signer, ConfigError> {
        let mut config = json!({"alg": "HS256", "kid": "sim2", "keys_to_sign": ["access_token"],
            "jwk_local_path": "keys.json"});
        if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
            config.extend(extra);
        }
        Signer::from_config(&config, dir)
    }

    #[tokio::test]
    async fn signs_deterministically_and_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("keys.json"),
            json!({"keys": [{"kty": "oct", "kid": "sim2", "k": "c2VjcmV0"}]}).to_string(),
        )
        .unwrap();
        let signer = build(dir.path(), json!({})).unwrap();
        let mut value =
            json!({"access_token": {"sub": "u", "aud": "a", "exp": 4_102_444_800_u64}, "other": 1});
        signer.sign(&mut value).await.unwrap();
        let token = value["access_token"].as_str().unwrap().to_owned();
        let mut parts = token.split('.');
        let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            r#"{"alg":"HS256","kid":"sim2","typ":"JWT"}"#
        );
        let payload = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"{"aud":"a","exp":4102444800,"sub":"u"}"#
        );
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_audience(&["a"]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "u");
        assert_eq!(value["other"], 1);

        let full = build(dir.path(), json!({"full_serialization": true})).unwrap();
        let mut value = json!({"access_token": {"sub": "u"}});
        full.sign(&mut value).await.unwrap();
        assert!(value["access_token"]["signature"].is_string());
    }

    #[test]
    fn config_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("keys.json"),
            json!({"keys": [{"kty": "RSA", "kid": "sim2", "n": "x", "e": "AQAB"}]}).to_string(),
        )
        .unwrap();
        let err = |extra: Value| build(dir.path(), extra).unwrap_err().path;
        assert_eq!(err(json!({})), "jwk_local_path");
        assert_eq!(err(json!({"alg": "RS256"})), "alg");
        assert_eq!(err(json!({"keys_to_sign": []})), "keys_to_sign");
        assert_eq!(err(json!({"kid": "nope"})), "jwk_local_path");
        assert_eq!(
            err(json!({"jwk_local_path": null, "jwk_url": "http://127.0.0.1:1/k"})),
            "jwk_url"
        );
        assert_eq!(err(json!({"secret_url": "x"})), "secret_url");
    }
}
