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
mod body;
pub mod config;
mod echo;
mod forward;
mod lint;
mod llm;
mod metrics;
mod namespaces;
mod proxy;
mod server;
mod strategy;
mod upstream;
mod url_pattern;

pub use app::{App, ServerSettings, build_app};
pub use lint::Lint;
pub use server::{serve, shutdown_signal};
