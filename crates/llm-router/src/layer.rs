use std::sync::Arc;

use tower::Layer;

use switchboard_core::ConfigError;

use crate::config::{Provider, Providers};
use crate::failover::Routing;
use crate::format::ClientFormat;
use crate::routing::{Breakers, Classifiers, RouterConfig};
use crate::service::RouteLlm;

/// Which provider of the inventory serves this request, set in the request
/// extensions by a layer that chooses (a router); takes precedence over the
/// layer's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedProvider(pub Arc<str>);

pub(crate) struct Shared {
    pub(crate) providers: Providers,
    pub(crate) default: usize,
    pub(crate) format: Option<ClientFormat>,
    pub(crate) stream: bool,
    pub(crate) response_limit: usize,
    pub(crate) route_by_model: bool,
    pub(crate) routing: Option<Arc<Routing>>,
}

/// Serves chat requests through the inventory: reads the client's request
/// in its format, calls the chosen vendor through the inner (HTTP client)
/// service, and answers in the client's format, streams translated event by
/// event.
///
/// The provider is, in order: the [`SelectedProvider`] in the request
/// extensions; the provider whose inventory name equals the request's
/// `model` (unless [`RouteLlmLayer::route_by_model`] is off); the default (the first, or [`RouteLlmLayer::with_default`]).
///
/// ```
/// use switchboard_llm_router::{ClientFormat, Provider, Providers, RouteLlmLayer, Secret};
///
/// let provider = Provider::builtin("claude", "anthropic", None, None, Secret::new("sk-ant"))
///     .unwrap()
///     .with_format(ClientFormat::Anthropic);
/// let layer = RouteLlmLayer::new(Providers::new(vec![provider]));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RouteLlmLayer {
    shared: Arc<Shared>,
}

/// The name the issue and the docs use for the layer.
pub type LlmRouterLayer = RouteLlmLayer;

impl std::fmt::Debug for RouteLlmLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLlmLayer")
            .field("providers", &self.shared.providers)
            .field("format", &self.shared.format)
            .field("stream", &self.shared.stream)
            .finish_non_exhaustive()
    }
}

/// The most bytes of a whole (non-streamed) vendor answer that are read.
pub const DEFAULT_RESPONSE_LIMIT: usize = 32 * 1024 * 1024;

impl RouteLlmLayer {
    /// A layer over an inventory; the first provider is the default, and
    /// each provider's own `format` is the client format.
    pub fn new(providers: Providers) -> Self {
        Self {
            shared: Arc::new(Shared {
                providers,
                default: 0,
                format: None,
                stream: false,
                response_limit: DEFAULT_RESPONSE_LIMIT,
                route_by_model: true,
                routing: None,
            }),
        }
    }

    /// A layer over one provider.
    pub fn for_provider(provider: Provider) -> Self {
        Self::new(Providers::new(vec![provider]))
    }

    fn update(mut self, change: impl FnOnce(&mut Shared)) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => change(shared),
            None => {
                let mut shared = Shared {
                    providers: self.shared.providers.clone(),
                    default: self.shared.default,
                    format: self.shared.format,
                    stream: self.shared.stream,
                    response_limit: self.shared.response_limit,
                    route_by_model: self.shared.route_by_model,
                    routing: self.shared.routing.clone(),
                };
                change(&mut shared);
                self.shared = Arc::new(shared);
            }
        }
        self
    }

    /// Makes `name` the default provider (unknown names leave the first).
    #[must_use]
    pub fn with_default(self, name: &str) -> Self {
        let index = self
            .shared
            .providers
            .iter()
            .position(|p| p.name() == name)
            .unwrap_or(0);
        self.update(|s| s.default = index)
    }

    /// Fixes the client format for every provider.
    #[must_use]
    pub fn with_format(self, format: ClientFormat) -> Self {
        self.update(|s| s.format = Some(format))
    }

    /// Streams every answer (the endpoint's `output_encoding:
    /// "streaming"`), even when the client's body does not ask.
    #[must_use]
    pub fn always_stream(self, stream: bool) -> Self {
        self.update(|s| s.stream = stream)
    }

    /// Limits how much of a whole vendor answer is read (default 32 MiB).
    #[must_use]
    pub fn with_response_limit(self, limit: usize) -> Self {
        self.update(|s| s.response_limit = limit)
    }

    /// Whether a request's `model` naming an inventory provider chooses it
    /// (on by default). Off, only [`SelectedProvider`] or the default
    /// serves, whatever the client names.
    #[must_use]
    pub fn route_by_model(self, on: bool) -> Self {
        self.update(|s| s.route_by_model = on)
    }

    /// Routes every request with `ai/router` over this layer's inventory:
    /// gates, classifiers, retries, circuit breakers, failover and fan-out
    /// (see the crate's failure semantics). Errors are relative to the
    /// `ai/router` object.
    pub fn with_router(
        self,
        router: &RouterConfig,
        classifiers: Arc<Classifiers>,
    ) -> Result<Self, ConfigError> {
        let routing = Routing::compile(router, classifiers, &self.shared.providers, None)?;
        Ok(self.update(|s| s.routing = Some(Arc::new(routing))))
    }

    /// As [`with_router`](Self::with_router), with the circuit breakers
    /// taken from `breakers`: keep one registry across config builds and a
    /// reload keeps every breaker's state.
    pub fn with_router_in(
        self,
        router: &RouterConfig,
        classifiers: Arc<Classifiers>,
        breakers: &Breakers,
    ) -> Result<Self, ConfigError> {
        let routing =
            Routing::compile(router, classifiers, &self.shared.providers, Some(breakers))?;
        Ok(self.update(|s| s.routing = Some(Arc::new(routing))))
    }

    /// The inventory.
    pub fn providers(&self) -> &Providers {
        &self.shared.providers
    }
}

impl<S> Layer<S> for RouteLlmLayer {
    type Service = RouteLlm<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteLlm::new(inner, self.shared.clone())
    }
}
