#![doc = include_str!("../README.md")]

mod attempt;
pub mod buffer;
pub mod config;
mod context;
mod error;
pub mod future;
pub mod json;
pub mod krakend;
pub mod secrets;
pub mod sse;
mod state;
mod usage;

pub use attempt::{AttemptReason, UpstreamAttempt};
pub use config::ConfigError;
pub use context::{
    ApiKeyIdentity, BodyLimit, Claims, ClientAddr, JsonBody, RouteParams, ScriptHeaders,
    lookup_path,
};
pub use error::{ErrorResponse, GatewayAnswer, KrakendError, SHOULD_RETRY};
pub use state::{QuotaRemaining, Rejection, SharedState};
pub use usage::{Outcome, Price, Prices, Usage, UsageReport};

/// The one body type every body-touching Switchboard layer uses.
pub type Body = axum_core::body::Body;

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The default limit on a buffered body when no [`BodyLimit`] is set: 10 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 10 * 1024 * 1024;
