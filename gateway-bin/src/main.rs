//! The `switchboard` command: `run` serves a config, `check` validates one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::load_file;
use switchboard::{build_app, serve, shutdown_signal};

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
    },
    /// Validate a config: print every error and lint with its JSON path.
    Check {
        /// The config file (KrakenD version 3 JSON).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            Command::Run { config, port } => run(&config, port).await,
        }
    })
}

fn print_errors(errors: &[switchboard_core::ConfigError]) {
    for error in errors {
        eprintln!("error: {error}");
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let loaded = match load_file(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    match build_app(&loaded) {
        Ok(app) => {
            for lint in app.lints() {
                println!("warning: {lint}");
            }
            println!(
                "{}: ok, {} endpoints, {} warnings",
                path.display(),
                app.endpoint_count(),
                app.lints().len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{}: {} errors", path.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &std::path::Path, port: Option<u16>) -> ExitCode {
    let mut loaded = match load_file(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    if let Some(port) = port {
        loaded.override_port(port);
    }
    let app = match build_app(&loaded) {
        Ok(app) => app,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    for lint in app.lints() {
        tracing::warn!("{lint}");
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
    match serve(listener, app, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
