//! Server processes under test: started pinned to a core (or under
//! callgrind), measured through `/proc`, stopped with SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released).
pub fn free_addr() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// How to start a server.
#[derive(Clone, Debug)]
pub enum Wrap {
    /// Pinned to these cores with `taskset` (when `taskset` exists).
    Pinned(String),
    /// Under callgrind, writing its dumps to this file prefix.
    Callgrind(PathBuf),
}

/// A running server process.
pub struct Server {
    /// What it is, for messages.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Starts `program args…` and waits until `addr` accepts connections.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        addr: SocketAddr,
        wrap: &Wrap,
    ) -> Result<Self, String> {
        let mut command = match wrap {
            Wrap::Pinned(cores) if has("taskset") => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cores).arg(program);
                c
            }
            Wrap::Pinned(_) => Command::new(program),
            Wrap::Callgrind(out) => {
                let mut c = Command::new("valgrind");
                c.arg("--tool=callgrind")
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg("--dump-instr=no")
                    .arg("--compress-strings=no")
                    .arg(program);
                c
            }
        };
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let server = Self {
            name: name.to_owned(),
            addr,
            child,
        };
        let patience = match wrap {
            Wrap::Callgrind(_) => Duration::from_secs(120),
            Wrap::Pinned(_) => Duration::from_secs(20),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if started.elapsed() > patience {
                return Err(format!("{name} did not listen on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The process id (of valgrind itself under callgrind, which is the
    /// same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far, in nanoseconds, summed over live threads.
    pub fn cpu_ns(&self) -> u64 {
        cpu_ns(self.pid())
    }

    /// Resident set size, in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Stops the server (SIGTERM, then SIGKILL).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether valgrind can be run.
pub fn has_valgrind() -> bool {
    has("valgrind") && has("callgrind_control")
}

/// CPU time of a process, from each thread's `schedstat` (nanoseconds);
/// falls back to `stat` (clock ticks) when schedstat is missing.
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
                found = true;
            }
        }
    }
    if found {
        return total;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks * 10_000_000
}

/// Resident set size of any process, in KiB.
pub fn rss_of(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// `pid` and all its descendants.
pub fn family(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let parent = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                        .and_then(|p| p.parse::<u32>().ok())
                });
            if let Some(parent) = parent {
                parents.push((child, parent));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let current = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == current)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Zeroes the callgrind counters of `pid`.
pub fn callgrind_zero(pid: u32) -> Result<(), String> {
    callgrind_control(&["-z", &pid.to_string()])
}

/// Dumps the callgrind counters of `pid` and returns the instructions
/// counted since the last zero. `prefix` is the `--callgrind-out-file`.
pub fn callgrind_dump(pid: u32, prefix: &Path) -> Result<u64, String> {
    let before = dumps(prefix);
    callgrind_control(&["-d", &pid.to_string()])?;
    let started = Instant::now();
    loop {
        let now = dumps(prefix);
        if let Some(new) = now.iter().find(|p| !before.contains(p)) {
            std::thread::sleep(Duration::from_millis(50));
            let text = std::fs::read_to_string(new).map_err(|e| e.to_string())?;
            let total = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no totals in {}", new.display()))?;
            match std::env::var_os("BENCH_KEEP_DUMPS") {
                // Kept for `callgrind_annotate`.
                Some(dir) => {
                    let kept = Path::new(&dir).join(format!("callgrind.{total}"));
                    let _ = std::fs::rename(new, &kept);
                    eprintln!("  dump kept: {}", kept.display());
                }
                None => {
                    let _ = std::fs::remove_file(new);
                }
            }
            return Ok(total);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("callgrind dump did not appear".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dumps(prefix: &Path) -> Vec<PathBuf> {
    let Some(dir) = prefix.parent() else {
        return Vec::new();
    };
    let stem = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| n.starts_with(&format!("{stem}.")))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn callgrind_control(args: &[&str]) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {args:?} failed"))
    }
}
