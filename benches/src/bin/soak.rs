//! `soak --gateway BIN`: a short soak of the release gateway against the
//! mock vendor. Many keep-alive connections (half of them streaming) send
//! requests for the whole run; the soak fails on any error, on resident
//! memory that keeps growing after the warm-up, or on file descriptors that
//! do not return to their baseline once the load stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use serde_json::json;
use switchboard_benches::load::{Conn, Target};
use switchboard_benches::mock::check_sequence;
use switchboard_benches::procs::{Server, Wrap, free_addr};

/// The soak's settings.
#[derive(Debug, Parser)]
struct Args {
    /// The gateway binary (a release build).
    #[arg(long)]
    gateway: PathBuf,
    /// How long the load runs, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Client connections (half of them stream).
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Seconds of warm-up before the memory baseline is taken.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Allowed growth of resident memory after the warm-up, percent.
    #[arg(long, default_value_t = 25.0)]
    rss_growth: f64,
}

const EVENTS: usize = 20;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match soak(&args).await {
        Ok(summary) => {
            println!("soak: ok, {summary}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("soak: FAILED: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn soak(args: &Args) -> Result<String, String> {
    let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("mock: {e}"))?;
    let mock_addr = mock_listener
        .local_addr()
        .map_err(|e| format!("mock: {e}"))?;
    tokio::spawn(switchboard_benches::mock::serve(mock_listener));

    let gateway_addr = free_addr()?;
    let dir = std::env::temp_dir().join(format!("switchboard-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = json!({
        "version": 3,
        "port": gateway_addr.port(),
        "listen_ip": "127.0.0.1",
        "timeout": "20s",
        // Idle upstream connections close soon, so descriptors can be
        // compared with the baseline after the load.
        "idle_connection_timeout": "2s",
        "extra_config": {"router": {"disable_access_log": true}},
        "endpoints": [
            {"endpoint": "/json", "method": "POST",
             "backend": [{"host": [format!("http://{mock_addr}")], "url_pattern": "/v1/chat/completions?size=512"}]},
            {"endpoint": "/stream", "method": "POST",
             "backend": [{"host": [format!("http://{mock_addr}")],
                "url_pattern": format!("/v1/chat/completions?stream=1&chunks={EVENTS}&interval_us=5000")}]}
        ]
    });
    let config_path = dir.join("soak.json");
    std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
    let server = Server::start(
        "switchboard",
        &args.gateway,
        &[
            "run".to_owned(),
            "-c".to_owned(),
            config_path.display().to_string(),
        ],
        gateway_addr,
        // Every core: the soak is about leaks, not speed.
        &Wrap::Pinned(format!(
            "0-{}",
            std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
        )),
    )?;
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fd_baseline = fds(pid);

    let counts = Arc::new(Counts::default());
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let body = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let streaming = i % 2 == 0;
        let target = Target::post(
            gateway_addr,
            if streaming { "/stream" } else { "/json" },
            body.clone(),
        );
        let counts = Arc::clone(&counts);
        let first_error = Arc::clone(&first_error);
        tasks.push(tokio::spawn(async move {
            run_connection(
                gateway_addr,
                target,
                streaming,
                deadline,
                &counts,
                &first_error,
            )
            .await;
        }));
    }

    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let rss_warm = server.rss_kib();
    for task in tasks {
        let _ = task.await;
    }
    let rss_end = server.rss_kib();
    let ok = counts.ok.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);

    // Client connections are closed; the pool's idle ones close within
    // its idle timeout.
    let settle = Instant::now();
    let mut fd_now = fds(pid);
    while fd_now > fd_baseline && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        fd_now = fds(pid);
    }
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let summary = format!(
        "{ok} requests, {errors} errors, RSS {rss_warm} KiB after warm-up -> {rss_end} KiB, \
         fds {fd_baseline} -> {fd_now}"
    );
    if !alive {
        return Err(format!("the gateway died; {summary}"));
    }
    if errors > 0 || ok == 0 {
        let first = first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        return Err(format!("{summary}; first error: {first}"));
    }
    let limit = rss_warm as f64 * (1.0 + args.rss_growth / 100.0) + 8.0 * 1024.0;
    if rss_end as f64 > limit {
        return Err(format!("resident memory grew after the warm-up; {summary}"));
    }
    if fd_now > fd_baseline {
        return Err(format!(
            "file descriptors did not return to the baseline; {summary}"
        ));
    }
    Ok(summary)
}

async fn run_connection(
    addr: SocketAddr,
    target: Target,
    streaming: bool,
    deadline: Instant,
    counts: &Counts,
    first_error: &std::sync::Mutex<Option<String>>,
) {
    let fail = |problem: String| {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = first_error.lock() {
            first.get_or_insert(problem);
        }
    };
    let mut conn = match Conn::open(addr).await {
        Ok(conn) => conn,
        Err(e) => return fail(e),
    };
    while Instant::now() < deadline {
        match conn.send(&target, streaming).await {
            Ok(sample) if sample.status != 200 => {
                return fail(format!("status {}", sample.status));
            }
            Ok(sample) => {
                if streaming && let Err(e) = check_sequence(&sample.body, EVENTS) {
                    return fail(e);
                }
                counts.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return fail(e),
        }
    }
}
