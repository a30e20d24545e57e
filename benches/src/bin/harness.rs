//! `harness`: runs every scenario against the gateway and the bare proxy
//! baseline in the same run, prints a table and writes JSON.
//!
//! `--short` measures instruction counts only (callgrind, deterministic)
//! and, with `--baseline FILE`, fails when a scenario's ratio to the bare
//! proxy grew by more than `--tolerance` percent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use switchboard_benches::load::{self, Target, median, percentile_us};
use switchboard_benches::mock::check_sequence;
use switchboard_benches::procs::{self, Server, Wrap, free_addr};
use switchboard_benches::scenarios::{self, Scenario};

/// The Switchboard load harness.
#[derive(Debug, Parser)]
struct Args {
    /// Instruction counts only (a few minutes).
    #[arg(long)]
    short: bool,
    /// Where the `switchboard`, `mock-vendor` and `bare-proxy` binaries are
    /// (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// A committed result to compare instruction ratios with.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Allowed growth of an instruction ratio over the baseline, percent.
    #[arg(long, default_value_t = 10.0)]
    tolerance: f64,
    /// Cores for the server under test.
    #[arg(long, default_value = "0")]
    server_cores: String,
    /// Cores for the mock vendor (the load generator runs where it was
    /// started: `taskset -c 1 harness`).
    #[arg(long, default_value = "1")]
    client_cores: String,
    /// Requests per scenario under callgrind.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Seconds per load run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds of interleaved runs (RPS and latency).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Only scenarios whose id starts with one of these.
    #[arg(long)]
    only: Vec<String>,
    /// Skip instruction counts (CPU, RPS, latency, SSE and memory only).
    #[arg(long)]
    no_callgrind: bool,
    /// Measure an already running OpenAI-compatible server instead (the
    /// LiteLLM comparison): its address…
    #[arg(long, requires = "external_pid")]
    external: Option<SocketAddr>,
    /// …its process id (CPU is summed over it and its children)…
    #[arg(long)]
    external_pid: Option<u32>,
    /// …and the chat completions path.
    #[arg(long, default_value = "/v1/chat/completions")]
    external_path: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args, &runtime) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

struct Bins {
    gateway: PathBuf,
    mock: PathBuf,
    bare: PathBuf,
}

struct Env {
    bins: Bins,
    dir: PathBuf,
    mock: Server,
    config: PathBuf,
    /// The Prometheus listener of the gateway started last.
    metrics: std::cell::Cell<Option<SocketAddr>>,
}

impl Env {
    fn start_gateway(&self, wrap: &Wrap) -> Result<Server, String> {
        let addr = free_addr()?;
        // Each gateway gets its own metrics port, so one still draining
        // never blocks the next.
        let metrics = free_addr()?;
        let text = std::fs::read_to_string(&self.config).map_err(|e| e.to_string())?;
        let mut value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        value["extra_config"]["telemetry/opentelemetry"] = json!({
            "exporters": {"prometheus": [{"name": "bench", "listen_ip": "127.0.0.1", "port": metrics.port()}]}
        });
        let config = self.dir.join(format!("bench-{}.json", addr.port()));
        std::fs::write(&config, value.to_string()).map_err(|e| e.to_string())?;
        self.metrics.set(Some(metrics));
        Server::start(
            "gateway",
            &self.bins.gateway,
            &[
                "run".to_owned(),
                "-c".to_owned(),
                config.display().to_string(),
                "-p".to_owned(),
                addr.port().to_string(),
            ],
            addr,
            wrap,
        )
    }

    fn start_bare(&self, wrap: &Wrap) -> Result<Server, String> {
        let addr = free_addr()?;
        Server::start(
            "bare proxy",
            &self.bins.bare,
            &[
                "--listen".to_owned(),
                addr.to_string(),
                "--upstream".to_owned(),
                format!("http://{}", self.mock.addr),
            ],
            addr,
            wrap,
        )
    }
}

/// Which bare-proxy measurement a scenario is compared with.
fn baseline_of(s: &Scenario) -> &'static str {
    s.bare
}

/// The scenarios whose requests the bare proxy is measured with, for the
/// scenarios in `selected` (in table order).
fn bare_scenarios(selected: &[&Scenario]) -> Vec<Scenario> {
    scenarios::all()
        .into_iter()
        .filter(|b| selected.iter().any(|s| s.bare == b.id))
        .collect()
}

fn run(args: &Args, rt: &tokio::runtime::Runtime) -> Result<bool, String> {
    if let (Some(addr), Some(pid)) = (args.external, args.external_pid) {
        return external(args, rt, addr, pid);
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let bins = Bins {
        gateway: bin_dir.join("switchboard"),
        mock: bin_dir.join("mock-vendor"),
        bare: bin_dir.join("bare-proxy"),
    };
    for bin in [&bins.gateway, &bins.mock, &bins.bare] {
        if !bin.exists() {
            return Err(format!(
                "{} is missing: cargo build --release -p switchboard -p switchboard-benches",
                bin.display()
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mock_addr = free_addr()?;
    let mock = Server::start(
        "mock vendor",
        &bins.mock,
        &["--listen".to_owned(), mock_addr.to_string()],
        mock_addr,
        &Wrap::Pinned(args.client_cores.clone()),
    )?;
    let config = dir.join("bench.json");
    let value = scenarios::gateway_config(mock_addr, 8080, &dir).map_err(|e| e.to_string())?;
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&value).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let env = Env {
        bins,
        dir: dir.clone(),
        mock,
        config,
        metrics: std::cell::Cell::new(None),
    };
    let all: Vec<Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.id.starts_with(o.as_str())))
        .collect();

    let mut results = json!({
        "machine": machine(),
        "mode": if args.short { "short" } else { "full" },
    });
    let mut ok = true;

    if args.no_callgrind {
        eprintln!("instruction counts skipped (--no-callgrind)");
    } else if procs::has_valgrind() {
        eprintln!(
            "== instructions per request (callgrind, {} requests each)",
            args.requests
        );
        let instructions = instructions(args, rt, &env, &all)?;
        results["instructions"] = instructions;
    } else {
        eprintln!("valgrind not found: instruction counts skipped");
    }
    if !args.short {
        results["cpu"] = cpu_per_request(args, rt, &env, &all)?;
        results["rps"] = rps_ratio(args, rt, &env, &all)?;
        results["latency"] = added_latency(args, rt, &env, &all)?;
        results["sse"] = sse(rt, &env, &all)?;
        results["memory"] = memory(args, rt, &env, &all)?;
    }
    print_table(&results);
    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &args.out,
        serde_json::to_vec_pretty(&results).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!("results written to {}", args.out.display());
    if let Some(baseline) = &args.baseline {
        let complete = args.only.is_empty() && results["instructions"].is_object();
        ok &= compare(&results, baseline, args.tolerance, complete)?;
    }
    env.mock.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
            .unwrap_or(0),
        "kernel": kernel,
    })
}

/// Sends `n` requests and checks each status (and stream integrity).
async fn drive(target: &Target, s: &Scenario, n: usize) -> Result<(), String> {
    let samples = load::sequential(target, n, s.sse.is_some()).await?;
    for sample in &samples {
        if sample.status != s.expect {
            return Err(format!(
                "{}: status {} where {} was expected ({})",
                s.id,
                sample.status,
                s.expect,
                String::from_utf8_lossy(&sample.body)
            ));
        }
        if let Some(events) = s.sse {
            check_sequence(&sample.body, events).map_err(|e| format!("{}: {e}", s.id))?;
        }
    }
    Ok(())
}

fn count(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    prefix: &Path,
    target: &Target,
    s: &Scenario,
    n: usize,
) -> Result<f64, String> {
    rt.block_on(drive(target, s, 10))?;
    procs::callgrind_zero(server.pid())?;
    rt.block_on(drive(target, s, n))?;
    let total = procs::callgrind_dump(server.pid(), prefix)?;
    Ok(total as f64 / n as f64)
}

fn instructions(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    env: &Env,
    all: &[Scenario],
) -> Result<Value, String> {
    let measured: Vec<&Scenario> = all.iter().filter(|s| s.id != "s3-paced").collect();
    let bare_prefix = env.dir.join("cg.bare");
    let bare = env.start_bare(&Wrap::Callgrind(bare_prefix.clone()))?;
    let mut bare_counts = BTreeMap::new();
    for s in bare_scenarios(&measured) {
        let n = count(
            rt,
            &bare,
            &bare_prefix,
            &s.direct(bare.addr),
            &s,
            args.requests,
        )?;
        eprintln!("  bare {:<10} {n:>10.0}", s.id);
        bare_counts.insert(s.id, n);
    }
    bare.stop();
    let gw_prefix = env.dir.join("cg.gateway");
    let gateway = env.start_gateway(&Wrap::Callgrind(gw_prefix.clone()))?;
    let mut out = serde_json::Map::new();
    for s in measured {
        let n = count(
            rt,
            &gateway,
            &gw_prefix,
            &s.gateway(gateway.addr),
            s,
            args.requests,
        )?;
        let base = bare_counts.get(baseline_of(s)).copied().unwrap_or(f64::NAN);
        eprintln!("  gateway {:<10} {n:>10.0}  {:.2}x", s.id, n / base);
        out.insert(
            s.id.to_owned(),
            json!({"what": s.what, "gateway": n.round(), "bare": base.round(), "bare_scenario": baseline_of(s), "ratio": round3(n / base)}),
        );
    }
    gateway.stop();
    Ok(Value::Object(out))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// CPU µs per request of `server` under a closed loop of `conns`.
fn cpu_us(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    target: &Target,
    expect: u16,
    conns: usize,
    seconds: f64,
) -> (f64, load::Run) {
    let _ = rt.block_on(load::closed_loop(
        target,
        conns,
        Duration::from_millis(300),
        expect,
    ));
    let before = server.cpu_ns();
    let run = rt.block_on(load::closed_loop(
        target,
        conns,
        Duration::from_secs_f64(seconds),
        expect,
    ));
    let used = server.cpu_ns().saturating_sub(before);
    (used as f64 / 1000.0 / run.ok.max(1) as f64, run)
}

fn conns_for(s: &Scenario) -> usize {
    if s.id == "s3-paced" { 64 } else { 16 }
}

fn cpu_per_request(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    env: &Env,
    all: &[Scenario],
) -> Result<Value, String> {
    eprintln!(
        "== CPU per request (/proc, server pinned to core {})",
        args.server_cores
    );
    let wrap = Wrap::Pinned(args.server_cores.clone());
    let bare = env.start_bare(&wrap)?;
    let gateway = env.start_gateway(&wrap)?;
    let mut bare_cpu = BTreeMap::new();
    let selected: Vec<&Scenario> = all.iter().collect();
    for s in bare_scenarios(&selected) {
        let (us, run) = cpu_us(
            rt,
            &bare,
            &s.direct(bare.addr),
            200,
            conns_for(&s),
            args.seconds,
        );
        eprintln!(
            "  bare {:<10} {us:>8.1} µs  ({:.0} rps, {} errors)",
            s.id,
            run.rps(),
            run.errors
        );
        bare_cpu.insert(s.id, us);
    }
    let mut out = serde_json::Map::new();
    for s in all {
        let (us, run) = cpu_us(
            rt,
            &gateway,
            &s.gateway(gateway.addr),
            s.expect,
            conns_for(s),
            args.seconds,
        );
        let base = bare_cpu.get(baseline_of(s)).copied().unwrap_or(f64::NAN);
        eprintln!(
            "  gateway {:<10} {us:>8.1} µs  ({:.0} rps, {} errors)",
            s.id,
            run.rps(),
            run.errors
        );
        out.insert(
            s.id.to_owned(),
            json!({"gateway_us": round1(us), "bare_us": round1(base), "added_us": round1(us - base), "rps": run.rps().round(), "errors": run.errors}),
        );
    }
    out.insert(
        "overhead_histogram".to_owned(),
        match env.metrics.get() {
            Some(metrics) => rt.block_on(overhead(metrics)),
            None => Value::Null,
        },
    );
    bare.stop();
    gateway.stop();
    Ok(Value::Object(out))
}

/// The gateway's own overhead histogram (every endpoint together), read
/// from `/metrics` on the gateway's Prometheus listener.
async fn overhead(addr: SocketAddr) -> Value {
    let target = Target {
        addr,
        method: http::Method::GET,
        path: "/metrics".to_owned(),
        headers: Vec::new(),
        body: bytes::Bytes::new(),
    };
    let Ok(mut conn) = load::Conn::open(addr).await else {
        return Value::Null;
    };
    let Ok(sample) = conn.send(&target, true).await else {
        return Value::Null;
    };
    if sample.status != 200 {
        return Value::Null;
    }
    let text = String::from_utf8_lossy(&sample.body);
    // Per endpoint series, summed by bucket bound.
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut total = 0f64;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("switchboard_gateway_duration_seconds_bucket{") {
            let Some((labels, count)) = rest.split_once("} ") else {
                continue;
            };
            let Some(le) = labels
                .split("le=\"")
                .nth(1)
                .and_then(|l| l.split('"').next())
            else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            let entry = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            entry.1 += count.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some((_, count)) = line
            .strip_prefix("switchboard_gateway_duration_seconds_count{")
            .and_then(|rest| rest.split_once("} "))
        {
            total += count.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(le, _)| *le * 1e6)
            .unwrap_or(f64::NAN)
    };
    json!({"requests": total, "p50_le_us": quantile(0.5), "p99_le_us": quantile(0.99), "p999_le_us": quantile(0.999)})
}

fn rps_ratio(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    env: &Env,
    all: &[Scenario],
) -> Result<Value, String> {
    eprintln!(
        "== RPS ratio (interleaved, {} rounds, 32 connections)",
        args.rounds
    );
    let wrap = Wrap::Pinned(args.server_cores.clone());
    let bare = env.start_bare(&wrap)?;
    let gateway = env.start_gateway(&wrap)?;
    let mut out = serde_json::Map::new();
    for s in all.iter().filter(|s| matches!(s.id, "s1" | "s4-full")) {
        let (mut b, mut g, mut ratios, mut busy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let seconds = Duration::from_secs_f64(args.seconds);
            let rb = rt.block_on(load::closed_loop(&s.direct(bare.addr), 32, seconds, 200));
            let before = gateway.cpu_ns();
            let rg = rt.block_on(load::closed_loop(
                &s.gateway(gateway.addr),
                32,
                seconds,
                s.expect,
            ));
            busy.push((gateway.cpu_ns() - before) as f64 / rg.elapsed.as_nanos() as f64);
            b.push(rb.rps());
            g.push(rg.rps());
            ratios.push(rg.rps() / rb.rps());
        }
        eprintln!(
            "  {:<10} bare {:.0} rps, gateway {:.0} rps, ratio {:.3} (gateway core busy {:.0}%)",
            s.id,
            median(&b),
            median(&g),
            median(&ratios),
            median(&busy) * 100.0
        );
        out.insert(
            s.id.to_owned(),
            json!({"bare_rps": median(&b).round(), "gateway_rps": median(&g).round(), "ratio": round3(median(&ratios)), "gateway_core_busy": round3(median(&busy)), "rounds": args.rounds}),
        );
    }
    bare.stop();
    gateway.stop();
    Ok(Value::Object(out))
}

fn added_latency(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    env: &Env,
    all: &[Scenario],
) -> Result<Value, String> {
    eprintln!(
        "== latency at 1000 requests/s (open loop, {} rounds)",
        args.rounds
    );
    let wrap = Wrap::Pinned(args.server_cores.clone());
    let bare = env.start_bare(&wrap)?;
    let gateway = env.start_gateway(&wrap)?;
    let mut out = serde_json::Map::new();
    for s in all.iter().filter(|s| matches!(s.id, "s1" | "s4-full")) {
        let targets = [
            ("direct", s.direct(env.mock.addr)),
            ("bare", s.direct(bare.addr)),
            ("gateway", s.gateway(gateway.addr)),
        ];
        let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut p99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for _ in 0..args.rounds {
            for (name, target) in &targets {
                let lat = rt.block_on(load::open_loop(
                    target,
                    1000,
                    Duration::from_secs_f64(args.seconds.min(3.0)),
                    16,
                ))?;
                p50.entry(name).or_default().push(percentile_us(&lat, 50.0));
                p99.entry(name).or_default().push(percentile_us(&lat, 99.0));
            }
        }
        let m = |map: &BTreeMap<&str, Vec<f64>>, k: &str| {
            median(map.get(k).map(Vec::as_slice).unwrap_or(&[]))
        };
        let entry = json!({
            "direct_p50_us": round1(m(&p50, "direct")),
            "bare_p50_us": round1(m(&p50, "bare")),
            "gateway_p50_us": round1(m(&p50, "gateway")),
            "added_p50_us": round1(m(&p50, "gateway") - m(&p50, "direct")),
            "bare_added_p50_us": round1(m(&p50, "bare") - m(&p50, "direct")),
            "direct_p99_us": round1(m(&p99, "direct")),
            "bare_p99_us": round1(m(&p99, "bare")),
            "gateway_p99_us": round1(m(&p99, "gateway")),
        });
        eprintln!("  {:<10} {entry}", s.id);
        out.insert(s.id.to_owned(), entry);
    }
    bare.stop();
    gateway.stop();
    Ok(Value::Object(out))
}

fn sse(rt: &tokio::runtime::Runtime, env: &Env, all: &[Scenario]) -> Result<Value, String> {
    eprintln!("== SSE integrity and time to first byte");
    let wrap = Wrap::Pinned("0".to_owned());
    let bare = env.start_bare(&wrap)?;
    let gateway = env.start_gateway(&wrap)?;
    let mut out = serde_json::Map::new();
    for s in all.iter().filter(|s| s.sse.is_some()) {
        let n = if s.id == "s3-paced" { 20 } else { 300 };
        let mut ttfb = BTreeMap::new();
        for (name, target) in [
            ("direct", s.direct(env.mock.addr)),
            ("bare", s.direct(bare.addr)),
            ("gateway", s.gateway(gateway.addr)),
        ] {
            let samples = rt.block_on(load::sequential(&target, n, true))?;
            let mut lost = 0;
            for sample in &samples {
                if check_sequence(&sample.body, s.sse.unwrap_or(0)).is_err() {
                    lost += 1;
                }
            }
            if lost > 0 {
                return Err(format!(
                    "{} via {name}: {lost} streams lost or reordered events",
                    s.id
                ));
            }
            let t: Vec<Duration> = samples.iter().map(|s| s.ttfb).collect();
            ttfb.insert(name, percentile_us(&t, 50.0));
        }
        let entry = json!({
            "streams_checked": n,
            "events_lost_or_reordered": 0,
            "direct_ttfb_p50_us": round1(ttfb["direct"]),
            "bare_ttfb_p50_us": round1(ttfb["bare"]),
            "gateway_ttfb_p50_us": round1(ttfb["gateway"]),
            "added_ttfb_p50_us": round1(ttfb["gateway"] - ttfb["direct"]),
        });
        eprintln!("  {:<10} {entry}", s.id);
        out.insert(s.id.to_owned(), entry);
    }
    bare.stop();
    gateway.stop();
    Ok(Value::Object(out))
}

fn memory(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    env: &Env,
    all: &[Scenario],
) -> Result<Value, String> {
    eprintln!("== memory under 256 concurrent requests");
    let wrap = Wrap::Pinned(args.server_cores.clone());
    let find = |id: &str| {
        all.iter()
            .chain(scenarios::all().iter())
            .find(|s| s.id == id)
            .cloned()
    };
    let (Some(large), Some(stream)) = (find("s2"), find("s3-paced")) else {
        return Ok(Value::Null);
    };
    let mut out = serde_json::Map::new();
    for which in ["bare", "gateway"] {
        let server = if which == "bare" {
            env.start_bare(&wrap)?
        } else {
            env.start_gateway(&wrap)?
        };
        let target = |s: &Scenario| {
            if which == "bare" {
                s.direct(server.addr)
            } else {
                s.gateway(server.addr)
            }
        };
        rt.block_on(drive(&target(&large), &large, 2))?;
        std::thread::sleep(Duration::from_millis(500));
        let idle = server.rss_kib();
        let seconds = Duration::from_secs_f64(args.seconds.max(3.0));
        let r1 = rt.block_on(load::closed_loop(&target(&large), 256, seconds, 200));
        let r2 = rt.block_on(load::closed_loop(&target(&stream), 256, seconds, 200));
        let peak = server.peak_rss_kib();
        std::thread::sleep(Duration::from_secs(3));
        let after = server.rss_kib();
        let entry = json!({
            "idle_rss_mib": round1(idle as f64 / 1024.0),
            "peak_rss_mib": round1(peak as f64 / 1024.0),
            "after_rss_mib": round1(after as f64 / 1024.0),
            "large_rps": r1.rps().round(), "large_errors": r1.errors,
            "stream_rps": r2.rps().round(), "stream_errors": r2.errors,
        });
        eprintln!("  {which:<8} {entry}");
        out.insert(which.to_owned(), entry);
        server.stop();
    }
    Ok(Value::Object(out))
}

fn print_table(results: &Value) {
    println!();
    if let Some(map) = results["instructions"].as_object() {
        println!(
            "| scenario | what | instructions/req gateway | bare proxy | ratio | CPU µs/req gateway | bare | added |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (id, v) in map {
            let cpu = &results["cpu"][id];
            println!(
                "| {id} | {} | {} | {} | {:.2}x | {} | {} | {} |",
                v["what"].as_str().unwrap_or_default(),
                v["gateway"],
                v["bare"],
                v["ratio"].as_f64().unwrap_or(f64::NAN),
                cpu["gateway_us"],
                cpu["bare_us"],
                cpu["added_us"],
            );
        }
    }
    for key in ["rps", "latency", "sse", "memory"] {
        if let Some(map) = results[key].as_object() {
            println!("\n{key}:");
            for (id, v) in map {
                println!("  {id}: {v}");
            }
        }
    }
    if !results["cpu"]["overhead_histogram"].is_null() {
        println!(
            "\ngateway overhead histogram: {}",
            results["cpu"]["overhead_histogram"]
        );
    }
}

/// Checks the measured ratios against `baseline`. With `complete` (every
/// scenario was run), a baseline scenario that was not measured fails too.
fn compare(
    results: &Value,
    baseline: &Path,
    tolerance: f64,
    complete: bool,
) -> Result<bool, String> {
    let text =
        std::fs::read_to_string(baseline).map_err(|e| format!("{}: {e}", baseline.display()))?;
    let base: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", baseline.display()))?;
    let mut ok = true;
    let Some(map) = base["instructions"].as_object() else {
        return Err("the baseline has no instruction counts".to_owned());
    };
    eprintln!("== against {} (tolerance {tolerance}%)", baseline.display());
    for (id, b) in map {
        let Some(was) = b["ratio"].as_f64() else {
            continue;
        };
        let Some(now) = results["instructions"][id]["ratio"].as_f64() else {
            if complete {
                ok = false;
                eprintln!("  {id:<14} ratio {was:.3} -> not measured  MISSING");
            }
            continue;
        };
        let growth = (now / was - 1.0) * 100.0;
        let verdict = if growth > tolerance {
            ok = false;
            "REGRESSION"
        } else {
            "ok"
        };
        eprintln!("  {id:<14} ratio {was:.3} -> {now:.3} ({growth:+.1}%) {verdict}");
    }
    if let Some(measured) = results["instructions"].as_object() {
        for id in measured.keys().filter(|id| !map.contains_key(*id)) {
            eprintln!("  {id:<14} not in the baseline (refresh it to cover this scenario)");
        }
    }
    Ok(ok)
}

/// CPU per request and memory of an external server (and its children),
/// for the OpenAI chat body every scenario sends.
fn external(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    pid: u32,
) -> Result<bool, String> {
    let body = bytes::Bytes::from(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."}], "max_tokens": 128})
            .to_string(),
    );
    let target =
        Target::post(addr, &args.external_path, body).header("authorization", "Bearer sk-bench");
    let samples = rt.block_on(load::sequential(&target, 20, true))?;
    if let Some(bad) = samples.iter().find(|s| s.status != 200) {
        return Err(format!(
            "status {}: {}",
            bad.status,
            String::from_utf8_lossy(&bad.body)
        ));
    }
    let pids = procs::family(pid);
    let cpu = |pids: &[u32]| pids.iter().map(|&p| procs::cpu_ns(p)).sum::<u64>();
    let mut results = Vec::new();
    for conns in [1usize, 8] {
        let before = cpu(&pids);
        let run = rt.block_on(load::closed_loop(
            &target,
            conns,
            Duration::from_secs_f64(args.seconds),
            200,
        ));
        let used = cpu(&pids).saturating_sub(before);
        let us = used as f64 / 1000.0 / run.ok.max(1) as f64;
        results.push(json!({"connections": conns, "cpu_us_per_request": round1(us), "rps": run.rps().round(), "errors": run.errors}));
    }
    let rss: u64 = pids.iter().map(|&p| procs::rss_of(p)).sum();
    let out =
        json!({"processes": pids.len(), "rss_mib": round1(rss as f64 / 1024.0), "runs": results});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(true)
}
