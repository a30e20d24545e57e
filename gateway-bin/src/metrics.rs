//! The gateway's own overhead: for every request, the time to the response
//! head minus the time spent waiting for backends, kept in a fixed-bucket
//! histogram of atomic counters and served in Prometheus text format at
//! `/__metrics`. Sub-millisecond percentiles cannot be seen from outside on
//! a busy machine; from inside they can.

use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use switchboard_core::Body;

/// Where the histogram is served.
pub(crate) const METRICS_PATH: &str = "/__metrics";

/// Upper bounds of the buckets, in nanoseconds (the last bucket is +Inf).
const BOUNDS_NS: [u64; 20] = [
    5_000,
    10_000,
    20_000,
    30_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
    300_000,
    500_000,
    750_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
];

struct Histogram {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

static OVERHEAD: Histogram = Histogram {
    buckets: [const { AtomicU64::new(0) }; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64::new(0),
};

tokio::task_local! {
    /// The longest backend wait of the request being served on this task.
    static UPSTREAM_NS: Cell<u64>;
}

/// Runs `future` (one request through the router) and records its overhead:
/// the time until it completes minus the longest backend wait inside it.
pub(crate) async fn measure<F: Future>(started: std::time::Instant, future: F) -> F::Output {
    UPSTREAM_NS
        .scope(Cell::new(0), async move {
            let output = future.await;
            let upstream = UPSTREAM_NS.with(Cell::get);
            let total = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            record(total.saturating_sub(upstream));
            output
        })
        .await
}

/// Notes that a backend call on this request took `elapsed` (until its
/// response head). Outside [`measure`] it does nothing.
pub(crate) fn upstream_wait(elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let _ = UPSTREAM_NS.try_with(|cell| cell.set(cell.get().max(ns)));
}

fn record(ns: u64) {
    let index = BOUNDS_NS.partition_point(|&bound| bound < ns);
    OVERHEAD.buckets[index].fetch_add(1, Ordering::Relaxed);
    OVERHEAD.sum_ns.fetch_add(ns, Ordering::Relaxed);
}

/// The histogram in Prometheus text format.
pub(crate) fn render() -> String {
    let mut out = String::with_capacity(2048);
    out.push_str(
        "# HELP switchboard_overhead_seconds Time the gateway adds to a request: \
         time to the response head minus the longest backend wait.\n\
         # TYPE switchboard_overhead_seconds histogram\n",
    );
    let mut cumulative = 0u64;
    for (i, bucket) in OVERHEAD.buckets.iter().enumerate() {
        cumulative += bucket.load(Ordering::Relaxed);
        match BOUNDS_NS.get(i) {
            Some(bound) => {
                let _ = writeln!(
                    out,
                    "switchboard_overhead_seconds_bucket{{le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e9
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "switchboard_overhead_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                );
            }
        }
    }
    let sum = OVERHEAD.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "switchboard_overhead_seconds_sum {sum}");
    let _ = writeln!(out, "switchboard_overhead_seconds_count {cumulative}");
    out
}

/// `GET /__metrics`.
pub(crate) async fn handler() -> Response<Body> {
    let mut response = Response::new(Body::from(render()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overhead_excludes_the_backend_wait() {
        // A backend wait longer than the whole request leaves no overhead:
        // the request lands in the first bucket whatever the machine's speed.
        measure(std::time::Instant::now(), async {
            upstream_wait(Duration::from_secs(3600));
        })
        .await;
        let text = render();
        assert!(text.contains("# TYPE switchboard_overhead_seconds histogram"));
        let first: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_overhead_seconds_bucket{le=\"0.000005\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(first >= 1);
        assert!(text.contains("switchboard_overhead_seconds_bucket{le=\"+Inf\"} "));
    }

    #[test]
    fn buckets_are_sorted() {
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }
}
