//! The Switchboard gateway: reads a KrakenD-compatible config, builds one
//! tower pipeline per endpoint and serves them.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = switchboard::config::load_file("switchboard.json".as_ref())
//!     .map_err(|errors| format!("{} config errors", errors.len()))?;
//! let app = switchboard::build_app(&loaded)
//!     .map_err(|errors| format!("{} config errors", errors.len()))?;
//! let listener = tokio::net::TcpListener::bind(&app.settings().listen).await?;
//! switchboard::serve(listener, app, switchboard::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

mod app;
mod backend_http;
mod body;
mod bot_detector;
mod breaker;
mod check;
pub mod config;
mod conn;
mod cors;
mod echo;
mod encoding;
mod flatmap;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod governance;
mod lint;
mod llm;
mod namespaces;
mod ops;
mod proxy;
mod render;
mod secret_values;
mod server;
mod signer;
mod strategy;
mod upstream;
mod url_pattern;

pub use app::{App, ServerSettings, build_app, build_app_with};
pub use check::{CheckReport, check_file, plural};
pub use lint::Lint;
pub use ops::{Live, Reloader, TelemetryListeners, start_telemetry_listeners};
pub use proxy::USER_AGENT_VALUE as USER_AGENT;
pub use server::{serve, serve_live, shutdown_signal};
pub use switchboard_core::SharedState;
