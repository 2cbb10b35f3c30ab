//! A few seconds of every operation at once on overlapping keys, on a
//! 2-worker runtime: no panic (but the loaders' own), no hang, values always
//! belong to their key, and `len() <= max_size` every time it is looked at.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_core::Cache;
use rand::{Rng, SeedableRng};

const MAX: usize = 200;
const KEYS: u64 = 1_000;

/// Values carry their key, so a value served for the wrong key shows.
fn value(key: u64, version: u64) -> (u64, u64) {
    (key, version)
}

/// Keeps the deliberate loader panics out of the output; any other panic is
/// reported as usual.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"loader panics on purpose") {
            default(info);
        }
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_every_operation_at_once_on_two_workers() {
    quiet_deliberate_panics();
    let cache = Cache::<u64, (u64, u64)>::builder().max_size(MAX).default_ttl(Duration::from_millis(50)).build();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for seed in 0..8u64 {
        let (cache, stop, ops) = (cache.clone(), Arc::clone(&stop), Arc::clone(&ops));
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut version = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = rng.random_range(0..KEYS);
                version += 1;
                match rng.random_range(0..100) {
                    0..=49 => {
                        if let Some(v) = cache.get(&key) {
                            assert_eq!(v.0, key);
                        }
                    }
                    50..=69 => cache.insert(key, value(key, version)),
                    70..=74 => cache.insert_with_ttl(
                        key,
                        value(key, version),
                        Some(Duration::from_millis(rng.random_range(0..5))),
                    ),
                    75..=79 => {
                        if let Some(v) = cache.remove(&key) {
                            assert_eq!(v.0, key);
                        }
                    }
                    80 => cache.clear(),
                    81..=94 => {
                        let pause = rng.random_range(0..3);
                        let v = cache
                            .get_or_load(key, || async move {
                                tokio::time::sleep(Duration::from_millis(pause)).await;
                                value(key, version)
                            })
                            .await;
                        assert_eq!(v.0, key);
                    }
                    95..=97 => {
                        let fail = rng.random_bool(0.5);
                        let r = cache
                            .try_get_or_load(key, || async move {
                                tokio::task::yield_now().await;
                                if fail { Err("no") } else { Ok(value(key, version)) }
                            })
                            .await;
                        if let Ok(v) = r {
                            assert_eq!(v.0, key);
                        }
                    }
                    _ => {
                        // A caller that gives up mid-load.
                        let slow = cache.get_or_load(key, || async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            value(key, version)
                        });
                        let _ = tokio::time::timeout(Duration::from_millis(1), slow).await;
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
                if version % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // A loader that panics now and then, in its own task.
    {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let cache = cache.clone();
                let key = i % KEYS;
                let crashed = tokio::spawn(async move {
                    cache
                        .get_or_load(key, || async move {
                            tokio::task::yield_now().await;
                            panic!("loader panics on purpose");
                        })
                        .await
                })
                .await;
                // Either it panicked, or someone else's value was there.
                if let Ok(v) = crashed {
                    assert_eq!(v.0, key);
                }
            }
        }));
    }
    let watcher = {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(cache.len() <= MAX);
                looks += 1;
                tokio::task::yield_now().await;
            }
            looks
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let all = async {
        for t in tasks {
            t.await.expect("a worker task panicked");
        }
        watcher.await.expect("watcher")
    };
    let looks = tokio::time::timeout(Duration::from_secs(20), all).await.expect("hung");
    assert!(looks > 100, "the watcher looked {looks} times");
    assert!(ops.load(Ordering::Relaxed) > 10_000, "only {} operations", ops.load(Ordering::Relaxed));
    assert!(cache.len() <= MAX);
    // Still fully working afterwards.
    cache.clear();
    cache.insert(1, value(1, 0));
    assert_eq!(cache.get(&1), Some(value(1, 0)));
    assert_eq!(cache.get_or_load(2, || async { value(2, 0) }).await, value(2, 0));
}
