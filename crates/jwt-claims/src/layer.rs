use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use switchboard_core::ConfigError;
use tower::Layer;

use crate::config::{Settings, ValidatorConfig};
use crate::service::ValidateJwt;
use crate::store::KeyStore;
use crate::validator::Validator;
use switchboard_core::config::from_value;

/// Validates JWTs per KrakenD's `auth/validator` and puts the claims in the
/// request context. See the [crate docs](crate).
#[derive(Clone)]
pub struct ValidateJwtLayer {
    validator: Arc<Validator>,
}

impl ValidateJwtLayer {
    /// Compiles an `auth/validator` config object. `jwk_local_path` is
    /// resolved against `base_dir` (the config file's directory).
    ///
    /// Never blocks: a local key file is read now; a `jwk_url` is
    /// downloaded in the background when called inside a Tokio runtime,
    /// otherwise on the first request.
    pub fn try_from_config(value: &Value, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::from_config(from_value(value)?, base_dir)
    }

    /// Compiles a typed config; see [`try_from_config`](Self::try_from_config).
    pub fn from_config(config: ValidatorConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        let settings = Settings::from_config(config, base_dir)?;
        let keys = KeyStore::new(&settings.source, settings.alg)?;
        Ok(Self {
            validator: Arc::new(Validator { settings, keys }),
        })
    }
}

impl fmt::Debug for ValidateJwtLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.validator.settings;
        f.debug_struct("ValidateJwtLayer")
            .field("alg", &s.alg)
            .field("auth_header", &s.auth_header)
            .field("roles", &s.roles)
            .field("scopes", &s.scopes)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ValidateJwtLayer {
    type Service = ValidateJwt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateJwt::new(inner, self.validator.clone())
    }
}
