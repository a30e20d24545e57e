//! A small HTTP/1.1 load generator: sequential, closed-loop and open-loop
//! (fixed rate, latency measured from the scheduled send time so a stall is
//! not hidden, as wrk2 does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One kind of request to send.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where to send it.
    pub addr: SocketAddr,
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body (sent with `POST`).
    pub body: Bytes,
}

impl Target {
    /// A `POST` of `body` as JSON to `path` on `addr`.
    pub fn post(addr: SocketAddr, path: &str, body: Bytes) -> Self {
        Self {
            addr,
            method: Method::POST,
            path: path.to_owned(),
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        }
    }

    /// The same target with one more header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    /// The same target on another address.
    pub fn at(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            ..self.clone()
        }
    }
}

/// What one request measured.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The response status.
    pub status: u16,
    /// Time to the first body byte.
    pub ttfb: Duration,
    /// Time to the end of the body.
    pub total: Duration,
    /// The body, when asked for.
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole answer; `keep` keeps the body.
    pub async fn send(&mut self, target: &Target, keep: bool) -> Result<Sample, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let mut request = Request::new(Full::new(target.body.clone()));
        *request.method_mut() = target.method.clone();
        *request.uri_mut() = target.path.parse().map_err(|_| "bad path".to_owned())?;
        let headers = request.headers_mut();
        headers.insert(http::header::HOST, HeaderValue::from_static("bench"));
        for (name, value) in &target.headers {
            headers.insert(name.clone(), value.clone());
        }
        let started = Instant::now();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut ttfb = None;
        let mut kept = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body failed: {e}"))?;
            if let Some(data) = frame.data_ref() {
                if ttfb.is_none() && !data.is_empty() {
                    ttfb = Some(started.elapsed());
                }
                if keep {
                    kept.extend_from_slice(data);
                }
            }
        }
        let total = started.elapsed();
        Ok(Sample {
            status,
            ttfb: ttfb.unwrap_or(total),
            total,
            body: kept.freeze(),
        })
    }
}

/// Sends `n` requests one after the other on one connection.
pub async fn sequential(target: &Target, n: usize, keep: bool) -> Result<Vec<Sample>, String> {
    let mut conn = Conn::open(target.addr).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(conn.send(target, keep).await?);
    }
    Ok(samples)
}

/// What a closed-loop run did.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Requests answered with the expected status.
    pub ok: u64,
    /// Requests that failed or had another status.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// Answered requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `conns` connections, each sending its next request as soon as the last
/// one is answered, for `duration`.
pub async fn closed_loop(target: &Target, conns: usize, duration: Duration, expect: u16) -> Run {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (ok, errors, target) = (Arc::clone(&ok), Arc::clone(&errors), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            while Instant::now() < deadline {
                if conn.is_none() {
                    conn = Conn::open(target.addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                match c.send(&target, false).await {
                    Ok(sample) if sample.status == expect => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Run {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// Sends `rate` requests per second for `duration` over `conns`
/// connections; each latency counts from the time the request was released
/// (so time queued behind a slow answer counts, as in wrk2).
pub async fn open_loop(
    target: &Target,
    rate: u32,
    duration: Duration,
    conns: usize,
) -> Result<Vec<Duration>, String> {
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let mut conn = Conn::open(target.addr).await?;
        let target = target.clone();
        senders.push(tx);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(due) = rx.recv().await {
                if conn.send(&target, false).await.is_ok() {
                    latencies.push(due.elapsed());
                }
            }
            latencies
        }));
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)) as usize;
    let started = Instant::now();
    for i in 0..total {
        let due = started + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        // Counted from when the request is released, not from `due`: the
        // timer wakes up to a millisecond late, which is the load
        // generator's delay, not the server's. Time spent queued behind a
        // slow answer on the same connection is still counted.
        let _ = senders[i % senders.len()].send(Instant::now());
    }
    drop(senders);
    let mut latencies = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| e.to_string())?);
    }
    Ok(latencies)
}

/// The `p`-th percentile (0–100) of `values`, in microseconds.
pub fn percentile_us(values: &[Duration], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of `values`.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
