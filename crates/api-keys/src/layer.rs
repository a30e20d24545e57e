use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::from_value;
use tower::Layer;

use crate::config::{ApiKeysConfig, EndpointKeysConfig};
use crate::extract::Location;
use crate::keyring::KeyRing;
use crate::service::ValidateApiKey;

/// The service-wide API keys (KrakenD's root `auth/api-keys` block),
/// compiled once and shared by every endpoint that asks for a key.
///
/// Cheap to clone. Its `Debug` output shows no key and no salt.
#[derive(Clone)]
pub struct ApiKeys {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) ring: KeyRing,
    identifier: Option<String>,
    strategy: crate::config::Strategy,
    pub(crate) propagate_role: Option<HeaderName>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("ring", &self.shared.ring)
            .field("strategy", &self.shared.strategy)
            .field("identifier", &self.shared.identifier)
            .field("propagate_role", &self.shared.propagate_role)
            .finish()
    }
}

impl ApiKeys {
    /// Compiles the root `auth/api-keys` config object.
    pub fn try_from_config(root_value: &Value) -> Result<Self, ConfigError> {
        Self::from_config(from_value(root_value)?)
    }

    /// Compiles a typed root config.
    pub fn from_config(config: ApiKeysConfig) -> Result<Self, ConfigError> {
        let mut ring = KeyRing::new(config.hash, &config.salt);
        for (i, key) in config.keys.into_iter().enumerate() {
            ring.add(&key.key, key.roles)
                .map_err(|msg| ConfigError::new(format!("keys[{i}].key"), msg))?;
        }
        if let Some(identifier) = &config.identifier {
            check_identifier("identifier", identifier, config.strategy)?;
        }
        let propagate_role = match config.propagate_role.as_deref() {
            None | Some("") => None,
            Some(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(
                    "propagate_role",
                    format!("{name:?} is not a valid header name"),
                )
            })?),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                ring,
                identifier: config.identifier,
                strategy: config.strategy,
                propagate_role,
            }),
        })
    }

    /// The layer for one endpoint, from its `auth/api-keys` object
    /// (`roles`, and optional `identifier` / `strategy` overrides).
    pub fn layer(&self, endpoint_value: &Value) -> Result<ValidateApiKeyLayer, ConfigError> {
        self.layer_from_config(from_value(endpoint_value)?)
    }

    /// The layer for one endpoint, from a typed endpoint config.
    pub fn layer_from_config(
        &self,
        config: EndpointKeysConfig,
    ) -> Result<ValidateApiKeyLayer, ConfigError> {
        let strategy = config.strategy.unwrap_or(self.shared.strategy);
        let identifier = match (&config.identifier, &self.shared.identifier) {
            (Some(own), _) => {
                check_identifier("identifier", own, strategy)?;
                own.clone()
            }
            // A root identifier belongs to the root strategy.
            (None, Some(root)) if strategy == self.shared.strategy => root.clone(),
            _ => strategy.default_identifier().to_owned(),
        };
        let location = match strategy {
            crate::config::Strategy::Header => {
                Location::Header(HeaderName::from_bytes(identifier.as_bytes()).map_err(|_| {
                    ConfigError::new("identifier", format!("{identifier:?} is not a header name"))
                })?)
            }
            crate::config::Strategy::QueryString => Location::Query(identifier),
        };
        Ok(ValidateApiKeyLayer {
            endpoint: Arc::new(Endpoint {
                shared: self.shared.clone(),
                roles: config.roles,
                location,
            }),
        })
    }
}

fn check_identifier(
    field: &str,
    identifier: &str,
    strategy: crate::config::Strategy,
) -> Result<(), ConfigError> {
    if identifier.is_empty() {
        return Err(ConfigError::new(field, "empty identifier"));
    }
    if strategy == crate::config::Strategy::Header
        && HeaderName::from_bytes(identifier.as_bytes()).is_err()
    {
        return Err(ConfigError::new(
            field,
            format!("{identifier:?} is not a valid header name"),
        ));
    }
    Ok(())
}

/// One endpoint's view of the keys.
pub(crate) struct Endpoint {
    pub(crate) shared: Arc<Shared>,
    pub(crate) roles: Vec<String>,
    pub(crate) location: Location,
}

/// Requires a valid API key (and one of the endpoint's roles) on every
/// request. Built by [`ApiKeys::layer`].
#[derive(Clone)]
pub struct ValidateApiKeyLayer {
    endpoint: Arc<Endpoint>,
}

impl fmt::Debug for ValidateApiKeyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateApiKeyLayer")
            .field("roles", &self.endpoint.roles)
            .field("location", &self.endpoint.location)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ValidateApiKeyLayer {
    type Service = ValidateApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateApiKey::new(inner, self.endpoint.clone())
    }
}
