//! The namespaces' config, read and checked once at load.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::from_value;

/// Where a script runs, which decides the objects it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// `modifier/lua-endpoint`: before the endpoint's pipeline, with
    /// `ctx.load()`; `pre` only.
    Endpoint,
    /// `modifier/lua-proxy`: around the endpoint's proxy (the merged
    /// answer), with `request.load()` and `response.load()`.
    Proxy,
    /// `modifier/lua-backend`: around one backend call, with
    /// `request.load()` (the backend's URL) and `response.load()`.
    Backend,
}

impl Scope {
    /// The namespace of this scope.
    pub fn namespace(self) -> &'static str {
        match self {
            Scope::Endpoint => "modifier/lua-endpoint",
            Scope::Proxy => "modifier/lua-proxy",
            Scope::Backend => "modifier/lua-backend",
        }
    }
}

/// The fields of `modifier/lua-*`, as KrakenD reads them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LuaConfig {
    /// Lua files run before the code (defining its functions), in order.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Code run on the request.
    #[serde(default)]
    pub pre: Option<String>,
    /// Code run on the response.
    #[serde(default)]
    pub post: Option<String>,
    /// Read the sources again on every request (for development).
    #[serde(default)]
    pub live: bool,
    /// Opens `io`, `os` and `package` to the scripts.
    #[serde(default)]
    pub allow_open_libs: bool,
    /// Does not call the next layer: `post` sees an empty answer.
    #[serde(default)]
    pub skip_next: bool,
    /// The MD5 checksum (hex) each named source must have at load.
    #[serde(default)]
    pub md5: std::collections::BTreeMap<String, String>,
}

/// One source file: where it was found, and its text unless `live`.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) text: Option<String>,
}

impl LuaConfig {
    pub(crate) fn read(value: &Value, scope: Scope) -> Result<Self, ConfigError> {
        let config: LuaConfig = from_value(value)?;
        config.check(scope)?;
        Ok(config)
    }

    /// What a scope refuses: `modifier/lua-endpoint` has no `post` and
    /// cannot skip the endpoint.
    pub(crate) fn check(&self, scope: Scope) -> Result<(), ConfigError> {
        let config = self;
        if scope == Scope::Endpoint {
            if config.post.is_some() {
                return Err(ConfigError::new(
                    "post",
                    "modifier/lua-endpoint runs before the proxy and has no post: use modifier/lua-proxy",
                ));
            }
            if config.skip_next {
                return Err(ConfigError::new(
                    "skip_next",
                    "modifier/lua-endpoint cannot skip the endpoint: use modifier/lua-proxy",
                ));
            }
        }
        Ok(())
    }
}

/// Finds a source as KrakenD does (relative to the working directory),
/// then relative to the config file's directory.
pub(crate) fn locate(name: &str, base_dir: &Path) -> Option<PathBuf> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Some(direct);
    }
    let beside = base_dir.join(name);
    beside.is_file().then_some(beside)
}
