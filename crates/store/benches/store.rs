//! Cost of one charge and one take in memory, and with Redis when a
//! `redis-server` can be started (round trips are counted, not timed).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_store::{Bucket, ChargeMode, Counter, MemoryStore};

fn memory(c: &mut Criterion) {
    let store = MemoryStore::new();
    let counters = [
        Counter::new("bench:minute", u64::MAX, Duration::from_secs(60)),
        Counter::new("bench:day", u64::MAX, Duration::from_secs(86_400)),
    ];
    c.bench_function("memory charge (2 windows)", |b| {
        b.iter(|| store.charge_now(&counters, 1, ChargeMode::IfFits))
    });
    let bucket = Bucket::new("bench:bucket", 1e12, u64::MAX / 2);
    c.bench_function("memory take", |b| b.iter(|| store.take_now(&bucket, 1)));
}

fn redis(c: &mut Criterion) {
    let Some(server) = switchboard_store::testing::RedisServer::start() else {
        eprintln!("redis-server not found: Redis benches skipped");
        return;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(store) = runtime.block_on(async {
        switchboard_store::RedisStore::connect(&server.url(), Duration::from_secs(1))
    }) else {
        return;
    };
    use switchboard_store::Store;
    let counters = [Counter::new(
        "bench:minute",
        u64::MAX,
        Duration::from_secs(60),
    )];
    c.bench_function("redis charge", |b| {
        b.iter(|| runtime.block_on(store.charge(&counters, 1, ChargeMode::IfFits)))
    });
    let before = store.round_trips();
    for _ in 0..100 {
        let _ = runtime.block_on(store.charge(&counters, 1, ChargeMode::IfFits));
    }
    eprintln!(
        "redis round trips per charge: {}",
        (store.round_trips() - before) as f64 / 100.0
    );
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
