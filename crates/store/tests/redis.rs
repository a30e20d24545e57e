//! The Redis store against a real `redis-server`.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_store::testing::RedisServer;
use switchboard_store::{Bucket, ChargeMode, Counter, RedisStore, SharedStore, Store, StoreError};

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url(), Duration::from_millis(100)).unwrap()
}

#[tokio::test]
async fn charges_fit_or_change_nothing() {
    let server = RedisServer::require();
    let store = store(&server);
    let both = [
        Counter::new("t:a", 10, Duration::from_secs(60)),
        Counter::new("t:b", 5, Duration::from_secs(60)),
    ];
    assert!(
        store
            .charge(&both, 4, ChargeMode::IfFits)
            .await
            .unwrap()
            .admitted
    );
    let refused = store.charge(&both, 2, ChargeMode::IfFits).await.unwrap();
    assert!(!refused.admitted);
    assert_eq!(refused.used, vec![4, 4]);
    let back = store.charge(&both, -10, ChargeMode::Always).await.unwrap();
    assert_eq!(back.used, vec![0, 0]);
    let over = store.charge(&both, 9, ChargeMode::Always).await.unwrap();
    assert_eq!(over.used, vec![9, 9]);
    assert_eq!(store.round_trips(), 4);
}

#[tokio::test]
async fn two_instances_admit_exactly_the_limit() {
    let server = RedisServer::require();
    let stores = [
        SharedStore::new(store(&server)),
        SharedStore::new(store(&server)),
    ];
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let store = stores[i % 2].clone();
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            let counter = [Counter::new("t:shared", 100, Duration::from_secs(60))];
            // Generous timeout per call: this test is about atomicity.
            loop {
                match store.charge(&counter, 1, ChargeMode::IfFits).await {
                    Ok(charged) => {
                        if charged.admitted {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    Err(StoreError::Timeout(_)) => continue,
                    Err(err) => panic!("{err}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 100);
}

#[tokio::test]
async fn buckets_are_shared() {
    let server = RedisServer::require();
    let (a, b) = (store(&server), store(&server));
    let bucket = Bucket::new("t:bucket", 0.001, 3);
    assert!(a.take(&bucket, 1).await.unwrap().allowed);
    assert!(b.take(&bucket, 1).await.unwrap().allowed);
    let last = a.take(&bucket, 1).await.unwrap();
    assert!(last.allowed);
    assert_eq!(last.remaining, 0);
    let refused = b.take(&bucket, 1).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::from_secs(100));
}

#[tokio::test]
async fn a_frozen_server_fails_fast_and_service_resumes() {
    let server = RedisServer::require();
    let store = store(&server);
    let counter = [Counter::new("t:frozen", 100, Duration::from_secs(60))];
    assert!(store.charge(&counter, 1, ChargeMode::IfFits).await.is_ok());
    server.pause();
    for _ in 0..5 {
        let started = Instant::now();
        let result = store.charge(&counter, 1, ChargeMode::IfFits).await;
        assert!(matches!(result, Err(StoreError::Timeout(_))), "{result:?}");
        // Bounded by the timeout (with room for a loaded machine), never hung.
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    server.resume();
    let resumed = Instant::now();
    loop {
        if store.charge(&counter, 1, ChargeMode::IfFits).await.is_ok() {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_server_that_is_down_fails_fast_and_is_found_when_it_starts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = RedisStore::connect(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(100),
    )
    .unwrap();
    let counter = [Counter::new("t:down", 1, Duration::from_secs(60))];
    assert!(store.charge(&counter, 1, ChargeMode::IfFits).await.is_err());
}
