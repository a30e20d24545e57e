//! The `auth/api-keys` configs, as KrakenD spells them.

use serde::Deserialize;

use crate::hash::HashKind;

/// The service-level (root `extra_config`) block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RootConfig {
    pub(crate) keys: Vec<KeyConfig>,
    #[serde(default)]
    pub(crate) identifier: Option<String>,
    #[serde(default)]
    pub(crate) strategy: Strategy,
    #[serde(default)]
    pub(crate) hash: HashKind,
    #[serde(default)]
    pub(crate) salt: String,
    #[serde(default)]
    pub(crate) propagate_role: Option<String>,
}

/// One client key. Its `@description` is a comment and is dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("key", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// The endpoint-level block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointConfig {
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    #[serde(default)]
    pub(crate) identifier: Option<String>,
    #[serde(default)]
    pub(crate) strategy: Option<Strategy>,
}

/// Where the client puts its key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Strategy {
    /// A request header (`Authorization` by default; `Bearer <key>` works).
    #[default]
    Header,
    /// A query string parameter (`key` by default).
    QueryString,
}

impl Strategy {
    pub(crate) fn default_identifier(self) -> &'static str {
        match self {
            Self::Header => "Authorization",
            Self::QueryString => "key",
        }
    }
}
