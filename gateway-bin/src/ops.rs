//! Operations: the telemetry kept across config builds, the listeners
//! telemetry owns, and config reload (`--watch`, SIGHUP) that swaps the
//! whole app atomically.
//!
//! Reload builds a complete new [`App`] from the file, with the same
//! [`SharedState`] as the running one, and only then swaps it in
//! ([`arc_swap`]): a request holds the app it started with until its answer
//! ends, so no request ever sees half of two configs; a config that does not
//! build is logged and refused while the old app keeps serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchboard_core::{ConfigError, SharedState};
use switchboard_llm_router::routing::{BreakerState as RouterBreakerState, Breakers};
use switchboard_telemetry::{
    Admin, BreakerState, LogHandle, Metrics, Telemetry, TelemetrySettings, Tracing,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::{App, build_app_with};
use crate::config::load_file;

const METRICS_SLOT: &str = "telemetry.metrics";
const TRACING_SLOT: &str = "telemetry.tracing";
const GENERATION_SLOT: &str = "config.generation";
const BREAKERS_SLOT: &str = "llm.breakers";

/// The LLM circuit breakers of the process, each reporting its state to
/// the `switchboard_breaker_state` gauge under its provider's name.
pub(crate) fn breakers(state: &SharedState) -> Arc<Breakers> {
    let metrics = state.get_or_init(METRICS_SLOT, Metrics::new);
    state.get_or_init(BREAKERS_SLOT, move || {
        Breakers::with_listener(move |provider, breaker| {
            let gauge = match breaker {
                RouterBreakerState::Open => BreakerState::Open,
                RouterBreakerState::HalfOpen => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            };
            metrics.set_breaker_state(provider, gauge);
        })
    })
}

/// The tracer provider of the last build, reused while its config is the same.
#[derive(Default)]
struct TracingSlot {
    current: Mutex<Option<(String, Tracing)>>,
}

/// The telemetry of one build: the process's metrics, and a tracer provider
/// rebuilt only when the OTLP settings change.
pub(crate) fn telemetry_for(
    state: &SharedState,
    settings: &TelemetrySettings,
) -> Result<Arc<Telemetry>, ConfigError> {
    let metrics = state.get_or_init(METRICS_SLOT, Metrics::new);
    let tracing = match &settings.opentelemetry {
        None => Tracing::disabled(),
        Some(config) => {
            let key = format!(
                "{:?}",
                (
                    &config.exporters.otlp,
                    &config.service_name,
                    config.trace_sample_rate
                )
            );
            let slot = state.get_or_init(TRACING_SLOT, TracingSlot::default);
            let mut current = slot.current.lock().unwrap_or_else(PoisonError::into_inner);
            match current.as_ref() {
                Some((known, tracing)) if *known == key => tracing.clone(),
                _ => {
                    let tracing = Tracing::from_config(config).map_err(|message| {
                        ConfigError::new(
                            "$.extra_config[\"telemetry/opentelemetry\"].exporters.otlp",
                            message,
                        )
                    })?;
                    *current = Some((key, tracing.clone()));
                    tracing
                }
            }
        }
    };
    Ok(Arc::new(Telemetry::new(metrics, tracing, settings)))
}

/// The generation of the build being made.
pub(crate) fn next_generation(state: &SharedState) -> u64 {
    let counter = state.get_or_init(GENERATION_SLOT, || AtomicU64::new(0));
    let generation = counter.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(metrics) = state.get::<Metrics>(METRICS_SLOT) {
        metrics.set_config_generation(generation);
    }
    generation
}

/// The app being served, swapped whole by a reload.
#[derive(Clone)]
pub struct Live {
    current: Arc<ArcSwap<App>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.current.load().generation())
            .finish()
    }
}

impl Live {
    /// Serves `app` until the next swap.
    pub fn new(app: App) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(app)),
        }
    }

    /// The app new requests get.
    pub fn current(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Makes `app` the one new requests get; requests in flight keep theirs.
    pub fn swap(&self, app: App) {
        app.telemetry()
            .metrics()
            .set_config_generation(app.generation());
        self.current.store(Arc::new(app));
    }
}

/// Re-reads a config file, builds it with the running app's state and swaps
/// it in; refuses (and keeps serving the old app) when it does not build.
#[derive(Clone, Debug)]
pub struct Reloader {
    path: PathBuf,
    port: Option<u16>,
    state: SharedState,
    live: Live,
    serialize: Arc<tokio::sync::Mutex<()>>,
    log_handle: Option<LogHandle>,
    debug_endpoint: bool,
}

impl Reloader {
    /// A reloader of `path` (with the `--port` override, if any) into `live`;
    /// `state` must be the one the running app was built with.
    pub fn new(path: &Path, port: Option<u16>, state: SharedState, live: Live) -> Self {
        Self {
            path: path.to_path_buf(),
            port,
            state,
            live,
            serialize: Arc::new(tokio::sync::Mutex::new(())),
            log_handle: None,
            debug_endpoint: false,
        }
    }

    /// Mounts `/__debug/` in every reloaded config too (`run -d`).
    pub fn with_debug_endpoint(mut self, on: bool) -> Self {
        self.debug_endpoint = on;
        self
    }

    /// Applies the log level of each reloaded config through `handle`.
    pub fn with_log_handle(mut self, handle: LogHandle) -> Self {
        self.log_handle = Some(handle);
        self
    }

    /// Reloads once: the new generation, or the errors that refused it.
    pub async fn reload(&self) -> Result<u64, Vec<ConfigError>> {
        let _one_at_a_time = self.serialize.lock().await;
        let metrics = self.live.current().telemetry().metrics().clone();
        let built = load_file(&self.path).and_then(|mut loaded| {
            if let Some(port) = self.port {
                loaded.override_port(port);
            }
            if self.debug_endpoint {
                loaded.root.debug_endpoint = true;
            }
            build_app_with(&loaded, &self.state)
        });
        match built {
            Ok(app) => {
                let generation = app.generation();
                let before = self.live.current();
                if before.settings().listen != app.settings().listen {
                    tracing::warn!("the listen address changed; it applies after a restart");
                }
                for lint in app.lints() {
                    if lint.note {
                        tracing::info!("{lint}");
                    } else {
                        tracing::warn!("{lint}");
                    }
                }
                if let Some(handle) = &self.log_handle {
                    handle.apply(app.telemetry_settings().logging.as_ref());
                }
                self.live.swap(app);
                metrics.config_reload(true);
                tracing::info!(generation, "config reloaded");
                Ok(generation)
            }
            Err(errors) => {
                metrics.config_reload(false);
                // The generation the build took is not served.
                let serving = self.live.current();
                serving
                    .telemetry()
                    .metrics()
                    .set_config_generation(serving.generation());
                for error in &errors {
                    tracing::error!("config reload refused: {error}");
                }
                Err(errors)
            }
        }
    }

    /// Reloads on every SIGHUP, for ever.
    #[cfg(unix)]
    pub async fn on_sighup(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with --watch");
            return;
        };
        while hangups.recv().await.is_some() {
            let _ = self.reload().await;
        }
    }

    /// Reloads whenever the file's modification time, size or contents
    /// change (checked every `every`), for ever.
    pub async fn watch(self, every: Duration) {
        let mut last = fingerprint(&self.path);
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&self.path);
            if now.is_some() && now != last {
                last = now;
                let _ = self.reload().await;
            }
        }
    }
}

fn fingerprint(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some((meta.modified().ok()?, meta.len(), hasher.finish()))
}

/// The listeners telemetry owns, running.
#[derive(Debug)]
pub struct TelemetryListeners {
    /// Where `/metrics` is served, one per `exporters.prometheus[]`.
    pub metrics: Vec<SocketAddr>,
    /// Where the dashboard is served, if configured.
    pub admin: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TelemetryListeners {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds and serves the Prometheus and admin listeners of `app` (port 0
/// picks a free port; the bound addresses are returned). They keep the
/// addresses of the first config: changing them needs a restart.
pub async fn start_telemetry_listeners(app: &App) -> std::io::Result<TelemetryListeners> {
    let metrics = app.telemetry().metrics().clone();
    let settings = app.telemetry_settings();
    let mut listeners = TelemetryListeners {
        metrics: Vec::new(),
        admin: None,
        tasks: Vec::new(),
    };
    let addrs = settings
        .opentelemetry
        .as_ref()
        .map(|c| c.prometheus_addrs())
        .unwrap_or_default();
    for addr in addrs {
        let listener = TcpListener::bind(addr).await?;
        listeners.metrics.push(listener.local_addr()?);
        listeners
            .tasks
            .push(tokio::spawn(switchboard_telemetry::serve_metrics(
                listener,
                metrics.clone(),
            )));
    }
    if let Some(admin) = settings
        .switchboard
        .admin
        .as_ref()
        .and_then(Admin::from_config)
    {
        let listener = TcpListener::bind(admin.addr).await?;
        listeners.admin = Some(listener.local_addr()?);
        listeners
            .tasks
            .push(tokio::spawn(switchboard_telemetry::serve_admin(
                listener,
                admin,
                metrics.clone(),
            )));
    }
    Ok(listeners)
}
