//! `bare-proxy --listen ADDR --upstream URL`: the baseline reverse proxy.

use std::net::SocketAddr;

use clap::Parser;

/// A bare hyper reverse proxy: the physical limit for proxying.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9802")]
    listen: SocketAddr,
    /// The upstream, `http://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:9801")]
    upstream: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tokio::select! {
        result = switchboard_benches::bare::run(args.listen, &args.upstream) => result,
        _ = terminated() => Ok(()),
    }
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
