//! `mock-vendor --listen ADDR`: the mock LLM vendor (knobs in each request's
//! query string; see the `mock` module).

use std::net::SocketAddr;

use clap::Parser;

/// A cheap, deterministic mock LLM vendor.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9801")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    switchboard_benches::mock::run(args.listen).await
}
