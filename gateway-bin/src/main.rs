//! The `switchboard` command: `run` serves a config, `check` validates one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{LoadedConfig, load_file};
use switchboard::{
    Live, Reloader, SharedState, build_app_with, serve_live, shutdown_signal,
    start_telemetry_listeners,
};
use switchboard_telemetry::config::LoggingConfig;
use switchboard_telemetry::{TelemetrySettings, init_logging};

/// mimalloc: fewer instructions per allocation than glibc's allocator, and
/// the memory a load freed goes back to the system (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_t`.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A server's allocator settings: arenas are committed as they are used,
/// not all at once, and freed pages go back to the system when they are
/// freed rather than at a later allocation that an idle server never makes.
/// Without them a load leaves ~20 MiB more resident (docs/performance.md).
/// The `MIMALLOC_ARENA_EAGER_COMMIT` and `MIMALLOC_PURGE_DELAY` environment
/// variables still win when set.
#[allow(unsafe_code)]
fn tune_allocator() {
    for (option, name, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: `mi_option_set` stores an integer in mimalloc's option
            // table; it is called before the runtime starts any thread.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

/// Switchboard: an AI gateway for KrakenD-compatible configs.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a config.
    Run {
        /// The config file (KrakenD version 3 JSON).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Listen on this port instead of the config's.
        #[arg(short, long)]
        port: Option<u16>,
        /// Reload the config when the file changes (SIGHUP always reloads).
        #[arg(short, long)]
        watch: bool,
        /// Mount the `/__debug/` endpoint (as `debug_endpoint: true`, or
        /// KrakenD's `run -d`).
        #[arg(short, long)]
        debug: bool,
    },
    /// Validate a config: print every error and lint with its JSON path.
    Check {
        /// The config file (KrakenD version 3 JSON).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// `telemetry/logging` of the config at `path`, if it reads (a config
/// that does not is reported by the build).
fn logging_of(path: &std::path::Path) -> Option<LoggingConfig> {
    let loaded = load_file(path).ok()?;
    TelemetrySettings::from_extra(&loaded.root.extra_config, "$.extra_config")
        .ok()?
        .logging
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let logging = match &cli.command {
        Command::Run { config, .. } => logging_of(config),
        Command::Check { .. } => None,
    };
    let log_handle = init_logging(logging.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Room for the deepest expression and template `check` accepts,
        // so evaluating them never needs a new stack segment.
        .thread_stack_size(32 * 1024 * 1024)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Check { config } => check(&config),
            Command::Run {
                config,
                port,
                watch,
                debug,
            } => run(&config, port, watch, debug, log_handle).await,
        }
    })
}

fn print_errors(errors: &[switchboard_core::ConfigError]) {
    for error in errors {
        eprintln!("error: {error}");
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let report = switchboard::check_file(path);
    print_errors(&report.errors);
    for lint in &report.lints {
        println!("{}: {lint}", if lint.note { "note" } else { "warning" });
    }
    if report.errors.is_empty() {
        println!("{}: {}", path.display(), report.summary());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {}", path.display(), report.summary());
        ExitCode::FAILURE
    }
}

async fn run(
    path: &std::path::Path,
    port: Option<u16>,
    watch: bool,
    debug: bool,
    log_handle: switchboard_telemetry::LogHandle,
) -> ExitCode {
    let mut loaded: LoadedConfig = match load_file(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            print_errors(&errors);
            eprintln!(
                "{}: {}",
                path.display(),
                switchboard::plural(errors.len(), "error")
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(port) = port {
        loaded.override_port(port);
    }
    if debug {
        loaded.root.debug_endpoint = true;
    }
    let state = SharedState::new();
    let app = match build_app_with(&loaded, &state) {
        Ok(app) => app,
        Err(errors) => {
            print_errors(&errors);
            eprintln!(
                "{}: {}",
                path.display(),
                switchboard::plural(errors.len(), "error")
            );
            return ExitCode::FAILURE;
        }
    };
    for lint in app.lints() {
        if lint.note {
            tracing::info!("{lint}");
        } else {
            tracing::warn!("{lint}");
        }
    }
    let telemetry_listeners = match start_telemetry_listeners(&app).await {
        Ok(listeners) => listeners,
        Err(err) => {
            eprintln!("error: cannot start the telemetry listeners: {err}");
            return ExitCode::FAILURE;
        }
    };
    for addr in &telemetry_listeners.metrics {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    if let Some(addr) = telemetry_listeners.admin {
        tracing::info!("dashboard at http://{addr}/__dashboard");
    }
    let listen = app.settings().listen.clone();
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let name = loaded.root.name.as_deref().unwrap_or("switchboard");
    tracing::info!(
        "{name} listening on {listen} with {} endpoints",
        app.endpoint_count()
    );
    let tracing_provider = app.telemetry().tracing().clone();
    let live = Live::new(app);
    let reloader = Reloader::new(path, port, state, live.clone())
        .with_log_handle(log_handle)
        .with_debug_endpoint(debug);
    #[cfg(unix)]
    tokio::spawn(reloader.clone().on_sighup());
    if watch {
        tokio::spawn(reloader.watch(std::time::Duration::from_secs(1)));
    }
    let served = serve_live(listener, live, shutdown_signal()).await;
    drop(telemetry_listeners);
    tokio::task::spawn_blocking(move || tracing_provider.shutdown())
        .await
        .ok();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option numbers name the options meant: their defaults in this
    /// mimalloc are 2 (eager commit on overcommitting systems) and 1000 ms.
    #[test]
    #[allow(unsafe_code)]
    fn option_numbers_match_mimalloc() {
        // SAFETY: reads mimalloc's option table.
        let (eager, delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_EAGER_COMMIT),
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
            )
        };
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(eager, 2);
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, 1000);
        }
    }
}
