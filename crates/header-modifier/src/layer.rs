//! The layer: compiled modifiers, shared by every service it builds.

use serde_json::Value;
use switchboard_core::ConfigError;
use tower::Layer;

use crate::{MartianConfig, Modifiers, ModifyHeaders};

/// Applies a `modifier/martian` configuration: request-scope modifiers to
/// the outgoing request, response-scope modifiers to the response coming
/// back.
///
/// Cheap to clone; the compiled modifiers are shared.
#[derive(Clone, Debug)]
pub struct ModifyHeadersLayer {
    modifiers: Modifiers,
}

impl ModifyHeadersLayer {
    /// A layer applying already compiled modifiers.
    pub fn new(modifiers: Modifiers) -> Self {
        Self { modifiers }
    }

    /// Compiles the object found under `modifier/martian` (see
    /// [`Modifiers::try_from_config`]).
    pub fn try_from_config(config: &Value) -> Result<Self, ConfigError> {
        Modifiers::try_from_config(config).map(Self::new)
    }

    /// Compiles a typed configuration (see [`Modifiers::from_config`]).
    ///
    /// ```
    /// use switchboard_header_modifier::{MartianConfig, ModifyHeadersLayer, Scope};
    ///
    /// let layer = ModifyHeadersLayer::from_config(&MartianConfig::group(vec![
    ///     MartianConfig::set_header("Authorization", "Bearer sk-test").in_scope(&[Scope::Request]),
    ///     MartianConfig::remove_headers(["Set-Cookie"]).in_scope(&[Scope::Response]),
    /// ]))
    /// .unwrap();
    /// assert!(layer.has_request_modifiers() && layer.has_response_modifiers());
    /// ```
    pub fn from_config(config: &MartianConfig) -> Result<Self, ConfigError> {
        Modifiers::from_config(config).map(Self::new)
    }

    /// The same compiled state, applying only the request-scope modifiers.
    #[must_use]
    pub fn request_only(&self) -> Self {
        Self::new(self.modifiers.request_only())
    }

    /// The same compiled state, applying only the response-scope modifiers.
    #[must_use]
    pub fn response_only(&self) -> Self {
        Self::new(self.modifiers.response_only())
    }

    /// Whether anything applies to the outgoing request.
    pub fn has_request_modifiers(&self) -> bool {
        self.modifiers.has_request_modifiers()
    }

    /// Whether anything applies to the response.
    pub fn has_response_modifiers(&self) -> bool {
        self.modifiers.has_response_modifiers()
    }

    /// The compiled modifiers.
    pub fn modifiers(&self) -> &Modifiers {
        &self.modifiers
    }
}

impl<S> Layer<S> for ModifyHeadersLayer {
    type Service = ModifyHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModifyHeaders::new(inner, self.modifiers.clone())
    }
}
