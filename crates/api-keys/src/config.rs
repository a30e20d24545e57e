//! The `auth/api-keys` configs, as KrakenD spells them.

use serde::Deserialize;

use crate::hash::HashKind;

/// The service-level (root `extra_config`) `auth/api-keys` block: the key
/// ring every endpoint shares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiKeysConfig {
    /// The accepted keys and their roles.
    pub keys: Vec<KeyConfig>,
    /// Where clients put their key (a header name, or a query parameter);
    /// the strategy's default when absent.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Header or query string.
    #[serde(default)]
    pub strategy: Strategy,
    /// How `keys` are stored.
    #[serde(default)]
    pub hash: HashKind,
    /// Prepended to a key before hashing.
    #[serde(default)]
    pub salt: String,
    /// A header that tells the backend the matching role.
    #[serde(default)]
    pub propagate_role: Option<String>,
}

/// One client key. Its `@description` is a comment and is dropped.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyConfig {
    /// The key (or its hash, as `hash` says).
    pub key: String,
    /// The roles it grants.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("key", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// The endpoint-level `auth/api-keys` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EndpointKeysConfig {
    /// Roles of which the key must grant one (none: any valid key).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Overrides the root's `identifier`.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Overrides the root's `strategy`.
    #[serde(default)]
    pub strategy: Option<Strategy>,
}

/// Where the client puts its key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
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
